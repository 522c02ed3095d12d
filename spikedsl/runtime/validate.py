"""What every target accepts: the inputs and weights of a run, checked once.

The registry (:mod:`spikedsl.targets`) calls :func:`inputs` and
:func:`weights` in every entry point before the target sees anything, so the
reference, torch, Norse, Brian2 and NIR targets accept the same data and refuse
bad data with the same message (docs/semantics.md, "Inputs and weights").  The
errors are :class:`~spikedsl.errors.InvalidData` (a ``SpecError`` and a
``ValueError``): ``spikedsl`` commands print them as ``error: ...`` and exit 1.

Inputs
    ``[T, B, *shape]`` (encoded; T steps) or ``[B, *shape]`` (raw, encoded here
    with the layer's encoder for ``net.steps`` steps); the features may be given
    flat (``[T, B, prod(shape)]``, ``[B, prod(shape)]``).  A run lasts the T of
    its inputs.  Refused: a missing or unknown input, another feature size,
    T = 0 or B = 0, inputs with different T or B, NaN or infinite values, a
    ``spikes`` input holding anything but 0 and 1.

Weights
    A file (``.npz`` or torch checkpoint: the ``weights`` argument or the
    network's ``weights = "..."``) holds exactly the network's arrays
    (:func:`spikedsl.lowering.weights.arrays`); the fixed weights of ``sparse``
    and ``one_to_one`` projections may be present (a torch ``state_dict``
    holds them).  A dict (Python API) may leave arrays out: they come from the
    network's weights file, else from the seeded initialisation.  Every entry
    has the array's shape (a one-element array for a scalar), finite values,
    parameters inside their ``range(...)`` and durations / capacitances
    positive.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from spikedsl import ir
from spikedsl.errors import InvalidData, diag
from spikedsl.ir.units import TIME, parse_dim, parse_unit

__all__ = ["Entry", "entries", "inputs", "weights"]

_FARAD = parse_unit("F")[1]
_POSITIVE = {TIME: "a duration or time constant", _FARAD: "a capacitance"}


def _fail(code: str, **fields) -> InvalidData:
    return InvalidData([diag(code, None, **fields)])


def _listing(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ------------------------------------------------------------------ inputs
def _shape_text(shape) -> str:
    return ", ".join(map(str, shape))


def _one(net: ir.LNetwork, lay: ir.LLayer, x, steps: int) -> np.ndarray:
    """One input as ``[T, B, *shape]`` float64 (encoded), or raise."""
    from spikedsl.lowering.weights import to_numpy
    from spikedsl.runtime.reference import encode

    try:
        x = to_numpy(x).astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise _fail("input-not-numeric", name=lay.name, network=net.name) from None
    shape, nd, n = tuple(lay.shape), len(lay.shape), math.prod(lay.shape)
    timed = None
    if x.ndim == nd + 2 and tuple(x.shape[2:]) == shape:
        timed = True
    elif x.ndim == nd + 1 and tuple(x.shape[1:]) == shape:
        timed = False
    elif x.ndim == 3 and x.shape[-1] == n:
        timed = True
    elif x.ndim == 2 and x.shape[-1] == n:
        timed = False
    elif x.ndim == nd + 2 and math.prod(x.shape[2:]) == n:
        timed = True
    elif x.ndim == nd + 1 and math.prod(x.shape[1:]) == n:
        timed = False
    if timed is None:
        raise _fail("input-shape", name=lay.name, network=net.name, got=list(x.shape),
                    shape=_shape_text(shape))
    enc = lay.encoder or "direct"
    if not timed and enc == "spikes":
        raise _fail("input-spikes-raw", name=lay.name, got=list(x.shape),
                    shape=_shape_text(shape))
    lead = x.shape[:2] if timed else x.shape[:1]
    if timed and lead[0] == 0:
        raise _fail("input-empty", name=lay.name, what="time steps", axis="T",
                    got=list(x.shape))
    if lead[-1] == 0:
        raise _fail("input-empty", name=lay.name, what="samples", axis="B", got=list(x.shape))
    bad = ~np.isfinite(x)
    if bad.any():
        raise _fail("input-not-finite", name=lay.name, count=int(bad.sum()),
                    first=list(map(int, np.argwhere(bad)[0])))
    if timed and enc == "spikes":
        odd = (x != 0) & (x != 1)
        if odd.any():
            raise _fail("input-not-spikes", name=lay.name, value=f"{float(x[odd][0]):g}",
                        count=int(odd.sum()))
    if not timed:
        if enc == "latency" and (x.min() < 0 or x.max() > 1):
            raise _fail("input-latency", name=lay.name, lo=f"{float(x.min()):g}",
                        hi=f"{float(x.max()):g}")
        x = encode(lay, x.reshape((x.shape[0],) + shape), steps)
    return np.ascontiguousarray(x.reshape(x.shape[:2] + shape))


def inputs(net: ir.LNetwork, data, *, steps: int | None = None) -> dict[str, np.ndarray] | None:
    """The inputs of a run of ``net``, checked and encoded: ``{input name:
    [T, B, *shape] float64}``.  ``data``: a dict, or one array for a network
    with one input, or None (None is returned: the target's default).  Raw
    ``[B, ...]`` data is encoded for ``steps`` (default ``net.steps``)."""
    if data is None:
        return None
    ins = net.inputs
    if not isinstance(data, Mapping):
        if len(ins) != 1:
            raise _fail("input-dict", network=net.name, count=len(ins),
                        names=_listing([i.name for i in ins]))
        data = {ins[0].name: data}
    unknown = sorted(set(map(str, data)) - {i.name for i in ins})
    if unknown:
        raise _fail("input-unknown", network=net.name, names=_listing(unknown),
                    known=", ".join(i.name for i in ins) or "none")
    out: dict[str, np.ndarray] = {}
    for lay in ins:
        if lay.name not in data:
            raise _fail("input-missing", name=lay.name, network=net.name,
                        shape=_shape_text(lay.shape))
        out[lay.name] = _one(net, lay, data[lay.name], steps or net.steps)
    for axis, what in ((0, "time steps (T)"), (1, "samples (B)")):
        sizes = {k: v.shape[axis] for k, v in out.items()}
        if len(set(sizes.values())) > 1:
            raise _fail("input-lengths", what=what,
                        detail=", ".join(f"'{k}' has {v}" for k, v in sizes.items()))
    return out


def steps_of(net: ir.LNetwork, data: Mapping[str, np.ndarray] | None) -> int:
    """The number of steps of a run on checked inputs (``net.steps`` without any)."""
    if data:
        return int(next(iter(data.values())).shape[0])
    return int(net.steps)


# ------------------------------------------------------------------ weights
@dataclass(frozen=True)
class Entry:
    """One name a weights file may hold."""

    name: str
    shape: tuple[int, ...]
    required: bool = True
    param: ir.LParam | None = None  # a neuron parameter (range, dimension)
    sparse: ir.LProjection | None = None  # the weight of a sparse projection


def entries(net: ir.LNetwork) -> dict[str, Entry]:
    """Every name a weights file of ``net`` holds (required) or may hold."""
    from spikedsl.lowering.weights import arrays, weight_shape

    params = {}
    for lay in net.layers:
        if lay.kind == "neuron" and lay.neuron is not None:
            for p in lay.neuron.params:
                params[f"{lay.name}.{p.name}"] = p
    out = {a.name: Entry(a.name, tuple(a.shape), True, params.get(a.name)) for a in arrays(net)}
    for lay in net.layers:
        for p in lay.projections:
            key = f"{p.param_name}.weight"
            if p.kind == "sparse" and key not in out:
                out[key] = Entry(key, weight_shape(p), False, sparse=p)
            elif p.kind == "one_to_one" and key not in out:
                out[key] = Entry(key, (), False)
        if lay.kind == "stage" and lay.op == "batchnorm":
            key = f"{lay.name}.num_batches_tracked"
            out[key] = Entry(key, (), False)
    return out


def _origin(path) -> str:
    return f"weights file '{os.fspath(path)}'" if path is not None else "the weights argument"


def _entry(net: ir.LNetwork, e: Entry, value, origin: str) -> np.ndarray:
    from spikedsl.lowering.weights import to_numpy

    try:
        v = to_numpy(value).astype(np.float64)
    except (TypeError, ValueError):
        raise _fail("weights-not-numeric", origin=origin, name=e.name) from None
    if tuple(v.shape) != e.shape and e.sparse is not None and v.ndim == 1:
        # a torch state_dict holds one value per synapse of a sparse projection
        from spikedsl.lowering.weights import sparse_pairs

        post, pre = sparse_pairs(e.sparse)
        if v.size == post.size:
            dense = np.zeros(e.shape)
            dense[post, pre] = v
            v = dense
    if tuple(v.shape) != e.shape:
        if e.shape == () and v.size == 1:
            v = v.reshape(())
        else:
            raise _fail("weights-entry-shape", origin=origin, name=e.name, got=list(v.shape),
                        expected=list(e.shape), network=net.name)
    bad = ~np.isfinite(v)
    if bad.any():
        raise _fail("weights-not-finite", origin=origin, name=e.name, count=int(bad.sum()))
    p = e.param
    if p is not None:
        if p.range is not None:
            lo, hi = p.range
            out = (v < lo) | (v > hi)
            if out.any():
                raise _fail("weights-range", origin=origin, name=e.name,
                            value=f"{float(v[out].flat[0]):g}", param=p.name,
                            lo=f"{lo:g}", hi=f"{hi:g}")
        what = _POSITIVE.get(parse_dim(p.dim or "1"))
        if what is not None:
            low = (v <= 0) if p.value > 0 else (v < 0)
            if low.any():
                raise _fail("weights-not-positive", origin=origin, name=e.name,
                            value=f"{float(v[low].flat[0]):g}", param=p.name, what=what)
    return v


def _check_all(net: ir.LNetwork, given: Mapping, table: dict[str, Entry], origin: str,
               complete: bool) -> dict[str, np.ndarray]:
    names = [str(k) for k in given]
    unknown = [k for k in names if k not in table]
    missing = [k for k, e in table.items() if e.required and k not in given] if complete else []
    if unknown or missing:
        ds = []
        if missing:
            ds.append(diag("weights-keys-missing", None, origin=origin,
                           entries=("entry " if len(missing) == 1 else "entries ")
                           + _listing(missing), network=net.name,
                           count=sum(e.required for e in table.values())))
        if unknown:
            ds.append(diag("weights-keys-unknown", None, origin=origin,
                           entries=("an entry " if len(unknown) == 1 else "entries ")
                           + _listing(unknown), network=net.name,
                           known=_listing([k for k, e in table.items() if e.required], 12)
                           or "no arrays"))
        raise InvalidData(ds)
    out = {}
    for k, v in given.items():
        k = str(k)
        if k.endswith("num_batches_tracked"):
            continue
        out[k] = _entry(net, table[k], v, origin)
    return out


def read_file(net: ir.LNetwork, path) -> dict[str, np.ndarray]:
    """A weights file of ``net``, checked (exactly the network's arrays)."""
    from spikedsl.lowering.weights import read_weights_file

    return _check_all(net, read_weights_file(path), entries(net), _origin(path), True)


def weights(net: ir.LNetwork, given=None, *, seed: int = 0) -> dict[str, np.ndarray] | None:
    """The weights of a run of ``net``, checked: None when there are none to
    read (no argument, no ``weights = "..."`` file: every target starts from
    the seeded initialisation of ``seed``), else every array of the network.
    ``given``: a file path, a dict (arrays it leaves out come from the
    network's weights file, else from the initialisation), or None."""
    if given is None and net.weights is None:
        return None
    if isinstance(given, str | os.PathLike):
        return read_file(net, given)
    if net.weights is not None:
        base = read_file(net, net.weights)
    else:
        from spikedsl.lowering.weights import init_weights

        base = init_weights(net, seed)
    if given is None:
        return base
    if not isinstance(given, Mapping):
        raise _fail("weights-not-mapping", got=type(given).__name__)
    return {**base, **_check_all(net, given, entries(net), _origin(None), False)}
