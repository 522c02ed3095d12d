"""Checkpoints: atomic writes, RNG states, reading weights back."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from spikedsl.atomic import atomic_path


# ============================================================ files and states
def atomic_save(obj: Any, path: str | os.PathLike, writer: Callable[[Any, Any], None] | None
                = None) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same directory and
    ``os.replace``: readers see the old file or the new one, never a partial one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        (writer or torch.save)(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _write_npz(arrays: dict[str, np.ndarray], fh) -> None:
    np.savez(fh, **arrays)


def _write_text(text: str, fh) -> None:
    fh.write(text.encode("utf-8"))


def _rng_state(model: torch.nn.Module) -> dict[str, Any]:
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "module": {k: g.get_state() for k, g in _generators(model).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(model: torch.nn.Module, st: dict[str, Any],
                   warm_up: Callable[[], None] | None = None) -> None:
    saved = st.get("module", {})
    gens = _generators(model)
    if set(saved) - set(gens) and warm_up is not None:
        warm_up()  # generators made on first use (lazy encoders): make them now
        gens = _generators(model)
    missing = sorted(set(saved) - set(gens))
    if missing:
        raise ValueError(f"the checkpoint holds random generator states {missing} that the "
                         "module does not have; the run cannot be resumed exactly")
    for k, s in saved.items():
        gens[k].set_state(s)
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _generators(model: torch.nn.Module) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` held by the module or its submodules, directly
    or in a dict attribute (e.g. the seeded Poisson encoders of the torch
    target, ``_generators[input]``), so their states go into checkpoints too."""
    out: dict[str, torch.Generator] = {}
    for prefix, mod in model.named_modules():
        for k, v in vars(mod).items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, torch.Generator):
                out[key] = v
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, torch.Generator):
                        out[f"{key}[{k2}]"] = v2
    return out


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors on the CPU).  It holds
    only tensors and plain Python values, so ``weights_only=True`` reads it (no
    code runs while loading)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters of a checkpoint as a weights-file dict (``h.weight`` ...)."""
    ck = load_checkpoint(path)
    return {k: v.detach().cpu().numpy() for k, v in ck["model"].items()}


