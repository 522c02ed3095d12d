"""Reading a NIR graph for the importer (``targets.nir.importer``): the HDF5 file
(or a ``nir.NIRGraph``) as a plain dict, every node and edge validated, sub-graphs
inlined, shapes inferred.  Every problem raises ``SpecError`` with a code from
``spikedsl.errors.CATALOGUE``; no other exception escapes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikedsl.errors import SpecError, diag
from spikedsl.targets.nir.conventions import TOOL_KINDS

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
