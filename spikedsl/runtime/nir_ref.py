"""A small, slow reference interpreter of docs/semantics.md (torch, float64,
no autograd tricks).  Used by the NIR/Norse tests as an independent check of
the torch target and by ``import_nir(verify=True)``.

It runs neuron, stage and stateless-projection layers, dense / conv2d /
one_to_one projections, recurrence and delays, refractory counters and output
reductions.  Cells, sparse projections, batch statistics in training mode and
plasticity are not covered (it raises ``NotImplementedError``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikedsl import ir
from spikedsl.lowering.weights import layer_params, load_weights, sparse_matrix


def _sigmoid(t):
    import torch

    return torch.sigmoid(t)


def evaluate(e: ir.Expr, env: dict[str, Any]):
    """Evaluate an expression over torch tensors / floats."""
    import torch

    def rec(x):
        if isinstance(x, ir.Num):
            return x.value
        if isinstance(x, ir.Name):
            return env[x.id]
        if isinstance(x, ir.Neg):
            return -rec(x.operand)
        if isinstance(x, ir.BinOp):
            a, b = rec(x.left), rec(x.right)
            if x.op == "+":
                return a + b
            if x.op == "-":
                return a - b
            if x.op == "*":
                return a * b
            if x.op == "/":
                return a / b
            return a**b
        if isinstance(x, ir.Compare):
            a, b = _t(rec(x.left)), _t(rec(x.right))
            return {">=": torch.ge, "<=": torch.le, ">": torch.gt, "<": torch.lt,
                    "==": torch.eq, "!=": torch.ne}[x.op](a, b).double()
        if isinstance(x, ir.BoolOp):
            a, b = _t(rec(x.left)) != 0, _t(rec(x.right)) != 0
            return (a & b).double() if x.op == "and" else (a | b).double()
        if isinstance(x, ir.Not):
            return (_t(rec(x.operand)) == 0).double()
        if isinstance(x, ir.Call):
            args = [_t(rec(a)) for a in x.args]
            f = x.func
            if f in ("exp", "log", "sqrt", "abs", "tanh", "sin", "cos"):
                return getattr(torch, f)(args[0])
            if f == "sigmoid":
                return torch.sigmoid(args[0])
            if f == "relu":
                return torch.relu(args[0])
            if f == "min":
                return torch.minimum(args[0], args[1])
            if f == "max":
                return torch.maximum(args[0], args[1])
            if f == "clip":
                return torch.minimum(torch.maximum(args[0], args[1]), args[2])
            if f == "where":
                return torch.where(args[0] != 0, args[1], args[2])
        raise NotImplementedError(f"cannot evaluate {type(x).__name__}")

    return rec(e)


def _t(v):
    import torch

    if isinstance(v, torch.Tensor):
        return v
    return torch.as_tensor(float(v), dtype=torch.float64)


def run(net: ir.LNetwork, inputs: dict[str, np.ndarray] | np.ndarray, weights=None,
        record: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``net`` on already encoded inputs ``[T, B, ...]``; returns the outputs
    (``LOutput.name`` -> array) plus any ``record`` entries (``layer`` or
    ``layer.state`` / ``layer.state_pre``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up dominates
    try:
        return _run(net, inputs, weights, record)
    finally:
        torch.set_num_threads(threads)


def _run(net, inputs, weights, record):
    import torch
    import torch.nn.functional as F

    W = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in
         load_weights(net, weights).items()}
    if not isinstance(inputs, dict):
        ins = net.inputs
        if len(ins) != 1:
            raise ValueError("several inputs: pass a dict")
        inputs = {ins[0].name: inputs}
    x_in = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in inputs.items()}
    T = next(iter(x_in.values())).shape[0]
    B = next(iter(x_in.values())).shape[1]
    hist: dict[str, list] = {}  # key -> list over steps
    state: dict[str, dict[str, Any]] = {}
    refr: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = {}
    for lay in net.layers:
        if lay.kind == "neuron":
            n = lay.neuron
            pv = {k: torch.as_tensor(v) for k, v in layer_params(lay, W).items()}
            pv["dt"] = n.dt
            params[lay.name] = pv
            st = {}
            for s in n.states:
                v = _t(evaluate(s.init, pv))
                st[s.name] = torch.zeros((B,) + lay.shape, dtype=torch.float64) + v
            state[lay.name] = st
            refr[lay.name] = torch.zeros((B,) + lay.shape, dtype=torch.float64)
        elif lay.kind in ("cell",):
            raise NotImplementedError("cells are not covered by the reference")

    def key_of(src: str, st: str | None) -> str:
        return src if st is None else f"{src}.{st}"

    def read(src: str, st: str | None, n: int, shape):
        if n < 0:
            return torch.zeros((B,) + tuple(shape), dtype=torch.float64)
        return hist[key_of(src, st)][n]

    def project(p: ir.LProjection, n: int):
        x = read(p.source, p.source_state, n - p.delay, p.in_shape)
        name = p.param_name
        if p.kind in ("dense", "conv2d"):
            w = W[f"{name}.weight"]
            if p.sign == "excitatory":
                w = w.abs()
            elif p.sign == "inhibitory":
                w = -w.abs()
            b = W.get(f"{name}.bias") if p.bias else None
            if p.kind == "dense":
                y = x.reshape(B, -1) @ w.T
                if b is not None:
                    y = y + b
                return y.reshape((B,) + tuple(p.out_shape))
            return F.conv2d(x, w, b, stride=p.stride, padding=p.padding)
        if p.kind == "one_to_one":
            w = W.get(f"{name}.weight", p.weight if p.weight is not None else 1.0)
            return w * x.reshape((B,) + tuple(p.out_shape))
        if p.kind == "sparse":
            w = W.get(f"{name}.weight", torch.as_tensor(sparse_matrix(p)))
            if p.sign == "excitatory":
                w = w.abs()
            elif p.sign == "inhibitory":
                w = -w.abs()
            return (x.reshape(B, -1) @ w.T).reshape((B,) + tuple(p.out_shape))
        raise NotImplementedError(f"{p.kind} projections are not covered by the reference")

    for n in range(T):
        for lay in net.layers:
            name = lay.name
            if lay.kind == "input":
                hist.setdefault(name, []).append(x_in[name][n])
                continue
            if lay.kind == "stage":
                x = read(lay.source, lay.source_state, n, ())
                op = lay.op
                if op == "flatten":
                    y = x.reshape(B, -1)
                elif op in ("avgpool2d", "sumpool2d", "maxpool2d"):
                    k, s = tuple(lay.args["kernel"]), tuple(lay.args["stride"])
                    if op == "maxpool2d":
                        y = F.max_pool2d(x, k, s)
                    else:
                        y = F.avg_pool2d(x, k, s)
                        if op == "sumpool2d":
                            y = y * (k[0] * k[1])
                elif op == "dropout":
                    y = x
                elif op == "batchnorm":
                    c = lay.shape[0]
                    rm = W.get(f"{name}.running_mean", torch.zeros(c, dtype=torch.float64))
                    rv = W.get(f"{name}.running_var", torch.ones(c, dtype=torch.float64))
                    g = W.get(f"{name}.weight", torch.ones(c, dtype=torch.float64))
                    b = W.get(f"{name}.bias", torch.zeros(c, dtype=torch.float64))
                    y = F.batch_norm(x, rm, rv, g, b, False, 0.0, lay.args.get("eps", 1e-5))
                else:
                    raise NotImplementedError(op)
                hist.setdefault(name, []).append(y)
                continue
            if lay.kind == "projection":
                y = project(lay.projections[0], n)
                if lay.func:
                    y = evaluate(ir.Call(func=lay.func, args=(ir.Name(id="_x"),)), {"_x": y})
                hist.setdefault(name, []).append(y)
                continue
            # neuron layer
            neu = lay.neuron
            env = dict(params[name])
            st = state[name]
            rf = refr[name]
            refractory = rf > 0
            for k in neu.inputs:
                env[k] = torch.zeros((B,) + lay.shape, dtype=torch.float64)
            for p in lay.projections:
                env[p.target_input] = env[p.target_input] + project(p, n)
            R = neu.refractory_steps
            if R > 0:
                for k in neu.inputs:
                    env[k] = torch.where(refractory, torch.zeros_like(env[k]), env[k])
            env.update(st)
            for t in neu.temps:
                env[t.target] = evaluate(t.value, env)
            new = {u.target: _t(evaluate(u.value, env)) + torch.zeros_like(st[u.target])
                   for u in neu.updates}
            if R > 0:
                held = {a.target for a in neu.reset}
                for s in held:
                    if s in new:
                        new[s] = torch.where(refractory, st[s], new[s])
            st = {**st, **new}
            if neu.spiking:
                x = _t(evaluate(neu.spike_x, {**params[name], **st}))
                z = (x >= 0) if neu.spike_op == ">=" else (x > 0)
                z = z.double() + torch.zeros((B,) + lay.shape, dtype=torch.float64)
                if R > 0:
                    z = torch.where(refractory, torch.zeros_like(z), z)
            else:
                z = torch.zeros((B,) + lay.shape, dtype=torch.float64)
            for s in st:
                hist.setdefault(f"{name}.{s}_pre", []).append(st[s])
            for a in neu.reset:
                e = _t(evaluate(a.value, {**params[name], **st}))
                s = st[a.target]
                if a.op == "=":
                    s = s - z * (s - e)
                elif a.op == "+=":
                    s = s + z * e
                else:
                    s = s - z * e
                st = {**st, a.target: s}
            if R > 0:
                rf = torch.where(z > 0, torch.full_like(rf, float(R)),
                                 torch.clamp(rf - 1, min=0))
                refr[name] = rf
            state[name] = st
            for s in st:
                hist.setdefault(f"{name}.{s}", []).append(st[s])
            hist.setdefault(name, []).append(z)

    out: dict[str, np.ndarray] = {}
    for o in net.outputs:
        key = o.layer if o.state is None else f"{o.layer}.{o.state}{'_pre' if o.pre_reset else ''}"
        y = torch.stack(hist[key])
        if o.reduce == "sum":
            y = y.sum(0)
        elif o.reduce == "mean":
            y = y.mean(0)
        elif o.reduce == "last":
            y = y[-1]
        out[o.name] = y.numpy()
    for r in record or []:
        out[r] = torch.stack(hist[r]).numpy()
    return out
