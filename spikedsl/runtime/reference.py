"""A numpy reference interpreter of the step semantics (docs/semantics.md).

Slow, plain and meant to be obviously correct: one Python loop over time,
one layer after another in ``net.layers`` order, every formula written the
way the contract states it.  It is the oracle of ``spikedsl test`` and
``spikedsl verify`` and needs nothing but numpy.

    from spikedsl.runtime import reference
    out = reference.run(net, {"x": x})            # x: [T, B, ...] (encoded) or [B, ...]
    out = reference.run(net, x, weights=w, record=["h", "h.v", "h.v_pre"])

``run`` returns a dict of numpy arrays: every ``LOutput`` by name (``"y"``,
``"y.v"``, ``"sum(y)"``) plus every recorded trace (``[T, B, ...]``):
``"h"`` is the layer's output (spikes of a neuron layer or cell, values of
an input / stage / stateless projection), ``"h.v"`` a state after reset,
``"h.v_pre"`` the same state before reset, and ``"PROJ.weight"`` the
per-sample weights ``[T, B, out, in]`` of a plastic projection.

Covered: neuron layers (temporaries, updates, spike, reset, refractory),
dense / conv2d / sparse / one_to_one projections with ``sign``, delays and
recurrence, stages (pools, flatten, batchnorm and dropout in eval mode),
stateless projection layers, the cells ``slstm`` / ``sconv_lstm`` (as
snnTorch), synapse rules (plasticity), output reductions, the encoders.

Weights use the names of the weights files (``h.weight``, ``h.bias``,
``h.tau_mem``, ``bn.running_mean``); anything missing is initialised by
:func:`init_weights` (seeded, deterministic; not meant to equal torch's
random initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from spikedsl import ir
from spikedsl.errors import unsupported
from spikedsl.ir import arrays
from spikedsl.ir.functions import FUNCTIONS

__all__ = [
    "encode",
    "evaluate",
    "init_weights",
    "neuron_dt",
    "refractory_steps",
    "run",
    "sparse_mask",
    "weight_shapes",
]


# ------------------------------------------------------------------ expressions
def compile_expr(e: ir.Expr, dtype=np.float64, const: Mapping[str, object] | None = None,
                 xp=None) -> Callable[[Mapping[str, object]], object]:
    """An IR expression -> a function of the environment (elementwise).

    The tree is walked once; each node becomes a small closure, so a step
    costs one array call per operator.  Subexpressions that only read names
    of ``const`` (parameters, ``dt``) are evaluated once, here.  ``xp``:
    ``numpy`` (default) or ``torch`` (then ``dtype`` may be a torch dtype).
    With numpy, call the result inside ``np.errstate(all="ignore")`` (x/0
    gives inf/nan, as torch)."""
    return arrays.compile_expr(e, dtype, const, xp)


def evaluate(e: ir.Expr, env: Mapping[str, object], dtype=np.float64, xp=None):
    """Evaluate an IR expression elementwise with numpy or torch (arrays broadcast)."""
    return arrays.evaluate(e, env, dtype, xp)


# ------------------------------------------------------------------ time helpers
def neuron_dt(net: ir.LNetwork, neuron: ir.LNeuron) -> float:
    """The value of the free symbol ``dt`` inside ``neuron``."""
    return float(net.dt) if neuron.uses_units else 1.0


def refractory_steps(net: ir.LNetwork, neuron: ir.LNeuron) -> int:
    """R = ceil(refractory / dt - 1e-9), 0 without a refractory period."""
    if not neuron.refractory or neuron.refractory <= 0:
        return 0
    return math.ceil(neuron.refractory / neuron_dt(net, neuron) - 1e-9)


# ------------------------------------------------------------------ encoders
def encode(layer: ir.LLayer, data: np.ndarray, steps: int, seed: int | None = None,
           dtype=np.float64) -> np.ndarray:
    """Encode raw data ``[B, ...]`` of an input layer into ``[steps, B, ...]``.

    ``direct`` repeats the value every step; ``poisson`` draws Bernoulli
    spikes with ``p = clip(value * max_rate, 0, 1)`` from
    ``numpy.random.default_rng(seed)`` (seed: the argument, else the
    encoder's ``seed``); ``latency`` follows snnTorch's ``spikegen.latency``;
    ``spikes`` needs data that already is ``[T, B, ...]``.
    Data that already has the time axis is passed through (``poisson`` also
    accepts a time-varying ``[T, B, ...]`` rate, encoded step by step).
    """
    data = np.asarray(data, dtype=dtype)
    nd = len(layer.shape)
    timed = data.ndim == nd + 2
    enc = layer.encoder or "direct"
    args = layer.encoder_args
    if enc == "direct":
        if timed:
            return data
        return np.broadcast_to(data, (steps,) + data.shape).copy()
    if enc == "poisson":
        if seed is None:
            seed = int(args.get("seed", 0))
        p = np.clip(data * args.get("max_rate", 1.0), 0.0, 1.0)
        if not timed:
            p = np.broadcast_to(p, (steps,) + p.shape)
        rng = np.random.default_rng(seed)
        return (rng.random(p.shape) < p).astype(dtype)
    if enc == "spikes":
        if not timed:
            raise ValueError(f"input '{layer.name}' uses the 'spikes' encoder: the data must be "
                             f"[T, B, {', '.join(map(str, layer.shape))}]")
        return data
    if enc == "latency":
        if timed:
            return data
        return _latency(data, steps, args, dtype)
    raise ValueError(f"unknown encoder '{enc}'")


def _latency(data: np.ndarray, steps: int, args: Mapping[str, float], dtype) -> np.ndarray:
    """snnTorch ``spikegen.latency(data, num_steps, tau, threshold, normalize,
    linear, clip=False, first_spike_time=0)``."""
    tau = float(args.get("tau", 5.0))
    thr = float(args.get("threshold", 0.01))
    normalize = bool(args.get("normalize", 1.0))
    linear = bool(args.get("linear", 0.0))
    eps = 1e-7
    if data.size and (data.min() < 0 or data.max() > 1):
        raise ValueError("latency encoding needs data in [0, 1]")
    if linear:
        if normalize:
            tau = steps - 1
        st = np.minimum(-tau * (data - 1), -tau * (thr - 1))
        if st.size and st.min() < 0 and normalize:
            st = (st - st.min()) * (1 / (st.max() - st.min())) * (steps - 1)
    else:
        d = np.maximum(data, thr + eps)
        st = tau * np.log(d / (d - thr))
        if normalize and st.size:
            st = st * (steps - 1) / st.max()
    idx = np.round(np.minimum(st, steps - 1)).astype(np.int64)
    keep = ~(np.round(st).astype(np.int64) > steps - 1)
    out = np.zeros((steps,) + data.shape, dtype=dtype)
    np.put_along_axis(out, idx[None], 1.0, axis=0)
    return out * keep[None]


# ------------------------------------------------------------------ weights
def sparse_mask(proj: ir.LProjection) -> np.ndarray:
    """Fixed connectivity of ``sparse``: ``default_rng(seed).random((out, in)) < p``."""
    n_out, n_in = math.prod(proj.out_shape), math.prod(proj.in_shape)
    return (np.random.default_rng(proj.seed).random((n_out, n_in)) < proj.p).astype(np.float64)


def weight_shapes(net: ir.LNetwork) -> dict[str, tuple[int, ...]]:
    """Every trainable / loadable array of the network and its shape."""
    out: dict[str, tuple[int, ...]] = {}
    for lay in net.layers:
        for p in lay.projections:
            if p.kind == "dense":
                out[f"{p.param_name}.weight"] = (math.prod(p.out_shape), math.prod(p.in_shape))
                if p.bias:
                    out[f"{p.param_name}.bias"] = (math.prod(p.out_shape),)
            elif p.kind == "conv2d":
                out[f"{p.param_name}.weight"] = (p.channels, p.in_shape[0]) + tuple(p.kernel)
                if p.bias:
                    out[f"{p.param_name}.bias"] = (p.channels,)
        if lay.kind == "neuron" and lay.neuron is not None:
            for prm in lay.neuron.params:
                if prm.trainable or prm.per_neuron:
                    out[f"{lay.name}.{prm.name}"] = tuple(lay.shape) if prm.per_neuron else ()
        if lay.kind == "stage" and lay.op == "batchnorm":
            c = (lay.shape[0],)
            for k in ("weight", "bias", "running_mean", "running_var"):
                out[f"{lay.name}.{k}"] = c
        if lay.kind == "cell" and lay.op == "slstm":
            H, nin = int(lay.args["hidden"]), int(lay.args["in_features"])
            out[f"{lay.name}.weight_ih"] = (4 * H, nin)
            out[f"{lay.name}.weight_hh"] = (4 * H, H)
            out[f"{lay.name}.bias_ih"] = (4 * H,)
            out[f"{lay.name}.bias_hh"] = (4 * H,)
        elif lay.kind == "cell":
            C, cin, k = (int(lay.args["channels"]), int(lay.args["in_channels"]),
                         int(lay.args["kernel"]))
            out[f"{lay.name}.weight"] = (4 * C, cin + C, k, k)
            out[f"{lay.name}.bias"] = (4 * C,)
    return out


def init_weights(net: ir.LNetwork, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded initial values for every name of :func:`weight_shapes`.

    Projections: ``default`` as torch's ``nn.Linear``/``nn.Conv2d``
    (U(±1/sqrt(fan_in)) for weight and bias), ``kaiming`` U(±sqrt(6/fan_in)),
    ``xavier`` U(±sqrt(6/(fan_in+fan_out))), ``normal(σ)``, ``uniform(a, b)``,
    ``zeros``; biases of the non-default schemes are zero.
    Neuron parameters: their value, or ``uniform(a, b)`` draws for
    ``per_neuron(uniform(a, b))``.  Batchnorm: weight 1, bias 0, mean 0, var 1.
    """
    shapes = weight_shapes(net)
    out: dict[str, np.ndarray] = {}
    for i, lay in enumerate(net.layers):
        rng = np.random.default_rng([seed, i])
        for p in lay.projections:
            if p.kind not in ("dense", "conv2d"):
                continue
            wshape = shapes[f"{p.param_name}.weight"]
            fan_in = math.prod(wshape[1:])
            fan_out = wshape[0] * math.prod(wshape[2:])
            init = p.init
            if init == "default":
                b = 1.0 / math.sqrt(fan_in)
                w = rng.uniform(-b, b, wshape)
            elif init == "kaiming":
                b = math.sqrt(6.0 / fan_in)
                w = rng.uniform(-b, b, wshape)
            elif init == "xavier":
                b = math.sqrt(6.0 / (fan_in + fan_out))
                w = rng.uniform(-b, b, wshape)
            elif init == "normal":
                w = rng.normal(0.0, p.init_args[0] if p.init_args else 1.0, wshape)
            elif init == "uniform":
                w = rng.uniform(p.init_args[0], p.init_args[1], wshape)
            else:
                w = np.zeros(wshape)
            out[f"{p.param_name}.weight"] = w
            if p.bias:
                bshape = shapes[f"{p.param_name}.bias"]
                if init == "default":
                    out[f"{p.param_name}.bias"] = rng.uniform(-1 / math.sqrt(fan_in),
                                                              1 / math.sqrt(fan_in), bshape)
                else:
                    out[f"{p.param_name}.bias"] = np.zeros(bshape)
        if lay.kind == "neuron" and lay.neuron is not None:
            for prm in lay.neuron.params:
                key = f"{lay.name}.{prm.name}"
                if key not in shapes:
                    continue
                if prm.per_neuron and prm.init_uniform is not None:
                    out[key] = rng.uniform(prm.init_uniform[0], prm.init_uniform[1], shapes[key])
                else:
                    out[key] = np.full(shapes[key], prm.value)
        if lay.kind == "cell":  # as torch.nn.LSTMCell / snnTorch's SConv2dLSTM
            keys = [k for k in shapes if k.startswith(f"{lay.name}.")]
            if lay.op == "slstm":
                b = 1.0 / math.sqrt(int(lay.args["hidden"]))
            else:
                fan = math.prod(shapes[f"{lay.name}.weight"][1:])
                b = 1.0 / math.sqrt(fan)
            for k in sorted(keys):
                out[k] = rng.uniform(-b, b, shapes[k])
        if lay.kind == "stage" and lay.op == "batchnorm":
            c = shapes[f"{lay.name}.weight"]
            out[f"{lay.name}.weight"] = np.ones(c)
            out[f"{lay.name}.bias"] = np.zeros(c)
            out[f"{lay.name}.running_mean"] = np.zeros(c)
            out[f"{lay.name}.running_var"] = np.ones(c)
    return out


def load_weights(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: np.asarray(z[k]) for k in z.files}


# ------------------------------------------------------------------ operators
def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride, padding) -> np.ndarray:
    """``torch.nn.functional.conv2d`` (cross-correlation), x [B, C, H, W]."""
    sh, sw = stride
    ph, pw = padding
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::sh, ::sw]  # [B, C, Ho, Wo, kh, kw]
    y = np.einsum("bchwpq,ocpq->bohw", win, w, optimize=True)
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def pool2d(x: np.ndarray, kernel, stride, how: str) -> np.ndarray:
    kh, kw = kernel
    sh, sw = stride
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    if how == "max":
        return win.max(axis=(4, 5))
    s = win.sum(axis=(4, 5))
    return s / (kh * kw) if how == "avg" else s


class _Net:
    """Per-run state of the interpreter."""

    def __init__(self, net: ir.LNetwork, weights: Mapping[str, np.ndarray], dtype, batch: int):
        self.net, self.dtype, self.B = net, dtype, batch
        self.w = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
        self.rules: dict[str, _Rule] = {}


    def proj_weight(self, p: ir.LProjection):
        key = f"{p.param_name}.weight"
        if p.kind in ("dense", "conv2d"):
            w = self.w[key]
        elif p.kind == "sparse":
            mask = sparse_mask(p).astype(self.dtype)
            w = mask * self.w[key].reshape(mask.shape) if key in self.w else mask * (
                p.weight if p.weight is not None else 1.0)
        else:  # one_to_one
            w = self.w[key] if key in self.w else self.dtype(
                p.weight if p.weight is not None else 1.0)
        if p.sign == "excitatory":
            w = np.abs(w)
        elif p.sign == "inhibitory":
            w = -np.abs(w)
        return w

    def matrix(self, p: ir.LProjection) -> tuple[np.ndarray, np.ndarray]:
        """(effective weight (out, in), synapse mask) of a dense / sparse /
        one_to_one projection: the form a synapse rule works on."""
        n_out, n_in = math.prod(p.out_shape), math.prod(p.in_shape)
        w = self.proj_weight(p)
        if p.kind == "dense":
            return w.reshape(n_out, n_in), np.ones((n_out, n_in), dtype=bool)
        if p.kind == "sparse":
            return w, sparse_mask(p) > 0
        if p.kind == "one_to_one":
            v = np.broadcast_to(np.asarray(w, dtype=self.dtype).reshape(-1), (n_out,))
            return np.diag(v).astype(self.dtype), np.eye(n_out, dtype=bool)
        raise unsupported("reference", f"plasticity on the {p.kind} projection "
                          f"'{p.param_name}'", "a synapse rule needs one weight per synapse "
                          "(conv2d shares its kernel)")

    def apply(self, p: ir.LProjection, x: np.ndarray) -> np.ndarray:
        B = x.shape[0]
        rule = self.rules.get(p.param_name)
        if rule is not None:  # plastic: per-sample weights, then on_pre
            y = (rule.w * x.reshape(B, 1, -1)).sum(-1)
            if p.bias and p.kind == "dense" and f"{p.param_name}.bias" in self.w:
                y = y + self.w[f"{p.param_name}.bias"]
            rule.on_pre(x)
            return y.reshape((B,) + tuple(p.out_shape)).astype(self.dtype)
        w = self.proj_weight(p)
        if p.kind in ("dense", "sparse"):
            y = x.reshape(B, -1) @ w.T
            if p.bias and f"{p.param_name}.bias" in self.w:
                y = y + self.w[f"{p.param_name}.bias"]
            return y.reshape((B,) + tuple(p.out_shape))
        if p.kind == "conv2d":
            xin = x.reshape((B,) + tuple(p.in_shape))
            b = self.w.get(f"{p.param_name}.bias") if p.bias else None
            return conv2d(xin, w, b, p.stride, p.padding)
        # one_to_one
        return (w * x.reshape(B, -1).reshape((B,) + tuple(p.out_shape))).astype(self.dtype)


class _Rule:
    """A synapse rule on one projection (docs/semantics.md, "Plasticity"):
    the weight and every rule state per synapse and per sample, [B, out, in]."""

    def __init__(self, lp: ir.LPlasticity, w0: np.ndarray, mask: np.ndarray, batch: int,
                 dt: float, dtype):
        self.rule, self.dtype = lp.rule, dtype
        self.mask = np.broadcast_to(mask, (batch,) + mask.shape)
        self.w = np.where(self.mask, np.broadcast_to(w0, self.mask.shape), 0.0).astype(dtype)
        self.params: dict[str, object] = {q.name: dtype(q.value) for q in self.rule.params}
        self.params["dt"] = dtype(dt if self.rule.uses_units else 1.0)
        self.states = {}
        for st in self.rule.states:
            v = evaluate(st.init, self.params, dtype)
            self.states[st.name] = np.where(self.mask, v, 0.0).astype(dtype)

    def env(self) -> dict[str, object]:
        return {**self.params, **self.states, "w": self.w}

    def _set(self, name: str, value, where) -> None:
        old = self.w if name == "w" else self.states[name]
        value = np.broadcast_to(np.asarray(value, dtype=self.dtype), old.shape)
        ok = self.mask if where is None else (self.mask & where)
        new = np.where(ok, value, old).astype(self.dtype)
        if name == "w":
            self.w = new
        else:
            self.states[name] = new

    def advance(self) -> None:
        """1. the rule's own dynamics: temps, then every update on the old values."""
        if not self.rule.updates:
            return
        env = self.env()
        for t in self.rule.temps:
            env[t.target] = evaluate(t.value, env, self.dtype)
        new = {u.target: evaluate(u.value, env, self.dtype) for u in self.rule.updates}
        for k, v in new.items():
            self._set(k, v, None)

    def _run(self, stmts, fired) -> None:
        for a in stmts:  # in order, each reading what the previous one left
            env = self.env()
            v = evaluate(a.value, env, self.dtype)
            if a.op == "+=":
                v = env[a.target] + v
            elif a.op == "-=":
                v = env[a.target] - v
            self._set(a.target, v, fired)

    def on_pre(self, x: np.ndarray) -> None:
        """2. after transmission, for the synapses whose presynaptic spike arrives."""
        if self.rule.on_pre:
            self._run(self.rule.on_pre, x.reshape(x.shape[0], 1, -1) != 0)

    def on_post(self, z: np.ndarray) -> None:
        """4. after the target layer's step, for the synapses whose neuron spiked."""
        if self.rule.on_post:
            self._run(self.rule.on_post, z.reshape(z.shape[0], -1, 1) != 0)


def _as_inputs(net: ir.LNetwork, inputs) -> dict[str, np.ndarray]:
    ins = net.inputs
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if len(ins) != 1:
        raise ValueError(f"network '{net.name}' has {len(ins)} inputs "
                         f"({', '.join(i.name for i in ins)}); pass a dict")
    return {ins[0].name: inputs}


def run(net: ir.LNetwork, inputs=None, *, weights: Mapping[str, np.ndarray] | None = None,
        dtype=np.float64, record: list[str] | None = None, seed: int = 0,
        batch: int | None = None) -> dict[str, np.ndarray]:
    """Run ``net`` for ``T`` steps and return outputs and recorded traces.

    ``inputs``: a dict ``{input name: array}`` or one array for a network with
    a single input.  ``[T, B, ...]`` arrays are already encoded (T steps);
    ``[B, ...]`` arrays are encoded with the layer's encoder for
    ``net.steps`` steps.  ``weights``: ``{name: array}`` (missing names are
    initialised by :func:`init_weights` with ``seed``; ``net.weights`` is
    loaded first when set).
    """
    dtype = np.dtype(dtype).type
    data = _as_inputs(net, inputs if inputs is not None else {})
    enc: dict[str, np.ndarray] = {}
    T = None
    for lay in net.inputs:
        if lay.name not in data:
            raise ValueError(f"missing input '{lay.name}' of network '{net.name}'")
        x = np.asarray(data[lay.name], dtype=dtype)
        nd = len(lay.shape)
        if x.ndim == nd + 1:
            x = encode(lay, x, net.steps, dtype=dtype)
        elif x.ndim != nd + 2:
            raise ValueError(f"input '{lay.name}' must be [T, B, {', '.join(map(str, lay.shape))}]"
                             f" or [B, ...], got shape {list(x.shape)}")
        if tuple(x.shape[2:]) != tuple(lay.shape):
            if math.prod(x.shape[2:]) != math.prod(lay.shape):
                raise ValueError(f"input '{lay.name}' has shape {list(x.shape[2:])}, "
                                 f"the network expects {list(lay.shape)}")
            x = x.reshape(x.shape[:2] + tuple(lay.shape))
        if T is not None and x.shape[0] != T:
            raise ValueError("inputs have different numbers of time steps")
        T = x.shape[0]
        enc[lay.name] = x
    if T is None:
        T = net.steps
    B = next(iter(enc.values())).shape[1] if enc else (batch or 1)
    extra = set(data) - {i.name for i in net.inputs}
    if extra:
        raise ValueError(f"unknown input(s) {sorted(extra)} of network '{net.name}'")

    w = init_weights(net, seed)
    if net.weights:
        w.update(load_weights(net.weights))
    if weights:
        w.update({k: np.asarray(v) for k, v in weights.items()})
    S = _Net(net, w, dtype, B)
    plastic = {lp.projection: lp for lp in net.plasticity}
    for lay in net.layers:
        for p in lay.projections:
            if p.param_name in plastic:
                if lay.kind != "neuron":
                    raise unsupported("reference", f"plasticity on '{p.param_name}'",
                                      "the target of a synapse rule must be a neuron layer")
                w0, mask = S.matrix(p)
                S.rules[p.param_name] = _Rule(plastic[p.param_name], w0, mask, B, net.dt, dtype)

    # traces: name -> list over steps of [B, ...]
    hist: dict[str, list[np.ndarray]] = {}
    states: dict[str, dict[str, np.ndarray]] = {}
    refr: dict[str, np.ndarray] = {}
    params: dict[str, dict[str, object]] = {}
    for lay in net.layers:
        hist[lay.name] = []
        if lay.kind == "neuron":
            n = lay.neuron
            assert n is not None
            env: dict[str, object] = {"dt": dtype(neuron_dt(net, n))}
            for prm in n.params:
                key = f"{lay.name}.{prm.name}"
                if key in S.w:
                    val = S.w[key]
                    env[prm.name] = dtype(val) if val.ndim == 0 else val
                else:
                    env[prm.name] = dtype(prm.value)
            params[lay.name] = env
            full = (B,) + tuple(lay.shape)
            st = {}
            for s in n.states:
                v = evaluate(s.init, env, dtype)
                st[s.name] = np.broadcast_to(np.asarray(v, dtype=dtype), full).copy()
            states[lay.name] = st
            refr[lay.name] = np.zeros(full, dtype=np.int64)
            for s in n.states:
                hist[f"{lay.name}.{s.name}"] = []
                hist[f"{lay.name}.{s.name}_pre"] = []
        elif lay.kind == "cell":
            states[lay.name] = {s: np.zeros((B,) + tuple(lay.shape), dtype=dtype)
                                for s in ("syn", "mem")}
            for s in ("syn", "mem"):
                hist[f"{lay.name}.{s}"] = []
                hist[f"{lay.name}.{s}_pre"] = []

    for pname in S.rules:
        hist[f"{pname}.weight"] = []

    def source_value(p_source: str, p_state: str | None, n: int, delay: int, shape):
        key = p_source if p_state is None else f"{p_source}.{p_state}"
        k = n - delay
        if k < 0:
            return np.zeros((B,) + tuple(shape), dtype=dtype)
        return hist[key][k]

    compiled = {lay.name: _CompiledNeuron(lay.neuron, dtype, params[lay.name])
                for lay in net.layers if lay.kind == "neuron"}
    with np.errstate(all="ignore"):
        _loop(net, T, S, enc, states, refr, params, hist, compiled, source_value, dtype)

    result: dict[str, np.ndarray] = {}

    def stacked(key: str) -> np.ndarray:
        if key not in hist:
            raise KeyError(f"network '{net.name}' has no trace '{key}'")
        if not hist[key]:
            return np.zeros((0, B), dtype=dtype)
        return np.stack(hist[key])

    for o in net.outputs:
        key = o.layer if o.state is None else f"{o.layer}.{o.state}{'_pre' if o.pre_reset else ''}"
        tr = stacked(key)
        if o.reduce == "sum":
            tr = tr.sum(axis=0)
        elif o.reduce == "mean":
            tr = tr.mean(axis=0)
        elif o.reduce == "last":
            tr = tr[-1]
        result[o.name] = tr
    for key in record or ():
        result[key] = stacked(key)
    return result


class _CompiledNeuron:
    """The lowered step of one neuron as closures (compiled once per run)."""

    def __init__(self, nrn: ir.LNeuron, dtype, const: Mapping[str, object]):
        def comp(e):
            return compile_expr(e, dtype, const)

        self.temps = [(t.target, comp(t.value)) for t in nrn.temps]
        self.updates = [(u.target, comp(u.value)) for u in nrn.updates]
        self.spike = comp(nrn.spike_x) if nrn.spiking and nrn.spike_x else None
        self.reset = [(a.target, a.op, comp(a.value)) for a in nrn.reset]
        self.held = {a.target for a in nrn.reset}


def _neuron_step(net, lay, S: _Net, st, r, env_p, hist, n, source_value, dtype,
                 c: _CompiledNeuron):
    nrn: ir.LNeuron = lay.neuron
    full = (S.B,) + tuple(lay.shape)
    # plasticity 1: the rules' own dynamics, before transmission
    rules = [S.rules[p.param_name] for p in lay.projections if p.param_name in S.rules]
    for rule in rules:
        rule.advance()
    # a. inputs: sum of the projections into each neuron input (plasticity 2: on_pre)
    I = {k: np.zeros(full, dtype=dtype) for k in nrn.inputs}
    for p in lay.projections:
        x = source_value(p.source, p.source_state, n, p.delay, p.in_shape)
        I[p.target_input] = I[p.target_input] + S.apply(p, x).reshape(full)
    # b. refractory: inputs are 0 and the states assigned in `reset` are held
    refractory = r > 0
    any_refr = bool(refractory.any())
    if any_refr:
        for k, v in I.items():
            I[k] = np.where(refractory, 0.0, v).astype(dtype)
    # c. temporaries in order, then every update on the old states, committed at once
    env = dict(env_p)
    env.update(st)
    env.update(I)
    for name, f in c.temps:
        env[name] = f(env)
    new = {name: f(env) for name, f in c.updates}
    for s, v in new.items():
        v = np.broadcast_to(np.asarray(v, dtype=dtype), full)
        if any_refr and s in c.held:
            v = np.where(refractory, st[s], v)
        st[s] = np.array(v, dtype=dtype)
    # d. spike on the new states: z = H(x), 0 while refractory
    env.update(st)
    if c.spike is not None:
        x = np.broadcast_to(c.spike(env), full)
        z = (x >= 0) if nrn.spike_op == ">=" else (x > 0)
        z = np.logical_and(z, ~refractory).astype(dtype)
    else:
        z = np.zeros(full, dtype=dtype)
    # e. pre-reset record, then the reset statements in order where z = 1
    for s in nrn.state_names:
        hist[f"{lay.name}.{s}_pre"].append(st[s].copy())
    if c.reset and z.any():
        for target, op, f in c.reset:
            env.update(st)
            e = np.broadcast_to(f(env), full)
            s = st[target]
            if op == "=":
                st[target] = (s - z * (s - e)).astype(dtype)
            elif op == "+=":
                st[target] = (s + z * e).astype(dtype)
            else:
                st[target] = (s - z * e).astype(dtype)
    for s in nrn.state_names:
        hist[f"{lay.name}.{s}"].append(st[s].copy())
    # f. refractory counter: R where z = 1, else max(r - 1, 0)
    R = refractory_steps(net, nrn)
    r[...] = np.where(z > 0, R, np.maximum(r - 1, 0))
    # plasticity 4: on_post where the neuron spiked; record the weights
    for p in lay.projections:
        if p.param_name in S.rules:
            S.rules[p.param_name].on_post(z)
            hist[f"{p.param_name}.weight"].append(S.rules[p.param_name].w.copy())
    return z


def _loop(net, T, S, enc, states, refr, params, hist, compiled, source_value, dtype):
    for n in range(T):
        for lay in net.layers:
            if lay.kind == "input":
                out = enc[lay.name][n]
            elif lay.kind == "neuron":
                out = _neuron_step(net, lay, S, states[lay.name], refr[lay.name],
                                   params[lay.name], hist, n, source_value, dtype,
                                   compiled[lay.name])
            elif lay.kind == "projection":
                p = lay.projections[0]
                x = source_value(p.source, p.source_state, n, p.delay, p.in_shape)
                out = S.apply(p, x)
                if lay.func:
                    out = FUNCTIONS[lay.func].np(out)
            elif lay.kind == "stage":
                x = source_value(lay.source, lay.source_state, n, 0, None)
                out = _stage(lay, x, S)
            else:  # cell
                x = source_value(lay.source, lay.source_state, n, 0, None)
                out = _cell(lay, x, S, states[lay.name], hist)
            hist[lay.name].append(np.asarray(out, dtype=dtype))



_sig = FUNCTIONS["sigmoid"].np


def _cell(lay: ir.LLayer, x: np.ndarray, S: _Net, st, hist) -> np.ndarray:
    """snnTorch's ``SLSTM`` (an ``nn.LSTMCell``: gates i, f, g, o) and
    ``SConv2dLSTM`` (one conv over [x, mem], padding kernel // 2: gates i, f,
    o, g): ``syn = σ(f)·syn + σ(i)·tanh(g)``, ``mem = σ(o)·tanh(syn)``,
    spike ``mem > threshold``, no reset (snnTorch's default)."""
    B = x.shape[0]
    syn, mem = st["syn"], st["mem"]
    name = lay.name
    if lay.op == "slstm":
        g = (x.reshape(B, -1) @ S.w[f"{name}.weight_ih"].T + S.w[f"{name}.bias_ih"]
             + mem @ S.w[f"{name}.weight_hh"].T + S.w[f"{name}.bias_hh"])
        i, f, gg, o = np.split(g, 4, axis=1)
    else:
        cin, k = int(lay.args["in_channels"]), int(lay.args["kernel"])
        w, b = S.w[f"{name}.weight"], S.w[f"{name}.bias"]
        pad = (k // 2, k // 2)
        g = conv2d(x, w[:, :cin], b, (1, 1), pad) + conv2d(mem, w[:, cin:], None, (1, 1), pad)
        i, f, o, gg = np.split(g, 4, axis=1)
    syn = _sig(f) * syn + _sig(i) * np.tanh(gg)
    mem = _sig(o) * np.tanh(syn)
    st["syn"], st["mem"] = syn, mem
    for s, v in (("syn", syn), ("mem", mem)):
        hist[f"{name}.{s}"].append(v)
        hist[f"{name}.{s}_pre"].append(v)
    return (mem > float(lay.args.get("threshold", 1.0))).astype(S.dtype)


def _stage(lay: ir.LLayer, x: np.ndarray, S: _Net) -> np.ndarray:
    op = lay.op
    B = x.shape[0]
    if op == "flatten":
        return x.reshape(B, -1)
    if op in ("avgpool2d", "sumpool2d", "maxpool2d"):
        k, s = lay.args["kernel"], lay.args["stride"]
        return pool2d(x, k, s, op[:3])
    if op == "dropout":
        return x
    if op == "batchnorm":
        g = S.w[f"{lay.name}.weight"]
        b = S.w[f"{lay.name}.bias"]
        m = S.w[f"{lay.name}.running_mean"]
        v = S.w[f"{lay.name}.running_var"]
        eps = float(lay.args.get("eps", 1e-5))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + eps) * g.reshape(shape)
                + b.reshape(shape))
    raise unsupported("reference", f"stage '{op}'", "unknown stage")
