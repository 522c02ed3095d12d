"""Helpers of the Brian2 target's tests and benchmark: seeded weights and
inputs, runs of one network on several implementations, comparisons."""

from __future__ import annotations

import math

import numpy as np

from spikedsl import ir


def random_weights(net: ir.LNetwork, lo: float = -0.5, hi: float = 1.0, seed: int = 0,
                   scale: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Uniform(lo, hi) / sqrt(fan_in) weights and biases for every dense / conv2d
    projection (``scale`` multiplies chosen projections), plus batchnorm
    statistics: the same arrays are given to every target."""
    rng = np.random.default_rng(seed)
    W: dict[str, np.ndarray] = {}
    for lay in net.layers:
        for p in lay.projections:
            if p.kind == "dense":
                shape = (math.prod(p.out_shape), math.prod(p.in_shape))
                fan_in = shape[1]
            elif p.kind == "conv2d":
                shape = (p.channels, p.in_shape[0], *p.kernel)
                fan_in = p.in_shape[0] * p.kernel[0] * p.kernel[1]
            else:
                continue
            k = (scale or {}).get(p.param_name, 1.0) / math.sqrt(fan_in)
            W[f"{p.param_name}.weight"] = rng.uniform(lo, hi, shape) * k
            if p.bias:
                W[f"{p.param_name}.bias"] = rng.uniform(lo, hi, (shape[0],)) * k * 0.2
        if lay.kind == "stage" and lay.op == "batchnorm":
            c = lay.shape[0]
            W[f"{lay.name}.running_mean"] = rng.uniform(-0.2, 0.5, c)
            W[f"{lay.name}.running_var"] = rng.uniform(0.5, 2.0, c)
            W[f"{lay.name}.weight"] = rng.uniform(0.5, 1.5, c)
            W[f"{lay.name}.bias"] = rng.uniform(-0.2, 0.2, c)
    return W


def random_inputs(net: ir.LNetwork, batch: int = 2, p: float = 0.3, seed: int = 1,
                  value: float = 1.0) -> dict[str, np.ndarray]:
    """Encoded inputs ``[T, B, ...]``: Bernoulli(p) spikes, or uniform [0, value)
    for ``direct`` inputs."""
    rng = np.random.default_rng(seed)
    out = {}
    for lay in net.inputs:
        shape = (net.steps, batch) + tuple(lay.shape)
        if lay.encoder == "direct":
            out[lay.name] = rng.random(shape) * value
        else:
            out[lay.name] = (rng.random(shape) < p).astype(np.float64)
    return out


def recordable(net: ir.LNetwork, plastic: bool = True) -> list[str]:
    """Every trace of a network: layers, states before and after reset, plastic
    weights."""
    keys = []
    for lay in net.layers:
        keys.append(lay.name)
        for s in lay.states:
            keys += [f"{lay.name}.{s}", f"{lay.name}.{s}_pre"]
    if plastic:
        keys += [f"{p.projection}.weight" for p in net.plasticity]
    return keys


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
             keys=None) -> tuple[float, str]:
    """Largest absolute difference over common keys, and where it is."""
    worst, where = 0.0, ""
    for k in keys or sorted(set(a) & set(b)):
        x, y = np.asarray(a[k], dtype=np.float64), np.asarray(b[k], dtype=np.float64)
        if x.shape != y.shape:
            return math.inf, f"{k}: shapes {x.shape} vs {y.shape}"
        if x.size == 0:
            continue
        d = float(np.max(np.abs(x - y)))
        if not d <= worst:
            worst, where = d, k
    return worst, where


def run_torch_target(net, inputs, weights, record):
    """The torch target's ``run`` (ImportError when it does not exist)."""
    import torch

    from spikedsl.targets import torch as torch_target

    out = torch_target.run(net, inputs, weights=weights, dtype=torch.float64,
                           record=list(record))
    return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
            for k, v in out.items()}
