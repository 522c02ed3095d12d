"""Gradient checkpointing over time (the ``checkpoint_every = k`` train setting).

A forward over ``T`` steps is run as ``ceil(T / k)`` calls of the module on
chunks of ``k`` steps, each carrying the neuron states of the previous chunk
(``stateful`` with ``carry_grad``: the state keeps its autograd graph, so the
gradient flows across chunk boundaries exactly as in one call).  Each chunk is
wrapped in :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): its
intermediate tensors are dropped after the forward and recomputed, one chunk
at a time, during the backward.  What stays in memory between forward and
backward is the chunks' inputs, outputs and boundary states, instead of every
intermediate tensor of all ``T`` steps.

Outputs reduced over time are recombined from the chunks: ``sum`` adds the
chunk sums, ``mean`` weights the chunk means by their length, ``last`` takes
the last chunk's.  Random draws inside the forward (dropout) are replayed by
the checkpoint (the RNG state is saved per chunk), and batch-norm running
statistics are restored after a recomputation, so they are updated once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.checkpoint import checkpoint

_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def supports_chunks(model: torch.nn.Module) -> bool:
    """Whether the module can continue from its state with the gradient kept
    (the torch target's generated modules can)."""
    return hasattr(model, "carry_grad") and hasattr(model, "stateful") and hasattr(
        model, "state")


class _Chunk:
    """One chunk's forward: the module continued from ``state``; returns the
    outputs and the new state.  The second call (the recomputation in the
    backward) leaves running statistics as the first call left them."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.calls = 0

    def __call__(self, x: torch.Tensor, state: dict[str, torch.Tensor]):
        m = self.model
        self.calls += 1
        keep = None
        if self.calls > 1:
            keep = [(b, b.detach().clone()) for n, b in m.named_buffers()
                    if n.rsplit(".", 1)[-1] in _RUNNING]
        flags = (m.stateful, m.carry_grad, m.state)
        m.stateful, m.carry_grad, m.state = True, True, dict(state)
        try:
            out = m(x)
            return out, dict(m.state)
        finally:
            m.stateful, m.carry_grad, m.state = flags
            if keep:
                with torch.no_grad():
                    for b, v in keep:
                        b.copy_(v)


def chunked_forward(model: torch.nn.Module, x: torch.Tensor, every: int,
                    reduces: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``model(x)`` for ``x`` = ``[T, B, ...]`` (already encoded), computed in
    checkpointed chunks of ``every`` steps.  ``reduces``: output name ->
    ``none`` / ``sum`` / ``mean`` / ``last`` (how the output is reduced over
    time).  The module's ``state`` afterwards is the final state, detached."""
    T = int(x.shape[0])
    if every >= T:
        return model(x)
    state: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor]] = {}
    sizes: list[int] = []
    for t0 in range(0, T, every):
        xc = x[t0:t0 + every]
        out, state = checkpoint(_Chunk(model), xc, state, use_reentrant=False,
                                preserve_rng_state=True)
        sizes.append(int(xc.shape[0]))
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    model.state = {k: v.detach() for k, v in state.items()}
    result: dict[str, torch.Tensor] = {}
    for name, vs in parts.items():
        how = reduces.get(name, "none")
        if how == "none":
            result[name] = torch.cat(vs, 0)
        elif how == "sum":
            acc = vs[0]
            for v in vs[1:]:
                acc = acc + v
            result[name] = acc
        elif how == "mean":
            acc = vs[0] * sizes[0]
            for v, n in zip(vs[1:], sizes[1:]):
                acc = acc + v * n
            result[name] = acc / T
        elif how == "last":
            result[name] = vs[-1]
        else:  # pragma: no cover - the IR knows only these
            raise ValueError(f"cannot recombine output '{name}' reduced with {how!r}")
    return result


class StepsModule(torch.nn.Module):
    """The module as the training loop calls it (and as DistributedDataParallel
    wraps it): ``forward(x)`` is ``model(x)``, or :func:`chunked_forward` when
    ``every`` is set and the model is in training mode."""

    def __init__(self, model: torch.nn.Module, every: int | None = None,
                 reduces: Mapping[str, str] | None = None):
        super().__init__()
        self.model = model
        self.every = every
        self.reduces = dict(reduces or {})

    def forward(self, x):
        if self.every is not None and self.model.training and torch.is_grad_enabled():
            return chunked_forward(self.model, x, self.every, self.reduces)
        return self.model(x)
