"""Loss functions and metrics of training runs (docs/training.md).

Every loss is a plain function of tensors so that it can be checked by hand
on tiny inputs.  Conventions:

* a *trace* is a tensor ``[T, B, ...]`` (time first, as every target returns
  un-reduced outputs); a *reduced* readout is ``[B, ...]`` (``sum(y)``,
  ``mean(y.v)``, ``last(frame)``);
* ``labels`` are int64 class indices ``[B]``; ``target`` is a float tensor
  ``[B, ...]`` (an image, a frame);
* losses return the mean over the batch (and, where stated, over neurons and
  time) so that the learning rate does not depend on the batch size.

The argument tables (defaults) live in :data:`spikedsl.frontend.program.LOSSES` so the
front end can check names without importing torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spikedsl.frontend.program import LOSSES

__all__ = [
    "LOSSES",
    "LOSS_FUNCTIONS",
    "bce",
    "ce_membrane",
    "ce_rate",
    "masked_membrane",
    "mse",
    "mse_membrane",
    "mse_rate",
    "normalized_mse",
    "one_hot",
    "reduce_time",
    "spike_mse",
    "standardize",
]

TIME_REDUCTIONS = ("sum", "mean", "max", "last")


def reduce_time(x: torch.Tensor, how: str = "sum") -> torch.Tensor:
    """Reduce a trace ``[T, B, ...]`` over time: ``sum``, ``mean``, ``max`` or ``last``."""
    if how == "sum":
        return x.sum(0)
    if how == "mean":
        return x.mean(0)
    if how == "max":
        return x.max(0).values
    if how == "last":
        return x[-1]
    raise ValueError(f"unknown time reduction '{how}' (use {', '.join(TIME_REDUCTIONS)})")


def one_hot(labels: torch.Tensor, n: int, on: float = 1.0, off: float = 0.0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B]`` class indices -> ``[B, n]`` with ``on`` at the label, ``off`` elsewhere."""
    t = torch.full((labels.shape[0], n), float(off), dtype=dtype, device=labels.device)
    t.scatter_(1, labels.view(-1, 1), float(on))
    return t


def _flat(x: torch.Tensor, trace: bool) -> torch.Tensor:
    return x.flatten(2) if trace else x.flatten(1)


# ---------------------------------------------------------------------- losses
def ce_rate(out: torch.Tensor, labels: torch.Tensor, *, trace: bool = True) -> torch.Tensor:
    """Cross-entropy on spike counts: ``CE(softmax(Σ_t z[t]), label)``, mean over the batch.

    A reduced readout (``sum(y)``) is used as the counts directly."""
    counts = _flat(out, trace).sum(0) if trace else out.flatten(1)
    return F.cross_entropy(counts, labels)


def mse_rate(out: torch.Tensor, labels: torch.Tensor, *, on: float = 1.0, off: float = 0.0,
             trace: bool = True, steps: int | None = None, reduced_by: str = "mean"
             ) -> torch.Tensor:
    """Rate-coded MSE: the firing rate ``r = (1/T) Σ_t z[t]`` (spikes per step, in
    [0, 1]) against ``on`` for the label's neuron and ``off`` for the others;
    mean over batch and neurons.

    A reduced readout is turned into a rate: ``mean(y)`` is one already,
    ``sum(y)`` is divided by ``steps``."""
    if trace:
        rate = _flat(out, True).mean(0)
    else:
        rate = out.flatten(1)
        if reduced_by == "sum":
            if not steps:
                raise ValueError("mse_rate on a sum(...) readout needs the number of steps")
            rate = rate / steps
    tgt = one_hot(labels, rate.shape[1], on, off, dtype=rate.dtype)
    return F.mse_loss(rate, tgt)


def mse_membrane(v: torch.Tensor, labels: torch.Tensor | None = None,
                 target: torch.Tensor | None = None, *, on: float = 1.0, off: float = 0.0,
                 trace: bool = True) -> torch.Tensor:
    """MSE of the membrane against a target membrane, at every step (as snnTorch's
    ``mse_membrane_loss``): with class labels the target is ``on`` for the label's
    neuron and ``off`` for the others; with a float ``target`` (a frame) it is
    that target.  Mean over time, batch and neurons."""
    vf = _flat(v, trace)
    if labels is not None:
        tgt = one_hot(labels, vf.shape[-1], on, off, dtype=vf.dtype)
    elif target is not None:
        tgt = target.to(vf.dtype).flatten(1)
    else:
        raise ValueError("mse_membrane needs class labels or a target")
    if trace:
        tgt = tgt.unsqueeze(0).expand_as(vf)
    return F.mse_loss(vf, tgt)


def ce_membrane(v: torch.Tensor, labels: torch.Tensor, *, reduce: str = "sum",
                trace: bool = True) -> torch.Tensor:
    """Cross-entropy on the membrane reduced over time (``reduce = sum|mean|max|last``)."""
    logits = reduce_time(_flat(v, True), reduce) if trace else v.flatten(1)
    return F.cross_entropy(logits, labels)


def bce(out: torch.Tensor, target: torch.Tensor, *, probabilities: bool = True,
        trace: bool = False) -> torch.Tensor:
    """Binary cross-entropy between a readout in [0, 1] and a target in [0, 1].

    ``probabilities=True``: the readout already went through a sigmoid (e.g.
    ``layer frame = sigmoid(conv2d(...))``); otherwise it is taken as logits and
    the sigmoid is applied here (``BCEWithLogits``, numerically stable).  A trace
    is averaged over time first.  Mean over batch and elements."""
    p = out.mean(0) if trace else out
    p = p.flatten(1)
    t = target.to(p.dtype).flatten(1)
    if probabilities:
        eps = torch.finfo(p.dtype).eps
        return F.binary_cross_entropy(p.clamp(eps, 1 - eps), t)
    return F.binary_cross_entropy_with_logits(p, t)


def masked_membrane(v_pre: torch.Tensor, spikes: torch.Tensor, x: torch.Tensor, *,
                    theta: float) -> torch.Tensor:
    """Roy, Panda & Roy's membrane loss (docs/training.md), for traces ``[T, B, ...]``:

    ``O = θ·X``, ``mask = XOR(X, S)``, ``E = mask·(O − V)``, ``L = ½‖E‖²``

    with ``X`` the input spike train of the target, ``S`` the output spikes,
    ``V`` the pre-reset membrane of the output layer and ``θ`` its threshold.
    ``‖E‖²`` sums over time and neurons; the result is averaged over the batch.
    The mask is a constant (no gradient flows through it)."""
    b = v_pre.shape[1]
    vf = v_pre.reshape(v_pre.shape[0], b, -1)
    xf = x.reshape(x.shape[0], x.shape[1], -1).to(vf.dtype)
    sf = spikes.reshape(spikes.shape[0], spikes.shape[1], -1).to(vf.dtype)
    if vf.shape != xf.shape or vf.shape != sf.shape:
        raise ValueError(
            f"masked_membrane: membrane {list(v_pre.shape)}, output spikes "
            f"{list(spikes.shape)} and input spikes {list(x.shape)} must have the same size")
    with torch.no_grad():
        mask = ((xf > 0.5) ^ (sf > 0.5)).to(vf.dtype)
    o = theta * xf
    e = mask * (o - vf)
    return 0.5 * (e * e).sum() / b


def mse(out: torch.Tensor, target: torch.Tensor, *, trace: bool = False) -> torch.Tensor:
    """Plain mean squared error; a trace is averaged over time first."""
    p = (out.mean(0) if trace else out).flatten(1)
    return F.mse_loss(p, target.to(p.dtype).flatten(1))


LOSS_FUNCTIONS = {
    "ce_rate": ce_rate,
    "mse_rate": mse_rate,
    "mse_membrane": mse_membrane,
    "ce_membrane": ce_membrane,
    "bce": bce,
    "masked_membrane": masked_membrane,
    "mse": mse,
}
assert set(LOSS_FUNCTIONS) == set(LOSSES), "keep program.LOSSES and losses.py in step"


# --------------------------------------------------------------------- metrics
def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per sample (first axis): zero mean and unit variance (a constant map becomes 0)."""
    f = x.reshape(x.shape[0], -1).to(torch.float64)
    mu = f.mean(1, keepdim=True)
    sd = f.std(1, unbiased=False, keepdim=True)
    return (f - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))


def normalized_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE after standardising both maps ``[B, ...]``; returns ``[B]``."""
    return ((standardize(a) - standardize(b)) ** 2).mean(1)


def spike_mse(out_spikes: torch.Tensor, in_spikes: torch.Tensor) -> torch.Tensor:
    """Roy/Panda/Roy's Spike-MSE: the output and input spike maps summed over the
    whole duration, each standardised per sample, then the MSE; returns ``[B]``."""
    return normalized_mse(out_spikes.sum(0), in_spikes.sum(0))
