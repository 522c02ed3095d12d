"""NIR target: ``convert(net) -> nir.NIRGraph`` (docs/nir.md).

Neurons are matched symbolically on the lowered step (``targets.nir.match``) to NIR's
``LIF``, ``CubaLIF``, ``IF``, ``LI``, ``I`` and ``CubaLI`` with per-neuron
arrays and time constants in seconds; projections become ``Affine`` /
``Linear`` / ``Conv2d`` / ``Scale`` nodes, stages ``Flatten`` / ``SumPool2d``
/ ``AvgPool2d``, recurrent projections graph cycles.  What NIR cannot express
is refused with ``spikedsl.errors.unsupported`` naming the neuron, its line and
the reason (what no NIR graph holds, e.g. cells or plasticity, is refused by
the capabilities declared in ``spikedsl.targets``); ``allow_approx=True``
proceeds where a close graph exists and reports every change.  ``run`` runs a
network as NIR does (export, import, interpret); ``check`` is this target's
part of ``spikedsl.targets.refusal``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from spikedsl import ir
from spikedsl.errors import Loc, unsupported
from spikedsl.lowering import refractory
from spikedsl.lowering.weights import (
    init_weights,
    layer_params,
    load_weights,
    projection_weights,
    seconds_per_step,
    sparse_matrix,
)
from spikedsl.runtime.arrays import reduce_steps
from spikedsl.targets import require
from spikedsl.targets.nir.match import analyse, match_nir

TARGET = "NIR"
GENERATOR = "spikedsl"


class _Ctx:
    def __init__(self, net: ir.LNetwork, allow_approx: bool):
        self.net = net
        self.allow_approx = allow_approx
        self.notes: list[str] = []

    def loc(self, line: int) -> Loc | None:
        return Loc(self.net.file, line, 1) if line else None

    def refuse_or_note(self, what: str, reason: str, line: int, change: str) -> None:
        if not self.allow_approx:
            raise unsupported(TARGET, what, reason + " (allow_approx would " + change + ")",
                              self.loc(line))
        self.notes.append(f"{what}: {reason}; {change}")


def _surrogate_text(n: ir.LNeuron) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in sorted(n.surrogate.args.items()))
    return f"{n.surrogate.name}({args})"


def _approx_neuron(n: ir.LNeuron, ctx: _Ctx, layer: str) -> ir.LNeuron:
    """With allow_approx: drop what NIR cannot hold (refractory, subtractive reset)."""
    if not ctx.allow_approx:
        return n
    upd = {}
    if n.refractory > 0:
        ctx.notes.append(f"layer '{layer}' ({n.name}): refractory period dropped")
        upd.update(refractory=0.0, refractory_steps=0)
    if n.spiking and n.reset and any(a.op != "=" for a in n.reset):
        from spikedsl.ir.exprs import num

        tgt = n.reset[0].target
        ctx.notes.append(f"layer '{layer}' ({n.name}): subtractive reset replaced by "
                         f"'{tgt} = 0'")
        upd["reset"] = (ir.Assign(target=tgt, op="=", value=num(0.0)),)
    return n.model_copy(update=upd) if upd else n


def _reaches(adj: dict[str, set[str]], a: str, b: str) -> bool:
    seen, stack = set(), [a]
    while stack:
        x = stack.pop()
        if x == b:
            return True
        if x in seen:
            continue
        seen.add(x)
        stack.extend(adj.get(x, ()))
    return False


def export(net: ir.LNetwork, *, weights=None, allow_approx: bool = False,
           dt: float | None = None):
    """Like :func:`convert`, returning ``(graph, notes)``: notes list every
    approximation (only with ``allow_approx``) and other remarks."""
    import nir

    require("nir", net, allow_approx=allow_approx)
    net = refractory.as_declared(net)  # NIR neurons hold no period: dropped or refused
    ctx = _Ctx(net, allow_approx)
    dt_s = seconds_per_step(net, dt)
    if net.dt_unit is None and dt is None:
        ctx.notes.append(f"the network has no time unit: one step is taken as {dt_s} s")
    W = load_weights(net, weights)

    layers = {lay.name: lay for lay in net.layers}
    nodes: dict[str, object] = {}
    edges: list[tuple[str, str]] = []
    out_node: dict[str, str] = {}  # layer -> node whose output is the layer's output
    state_node: dict[str, str] = {}  # "layer.v" -> node (non-spiking neuron membranes)
    matched: dict[str, object] = {}
    taken = {lay.name for lay in net.layers}

    def fresh(base: str) -> str:
        name = base
        i = 1
        while name in taken or name in nodes:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    # dependency graph (for recurrent reads that are not cycles)
    adj: dict[str, set[str]] = {}
    for lay in net.layers:
        srcs = [p.source for p in lay.projections] + ([lay.source] if lay.source else [])
        for s in srcs:
            adj.setdefault(s, set()).add(lay.name)

    # ---- pass 1: nodes for inputs, neurons, stages
    for lay in net.layers:
        name = lay.name
        if lay.kind == "input":
            meta = {"encoder": lay.encoder or "direct"}
            for k, v in sorted(lay.encoder_args.items()):
                meta[f"encoder_{k}"] = float(v)
            nodes[name] = nir.Input(input_type=np.array(lay.shape), metadata=meta)
            out_node[name] = name
        elif lay.kind == "neuron":
            n = _approx_neuron(lay.neuron, ctx, name)
            params = layer_params(lay, W)
            an = analyse(lay.model_copy(update={"neuron": n}), params, n.dt,
                         TARGET, net.file)
            m = match_nir(an, dt_s)
            ctx.notes.extend(m.notes)
            matched[name] = m
            meta = {"neuron": n.name, "discretization": m.discretization,
                    "surrogate": _surrogate_text(n)}
            if m.dirac:
                meta["input"] = "dirac"
            if m.spike_op is not None:
                meta["spike_op"] = m.spike_op
                if m.spike_op == ">=":
                    meta["v_threshold"] = np.broadcast_to(m.threshold, lay.shape).copy()
            for k, v in m.init.items():
                if np.any(v != 0):
                    meta[f"{k}_init"] = v.copy()
            P = m.params
            if m.kind == "LIF":
                node = nir.LIF(tau=P["tau"], r=P["r"], v_leak=P["v_leak"],
                               v_threshold=P["v_threshold"], v_reset=P["v_reset"], metadata=meta)
            elif m.kind == "LI":
                node = nir.LI(tau=P["tau"], r=P["r"], v_leak=P["v_leak"], metadata=meta)
            elif m.kind == "IF":
                node = nir.IF(r=P["r"], v_threshold=P["v_threshold"], v_reset=P["v_reset"],
                              metadata=meta)
            elif m.kind == "I":
                node = nir.I(r=P["r"], metadata=meta)
            elif m.kind == "CubaLIF":
                node = nir.CubaLIF(tau_syn=P["tau_syn"], tau_mem=P["tau_mem"], r=P["r"],
                                   v_leak=P["v_leak"], v_threshold=P["v_threshold"],
                                   v_reset=P["v_reset"], w_in=P["w_in"], metadata=meta)
            else:
                node = nir.CubaLI(tau_syn=P["tau_syn"], tau_mem=P["tau_mem"], r=P["r"],
                                  v_leak=P["v_leak"], w_in=P["w_in"], metadata=meta)
            nodes[name] = node
            spiking = m.spike_op is not None
            if spiking:
                out_node[name] = name
            else:
                state_node[f"{name}.{m.v}"] = name
                state_node[f"{name}.{m.v}_pre"] = name
        elif lay.kind == "stage":
            op = lay.op
            if op == "dropout":
                continue  # identity at inference: resolved in pass 2
            if op == "flatten":
                nodes[name] = nir.Flatten(input_type={"input": np.array(
                    layers[lay.source].shape)}, start_dim=0, end_dim=-1)
            else:  # avgpool2d, sumpool2d (the registry refuses the other stages)
                cls = nir.AvgPool2d if op == "avgpool2d" else nir.SumPool2d
                nodes[name] = cls(kernel_size=np.array(lay.args["kernel"]),
                                  stride=np.array(lay.args["stride"]), padding=np.array([0, 0]))
            out_node[name] = name
        elif lay.kind == "projection":  # without a function (the registry refuses those)
            out_node[name] = name  # node made in pass 2

    # ---- pass 2: sources, projections and edges
    needs_w = any(p.kind in ("dense", "conv2d") for lay in net.layers for p in lay.projections)
    if needs_w and not any(k.endswith(".weight") for k in W):
        W = {**init_weights(net), **W}
        ctx.notes.append("no weights given: exported the initialisation of seed 0")
    flat_of: dict[str, str] = {}

    def source_node(src: str, st: str | None, line: int, what: str) -> str:
        lay = layers[src]
        if lay.kind == "stage" and lay.op == "dropout":
            return source_node(lay.source, lay.source_state, line, what)
        if st is None:
            if lay.kind == "neuron" and src not in out_node:
                raise unsupported(TARGET, what, f"it reads the spikes of the non-spiking "
                                  f"layer '{src}' (always 0); read its membrane instead",
                                  ctx.loc(line))
            return out_node[src]
        key = f"{src}.{st}"
        if key in state_node:
            return state_node[key]
        raise unsupported(TARGET, what, f"it reads the state '{key}'; NIR neurons output "
                          "spikes only (a membrane can be read from a non-spiking LI/I/CubaLI "
                          "layer)", ctx.loc(line))

    def flat(src_node: str, shape: tuple[int, ...]) -> str:
        if len(shape) <= 1:
            return src_node
        if src_node not in flat_of:
            f = fresh(f"{src_node}_flat")
            nodes[f] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                   end_dim=-1)
            edges.append((src_node, f))
            flat_of[src_node] = f
        return flat_of[src_node]

    def proj_node(p: ir.LProjection, node_name: str, what: str) -> str:
        """Create the node of projection ``p``; returns the node name."""
        line = p.source_line
        if p.delay > (1 if p.recurrent else 0):  # only with allow_approx (the registry)
            ctx.notes.append(f"{what}: delay of {p.delay} steps: NIR graphs have no step "
                             "delays; drop the delay")
        src = source_node(p.source, p.source_state, line, what)
        if p.kind == "dense":
            if len(p.out_shape) > 1:
                raise unsupported(TARGET, what, "a dense projection into a multi-dimensional "
                                  "layer needs a reshape, which NIR lacks", ctx.loc(line))
            w, b = projection_weights(p, W)
            src = flat(src, tuple(p.in_shape))
            node = nir.Affine(weight=w, bias=b) if b is not None else nir.Linear(weight=w)
        elif p.kind == "conv2d":
            w, b = projection_weights(p, W)
            node = nir.Conv2d(input_shape=tuple(p.in_shape[1:]), weight=w,
                              stride=tuple(p.stride), padding=tuple(p.padding),
                              dilation=(1, 1), groups=1,
                              bias=b if b is not None else np.zeros(w.shape[0]))
        elif p.kind == "one_to_one":
            wt = 1.0 if p.weight is None else float(p.weight)
            if f"{p.param_name}.weight" in W:  # the torch target keeps it as a buffer
                wt = float(np.asarray(W[f"{p.param_name}.weight"]).reshape(-1)[0])
            if p.sign == "excitatory":
                wt = abs(wt)
            elif p.sign == "inhibitory":
                wt = -abs(wt)
            if tuple(p.in_shape) != tuple(p.out_shape):
                raise unsupported(TARGET, what, "a one_to_one projection between different "
                                  "shapes needs a reshape, which NIR lacks", ctx.loc(line))
            node = nir.Scale(scale=np.full(tuple(p.out_shape), wt))
        else:  # sparse: the fixed masked matrix
            w = sparse_matrix(p)
            if f"{p.param_name}.weight" in W:  # the torch target keeps it as a buffer
                w = np.asarray(W[f"{p.param_name}.weight"], dtype=np.float64).reshape(w.shape)
            if p.sign == "excitatory":
                w = np.abs(w)
            elif p.sign == "inhibitory":
                w = -np.abs(w)
            src = flat(src, tuple(p.in_shape))
            node = nir.Linear(weight=w)
        nodes[node_name] = node
        edges.append((src, node_name))
        return node_name

    for lay in net.layers:
        name = lay.name
        if lay.kind == "neuron":
            for p in lay.projections:
                what = f"projection {p.param_name} ({p.kind} from '{p.source}' into '{name}')"
                if p.recurrent and not (p.source == name or _reaches(adj, name, p.source)):
                    ctx.refuse_or_note(
                        what, f"'{name}' reads the later layer '{p.source}' from the previous "
                        "step, but they form no cycle, so NIR consumers would read it in the "
                        "same step", p.source_line, "read it in the same step")
                nn = fresh("w_" + p.param_name.replace(".", "_"))
                proj_node(p, nn, what)
                edges.append((nn, name))
        elif lay.kind == "stage" and lay.op != "dropout":
            src = source_node(lay.source, lay.source_state, lay.source_line,
                              f"layer '{name}' ({lay.op})")
            edges.append((src, name))
        elif lay.kind == "projection":
            p = lay.projections[0]
            proj_node(p, name, f"layer '{name}' ({p.kind})")

    # ---- outputs
    for o in net.outputs:
        lay = layers[o.layer]
        what = f"output '{o.name}'"
        if o.reduce != "none":
            ctx.refuse_or_note(what, f"NIR graphs have no reduction over time ('{o.reduce}')",
                               net.source_line, "export the whole trace")
        try:
            src = source_node(o.layer, (o.state + ("_pre" if o.pre_reset else "")) if o.state
                              else None, net.source_line, what)
        except Exception:
            if not ctx.allow_approx:
                raise
            ctx.notes.append(f"{what}: dropped (NIR neurons output spikes only)")
            continue
        base = o.name
        for ch in "().":
            base = base.replace(ch, "_")
        oname = fresh("out_" + base.strip("_"))
        nodes[oname] = nir.Output(output_type=np.array(lay.shape))
        edges.append((src, oname))
    if not any(isinstance(v, nir.Output) for v in nodes.values()):
        raise unsupported(TARGET, f"network '{net.name}'", "no output can be expressed",
                          ctx.loc(net.source_line))

    meta = {"generator": GENERATOR, "network": net.name, "dt": float(dt_s),
            "steps": int(net.steps),
            "layer_order": ",".join(lay.name for lay in net.layers)}
    if ctx.notes:
        meta["notes"] = "\n".join(ctx.notes)
    edges = list(dict.fromkeys(edges))
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except Exception as e:
        raise unsupported(TARGET, f"network '{net.name}'", f"the NIR type check failed: {e}",
                          ctx.loc(net.source_line)) from None
    return graph, ctx.notes


def convert(net: ir.LNetwork, *, weights=None, allow_approx: bool = False,
            dt: float | None = None, quiet: bool = False):
    """``net`` -> ``nir.NIRGraph``.

    ``weights``: dict, ``.npz`` path, torch checkpoint path, or None (the
    network's ``weights`` file, else the torch target's initialisation).
    ``dt``: seconds per step for unitless networks (default 1e-4, as snnTorch).
    With ``allow_approx`` the approximations made are printed to stderr (unless
    ``quiet``) and stored in ``graph.metadata["notes"]``.
    """
    graph, notes = export(net, weights=weights, allow_approx=allow_approx, dt=dt)
    if allow_approx and notes and not quiet:
        for n_ in notes:
            print(f"spikedsl nir: note: {n_}", file=sys.stderr)
    return graph


def check(net: ir.LNetwork, *, weights=None, allow_approx: bool = False,
          dt: float | None = None, forward_only: bool = False, **_options) -> None:
    """The NIR part of ``spikedsl.targets.refusal``: export in memory (raises
    ``Unsupported``); with ``forward_only``, the network :func:`run` exports.
    Without weights the projections are zeros: what NIR can express does not
    depend on them."""
    if forward_only:
        net = _run_net(net)
    if weights is None and net.weights is None:
        weights = {}
        for lay in net.layers:
            for p in lay.projections:
                if p.kind == "dense":
                    shape = (int(np.prod(p.out_shape)), int(np.prod(p.in_shape)))
                elif p.kind == "conv2d":
                    shape = (p.channels, p.in_shape[0], *p.kernel)
                else:
                    continue
                weights[f"{p.param_name}.weight"] = np.zeros(shape)
                if p.bias:
                    weights[f"{p.param_name}.bias"] = np.zeros(shape[0])
    export(net, weights=weights, allow_approx=allow_approx, dt=dt)


def _trace_key(o: ir.LOutput) -> str:
    if o.state is None:
        return o.layer
    return f"{o.layer}.{o.state}{'_pre' if o.pre_reset else ''}"


def run(net: ir.LNetwork, inputs, *, weights=None, dtype=np.float64, record=None,
        **_options) -> dict[str, np.ndarray]:
    """Run ``net`` as NIR runs it: export, import the graph back
    (``spikedsl.targets.nir.importer``), run the imported network on the
    reference interpreter.  NIR graphs output spikes only: state traces are
    read from the imported network's layers of the same name, and left out
    where the import renamed them (``Capabilities.partial_traces``)."""
    from spikedsl.frontend.program import loads
    from spikedsl.runtime import reference as ref
    from spikedsl.targets.nir.importer import convert_nir

    graph = convert(_run_net(net), weights=weights)
    res = convert_nir(graph, steps=net.steps)
    net2 = loads(res.text, file="<nir round trip>").network().ir

    def key2(key: str) -> str:  # the name of a trace in the imported network
        layer, dot, rest = key.partition(".")
        return res.layers.get(layer, layer) + dot + rest

    keys = {o.name: key2(_trace_key(o)) for o in net.outputs}
    have = set()
    for lay in net2.layers:
        have.add(lay.name)
        have |= {f"{lay.name}.{s}" for s in lay.states}
        have |= {f"{lay.name}.{s}_pre" for s in lay.states}
    wanted = {k: key2(k) for k in record or ()}
    rec = sorted({k for k in keys.values() if k in have} | {k for k in wanted.values() if k in have})
    data = inputs if isinstance(inputs, Mapping) else {net.inputs[0].name: inputs}
    data = {res.layers.get(k, k): v for k, v in data.items()}
    out2 = ref.run(net2, data, weights=res.weights, dtype=dtype, record=rec)
    result = {}
    for o in net.outputs:
        k = keys[o.name]
        if k in out2:
            result[o.name] = reduce_steps(out2[k], o.reduce)
    for k, k2 in wanted.items():
        if k2 in out2:
            result[k] = out2[k2]
    return result


def _run_net(net: ir.LNetwork) -> ir.LNetwork:
    """``net`` with the outputs :func:`run` exports: the spikes of every layer
    an output reads, the membrane of a non-spiking layer."""
    outs: list[ir.LOutput] = []
    seen: set[str] = set()
    for o in net.outputs:
        lay = net.layer(o.layer)
        spiking = lay.kind == "neuron" and lay.neuron is not None and lay.neuron.spiking
        if o.layer in seen:
            continue
        if o.state is None:
            outs.append(ir.LOutput(name=o.layer, layer=o.layer, shape=lay.shape))
        elif lay.kind == "neuron" and not spiking and not o.pre_reset:
            # a non-spiking layer (LI, I) outputs its membrane in NIR
            outs.append(ir.LOutput(name=o.name, layer=o.layer, state=o.state, shape=lay.shape))
        else:
            continue
        seen.add(o.layer)
    if not outs:
        raise unsupported(TARGET, f"network '{net.name}'", "NIR graphs output spikes (or a "
                          "non-spiking membrane) only, and this run reads neither",
                          Loc(net.file, net.source_line, 1) if net.source_line else None)
    return net.model_copy(update={"outputs": tuple(outs)})


def write(net: ir.LNetwork, path, **kw) -> list[str]:
    """Convert and write an HDF5 file; returns the notes."""
    import nir

    graph, notes = export(net, **kw)
    nir.write(path, graph)
    return notes


__all__ = ["check", "convert", "export", "run", "write"]
