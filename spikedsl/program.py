"""The pipeline (parse -> IR -> resolve -> check -> lower) and the Python API."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

from . import ir
from .build import build_module
from .check import check_neuron, check_synapse
from .errors import Collector, SpecError
from .network import Scope, lower_network
from .parse import parse_text

# loss name -> its arguments and defaults (spikedsl/losses.py implements them;
# docs/training.md documents them)
LOSSES = {"ce_rate": {}, "mse_rate": {"on": 1.0, "off": 0.0},
          "mse_membrane": {"on": 1.0, "off": 0.0}, "ce_membrane": {"reduce": "sum"},
          "bce": {"target": None}, "masked_membrane": {"target": None, "theta": None},
          "mse": {"target": None}}
DATASETS = ("digits", "mnist", "fashion_mnist", "npz", "synthetic", "seqgraph")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
METRICS = ("accuracy", "mse", "spike_mse", "loss", "rate")
TRAIN_SETTINGS = ("network", "data", "loss", "optimizer", "batch", "epochs", "seed", "metrics",
                  "schedule", "dtype", "device", "compile", "grad_clip", "readout")
TARGETS = ("torch", "norse", "brian2", "nir")
TEST_SETTINGS = ("neuron", "network", "dt", "targets", "seed", "steps", "batch", "tolerance")
TEST_QUANTITIES = ("first_spike", "count", "spike_times", "rate", "spikes")


@dataclass
class Sources:
    modules: list[ir.Module] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)


def _read(path: str, errors: Collector, loc=None) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        errors.add("import-missing", loc, path=path)
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        errors.add("bad-encoding", loc)
        return None


def _collect(path: str, text: str | None, errors: Collector, srcs: Sources,
             stack: list[str], done: set[str]) -> None:
    if text is None:
        return
    srcs.texts[path] = text
    errors.sources[path] = text
    tree = parse_text(text, path, errors)
    if tree is None:
        return
    mod = build_module(tree, path, errors)
    base = os.path.dirname(path)
    for imp in mod.imports:
        target = os.path.normpath(os.path.join(base, imp.path))
        if target in stack:
            cycle = " -> ".join(os.path.basename(p) for p in stack[stack.index(target):] + [target])
            errors.add("import-cycle", imp.loc, cycle=cycle)
            continue
        if target in done:
            continue
        done.add(target)
        if not os.path.isfile(target):
            errors.add("import-missing", imp.loc, path=imp.path)
            continue
        _collect(target, _read(target, errors, imp.loc), errors, srcs, stack + [target], done)
    srcs.modules.append(mod)


class Program:
    """A loaded, checked and lowered set of specs (one file and its imports)."""

    def __init__(self, file: str, srcs: Sources, errors: Collector):
        self.file = file
        self.sources = srcs.texts
        self.modules = srcs.modules
        self.neurons: dict[str, ir.Neuron] = {}
        self.synapses: dict[str, ir.Synapse] = {}
        self.network_blocks: dict[str, ir.Network] = {}
        self.trains: dict[str, ir.Train] = {}
        self.tests: list[ir.Test] = []
        self.lowered: dict[str, ir.LNetwork] = {}
        self.dims: dict[str, dict[str, str]] = {}
        self._errors = errors
        self._resolve()

    # -------------------------------------------------------------- resolve & check
    def _resolve(self) -> None:
        errors = self._errors
        first: dict[str, ir.Node] = {}
        for mod in self.modules:
            for kind, items, table in (("neuron", mod.neurons, self.neurons),
                                       ("synapse", mod.synapses, self.synapses),
                                       ("network", mod.networks, self.network_blocks),
                                       ("train", mod.trains, self.trains)):
                for it in items:
                    if it.name in first:
                        f = first[it.name].loc
                        errors.add("duplicate-block", it.loc, kind=kind, name=it.name,
                                   first=f"{os.path.basename(f.file)}:{f.line}" if f else "?")
                        continue
                    first[it.name] = it
                    table[it.name] = it  # type: ignore[index]
            self.tests.extend(mod.tests)
        bad: set[str] = set()
        for n in self.neurons.values():
            before = len(errors.diagnostics)
            self.dims[n.name] = check_neuron(n, errors)
            if len(errors.diagnostics) > before:
                bad.add(n.name)
        for s in self.synapses.values():
            self.dims[f"synapse:{s.name}"] = check_synapse(s, errors)
        scope = Scope(self.neurons, self.synapses, self.dims, bad)
        for net in self.network_blocks.values():
            base = os.path.dirname(net.loc.file) if net.loc else os.path.dirname(self.file)
            low = lower_network(net, scope, errors, base)
            if low is not None:
                self.lowered[net.name] = low
        for t in self.trains.values():
            self._check_train(t)
        for t in self.tests:
            self._check_test(t)

    def _check_train(self, t: ir.Train) -> None:
        errors = self._errors
        seen = {}
        for s in t.settings:
            if s.name in seen:
                errors.add("duplicate-setting", s.loc, name=s.name)
            seen[s.name] = s
            if s.name not in TRAIN_SETTINGS:
                errors.add("unknown-setting", s.loc, name=s.name, block=f"train '{t.name}'",
                           known=", ".join(TRAIN_SETTINGS))
        if "network" not in seen:
            errors.add("missing-setting", t.loc, block="train", name=t.name, setting="network")
        else:
            v = seen["network"].value
            if not isinstance(v, ir.Name) or v.id not in self.network_blocks:
                nm = v.id if isinstance(v, ir.Name) else "?"
                errors.add("unknown-network", v.loc, name=nm, hint=self._hint(nm, self.network_blocks))

        def head(e):
            return e.func if isinstance(e, ir.Call) else e.id if isinstance(e, ir.Name) else None

        for key, known, code in (("loss", LOSSES, "unknown-loss"), ("data", DATASETS, "unknown-data"),
                                 ("optimizer", OPTIMIZERS, "unknown-optimizer"),
                                 ("schedule", SCHEDULES, "unknown-schedule")):
            if key in seen:
                h = head(seen[key].value)
                if h not in known:
                    errors.add(code, seen[key].value.loc, name=h or "?", known=", ".join(known))
        if "metrics" in seen:
            v = seen["metrics"].value
            items = v.items if isinstance(v, ir.ListExpr) else (v,)
            for it in items:
                h = head(it)
                if h not in METRICS:
                    errors.add("unknown-metric", it.loc, name=h or "?", known=", ".join(METRICS))
        if "loss" in seen and head(seen["loss"].value) == "masked_membrane":
            tgt = seen["loss"].value.kw("target") if isinstance(seen["loss"].value, ir.Call) \
                else None
            if tgt is not None and "network" in seen:
                net = self.network_blocks.get(getattr(seen["network"].value, "id", ""))
                if net is not None and isinstance(tgt, ir.Name) and tgt.id not in {
                        i.name for i in net.inputs} | {la.name for la in net.layers}:
                    errors.add("undefined-name", tgt.loc, name=tgt.id,
                               hint="the target is an input of the network")

    def _check_test(self, t: ir.Test) -> None:
        errors = self._errors
        seen = {s.name: s for s in t.settings}
        for s in t.settings:
            if s.name not in TEST_SETTINGS:
                errors.add("unknown-setting", s.loc, name=s.name, block=f"test \"{t.name}\"",
                           known=", ".join(TEST_SETTINGS))
        subject_inputs: set[str] = set()
        subject_states: set[str] = set()
        subject = None
        if "neuron" in seen:
            v = seen["neuron"].value
            nm = v.func if isinstance(v, ir.Call) else v.id if isinstance(v, ir.Name) else "?"
            if nm not in self.neurons:
                errors.add("unknown-neuron", v.loc, name=nm, hint=self._hint(nm, self.neurons))
            else:
                n = self.neurons[nm]
                subject = nm
                subject_inputs = {i.name for i in n.inputs}
                subject_states = {s.name for s in n.states}
                if isinstance(v, ir.Call):
                    pn = {p.name for p in n.params}
                    for k in v.kwargs:
                        if k.name not in pn:
                            errors.add("unknown-override", k.loc, neuron=nm, name=k.name,
                                       params=", ".join(sorted(pn)))
        elif "network" in seen:
            v = seen["network"].value
            nm = v.id if isinstance(v, ir.Name) else "?"
            if nm not in self.network_blocks:
                errors.add("unknown-network", v.loc, name=nm, hint=self._hint(nm, self.network_blocks))
            else:
                net = self.network_blocks[nm]
                subject = nm
                subject_inputs = {i.name for i in net.inputs}
                subject_states = {la.name for la in net.layers}
                low = self.lowered.get(nm)
                if low is not None:
                    for la in low.layers:
                        subject_states |= {f"{la.name}.{s}" for s in la.states}
                    subject_states |= {o.name for o in low.outputs}
        else:
            errors.add("test-no-subject", t.loc)
        if t.run is None:
            errors.add("test-no-run", t.loc)
        if "targets" in seen:
            v = seen["targets"].value
            items = v.items if isinstance(v, ir.ListExpr) else (v,)
            for it in items:
                nm = getattr(it, "id", None)
                if nm not in TARGETS + ("all",):
                    errors.add("unknown-target", it.loc, name=nm or "?",
                               known=", ".join(TARGETS + ("all",)))
        if subject is None:
            return
        for d in t.drives:
            if d.name not in subject_inputs:
                errors.add("unknown-drive", d.loc, name=d.name, subject=subject,
                           inputs=", ".join(sorted(subject_inputs)) or "none")
        known = set(TEST_QUANTITIES) | subject_states | {f"{s}_pre" for s in subject_states}
        for e in t.expects:
            q = e.quantity
            if isinstance(q, ir.Call):
                inner = q.args[0] if q.args else None
                nm = q.func
                ok = nm in ("count", "rate", "first_spike", "spike_times", "mean", "max", "min",
                            "sum", "last") and (inner is None or _qname(inner) in known | {
                                "spikes"} | set(subject_states))
            else:
                nm = _qname(q)
                ok = nm in known
            if not ok:
                errors.add("unknown-quantity", q.loc, name=_qname(q) if not isinstance(
                    q, ir.Call) else f"{q.func}(...)",
                    known=", ".join(sorted(set(TEST_QUANTITIES) | subject_states)))

    @staticmethod
    def _hint(name, table) -> str:
        import difflib

        close = difflib.get_close_matches(name or "", sorted(table), n=1)
        return f"did you mean '{close[0]}'?" if close else ""

    # -------------------------------------------------------------- API
    @property
    def networks(self) -> list[str]:
        return list(self.lowered)

    def network(self, name: str | None = None) -> NetworkHandle:
        if name is None:
            if len(self.lowered) != 1:
                raise KeyError(f"{self.file} has networks {self.networks}; name one")
            name = next(iter(self.lowered))
        if name not in self.lowered:
            raise KeyError(f"no network '{name}' in {self.file} (it has {self.networks})")
        return NetworkHandle(self, self.lowered[name])

    def neuron(self, name: str, **overrides: float) -> ir.LNeuron:
        from .lower import lower_neuron

        return lower_neuron(self.neurons[name], overrides, self.dims.get(name, {}))

    def to_json(self) -> str:
        import json

        data = {
            "file": self.file,
            "modules": [m.model_dump(mode="json") for m in self.modules],
            "lowered": {k: v.model_dump(mode="json") for k, v in self.lowered.items()},
        }
        return json.dumps(data, indent=2, sort_keys=False)


def _qname(e) -> str | None:
    if isinstance(e, ir.Name):
        return e.id
    if isinstance(e, ir.Attr):
        return f"{e.obj}.{e.attr}"
    return None


class NetworkHandle:
    """One lowered network and its targets."""

    def __init__(self, program: Program, lowered: ir.LNetwork):
        self.program = program
        self.ir = lowered
        self.name = lowered.name

    def to_torch(self, **kw):
        from .back.torch import build

        return build(self.ir, **kw)

    def to_norse(self, **kw):
        from .back.norse import build

        return build(self.ir, **kw)

    def to_brian2(self, **kw):
        from .back.brian2 import simulate

        return simulate(self.ir, **kw)

    def to_nir(self, **kw):
        from .back.nir import convert

        return convert(self.ir, **kw)

    def source(self, target: str = "torch", **kw) -> str:
        from .back import source

        return source(target, self.ir, **kw)

    @cached_property
    def layers(self) -> list[str]:
        return [la.name for la in self.ir.layers]


def load(path, **_kw) -> Program:
    path = os.path.abspath(os.fspath(path))
    errors = Collector()
    srcs = Sources()
    text = _read(path, errors)
    if text is None:
        errors.raise_if_any()
    _collect(path, text, errors, srcs, [path], {path})
    if errors:
        errors.raise_if_any()
    prog = Program(path, srcs, errors)
    errors.raise_if_any()
    return prog


def loads(text: str, file: str = "<string>", **_kw) -> Program:
    errors = Collector()
    srcs = Sources()
    path = os.path.abspath(file) if not file.startswith("<") else file
    _collect(path, text, errors, srcs, [path], {path})
    if errors:
        errors.raise_if_any()
    prog = Program(path, srcs, errors)
    errors.raise_if_any()
    return prog


__all__ = ["load", "loads", "Program", "NetworkHandle", "SpecError"]
