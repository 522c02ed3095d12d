"""Device requests, resolved once for every command and entry point."""

from __future__ import annotations

from spikedsl.errors import UserError


class DeviceError(UserError, ValueError):
    """A device that this machine cannot provide."""


def torch_device(name: str | None = None):
    """``torch.device`` for ``name`` (None: cpu); refuses what cannot be met
    instead of silently running elsewhere."""
    import torch

    try:
        dev = torch.device(name or "cpu")
    except RuntimeError:
        raise DeviceError(f"unknown torch device '{name}' (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} was asked for, but CUDA is not available "
                              "(use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name} was asked for, but there are only "
                              f"{torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name} was asked for, but MPS is not available "
                          "(use --device cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {name} is not supported (cpu, cuda, mps)")
    return dev
