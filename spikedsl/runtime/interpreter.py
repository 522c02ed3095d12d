"""The step loop of the reference interpreter (docs/semantics.md), written
once for every array module of :mod:`spikedsl.runtime.arrays` (numpy, or
torch on any device).  :func:`spikedsl.runtime.reference.run` prepares the
inputs and weights and calls :func:`simulate`.

One Python loop over time, one layer after another in ``net.layers`` order,
every formula written the way the contract states it: neuron layers
(temporaries, updates, spike, reset), dense / conv2d / sparse /
one_to_one projections with ``sign``, delays and recurrence, stages (pools,
flatten, batchnorm and dropout in eval mode), stateless projection layers,
the cells ``slstm`` / ``sconv_lstm`` (as snnTorch), synapse rules
(:class:`Rule`), outputs and their reductions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from spikedsl import ir
from spikedsl.errors import unsupported
from spikedsl.runtime.arrays import NumpyArrays, TorchArrays, backend, reduce_steps
from spikedsl.runtime.reference import compile_expr, neuron_dt, sparse_mask

__all__ = ["Rule", "simulate"]

Arrays = NumpyArrays | TorchArrays


# ------------------------------------------------------------------ plasticity
class Rule:
    """A synapse rule on one projection (docs/semantics.md, "Plasticity"): the
    weight ``w`` and every rule state per synapse and per sample, ``[B, out,
    in]``; ``mask`` marks the synapses that exist (missing ones stay 0).

    ``w0`` (the effective weight ``(out, in)``) and ``mask`` are numpy or
    backend arrays; ``xp`` / ``dtype`` / ``device`` choose the array module as
    :func:`spikedsl.runtime.arrays.backend` does."""

    def __init__(self, lp: ir.LPlasticity, w0, mask, batch: int, dt: float, xp=None,
                 dtype=None, device=None):
        A = self.A = backend(xp, dtype, device)
        self.rule = lp.rule
        m = A.mask(mask)
        self.mask = A.expand(m[None], (batch,) + tuple(m.shape))
        self.w = A.where(self.mask, A.asarray(w0)[None], 0.0)
        self.params: dict[str, object] = {q.name: A.num(q.value) for q in self.rule.params}
        self.params["dt"] = A.num(dt if self.rule.uses_units else 1.0)

        def comp(e):
            return compile_expr(e, const=self.params, xp=A)

        self.states = {}
        with A.errstate():
            for st in self.rule.states:
                self.states[st.name] = A.where(self.mask, comp(st.init)(self.params), 0.0)
        self._temps = [(t.target, comp(t.value)) for t in self.rule.temps]
        self._updates = [(u.target, comp(u.value)) for u in self.rule.updates]
        self._pre = [(a.target, a.op, comp(a.value)) for a in self.rule.on_pre]
        self._post = [(a.target, a.op, comp(a.value)) for a in self.rule.on_post]

    def env(self) -> dict[str, object]:
        return {**self.params, **self.states, "w": self.w}

    def _set(self, name: str, value, where) -> None:
        old = self.w if name == "w" else self.states[name]
        ok = self.mask if where is None else (self.mask & where)
        new = self.A.where(ok, value, old)
        if name == "w":
            self.w = new
        else:
            self.states[name] = new

    def advance(self) -> None:
        """1. the rule's own dynamics: temps, then every update on the old values."""
        if not self._updates:
            return
        with self.A.errstate():
            env = self.env()
            for name, f in self._temps:
                env[name] = f(env)
            new = [(name, f(env)) for name, f in self._updates]
        for name, v in new:
            self._set(name, v, None)

    def _run(self, stmts, fired) -> None:
        with self.A.errstate():
            for target, op, f in stmts:  # in order, each reading what the previous one left
                env = self.env()
                v = f(env)
                if op == "+=":
                    v = env[target] + v
                elif op == "-=":
                    v = env[target] - v
                self._set(target, v, fired)

    def transmit(self, x):
        """The projection's input to the target: ``w @ x`` per sample."""
        return (self.w * x.reshape(x.shape[0], 1, -1)).sum(-1)

    def on_pre(self, x) -> None:
        """2. after transmission, for the synapses whose presynaptic spike arrives."""
        if self._pre:
            self._run(self._pre, x.reshape(x.shape[0], 1, -1) != 0)

    def on_post(self, z) -> None:
        """4. after the target layer's step, for the synapses whose neuron spiked."""
        if self._post:
            self._run(self._post, z.reshape(z.shape[0], -1, 1) != 0)


# ------------------------------------------------------------------ projections
class _Weights:
    """The run's weights (backend arrays) and the projections that read them."""

    def __init__(self, A: Arrays, weights: Mapping[str, np.ndarray], batch: int):
        self.A, self.B = A, batch
        self.w = {k: A.asarray(v) for k, v in weights.items()}
        self.rules: dict[str, Rule] = {}
        self._eff: dict[str, object] = {}  # effective weights, built once

    def proj_weight(self, p: ir.LProjection):
        """The effective weight (``sign`` applied) of a projection."""
        if p.param_name in self._eff:
            return self._eff[p.param_name]
        A, key = self.A, f"{p.param_name}.weight"
        if p.kind in ("dense", "conv2d"):
            w = self.w[key]
        elif p.kind == "sparse":
            mask = A.asarray(sparse_mask(p))
            w = mask * self.w[key].reshape(mask.shape) if key in self.w else mask * (
                p.weight if p.weight is not None else 1.0)
        else:  # one_to_one
            w = self.w[key] if key in self.w else A.num(
                p.weight if p.weight is not None else 1.0)
        if p.sign == "excitatory":
            w = A.abs(w)
        elif p.sign == "inhibitory":
            w = -A.abs(w)
        self._eff[p.param_name] = w
        return w

    def matrix(self, p: ir.LProjection) -> tuple[object, np.ndarray]:
        """(effective weight (out, in), synapse mask (numpy)) of a dense /
        sparse / one_to_one projection: the form a synapse rule works on."""
        n_out, n_in = math.prod(p.out_shape), math.prod(p.in_shape)
        if p.kind not in ("dense", "sparse", "one_to_one"):
            raise unsupported("reference", f"plasticity on the {p.kind} projection "
                              f"'{p.param_name}'", "a synapse rule needs one weight per "
                              "synapse (conv2d shares its kernel)")
        w = self.proj_weight(p)
        if p.kind == "dense":
            return w.reshape(n_out, n_in), np.ones((n_out, n_in), dtype=bool)
        if p.kind == "sparse":
            return w, sparse_mask(p) > 0
        v = self.A.full(w.reshape(-1), (n_out,))
        return self.A.diag(v), np.eye(n_out, dtype=bool)

    def apply(self, p: ir.LProjection, x):
        B, A = x.shape[0], self.A
        out_shape = (B,) + tuple(p.out_shape)
        rule = self.rules.get(p.param_name)
        bias = self.w.get(f"{p.param_name}.bias") if p.bias else None
        if rule is not None:  # plastic: per-sample weights, then on_pre
            y = rule.transmit(x)
            if bias is not None and p.kind == "dense":
                y = y + bias
            rule.on_pre(x)
            return y.reshape(out_shape)
        w = self.proj_weight(p)
        if p.kind in ("dense", "sparse"):
            y = x.reshape(B, -1) @ w.T
            if bias is not None:
                y = y + bias
            return y.reshape(out_shape)
        if p.kind == "conv2d":
            return A.conv2d(x.reshape((B,) + tuple(p.in_shape)), w, bias, p.stride, p.padding)
        return w * x.reshape(B, -1).reshape(out_shape)  # one_to_one


# ------------------------------------------------------------------ neurons
class _Neuron:
    """One neuron layer: its parameters and its lowered step as closures."""

    def __init__(self, net: ir.LNetwork, lay: ir.LLayer, W: _Weights):
        A = W.A
        nrn = self.nrn = lay.neuron
        env: dict[str, object] = {"dt": A.num(neuron_dt(net, nrn))}
        for prm in nrn.params:
            key = f"{lay.name}.{prm.name}"
            val = W.w.get(key)
            env[prm.name] = A.num(prm.value) if val is None else (
                val.reshape(()) if val.ndim == 0 else val)
        self.params = env

        def comp(e):
            return compile_expr(e, const=env, xp=A)

        self.temps = [(t.target, comp(t.value)) for t in nrn.temps]
        self.updates = [(u.target, comp(u.value)) for u in nrn.updates]
        self.jumps = [(j.target, comp(j.value)) for j in nrn.jumps]
        cond = nrn.spike_cond if nrn.spike_cond is not None else nrn.spike_x
        self.spike = comp(cond) if nrn.spiking and cond is not None else None
        self.reset = [(a.target, a.op, comp(a.value)) for a in nrn.reset]
        self.full = (W.B,) + tuple(lay.shape)
        with A.errstate():
            self.states = {s.name: A.full(comp(s.init)(env), self.full) for s in nrn.states}


# ------------------------------------------------------------------ the run
class _Run:
    def __init__(self, net: ir.LNetwork, A: Arrays, enc: Mapping[str, object],
                 weights: Mapping[str, np.ndarray], B: int):
        self.net, self.A, self.enc, self.B = net, A, enc, B
        self.W = W = _Weights(A, weights, B)
        plastic = {lp.projection: lp for lp in net.plasticity}
        for lay in net.layers:
            for p in lay.projections:
                if p.param_name in plastic:
                    if lay.kind != "neuron":
                        raise unsupported("reference", f"plasticity on '{p.param_name}'",
                                          "the target of a synapse rule must be a neuron layer")
                    w0, mask = W.matrix(p)
                    W.rules[p.param_name] = Rule(plastic[p.param_name], w0, mask, B, net.dt,
                                                 xp=A)
        # traces: name -> list over steps of [B, ...]
        self.hist: dict[str, list] = {}
        self.neurons: dict[str, _Neuron] = {}
        self.cells: dict[str, dict[str, object]] = {}
        for lay in net.layers:
            self.hist[lay.name] = []
            if lay.kind == "neuron":
                self.neurons[lay.name] = _Neuron(net, lay, W)
            elif lay.kind == "cell":
                self.cells[lay.name] = {s: A.zeros((B,) + tuple(lay.shape))
                                        for s in ("syn", "mem")}
            if lay.kind in ("neuron", "cell"):
                for s in lay.states:
                    self.hist[f"{lay.name}.{s}"] = []
                    self.hist[f"{lay.name}.{s}_pre"] = []
        for pname in W.rules:
            self.hist[f"{pname}.weight"] = []

    def source(self, src: str, state: str | None, n: int, delay: int, shape):
        """The output of layer ``src`` (or its trace ``state``) of step n - delay,
        zero before the start."""
        k = n - delay
        if k < 0:
            return self.A.zeros((self.B,) + tuple(shape))
        return self.hist[src if state is None else f"{src}.{state}"][k]

    def step(self, n: int) -> None:
        A = self.A
        for lay in self.net.layers:
            if lay.kind == "input":
                out = self.enc[lay.name][n]
            elif lay.kind == "neuron":
                out = self.neuron_step(lay, n)
            elif lay.kind == "projection":
                p = lay.projections[0]
                out = self.W.apply(p, self.source(p.source, p.source_state, n, p.delay,
                                                  p.in_shape))
                if lay.func:
                    out = A.funcs[lay.func](out)
            elif lay.kind == "stage":
                out = self.stage(lay, self.source(lay.source, lay.source_state, n, 0, ()), n)
            else:
                out = self.cell(lay, self.source(lay.source, lay.source_state, n, 0, ()))
            self.hist[lay.name].append(A.to_float(out))

    def neuron_step(self, lay: ir.LLayer, n: int):
        A, W, hist, name = self.A, self.W, self.hist, lay.name
        c = self.neurons[name]
        nrn, st, full = c.nrn, c.states, c.full
        # plasticity 1: the rules' own dynamics, before transmission
        rules = [W.rules[p.param_name] for p in lay.projections if p.param_name in W.rules]
        for rule in rules:
            rule.advance()
        # a. inputs: sum of the projections into each neuron input (plasticity 2: on_pre)
        I = {k: A.zeros(full) for k in nrn.inputs}
        for p in lay.projections:
            x = self.source(p.source, p.source_state, n, p.delay, p.in_shape)
            I[p.target_input] = I[p.target_input] + W.apply(p, x).reshape(full)
        with A.errstate():
            env = dict(c.params)
            env.update(st)
            env.update(I)
            # c. jumps in order, each reading what the previous ones left
            for s, f in c.jumps:
                st[s] = env[s] = A.full(f(env), full)
            # d. temporaries in order, then every update on the old states, at once
            for tname, f in c.temps:
                env[tname] = f(env)
            new = [(s, f(env)) for s, f in c.updates]
            for s, v in new:
                st[s] = A.full(v, full)
            # e. spike on the new states: z = H(condition)
            env.update(st)
            if c.spike is not None:
                x = c.spike(env)
                if nrn.spike_cond is not None:
                    fire = A.full(x, full) > 0.5
                else:
                    fire = (x >= 0) if nrn.spike_op == ">=" else (x > 0)
                z = A.to_float(fire)
            else:
                z = A.zeros(full)
            # f. pre-reset record, then the reset statements in order where z = 1
            for s in nrn.state_names:
                hist[f"{name}.{s}_pre"].append(st[s])
            if c.reset and A.any(z):
                for target, op, f in c.reset:
                    env.update(st)
                    e = f(env)
                    s = st[target]
                    if op == "=":
                        st[target] = A.to_float(s - z * (s - e))
                    elif op == "+=":
                        st[target] = A.to_float(s + z * e)
                    else:
                        st[target] = A.to_float(s - z * e)
        for s in nrn.state_names:
            hist[f"{name}.{s}"].append(st[s])
        # plasticity 4: on_post where the neuron spiked; record the weights
        for p in lay.projections:
            if p.param_name in W.rules:
                W.rules[p.param_name].on_post(z)
                hist[f"{p.param_name}.weight"].append(W.rules[p.param_name].w)
        return z

    def cell(self, lay: ir.LLayer, x):
        """snnTorch's ``SLSTM`` (an ``nn.LSTMCell``: gates i, f, g, o) and
        ``SConv2dLSTM`` (one conv over [x, mem], padding kernel // 2: gates i,
        f, o, g): ``syn = σ(f)·syn + σ(i)·tanh(g)``, ``mem = σ(o)·tanh(syn)``,
        spike ``mem > threshold``, no reset (snnTorch's default)."""
        A, w, name = self.A, self.W.w, lay.name
        st = self.cells[name]
        B = x.shape[0]
        syn, mem = st["syn"], st["mem"]
        if lay.op == "slstm":
            g = (x.reshape(B, -1) @ w[f"{name}.weight_ih"].T + w[f"{name}.bias_ih"]
                 + mem @ w[f"{name}.weight_hh"].T + w[f"{name}.bias_hh"])
            i, f, gg, o = A.chunk4(g)
        else:
            cin, k = int(lay.args["in_channels"]), int(lay.args["kernel"])
            wc, b = w[f"{name}.weight"], w[f"{name}.bias"]
            pad = (k // 2, k // 2)
            g = (A.conv2d(x, wc[:, :cin], b, (1, 1), pad)
                 + A.conv2d(mem, wc[:, cin:], None, (1, 1), pad))
            i, f, o, gg = A.chunk4(g)
        syn = A.sigmoid(f) * syn + A.sigmoid(i) * A.tanh(gg)
        mem = A.sigmoid(o) * A.tanh(syn)
        st["syn"], st["mem"] = syn, mem
        for s, v in (("syn", syn), ("mem", mem)):
            self.hist[f"{name}.{s}"].append(v)
            self.hist[f"{name}.{s}_pre"].append(v)
        return A.to_float(mem > float(lay.args.get("threshold", 1.0)))

    def stage(self, lay: ir.LLayer, x, n: int = 0):
        op, B = lay.op, x.shape[0]
        if op == "flatten":
            return x.reshape(B, -1)
        if op in ("avgpool2d", "sumpool2d", "maxpool2d"):
            return self.A.pool2d(x, lay.args["kernel"], lay.args["stride"], op[:3])
        if op == "dropout":
            return x
        if op == "batchnorm":
            w = self.W.w
            g, b = w[f"{lay.name}.weight"], w[f"{lay.name}.bias"]
            m, v = w[f"{lay.name}.running_mean"], w[f"{lay.name}.running_var"]
            eps = float(lay.args.get("eps", 1e-5))
            if lay.args.get("per_step"):  # row n of [steps, C]: BatchNorm-through-time
                if n >= g.shape[0]:
                    raise ValueError(f"batchnorm '{lay.name}' is per step and has statistics "
                                     f"for {g.shape[0]} steps; step {n} has none")
                g, b, m, v = g[n], b[n], m[n], v[n]
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return ((x - m.reshape(shape)) / self.A.sqrt(v.reshape(shape) + eps)
                    * g.reshape(shape) + b.reshape(shape))
        raise unsupported("reference", f"stage '{op}'", "unknown stage")


def simulate(net: ir.LNetwork, A: Arrays, enc: Mapping[str, object],
             weights: Mapping[str, np.ndarray], steps: int, batch: int,
             record: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``net`` for ``steps`` steps on encoded inputs ``enc`` (backend
    arrays ``[T, B, ...]``) with ``weights`` (every name the network reads);
    returns every output and every ``record`` trace as numpy arrays."""
    with A.running():
        R = _Run(net, A, enc, weights, batch)
        for n in range(steps):
            R.step(n)
        hist = R.hist

        def stacked(key: str) -> np.ndarray:
            if key not in hist:
                raise KeyError(f"network '{net.name}' has no trace '{key}'")
            if not hist[key]:
                return np.zeros((0, batch), dtype=A.np_dtype)
            return A.to_numpy(A.stack(hist[key]))

        result: dict[str, np.ndarray] = {}
        for o in net.outputs:
            key = o.layer if o.state is None else (
                f"{o.layer}.{o.state}{'_pre' if o.pre_reset else ''}")
            result[o.name] = reduce_steps(stacked(key), o.reduce)
        for key in record or ():
            result[key] = stacked(key)
    return result
