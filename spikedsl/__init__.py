"""spikedsl: a compiler for spiking neural networks."""

from __future__ import annotations

from spikedsl.errors import SpecError, Unsupported

__version__ = "0.1.0"
__all__ = ["SpecError", "Unsupported", "__version__", "import_nir", "load", "loads"]


def load(path, **kw):
    """Parse, check and lower a ``.spk`` file; raises :class:`SpecError`."""
    from spikedsl.frontend.program import load as _load

    return _load(path, **kw)


def loads(text: str, file: str = "<string>", **kw):
    """Like :func:`load` for spec text held in memory."""
    from spikedsl.frontend.program import loads as _loads

    return _loads(text, file=file, **kw)


def import_nir(path, dt: float | None = None, **kw):
    """Turn an NIR graph (HDF5 file or ``nir.NIRGraph``) into a loaded program.

    ``dt`` in seconds (None: the graph's own dt if spikedsl wrote it, else 1e-4).
    The ``.spk`` text and weights are written to ``out_dir`` (a temporary directory
    by default); ``spikedsl.targets.nir.importer.import_nir`` returns them instead."""
    from spikedsl.targets.nir.importer import load_nir

    return load_nir(path, dt, **kw)
