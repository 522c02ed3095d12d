"""The reference interpreter of the step semantics (docs/semantics.md), on
numpy or on torch tensors.

Slow, plain and meant to be obviously correct: one Python loop over time,
one layer after another in ``net.layers`` order, every formula written the
way the contract states it.  It is the oracle of ``spikedsl test``,
``spikedsl verify``, the NIR round trips and the plasticity tests.  The step
loop (:mod:`spikedsl.runtime.interpreter`) is written once against a small
array interface (:mod:`spikedsl.runtime.arrays`): numpy by default, or torch
on any device (float64 by default); both give the same numbers.

    from spikedsl.runtime import reference
    out = reference.run(net, {"x": x})            # x: [T, B, ...] (encoded) or [B, ...]
    out = reference.run(net, x, weights=w, record=["h", "h.v", "h.v_pre"])
    out = reference.run(net, x, xp=torch, device="cuda")

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
:func:`init_weights` (seeded, deterministic; the initialisation of every
target, spikedsl.lowering.weights).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

import numpy as np

from spikedsl import ir
from spikedsl.ir.arrays import ArrayCompiler
from spikedsl.lowering import weights as _weights
from spikedsl.lowering.weights import to_numpy
from spikedsl.runtime import arrays

__all__ = [
    "encode",
    "evaluate",
    "init_weights",
    "neuron_dt",
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
    of ``const`` (parameters, ``dt``) are evaluated once, here.  ``xp``: the
    array module (numpy by default, torch, or a backend of
    :mod:`spikedsl.runtime.arrays`; ``dtype`` applies when it is a module).
    With numpy, call the result inside ``np.errstate(all="ignore")`` (x/0
    gives inf/nan, as torch)."""
    A = arrays.backend(xp, dtype)
    if A.name == "torch":
        return ArrayCompiler(A.dtype, const, A.torch, A.device).compile(e)
    return ArrayCompiler(A.dtype, const).compile(e)


def evaluate(e: ir.Expr, env: Mapping[str, object], dtype=np.float64, xp=None):
    """Evaluate an IR expression elementwise with numpy or torch (arrays broadcast)."""
    A = arrays.backend(xp, dtype)
    with A.errstate():
        return compile_expr(e, xp=A)(env)


# ------------------------------------------------------------------ time helpers
def neuron_dt(net: ir.LNetwork, neuron: ir.LNeuron) -> float:
    """The value of the free symbol ``dt`` inside ``neuron`` (resolved by lowering)."""
    if neuron.dt is None:
        raise ValueError(f"neuron '{neuron.name}' is not placed in a network "
                         "(spikedsl.lowering.neuron.place)")
    return float(neuron.dt)


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
    return _weights.sparse_mask(proj)


def weight_shapes(net: ir.LNetwork) -> dict[str, tuple[int, ...]]:
    """Every trainable / loadable array of the network and its shape."""
    return _weights.weight_shapes(net)


def init_weights(net: ir.LNetwork, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded initial values for every name of :func:`weight_shapes`: the
    initialisation every target uses (:func:`spikedsl.lowering.weights.init_weights`)."""
    return _weights.init_weights(net, seed)


def load_weights(path: str) -> dict[str, np.ndarray]:
    """A weights file: ``.npz`` or a torch checkpoint."""
    return _weights.read_weights_file(path)


# ------------------------------------------------------------------ the run
def input_dict(net: ir.LNetwork, inputs) -> dict[str, object]:
    """``{input name: array}`` from a dict, or one array for a network with a
    single input."""
    ins = net.inputs
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if len(ins) != 1:
        raise ValueError(f"network '{net.name}' has {len(ins)} inputs "
                         f"({', '.join(i.name for i in ins)}); pass a dict")
    return {ins[0].name: inputs}


def run(net: ir.LNetwork, inputs=None, *, weights=None, dtype=None,
        record: list[str] | None = None, seed: int = 0, batch: int | None = None,
        xp=None, device=None) -> dict[str, np.ndarray]:
    """Run ``net`` for ``T`` steps and return outputs and recorded traces
    (numpy arrays).

    ``inputs``: a dict ``{input name: array}`` or one array for a network with
    a single input (numpy arrays or tensors).  ``[T, B, ...]`` arrays are
    already encoded (T steps); ``[B, ...]`` arrays are encoded with the
    layer's encoder for ``net.steps`` steps.  ``weights``: ``{name: array}``
    or the path of a weights file (missing names are initialised by
    :func:`init_weights` with ``seed``; ``net.weights`` is loaded first when
    set).  ``xp``: the array module, numpy (default) or torch; ``dtype``
    (float64 by default) and ``device`` (torch: ``"cpu"``, ``"cuda"``, ...)
    as :func:`spikedsl.runtime.arrays.backend`.
    """
    from spikedsl.runtime.interpreter import simulate

    A = arrays.backend(xp, dtype, device)
    data = input_dict(net, inputs if inputs is not None else {})
    enc: dict[str, np.ndarray] = {}
    T = None
    for lay in net.inputs:
        if lay.name not in data:
            raise ValueError(f"missing input '{lay.name}' of network '{net.name}'")
        x = to_numpy(data[lay.name]).astype(A.np_dtype, copy=False)
        nd = len(lay.shape)
        if x.ndim == nd + 1:
            x = encode(lay, x, net.steps, dtype=A.np_dtype)
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
    if isinstance(weights, str | os.PathLike):
        weights = load_weights(weights)
    if weights:
        w.update({k: to_numpy(v) for k, v in weights.items()})
    return simulate(net, A, {k: A.asarray(v) for k, v in enc.items()}, w, T, B, record)
