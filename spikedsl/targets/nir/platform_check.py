"""Does a network fit a neuromorphic chip?  Checks on the lowered network
against the limits of :mod:`spikedsl.targets.nir.platforms`, a resource report,
and weight quantisation to the chip's bit width.

    from spikedsl.targets.nir.platform_check import check_platform, quantize_weights
    report = check_platform(net, "xylo", weights=None)
    print(report.render())            # resources, then every violated limit
    report.raise_if_errors()          # SpecError with file:line:col of each layer
    wq, info = quantize_weights(net, weights, bits=8)

Every error names the platform, the layer, the limit and its source; all of
them are collected (none stops the others).  docs/platforms.md describes the
checks and cites the sources.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl.errors import Diagnostic, Loc, SpecError, diag
from spikedsl.lowering import refractory
from spikedsl.lowering.weights import (
    init_weights,
    layer_params,
    load_weights,
    seconds_per_step,
    sparse_matrix,
)
from spikedsl.targets.nir.platforms import PLATFORMS, SOURCES, Platform, platform

__all__ = ["LayerUse", "PlatformReport", "check_platform", "quantize_weights"]

_STAGE_NODE = {"flatten": "Flatten", "avgpool2d": "AvgPool2d", "sumpool2d": "SumPool2d"}


@dataclass
class LayerUse:
    layer: str
    kind: str  # NIR node kind(s) of the layer
    neurons: int = 0
    fan_in: int = 0
    synapses: int = 0  # stored weights
    connections: int = 0  # pre-post pairs
    cores: int = 0
    weight_bits: int = 0
    state_bits: int = 0
    note: str = ""


@dataclass
class PlatformReport:
    platform: Platform
    network: str
    layers: list[LayerUse]
    diagnostics: list[Diagnostic]
    notes: list[str] = field(default_factory=list)
    quantization: dict[str, dict] = field(default_factory=dict)
    sources: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def total(self, key: str) -> int:
        return sum(getattr(r, key) for r in self.layers)

    def raise_if_errors(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics, self.sources)

    def render(self, errors: bool = True) -> str:
        p = self.platform
        out = [f"platform {p.name}: {p.title} - network {self.network}"]
        rows = [("layer", "NIR", "neurons", "fan-in", "synapses", "cores", "weight bits",
                 "state bits")]
        for r in self.layers:
            rows.append((r.layer, r.kind, str(r.neurons), str(r.fan_in) if r.fan_in else "-",
                         str(r.synapses), str(r.cores) if r.cores else "-",
                         str(r.weight_bits), str(r.state_bits)))
        rows.append(("total", "", str(self.total("neurons")), "", str(self.total("synapses")),
                     "-" if p.cores == 1 else str(self.total("cores")),
                     str(self.total("weight_bits")),
                     str(self.total("state_bits"))))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for i, r in enumerate(rows):
            out.append("  " + "  ".join(c.ljust(w[k]) if k < 2 else c.rjust(w[k])
                                        for k, c in enumerate(r)).rstrip())
            if i == 0 or i == len(rows) - 2:
                out.append("  " + "  ".join("-" * x for x in w))
        lim = []
        if p.cores == 1:
            lim.append("one SNN core")
        elif p.cores:
            lim.append(f"cores {self.total('cores')}/{p.cores}")
        if p.max_hidden is not None:
            lim.append(f"hidden neurons max {p.max_hidden}")
        if p.max_inputs is not None:
            lim.append(f"inputs max {p.max_inputs}")
        if p.max_outputs is not None:
            lim.append(f"outputs max {p.max_outputs}")
        if p.neurons_per_core:
            lim.append(f"{p.neurons_per_core} neurons/core")
        lim.append(f"weights {p.weight_bits}-bit (|w| <= {p.weight_max} quanta)")
        lim.append(f"state {p.state_bits}-bit")
        out.append("  limits: " + ", ".join(lim))
        for k, q in self.quantization.items():
            out.append(f"  quantized {k}: scale {q['scale']:.4g} per quantum, "
                       f"{q['levels']} levels used, max |error| {q['max_abs_error']:.3g} "
                       f"({100 * q['rel_rms_error']:.2f} % rms)")
        for n in self.notes:
            out.append(f"  note: {n}")
        if errors:
            if self.diagnostics:
                out.append(f"  {len(self.diagnostics)} error(s):")
                out += ["    " + line for d in self.diagnostics
                        for line in d.render(self.sources).splitlines()]
            else:
                out.append(f"  fits {p.name}: no limit exceeded")
        return "\n".join(out)


# ------------------------------------------------------------------ locations
class _Locs:
    """file:line:col of layers: the column of the ``layer`` / ``input`` keyword."""

    def __init__(self, net: ir.LNetwork, sources: dict[str, str] | None):
        self.file = net.file
        text = (sources or {}).get(net.file)
        if text is None:
            try:
                with open(net.file, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError:
                text = ""
        self.lines = text.splitlines()
        self.net_line = net.source_line

    def layer(self, name: str, line: int) -> Loc:
        pat = re.compile(rf"\b(layer|input)\s+{re.escape(name)}\b")
        order = ([line] if line else []) + list(range(max(self.net_line, 1),
                                                       len(self.lines) + 1))
        for ln in order:
            if 1 <= ln <= len(self.lines):
                m = pat.search(self.lines[ln - 1])
                if m:
                    return Loc(self.file, ln, m.start() + 1, ln, m.end() + 1)
        return Loc(self.file, line or self.net_line or 1, 1)

    def network(self) -> Loc:
        return Loc(self.file, self.net_line or 1, 1)


# ------------------------------------------------------------------ the check
class _Checker:
    def __init__(self, net: ir.LNetwork, p: Platform, W: dict, dt: float | None,
                 sources: dict[str, str] | None):
        self.net, self.p, self.W = net, p, W
        self.locs = _Locs(net, sources)
        self.diags: list[Diagnostic] = []
        self.notes: list[str] = []
        self.dt_s = seconds_per_step(net, dt)
        self.layers = {la.name: la for la in net.layers}
        self.outputs = {o.layer for o in net.outputs}

    def src(self, limit: str) -> str:
        return self.p.sources.get(limit, "")

    def loc(self, lay: ir.LLayer) -> Loc:
        return self.locs.layer(lay.name, lay.source_line)

    def limit(self, lay, what, value, lim, key, hint=""):
        self.diags.append(diag("platform-limit", self.loc(lay) if lay is not None
                               else self.locs.network(), platform=self.p.name,
                               layer=lay.name if lay is not None else self.net.name,
                               what=what, value=value, limit=lim, source=self.src(key),
                               hint=hint))

    def refuse(self, lay, what, reason, key, hint=""):
        self.diags.append(diag("platform-unsupported", self.loc(lay), platform=self.p.name,
                               layer=lay.name, what=what, reason=reason, source=self.src(key),
                               hint=hint))

    # -------------------------------------------------------------- neurons
    def neuron_kind(self, lay: ir.LLayer):
        from spikedsl.targets.nir.match import analyse, match_nir

        n = lay.neuron
        try:
            an = analyse(lay, layer_params(lay, self.W), float(n.dt), "NIR",
                         self.net.file)
            return an, match_nir(an, self.dt_s)
        except SpecError as e:
            reason = "; ".join(d.message for d in e.diagnostics)
            self.refuse(lay, f"neuron '{n.name}'", f"it cannot be exported to NIR ({reason})",
                        "nodes")
            return None, None


def _prod(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _sources_through_stages(net: ir.LNetwork) -> dict[str, list[str]]:
    """layer -> the neuron / input layers it reads, looking through stateless stages."""
    lays = {la.name: la for la in net.layers}

    def roots(name: str) -> list[str]:
        la = lays[name]
        if la.kind in ("neuron", "input", "cell", "projection"):
            return [name]
        return roots(la.source) if la.source else []

    out = {}
    for la in net.layers:
        srcs = [p.source for p in la.projections]
        if la.kind == "stage" and la.source:
            srcs = [la.source]
        out[la.name] = [r for s in srcs for r in roots(s)]
    return out


def check_platform(net: ir.LNetwork, name: str | Platform, *, weights=None,
                   dt: float | None = None, quantize: int | bool | None = None,
                   sources: dict[str, str] | None = None) -> PlatformReport:
    """Check ``net`` against platform ``name``; returns the report (errors in
    ``report.diagnostics``).  ``weights`` as for the NIR export (none: the
    network's file, else the seeded initialisation).  ``quantize``:
    True for the chip's weight width, or a number of bits; the report then
    lists each projection's scale and error."""
    p = name if isinstance(name, Platform) else platform(name)
    net = refractory.as_declared(net)
    W = load_weights(net, weights)
    if any(pr.kind in ("dense", "conv2d") for la in net.layers for pr in la.projections) \
            and not any(k.endswith(".weight") for k in W):
        W = {**init_weights(net), **W}
        note = "no weights given: checked the seeded initialisation (seed 0)"
    else:
        note = None
    c = _Checker(net, p, W, dt, sources)
    if note:
        c.notes.append(note)
    rows = _check(c)
    rep = PlatformReport(p, net.name, rows, c.diags, c.notes + [
        n for n in p.notes], sources=sources)
    if quantize:
        bits = p.weight_bits if quantize is True else int(quantize)
        _, rep.quantization = quantize_weights(net, W, bits=bits,
                                               weight_max=p.weight_max if quantize is True
                                               else None)
    return rep


def _check(c: _Checker) -> list[LayerUse]:
    net, p = c.net, c.p
    rows: list[LayerUse] = []
    reads = _sources_through_stages(net)
    consumers: dict[str, set[str]] = {}
    for la in net.layers:
        if la.kind == "neuron":
            for s in reads[la.name]:
                consumers.setdefault(s, set()).add(la.name)
    n_in = sum(_prod(la.shape) for la in net.inputs)
    if p.max_inputs is not None and n_in > p.max_inputs:
        first = net.inputs[0]
        c.limit(first, "input channels", n_in, p.max_inputs, "max_inputs",
                "reduce the input (e.g. pool or select channels) before the chip")
    hidden_total = 0
    cores_total = 0
    synapses_total = 0
    speck_layers: list[tuple[ir.LLayer, int, int, int]] = []  # layer, kernel, neuron, bias
    fan_out: dict[str, int] = {}
    recurrent_weights = 0
    for la in net.layers:
        if la.kind == "input":
            if p.inputs_through_weights:
                for other in net.layers:
                    if other.kind == "stage" and other.source == la.name:
                        c.refuse(other, "a stage reading the input",
                                 "the network input must go first through weights",
                                 "inputs_through_weights")
            rows.append(LayerUse(la.name, "Input", neurons=_prod(la.shape)))
            continue
        if la.kind == "cell":
            c.refuse(la, f"cell '{la.op}'", "NIR has no LSTM cells", "nodes")
            rows.append(LayerUse(la.name, la.op or "cell", neurons=_prod(la.shape)))
            continue
        if la.kind == "stage":
            node = _STAGE_NODE.get(la.op or "")
            if la.op == "dropout":
                rows.append(LayerUse(la.name, "-", note="identity at inference"))
                continue
            if node is None:
                c.refuse(la, f"stage '{la.op}'", "NIR has no node for it", "nodes")
            elif node not in p.nodes:
                c.refuse(la, f"stage '{la.op}' (NIR {node})",
                         f"the {p.name} toolchain does not import NIR {node}", "nodes",
                         "sumpool2d is imported where avgpool2d is not"
                         if node == "AvgPool2d" and "SumPool2d" in p.nodes else "")
            elif node in ("SumPool2d", "AvgPool2d") and p.pool_kernels:
                k = la.args.get("kernel")
                ks = tuple(k) if isinstance(k, tuple | list) else (k, k)
                if any(int(x) not in p.pool_kernels for x in ks):
                    c.limit(la, "pooling kernel", "x".join(map(str, ks)),
                            "/".join(map(str, p.pool_kernels)), "pool_kernels")
            if la.name in c.outputs and p.outputs_from_neurons:
                c.refuse(la, "an output from a stage", "network outputs must come directly "
                         "from neurons", "outputs_from_neurons")
            rows.append(LayerUse(la.name, node or la.op or "stage"))
            continue
        # neuron layers and stateless projections
        use = LayerUse(la.name, "")
        kinds: list[str] = []
        n = _prod(la.shape)
        an = m = None
        if la.kind == "neuron":
            an, m = c.neuron_kind(la)
            use.neurons = n
            nstates = len(la.neuron.states)
            use.state_bits = n * nstates * p.state_bits
            if m is not None:
                kinds.append(m.kind)
                if m.kind not in p.neuron_kinds:
                    why = ("its cores have integrate-and-fire neurons without a membrane leak"
                           if not p.leak and m.kind in ("LIF", "CubaLIF", "LI", "CubaLI")
                           else f"the toolchain imports {', '.join(sorted(p.neuron_kinds))}")
                    c.refuse(la, f"neuron '{la.neuron.name}' (NIR {m.kind})", why,
                             "leak" if not p.leak else "neuron_kinds")
                _xylo_dash(c, la, m)
            if la.name in c.outputs:  # the output neurons are counted below
                if not p.recurrent_outputs and any(pr.recurrent for pr in la.projections):
                    c.refuse(la, "a recurrent output layer", "output neurons may not be "
                             "recurrent", "recurrent_outputs")
            else:
                hidden_total += n
        elif la.kind == "projection":
            if la.func:
                c.refuse(la, f"elementwise '{la.func}'", "NIR has no elementwise node", "nodes")
            if la.name in c.outputs and p.outputs_from_neurons:
                c.refuse(la, "an output from a stateless projection", "network outputs must "
                         "come directly from neurons", "outputs_from_neurons")
        kernel_mem = 0
        fan_in = 0
        for pr in la.projections:
            node, syn, fi, conn = _projection_use(pr, c)
            kinds.append(node)
            use.synapses += syn
            use.connections += conn
            fan_in += fi
            kernel_mem += _speck_kernel_memory(pr)
            need = [node] + (["Flatten"] if pr.kind in ("dense", "sparse")
                             and len(pr.in_shape) > 1 else [])
            for nd in need:
                if nd not in p.nodes:
                    c.refuse(la, f"projection {pr.kind}({pr.source}) (NIR {nd})",
                             f"the {p.name} toolchain does not import NIR {nd}", "nodes",
                             "use dense(...) with a bias, or dense(..., bias = true)"
                             if nd == "Linear" and "Affine" in p.nodes else "")
            if pr.recurrent and not p.recurrent:
                c.refuse(la, f"recurrent projection from '{pr.source}'",
                         "the chip runs feed-forward graphs", "recurrent")
            if pr.recurrent:
                recurrent_weights += syn
            extra = pr.delay - (1 if pr.recurrent else 0)
            if extra > 0:
                if not p.delays:
                    c.refuse(la, f"delay = {pr.delay} on {pr.kind}({pr.source})",
                             "the chip has no synaptic delays", "delays")
                elif p.max_delay is not None and pr.delay > p.max_delay:
                    c.limit(la, f"delay of {pr.kind}({pr.source}) in steps", pr.delay,
                            p.max_delay, "max_delay")
            fo = _fan_out(pr)
            fan_out[pr.source] = fan_out.get(pr.source, 0) + fo
            if p.speck_cores:
                _speck_conv(c, la, pr)
        use.fan_in = fan_in
        if an is not None and m is not None and not p.state_float:
            _threshold_range(c, la, an)
        use.kind = "+".join(dict.fromkeys(kinds)) or la.kind
        use.weight_bits = use.synapses * p.weight_bits
        synapses_total += use.synapses
        if la.kind == "neuron":
            if p.speck_cores:
                use.cores = 1
                bias = la.shape[0] if any(pr.bias for pr in la.projections) else 0
                speck_layers.append((la, kernel_mem, _speck_neuron_memory(la), bias))
                dest = consumers.get(la.name, set())
                if p.max_destinations is not None and len(dest) > p.max_destinations:
                    c.limit(la, "destination layers", len(dest), p.max_destinations,
                            "max_destinations")
            elif p.neurons_per_core:
                use.cores = math.ceil(n / p.neurons_per_core)
            elif p.cores == 1:
                use.cores = 0
            before = cores_total
            cores_total += use.cores
            if p.cores and p.cores > 1 and not p.speck_cores and before <= p.cores < cores_total:
                c.limit(la, "cores in use up to this layer", cores_total, p.cores, "cores")
        rows.append(use)
    # ---- totals
    n_out = sum(_prod(c.layers[o].shape) for o in dict.fromkeys(c.outputs)
                if c.layers[o].kind == "neuron")
    if p.max_outputs is not None and n_out > p.max_outputs:
        last = c.layers[next(iter(c.outputs))]
        c.limit(last, "output neurons", n_out, p.max_outputs, "max_outputs")
    if p.max_hidden is not None and hidden_total > p.max_hidden:
        biggest = max((la for la in net.layers if la.kind == "neuron"
                       and la.name not in c.outputs), key=lambda la: _prod(la.shape))
        c.limit(biggest, "hidden neurons in the network", hidden_total, p.max_hidden,
                "max_hidden")
    if p.synapses_per_chip is not None and synapses_total > p.synapses_per_chip:
        c.limit(None, "synapses", synapses_total, p.synapses_per_chip, "synapses_per_chip")
    if p.max_fan_out is not None:
        for src, fo in fan_out.items():
            if src in c.layers and c.layers[src].kind == "neuron" and fo > p.max_fan_out:
                c.limit(c.layers[src], "fan-out per neuron", fo, p.max_fan_out, "max_fan_out")
    if p.max_recurrent_weights is not None and recurrent_weights > p.max_recurrent_weights:
        c.limit(None, "recurrent weights", recurrent_weights, p.max_recurrent_weights,
                "max_recurrent_weights")
    if p.input_targets is not None:
        fed = [la for la in net.layers if la.kind == "neuron" and la.name not in c.outputs
               and any(s in {i.name for i in net.inputs} for s in reads[la.name])]
        k = sum(_prod(la.shape) for la in fed)
        if k > p.input_targets:
            c.limit(fed[0], "hidden neurons reached by the input", k, p.input_targets,
                    "input_targets")
    if p.output_sources is not None:
        srcs = {s for o in c.outputs for s in reads.get(o, [])
                if s in c.layers and c.layers[s].kind == "neuron" and s not in c.outputs}
        k = sum(_prod(c.layers[s].shape) for s in srcs)
        if k > p.output_sources:
            c.limit(c.layers[sorted(srcs)[0]], "hidden neurons feeding the outputs", k,
                    p.output_sources, "output_sources")
    if p.speck_cores:
        _speck_assign(c, speck_layers)
    if p.extra_delay_per_projection:
        depth = _depth(net)
        c.notes.append(f"on {p.name} the outputs arrive {depth} step(s) later than in "
                       f"spikedsl ({p.extra_delay_per_projection} per projection on the "
                       "longest path)")
    return rows


def _threshold_range(c: _Checker, la: ir.LLayer, an) -> None:
    """The threshold in units of one weight quantum's effect on the membrane
    must fit the chip's signed state (the weights are scaled to the integer
    range and the threshold with them, as rockpool's global_quantize does)."""
    p = c.p
    if an.v is None or an.threshold is None:
        return
    gain = np.abs(np.asarray(an.Bn.get(an.v, 0.0), dtype=np.float64))
    if not np.any(gain > 0) and len(an.states) == 2:
        s = next(x for x in an.states if x != an.v)
        gain = np.abs(np.asarray(an.An.get((an.v, s), 0.0)) * np.asarray(an.Bn.get(s, 0.0)))
    scales = []
    for pr in la.projections:
        if pr.kind in ("dense", "conv2d") and f"{pr.param_name}.weight" in c.W:
            w = np.asarray(c.W[f"{pr.param_name}.weight"], dtype=np.float64)
            if w.size and np.max(np.abs(w)) > 0:
                scales.append(float(np.max(np.abs(w))) / p.weight_max)
    g = float(np.max(gain)) if np.size(gain) else 0.0
    if not scales or g <= 0:
        return
    reset = an.v_reset if an.v_reset is not None else 0.0
    theta = float(np.max(np.abs(np.asarray(an.threshold) - reset)))
    quanta = theta / (g * min(scales))
    top = 2 ** (p.state_bits - 1) - 1
    if quanta > top:
        c.limit(la, "threshold in weight quanta", f"{quanta:.0f}", f"{top} ({p.state_bits}-bit "
                "state)", "state_bits", "the weights are tiny next to the threshold: scale "
                "them up (and the threshold with them) before quantising")


def _projection_use(pr: ir.LProjection, c: _Checker) -> tuple[str, int, int, int]:
    """(NIR node, stored weights, fan-in per neuron, connections)."""
    n_in, n_out = _prod(pr.in_shape), _prod(pr.out_shape)
    if pr.kind == "dense":
        return ("Affine" if pr.bias else "Linear"), n_in * n_out, n_in, n_in * n_out
    if pr.kind == "conv2d":
        cin = pr.in_shape[0]
        k = pr.kernel[0] * pr.kernel[1]
        syn = pr.channels * cin * k
        return "Conv2d", syn, cin * k, n_out * cin * k
    if pr.kind == "sparse":
        mask = sparse_matrix(pr) != 0
        nnz = int(mask.sum())
        return "Linear", nnz, int(mask.sum(1).max()) if mask.size else 0, nnz
    return "Scale", 1, 1, n_out


def _fan_out(pr: ir.LProjection) -> int:
    if pr.kind == "dense":
        return _prod(pr.out_shape)
    if pr.kind == "conv2d":
        return pr.channels * math.ceil(pr.kernel[0] / pr.stride[0]) * \
            math.ceil(pr.kernel[1] / pr.stride[1])
    if pr.kind == "sparse":
        m = sparse_matrix(pr) != 0
        return int(m.sum(0).max()) if m.size else 0
    return 1


def _depth(net: ir.LNetwork) -> int:
    d: dict[str, int] = {}
    for la in net.layers:
        if la.kind == "input":
            d[la.name] = 0
            continue
        srcs = [(p.source, 1) for p in la.projections if not p.recurrent]
        if la.source:
            srcs.append((la.source, 0))
        d[la.name] = max((d.get(s, 0) + k for s, k in srcs), default=0)
    return max((d.get(o.layer, 0) for o in net.outputs), default=0)


def _xylo_dash(c: _Checker, la: ir.LLayer, m) -> None:
    if not c.p.name.startswith("xylo"):
        return
    for key in ("tau", "tau_mem", "tau_syn"):
        if key in m.params:
            tau = np.asarray(m.params[key], dtype=np.float64).ravel()
            dash = np.round(np.log2(np.maximum(tau / c.dt_s, 1.0)))
            chip = c.dt_s * 2.0 ** dash
            worst = float(np.max(np.abs(chip - tau) / tau))
            if worst > 1e-9:
                i = int(np.argmax(np.abs(chip - tau) / tau))
                c.notes.append(f"layer '{la.name}': {key} {tau[i] * 1e3:.4g} ms becomes "
                               f"{chip[i] * 1e3:.4g} ms on the chip's bit-shift decay "
                               f"(dash {int(dash[i])})")


# ------------------------------------------------------------------ Speck
def _out_hw(pr: ir.LProjection) -> tuple[int, int, int]:
    if pr.kind == "conv2d":
        return pr.channels, pr.out_shape[1], pr.out_shape[2]
    return _prod(pr.out_shape), 1, 1


def _kernel(pr: ir.LProjection) -> tuple[int, int, int]:
    """(input channels, kh, kw) of the convolution the chip runs."""
    if pr.kind == "conv2d":
        return pr.in_shape[0], pr.kernel[0], pr.kernel[1]
    if len(pr.in_shape) == 3:
        return pr.in_shape[0], pr.in_shape[1], pr.in_shape[2]  # dense over [C, H, W]
    return _prod(pr.in_shape), 1, 1


def _l2(x: int) -> int:
    return math.ceil(math.log2(x)) if x > 1 else 0


def _speck_kernel_memory(pr: ir.LProjection) -> int:
    c, kh, kw = _kernel(pr)
    f = _out_hw(pr)[0]
    return c * 2 ** (_l2(kh * kw) + _l2(f))


def _speck_neuron_memory(la: ir.LLayer) -> int:
    f, h, w = (la.shape[0], la.shape[1], la.shape[2]) if len(la.shape) == 3 else \
        (_prod(la.shape), 1, 1)
    return f * 2 ** (_l2(h) + _l2(w))


def _speck_conv(c: _Checker, la: ir.LLayer, pr: ir.LProjection) -> None:
    p = c.p
    cin, kh, kw = _kernel(pr)
    f, fy, fx = _out_hw(pr)
    what = f"{pr.kind}({pr.source})"
    if max(kh, kw) > p.max_kernel:
        c.limit(la, f"kernel of {what}" + (" (a dense layer is a convolution over its whole "
                                           "input)" if pr.kind == "dense" else ""),
                f"{kh}x{kw}", f"{p.max_kernel}x{p.max_kernel}", "max_kernel",
                "pool or convolve down to <= 16x16 before a dense layer"
                if pr.kind == "dense" else "")
    if pr.kind == "conv2d":
        if any(s not in p.strides for s in pr.stride):
            c.limit(la, f"stride of {what}", "x".join(map(str, pr.stride)),
                    "/".join(map(str, p.strides)), "strides")
        if max(pr.padding) > p.max_padding:
            c.limit(la, f"padding of {what}", max(pr.padding), p.max_padding, "max_padding")
        if max(pr.in_shape[1:]) > p.max_input_hw:
            c.limit(la, f"input size of {what}", "x".join(map(str, pr.in_shape[1:])),
                    f"{p.max_input_hw}x{p.max_input_hw}", "max_input_hw")
    for ch, side in ((cin, "input"), (f, "output")):
        if ch > p.max_channels:
            c.limit(la, f"{side} channels of {what}", ch, p.max_channels, "max_channels")
    if max(fy, fx) > p.max_output_hw:
        c.limit(la, f"output feature map of {what}", f"{fy}x{fx}",
                f"{p.max_output_hw}x{p.max_output_hw}", "max_output_hw")


def _speck_assign(c: _Checker, layers) -> None:
    """Place each neuron layer on a core with enough kernel, neuron and bias
    memory (bipartite matching, as sinabs' get_valid_mapping)."""
    cores = c.p.speck_cores
    if len(layers) > len(cores):
        c.limit(layers[len(cores)][0], "layers (one core each)", len(layers), len(cores),
                "cores")
        layers = layers[:len(cores)]
    fits = [[j for j, core in enumerate(cores) if km <= core.kernel_memory
             and nm <= core.neuron_memory and b <= core.bias_memory]
            for _, km, nm, b in layers]
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or place(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i, (la, km, nm, _b) in enumerate(layers):
        if not place(i, set()):
            best_k = max(core.kernel_memory for core in cores)
            best_n = max(core.neuron_memory for core in cores)
            c.limit(la, "core memory (kernel / neuron entries)", f"{km} / {nm}",
                    f"{best_k} / {best_n} on the largest cores, and no free core holds it",
                    "speck_cores")


# ------------------------------------------------------------------ quantisation
def quantize_weights(net: ir.LNetwork, weights, bits: int = 8,
                     weight_max: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Weights rounded to signed ``bits``-bit integers times one scale per
    projection (symmetric, ``scale = max|w| / (2**(bits-1) - 1)``, or
    ``weight_max`` quanta), returned as floats (the values the chip computes
    with, in the network's units); biases share the projection's scale.
    Returns ``(weights, info)`` with per-projection scale and errors."""
    if not 2 <= int(bits) <= 32:
        raise ValueError(f"bits must be in 2..32, got {bits}")
    qmax = int(weight_max) if weight_max else 2 ** (int(bits) - 1) - 1
    W = dict(load_weights(net, weights) if not isinstance(weights, dict) else weights)
    info: dict[str, dict] = {}
    for la in net.layers:
        for pr in la.projections:
            if pr.kind not in ("dense", "conv2d"):
                continue
            key = f"{pr.param_name}.weight"
            if key not in W:
                continue
            w = np.asarray(W[key], dtype=np.float64)
            m = float(np.max(np.abs(w))) if w.size else 0.0
            scale = m / qmax if m > 0 else 1.0
            q = np.clip(np.round(w / scale), -qmax, qmax)
            W[key] = q * scale
            bkey = f"{pr.param_name}.bias"
            if bkey in W:
                b = np.asarray(W[bkey], dtype=np.float64)
                W[bkey] = np.clip(np.round(b / scale), -qmax, qmax) * scale
            err = W[key] - w
            rms = float(np.sqrt(np.mean(w ** 2))) if w.size else 0.0
            info[pr.param_name] = {
                "bits": int(bits), "qmax": qmax, "scale": scale,
                "levels": int(len(np.unique(q))),
                "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
                "rel_rms_error": float(np.sqrt(np.mean(err ** 2)) / rms) if rms > 0 else 0.0,
            }
    return W, info


def known_platforms() -> list[str]:
    return list(PLATFORMS)


def source_text(key: str) -> str:
    return SOURCES.get(key, key)
