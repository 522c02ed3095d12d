"""torch target: a readable, standalone PyTorch module generated from the
lowered IR (docs/semantics.md is the contract, docs/torch.md the manual).

    src = convert(net)                 # Python source (imports only torch, math)
    m = build(net, dtype=torch.float64)  # nn.Module, executed from that source
    out = m(x)                         # dict output name -> [T, B, ...]
    out = run(net, {"x": x}, record=["h", "h.v"])   # numpy in, numpy out

The generator is :class:`spikedsl.targets.torch.network.NetGen`; this module
is the public API (source cache, building, running).
"""

from __future__ import annotations

import builtins
import hashlib
import linecache
import os
from collections.abc import Mapping

from spikedsl import ir
from spikedsl.errors import SpecError
from spikedsl.lowering import weights as _weights
from spikedsl.resources import templates_dir
from spikedsl.targets.torch.keys import split_key as _split_key
from spikedsl.targets.torch.network import TARGET, NetGen, class_name

__all__ = ["TARGET", "NetGen", "build", "check", "class_name", "convert", "run"]

# ------------------------------------------------------------------ public API
_CACHE: dict[str, str] = {}


def _generator_version() -> str:
    """Hash of this generator's sources and templates (keys the disk cache)."""
    global _GEN_VERSION
    if _GEN_VERSION is None:
        h = hashlib.sha256()
        here = os.path.dirname(os.path.abspath(__file__))
        files = [os.path.join(here, f) for f in sorted(os.listdir(here))
                 if f.endswith(".py")]
        tdir = templates_dir() / "torch"
        files += [str(tdir / f) for f in sorted(os.listdir(tdir))]
        files.append(_weights.__file__)  # the embedded initialisation
        for f in files:
            with open(f, "rb") as fh:
                h.update(fh.read())
        _GEN_VERSION = h.hexdigest()
    return _GEN_VERSION


_GEN_VERSION: str | None = None


def convert(net: ir.LNetwork, *, fast: bool = True, compile: bool = False) -> str:
    """Python source of a standalone torch module for ``net`` (deterministic:
    the same network gives byte-identical code).  Results are cached in memory
    and on disk (spikedsl.cache), so SymPy runs once per neuron."""
    from spikedsl import cache
    from spikedsl.targets import require

    require(TARGET, net)

    text = net.model_dump_json(exclude={"weights"}) + f"|{fast}|{compile}|{net.weights}"
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _CACHE:
        dkey = f"{_generator_version()}|{key}"
        hit = cache.get_json("torch-src", dkey)
        if isinstance(hit, str):
            _CACHE[key] = hit
        else:
            _CACHE[key] = NetGen(net, fast=fast, compiled=compile).render()
            cache.put_json("torch-src", dkey, _CACHE[key])
    return _CACHE[key]


class _WeightsMixin:
    """Added by :func:`build`: weights files (.npz) and numpy export."""

    def load_weights(self, weights):
        if isinstance(weights, str | os.PathLike):
            import numpy as np

            path = os.fspath(weights)
            try:
                with np.load(path) as z:
                    weights = {k: np.asarray(z[k]) for k in z.files}
            except (OSError, ValueError) as e:
                raise SpecError([_diag("weights-file", path=path, reason=str(e))]) from None
        return super().load_weights(weights)


def _diag(code: str, **fields):
    from spikedsl.errors import diag

    return diag(code, None, **fields)


def build(net: ir.LNetwork, *, dtype=None, device="cpu", fast: bool = True,
          compile: bool = False, weights=None, seed: int = 0):
    """Execute the generated source and instantiate the module.

    ``weights``: a dict name -> array or a ``.npz`` path (after ``net.weights``,
    which is loaded first when set).  ``compile=True`` wraps the forward and
    backward scans with ``torch.compile``.
    """
    import torch

    dtype = _torch_dtype(dtype) if dtype is not None else torch.float32
    src = convert(net, fast=fast, compile=compile)
    cls = _load_class(src, net.name)
    Built = type(cls.__name__, (_WeightsMixin, cls), {"source": src})
    m = Built(seed=seed, dtype=dtype)
    m.to(device=device)
    if net.weights:
        m.load_weights(net.weights)
    if weights is not None:
        m.load_weights(weights)
    if compile:
        _compile_scans(m)
    return m


_CLASSES: dict[str, type] = {}


def _load_class(src: str, net_name: str, label: str = "torch"):
    key = hashlib.sha256(src.encode()).hexdigest()
    if key not in _CLASSES:
        filename = f"<spikedsl-{label} {net_name} {key[:10]}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        ns: dict = {"__name__": f"spikedsl_generated_{net_name}"}
        exec(builtins.compile(src, filename, "exec"), ns)
        _CLASSES[key] = ns[class_name(net_name)]
        _CLASSES[key]._spikedsl_namespace = ns
    return _CLASSES[key]


def _compile_scans(m) -> None:
    """torch.compile the layer scans' forward and backward (fused kernels)."""
    ns = type(m)._spikedsl_namespace
    for k, v in list(ns.items()):
        if k.startswith("_Scan") and not getattr(v, "_spikedsl_compiled", False):
            import torch

            fwd = torch.compile(v.forward.__func__ if hasattr(v.forward, "__func__") else
                                v.forward, dynamic=False)
            v._spikedsl_compiled = True
            del fwd


def _torch_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    import numpy as np

    return {np.dtype("float64"): torch.float64, np.dtype("float32"): torch.float32,
            np.dtype("float16"): torch.float16}[np.dtype(dtype)]


def _record_net(net: ir.LNetwork, record) -> ir.LNetwork:
    outs = list(net.outputs)
    have = {o.name for o in outs if o.reduce == "none"}
    for key in record or ():
        if key in have:
            continue
        layer, state, pre = _split_key(key)
        if layer not in {la.name for la in net.layers}:
            raise KeyError(f"network '{net.name}' has no layer '{layer}'")
        lay = net.layer(layer)
        if state is not None and state not in lay.states:
            raise KeyError(f"layer '{layer}' has no state '{state}' "
                           f"(states: {', '.join(lay.states) or 'none'})")
        outs.append(ir.LOutput(name=key, layer=layer, state=state, pre_reset=pre,
                               shape=lay.shape))
        have.add(key)
    return net.model_copy(update={"outputs": tuple(outs)})


def check(net: ir.LNetwork, *, fast: bool = True, compile: bool = False, **_options) -> None:
    """The torch part of ``spikedsl.targets.refusal`` (raises ``Unsupported``)."""
    NetGen(net, fast=fast, compiled=compile).validate()


def run(net: ir.LNetwork, inputs=None, *, weights=None, dtype=None, record: list[str] | None = None,
        fast: bool = True, seed: int = 0, device=None) -> dict:
    """One forward pass without gradients; numpy in, numpy out.

    ``inputs``: a dict input name -> array (or one array for a single input),
    ``[T, B, ...]`` (already encoded) or ``[B, ...]`` (encoded here like
    :func:`spikedsl.runtime.reference.encode` does, so every target sees the same
    spikes); ``{}`` or None for a network without inputs, which runs for
    ``net.steps`` steps with batch 1.  ``record``: traces to return besides
    the outputs (``"h"``, ``"h.v"``, ``"h.v_pre"``), each ``[T, B, ...]``.
    """
    return run_module(net, inputs, lambda n, **kw: build(n, fast=fast, **kw), weights=weights,
                      dtype=dtype, record=record, seed=seed, device=device)


def run_module(net: ir.LNetwork, inputs, make, *, weights=None, dtype=None,
               record: list[str] | None = None, seed: int = 0, device=None) -> dict:
    """:func:`run` with the module built by ``make(net, dtype=, weights=, seed=,
    device=)`` (the Norse target's ``run`` passes its own ``build``)."""
    import numpy as np
    import torch

    tdtype = _torch_dtype(dtype) if dtype is not None else torch.float64
    plastic = {f"{lp.projection}.weight" for lp in net.plasticity}
    net2 = _record_net(net, [k for k in record or () if k not in plastic])
    m = make(net2, dtype=tdtype, weights=weights, seed=seed,
             device="cpu" if device is None else str(device))
    m.eval()
    m.record_plastic = any(k in plastic for k in record or ())
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        if len(net.inputs) != 1:
            raise ValueError(f"network '{net.name}' has {len(net.inputs)} inputs; pass a dict")
        inputs = {net.inputs[0].name: inputs}
    data = {}
    npdt = np.float64 if tdtype == torch.float64 else np.float32
    for lay in net.inputs:
        if lay.name not in inputs:
            raise ValueError(f"missing input '{lay.name}'")
        x = inputs[lay.name]
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=npdt)
        if x.ndim == len(lay.shape) + 1 and lay.encoder != "direct":
            try:
                from spikedsl.runtime import reference

                x = reference.encode(lay, x, net.steps, dtype=npdt)
            except ImportError:  # pragma: no cover - the reference ships with spikedsl
                pass
        data[lay.name] = torch.as_tensor(np.ascontiguousarray(x), device=device)
    with torch.inference_mode():  # no autograd bookkeeping at all (faster steps)
        out = m(data)
    keep = {o.name for o in net2.outputs} | (set(record or ()) & plastic)
    return {k: v.detach().cpu().numpy() for k, v in out.items() if k in keep}

