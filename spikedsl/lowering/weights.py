"""The weights of a lowered network, in one place (docs/semantics.md,
"Initialisation"): resolution of each projection's initialisation (used by
lowering), the table of every array a network owns (names, shapes,
initialisations), the seeded initial values, the fixed masks of ``sparse``
projections, weights files, and numpy evaluation of lowered expressions.

Every target reads this module.  The code it generates (the torch and Norse
modules, the Brian2 script) embeds the block between the ``begin init`` /
``end init`` markers below, so a standalone module draws exactly the numbers
:func:`init_weights` gives, without spikedsl.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from spikedsl import ir
from spikedsl.errors import SpecError, diag
from spikedsl.ir import arrays as ir_arrays

DEFAULT_DT = 1e-4  # seconds per step for unitless networks (snnTorch's NIR convention)


def fail(code: str, **fields) -> SpecError:
    return SpecError([diag(code, None, **fields)])


def to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        if hasattr(v, "double") and v.is_floating_point():
            v = v.double()
        v = v.numpy()
    return np.asarray(v)


def read_weights_file(path: str) -> dict[str, np.ndarray]:
    """``.npz`` or a torch checkpoint (a state_dict, or a dict with key "model")."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise fail("weights-file", path=path, reason="no such file")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in data.files}
        except Exception as e:
            raise fail("weights-file", path=path, reason=str(e) or type(e).__name__) from None
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise fail("weights-file", path=path,
                   reason=f"not an .npz file or a torch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise fail("weights-file", path=path, reason="the checkpoint holds no state_dict")
    out = {}
    for k, v in obj.items():
        if hasattr(v, "shape"):
            out[str(k)] = to_numpy(v)
    return out


def load_weights(net: ir.LNetwork, weights=None) -> dict[str, np.ndarray]:
    """``weights``: dict, path (.npz / checkpoint) or None (the network's own
    ``weights = "..."`` file, else empty)."""
    if weights is None:
        weights = net.weights
    if weights is None:
        return {}
    if isinstance(weights, dict):
        return {str(k): to_numpy(v) for k, v in weights.items()}
    return read_weights_file(weights)


def seconds_per_step(net: ir.LNetwork, dt: float | None = None) -> float:
    if dt is not None:
        return float(dt)
    return net.dt if net.dt_unit is not None else DEFAULT_DT


def layer_params(lay: ir.LLayer, W: dict[str, Any]) -> dict[str, np.ndarray]:
    """Parameter values of a neuron layer: the weights entry ``layer.param`` when
    present (shape ``[]`` or the layer shape), else the lowered value."""
    out = {}
    for p in lay.neuron.params:
        key = f"{lay.name}.{p.name}"
        if key in W:
            v = to_numpy(W[key]).astype(np.float64)
            if v.shape not in ((), tuple(lay.shape)) and v.size != 1:
                raise fail("weights-shape", name=key, got=list(v.shape),
                           expected=f"[] or {list(lay.shape)}")
            if v.size == 1:
                v = v.reshape(())
            out[p.name] = v
        else:
            out[p.name] = np.asarray(p.value, dtype=np.float64)
    return out


# ------------------------------------------------------------------ numpy evaluation
def np_eval(e: ir.Expr, env: dict[str, Any]):
    """Evaluate ``e`` elementwise with numpy (float64)."""
    return ir_arrays.evaluate(e, env, np.float64)


def projection_weights(p: ir.LProjection, W: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Effective (weight, bias) of a dense/conv2d projection, sign applied."""
    key = f"{p.param_name}.weight"
    if key not in W:
        raise fail("weights-missing-key", name=key)
    w = np.asarray(W[key], dtype=np.float64)
    exp_shape = weight_shape(p)
    if tuple(w.shape) != exp_shape:
        raise fail("weights-shape", name=key, got=list(w.shape), expected=list(exp_shape))
    if p.sign == "excitatory":
        w = np.abs(w)
    elif p.sign == "inhibitory":
        w = -np.abs(w)
    b = None
    if p.bias:
        bkey = f"{p.param_name}.bias"
        if bkey not in W:
            raise fail("weights-missing-key", name=bkey)
        b = np.asarray(W[bkey], dtype=np.float64).reshape(-1)
        if b.shape[0] != exp_shape[0]:
            raise fail("weights-shape", name=bkey, got=list(b.shape), expected=[exp_shape[0]])
    return w, b


# ------------------------------------------------------------------ code generated from here
# --- begin init (copied into generated code) ---
def pcg64_random(entropy, n):
    """``numpy.random.default_rng(entropy).random(n)`` in pure Python (numpy's
    SeedSequence of an int or a list of ints, then PCG64), as a list."""
    m32 = 0xFFFFFFFF
    words = []
    for e in entropy if isinstance(entropy, list | tuple) else [entropy]:
        e = int(e)
        if e < 0:
            raise ValueError("seeds are non-negative integers")
        while True:
            words.append(e & m32)
            e >>= 32
            if not e:
                break
    hc = [0x43B0D7E5]

    def hashmix(v):
        v = (v ^ hc[0]) & m32
        hc[0] = (hc[0] * 0x931E8875) & m32
        v = (v * hc[0]) & m32
        return v ^ (v >> 16)

    def mix(x, y):
        r = (0xCA01F9DD * x - 0x4973F715 * y) & m32
        return r ^ (r >> 16)

    pool = [hashmix(words[i] if i < len(words) else 0) for i in range(4)]
    for i in range(4):
        for j in range(4):
            if i != j:
                pool[j] = mix(pool[j], hashmix(pool[i]))
    for i in range(4, len(words)):
        for j in range(4):
            pool[j] = mix(pool[j], hashmix(words[i]))
    hb = 0x8B51F9DD
    st = []
    for i in range(8):
        v = (pool[i % 4] ^ hb) & m32
        hb = (hb * 0x58F38DED) & m32
        v = (v * hb) & m32
        st.append(v ^ (v >> 16))
    v64 = [st[2 * i] | (st[2 * i + 1] << 32) for i in range(4)]
    m128 = (1 << 128) - 1
    mult = 0x2360ED051FC65DA44385DF649FCCF645
    inc = ((((v64[2] << 64) | v64[3]) << 1) | 1) & m128
    state = (inc + ((v64[0] << 64) | v64[1])) & m128
    state = (state * mult + inc) & m128
    m64 = (1 << 64) - 1
    out = []
    for _ in range(n):
        state = (state * mult + inc) & m128
        x = ((state >> 64) ^ state) & m64
        rot = state >> 122
        x = ((x >> rot) | (x << ((64 - rot) & 63))) & m64
        out.append((x >> 11) * (1.0 / 9007199254740992.0))
    return out


def random_floats(entropy, n):
    """``numpy.random.default_rng(entropy).random(n)``: numpy's generator when
    numpy is installed, else the same numbers from ``pcg64_random`` (a list)."""
    try:
        import numpy
    except ImportError:
        return pcg64_random(entropy, n)
    return numpy.random.default_rng(entropy).random(n)


def init_stream(seed, name):
    """The entropy of the random stream of the array ``name``: the seed, then the
    UTF-8 bytes of the name (every array draws from a stream of its own)."""
    if int(seed) < 0:
        raise ValueError("seeds are non-negative integers")
    return [int(seed)] + list(name.encode("utf-8"))


def init_values(name, size, dist, args, magnitude, seed):
    """The ``size`` initial values (flat, C order) of the array ``name`` for
    ``seed``, u drawn by ``random_floats(init_stream(seed, name), ...)``:
    ``uniform`` (a, b): a + (b - a) * u; ``normal`` (mean, std): mean + std *
    sqrt(-2 ln(1 - u1)) * cos(2 pi u2) on consecutive pairs (u1, u2);
    ``constant`` (c): c.  ``magnitude``: the absolute values.  A numpy array or
    a list (without numpy), holding the same numbers."""
    if dist == "constant":
        vals = [float(args[0])] * size
    elif dist == "uniform":
        lo, hi = float(args[0]), float(args[1])
        u = random_floats(init_stream(seed, name), size)
        vals = [lo + (hi - lo) * x for x in u] if isinstance(u, list) else lo + (hi - lo) * u
    elif dist == "normal":
        mean, std = float(args[0]), float(args[1])
        u = random_floats(init_stream(seed, name), 2 * size)
        u = u if isinstance(u, list) else u.tolist()
        vals = [mean + std * (math.sqrt(-2.0 * math.log(1.0 - u[2 * i]))
                              * math.cos(2.0 * math.pi * u[2 * i + 1])) for i in range(size)]
    else:
        raise ValueError(f"unknown initialisation '{dist}'")
    if magnitude:
        vals = [abs(v) for v in vals] if isinstance(vals, list) else abs(vals)
    return vals


def mask_values(seed, p, size):
    """The fixed connectivity of a ``sparse`` projection, (out, in) flat in C
    order: 1.0 where ``numpy.random.default_rng(seed).random(size) < p``, else 0.0."""
    u = random_floats(int(seed), size)
    return [1.0 if x < p else 0.0 for x in u] if isinstance(u, list) else (u < p) * 1.0
# --- end init ---


@lru_cache(maxsize=1)
def generated_source() -> str:
    """The block above, as generated code embeds it (needs ``math``)."""
    with open(__file__, encoding="utf-8") as fh:
        text = fh.read()
    text = text.split("# --- begin init (copied into generated code) ---\n", 1)[1]
    return text.split("# --- end init ---", 1)[0].strip("\n")


# ------------------------------------------------------------------ resolution (lowering)
def weight_shape(p: ir.LProjection) -> tuple[int, ...]:
    """``(out, in)`` of dense / sparse / one_to_one, ``(C_out, C_in, kh, kw)`` of conv2d."""
    if p.kind == "conv2d":
        return (p.channels, p.in_shape[0], *p.kernel)
    return (math.prod(p.out_shape), math.prod(p.in_shape))


def resolve_projection(p: ir.LProjection) -> ir.LProjection:
    """Fan-in / fan-out and the initialisation of a dense / conv2d projection:
    ``default`` U(+-1/sqrt(fan_in)) for the weight and the bias (torch's
    ``nn.Linear`` / ``nn.Conv2d``); ``kaiming`` U(+-sqrt(6/fan_in)); ``xavier``
    U(+-sqrt(6/(fan_in + fan_out))); ``normal(std)``; ``uniform(a, b)``;
    ``zeros``; biases of every scheme but ``default`` start at 0.  A ``sign``
    draws the magnitude.  Sparse and one_to_one weights are fixed (``weight``)."""
    if p.kind not in ("dense", "conv2d"):
        return p
    shape = weight_shape(p)
    fan_in = math.prod(shape[1:])
    fan_out = shape[0] * math.prod(shape[2:])
    args = tuple(float(a) for a in p.init_args)
    default = ir.LInit(dist="uniform", args=(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in)))
    if p.init == "default":
        w = default
    elif p.init == "kaiming":
        b = math.sqrt(6.0 / fan_in)
        w = ir.LInit(dist="uniform", args=(-b, b))
    elif p.init == "xavier":
        b = math.sqrt(6.0 / (fan_in + fan_out))
        w = ir.LInit(dist="uniform", args=(-b, b))
    elif p.init == "normal":
        w = ir.LInit(dist="normal", args=(0.0, args[0] if args else 1.0))
    elif p.init == "uniform":
        w = ir.LInit(dist="uniform", args=args[:2])
    elif p.init == "zeros":
        w = ir.LInit(dist="constant", args=(0.0,))
    else:
        raise ValueError(f"unknown initialiser '{p.init}'")
    w = w.model_copy(update={"magnitude": p.sign != "none"})
    bias = None
    if p.bias:
        bias = default if p.init == "default" else ir.LInit(dist="constant", args=(0.0,))
    return p.model_copy(update={"fan_in": fan_in, "fan_out": fan_out, "weight_init": w,
                                "bias_init": bias})


# ------------------------------------------------------------------ the arrays of a network
@dataclass(frozen=True)
class Array:
    """One array a network owns (weights files, state_dict)."""

    name: str
    shape: tuple[int, ...]
    init: ir.LInit
    trainable: bool  # a parameter; else a buffer (fixed values, running statistics)
    layer: str
    projection: str | None = None  # param_name of its projection


def _uniform(b: float) -> ir.LInit:
    return ir.LInit(dist="uniform", args=(-b, b))


def _const(c: float) -> ir.LInit:
    return ir.LInit(dist="constant", args=(float(c),))


def arrays(net: ir.LNetwork) -> list[Array]:
    """Every trainable / loadable array of ``net`` in layer order, with its
    initialisation: projections (dense / conv2d weight and bias), neuron
    parameters that are trainable or per neuron (their value, or
    ``per_neuron(uniform(a, b))`` draws), batchnorm (weight 1, bias 0, mean 0,
    var 1; ``[steps, C]`` with ``per_step``), cells (as ``torch.nn.LSTMCell`` / snnTorch's ``SConv2dLSTM``)."""
    out: list[Array] = []
    for lay in net.layers:
        for p in lay.projections:
            if p.kind not in ("dense", "conv2d"):
                continue
            if p.weight_init is None:
                raise ValueError(f"projection '{p.param_name}' was not resolved by lowering")
            shape = weight_shape(p)
            pn = p.param_name
            out.append(Array(f"{pn}.weight", shape, p.weight_init, True, lay.name, pn))
            if p.bias_init is not None:
                out.append(Array(f"{pn}.bias", (shape[0],), p.bias_init, True, lay.name, pn))
        if lay.kind == "neuron" and lay.neuron is not None:
            for prm in lay.neuron.params:
                if not (prm.trainable or prm.per_neuron):
                    continue
                shape = tuple(lay.shape) if prm.per_neuron else ()
                init = ir.LInit(dist="uniform", args=tuple(prm.init_uniform)) if (
                    prm.per_neuron and prm.init_uniform is not None) else _const(prm.value)
                out.append(Array(f"{lay.name}.{prm.name}", shape, init, prm.trainable, lay.name))
        elif lay.kind == "stage" and lay.op == "batchnorm":
            # per_step: one row per time step (BatchNorm-through-time)
            c = (net.steps, lay.shape[0]) if lay.args.get("per_step") else (lay.shape[0],)
            for k, v, train in (("weight", 1.0, True), ("bias", 0.0, True),
                                ("running_mean", 0.0, False), ("running_var", 1.0, False)):
                out.append(Array(f"{lay.name}.{k}", c, _const(v), train, lay.name))
        elif lay.kind == "cell" and lay.op == "slstm":
            H, nin = int(lay.args["hidden"]), int(lay.args["in_features"])
            init = _uniform(1.0 / math.sqrt(H))
            for k, shape in (("weight_ih", (4 * H, nin)), ("weight_hh", (4 * H, H)),
                             ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,))):
                out.append(Array(f"{lay.name}.{k}", shape, init, True, lay.name))
        elif lay.kind == "cell":
            C, cin, k = (int(lay.args["channels"]), int(lay.args["in_channels"]),
                         int(lay.args["kernel"]))
            init = _uniform(1.0 / math.sqrt((cin + C) * k * k))
            out.append(Array(f"{lay.name}.weight", (4 * C, cin + C, k, k), init, True, lay.name))
            out.append(Array(f"{lay.name}.bias", (4 * C,), init, True, lay.name))
    return out


def init_call(a: Array, seed: str = "seed") -> str:
    """Python source of the flat initial values of ``a`` for the generated code's
    ``seed`` (a call of ``init_values``, embedded from :func:`generated_source`)."""
    args = tuple(float(x) for x in a.init.args)
    return (f"init_values({a.name!r}, {math.prod(a.shape)}, {a.init.dist!r}, {args!r}, "
            f"{a.init.magnitude}, {seed})")


def weight_shapes(net: ir.LNetwork) -> dict[str, tuple[int, ...]]:
    """Every trainable / loadable array of the network and its shape."""
    return {a.name: a.shape for a in arrays(net)}


def initial_value(a: Array, seed: int = 0) -> np.ndarray:
    vals = init_values(a.name, math.prod(a.shape), a.init.dist, a.init.args,
                       a.init.magnitude, seed)
    return np.asarray(vals, dtype=np.float64).reshape(a.shape)


def init_weights(net: ir.LNetwork, seed: int = 0) -> dict[str, np.ndarray]:
    """The initial value of every array of :func:`arrays` for ``seed`` (every
    target starts from these numbers)."""
    return {a.name: initial_value(a, seed) for a in arrays(net)}


def sparse_mask(p: ir.LProjection) -> np.ndarray:
    """Fixed connectivity of ``sparse``: ``default_rng(seed).random((out, in)) < p``
    as 0.0 / 1.0 of shape (out, in)."""
    n_out, n_in = weight_shape(p)
    return np.asarray(mask_values(p.seed, p.p, n_out * n_in), dtype=np.float64).reshape(
        n_out, n_in)


def sparse_matrix(p: ir.LProjection) -> np.ndarray:
    """The fixed weights of a ``sparse`` projection: the mask times ``weight``."""
    return sparse_mask(p) * (1.0 if p.weight is None else float(p.weight))
