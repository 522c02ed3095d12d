"""From the lowered IR to a plan of Brian2 objects (no brian2 import here).

The plan is what the templates in ``targets/brian2/`` render: groups with
their variables and abstract code, synapses with their connectivity, and one
schedule.  Every object runs in the ``start`` slot of one clock, with
``order`` increasing layer by layer in topological order; within a layer:

    plastic-synapse state update -> incoming pathways (accumulate input) ->
    state update (``run_regularly``: reads the accumulated input, then clears it)
    -> thresholder -> [pre-reset monitors] -> resetter -> on_post pathways
    -> events of value outputs

so a spike of step n reaches a later layer in step n (docs/brian2.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spikedsl import ir
from spikedsl.errors import Loc, unsupported
from spikedsl.ir.exprs import names as expr_names
from spikedsl.ir.units import ONE, TIME, Dim, ddiv, dmul
from spikedsl.targets import require
from spikedsl.targets.brian2.code import neuron_code, rule_code
from spikedsl.targets.brian2.printer import (
    B2Printer,
    DimError,
    Names,
    dim_of,
    unit_expr,
    unit_names,
)

TARGET = "brian2"
WHEN = "start"


def _loc(net: ir.LNetwork, line: int) -> Loc | None:
    return Loc(net.file, line, 1) if net.file and line else None


def _times(u: str | None) -> str:
    """`` * unit`` to attach a unit to a numpy value (nothing when dimensionless)."""
    if not u:
        return ""
    return f" * {u}" if u.isidentifier() else f" * ({u})"


# ----------------------------------------------------------------- plan objects
@dataclass
class Port:
    """What a projection reads from a source layer."""

    group: str  # python/Brian2 name of the group
    layer: str  # the layer that owns the group (after flatten/dropout aliases)
    kind: str  # "spike" | "value"
    var: str | None = None  # the variable of a value port
    dim: Dim = ONE
    block: int = 0  # schedule position of the source layer
    silent: bool = False  # spikes of a non-spiking neuron: always 0
    events: set = field(default_factory=set)


@dataclass
class Var:
    name: str
    unit: str  # Brian2 unit text ("1", "volt", "integer", "boolean")
    flags: str = ""
    comment: str = ""

    @property
    def line(self) -> str:
        f = f" ({self.flags})" if self.flags else ""
        c = f"  # {self.comment}" if self.comment else ""
        return f"{self.name} : {self.unit}{f}{c}"


@dataclass
class Group:
    py: str
    layer: str
    kind: str  # neuron | stage | projection | input_spikes | input_values
    shape: tuple[int, ...]
    title: str
    variables: list[Var] = field(default_factory=list)
    threshold: str | None = None
    reset: str | None = None
    events: dict[str, str] = field(default_factory=dict)
    event_order: dict[str, int] = field(default_factory=dict)
    step: str | None = None
    step_order: int = 0
    thr_order: int = 0
    reset_order: int = 0
    pre_monitor_order: int = 0
    sets: list[str] = field(default_factory=list)  # python statements after creation
    timed: list[tuple[str, str]] = field(default_factory=list)  # TimedArrays: (name, values)
    order: int = 0  # of a SpikeGeneratorGroup / TimedArray group

    @property
    def n(self) -> int:
        return math.prod(self.shape)

    @property
    def equations(self) -> str:
        return "\n".join(v.line for v in self.variables)


@dataclass
class Syn:
    py: str
    title: str
    source: str
    target: str
    model: str
    on_pre: str
    on_post: str | None
    on_event: str  # "spike" or a custom event of the source
    delay: int  # Brian2 delay in steps
    setup: list[str]  # python statements: connectivity -> pre, post (and w)
    assign: list[str] = field(default_factory=list)  # after connect: weights, rule values
    pre_order: int = 0
    post_order: int = 0
    update: str | None = None  # plastic state update (run_regularly)
    update_order: int = 0
    n_pre: int = 0
    n_post: int = 0
    record_w: str | None = None  # record key of the plastic weight trajectory
    weight_var: bool = True


@dataclass
class Record:
    """One recordable trace of the script: ``RECORD[key]``."""

    key: str
    obj: str
    var: str | None  # None: spikes
    kind: str  # spikes | state | synapse
    when: str
    order: int
    shape: tuple[int, ...]


@dataclass
class Plan:
    net: ir.LNetwork
    groups: list[Group] = field(default_factory=list)
    synapses: list[Syn] = field(default_factory=list)
    blocks: list[tuple[str, list]] = field(default_factory=list)  # (title, [Group|Syn])
    late: list[Syn] = field(default_factory=list)  # recurrent synapses from later layers
    records: dict[str, Record] = field(default_factory=dict)
    outputs: list[tuple[str, str, str]] = field(default_factory=list)  # (name, key, reduce)
    inputs: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    units: set[str] = field(default_factory=set)
    # (name, kind, connectivity description) of every projection, for docs/tests
    projections: list[tuple[str, str, str]] = field(default_factory=list)


# ----------------------------------------------------------------- builder
class Planner:
    def __init__(self, net: ir.LNetwork):
        self.net = net
        self.plan = Plan(net=net)
        self.order = 0
        self.ports: dict[tuple[str, str | None], Port] = {}
        self.alias: dict[str, str] = {}  # flatten / dropout -> source layer
        self.groups: dict[str, Group] = {}  # layer -> group
        self.block_of: dict[str, int] = {}
        self.py_names = Names({"b2", "np", "math", "clock", "batch", "weights", "inputs",
                               "record", "objects", "pre", "post", "w", "x", "net", "handles"})
        self.value_uses: dict[tuple[str, str | None], set[str]] = {}
        self.pyname: dict[str, str] = {}
        self.ctx: dict[str, tuple] = {}
        self.created: set[str] = set()
        self.plastic = {p.projection: p for p in net.plasticity}

    def next(self) -> int:
        self.order += 1
        return self.order

    def refuse(self, what: str, reason: str, line: int):
        raise unsupported(TARGET, what, reason, _loc(self.net, line))

    # ------------------------------------------------------------ driver
    def run(self) -> Plan:
        net = self.net
        self._check()
        self._scan_value_uses()
        for k, lay in enumerate(net.layers):
            self.block_of[lay.name] = k
        for lay in net.layers:
            self._declare(lay)
        for lay in net.layers:
            if lay.kind == "input":
                self._input(lay)
            elif lay.kind == "neuron":
                self._neuron(lay)
            elif lay.kind == "stage":
                self._stage(lay)
            elif lay.kind == "projection":
                self._projection_layer(lay)
        self._outputs()
        return self.plan

    def _check(self) -> None:
        net = self.net
        require("brian2", net)  # the declared capabilities (no cells, no conv2d rules)
        for lp in net.plasticity:
            src = net.layer(lp.source)
            if src.kind not in ("neuron", "input") or (src.kind == "input" and
                                                       src.encoder == "direct"):
                self.refuse(f"plasticity on the projection from '{lp.source}'",
                            "on_pre needs a spiking source (a neuron layer or a spike input)",
                            net.source_line)

    def _scan_value_uses(self) -> None:
        """Which layers need custom events for value ports (and which kind)."""
        alias: dict[tuple, tuple] = {}
        for lay in self.net.layers:
            if lay.kind == "stage" and lay.op in ("flatten", "dropout"):
                src = (lay.source, lay.source_state)
                alias[(lay.name, None)] = alias.get(src, src)

        def use(key, kind):
            self.value_uses.setdefault(alias.get(key, key), set()).add(kind)

        for lay in self.net.layers:
            for p in lay.projections:
                use((p.source, p.source_state), "nz")
            if lay.kind == "stage" and lay.op in ("avgpool2d", "sumpool2d", "batchnorm"):
                use((lay.source, lay.source_state), "nz")
            if lay.kind == "stage" and lay.op == "maxpool2d":
                use((lay.source, lay.source_state), "all")

    def _resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def port(self, name: str, state: str | None, line: int) -> Port:
        key = (self._resolve(name), state)
        if key not in self.ports:
            self.refuse(f"the source '{name}{'.' + state if state else ''}'",
                        "it is not available as a projection source in Brian2", line)
        return self.ports[key]

    # ------------------------------------------------------------ declarations
    def _declare(self, lay: ir.LLayer) -> None:
        """Group names, variable names and output ports of every layer (recurrent
        projections read layers declared later)."""
        blk = self.block_of[lay.name]
        if lay.kind == "stage" and lay.op in ("flatten", "dropout"):
            self.alias[lay.name] = self._resolve(lay.source)
            self.ports[(lay.name, None)] = self.ports[(self._resolve(lay.source),
                                                       lay.source_state)]
            return
        py = self.py_names.fresh(f"g_{lay.name}")
        self.pyname[lay.name] = py
        if lay.kind == "input":
            kind = "value" if lay.encoder == "direct" else "spike"
            self.ports[(lay.name, None)] = Port(py, lay.name, kind,
                                                "val" if kind == "value" else None, ONE, blk)
            return
        if lay.kind in ("stage", "projection"):
            if lay.kind == "stage":
                src = self.ports.get((self._resolve(lay.source), lay.source_state))
            else:
                p = lay.projections[0]
                src = self.ports.get((self._resolve(p.source), p.source_state))
            d = src.dim if src is not None else ONE
            self.ports[(lay.name, None)] = Port(py, lay.name, "value", "val", d, blk)
            return
        if lay.kind != "neuron":
            return
        neu = lay.neuron
        # "w" is the weight of every synapse: Brian2 refuses a pre- or postsynaptic
        # variable of the same name (AdEx's adaptation current w becomes w_1)
        names = Names({"w"})
        nm: dict[str, str] = {}
        dims: dict[str, Dim] = {}
        for q in neu.params:
            nm[q.name] = names.user(q.name)
            dims[q.name] = dim_of(q.dim)
        for s in neu.states:
            nm[s.name] = names.user(s.name)
            dims[s.name] = dim_of(s.dim)
        in_dims = dict(zip(neu.inputs, neu.input_dims or ("1",) * len(neu.inputs)))
        for i in neu.inputs:
            nm[i] = names.user(i)
            dims[i] = dim_of(in_dims.get(i, "1"))
        for t in neu.temps:
            nm[t.target] = names.user(t.target)
        held = [a.target for a in neu.reset]
        self.ports[(lay.name, None)] = Port(py, lay.name, "spike", None, ONE, blk,
                                            silent=not neu.spiking)
        pre_vars = {}
        for s in neu.states:
            self.ports[(lay.name, s.name)] = Port(py, lay.name, "value", nm[s.name],
                                                  dims[s.name], blk)
            if s.name in held and (lay.name, f"{s.name}_pre") in self.value_uses:
                pre_vars[s.name] = names.fresh(f"{nm[s.name]}_prereset")
                self.ports[(lay.name, f"{s.name}_pre")] = Port(
                    py, lay.name, "value", pre_vars[s.name], dims[s.name], blk)
            elif s.name not in held:
                self.ports[(lay.name, f"{s.name}_pre")] = self.ports[(lay.name, s.name)]
        self.ctx[lay.name] = (names, nm, dims, pre_vars)

    # ------------------------------------------------------------ inputs
    def _input(self, lay: ir.LLayer) -> None:
        py = self.pyname[lay.name]
        n = math.prod(lay.shape)
        title = f"input {lay.name}{list(lay.shape)}: {lay.encoder}"
        self.plan.inputs.append((lay.name, tuple(lay.shape), lay.encoder or "direct"))
        if lay.encoder == "direct":
            g = Group(py=py, layer=lay.name, kind="input_values", shape=tuple(lay.shape),
                      title=title, variables=[Var("val", "1", comment="the input value")])
            g.step = f"val = ta_{lay.name}(t, i)"
            g.step_order = self.next()
            self._value_events(g, (lay.name, None), "val", ONE)
            self.plan.records[lay.name] = Record(lay.name, py, "val", "state", "end", 0,
                                                 tuple(lay.shape))
        else:
            g = Group(py=py, layer=lay.name, kind="input_spikes", shape=tuple(lay.shape),
                      title=title)
            g.order = self.next()
            self.plan.records[lay.name] = Record(lay.name, py, None, "spikes", "end", 0,
                                                 tuple(lay.shape))
        del n
        self.groups[lay.name] = g
        self.plan.groups.append(g)
        self._block(title, g, [])

    def _block(self, title: str, g: Group, items: list) -> None:
        """A layer's group, then the synapses into it whose source exists by then;
        synapses from later layers (recurrent) are created after all groups."""
        self.created.add(g.py)
        now, late = [], []
        for syn in items:
            (late if syn.source not in self.created else now).append(syn)
        self.plan.blocks.append((title, [g] + [s for s in now]))
        self.plan.late.extend(late)

    def _value_events(self, g: Group, key, var: str, d: Dim, printer: B2Printer | None = None):
        uses = self.value_uses.get(key, set())
        zero = "0.0" if d == ONE else f"0.0*{unit_expr(d)}"
        if d != ONE:
            self.plan.units |= unit_names(unit_expr(d))
        port = self.ports[key]
        if "nz" in uses:
            ev = f"nz_{var}"
            g.events[ev] = f"{var} != {zero}"
            g.event_order[ev] = self.next()
            port.events.add(ev)
        if "all" in uses:
            ev = f"all_{var}"
            g.events[ev] = "True"
            g.event_order[ev] = self.next()
            port.events.add(ev)

    # ------------------------------------------------------------ projections
    def _accumulate(self, lay: ir.LLayer, g: Group, acc_of: dict[str, str],
                    acc_dims: dict[str, Dim], items: list) -> dict[str, list[str]]:
        """Synapses of every incoming projection; returns input -> bias terms."""
        biases: dict[str, list[str]] = {}
        for k, p in enumerate(lay.projections):
            port = self.port(p.source, p.source_state, p.source_line)
            acc = acc_of[p.target_input]
            bterm = self._bias(p)
            if bterm is not None:
                biases.setdefault(p.target_input, []).append(bterm)
            if port.silent:
                continue  # spikes of a non-spiking neuron layer are 0
            syn = self._synapses(lay, g, p, port, acc, acc_dims[p.target_input], k)
            items.append(syn)
        return biases

    def _bias(self, p: ir.LProjection) -> str | None:
        if not p.bias or p.kind not in ("dense", "conv2d"):
            return None
        n_out = p.out_shape[0] if p.kind == "conv2d" else math.prod(p.out_shape)
        b = f'weight(weights, "{p.param_name}.bias", ({n_out},))'
        if p.kind == "conv2d":
            hw = math.prod(p.out_shape[1:])
            b = f"np.repeat({b}, {hw})"
        return b

    def _brian_delay(self, p: ir.LProjection, port: Port, target: str) -> int:
        before = port.block < self.block_of[target]
        d = p.delay - (0 if before else 1)
        if d < 0:
            self.refuse(f"the projection '{p.param_name}'", "it reads a later layer without "
                        "delay", p.source_line)
        if d > 0 and port.kind == "value":
            self.refuse(f"the delay of the projection '{p.param_name}' from "
                        f"'{p.source}{'.' + p.source_state if p.source_state else ''}'",
                        "Brian2 delays events, not values; a delayed non-spike source "
                        "is not supported", p.source_line)
        return d

    def _synapses(self, lay, g: Group, p: ir.LProjection, port: Port, acc: str, acc_dim: Dim,
                  k: int) -> Syn:
        py = self.py_names.fresh(f"s_{lay.name}_{p.source}")
        n_in, n_out = math.prod(p.in_shape), math.prod(p.out_shape)
        w_dim = ddiv(acc_dim, port.dim)
        w_unit = unit_expr(w_dim)
        self.plan.units |= unit_names(w_unit)
        times_unit = _times(w_unit)
        lp = self.plastic.get(p.param_name)
        setup: list[str] = []
        kind = p.kind
        desc = ""
        fixed = float(p.weight) if p.weight is not None else 1.0  # sparse, one_to_one
        if kind == "dense":
            setup.append(f'w = signed(weight(weights, "{p.param_name}.weight", ({n_out}, {n_in})),'
                         f' "{p.sign}").reshape(-1)')
            setup.append(f"pre, post = dense_synapses({n_out}, {n_in})")
            desc = f"dense {n_in} -> {n_out}"
        elif kind == "conv2d":
            wshape = (p.channels, p.in_shape[0], *p.kernel)
            setup.append(f'w = signed(weight(weights, "{p.param_name}.weight", {wshape}), '
                         f'"{p.sign}").reshape(-1)')
            setup.append(f"pre, post, widx = conv2d_synapses({tuple(p.in_shape)}, "
                         f"{tuple(p.out_shape)}, {tuple(p.kernel)}, {tuple(p.stride)}, "
                         f"{tuple(p.padding)})")
            setup.append("w = w[widx]")
            desc = (f"conv2d {list(p.in_shape)} -> {list(p.out_shape)}, kernel "
                    f"{list(p.kernel)}, stride {list(p.stride)}, padding {list(p.padding)}")
        elif kind == "sparse":
            setup += [f"post, pre = mask_pairs({p.seed}, {p.p!r}, {n_out}, {n_in})",
                      f'w = signed(sparse_weights(weights, "{p.param_name}.weight", post, pre, '
                      f'{n_out}, {n_in}, {fixed!r}), "{p.sign}")']
            desc = f"sparse {n_in} -> {n_out}, p = {p.p}, seed {p.seed}"
        elif kind == "one_to_one":
            setup += [f"pre = post = np.arange({n_out})",
                      f'w = signed(np.broadcast_to(param(weights, "{p.param_name}.weight", '
                      f'{fixed!r}, {tuple(p.out_shape)}, 1), ({n_out},)), "{p.sign}")']
            desc = f"one_to_one {n_out}"
        self.plan.projections.append((p.param_name, kind, desc))
        setup.append(f"pre, post = replicate(pre, post, {n_in}, {n_out}, batch)")
        value = "" if port.kind == "spike" else f" * {port.var}_pre"
        on_pre = f"{acc}_post += w{value}"
        model = [f"w : {w_unit or '1'}"]
        on_post = None
        update = None
        record_w = None
        rc = None
        if lp is not None:
            # Brian2 refuses a synaptic variable named as a pre- or postsynaptic one
            avoid = set().union(*(self.ctx[k][0].taken for k in (lay.name, port.layer)
                                  if k in self.ctx))
            rc = rule_code(lp.rule, w_dim, avoid)
            self.plan.units |= rc.units
            model, on_post, update = rc.model, rc.post, rc.update
            on_pre = "\n".join([on_pre] + rc.pre)
            record_w = f"{p.param_name}.weight"
        event = "spike" if port.kind == "spike" else f"nz_{port.var}"
        delay = self._brian_delay(p, port, lay.name)
        syn = Syn(py=py, title=f"{p.param_name}: {desc} ({p.source}"
                  f"{'.' + p.source_state if p.source_state else ''} -> {lay.name}"
                  f"{'.' + p.target_input if len(lay.neuron.inputs if lay.neuron else ()) > 1 else ''}"
                  f"{', delay ' + str(p.delay) if p.delay else ''})",
                  source=port.group, target=g.py, model="\n".join(model), on_pre=on_pre,
                  on_post=on_post, on_event=event, delay=delay, setup=setup, n_pre=n_in,
                  n_post=n_out, record_w=record_w)
        syn.assign.append(f"{py}.w = np.tile(w, batch){times_unit}")
        if rc is not None:
            for var, value, d in rc.sets:
                u = unit_expr(d)
                syn.assign.append(f"{py}.{var} = {value!r}" + _times(u))
            for var, txt in rc.inits:
                syn.assign.append(f'{py}.{var} = "{txt}"')
        if update is not None:
            syn.update = update
            syn.update_order = self.next()
        syn.pre_order = self.next()
        if record_w:
            self.plan.records[record_w] = Record(record_w, py, "w", "synapse", "end", 0,
                                                 (n_out, n_in))
        self.plan.synapses.append(syn)
        return syn

    # ------------------------------------------------------------ neurons
    def _neuron(self, lay: ir.LLayer) -> None:
        neu = lay.neuron
        assert neu is not None
        py = self.pyname[lay.name]
        names, nm, dims, pre_vars = self.ctx[lay.name]
        held = [a.target for a in neu.reset]
        title = f"layer {lay.name}{list(lay.shape)} = {neu.name}"
        g = Group(py=py, layer=lay.name, kind="neuron", shape=tuple(lay.shape), title=title)
        self.groups[lay.name] = g
        bias_names = {}
        items: list = []
        # synapses first (their orders precede the update)
        biases = self._accumulate(lay, g, nm, dims, items)
        for inp, terms in biases.items():
            bias_names[inp] = names.fresh(f"bias_{nm[inp]}")
        # the spike condition or the reset may read an input: then the effective
        # input (bias added) stays in the accumulator until an extra "clear"
        # step after the reset
        cond = neu.spike_cond if neu.spike_cond is not None else neu.spike_x
        uses_input_late = any(set(neu.inputs) & expr_names(x) for x in
                              ([cond] if cond is not None else []) +
                              [a.value for a in neu.reset])
        eff = {}
        for inp in neu.inputs:
            if inp in bias_names:
                eff[inp] = nm[inp] if uses_input_late else names.fresh(f"{nm[inp]}_in")
        for stripped in (False, True):
            try:
                code = neuron_code(neu, nm, dims, eff, bias_names, pre_vars,
                                   stripped=stripped, uses_input_late=uses_input_late)
                code_stripped = stripped
                break
            except DimError:
                if stripped:
                    raise
        step, threshold, reset, clear = code.step, code.threshold, code.reset, code.clear
        self.plan.units |= code.units
        pr = B2Printer(nm, dims, dt="dt" if neu.uses_units else repr(float(neu.dt or 1.0)))
        # variables
        V = g.variables
        for s in neu.states:
            V.append(Var(nm[s.name], unit_expr(dims[s.name]) or "1", comment="state"))
        for i in neu.inputs:
            V.append(Var(nm[i], unit_expr(dims[i]) or "1",
                         comment="input: synaptic input of this step"))
        for i, b in bias_names.items():
            V.append(Var(b, unit_expr(dims[i]) or "1", "constant", f"bias of input {i}"))
        for q in neu.params:
            V.append(Var(nm[q.name], unit_expr(dims[q.name]) or "1",
                         "constant" if q.per_neuron else "shared, constant", "parameter"))
        for s, v in pre_vars.items():
            V.append(Var(v, unit_expr(dims[s]) or "1", comment=f"{s} before the reset"))
        for v in V:
            self.plan.units |= unit_names(v.unit)
        # parameter values, biases, initial states
        for q in neu.params:
            val = (f'param(weights, "{lay.name}.{q.name}", {q.value!r}, {tuple(lay.shape)}, '
                   f'batch{"" if q.per_neuron else ", shared=True"})')
            u = unit_expr(dims[q.name])
            g.sets.append(f"{py}.{nm[q.name]} = {val}" + _times(u))
        for inp, terms in biases.items():
            u = unit_expr(dims[inp])
            g.sets.append(f"{py}.{bias_names[inp]} = per_neuron({' + '.join(terms)}, batch)"
                          + _times(u))
        for s in neu.states:
            txt, d = pr.expr(s.init)
            if d != dims[s.name] or code_stripped:
                # a plain number for a dimensioned state: print it stripped
                sp = B2Printer(nm, dims, dt="1.0", stripped=True)
                txt, _ = sp.expr(s.init)
                if dims[s.name] != ONE:
                    txt = f"({txt})*{sp.unit(dims[s.name])}"
                self.plan.units |= sp.units
            g.sets.append(f'{py}.{nm[s.name]} = "{txt}"')
        g.step = step
        g.step_order = self.next()
        if neu.spiking:
            g.threshold = threshold
            g.thr_order = self.next()
            g.pre_monitor_order = self.next()
            g.reset = reset
            g.reset_order = self.next()
        if clear:
            g.events["clear"] = "True"
            g.event_order["clear"] = self.next()
            g.sets.append(f'{py}.run_on_event("clear", "{clear}", when="{WHEN}", '
                          f'order={self.next()})')
        # on_post pathways of plastic incoming synapses
        for syn in items:
            if syn.on_post is not None:
                syn.post_order = self.next()
        # events of value ports of this layer (post-reset states and copies)
        for s in neu.states:
            key = (lay.name, s.name)
            if key in self.value_uses:
                self._value_events(g, key, nm[s.name], dims[s.name])
            pkey = (lay.name, f"{s.name}_pre")
            if pkey in self.value_uses and s.name in pre_vars:
                self._value_events(g, pkey, pre_vars[s.name], dims[s.name])
        # records
        for s in neu.states:
            self.plan.records[f"{lay.name}.{s.name}"] = Record(
                f"{lay.name}.{s.name}", py, nm[s.name], "state", "end", 0, tuple(lay.shape))
            if s.name in held and neu.spiking:
                self.plan.records[f"{lay.name}.{s.name}_pre"] = Record(
                    f"{lay.name}.{s.name}_pre", py, nm[s.name], "state", WHEN,
                    g.pre_monitor_order, tuple(lay.shape))
            else:
                self.plan.records[f"{lay.name}.{s.name}_pre"] = Record(
                    f"{lay.name}.{s.name}_pre", py, nm[s.name], "state", "end", 0,
                    tuple(lay.shape))
        self.plan.records[lay.name] = Record(lay.name, py, None,
                                             "spikes" if neu.spiking else "zeros", "end", 0,
                                             tuple(lay.shape))
        self.plan.groups.append(g)
        self._block(title, g, items)

    # ------------------------------------------------------------ stages
    def _stage(self, lay: ir.LLayer) -> None:
        op = lay.op
        if op in ("flatten", "dropout"):
            rec = self._record_of(lay.source, lay.source_state)
            self.plan.records[lay.name] = Record(lay.name, rec.obj, rec.var, rec.kind,
                                                 rec.when, rec.order, tuple(lay.shape))
            return
        if op not in ("avgpool2d", "sumpool2d", "maxpool2d", "batchnorm"):
            self.refuse(f"the stage {op} '{lay.name}'", "not supported", lay.source_line)
        port = self.port(lay.source, lay.source_state, lay.source_line)
        py = self.pyname[lay.name]
        title = f"layer {lay.name}{list(lay.shape)} = {op}({lay.source}"
        title += f".{lay.source_state})" if lay.source_state else ")"
        g = Group(py=py, layer=lay.name, kind="stage", shape=tuple(lay.shape), title=title)
        self.groups[lay.name] = g
        d = port.dim
        u = unit_expr(d) or "1"
        self.plan.units |= unit_names(unit_expr(d))
        g.variables = [Var("val", u, comment="output"), Var("acc", u, comment="input")]
        in_shape = self._shape_of(lay.source)
        n_in, n_out = math.prod(in_shape), math.prod(lay.shape)
        zero = "0.0" if d == ONE else f"0.0*{unit_expr(d)}"
        items: list = []
        ev = "spike" if port.kind == "spike" else f"nz_{port.var}"
        if op in ("avgpool2d", "sumpool2d", "maxpool2d"):
            k, s = tuple(lay.args["kernel"]), tuple(lay.args["stride"])
            setup = [f"pre, post = pool_synapses({tuple(in_shape)}, {tuple(lay.shape)}, {k}, {s})"]
            if op == "maxpool2d":
                if port.kind == "spike":
                    on_pre = "acc_post = 1.0"
                else:
                    on_pre = f"acc_post = clip(acc_post, {port.var}_pre, inf{'*' + unit_expr(d) if d != ONE else ''})"
                    ev = f"all_{port.var}"
                    zero = "-inf" if d == ONE else f"-inf*{unit_expr(d)}"
                step = f"val = acc\nacc = {zero}"
            else:
                on_pre = "acc_post += " + ("1.0" if port.kind == "spike" else f"{port.var}_pre")
                scale = "" if op == "sumpool2d" else f" / {float(k[0] * k[1])!r}"
                step = f"val = acc{scale}\nacc = {zero}"
            desc = f"{op} {list(in_shape)} -> {list(lay.shape)}, kernel {list(k)}, stride {list(s)}"
            if zero.startswith("-inf"):
                g.sets.append(f'{py}.acc = "{zero}"')
        else:  # batchnorm (inference: running statistics)
            c = lay.shape[0]
            setup = [f"pre = post = np.arange({n_out})"]
            on_pre = "acc_post += " + ("1.0" if port.kind == "spike" else f"{port.var}_pre")
            eps = float(lay.args.get("eps", 1e-5))
            per_step = bool(lay.args.get("per_step"))
            # the normalised value is dimensionless: the weight carries the source's unit
            u2 = unit_expr(dmul(d, d)) or "1"
            self.plan.units |= unit_names(unit_expr(dmul(d, d)))
            units = {"bn_mean": u, "bn_var": u2, "bn_weight": u, "bn_bias": u}
            names = {}
            for var, key, default in (("bn_mean", "running_mean", "np.zeros"),
                                      ("bn_var", "running_var", "np.ones"),
                                      ("bn_weight", "weight", "np.ones"),
                                      ("bn_bias", "bias", "np.zeros")):
                if per_step:  # one row per step: TimedArrays read at the step's time
                    ta = f"{py}_{var}"
                    names[var] = f"{ta}(t, i)"
                    vals = (f'step_channel_values(weights.get("{lay.name}.{key}", {default}(('
                            f'{self.net.steps}, {c}))), {tuple(lay.shape)}, batch, '
                            f'len(next(iter(data.values()), [0] * STEPS)), "{lay.name}")')
                    g.timed.append((ta, vals if units[var] == "1" else
                                    f"{vals} * ({units[var]})"))
                    continue
                names[var] = var
                g.variables.append(Var(var, units[var], "constant"))
                g.sets.append(
                    f'{py}.{var} = channel_values(weights.get("{lay.name}.{key}", {default}({c})),'
                    f' {tuple(lay.shape)}, batch)' + ("" if units[var] == "1" else
                                                      f" * ({units[var]})"))
            epsu = repr(eps) if d == ONE else f"{eps!r}*{u2}"
            step = (f"val = (acc - {names['bn_mean']}) / sqrt({names['bn_var']} + {epsu}) * "
                    f"{names['bn_weight']} + {names['bn_bias']}\nacc = {zero}")
            desc = f"batchnorm {list(lay.shape)} (running statistics" + (
                " per step)" if per_step else ")")
        setup.append(f"pre, post = replicate(pre, post, {n_in}, {n_out}, batch)")
        syn = Syn(py=self.py_names.fresh(f"s_{lay.name}_{lay.source}"), title=desc,
                  source=port.group, target=py, model="", on_pre=on_pre, on_post=None,
                  on_event=ev, delay=0, setup=setup, n_pre=n_in, n_post=n_out,
                  weight_var=False)
        if port.silent:
            items = []
        else:
            syn.pre_order = self.next()
            self.plan.synapses.append(syn)
            items = [syn]
        g.step = step
        self._value_layer(lay, g, d, title, items)

    def _value_layer(self, lay: ir.LLayer, g: Group, d: Dim, title: str, items: list) -> None:
        """Place a layer whose output is its variable ``val`` (its step set)."""
        g.step_order = self.next()
        self._value_events(g, (lay.name, None), "val", d)
        self.plan.records[lay.name] = Record(lay.name, g.py, "val", "state", "end", 0,
                                             tuple(lay.shape))
        self.plan.groups.append(g)
        self._block(title, g, items)

    def _shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(self.net.layer(name).shape)

    def _record_of(self, name: str, state: str | None) -> Record:
        key = name if state is None else f"{name}.{state}"
        return self.plan.records[key]

    # ------------------------------------------------------------ stateless projections
    def _projection_layer(self, lay: ir.LLayer) -> None:
        p = lay.projections[0]
        port = self.port(p.source, p.source_state, p.source_line)
        py = self.pyname[lay.name]
        fn = f"{lay.func}(" if lay.func else ""
        title = f"layer {lay.name}{list(lay.shape)} = {fn}{p.kind}({p.source}){')' if fn else ''}"
        g = Group(py=py, layer=lay.name, kind="projection", shape=tuple(lay.shape), title=title)
        self.groups[lay.name] = g
        d = port.dim
        u = unit_expr(d) or "1"
        g.variables = [Var("val", u, comment="output"), Var("acc", u, comment="input")]
        items: list = []
        biases = self._accumulate(lay, g, {p.target_input: "acc"}, {p.target_input: d}, items)
        expr = "acc"
        if biases:
            g.variables.append(Var("bias", u, "constant"))
            g.sets.append(f"{py}.bias = per_neuron({' + '.join(biases[p.target_input])}, batch)"
                          + _times(unit_expr(d)))
            expr = "acc + bias"
        if lay.func:
            pr = B2Printer({"x": expr}, {"x": d})
            try:
                expr, _ = pr.expr(ir.Call(func=lay.func, args=(ir.Name(id="x"),)))
            except DimError:
                self.refuse(f"{lay.func}() of a dimensioned value in layer '{lay.name}'",
                            "the function needs a dimensionless argument", lay.source_line)
        zero = "0.0" if d == ONE else f"0.0*{unit_expr(d)}"
        g.step = f"val = {expr}\nacc = {zero}"
        self._value_layer(lay, g, d, title, items)

    # ------------------------------------------------------------ outputs
    def _outputs(self) -> None:
        for o in self.net.outputs:
            key = o.layer if o.state is None else f"{o.layer}.{o.state}" + (
                "_pre" if o.pre_reset else "")
            if key not in self.plan.records:
                self.refuse(f"the output '{o.name}'", "no such trace", self.net.source_line)
            self.plan.outputs.append((o.name, key, o.reduce))


def make_plan(net: ir.LNetwork) -> Plan:
    return Planner(net).run()


__all__ = ["TIME", "Plan", "make_plan"]
