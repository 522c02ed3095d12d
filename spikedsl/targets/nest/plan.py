"""The NEST network of a lowered network, as plain data (no NEST import).

* Every neuron layer is one NEST model (:func:`~.match.match_layer`), one
  population per sample of the batch.
* A projection from a neuron layer is a ``nest.Connect``: ``dense`` all to
  all with the weight matrix, ``sparse`` the fixed mask of every target
  (:func:`spikedsl.lowering.weights.sparse_mask`) as explicit pairs,
  ``one_to_one``; the weight in NEST's unit of the synaptic state it jumps.
  Only jump inputs (``jump s += S``) can receive spikes.
* A projection from an input layer is computed here, as the reference
  computes it, and reaches the neurons through generators: a jump input as
  the spikes of one ``spike_generator`` per neuron (``spike_weights``), a
  current input as one ``step_current_generator`` per neuron.
* Time (docs/nest.md): NEST runs ``LEAD`` steps before step 0 of the network
  (the lead-in, where nothing may spike), so that every input of step 0 can
  arrive.  A jump that spikedsl applies at the start of step n is NEST's spike
  read in its step ``n + LEAD - lead`` (``lead`` = 1 where NEST adds the spike
  to a synaptic state at the end of the step before, 0 where it adds it to
  V_m after the propagation of that step).  A projection between neuron layers
  with spikedsl delay k runs with ``k* = max(k, 1 + lead)`` (NEST's delay
  ``k* - lead`` steps is at least one): :func:`schedule` is the network NEST
  runs, which ``spikedsl verify`` compares with.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl.errors import Loc, unsupported
from spikedsl.lowering import refractory
from spikedsl.lowering import weights as _weights
from spikedsl.targets.nest.match import TITLE, Match, match_layer
from spikedsl.targets.nest.models import CHANNELS, Syn, channel_params

LEAD = 2  # NEST steps before step 0 of the network


@dataclass
class Connection:
    """A projection between neuron layers: ``nest.Connect``."""

    proj: ir.LProjection
    src: str
    dst: str
    state: str  # the synaptic state (or V_m) of dst it jumps
    factor: np.ndarray  # NEST weight per unit of weight, per post neuron
    delay: int  # NEST delay in steps (>= 1)
    mapped: int  # the spikedsl delay NEST realises (k*)


@dataclass
class Drive:
    """A projection from an input layer: through generators."""

    proj: ir.LProjection
    src: str
    dst: str
    input: str  # the neuron input it feeds
    state: str | None  # jump: the state it jumps; None: a current
    factor: np.ndarray  # NEST units per unit (per neuron): weight or pA


@dataclass
class Population:
    layer: ir.LLayer
    match: Match
    size: int
    placed: dict[str, Syn] = field(default_factory=dict)  # channel -> synaptic state
    merged: bool = False  # two synaptic states share both channels: not recordable apart

    @property
    def name(self) -> str:
        return self.layer.name

    def params(self) -> dict[str, np.ndarray]:
        out = dict(self.match.params)
        if self.placed:
            out.update(channel_params(self.match.kind, self.placed))
        return out

    def records(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """user state -> (NEST recordables summed, NEST units per unit)."""
        m = self.match
        out = dict(m.states)
        chans = CHANNELS.get(m.kind, {})
        if self.merged:
            return out
        by_state: dict[str, list[str]] = {}
        for ch, syn in self.placed.items():
            info = chans[ch]
            if info["record"] is not None:
                by_state.setdefault(syn.state, []).append(info["record"])
                out[syn.state] = (tuple(by_state[syn.state]), syn.per_unit)
            if "I_record" in info:
                out[syn.params["_I"]] = ((info["I_record"],), syn.params["_per_I"])
        return out


@dataclass
class Plan:
    net: ir.LNetwork
    h_ms: float
    populations: dict[str, Population]
    connections: list[Connection]
    drives: list[Drive]
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(p.match.exact for p in self.populations.values())


def _loc(net: ir.LNetwork, line: int) -> Loc | None:
    return Loc(net.file, line, 1) if line else None


def step_ms(net: ir.LNetwork) -> float:
    """NEST's resolution: the network's step in ms (a unitless step is in ms)."""
    h = net.dt * 1e3 if net.dt_unit is not None else float(net.dt)
    tics = round(h * 1000)
    if tics < 1 or abs(h * 1000 - tics) > 1e-6 * max(1.0, h * 1000):
        raise unsupported(TITLE, f"the step dt of network '{net.name}'",
                          f"{h:g} ms is not a multiple of NEST's time grid (1 us)",
                          _loc(net, net.source_line))
    return tics / 1000.0


def time_unit_ms(net: ir.LNetwork, neuron: ir.LNeuron, h_ms: float) -> float:
    """ms per time unit of a neuron: 1000 with units, else one step of the network
    (a unitless network's step is in ms, so its unit is 1 ms)."""
    if neuron.uses_units:
        return 1e3
    return h_ms / float(neuron.dt if neuron.dt else 1.0)


def make_plan(net: ir.LNetwork, W: dict[str, np.ndarray] | None = None) -> Plan:
    """Match every neuron layer and plan the projections; raises Unsupported."""
    W = W or {}
    net = refractory.as_declared(net)  # NEST's models hold the period themselves
    h = step_ms(net)
    pops: dict[str, Population] = {}
    conns: list[Connection] = []
    drives: list[Drive] = []
    kinds = {la.name: la.kind for la in net.layers}
    for la in net.layers:
        if la.kind == "input":
            continue
        if la.kind != "neuron":  # the declared capabilities refuse these first
            raise unsupported(TITLE, f"layer '{la.name}' ({la.op or la.kind})",
                              "NEST networks hold neurons only", _loc(net, la.source_line))
        params = _weights.layer_params(la, W)
        m = match_layer(la, params, h, time_unit_ms(net, la.neuron, h), net.file)
        pops[la.name] = Population(la, m, math.prod(la.shape))
        for p in la.projections:
            where = _loc(net, p.source_line)
            what = f"the {p.kind} projection '{p.param_name}'"
            if kinds.get(p.source) == "input":
                jump = m.jumps.get(p.target_input)
                if jump is None and p.target_input not in m.currents:
                    raise unsupported(TITLE, what, f"the input '{p.target_input}' of "
                                      f"{m.model} is read by nothing NEST has", where)
                drives.append(Drive(p, p.source, la.name, p.target_input,
                                    jump[0] if jump else None,
                                    jump[1] if jump else m.currents[p.target_input]))
                continue
            if p.source_state is not None:
                raise unsupported(TITLE, what, f"it reads the state '{p.source}."
                                  f"{p.source_state}'; NEST connections carry spikes", where)
            if p.kind == "conv2d":
                raise unsupported(TITLE, what, "NEST connects neurons with weight arrays; a "
                                  "convolution between neuron layers is not planned (feed it "
                                  "from an input layer)", where)
            if p.bias:
                raise unsupported(TITLE, what, "a bias is a constant input every step; NEST "
                                  "connections carry spikes", where)
            jump = m.jumps.get(p.target_input)
            if jump is None:
                raise unsupported(TITLE, what, f"spikes reach NEST's {m.model} as jumps; the "
                                  f"input '{p.target_input}' is a current (held over the "
                                  "step)", where)
            lead = m.lead
            mapped = max(p.delay, 1 + lead)
            conns.append(Connection(p, p.source, la.name, jump[0], jump[1], mapped - lead,
                                    mapped))
    for o in net.outputs:
        if o.pre_reset:
            raise unsupported(TITLE, f"output '{o.name}'", "NEST records the states after the "
                              "reset only", _loc(net, net.source_line))
        if o.state is not None and o.layer in pops:
            pop = pops[o.layer]
            recordable = set(pop.match.states) | {s.state for s in pop.match.syn} | {
                s.params.get("_I") for s in pop.match.syn}
            if pop.match.kind == "alpha":
                recordable -= {s.state for s in pop.match.syn}
            if o.state not in recordable:
                raise unsupported(TITLE, f"output '{o.name}'", f"NEST's {pop.match.model} "
                                  f"cannot record '{o.state}'", _loc(net, net.source_line))
    notes = sorted({n for p in pops.values() for n in p.match.notes})
    return Plan(net, h, pops, conns, drives, notes)


def schedule(net: ir.LNetwork, plan: Plan | None = None) -> ir.LNetwork:
    """The network whose reference run NEST reproduces: every projection between
    neuron layers with its delay raised to what NEST can deliver (the network
    itself when nothing changes)."""
    plan = plan or make_plan(net)
    mapped = {(c.dst, c.proj.param_name): c.mapped for c in plan.connections}
    if all(c.mapped == c.proj.delay for c in plan.connections):
        return net
    layers = []
    for la in net.layers:
        projs = tuple(p.model_copy(update={"delay": mapped[(la.name, p.param_name)]})
                      if (la.name, p.param_name) in mapped else p for p in la.projections)
        layers.append(la.model_copy(update={"projections": projs}))
    return net.model_copy(update={"layers": tuple(layers)})


# ------------------------------------------------------------------ weights and signs
@functools.lru_cache(maxsize=8)
def _mask(seed: int, p: float, n_out: int, n_in: int) -> np.ndarray:
    return np.asarray(_weights.mask_values(seed, p, n_out * n_in), dtype=bool).reshape(
        n_out, n_in)


def sparse_mask(p: ir.LProjection) -> np.ndarray:
    """The fixed mask of a ``sparse`` projection (every target's,
    :func:`spikedsl.lowering.weights.sparse_mask`), drawn once per run."""
    return _mask(int(p.seed), float(p.p), math.prod(p.out_shape), math.prod(p.in_shape))


@dataclass
class Synapses:
    """The synapses of a connection, in NEST units (before NEST's sign rule):
    ``dense`` values (out, in), ``one_to_one`` values (out,), ``sparse`` values
    at the pairs (post[k], pre[k]) of the mask."""

    kind: str
    values: np.ndarray
    post: np.ndarray | None = None
    pre: np.ndarray | None = None
    shape: tuple[int, int] = (0, 0)

    def propagate(self, z: np.ndarray) -> np.ndarray:
        """What spikes ``z`` [B, in] deliver, [B, out]."""
        if self.kind == "dense":
            return z @ self.values.T
        if self.kind == "one_to_one":
            return z * self.values
        from scipy.sparse import csr_matrix

        m = csr_matrix((self.values, (self.post, self.pre)), shape=self.shape)
        return np.asarray((m @ z.T).T)


def synapses(c: Connection, W: dict[str, np.ndarray]) -> Synapses:
    """The effective weights of a connection (sign applied) times the target's
    NEST weight per unit."""
    p = c.proj
    key = f"{p.param_name}.weight"
    n_out, n_in = math.prod(p.out_shape), math.prod(p.in_shape)
    f = np.broadcast_to(np.asarray(c.factor, dtype=np.float64).reshape(-1), (n_out,))
    if p.kind == "dense":
        w, _ = _weights.projection_weights(p, W)
        return Synapses("dense", np.asarray(w, dtype=np.float64).reshape(n_out, n_in)
                        * f[:, None], shape=(n_out, n_in))
    if p.kind == "sparse":
        post, pre = _weights.sparse_pairs(p)  # the mask's pairs, without the (out, in) matrix
        w = (np.asarray(W[key], dtype=np.float64).reshape(n_out, n_in)[post, pre] if key in W
             else np.full(len(post), p.weight if p.weight is not None else 1.0))
    else:
        w = np.asarray(W[key], dtype=np.float64).reshape(-1) if key in W else np.full(
            n_out, p.weight if p.weight is not None else 1.0)
        w = np.broadcast_to(w, (n_out,)).astype(np.float64)
        post = pre = None
    if p.sign == "excitatory":
        w = np.abs(w)
    elif p.sign == "inhibitory":
        w = -np.abs(w)
    if p.kind == "sparse":
        return Synapses("sparse", w * f[post], post, pre, (n_out, n_in))
    return Synapses("one_to_one", w * f, shape=(n_out, n_in))


def place_channels(plan: Plan, W: dict[str, np.ndarray],
                   drive_values: dict[int, np.ndarray]) -> None:
    """Put each synaptic state on one of NEST's two channels, from the signs of
    what it receives (NEST routes a positive weight to the excitatory channel
    and a negative one to the inhibitory); raises Unsupported where NEST cannot.
    ``drive_values``: id(drive) -> its NEST-unit jumps."""
    net = plan.net
    for pop in plan.populations.values():
        m = pop.match
        if not m.syn:
            continue
        pos = {s.state: False for s in m.syn}
        neg = dict(pos)
        where: dict[str, str] = {}
        for c in plan.connections:
            if c.dst == pop.name and c.state in pos:
                x = synapses(c, W).values
                pos[c.state] |= bool(np.any(x > 0))
                neg[c.state] |= bool(np.any(x < 0))
                where.setdefault(c.state, c.proj.param_name)
        for d in plan.drives:
            if d.dst == pop.name and d.state in pos:
                x = drive_values[id(d)]
                pos[d.state] |= bool(np.any(x > 0))
                neg[d.state] |= bool(np.any(x < 0))
                where.setdefault(d.state, d.proj.param_name)
        syn = m.syn
        line = _loc(net, pop.layer.source_line)
        what = f"layer '{pop.name}' ({m.model})"
        if m.kind == "conductance":
            for s in syn:
                if neg[s.state]:
                    raise unsupported(TITLE, what, f"the conductance '{s.state}' receives "
                                      f"negative jumps (projection '{where[s.state]}'); NEST's "
                                      "conductances only grow at a spike (use sign = "
                                      "excitatory)", line)
            pop.placed = dict(zip(("ex", "in"), syn))
            continue
        if len(syn) == 1:
            pop.placed = {"ex": syn[0], "in": syn[0]}
            continue
        a, b = syn
        if not neg[a.state] and not pos[b.state]:
            pop.placed = {"ex": a, "in": b}
        elif not neg[b.state] and not pos[a.state]:
            pop.placed = {"ex": b, "in": a}
        elif np.allclose(a.params["tau_syn"], b.params["tau_syn"], rtol=1e-12) and np.allclose(
                a.per_unit, b.per_unit, rtol=1e-12):
            pop.placed = {"ex": a, "in": b}
            pop.merged = True
        else:
            mixed = a if (pos[a.state] and neg[a.state]) else b
            raise unsupported(TITLE, what, f"NEST's {m.model} sends positive weights to its "
                              "excitatory current and negative ones to the inhibitory one; "
                              f"'{mixed.state}' receives both (projection "
                              f"'{where.get(mixed.state, '?')}') and the two currents decay "
                              "differently (use sign = excitatory / inhibitory)", line)


def nest_weight(pop: Population, state: str, x: np.ndarray) -> np.ndarray:
    """NEST's weight for jumps ``x`` (NEST units) of ``state``: a conductance on the
    inhibitory channel is reached with a negative weight."""
    if pop.match.kind == "conductance" and pop.placed.get("in") is not None and \
            pop.placed["in"].state == state and pop.placed.get("ex") is not pop.placed["in"]:
        return -x
    return x


__all__ = ["LEAD", "Connection", "Drive", "Plan", "Population", "Synapses", "make_plan",
           "nest_weight", "place_channels", "schedule", "sparse_mask", "step_ms", "synapses"]
