"""Trace keys and shape literals shared by the torch generator's modules."""

from __future__ import annotations

import math


def prod(shape) -> int:
    return math.prod(shape) if shape else 1


def tup(shape) -> str:
    shape = tuple(int(s) for s in shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


def key(layer: str, state: str | None = None, pre: bool = False) -> str:
    return layer if state is None else f"{layer}.{state}{'_pre' if pre else ''}"


def split_key(key: str) -> tuple[str, str | None, bool]:
    layer, _, st = key.partition(".")
    if not st:
        return layer, None, False
    if st.endswith("_pre"):
        return layer, st[:-4], True
    return layer, st, False
