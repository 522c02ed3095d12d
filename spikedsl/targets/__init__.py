"""Targets.  One module per target, each with a single entry point:

* ``torch.convert(net) -> str`` (source) and ``torch.build(net) -> nn.Module``
* ``norse.convert(net) -> str`` and ``norse.build(net) -> nn.Module``
* ``brian2.convert(net) -> str`` (script) and ``brian2.simulate(net, ...) -> dict``
* ``nir.convert(net) -> nir.NIRGraph``
"""

from __future__ import annotations

import importlib

TARGETS = ("torch", "norse", "brian2", "nir")


def source(target: str, net, **kw) -> str:
    """Generated source code of ``net`` for ``target``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    mod = importlib.import_module(f"spikedsl.targets.{target}")
    return mod.convert(net, **kw)
