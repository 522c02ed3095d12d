"""Parameters and buffers of a generated torch module (the torch and Norse
targets): every array of :func:`spikedsl.lowering.weights.arrays` with its
initialisation, and the range / sign clamps.  Random initial values are drawn
by the code of spikedsl.lowering.weights embedded in the module (``init_values``),
so the module starts from :func:`spikedsl.lowering.weights.init_weights`."""

from __future__ import annotations

from collections.abc import Callable

from spikedsl import ir
from spikedsl.lowering import weights


def array_code(a: weights.Array, number: Callable[[float], str]) -> str:
    """Torch code of the initial value of ``a`` (float64; ``_tensor`` and
    ``init_values`` are helpers of the module)."""
    shape = (f"({a.shape[0]},)" if len(a.shape) == 1 else str(tuple(a.shape))) if a.shape \
        else "()"
    if a.init.dist == "constant":
        c = abs(a.init.args[0]) if a.init.magnitude else a.init.args[0]
        return f"torch.full({shape}, {number(c)}, dtype=torch.float64)"
    return f"_tensor({weights.init_call(a)}, {shape})"


def register_layer(la: ir.LLayer, arrays: list[weights.Array],
                   param: Callable[..., None], attr: Callable[[str], str],
                   number: Callable[[float], str]) -> list[str]:
    """Registers the arrays of layer ``la`` with ``param(name, code, buffer=...)``;
    returns the clamp statements (``range`` of trainable parameters, ``sign``)."""
    for a in arrays:
        if a.layer == la.name:
            param(a.name, array_code(a, number), buffer=not a.trainable)
    clamps = []
    if la.kind == "neuron":
        for prm in la.neuron.params:
            if prm.trainable and prm.range is not None:
                lo, hi = prm.range
                clamps.append(f"{attr(f'{la.name}.{prm.name}')}.clamp_({number(lo)}, "
                              f"{number(hi)})")
    for p in la.projections:
        if p.kind in ("dense", "conv2d") and p.sign != "none":
            clamps.append(f"{attr(p.param_name + '.weight')}.clamp_(min=0.0)")
    return clamps


def draws(arrays: list[weights.Array], net: ir.LNetwork) -> bool:
    """Whether the module needs the drawing code (random arrays or sparse masks)."""
    return any(a.init.dist != "constant" for a in arrays) or any(
        p.kind == "sparse" for la in net.layers for p in la.projections)
