"""Synapse rules (SPEC 1.5) on torch tensors, without gradients, and a
reference run of a whole network with them.

A rule (``ir.LPlasticity``) attaches to one projection.  Its weight ``w`` and
its states (``apre``, ``apost`` ...) are per synapse and per sample:
tensors ``[B, out, in]`` (a mask marks the synapses that exist: all of them for
``dense``, the fixed random ones for ``sparse``, the diagonal for
``one_to_one``).  The order within a step (docs/semantics.md, "Plasticity"):

1. the rule's state update (``temps`` then ``updates``, simultaneous) on
   every synapse, at the start of the target layer's step;
2. transmission with the current weight, then ``on_pre`` for the synapses
   whose presynaptic spike arrives in this step (after the projection's delay);
3. the target layer's step (update, spike, reset);
4. ``on_post`` for the synapses whose postsynaptic neuron spiked.

``w`` is the effective weight (after a ``sign`` constraint).  The Brian2
target runs the same rule natively (Synapses with ``on_pre``/``on_post``);
both give the same weight trajectories.

:func:`run` is a small, slow interpreter of docs/semantics.md in torch
(float64 by default) that supports plasticity; the Brian2 tests use it as an
independent reference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikedsl import ir
from spikedsl.lowering.weights import mask_values

__all__ = ["Rule", "evaluate", "projection_matrix", "run", "sparse_mask"]


# ----------------------------------------------------------------- expressions
def evaluate(e: ir.Expr, env: dict[str, Any]):
    """Evaluate a lowered expression over torch tensors and floats."""
    import torch

    def t(v):
        return v if isinstance(v, torch.Tensor) else torch.as_tensor(
            float(v), dtype=torch.float64)

    def rec(x):
        if isinstance(x, ir.Num):
            return x.value
        if isinstance(x, ir.Name):
            return env[x.id]
        if isinstance(x, ir.Attr):
            return env[f"{x.obj}.{x.attr}"]
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
            return a ** b
        if isinstance(x, ir.Compare):
            a, b = t(rec(x.left)), t(rec(x.right))
            f = {">=": torch.ge, "<=": torch.le, ">": torch.gt, "<": torch.lt,
                 "==": torch.eq, "!=": torch.ne}[x.op]
            return f(a, b).to(a.dtype if a.is_floating_point() else torch.float64)
        if isinstance(x, ir.BoolOp):
            a, b = t(rec(x.left)) != 0, t(rec(x.right)) != 0
            return ((a & b) if x.op == "and" else (a | b)).double()
        if isinstance(x, ir.Not):
            return (t(rec(x.operand)) == 0).double()
        if isinstance(x, ir.Call):
            args = [t(rec(a)) for a in x.args]
            f = x.func
            if f in ("exp", "log", "sqrt", "abs", "tanh", "sin", "cos", "sigmoid", "relu"):
                return getattr(torch, f)(args[0])
            if f == "min":
                return torch.minimum(args[0], args[1])
            if f == "max":
                return torch.maximum(args[0], args[1])
            if f == "clip":
                return torch.minimum(torch.maximum(args[0], args[1]), args[2])
            if f == "where":
                return torch.where(args[0] != 0, args[1], args[2])
        raise ValueError(f"cannot evaluate {type(x).__name__}")

    return rec(e)


# ----------------------------------------------------------------- projections
def sparse_mask(n_out: int, n_in: int, p: float, seed: int) -> np.ndarray:
    """Fixed random connectivity (docs/semantics.md), spikedsl.lowering.weights."""
    return np.asarray(mask_values(seed, p, n_out * n_in)).reshape(n_out, n_in) > 0


def projection_matrix(p: ir.LProjection, W: dict[str, np.ndarray]) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """(effective weight ``(out, in)``, mask) of a dense / sparse / one_to_one
    projection, the form a synapse rule works on."""
    n_in, n_out = math.prod(p.in_shape), math.prod(p.out_shape)
    if p.kind == "dense":
        w = np.asarray(W[f"{p.param_name}.weight"], dtype=np.float64).reshape(n_out, n_in)
        mask = np.ones((n_out, n_in), dtype=bool)
    elif p.kind == "sparse":
        mask = sparse_mask(n_out, n_in, p.p, p.seed)
        key = f"{p.param_name}.weight"
        if key in W:
            w = np.where(mask, np.asarray(W[key], dtype=np.float64).reshape(n_out, n_in), 0.0)
        else:
            w = np.where(mask, p.weight if p.weight is not None else 1.0, 0.0)
    elif p.kind == "one_to_one":
        mask = np.eye(n_out, dtype=bool)
        key = f"{p.param_name}.weight"
        v = np.asarray(W[key], dtype=np.float64).reshape(-1) if key in W else np.asarray(
            [p.weight if p.weight is not None else 1.0])
        w = np.diag(np.broadcast_to(v, (n_out,)).astype(np.float64))
    else:
        raise ValueError(f"a synapse rule cannot act on a {p.kind} projection")
    if p.sign == "excitatory":
        w = np.abs(w)
    elif p.sign == "inhibitory":
        w = -np.abs(w)
    return w, mask


# ----------------------------------------------------------------- the rule
class Rule:
    """One synapse rule on one projection, for a batch of ``batch`` samples."""

    def __init__(self, lp: ir.LPlasticity, w0: np.ndarray, mask: np.ndarray, batch: int,
                 dt: float, dtype=None):
        import torch

        self.dtype = dtype or torch.float64
        self.lp, self.rule = lp, lp.rule
        self.mask = torch.as_tensor(mask)[None].expand(batch, *mask.shape)
        w = torch.as_tensor(np.asarray(w0, dtype=np.float64), dtype=self.dtype)
        self.w = w[None].expand(batch, *w.shape).clone()
        self.params: dict[str, Any] = {q.name: q.value for q in self.rule.params}
        self.params["dt"] = self.rule.dt
        self.states: dict[str, Any] = {}
        for s in self.rule.states:
            v = evaluate(s.init, dict(self.params))
            self.states[s.name] = torch.zeros_like(self.w) + v
        self._zero_missing()

    def _zero_missing(self):
        import torch

        self.w = torch.where(self.mask, self.w, torch.zeros_like(self.w))
        for k, v in self.states.items():
            self.states[k] = torch.where(self.mask, v, torch.zeros_like(v))

    def env(self) -> dict[str, Any]:
        return {**self.params, **self.states, "w": self.w}

    def advance(self) -> None:
        """Step 1: the rule's own dynamics (e.g. trace decay)."""
        if not self.rule.updates:
            return
        env = self.env()
        for t in self.rule.temps:
            env[t.target] = evaluate(t.value, env)
        new = {u.target: evaluate(u.value, env) for u in self.rule.updates}
        for k, v in new.items():
            self._set(k, v, None)

    def _set(self, name: str, value, where) -> None:
        import torch

        old = self.w if name == "w" else self.states[name]
        value = torch.zeros_like(old) + value
        if where is not None:
            value = torch.where(where, value, old)
        value = torch.where(self.mask, value, old)
        if name == "w":
            self.w = value
        else:
            self.states[name] = value

    def _run(self, stmts, fired) -> None:
        for a in stmts:
            env = self.env()
            v = evaluate(a.value, env)
            old = env[a.target]
            if a.op == "+=":
                v = old + v
            elif a.op == "-=":
                v = old - v
            self._set(a.target, v, fired)

    def transmit(self, x):
        """The projection's input to the target: ``w @ x`` per sample."""
        return (self.w * x.reshape(x.shape[0], 1, -1)).sum(-1)

    def on_pre(self, pre) -> None:
        """Step 2 (after transmission): ``pre`` [B, in] spikes that arrive now."""
        if self.rule.on_pre:
            self._run(self.rule.on_pre, (pre.reshape(pre.shape[0], 1, -1) != 0))

    def on_post(self, post) -> None:
        """Step 4: ``post`` [B, out] spikes of the target layer in this step."""
        if self.rule.on_post:
            self._run(self.rule.on_post, (post.reshape(post.shape[0], -1, 1) != 0))


# ----------------------------------------------------------------- reference run
def _weights(net: ir.LNetwork, weights) -> dict[str, np.ndarray]:
    from spikedsl.targets.brian2 import load_weights

    return load_weights(net, weights)


def run(net: ir.LNetwork, inputs, weights=None, record=None, dtype=None) -> dict[str, np.ndarray]:
    """Run ``net`` (with its synapse rules) on encoded inputs ``[T, B, ...]``;
    returns the outputs and the ``record`` traces (``"h"``, ``"h.v"``,
    ``"h.v_pre"``, plastic weights ``"PROJ.weight"`` as ``[T, B, out, in]``)."""
    import torch
    import torch.nn.functional as F

    dtype = dtype or torch.float64
    W = {k: np.asarray(v, dtype=np.float64) for k, v in _weights(net, weights).items()}
    Wt = {k: torch.as_tensor(v, dtype=dtype) for k, v in W.items()}
    if not isinstance(inputs, dict):
        inputs = {net.inputs[0].name: inputs}
    X = {}
    for lay in net.inputs:
        x = np.asarray(inputs[lay.name], dtype=np.float64)
        if x.ndim == len(lay.shape) + 1:
            x = x[:, None]
        X[lay.name] = torch.as_tensor(x, dtype=dtype)
    T = net.steps
    B = next(iter(X.values())).shape[1]
    hist: dict[str, list] = {}
    rules: dict[str, Rule] = {}
    plastic = {lp.projection: lp for lp in net.plasticity}
    fixed: dict[str, Any] = {}  # sparse / one_to_one matrices, built once

    def put(key, v):
        hist.setdefault(key, []).append(v)

    def read(src: str, st: str | None, n: int, shape):
        key = src if st is None else f"{src}.{st}"
        if n < 0:
            return torch.zeros((B,) + tuple(shape), dtype=dtype)
        return hist[key][n]

    def weight(p: ir.LProjection):
        w = Wt[f"{p.param_name}.weight"]
        if p.sign == "excitatory":
            w = w.abs()
        elif p.sign == "inhibitory":
            w = -w.abs()
        return w

    def project(p: ir.LProjection, n: int):
        x = read(p.source, p.source_state, n - p.delay, p.in_shape)
        out_shape = (B,) + tuple(p.out_shape)
        if p.param_name in rules:
            r = rules[p.param_name]
            y = r.transmit(x)
            if p.bias and p.kind == "dense":
                y = y + Wt[f"{p.param_name}.bias"]
            r.on_pre(x)
            return y.reshape(out_shape)
        if p.kind == "dense":
            y = x.reshape(B, -1) @ weight(p).T
            if p.bias:
                y = y + Wt[f"{p.param_name}.bias"]
            return y.reshape(out_shape)
        if p.kind == "conv2d":
            b = Wt[f"{p.param_name}.bias"] if p.bias else None
            return F.conv2d(x, weight(p), b, stride=p.stride, padding=p.padding)
        if p.param_name not in fixed:
            fixed[p.param_name] = torch.as_tensor(projection_matrix(p, W)[0], dtype=dtype).T
        return (x.reshape(B, -1) @ fixed[p.param_name]).reshape(out_shape)

    params: dict[str, dict] = {}
    state: dict[str, dict] = {}
    refr: dict[str, Any] = {}
    for lay in net.layers:
        if lay.kind == "cell":
            raise NotImplementedError("cells are not covered by the reference")
        for p in lay.projections:
            if p.param_name in plastic:
                w, mask = projection_matrix(p, W)
                rules[p.param_name] = Rule(plastic[p.param_name], w, mask, B, net.dt, dtype)
        if lay.kind != "neuron":
            continue
        neu = lay.neuron
        pv: dict[str, Any] = {}
        for q in neu.params:
            key = f"{lay.name}.{q.name}"
            if key in Wt:
                v = Wt[key]
                pv[q.name] = v.reshape(()) if v.numel() == 1 else v.reshape(lay.shape)
            else:
                pv[q.name] = q.value
        pv["dt"] = neu.dt
        params[lay.name] = pv
        shape = (B,) + tuple(lay.shape)
        state[lay.name] = {s.name: torch.zeros(shape, dtype=dtype) + evaluate(s.init, pv)
                           for s in neu.states}
        refr[lay.name] = torch.zeros(shape, dtype=dtype)

    for n in range(T):
        for lay in net.layers:
            name = lay.name
            if lay.kind == "input":
                put(name, X[name][n])
            elif lay.kind == "stage":
                x = read(lay.source, lay.source_state, n, ())
                op = lay.op
                if op == "flatten":
                    y = x.reshape(B, -1)
                elif op == "dropout":
                    y = x
                elif op in ("avgpool2d", "sumpool2d", "maxpool2d"):
                    k, s = tuple(lay.args["kernel"]), tuple(lay.args["stride"])
                    if op == "maxpool2d":
                        y = F.max_pool2d(x, k, s)
                    elif op == "sumpool2d":
                        y = F.avg_pool2d(x, k, s, divisor_override=1)
                    else:
                        y = F.avg_pool2d(x, k, s)
                else:  # batchnorm, inference
                    c = lay.shape[0]
                    one, zero = torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype)
                    y = F.batch_norm(x, Wt.get(f"{name}.running_mean", zero),
                                     Wt.get(f"{name}.running_var", one),
                                     Wt.get(f"{name}.weight", one), Wt.get(f"{name}.bias", zero),
                                     False, 0.0, float(lay.args.get("eps", 1e-5)))
                put(name, y)
            elif lay.kind == "projection":
                y = project(lay.projections[0], n)
                if lay.func:
                    y = evaluate(ir.Call(func=lay.func, args=(ir.Name(id="x"),)), {"x": y})
                put(name, y)
            else:
                _neuron_step(net, lay, n, params[name], state, refr, rules, project, put, dtype, B)
    out: dict[str, np.ndarray] = {}
    for o in net.outputs:
        key = o.layer if o.state is None else f"{o.layer}.{o.state}" + (
            "_pre" if o.pre_reset else "")
        y = torch.stack(hist[key]).numpy()
        if o.reduce == "sum":
            y = y.sum(0)
        elif o.reduce == "mean":
            y = y.mean(0)
        elif o.reduce == "last":
            y = y[-1]
        out[o.name] = y
    for key in record or ():
        if key not in hist:
            raise KeyError(f"cannot record '{key}'")
        out[key] = torch.stack(hist[key]).numpy()
    return out


def _neuron_step(net, lay, n, pv, state, refr, rules, project, put, dtype, B):
    import torch

    name, neu = lay.name, lay.neuron
    shape = (B,) + tuple(lay.shape)
    st = state[name]
    for p in lay.projections:
        if p.param_name in rules:
            rules[p.param_name].advance()
    env = dict(pv)
    for k in neu.inputs:
        env[k] = torch.zeros(shape, dtype=dtype)
    for p in lay.projections:
        env[p.target_input] = env[p.target_input] + project(p, n)
    R = neu.refractory_steps
    refractory = refr[name] > 0
    if R:
        for k in neu.inputs:
            env[k] = torch.where(refractory, torch.zeros_like(env[k]), env[k])
    env.update(st)
    for t in neu.temps:
        env[t.target] = evaluate(t.value, env)
    new = {u.target: torch.zeros(shape, dtype=dtype) + evaluate(u.value, env)
           for u in neu.updates}
    if R:
        for a in neu.reset:
            if a.target in new:
                new[a.target] = torch.where(refractory, st[a.target], new[a.target])
    st = {**st, **new}
    if neu.spiking:
        x = torch.zeros(shape, dtype=dtype) + evaluate(neu.spike_x, {**env, **st})
        z = ((x >= 0) if neu.spike_op == ">=" else (x > 0)).to(dtype)
        if R:
            z = torch.where(refractory, torch.zeros_like(z), z)
    else:
        z = torch.zeros(shape, dtype=dtype)
    for s in st:
        put(f"{name}.{s}_pre", st[s])
    for a in neu.reset:
        e = evaluate(a.value, {**env, **st})
        s = st[a.target]
        if a.op == "=":
            s = torch.where(z > 0, torch.zeros_like(s) + e, s)
        elif a.op == "+=":
            s = torch.where(z > 0, s + e, s)
        else:
            s = torch.where(z > 0, s - e, s)
        st = {**st, a.target: s}
    if R:
        refr[name] = torch.where(z > 0, torch.full_like(refr[name], float(R)),
                                 torch.clamp(refr[name] - 1, min=0))
    state[name] = st
    for s in st:
        put(f"{name}.{s}", st[s])
    put(name, z)
    for p in lay.projections:
        if p.param_name in rules:
            rules[p.param_name].on_post(z)
            put(f"{p.param_name}.weight", rules[p.param_name].w.clone())
