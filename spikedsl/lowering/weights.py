"""Helpers shared by the NIR exporter/importer and the Norse target: weights
files, per-neuron parameter arrays, numpy evaluation of lowered expressions."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from spikedsl import ir
from spikedsl.errors import SpecError, diag

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


def neuron_dt(net: ir.LNetwork, n: ir.LNeuron) -> float:
    """The value of the symbol ``dt`` inside neuron ``n`` (docs/semantics.md)."""
    return net.dt if n.uses_units else 1.0


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
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


_NP = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh,
    "sigmoid": _sig, "relu": lambda x: np.maximum(x, 0.0), "sin": np.sin, "cos": np.cos,
    "min": np.minimum, "max": np.maximum, "clip": lambda x, a, b: np.minimum(np.maximum(x, a), b),
    "where": lambda c, a, b: np.where(np.asarray(c) != 0, a, b),
}


def np_eval(e: ir.Expr, env: dict[str, Any]):
    if isinstance(e, ir.Num):
        return np.float64(e.value)
    if isinstance(e, ir.Name):
        return env[e.id]
    if isinstance(e, ir.Neg):
        return -np_eval(e.operand, env)
    if isinstance(e, ir.BinOp):
        a, b = np_eval(e.left, env), np_eval(e.right, env)
        with np.errstate(all="ignore"):
            return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
                    "**": np.power}[e.op](a, b)
    if isinstance(e, ir.Compare):
        a, b = np_eval(e.left, env), np_eval(e.right, env)
        return {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less,
                "==": np.equal, "!=": np.not_equal}[e.op](a, b).astype(np.float64)
    if isinstance(e, ir.BoolOp):
        a, b = np.asarray(np_eval(e.left, env)) != 0, np.asarray(np_eval(e.right, env)) != 0
        return ((a & b) if e.op == "and" else (a | b)).astype(np.float64)
    if isinstance(e, ir.Not):
        return (np.asarray(np_eval(e.operand, env)) == 0).astype(np.float64)
    if isinstance(e, ir.Call) and e.func in _NP:
        with np.errstate(all="ignore"):
            return _NP[e.func](*[np_eval(a, env) for a in e.args])
    raise ValueError(f"cannot evaluate {type(e).__name__}")


def init_weights(net: ir.LNetwork, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """Initial weights when none are given: the torch target's initialisation if
    it is available, else PyTorch's default (uniform +-1/sqrt(fan_in)) drawn with
    numpy.  Returns (weights, how)."""
    try:
        import torch

        from spikedsl.targets import torch as torch_target

        torch.manual_seed(seed)
        mod = torch_target.build(net, dtype=torch.float64, weights={})
        exp = getattr(mod, "export_weights", None)
        sd = exp() if callable(exp) else mod.state_dict()
        return {k: to_numpy(v) for k, v in sd.items()}, "the torch target's initialisation"
    except (ImportError, SpecError):  # no torch, or the torch target refuses the network
        pass
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for lay in net.layers:
        for p in lay.projections:
            if p.kind == "dense":
                fan_in = math.prod(p.in_shape)
                shape = (math.prod(p.out_shape), fan_in)
                nb = shape[0]
            elif p.kind == "conv2d":
                fan_in = p.in_shape[0] * p.kernel[0] * p.kernel[1]
                shape = (p.channels, p.in_shape[0], *p.kernel)
                nb = p.channels
            else:
                continue
            k = 1.0 / math.sqrt(fan_in)
            out[f"{p.param_name}.weight"] = rng.uniform(-k, k, shape)
            if p.bias:
                out[f"{p.param_name}.bias"] = rng.uniform(-k, k, (nb,))
    return out, "a default uniform(+-1/sqrt(fan_in)) initialisation"


def projection_weights(p: ir.LProjection, W: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Effective (weight, bias) of a dense/conv2d projection, sign applied."""
    import math as _m

    key = f"{p.param_name}.weight"
    if key not in W:
        raise fail("weights-missing-key", name=key)
    w = np.asarray(W[key], dtype=np.float64)
    if p.kind == "dense":
        exp_shape = (_m.prod(p.out_shape), _m.prod(p.in_shape))
    else:
        exp_shape = (p.channels, p.in_shape[0], *p.kernel)
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


def sparse_matrix(p: ir.LProjection) -> np.ndarray:
    """The fixed weights of a ``sparse`` projection (docs/semantics.md): mask
    ``numpy.random.default_rng(seed).random((out, in)) < p`` times ``weight``."""
    n_out, n_in = math.prod(p.out_shape), math.prod(p.in_shape)
    mask = np.random.default_rng(int(p.seed)).random((n_out, n_in)) < p.p
    return mask.astype(np.float64) * (1.0 if p.weight is None else float(p.weight))
