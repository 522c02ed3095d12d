"""NIR graph (HDF5 file or ``nir.NIRGraph``) -> readable ``.spk`` text plus a
weights dict (docs/nir.md).

* ``import_nir(src, dt=None, *, name="Imported") -> (spk_text, weights)``
* ``convert_nir(...) -> ImportResult`` (text, weights, notes)
* ``load_nir(src, dt=None, ...) -> Program`` (writes ``.spk`` + ``.npz`` and loads them)

Every problem with the input (not HDF5, missing keys, wrong shapes, unknown node
types, cycles without neurons, NaN parameters, ...) raises ``SpecError`` with a
code from ``spikedsl.errors.CATALOGUE``; no other exception escapes.

Conventions (``convention=``):

* ``"auto"`` (default): graphs written by spikedsl (``metadata.generator``) are
  read with the discretisation, spike comparison, thresholds and initial states
  stored in their metadata; every other graph as ``"nir"``.
* ``"nir"`` / ``"snntorch"``: NIR's equations integrated with forward Euler at
  ``dt`` (CubaLIF: the current is updated first and the membrane reads the new
  current, as snnTorch's ``Synaptic`` and both snnTorch's and Norse's importers
  do); states start at 0; ``spike v > v_threshold``.
* ``"norse"``: undoes the bugs of ``norse.torch.to_nir`` (Norse 1.1): time
  constants written as ``dt * tau`` (read back as ``tau / dt``), ``IF.r`` and
  ``CubaLIF.w_in`` written as 1 (Norse adds the input unscaled: read as
  ``r / dt`` and ``w_in * tau_syn / dt``) and states starting at ``v_leak``
  (``v_reset`` for IF), as Norse's cells do.  ``dt`` must be the ``dt`` given
  to ``to_nir`` (Norse's default 1e-3).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikedsl.atomic import atomic_path, write_text
from spikedsl.errors import SpecError, diag
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.targets.nir.conventions import (
    TOOL_KINDS,
    rockpool_dt,
    tool_lines,
    tool_semantics,
)

NEURON_TYPES = ("LIF", "CubaLIF", "IF", "LI", "I", "CubaLI", "Threshold")
PROJ_TYPES = ("Affine", "Linear", "Conv2d", "Scale")
STAGE_TYPES = ("Flatten", "SumPool2d", "AvgPool2d")
KNOWN = ("Input", "Output", "NIRGraph") + NEURON_TYPES + PROJ_TYPES + STAGE_TYPES

# required / optional (default) fields per node type
FIELDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "Input": (("shape",), {}),
    "Output": ((), {"shape": None}),
    "Affine": (("weight", "bias"), {}),
    "Linear": (("weight",), {}),
    "Scale": (("scale",), {}),
    "Conv2d": (("weight",), {"bias": None, "stride": 1, "padding": 0, "dilation": 1,
                             "groups": 1, "input_shape": None}),
    "Flatten": ((), {"start_dim": 1, "end_dim": -1, "input_type": None}),
    "SumPool2d": (("kernel_size",), {"stride": None, "padding": 0}),
    "AvgPool2d": (("kernel_size",), {"stride": None, "padding": 0}),
    "LIF": (("tau", "r", "v_leak", "v_threshold"), {"v_reset": 0.0}),
    "CubaLIF": (("tau_syn", "tau_mem", "r", "v_leak", "v_threshold"),
                {"v_reset": 0.0, "w_in": 1.0}),
    "IF": (("r", "v_threshold"), {"v_reset": 0.0}),
    "LI": (("tau", "r", "v_leak"), {}),
    "I": (("r",), {}),
    "CubaLI": (("tau_syn", "tau_mem", "r", "v_leak"), {"w_in": 1.0}),
    "Threshold": (("threshold",), {}),
}
NEURON_PARAMS = {
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "IF": ("r", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"),
    "I": ("r",),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    "Threshold": ("threshold",),
}
TIME_PARAMS = {"tau", "tau_syn", "tau_mem"}
RATE_PARAMS = {("IF", "r"), ("I", "r")}  # dv/dt = r * I: r in 1/s
DEFAULTS = {"tau": 0.01, "tau_syn": 0.005, "tau_mem": 0.01, "r": 1.0, "v_leak": 0.0,
            "v_threshold": 1.0, "v_reset": 0.0, "w_in": 1.0, "threshold": 0.0, "v_init": 0.0,
            "syn_init": 0.0}
CONVENTIONS = ("auto", "nir", "snntorch", "norse", "spikedsl", *TOOL_KINDS)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def _err(code: str, **fields) -> SpecError:
    return SpecError([diag(code, None, **fields)])


def _node_err(node: str, typ: str, reason: str) -> SpecError:
    return _err("nir-node", node=node, type=typ, reason=reason)


# ------------------------------------------------------------------ reading
def _to_array(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _h5_to_dict(group) -> dict:
    import h5py

    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _h5_to_dict(item)
        elif isinstance(item, h5py.Dataset):
            val = item[()]
            if isinstance(val, bytes):
                val = val.decode("utf8", errors="replace")
            out[key] = val
    return out


def _obj_to_dict(node) -> dict:
    """A ``nir`` node object -> the dict form used in files."""
    import dataclasses

    import nir

    typ = type(node).__name__
    if isinstance(node, nir.NIRGraph):
        return {"type": "NIRGraph", "nodes": {str(k): _obj_to_dict(v) for k, v in
                                              node.nodes.items()},
                "edges": [tuple(e) for e in node.edges],
                "metadata": dict(node.metadata or {}) if isinstance(node.metadata, dict)
                else {}}
    if node is None:
        return {"type": "None"}
    if not dataclasses.is_dataclass(node):
        return {"type": typ}
    d: dict[str, Any] = {"type": typ}
    for f in dataclasses.fields(node):
        if f.name in ("input_type", "output_type"):
            continue
        d[f.name] = getattr(node, f.name)
    if isinstance(node, nir.Input):
        d["shape"] = (node.input_type or {}).get("input")
    elif isinstance(node, nir.Output):
        d["shape"] = (node.output_type or {}).get("output")
    elif isinstance(node, nir.Flatten):
        d["input_type"] = (node.input_type or {}).get("input")
    return d


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _h5_problem(path: str, e: OSError) -> str:
    """Why h5py could not open ``path``, in the user's terms."""
    with open(path, "rb") as fh:
        head = fh.read(len(_HDF5_SIGNATURE))
    if head != _HDF5_SIGNATURE:
        return "not an HDF5 file"
    if "truncated" in str(e) or "eof" in str(e):
        return (f"truncated HDF5 file ({os.path.getsize(path)} bytes): "
                "it was not completely written or copied")
    return f"corrupt HDF5 file ({e})"


def read_graph_dict(src) -> dict:
    """Path / file object / ``nir.NIRGraph`` -> nested dict (type, nodes, edges)."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if os.path.isdir(path):
            raise _err("nir-file", path=path, reason="a directory, not a file")
        if not os.path.isfile(path):
            raise _err("nir-file", path=path, reason="no such file")
        try:
            import h5py
        except ImportError:  # pragma: no cover
            raise _err("nir-file", path=path, reason="h5py is not installed") from None
        try:
            with h5py.File(path, "r") as f:
                if "node" not in f:
                    raise _err("nir-file", path=path, reason="no 'node' group: not a NIR file")
                node = f["node"]
                if not isinstance(node, h5py.Group):
                    raise _err("nir-file", path=path, reason="'node' is not a group")
                return _h5_to_dict(node)
        except SpecError:
            raise
        except OSError as e:
            raise _err("nir-file", path=path, reason=_h5_problem(path, e)) from None
        except Exception as e:
            raise _err("nir-file", path=path, reason=f"{type(e).__name__}: {e}") from None
    try:
        import nir
    except ImportError:  # pragma: no cover
        raise _err("nir-invalid", reason="the 'nir' package is not installed") from None
    if isinstance(src, nir.NIRNode):
        if not isinstance(src, nir.NIRGraph):
            return {"type": "NIRGraph", "nodes": {"input": {"type": "Input", "shape": None},
                                                  "node": _obj_to_dict(src)},
                    "edges": [("input", "node")], "metadata": {}}
        return _obj_to_dict(src)
    if isinstance(src, dict):
        return src
    raise _err("nir-invalid", reason=f"expected a file name or a nir.NIRGraph, got "
               f"{type(src).__name__}")


# ------------------------------------------------------------------ validation
@dataclass
class Node:
    name: str
    type: str
    f: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def _num_array(node: str, typ: str, key: str, v, integer=False) -> np.ndarray:
    try:
        a = _to_array(v)
    except Exception:
        raise _node_err(node, typ, f"'{key}' is not an array") from None
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise _node_err(node, typ, f"'{key}' is not numeric")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise _node_err(node, typ, f"'{key}' contains NaN or infinite values")
    if integer:
        if not np.all(a == np.round(a)) or np.any(np.abs(a) > 2**31):
            raise _node_err(node, typ, f"'{key}' must be (not too large) integers")
        return a.astype(np.int64)
    return a


def _meta_dict(v) -> dict:
    if not isinstance(v, dict):
        return {}
    out = {}
    for k, x in v.items():
        if isinstance(x, bytes):
            x = x.decode("utf8", errors="replace")
        out[str(k)] = x
    return out


def _parse_node(name: str, d) -> Node:
    if not isinstance(d, dict):
        raise _err("nir-invalid", reason=f"node '{name}' is not a group")
    typ = d.get("type")
    if isinstance(typ, bytes):
        typ = typ.decode("utf8", errors="replace")
    if not isinstance(typ, str):
        raise _err("nir-invalid", reason=f"node '{name}' has no 'type'")
    if typ == "NIRGraph":
        return Node(name, typ, {"graph": d}, _meta_dict(d.get("metadata")))
    if typ not in FIELDS:
        raise _err("nir-unknown-node", node=name, type=typ,
                   known=", ".join(k for k in KNOWN))
    req, opt = FIELDS[typ]
    f: dict[str, Any] = {}
    for k in req:
        if k not in d or d[k] is None:
            raise _node_err(name, typ, f"the field '{k}' is missing")
        f[k] = d[k]
    for k, default in opt.items():
        f[k] = d.get(k, default) if d.get(k) is not None else default
    out: dict[str, Any] = {}
    for k, v in f.items():
        if v is None:
            out[k] = None
        elif k == "padding" and isinstance(v, (str, bytes)):
            s = v.decode() if isinstance(v, bytes) else v
            if s not in ("same", "valid"):
                raise _node_err(name, typ, f"padding '{s}' is not 'same', 'valid' or numbers")
            out[k] = s
        elif k in ("shape", "input_shape", "input_type", "kernel_size", "stride", "padding",
                   "dilation", "groups", "start_dim", "end_dim"):
            out[k] = _num_array(name, typ, k, v, integer=True)
        else:
            out[k] = _num_array(name, typ, k, v)
    return Node(name, typ, out, _meta_dict(d.get("metadata")))


def _edges(d, where: str) -> list[tuple[str, str]]:
    raw = d.get("edges")
    if raw is None:
        raise _err("nir-invalid", reason=f"{where} has no 'edges'")
    try:
        arr = list(raw) if not isinstance(raw, np.ndarray) else list(raw.reshape(-1, 2)) \
            if raw.size else []
    except Exception:
        raise _err("nir-invalid", reason=f"the edges of {where} are not a list of pairs") \
            from None
    out = []
    for e in arr:
        try:
            a, b = list(e)
        except Exception:
            raise _err("nir-invalid", reason=f"an edge of {where} is not a pair") from None
        a = a.decode("utf8", errors="replace") if isinstance(a, bytes) else a
        b = b.decode("utf8", errors="replace") if isinstance(b, bytes) else b
        if not isinstance(a, str) or not isinstance(b, str):
            raise _err("nir-invalid", reason=f"an edge of {where} does not name two nodes")
        out.append((a, b))
    return out


def flatten_graph(d: dict, depth: int = 0) -> tuple[dict[str, Node], list[tuple[str, str]], dict]:
    """Validate a graph dict and inline sub-graphs; returns (nodes, edges, metadata)."""
    if depth > 16:
        raise _err("nir-invalid", reason="sub-graphs are nested too deeply")
    if not isinstance(d, dict):
        raise _err("nir-invalid", reason="the graph is not a group")
    typ = d.get("type")
    if isinstance(typ, bytes):
        typ = typ.decode()
    if typ not in (None, "NIRGraph"):
        raise _err("nir-invalid", reason=f"the top node has type '{typ}', not 'NIRGraph'")
    raw_nodes = d.get("nodes")
    if not isinstance(raw_nodes, dict):
        raise _err("nir-invalid", reason="the graph has no 'nodes'")
    if not raw_nodes:
        raise _err("nir-invalid", reason="the graph has no nodes")
    nodes: dict[str, Node] = {}
    for k, v in raw_nodes.items():
        nodes[str(k)] = _parse_node(str(k), v)
    edges = _edges(d, "the graph")
    for a, b in edges:
        for x in (a, b):
            if x not in nodes:
                raise _err("nir-invalid", reason=f"the edge ({a!r}, {b!r}) names the unknown "
                           f"node '{x}'")
    edges = list(dict.fromkeys(edges))
    # inline sub-graphs
    for gname in [k for k, n in nodes.items() if n.type == "NIRGraph"]:
        sub_nodes, sub_edges, _ = flatten_graph(nodes[gname].f["graph"], depth + 1)
        ins = [k for k, n in sub_nodes.items() if n.type == "Input"]
        outs = [k for k, n in sub_nodes.items() if n.type == "Output"]
        if len(ins) != 1 or len(outs) != 1:
            raise _err("nir-invalid", reason=f"sub-graph '{gname}' must have one Input and one "
                       f"Output node (has {len(ins)} and {len(outs)})")
        ren = {k: f"{gname}.{k}" for k in sub_nodes}
        del nodes[gname]
        for k, n in sub_nodes.items():
            if k in (ins[0], outs[0]):
                continue
            nodes[ren[k]] = Node(ren[k], n.type, n.f, n.meta)
        first = [ren[b] for a, b in sub_edges if a == ins[0]]
        last = [ren[a] for a, b in sub_edges if b == outs[0]]
        inner = [(ren[a], ren[b]) for a, b in sub_edges if a != ins[0] and b != outs[0]]
        new = []
        for a, b in edges:
            srcs = last if a == gname else [a]
            dsts = first if b == gname else [b]
            new += [(s, t) for s in srcs for t in dsts]
        # a pass-through sub-graph (Input -> Output directly)
        if any(a == ins[0] and b == outs[0] for a, b in sub_edges):
            preds = [a for a, b in edges if b == gname]
            succs = [b for a, b in edges if a == gname]
            new += [(p, s) for p in preds for s in succs]
        edges = list(dict.fromkeys(new + inner))
    return nodes, edges, _meta_dict(d.get("metadata"))


# ------------------------------------------------------------------ shapes
def _pair(v, default=None, n: Node | None = None, key: str = "") -> tuple[int, int]:
    if v is None:
        return default
    a = np.asarray(v).reshape(-1)
    if a.size == 1:
        return (int(a[0]), int(a[0]))
    if a.size == 2:
        return (int(a[0]), int(a[1]))
    if n is not None:
        raise _node_err(n.name, n.type, f"'{key}' must be one or two integers")
    raise ValueError("expected one or two integers")


def _neuron_shape(n: Node) -> tuple[int, ...]:
    shapes = [np.shape(n.f[k]) for k in NEURON_PARAMS[n.type]]
    try:
        s = np.broadcast_shapes(*shapes)
    except ValueError:
        raise _node_err(n.name, n.type, "its parameters have different shapes: " + ", ".join(
            f"{k} {list(np.shape(n.f[k]))}" for k in NEURON_PARAMS[n.type])) from None
    return tuple(int(x) for x in s)


def _conv_out(n: Node, ins: tuple[int, ...]) -> tuple[int, ...]:
    w = n.f["weight"]
    if len(ins) != 3:
        raise _node_err(n.name, n.type, f"needs a [C, H, W] input, gets {list(ins)}")
    if ins[0] != w.shape[1]:
        raise _node_err(n.name, n.type, f"its weight expects {w.shape[1]} input channels, the "
                        f"input has {ins[0]}")
    k = w.shape[2:]
    s = _pair(n.f["stride"], None, n, "stride")
    p = n.f["padding"]
    if isinstance(p, str):
        p = (0, 0) if p == "valid" else ((k[0] - 1) // 2, (k[1] - 1) // 2)
    else:
        p = _pair(p, None, n, "padding")
    ho = (ins[1] + 2 * p[0] - k[0]) // s[0] + 1
    wo = (ins[2] + 2 * p[1] - k[1]) // s[1] + 1
    if ho <= 0 or wo <= 0 or min(s) <= 0:
        raise _node_err(n.name, n.type, f"the kernel {list(k)} does not fit the input {list(ins)}")
    return (int(w.shape[0]), int(ho), int(wo))


def _pool_out(n: Node, ins: tuple[int, ...]) -> tuple[int, ...]:
    if len(ins) != 3:
        raise _node_err(n.name, n.type, f"needs a [C, H, W] input, gets {list(ins)}")
    k = _pair(n.f["kernel_size"], None, n, "kernel_size")
    s = _pair(n.f["stride"], k, n, "stride")
    if min(k) <= 0 or min(s) <= 0:
        raise _node_err(n.name, n.type, "kernel and stride must be positive")
    ho, wo = (ins[1] - k[0]) // s[0] + 1, (ins[2] - k[1]) // s[1] + 1
    if ho <= 0 or wo <= 0:
        raise _node_err(n.name, n.type, f"the kernel {list(k)} does not fit the input {list(ins)}")
    return (ins[0], int(ho), int(wo))


def infer_shapes(nodes: dict[str, Node], edges, strip_batch: bool) -> dict[str, tuple]:
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        preds[b].append(a)
    out: dict[str, tuple] = {}
    for k, n in nodes.items():
        if n.type == "Input":
            s = tuple(int(x) for x in np.asarray(n.f["shape"]).reshape(-1))
            if not s or min(s) <= 0:
                raise _node_err(k, "Input", f"invalid shape {list(s)}")
            if strip_batch and len(s) in (2, 4) and s[0] == 1:
                s = s[1:]
            out[k] = s
    for _ in range(len(nodes) + 2):
        changed = False
        for k, n in nodes.items():
            if k in out:
                continue
            known = [out[p] for p in preds[k] if p in out]
            ins = known[0] if known else None
            t = n.type
            s = None
            if t in NEURON_TYPES:
                ps = _neuron_shape(n) if t != "Threshold" else tuple(np.shape(n.f["threshold"]))
                if int(np.prod(ps)) > 1 or (ins is None and len(ps) >= 1 and preds[k]):
                    s = ps
                if ins is not None and (s is None or int(np.prod(s)) <= 1):
                    s = ins
            elif t in ("Affine", "Linear"):
                w = n.f["weight"]
                if w.ndim != 2:
                    raise _node_err(k, t, f"its weight must be 2-D, has shape {list(w.shape)}")
                s = (int(w.shape[0]),)
            elif t == "Scale":
                sc = n.f["scale"]
                s = tuple(sc.shape) if sc.size > 1 else ins
            elif t == "Conv2d":
                w = n.f["weight"]
                if w.ndim != 4:
                    raise _node_err(k, t, f"its weight must be 4-D, has shape {list(w.shape)}")
                if ins is None and n.f.get("input_shape") is not None:
                    hw = tuple(int(x) for x in np.asarray(n.f["input_shape"]).reshape(-1))
                    if len(hw) == 2:
                        ins = (int(w.shape[1]),) + hw
                if ins is not None:
                    s = _conv_out(n, ins)
            elif t in ("SumPool2d", "AvgPool2d"):
                if ins is not None:
                    s = _pool_out(n, ins)
            elif t == "Flatten":
                if ins is None and n.f.get("input_type") is not None and \
                        np.asarray(n.f["input_type"]).size:
                    ins = tuple(int(x) for x in np.asarray(n.f["input_type"]).reshape(-1))
                if ins is not None:
                    s = (int(np.prod(ins)),)
            elif t == "Output":
                s = ins
            if s is not None:
                out[k] = tuple(int(x) for x in s)
                changed = True
        if not changed:
            break
    for k, n in nodes.items():
        if k not in out:
            if not preds[k] and n.type != "Input":
                raise _node_err(k, n.type, "nothing feeds it")
            raise _node_err(k, n.type, "its shape cannot be inferred")
    return out


# ------------------------------------------------------------------ the plan
@dataclass
class ImportResult:
    text: str
    weights: dict[str, np.ndarray]
    notes: list[str]
    outputs: dict[str, str]  # NIR output node -> spikedsl output name
    layers: dict[str, str] = field(default_factory=dict)  # NIR node -> layer (renamed ones)


_RESERVED_EXTRA = {"true", "false", "dt", "excitatory", "inhibitory", "where", "exp", "log", "sqrt",
                   "abs", "tanh", "sigmoid", "relu", "min", "max", "clip", "sin", "cos", "sum",
                   "mean", "last", "dense", "conv2d", "sparse", "one_to_one", "flatten",
                   "avgpool2d", "sumpool2d", "maxpool2d", "batchnorm", "dropout", "slstm",
                   "sconv_lstm", "direct", "poisson", "latency", "spikes", "kaiming", "xavier",
                   "normal", "uniform", "zeros", "default"}


def _ident(name: str, taken: set[str]) -> str:
    from spikedsl.frontend.parse import RESERVED
    from spikedsl.ir.units import UNITS

    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "n"
    if s[0].isdigit():
        s = "n" + s
    if s in RESERVED or s in UNITS or s in _RESERVED_EXTRA or s.startswith("__"):
        s = s + "_"
    base, i = s, 1
    while s in taken:
        i += 1
        s = f"{base}_{i}"
    taken.add(s)
    return s


def _fmt(v: float) -> str:
    from spikedsl.ir.exprs import SpkPrinter

    v = float(v)
    if v != 0 and math.isfinite(v):
        r = float(f"{v:.12g}")
        if abs(r - v) <= 1e-12 * abs(v):  # round-off of a recovered parameter
            v = r
    return SpkPrinter().number(v)


_TIME_UNITS = (("ms", 1e-3), ("us", 1e-6), ("s", 1.0), ("ns", 1e-9))


def _fmt_time(v: float) -> str:
    """A duration that parses back to exactly ``v`` seconds."""
    for unit, scale in _TIME_UNITS:
        x = float(v) / scale
        t = _fmt(x)
        if float(t) * scale == v and len(t) <= 10:
            return f"{t} {unit}"
    return f"{_fmt(v)} s"


def _fmt_param(kind: str, name: str, v: float) -> str:
    if name in TIME_PARAMS:
        return _fmt_time(v)
    if (kind, name) in RATE_PARAMS:
        return f"{_fmt(v)} Hz"
    return _fmt(v)


def _uniform(a: np.ndarray) -> bool:
    a = np.asarray(a)
    return a.size == 0 or bool(np.all(a == a.reshape(-1)[0]))


def _meta_str(meta: dict, key: str) -> str | None:
    v = meta.get(key)
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf8", errors="replace")
    return v if isinstance(v, str) else None


def _meta_num(meta: dict, key: str):
    v = meta.get(key)
    if v is None:
        return None
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a if np.all(np.isfinite(a)) else None


def _surrogate(text: str | None) -> str | None:
    """'fast_sigmoid(slope=25.0)' -> '.spk' surrogate line, validated."""
    if not text:
        return None
    m = re.fullmatch(r"([a-z_]+)\((.*)\)", text.strip())
    if not m or m.group(1) not in SURROGATES:
        return None
    args = []
    for part in filter(None, (p.strip() for p in m.group(2).split(","))):
        km = re.fullmatch(r"([a-z_]+)=([-+0-9.eE]+)", part)
        if not km:
            return None
        try:
            val = float(km.group(2))
        except ValueError:
            return None
        if not math.isfinite(val):
            return None
        args.append(f"{km.group(1)} = {_fmt(val)}")
    return f"{m.group(1)}({', '.join(args)})"


def convert_nir(src, dt: float | None = None, *, name: str = "Imported",
                convention: str = "auto", steps: int | None = None,
                weights_file: str | None = None) -> ImportResult:
    """The full import; see the module docstring."""
    try:
        return _convert(src, dt, name, convention, steps, weights_file)
    except SpecError:
        raise
    except RecursionError:
        raise _err("nir-invalid", reason="the graph is nested too deeply") from None
    except Exception as e:
        raise _err("nir-invalid", reason=f"{type(e).__name__}: {e}") from None


def _convert(src, dt, name, convention, steps, weights_file) -> ImportResult:
    if convention not in CONVENTIONS:
        raise _err("nir-invalid", reason=f"unknown convention '{convention}' (known: "
                   f"{', '.join(CONVENTIONS)})")
    if not _IDENT.match(name or ""):
        raise _err("nir-invalid", reason=f"'{name}' is not a valid network name")
    d = read_graph_dict(src)
    nodes, edges, gmeta = flatten_graph(d)
    notes: list[str] = []
    from_spikedsl = _meta_str(gmeta, "generator") == "spikedsl"
    if convention == "auto":
        convention = "spikedsl" if from_spikedsl else "nir"
    if convention == "snntorch":
        convention = "nir"
    if dt is None and convention == "rockpool":
        dt = rockpool_dt(nodes, notes)
    if dt is None:
        gdt = _meta_num(gmeta, "dt")
        dt = float(gdt) if gdt is not None and gdt.size == 1 and float(gdt) > 0 else (
            1e-3 if convention in ("norse", "sinabs", "lava") else 1e-4)
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise _err("nir-invalid", reason=f"dt must be a positive number of seconds, got {dt}")
    if steps is None:
        gs = _meta_num(gmeta, "steps")
        steps = int(gs) if gs is not None and gs.size == 1 and float(gs) >= 1 else 100
    # structure checks
    for a, b in edges:
        if nodes[b].type == "Input":
            raise _err("nir-invalid", reason=f"the edge ({a!r}, {b!r}) leads into an Input node")
        if nodes[a].type == "Output":
            raise _err("nir-invalid", reason=f"the edge ({a!r}, {b!r}) leaves an Output node")
    if not any(n.type == "Input" for n in nodes.values()):
        raise _err("nir-invalid", reason="the graph has no Input node")
    if not any(n.type == "Output" for n in nodes.values()):
        raise _err("nir-invalid", reason="the graph has no Output node")
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    succs: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    for k, n in nodes.items():
        if n.type not in NEURON_TYPES and n.type != "Input" and len(preds[k]) > 1:
            raise _node_err(k, n.type, f"it sums {len(preds[k])} inputs; spikedsl sums inputs "
                            "only in neuron layers")
        if n.type != "Input" and not preds[k]:
            raise _node_err(k, n.type, "nothing feeds it")
        if n.type == "Conv2d":
            if np.any(np.asarray(n.f["dilation"]) != 1) or int(np.asarray(
                    n.f["groups"]).reshape(-1)[0]) != 1:
                raise _node_err(k, n.type, "dilation and groups other than 1 are not supported")
            p = n.f["padding"]
            if isinstance(p, str) and p == "same" and any(x % 2 == 0 for x in
                                                          n.f["weight"].shape[2:]):
                raise _node_err(k, n.type, "padding 'same' with an even kernel is not supported")
        if n.type in ("SumPool2d", "AvgPool2d") and np.any(np.asarray(n.f["padding"]) != 0):
            raise _node_err(k, n.type, "padding is not supported")
        if n.type in NEURON_TYPES and n.type != "Threshold":
            for p in NEURON_PARAMS[n.type]:
                if p in TIME_PARAMS and np.any(n.f[p] <= 0):
                    raise _node_err(k, n.type, f"'{p}' must be positive")
    shapes = infer_shapes(nodes, edges, strip_batch=not from_spikedsl)
    # cycles without neurons: a cycle in the graph minus neuron nodes
    _check_cycles(nodes, edges)
    # ---------------------------------------------------------- layer plan
    taken: set[str] = {"I", "v", "syn"}
    lname: dict[str, str] = {}
    inline: dict[str, str] = {}  # projection node -> its source node (inlined into neurons)

    def is_layer_node(k: str) -> bool:
        return nodes[k].type in ("Input",) + NEURON_TYPES + STAGE_TYPES or (
            nodes[k].type in PROJ_TYPES and k not in inline)

    for k, n in nodes.items():
        # a projection whose every target is a neuron becomes a projection of those
        # layers (its source is then always a layer: a projection feeding a projection
        # is itself a stateless layer)
        if n.type in PROJ_TYPES and succs[k] and all(nodes[s].type in NEURON_TYPES
                                                    for s in succs[k]):
            inline[k] = preds[k][0]
    # a Flatten that only feeds such dense projections is implicit (dense flattens)
    transparent = {k for k, n in nodes.items() if n.type == "Flatten" and succs[k] and all(
        s in inline and nodes[s].type in ("Affine", "Linear") for s in succs[k])}
    for k, p in list(inline.items()):
        while p in transparent:
            p = preds[p][0]
        inline[k] = p
    layer_nodes = [k for k in nodes if is_layer_node(k) and nodes[k].type != "Output"
                   and k not in transparent]
    # dependency edges between layer nodes: (src layer node, dst layer node, soft)
    deps: list[tuple[str, str, bool]] = []
    for k in layer_nodes:
        n = nodes[k]
        if n.type in NEURON_TYPES:
            for p in preds[k]:
                src = inline.get(p, p) if p in inline else p
                deps.append((src, k, True))
        elif n.type != "Input":
            deps.append((preds[k][0], k, False))
    order = _order(layer_nodes, deps, nodes, edges, gmeta if from_spikedsl else {})
    for k in order:
        lname[k] = _ident(k, taken)
    state_out = {k: "v" for k in order if nodes[k].type in ("LI", "I", "CubaLI")}

    def ref(k: str) -> str:
        """How a layer's output is read: spikes/values, or the membrane of a
        non-spiking neuron (NIR's LI/I/CubaLI output their state)."""
        return lname[k] + (".v" if k in state_out else "")
    # ---------------------------------------------------------- neuron definitions
    defs: dict[tuple, str] = {}
    def_text: list[str] = []
    layer_lines: list[str] = []
    weights_plan: list[tuple[str, int, str, np.ndarray]] = []  # (layer, proj index, kind, arr)
    neuron_arrays: dict[str, dict[str, np.ndarray]] = {}
    for k in order:
        n = nodes[k]
        L = lname[k]
        shp = shapes[k]
        sh = f"[{', '.join(str(x) for x in shp)}]"
        if n.type == "Input":
            enc = "spikes"
            if from_spikedsl:
                e = _meta_str(n.meta, "encoder")
                if e == "direct":
                    enc = "direct"
                elif e in ("poisson", "latency"):
                    args = []
                    for key, val in sorted(n.meta.items()):
                        if key.startswith("encoder_"):
                            num = _meta_num(n.meta, key)
                            if num is not None and num.size == 1:
                                args.append(f"{key[8:]} = {_fmt(float(num))}")
                    enc = f"{e}({', '.join(args)})"
            layer_lines.append(f"    input  {L}{sh} : {enc}")
            continue
        if n.type in STAGE_TYPES:
            src = ref(preds[k][0])
            if n.type == "Flatten":
                ins = shapes[preds[k][0]]
                sd = int(np.asarray(n.f["start_dim"]).reshape(-1)[0])
                ed = int(np.asarray(n.f["end_dim"]).reshape(-1)[0])
                nd = len(ins)
                sd_, ed_ = sd % nd if nd else 0, ed % nd if nd else 0
                if nd > 1 and not (sd_ == 0 and ed_ == nd - 1) and not all(
                        x == 1 for i, x in enumerate(ins) if i < sd_ or i > ed_):
                    raise _node_err(k, n.type, f"flattens dimensions {sd}..{ed} of "
                                    f"{list(ins)}; only a full flatten is supported")
                layer_lines.append(f"    layer  {L}{sh} = flatten({src})")
            else:
                kk = _pair(n.f["kernel_size"], None, n, "kernel_size")
                ss = _pair(n.f["stride"], kk, n, "stride")
                op = "avgpool2d" if n.type == "AvgPool2d" else "sumpool2d"
                ktxt = str(kk[0]) if kk[0] == kk[1] else f"[{kk[0]}, {kk[1]}]"
                stxt = "" if ss == kk else (f", stride = {ss[0]}" if ss[0] == ss[1] else
                                            f", stride = [{ss[0]}, {ss[1]}]")
                layer_lines.append(f"    layer  {L}{sh} = {op}({src}, {ktxt}{stxt})")
            continue
        if n.type in PROJ_TYPES:  # stateless projection layer
            src = preds[k][0]
            call, arrs = _proj_call(k, n, ref(src), shapes[src], shapes[k])
            layer_lines.append(f"    layer  {L}{sh} = {call}")
            for kind, arr in arrs:
                weights_plan.append((L, 0, kind, arr))
            continue
        # neuron layer
        kind = n.type
        P = {p: np.broadcast_to(n.f[p], shp).astype(np.float64) for p in NEURON_PARAMS[kind]}
        disc, op, init = _semantics(n, kind, P, convention, dt, shp, notes)
        arrays = dict(P)
        for st, arr in init.items():
            arrays[f"{st}_init"] = arr
        per = tuple(sorted(p for p, a in arrays.items() if not _uniform(a)))
        sur = _surrogate(_meta_str(n.meta, "surrogate")) if from_spikedsl else None
        key = (kind, disc, op, tuple(sorted(init)), per, sur)
        if key not in defs:
            base = kind if disc in ("euler", "semi_implicit", "none") else f"{kind}_{disc}"
            dname = _ident(base, taken)
            defs[key] = dname
            def_text.append(_neuron_text(dname, kind, disc, op, sorted(init), set(per), sur))
        dname = defs[key]
        overrides = []
        for p, a in arrays.items():
            if p in per:
                continue
            v = float(a.reshape(-1)[0]) if a.size else DEFAULTS[p]
            if v != DEFAULTS[p]:
                overrides.append(f"{p} = {_fmt_param(kind, p, v)}")
        body = f"{dname}({', '.join(overrides)})" if overrides else dname
        neuron_arrays[L] = {p: arrays[p] for p in per}
        terms = []
        for j, p in enumerate(preds[k]):
            if p in inline:
                src = inline[p]
                call, arrs = _proj_call(p, nodes[p], ref(src), shapes[src], shp)
                for kind_, arr in arrs:
                    weights_plan.append((L, len(terms), kind_, arr))
            else:
                if int(np.prod(shapes[p])) != int(np.prod(shp)):
                    raise _node_err(k, kind, f"its input '{p}' has shape {list(shapes[p])}, the "
                                    f"neuron {list(shp)}")
                call = f"one_to_one({ref(p)})"
            terms.append(call)
        layer_lines.append(f"    layer  {L}{sh} = {body} <- " + " + ".join(terms))
    # ---------------------------------------------------------- outputs
    out_lines = []
    outputs: dict[str, str] = {}
    for k, n in nodes.items():
        if n.type != "Output":
            continue
        p = preds[k][0]
        if p in inline:  # an inlined projection cannot feed an Output (not reachable)
            raise _node_err(k, "Output", "reads a projection")  # pragma: no cover
        label = ref(p)
        if label not in outputs.values():
            out_lines.append(f"    output {label}")
        outputs[k] = label
    # ---------------------------------------------------------- text
    head = [(f"# Imported from NIR by spikedsl import-nir (convention: {convention}, "
             f"dt = {dt!r} s).")]
    for note in notes:
        head.append(f"# note: {note}")
    head.append("")
    net_lines = [f"network {name} {{", f"    dt    = {_fmt_time(dt)}", f"    steps = {steps}"]
    if weights_file:
        net_lines.append(f'    weights = "{weights_file}"')
    net_lines += layer_lines + out_lines + ["}"]
    text0 = "\n".join(head + def_text + net_lines) + "\n"
    # ---------------------------------------------------------- weights (names from the IR)
    weights: dict[str, np.ndarray] = {}
    text_check = text0 if not weights_file else "\n".join(
        head + def_text + [ln for ln in net_lines if not ln.lstrip().startswith("weights =")]) \
        + "\n"
    from spikedsl.frontend.program import loads

    try:
        prog = loads(text_check, file="<nir-import>")
    except SpecError as e:  # a bug in the importer: say so clearly
        raise _err("nir-invalid", reason="the generated spec does not load: "
                   + "; ".join(d_.message for d_ in e.diagnostics)) from None
    net = prog.network(name).ir
    for L, j, kind, arr in weights_plan:
        lay = net.layer(L)
        pn = lay.projections[j].param_name
        weights[f"{pn}.{kind}"] = np.asarray(arr, dtype=np.float64)
    for L, arrs in neuron_arrays.items():
        for p, a in arrs.items():
            weights[f"{L}.{p}"] = np.asarray(a, dtype=np.float64)
    return ImportResult(text=text0, weights=weights, notes=notes, outputs=outputs,
                        layers={k: v for k, v in lname.items() if k != v})


def _check_cycles(nodes: dict[str, Node], edges) -> None:
    """A cycle that avoids every neuron node cannot be executed."""
    adj: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        if nodes[a].type in NEURON_TYPES or nodes[b].type in NEURON_TYPES:
            continue
        adj[a].append(b)
    color: dict[str, int] = {}
    for start in nodes:
        if color.get(start):
            continue
        stack = [(start, iter(adj[start]))]
        path = [start]
        color[start] = 1
        while stack:
            x, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[x] = 2
                stack.pop()
                path.pop()
                continue
            c = color.get(nxt, 0)
            if c == 1:
                cyc = path[path.index(nxt):] + [nxt]
                raise _err("nir-cycle", cycle=" -> ".join(cyc))
            if c == 0:
                color[nxt] = 1
                stack.append((nxt, iter(adj[nxt])))
                path.append(nxt)


def _order(layer_nodes, deps, nodes, edges, gmeta) -> list[str]:
    """A topological order of the layer nodes where only inputs of neuron layers
    may point backwards (they become recurrent projections)."""
    prio: dict[str, tuple] = {}
    lo = _meta_str(gmeta, "layer_order")
    if lo:
        idx = {n: i for i, n in enumerate(lo.split(","))}
        for k in layer_nodes:
            prio[k] = (idx.get(k, len(idx)), k)
    else:
        # breadth-first distance from the inputs
        dist = {k: 0 for k in layer_nodes if nodes[k].type == "Input"}
        frontier = sorted(dist)
        adj: dict[str, list[str]] = {}
        for a, b in edges:
            adj.setdefault(a, []).append(b)
        d = 0
        seen = set(frontier)
        while frontier:
            d += 1
            nxt = []
            for x in frontier:
                for y in sorted(adj.get(x, ())):
                    if y not in seen:
                        seen.add(y)
                        dist[y] = d
                        nxt.append(y)
            frontier = nxt
        for k in layer_nodes:
            prio[k] = (dist.get(k, 10**9), _natural(k))
    pred: dict[str, list[tuple[str, bool]]] = {k: [] for k in layer_nodes}
    for a, b, soft in deps:
        if a in pred and b in pred:
            pred[b].append((a, soft))
    placed: list[str] = []
    done: set[str] = set()
    remaining = set(layer_nodes)
    while remaining:
        ready = [k for k in remaining if all(p in done for p, _ in pred[k])]
        if not ready:
            ready = [k for k in remaining if nodes[k].type in NEURON_TYPES and all(
                p in done for p, soft in pred[k] if not soft)]
        if not ready:
            raise _err("nir-cycle", cycle=" -> ".join(sorted(remaining)))
        k = min(ready, key=lambda x: prio[x])
        placed.append(k)
        done.add(k)
        remaining.discard(k)
    return placed


def _natural(s: str):
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def _proj_call(k: str, n: Node, src: str, in_shape, out_shape) -> tuple[str, list]:
    t = n.type
    nin = int(np.prod(in_shape))
    if t in ("Affine", "Linear"):
        w = n.f["weight"]
        if w.shape[1] != nin:
            raise _node_err(k, t, f"its weight has {w.shape[1]} inputs, its source has "
                            f"{nin} values ({list(in_shape)})")
        if int(np.prod(out_shape)) != w.shape[0]:
            raise _node_err(k, t, f"it has {w.shape[0]} outputs, its target {list(out_shape)}")
        arrs = [("weight", w)]
        if t == "Affine":
            b = np.asarray(n.f["bias"], dtype=np.float64).reshape(-1)
            if b.size == 1 and w.shape[0] != 1:
                b = np.full(w.shape[0], float(b[0]))
            if b.shape != (w.shape[0],):
                raise _node_err(k, t, f"its bias has shape {list(b.shape)}, expected "
                                f"[{w.shape[0]}]")
            arrs.append(("bias", b))
            return f"dense({src})", arrs
        return f"dense({src}, bias = false)", arrs
    if t == "Conv2d":
        w = n.f["weight"]
        out = _conv_out(n, tuple(in_shape))
        if tuple(out) != tuple(out_shape):
            raise _node_err(k, t, f"its output {list(out)} does not match its target "
                            f"{list(out_shape)}")
        b = n.f.get("bias")
        s = _pair(n.f["stride"], None, n, "stride")
        p = n.f["padding"]
        kk = w.shape[2:]
        if isinstance(p, str):
            p = (0, 0) if p == "valid" else ((kk[0] - 1) // 2, (kk[1] - 1) // 2)
        else:
            p = _pair(p, None, n, "padding")
        ktxt = str(kk[0]) if kk[0] == kk[1] else f"[{kk[0]}, {kk[1]}]"
        txt = f"conv2d({src}, channels = {w.shape[0]}, kernel = {ktxt}"
        if s != (1, 1):
            txt += f", stride = {s[0]}" if s[0] == s[1] else f", stride = [{s[0]}, {s[1]}]"
        if p != (0, 0):
            txt += f", padding = {p[0]}" if p[0] == p[1] else f", padding = [{p[0]}, {p[1]}]"
        arrs = [("weight", w)]
        if b is not None and np.any(np.asarray(b) != 0):
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if b.shape != (w.shape[0],):
                raise _node_err(k, t, f"its bias has shape {list(b.shape)}, expected "
                                f"[{w.shape[0]}]")
            arrs.append(("bias", b))
        else:
            txt += ", bias = false"
        return txt + ")", arrs
    # Scale
    sc = np.asarray(n.f["scale"], dtype=np.float64)
    if _uniform(sc):
        if int(np.prod(out_shape)) != nin:
            raise _node_err(k, t, f"its source {list(in_shape)} and target {list(out_shape)} "
                            "differ in size")
        return f"one_to_one({src}, weight = {_fmt(float(sc.reshape(-1)[0]))})", []
    if len(out_shape) != 1 or sc.size != nin:
        raise _node_err(k, t, "a non-uniform scale is supported on vectors only")
    return f"dense({src}, bias = false)", [("weight", np.diag(sc.reshape(-1)))]


def _semantics(n: Node, kind: str, P: dict, convention: str, dt: float, shp, notes):
    """Discretisation, spike comparison and initial states of one neuron node;
    adjusts ``P`` in place for the conventions."""
    disc = {"LIF": "euler", "LI": "euler", "IF": "euler", "I": "euler",
            "CubaLIF": "semi_implicit", "CubaLI": "semi_implicit", "Threshold": "none"}[kind]
    op = ">" if kind in ("LIF", "CubaLIF", "IF", "Threshold") else None
    init: dict[str, np.ndarray] = {}
    if convention == "spikedsl":
        d = _meta_str(n.meta, "discretization")
        if d in ("exact", "euler", "semi_implicit") and kind != "Threshold" and not (
                kind in ("IF", "I") and d != "euler"):
            disc = d
        if op is not None and _meta_str(n.meta, "spike_op") == ">=":
            thr = _meta_num(n.meta, "v_threshold")
            if thr is not None:
                try:
                    thr = np.broadcast_to(thr, shp).astype(np.float64)
                except ValueError:
                    thr = None
            if thr is not None and np.array_equal(np.nextafter(thr, -np.inf),
                                                  P["v_threshold"]):
                P["v_threshold"] = thr.copy()
                op = ">="
        for st, key in (("v", "v_init"), ("syn", "i_init")):
            a = _meta_num(n.meta, key)
            if a is not None:
                try:
                    init[st] = np.broadcast_to(a, shp).astype(np.float64).copy()
                except ValueError:
                    pass
        if "syn" in init and kind not in ("CubaLIF", "CubaLI"):
            del init["syn"]
    elif convention in TOOL_KINDS:
        disc, op = tool_semantics(n, kind, P, convention, dt, notes)
    elif convention == "norse":
        for p in TIME_PARAMS:
            if p in P:
                P[p] = P[p] / dt
        if kind in ("IF", "I"):
            P["r"] = P["r"] / dt
        if kind in ("CubaLIF", "CubaLI"):
            P["w_in"] = P["w_in"] * P["tau_syn"] / dt
        if kind in ("LIF", "LI", "CubaLIF", "CubaLI"):
            if np.any(P["v_leak"] != 0):
                init["v"] = P["v_leak"].copy()
        elif kind == "IF" and np.any(P["v_reset"] != 0):
            init["v"] = P["v_reset"].copy()
    else:
        for p in TIME_PARAMS:
            if p in P and np.any(P[p] < dt):
                notes.append(f"node '{n.name}': {p} ({float(P[p].min())!r} s) is below dt; "
                             "graphs written by Norse's to_nir store dt*tau: import them with "
                             "convention='norse'")
                break
    for p, a in P.items():
        if not np.all(np.isfinite(a)):
            raise _node_err(n.name, kind, f"'{p}' is not finite after conversion")
    return disc, op, init


def _neuron_text(dname: str, kind: str, disc: str, op: str | None, init_states: list[str],
                 per: set[str], surrogate: str | None) -> str:
    def param(p: str) -> str:
        opt = " [per_neuron]" if p in per else ""
        return f"    param {p} = {_fmt_param(kind, p, DEFAULTS[p])}{opt}"

    lines = [f"neuron {dname} {{"]
    for p in NEURON_PARAMS[kind]:
        lines.append(param(p))
    if kind == "Threshold":
        lines += ["    state v = 0", "    input I", "    update v = I",
                  "    spike v > threshold"]
        lines.append("}")
        return "\n".join(lines) + "\n"
    for st in init_states:
        lines.append(param(f"{st}_init"))
    two = kind in ("CubaLIF", "CubaLI")
    if two:
        lines.append(f"    state syn = {'syn_init' if 'syn' in init_states else '0'}")
    lines.append(f"    state v = {'v_init' if 'v' in init_states else '0'}")
    lines.append("    input I")
    if disc in TOOL_KINDS:
        lines += tool_lines(kind, disc)
    elif kind in ("LIF", "LI"):
        lines.append(f"    dv/dt = (v_leak - v + r * I) / tau   method {disc}")
    elif kind in ("IF", "I"):
        lines.append("    dv/dt = r * I   method euler")
    elif disc == "semi_implicit":
        lines.append("    update syn = syn + dt / tau_syn * (w_in * I - syn)")
        lines.append("    update v = v + dt / tau_mem * (v_leak - v + r * (syn + dt / tau_syn * "
                     "(w_in * I - syn)))")
    else:
        lines.append(f"    dsyn/dt = (w_in * I - syn) / tau_syn   method {disc}")
        lines.append(f"    dv/dt = (v_leak - v + r * syn) / tau_mem   method {disc}")
    if op is not None:
        lines.append(f"    spike v {op} v_threshold")
        subtract = disc in ("sinabs", "rockpool")  # their subtractive reset
        lines.append("    reset v -= v_threshold" if subtract else "    reset v = v_reset")
    if surrogate:
        lines.append(f"    surrogate {surrogate}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ entry points
def import_nir(path_or_graph, dt: float | None = None, *, name: str = "Imported",
               convention: str = "auto", steps: int | None = None,
               weights_file: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """NIR graph -> (``.spk`` text, weights dict).  ``dt`` in seconds: None takes the
    graph's own ``dt`` (spikedsl graphs), else 1e-4 (1e-3 with ``convention="norse"``).
    ``weights_file``: the name written into ``weights = "..."`` (relative to the spec)."""
    r = convert_nir(path_or_graph, dt, name=name, convention=convention, steps=steps,
                    weights_file=weights_file)
    return r.text, r.weights


def write_import(path_or_graph, out_spk: str, dt: float | None = None, **kw) -> ImportResult:
    """Write ``out_spk`` and the weights next to it (same stem, ``.npz``)."""
    stem = os.path.splitext(out_spk)[0]
    npz = stem + ".npz"
    r = convert_nir(path_or_graph, dt, weights_file=os.path.basename(npz), **kw)
    with atomic_path(npz, ".npz") as tmp:
        np.savez(tmp, **r.weights)
    write_text(out_spk, r.text)
    return r


def load_nir(path_or_graph, dt: float | None = None, *, name: str = "Imported",
             out_dir: str | None = None, **kw):
    """Import and load: writes ``<out_dir>/<name>.spk`` + ``.npz`` (a fresh temporary
    directory by default) and returns the loaded :class:`spikedsl.frontend.program.Program`."""
    import tempfile

    from spikedsl.frontend.program import load

    out_dir = out_dir or tempfile.mkdtemp(prefix="spikedsl_nir_")
    os.makedirs(out_dir, exist_ok=True)
    spk = os.path.join(out_dir, f"{name}.spk")
    write_import(path_or_graph, spk, dt, name=name, **kw)
    return load(spk)


__all__ = ["ImportResult", "convert_nir", "import_nir", "load_nir", "write_import"]
