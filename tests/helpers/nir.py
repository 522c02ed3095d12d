"""Helpers for the NIR / Norse tests (not used at run time): simulate a lowered
network with the torch target when it is available (else the reference
interpreter), random inputs and weights that make neurons fire."""

from __future__ import annotations

import numpy as np

from spikedsl import ir
from spikedsl.lowering.weights import init_weights


def torch_target():
    """The torch target module, or None while it does not exist."""
    try:
        from spikedsl.targets import torch as t

        if hasattr(t, "run") and hasattr(t, "build"):
            return t
    except ImportError:
        pass
    return None


def simulate(net: ir.LNetwork, inputs, weights, record=None) -> dict[str, np.ndarray]:
    """Outputs of ``net`` (float64): torch target if present, else the reference."""
    t = torch_target()
    if t is not None:
        import torch

        try:
            out = t.run(net, inputs, weights=weights, dtype=torch.float64, record=record or [])
            return {k: np.asarray(v) for k, v in out.items()}
        except Exception as e:
            import warnings

            warnings.warn(f"torch target failed ({type(e).__name__}: {e}); using the "
                          "reference interpreter", stacklevel=2)
    from spikedsl.runtime.nir_ref import run

    return run(net, inputs, weights, record=record)


def reference(net: ir.LNetwork, inputs, weights, record=None) -> dict[str, np.ndarray]:
    from spikedsl.runtime.nir_ref import run

    return run(net, inputs, weights, record=record)


def random_inputs(net: ir.LNetwork, T: int, B: int = 3, p: float = 0.3, seed: int = 0,
                  spikes: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for lay in net.inputs:
        shape = (T, B) + tuple(lay.shape)
        out[lay.name] = (rng.random(shape) < p).astype(np.float64) if spikes else \
            rng.random(shape)
    return out


def random_weights(net: ir.LNetwork, scale: float = 3.0, seed: int = 0,
                   extra: dict | None = None) -> dict[str, np.ndarray]:
    W = init_weights(net, seed=seed)
    W = {k: np.asarray(v, dtype=np.float64) * (scale if k.endswith(".weight") else 1.0)
         for k, v in W.items()}
    # the torch target may also export per-neuron parameters: keep them
    W.update(extra or {})
    return W
