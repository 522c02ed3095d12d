"""The target registry: what each target is, what it can express, how to call it.

One :class:`Target` per target (``reference``, ``torch``, ``norse``,
``brian2``, ``nir``, ``nest``) holds its entry points (functions of its module, imported
on first use), the Python packages it needs, and its declared
:class:`Capabilities`.  :func:`refusal` is the one answer to "can target T run
this lowered network (or neuron)?": ``None``, or the
:class:`~spikedsl.errors.Unsupported` error that every entry point of T raises
for it, with the same text (``T cannot express WHAT: REASON`` at the line of
the construct).  The CLI, the Python API (``Network.to_torch`` ...),
``spikedsl test`` (:mod:`spikedsl.runtime.testing`) and ``spikedsl verify`` all
go through this module::

    from spikedsl import targets
    targets.get("nir").caps.stages          # frozenset({'avgpool2d', ...})
    err = targets.refusal("norse", net)     # None or Unsupported
    src = targets.source("torch", net)      # generated code
    m = targets.build("norse", net, dtype=torch.float64)
    out = targets.run("brian2", net, inputs, record=["h.v"])   # numpy in, numpy out

A refusal has two parts.  The *declared* part compares the network with the
target's capabilities (layer kinds, projections, stages, cells, layer
functions, plasticity, neuron states and refractory periods): it needs no
target library, takes microseconds and runs first in every entry point
(:func:`require`).  The *target* part is the target's own ``check`` (the
symbolic match of each neuron to a Norse cell or a NIR node, the Brian2
schedule, the torch generator's naming rules), the code the entry points run
anyway.  Options that change the answer: ``forward_only`` (a run without
gradients, where Norse accepts any surrogate) and ``allow_approx`` (NIR drops
what it cannot hold, Norse approximates a surrogate).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from spikedsl.errors import Loc, Unsupported, unsupported
from spikedsl.lowering import refractory

# everything the language has (spikedsl/lowering/network.py); tests keep these in step
LAYER_KINDS = frozenset({"input", "neuron", "stage", "projection", "cell"})
PROJECTIONS = frozenset({"dense", "conv2d", "sparse", "one_to_one"})
STAGES = frozenset({"avgpool2d", "sumpool2d", "maxpool2d", "flatten", "batchnorm", "dropout"})
CELLS = frozenset({"slstm", "sconv_lstm"})
ENCODERS = frozenset({"direct", "poisson", "latency", "spikes"})
METHODS = frozenset({"exact", "euler", "rk2", "rk4", "exponential_euler", "update", "none"})


@dataclass(frozen=True)
class Capabilities:
    """What a target can express (checked by :func:`refusal` before it runs)."""

    projections: frozenset[str] = PROJECTIONS
    stages: frozenset[str] = STAGES
    cells: frozenset[str] = CELLS
    layer_functions: frozenset[str] | None = None  # None: every one-argument builtin
    encoders: frozenset[str] = ENCODERS
    methods: frozenset[str] = METHODS
    states: tuple[int, int | None] = (0, None)  # (fewest, most) states of a neuron
    refractory: bool = True
    plasticity: frozenset[str] = frozenset({"dense", "sparse", "one_to_one"})
    approximable: frozenset[str] = frozenset()  # refusals that allow_approx turns into notes
    delays: bool = True
    gradients: bool = False  # trains (autograd through the surrogate)
    units: bool = False  # keeps physical units in its code
    partial_traces: bool = False  # may leave out state traces it was asked to record
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float64",)
    neurons: str = "any lowered step"


@dataclass(frozen=True)
class Target:
    """One target: its module, needs, capabilities and entry points.

    ``entries`` maps a role to a function name of ``module``: ``source``
    (generated code; a ``nir.NIRGraph`` for nir), ``build`` (an object that
    runs), ``run`` (numpy in, numpy out: ``run(net, inputs, weights=,
    dtype=, record=)``), ``simulate``, ``export``, ``check`` (the target's own
    part of :func:`refusal`, raising :class:`Unsupported`), ``schedule`` (the
    network whose reference run the target reproduces, when its delivery
    differs: NEST's delays)."""

    name: str
    title: str  # as it appears in messages ("NIR cannot express ...")
    module: str
    summary: str
    requires: tuple[str, ...] = ()
    caps: Capabilities = field(default_factory=Capabilities)
    entries: Mapping[str, str] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)  # capability -> refusal reason

    def load(self):
        """The target's module (raises :class:`Unavailable`)."""
        why = unavailable(self.name)
        if why:
            raise Unavailable(why)
        return importlib.import_module(self.module)

    def entry(self, role: str) -> Callable:
        if role not in self.entries:
            have = ", ".join(sorted(self.entries))
            raise ValueError(f"the {self.name} target has no '{role}' entry point "
                             f"(it has: {have})")
        return getattr(self.load(), self.entries[role])

    def reason(self, key: str) -> str:
        return self.reasons.get(key) or _REASONS[key]


class Unavailable(Exception):
    """A target's module or one of the Python packages it needs is missing."""


_REASONS = {
    "projection": "no such projection in this target",
    "stage": "no such stage in this target",
    "cell": "no such cell in this target",
    "function": "only one-argument functions can wrap a projection",
    "encoder": "no such encoder in this target",
    "method": "no such integration method in this target",
    "plasticity": "a synapse rule needs one weight per synapse of a projection into a "
                  "neuron layer (conv2d shares its kernel)",
    "plasticity-target": "the target of a synapse rule must be a neuron layer",
    "states": "not supported",
    "refractory": "refractory periods are not supported",
    "delay": "delays are not supported",
}

_TORCH_LIKE = dict(gradients=True, devices=("cpu", "cuda"),
                   dtypes=("float16", "float32", "float64"))
# the targets that run a network as the built-in neuron models of a library
# (Norse cells, NIR nodes, NEST models): no LSTM cells, no synapse rules
_BUILT_IN_MODELS = dict(cells=frozenset(), plasticity=frozenset())
_GENERATED_MODULE = {"source": "convert", "build": "build", "run": "run", "check": "check"}

# each target's own words for what it refuses, where they say more than _REASONS
_OWN_REASONS: Mapping[str, Mapping[str, str]] = {
    "norse": {
        "cell": "Norse has no spiking LSTM cell (use the torch target)",
        "plasticity": "the Norse target has no learning rules (use the torch target)",
        "states": "Norse's cells have one or two",
        "refractory": "it has a refractory period; Norse's LIFRefracCell holds the "
                      "membrane differently (docs/norse.md)",
    },
    "brian2": {
        "cell": "Brian2 has no LSTM cells; simulate this network with the torch target",
        "plasticity": "a synapse rule needs one weight per synapse, a convolution "
                      "shares its kernel",
    },
    "nir": {
        "cell": "NIR has no LSTM cells",
        "stage:maxpool2d": "NIR has no max pooling node",
        "stage:batchnorm": "NIR has no batch normalisation node",
        "function": "NIR has no elementwise '{func}' node",
        "plasticity": "NIR graphs hold no learning rules",
        "delay": "NIR graphs have no step delays (allow_approx drops the delay)",
        "states": "NIR neurons have one (LIF, IF, LI, I) or two (CubaLIF, CubaLI)",
        "refractory": "it has a refractory period (holding {held} for {steps} steps "
                      "after a spike); NIR neurons have none (allow_approx drops it)",
    },
    "nest": {
        "cell": "NEST has no LSTM cells",
        "stage": "NEST networks hold neurons only",
        "function": "NEST networks hold neurons only",
        "plasticity": "the NEST target runs no synapse rules (use the torch or Brian2 target)",
        "states": "NEST's built-in models have one to nine",
    },
}

TARGETS: Mapping[str, Target] = MappingProxyType({t.name: t for t in (
    Target(
        name="reference", title="reference", module="spikedsl.runtime.reference",
        summary="the numpy interpreter of docs/semantics.md",
        caps=Capabilities(dtypes=("float32", "float64")),
        entries={"run": "run"},
    ),
    Target(
        name="torch", title="torch", module="spikedsl.targets.torch",
        summary="a standalone nn.Module (generated code that imports only torch)",
        requires=("torch",),
        caps=Capabilities(**_TORCH_LIKE),
        entries=_GENERATED_MODULE,
    ),
    Target(
        name="norse", title="Norse", module="spikedsl.targets.norse",
        summary="the torch module with neurons run as Norse cells (docs/norse.md)",
        requires=("torch", "norse"),
        caps=Capabilities(states=(1, 2), refractory=False, **_BUILT_IN_MODELS, **_TORCH_LIKE,
                          neurons="steps equal to a Norse cell (LIFBoxCell, IAFCell, "
                                  "LIBoxCell, LIFCell, LICell)"),
        entries=_GENERATED_MODULE,
        reasons=_OWN_REASONS["norse"],
    ),
    Target(
        name="brian2", title="brian2", module="spikedsl.targets.brian2",
        summary="a Brian2 script with physical units (docs/brian2.md)",
        requires=("brian2",),
        caps=Capabilities(cells=frozenset(), units=True,
                          devices=("runtime", "numpy", "cython", "cpp_standalone"),
                          dtypes=("float32", "float64")),
        entries={**_GENERATED_MODULE, "simulate": "simulate"},
        reasons=_OWN_REASONS["brian2"],
    ),
    Target(
        name="nir", title="NIR", module="spikedsl.targets.nir",
        summary="an NIR graph (docs/nir.md); run: exported, imported back, interpreted",
        requires=("nir",),
        caps=Capabilities(stages=frozenset({"avgpool2d", "sumpool2d", "flatten", "dropout"}),
                          layer_functions=frozenset(), states=(1, None),
                          refractory=False, delays=False, **_BUILT_IN_MODELS,
                          approximable=frozenset({"refractory", "delay"}), devices=(),
                          partial_traces=True,
                          neurons="steps equal to NIR's LIF, CubaLIF, IF, LI, I, CubaLI"),
        entries={"source": "convert", "build": "convert", "export": "export", "run": "run",
                 "check": "check"},
        reasons=_OWN_REASONS["nir"],
    ),
    Target(
        name="nest", title="NEST", module="spikedsl.targets.nest",
        summary="NEST's built-in neuron models, run with PyNEST (docs/nest.md)",
        requires=("nest",),
        caps=Capabilities(stages=frozenset(), layer_functions=frozenset(),
                          states=(1, 9), partial_traces=True, devices=(), **_BUILT_IN_MODELS,
                          neurons="steps equal to a NEST built-in (iaf_psc_delta, iaf_psc_exp, "
                                  "iaf_cond_exp, aeif_cond_exp, izhikevich, hh_psc_alpha)"),
        entries={"run": "run", "simulate": "run", "check": "check", "schedule": "schedule"},
        reasons=_OWN_REASONS["nest"],
    ),
)})

NAMES: tuple[str, ...] = tuple(TARGETS)  # the order of `spikedsl test` and `verify`
GENERATORS: tuple[str, ...] = tuple(n for n, t in TARGETS.items() if "source" in t.entries)


def get(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target '{name}' (known: {', '.join(NAMES)})")
    return TARGETS[name]


def unavailable(name: str) -> str | None:
    """Why target ``name`` cannot be loaded here (a missing package), or None."""
    t = get(name)
    for pkg in t.requires:
        try:
            found = importlib.util.find_spec(pkg) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"needs the Python package '{pkg}', which is not installed"
    return None


# ------------------------------------------------------------------ refusals
def _loc(file: str, line: int) -> Loc | None:
    return Loc(file, line, 1) if line else None


def _one_arg_functions() -> frozenset[str]:
    from spikedsl.ir.functions import FUNCTIONS

    return frozenset(f for f, row in FUNCTIONS.items() if row.arity == 1)


def _neuron(t: Target, n, file: str, options: Mapping) -> None:
    caps, approx = t.caps, bool(options.get("allow_approx"))
    n = refractory.declared(n)
    loc = _loc(*n.source(file))
    what = f"neuron '{n.name}'"
    lo, hi = caps.states
    k = len(n.states)
    if k < lo or (hi is not None and k > hi):
        raise unsupported(t.title, what, f"it has {k} states; {t.reason('states')}", loc)
    if n.method not in caps.methods:
        raise unsupported(t.title, what, f"method {n.method}: {t.reason('method')}", loc)
    if n.refractory > 0 and not caps.refractory and not (
            approx and "refractory" in caps.approximable):
        held = ", ".join(f"'{c}'" for c in n.clamp) or "no state"
        raise unsupported(t.title, what, t.reason("refractory").format(
            held=held, steps=n.refractory_steps), loc)


def _network(t: Target, net, options: Mapping) -> None:
    caps, file = t.caps, net.file
    approx = bool(options.get("allow_approx"))
    plastic = {lp.projection: lp for lp in net.plasticity}
    for la in net.layers:
        for p in la.projections:
            if p.kind not in caps.projections:
                raise unsupported(t.title, f"the {p.kind} projection '{p.param_name}'",
                                  t.reason("projection"), _loc(file, p.source_line))
            if p.delay > (1 if p.recurrent else 0) and not caps.delays and not (
                    approx and "delay" in caps.approximable):
                raise unsupported(t.title, f"the delay of the projection '{p.param_name}'",
                                  f"delay of {p.delay} steps: {t.reason('delay')}",
                                  _loc(file, p.source_line))
            lp = plastic.get(p.param_name)
            if lp is None:
                continue
            what = f"plasticity on the {p.kind} projection '{p.param_name}' " \
                   f"(rule '{lp.rule.name}')"
            if p.kind not in caps.plasticity:
                raise unsupported(t.title, what, t.reason("plasticity"),
                                  _loc(file, p.source_line))
            if la.kind != "neuron":
                raise unsupported(t.title, what, t.reason("plasticity-target"),
                                  _loc(file, p.source_line))
        line = _loc(file, la.source_line)
        if la.kind == "input" and (la.encoder or "direct") not in caps.encoders:
            raise unsupported(t.title, f"the {la.encoder} encoder of input '{la.name}'",
                              t.reason("encoder"), line)
        elif la.kind == "stage" and la.op not in caps.stages:
            raise unsupported(t.title, f"layer '{la.name}' ({la.op})",
                              t.reasons.get(f"stage:{la.op}") or t.reason("stage"), line)
        elif la.kind == "cell" and la.op not in caps.cells:
            raise unsupported(t.title, f"the {la.op} cell '{la.name}'", t.reason("cell"), line)
        elif la.kind == "projection" and la.func:
            allowed = caps.layer_functions
            if allowed is None:
                allowed = _one_arg_functions()
            if la.func not in allowed:
                raise unsupported(t.title, f"layer '{la.name}' ({la.func})",
                                  t.reason("function").format(func=la.func), line)
    seen: set[str] = set()
    for la in net.layers:
        if la.kind == "neuron" and la.neuron.name not in seen:
            seen.add(la.neuron.name)
            _neuron(t, la.neuron, file, options)


def _declared(t: Target, subject, options: Mapping) -> None:
    from spikedsl import ir

    if isinstance(subject, ir.LNeuron):
        file = options.get("file", "")  # a neuron checked on its own: the caller's file
        _neuron(t, subject.model_copy(update={"source_file": file}) if file else subject,
                file, options)
    else:
        _network(t, subject, options)


def require(name: str, subject, **options) -> None:
    """Raise the refusal of the declared capabilities of target ``name`` (fast;
    every entry point of every target calls it first)."""
    _declared(get(name), subject, options)


def refusal(name: str, subject, **options) -> Unsupported | None:
    """Can target ``name`` run ``subject`` (an ``ir.LNetwork`` or an
    ``ir.LNeuron``)?  None if it can, else the :class:`Unsupported` error its
    entry points raise (same text).  ``options``: ``forward_only``,
    ``allow_approx``, ``weights`` and whatever the target's ``check`` takes.
    A neuron is checked against the declared capabilities only.  Raises
    :class:`Unavailable` when the declared part accepts and the target's own
    check needs a package that is not installed."""
    from spikedsl import ir

    t = get(name)
    try:
        _declared(t, subject, options)
        if isinstance(subject, ir.LNetwork) and "check" in t.entries:
            t.entry("check")(subject, **options)
    except Unsupported as e:
        return e
    return None


def check(name: str, subject, **options) -> None:
    """Raise :func:`refusal`'s error, if any."""
    err = refusal(name, subject, **options)
    if err is not None:
        raise err


# ------------------------------------------------------------------ entry points
def _call(name: str, role: str, net, *args, **kw):
    require(name, net, allow_approx=kw.get("allow_approx", False))
    args, kw = _validated(name, role, net, args, kw)
    return get(name).entry(role)(net, *args, **kw)


def _validated(name: str, role: str, net, args: tuple, kw: dict) -> tuple[tuple, dict]:
    """Inputs and weights checked and resolved once, the same for every target
    (:mod:`spikedsl.runtime.validate`): encoded inputs ``[T, B, ...]``, and
    every array of the network (or None: the seeded initialisation)."""
    from spikedsl import ir
    from spikedsl.runtime import validate

    if not isinstance(net, ir.LNetwork):
        return args, kw
    if role in ("run", "simulate") and args:
        args = (validate.inputs(net, args[0]),) + tuple(args[1:])
    if role == "build" and kw.get("inputs") is not None:
        kw = {**kw, "inputs": validate.inputs(net, kw["inputs"])}
    given = kw.get("weights")
    if role == "source" and (name == "brian2" or "weights" not in kw):
        # the script reads its weights file when it runs: check the file, keep its name
        if isinstance(given, str | os.PathLike):
            validate.read_file(net, given)
        elif net.weights is not None:
            validate.read_file(net, net.weights)
        return args, kw
    w = validate.weights(net, given, seed=kw.get("seed", 0) or 0)
    if w is not None:
        kw = {**kw, "weights": w}
    return args, kw


def source(name: str, net, **kw):
    """Generated code of ``net`` for target ``name`` (an ``nir.NIRGraph`` for nir)."""
    return _call(name, "source", net, **kw)


def build(name: str, net, **kw):
    """A runnable object: ``nn.Module`` (torch, norse), ``(brian2.Network,
    handles)`` (brian2), ``nir.NIRGraph`` (nir)."""
    return _call(name, "build", net, **kw)


def schedule(name: str, net):
    """The network whose reference run target ``name`` reproduces: ``net``
    itself, or for NEST the network with the delays NEST delivers with
    (docs/nest.md); ``spikedsl verify`` compares under this mapping."""
    t = get(name)
    if "schedule" not in t.entries:
        return net
    return t.entry("schedule")(net)


def simulate(name: str, net, inputs=None, **kw) -> dict:
    """The ``simulate`` entry point (brian2: devices, batches, seeds)."""
    return _call(name, "simulate", net, inputs, **kw)


def export(name: str, net, **kw):
    """The ``export`` entry point (nir: ``(graph, notes)``)."""
    return _call(name, "export", net, **kw)


def run(name: str, net, inputs, *, weights=None, dtype=None, record=None, **kw) -> dict:
    """One forward run without gradients, the same call on every target:
    ``inputs`` a dict (or one array) ``[T, B, ...]`` encoded or ``[B, ...]``
    raw, ``weights`` a dict or a file, ``record`` extra traces (``"h.v"``);
    returns numpy arrays by output or record name."""
    import numpy as np

    out = _call(name, "run", net, inputs, weights=weights,
                dtype=np.float64 if dtype is None else dtype, record=record, **kw)
    return dict(out)


__all__ = [
    "CELLS", "ENCODERS", "GENERATORS", "LAYER_KINDS", "METHODS", "NAMES", "PROJECTIONS",
    "STAGES", "TARGETS", "Capabilities", "Target", "Unavailable", "build", "check", "export",
    "get", "refusal", "require", "run", "schedule", "simulate", "source", "unavailable",
]
