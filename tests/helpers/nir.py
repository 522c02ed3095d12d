"""Helpers for the NIR / Norse tests: simulate a lowered network with the
torch target or with the reference interpreter (on torch tensors), random
inputs and weights that make neurons fire.  A failing target fails the test."""

from __future__ import annotations

import numpy as np

from spikedsl import ir
from spikedsl.lowering.weights import init_weights


def simulate(net: ir.LNetwork, inputs, weights, record=None) -> dict[str, np.ndarray]:
    """Outputs of ``net`` on the torch target (float64)."""
    import torch

    from spikedsl.targets import torch as torch_target

    out = torch_target.run(net, inputs, weights=weights, dtype=torch.float64,
                           record=record or [])
    return {k: np.asarray(v) for k, v in out.items()}


def reference(net: ir.LNetwork, inputs, weights, record=None) -> dict[str, np.ndarray]:
    """Outputs of ``net`` on the reference interpreter (torch tensors, float64);
    ``weights`` None: the network's own weights file."""
    import torch

    from spikedsl.runtime import reference as ref

    return ref.run(net, inputs, weights=weights, record=record, xp=torch)


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
