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

import numpy as np

from spikedsl.atomic import atomic_path, write_text
from spikedsl.errors import SpecError
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.targets.nir.conventions import (
    TOOL_KINDS,
    rockpool_dt,
    tool_lines,
    tool_semantics,
)
from spikedsl.targets.nir.reader import (  # noqa: F401  (FIELDS, KNOWN: re-exported)
    _IDENT,
    CONVENTIONS,
    DEFAULTS,
    FIELDS,
    KNOWN,
    NEURON_PARAMS,
    NEURON_TYPES,
    PROJ_TYPES,
    RATE_PARAMS,
    STAGE_TYPES,
    TIME_PARAMS,
    Node,
    _conv_out,
    _err,
    _node_err,
    _pair,
    flatten_graph,
    infer_shapes,
    read_graph_dict,
)


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
        if d in ("exact", "euler", "semi_implicit", "exponential_euler") and \
                kind != "Threshold" and not (kind in ("IF", "I") and d != "euler") and not (
                d == "exponential_euler" and kind not in ("CubaLIF", "CubaLI")):
            disc = d
            if (kind in ("CubaLIF", "CubaLI") and d != "semi_implicit"
                    and _meta_str(n.meta, "input") == "dirac"):
                disc = f"{d}_dirac"
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
    elif disc.endswith("_dirac"):
        # a Dirac impulse of area I*dt per step: the current jumps by w_in*I*dt/tau_syn
        lines.append("    jump syn += w_in * dt / tau_syn * I")
        lines.append(f"    dsyn/dt = -syn / tau_syn   method {disc[:-6]}")
        lines.append(f"    dv/dt = (v_leak - v + r * syn) / tau_mem   method {disc[:-6]}")
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
