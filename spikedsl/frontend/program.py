"""The pipeline (parse -> IR -> resolve -> check -> lower) and the Python API."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

from spikedsl import ir, targets
from spikedsl.checks.neuron import check_neuron, check_synapse
from spikedsl.errors import Collector, Loc, SpecError
from spikedsl.frontend.build import build_module
from spikedsl.frontend.parse import parse_text
from spikedsl.ir.exprs import EvalError, evaluate
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.units import ONE, TIME, ddiv, dim_str, parse_dim, parse_unit
from spikedsl.lowering.network import Scope, lower_network

# loss name -> its arguments and defaults (spikedsl/runtime/losses.py implements them;
# docs/training.md documents them)
LOSSES = {"ce_rate": {}, "mse_rate": {"on": 1.0, "off": 0.0},
          "mse_membrane": {"on": 1.0, "off": 0.0}, "ce_membrane": {"reduce": "sum"},
          "bce": {"target": None}, "masked_membrane": {"target": None, "theta": None},
          "mse": {"target": None}}
DATASETS = ("digits", "mnist", "fashion_mnist", "npz", "synthetic", "seqgraph", "tonic")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
METRICS = ("accuracy", "mse", "spike_mse", "loss", "rate")
TRAIN_SETTINGS = ("network", "data", "loss", "optimizer", "batch", "epochs", "seed", "metrics",
                  "schedule", "dtype", "device", "compile", "grad_clip", "readout",
                  "checkpoint_every")
TARGETS = targets.GENERATORS  # torch, norse, brian2, nir
TEST_SETTINGS = ("neuron", "network", "dt", "targets", "seed", "steps", "batch", "tolerance")
TEST_QUANTITIES = ("first_spike", "count", "spike_times", "rate", "spikes")
# test blocks (docs/testing.md; spikedsl/runtime/testing.py runs them)
TEST_TARGETS = targets.NAMES  # reference + TARGETS
TEST_SPIKE_FUNCS = ("first_spike", "count", "spike_times", "rate")
TEST_REDUCTIONS = ("max", "min", "mean", "sum", "last")
# drive function -> (argument names in positional order, required arguments)
TEST_DRIVES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "step": (("amplitude", "onset", "base"), ("amplitude", "onset")),
    "ramp": (("initial", "final"), ("initial", "final")),
    "poisson": (("rate", "seed", "weight"), ("rate",)),
    "spikes": (("times", "weight"), ("times",)),
    "file": (("path", "key", "scale"), ("path",)),
}


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
    except UnicodeDecodeError as e:
        # locate the first bad byte: line and column of the text before it
        good = data[: e.start].decode("utf-8", errors="replace")
        line = good.count("\n") + 1
        col = len(good) - (good.rfind("\n") + 1) + 1
        errors.sources[path] = data.decode("utf-8", errors="replace")
        errors.add("bad-encoding", Loc(file=path, line=line, col=col), offset=e.start,
                   byte=f"0x{data[e.start]:02x}")
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
        """Rules of a ``test`` block (syntax of drives and expectations:
        docs/testing.md; the runner is spikedsl/runtime/testing.py)."""
        errors = self._errors
        seen: dict[str, ir.Setting] = {}
        for s in t.settings:
            if s.name not in TEST_SETTINGS:
                errors.add("unknown-setting", s.loc, name=s.name, block=f"test \"{t.name}\"",
                           known=", ".join(TEST_SETTINGS))
                continue
            if s.name in seen:
                errors.add("duplicate-setting", s.loc, name=s.name)
                continue
            seen[s.name] = s
        subject_inputs: dict[str, str] = {}  # input -> dimension string
        subject_states: set[str] = set()
        state_dims: dict[str, str] = {}
        spiking = True
        spike_layers: set[str] = set()
        default_spikes = None  # the spike output a network test counts by default
        subject = None
        timed = False  # times carry units (dt has a unit)
        dt = 1.0
        if "neuron" in seen:
            if "network" in seen:
                errors.add("bad-setting", seen["network"].loc, name="network",
                           reason="a test has either 'neuron = ...' or 'network = ...', not both")
            v = seen["neuron"].value
            nm = v.func if isinstance(v, ir.Call) else v.id if isinstance(v, ir.Name) else "?"
            if nm not in self.neurons:
                errors.add("unknown-neuron", v.loc, name=nm, hint=self._hint(nm, self.neurons))
            else:
                n = self.neurons[nm]
                subject = nm
                dims = self.dims.get(nm, {})
                subject_inputs = {i.name: dims.get(i.name, "1") for i in n.inputs}
                subject_states = {s.name for s in n.states}
                state_dims = {s.name: dims.get(s.name, "1") for s in n.states}
                spiking = bool(n.spikes)
                if isinstance(v, ir.Call):
                    self._check_test_overrides(n, v)
                timed, dt = self._check_test_dt(seen.get("dt"), n, seen["neuron"])
        elif "network" in seen:
            v = seen["network"].value
            nm = v.id if isinstance(v, ir.Name) else "?"
            if nm not in self.network_blocks:
                errors.add("unknown-network", v.loc, name=nm, hint=self._hint(nm, self.network_blocks))
            else:
                net = self.network_blocks[nm]
                subject = nm
                subject_inputs = {i.name: "1" for i in net.inputs}
                subject_states = {la.name for la in net.layers}
                low = self.lowered.get(nm)
                if low is not None:
                    timed, dt = low.dt_unit is not None, low.dt
                    for la in low.layers:
                        subject_states |= {f"{la.name}.{s}" for s in la.states}
                        if la.neuron is not None:
                            for s in la.neuron.states:
                                state_dims[f"{la.name}.{s.name}"] = s.dim
                            if la.neuron.spiking:
                                spike_layers.add(la.name)
                    default_spikes = default_spike_output(low)
                    subject_states |= {o.name for o in low.outputs}
                    if "dt" in seen:
                        d = _test_num(seen["dt"].value)
                        if d is None or abs(d - low.dt) > 1e-12 * max(1.0, low.dt):
                            errors.add("bad-setting", seen["dt"].loc, name="dt",
                                       reason=f"a network test runs at the dt of network "
                                              f"'{nm}'; remove this setting")
                else:
                    subject = None  # errors of the network were reported
        else:
            errors.add("test-no-subject", t.loc)
        run = None
        network_test = "network" in seen and "neuron" not in seen
        if t.run is None and "steps" not in seen and not network_test:
            errors.add("test-no-run", t.loc)
        elif t.run is not None:
            run = self._check_test_time(t.run, timed, "run", positive=True)
        for key in ("steps", "batch", "seed"):
            if key in seen:
                x = _test_num(seen[key].value)
                lo = 0 if key == "seed" else 1
                if x is None or x != int(x) or x < lo:
                    errors.add("bad-setting", seen[key].value.loc, name=key,
                               reason="expected a positive integer" if lo else
                               "expected a non-negative integer")
                elif key == "steps" and run is None:
                    run = int(x) * dt
        if run is None and network_test and subject is not None:
            low = self.lowered.get(subject)
            run = low.steps * low.dt if low is not None else None
        if "tolerance" in seen:
            x = _test_num(seen["tolerance"].value)
            if x is None or x < 0:
                errors.add("bad-setting", seen["tolerance"].value.loc, name="tolerance",
                           reason="expected a non-negative number")
        if "targets" in seen:
            v = seen["targets"].value
            items = v.items if isinstance(v, ir.ListExpr) else (v,)
            for it in items:
                nm = getattr(it, "id", None)
                if nm not in TEST_TARGETS + ("all",):
                    errors.add("unknown-target", it.loc, name=nm or "?",
                               known=", ".join(TEST_TARGETS + ("all",)))
        if subject is None:
            return
        for d in t.drives:
            if d.name not in subject_inputs:
                errors.add("unknown-drive", d.loc, name=d.name, subject=subject,
                           inputs=", ".join(sorted(subject_inputs)) or "none")
                continue
            self._check_drive(d, parse_dim(subject_inputs[d.name]), timed)
        network = "network" in seen and "neuron" not in seen
        known = set(TEST_QUANTITIES) | subject_states | {f"{s}_pre" for s in subject_states}
        tdim = TIME if timed else ONE
        for e in t.expects:
            q = parse_quantity(e.quantity)
            nm = q.operand if q is not None else None
            ok = q is not None and (nm is None or nm in known)
            if ok and q.func in TEST_SPIKE_FUNCS and nm is not None:
                ok = nm == "spikes" or (network and nm in subject_states and "." not in nm)
            if not ok:
                qe = e.quantity
                label = _qname(qe) if not isinstance(qe, ir.Call) else f"{qe.func}(...)"
                errors.add("unknown-quantity", qe.loc, name=label or "?",
                           known=", ".join(sorted(set(TEST_QUANTITIES) | subject_states)))
                continue
            if q.func == "value" and e.at is None:
                errors.add("bad-argument", e.quantity.loc, what=f"expect {nm}",
                           reason=f"a trace needs a time, e.g. '{nm} at 5 ms', or a reduction "
                                  f"such as 'max({nm})'")
                continue
            if q.func == "first_spike" and e.at is not None:
                errors.add("bad-argument", e.at.loc, what="expect first_spike",
                           reason="first_spike takes no 'at'")
                continue
            if not network and not spiking and (q.func in TEST_SPIKE_FUNCS or nm == "spikes"):
                errors.add("bad-argument", e.quantity.loc, what=f"expect {q.func}",
                           reason=f"neuron '{subject}' has no spike condition")
                continue
            if e.at is not None:
                at = self._check_test_time(e.at, timed, "at", positive=False)
                if at is not None:
                    if at > 0 and abs(at / dt - round(at / dt)) > 1e-6 * max(1.0, at / dt):
                        errors.add("bad-argument", e.at.loc, what="at",
                                   reason=f"{_fmt_t(at, timed)} is not a multiple of dt "
                                          f"({_fmt_t(dt, timed)})")
                    elif run is not None and at > run * (1 + 1e-9):
                        errors.add("bad-argument", e.at.loc, what="at",
                                   reason=f"{_fmt_t(at, timed)} is after the end of the run "
                                          f"({_fmt_t(run, timed)})")
            base = nm[:-4] if nm is not None and nm.endswith("_pre") else nm
            if q.func in ("first_spike", "spike_times"):
                qdim = tdim
            elif q.func == "rate":
                qdim = ddiv(ONE, tdim)
            elif q.func == "count" or nm in (None, "spikes") or nm in spike_layers:
                qdim = ONE
            elif base in state_dims:
                qdim = parse_dim(state_dims[base])
            else:
                qdim = None  # values of a stage: any dimension
            if network and nm in (None, "spikes") and not default_spikes:
                errors.add("bad-argument", e.quantity.loc, what=f"expect {q.label}",
                           reason=f"network '{subject}' has no spike output; name a layer, "
                                  f"e.g. count(h)")
                continue
            self._check_expect_value(e, q, qdim)

    def _check_test_overrides(self, n: ir.Neuron, v: ir.Call) -> None:
        from spikedsl.checks.neuron import neuron_overrides, rule_ranges
        from spikedsl.lowering.neuron import param_values

        errors = self._errors
        overrides, nodes = neuron_overrides(n, n.name, v, errors, _test_num)
        try:
            env = param_values(n.params, overrides)
        except EvalError:
            return
        rule_ranges(n, env, errors, nodes)

    def _check_test_dt(self, s: ir.Setting | None, n: ir.Neuron, at: ir.Setting):
        """-> (timed, dt) of a neuron test."""
        from spikedsl.lowering.neuron import neuron_uses_units

        errors = self._errors
        timed, dt = False, 1.0
        if s is not None:
            x = _test_num(s.value)
            if x is None or x <= 0:
                errors.add("bad-setting", s.value.loc, name="dt",
                           reason="expected a positive duration")
                return False, 1.0
            if isinstance(s.value, ir.Num) and s.value.unit:
                if parse_unit(s.value.unit)[1] != TIME:
                    errors.add("dim-time", s.value.loc, what="dt", got=s.value.unit)
                    return False, 1.0
                timed = True
            dt = x
        if neuron_uses_units(n) and not timed:
            errors.add("dim-dt", (s.value.loc if s is not None else at.value.loc), neuron=n.name)
        return timed, dt

    def _check_test_time(self, e: ir.Expr, timed: bool, what: str, positive: bool):
        errors = self._errors
        x = _test_num(e)
        if x is None:
            errors.add("not-a-number", e.loc, what=what)
            return None
        d = _test_dim(e, errors)
        want = TIME if timed else ONE
        if d is not None and d != want and not (x == 0 and d == ONE):
            errors.add("dim-time" if timed else "bad-argument", e.loc, what=what,
                       got=_unit_text(e) or dim_str(d),
                       reason="dt has no unit, so times are plain numbers (in units of dt)")
            return None
        if x < 0 or (positive and x <= 0):
            errors.add("bad-argument", e.loc, what=what, reason="expected a positive time"
                       if positive else "expected a non-negative time")
            return None
        return x

    def _check_drive(self, d: ir.Drive, idim, timed: bool) -> None:
        errors = self._errors
        tdim = TIME if timed else ONE
        t0 = self._check_test_time(d.start, timed, "from", False) if d.start is not None else 0.0
        t1 = self._check_test_time(d.stop, timed, "to", True) if d.stop is not None else None
        if t0 is not None and t1 is not None and t1 <= t0:
            errors.add("bad-argument", d.stop.loc, what=f"drive {d.name}",
                       reason="the window is empty ('to' must come after 'from')")
        v = d.value
        if isinstance(v, ir.Call) and v.func not in FUNCTIONS:
            if v.func not in TEST_DRIVES:
                errors.add("bad-drive", v.loc, name=v.func, known=", ".join(
                    ["constant"] + list(TEST_DRIVES)))
                return
            args, problems = bind_args(v, *TEST_DRIVES[v.func])
            for code, loc, fields in problems:
                errors.add(code, loc, **fields)
            kinds = {"amplitude": idim, "base": idim, "initial": idim, "final": idim,
                     "weight": idim, "onset": tdim, "rate": ddiv(ONE, tdim), "scale": idim}
            for name, e in args.items():
                what = f"{v.func}({name} = ...)"
                if name in ("path", "key"):
                    if not isinstance(e, ir.Str):
                        errors.add("bad-argument", e.loc, what=what,
                                   reason='expected a string in quotes, e.g. "drive.npy"')
                    continue
                if name == "times":
                    self._check_times_list(e, tdim, what)
                    continue
                x = _test_num(e)
                if x is None:
                    errors.add("not-a-number", e.loc, what=what)
                    continue
                if name == "seed":
                    if x != int(x) or x < 0:
                        errors.add("bad-argument", e.loc, what=what,
                                   reason="expected a non-negative integer")
                    continue
                if name == "rate" and x < 0:
                    errors.add("bad-argument", e.loc, what=what, reason="a rate is not negative")
                self._check_dim(e, kinds[name], what)
            return
        items = _flat_items(v)
        for it in items:
            if _test_num(it) is None:
                if isinstance(it, ir.Name):
                    errors.add("undefined-name", it.loc, name=it.id,
                               hint="a drive is a number, a list of numbers or one of "
                                    + ", ".join(TEST_DRIVES))
                else:
                    errors.add("not-a-number", it.loc, what=f"drive {d.name}")
                continue
            self._check_dim(it, idim, f"drive {d.name}")

    def _check_times_list(self, e: ir.Expr, tdim, what: str) -> None:
        if not isinstance(e, ir.ListExpr):
            self._errors.add("bad-argument", e.loc, what=what,
                             reason="expected a list of times, e.g. [1 ms, 3 ms]")
            return
        for it in _flat_items(e):
            x = _test_num(it)
            if x is None:
                self._errors.add("not-a-number", it.loc, what=what)
            else:
                self._check_dim(it, tdim, what)

    def _check_dim(self, e: ir.Expr, want, what: str) -> None:
        if want is None:
            return
        d = _test_dim(e, self._errors)
        if d is None or d == want:
            return
        if d == ONE and _test_num(e) == 0:
            return
        self._errors.add("dim-compare", e.loc, left=f"{what} ({dim_str(want)})",
                         right=_unit_text(e) or dim_str(d))

    def _check_expect_value(self, e: ir.Expect, q: TestQuantity, qdim) -> None:
        errors = self._errors
        label = q.label
        if isinstance(e.value, ir.ListExpr):
            if q.func == "spike_times" and e.op not in ("==", "!="):
                errors.add("bad-argument", e.value.loc, what=f"expect {label}",
                           reason="spike_times compares with == or != only")
                return
        elif q.func == "spike_times":
            errors.add("bad-argument", e.value.loc, what=f"expect {label}",
                       reason="spike_times is a list, e.g. [7 ms, 14 ms]")
            return
        for it in _flat_items(e.value):
            if isinstance(it, ir.Name):
                errors.add("undefined-name", it.loc, name=it.id,
                           hint="an expected value is a number (with a unit where the "
                                "quantity has one)")
                continue
            if _test_num(it) is None:
                errors.add("not-a-number", it.loc, what=f"the expected value of {label}")
                continue
            self._check_dim(it, qdim, label)
        if e.tol is not None:
            x = _test_num(e.tol)
            if x is None or x < 0:
                errors.add("bad-argument", e.tol.loc, what="+-",
                           reason="the tolerance must be a non-negative number")
            else:
                self._check_dim(e.tol, qdim, f"the tolerance of {label}")

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
                raise KeyError(f"{self.file} has networks {', '.join(self.networks)}; name one "
                               "(--network on the command line)")
            name = next(iter(self.lowered))
        if name not in self.lowered:
            raise KeyError(f"no network '{name}' in {self.file} (it has {self.networks})")
        return NetworkHandle(self, self.lowered[name])

    def neuron(self, name: str, **overrides: float) -> ir.LNeuron:
        from spikedsl.lowering.neuron import lower_neuron

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


# ------------------------------------------------------------------ test blocks
@dataclass(frozen=True)
class TestQuantity:
    """What an ``expect`` measures: ``func`` is one of TEST_SPIKE_FUNCS,
    TEST_REDUCTIONS or ``"value"`` (a trace at a time); ``operand`` is
    ``"spikes"``, a state (``v``, ``v_pre``), a layer (``y``), a layer's
    state (``y.v``), or None (the subject's spikes)."""

    func: str
    operand: str | None = None

    __test__ = False  # not a pytest class

    @property
    def label(self) -> str:
        if self.func == "value":
            return self.operand or "?"
        return self.func if self.operand is None else f"{self.func}({self.operand})"


def parse_quantity(e: ir.Expr) -> TestQuantity | None:
    if isinstance(e, ir.Name):
        if e.id in TEST_SPIKE_FUNCS:
            return TestQuantity(e.id)
        return TestQuantity("value", e.id)
    if isinstance(e, ir.Attr):
        return TestQuantity("value", f"{e.obj}.{e.attr}")
    if isinstance(e, ir.Call) and not e.kwargs:
        if e.func in TEST_SPIKE_FUNCS and len(e.args) <= 1:
            if not e.args:
                return TestQuantity(e.func)
            nm = _qname(e.args[0])
            return TestQuantity(e.func, nm) if nm else None
        if e.func in TEST_REDUCTIONS and len(e.args) == 1:
            nm = _qname(e.args[0])
            return TestQuantity(e.func, nm) if nm else None
    return None


def bind_args(call: ir.Call, names: tuple[str, ...], required: tuple[str, ...] = ()):
    """Positional and keyword arguments of ``call`` -> ({name: expr}, problems),
    problems as (code, loc, fields) for :meth:`Collector.add`."""
    what = f"{call.func}(...)"
    out: dict[str, ir.Expr] = {}
    problems = []
    for i, a in enumerate(call.args):
        if i >= len(names):
            problems.append(("bad-argument", a.loc, {"what": what,
                                                     "reason": "too many positional arguments"}))
            break
        out[names[i]] = a
    for k in call.kwargs:
        if k.name not in names:
            problems.append(("unknown-argument", k.loc, {"what": call.func, "name": k.name,
                                                          "known": ", ".join(names)}))
        elif k.name in out:
            problems.append(("bad-argument", k.loc, {"what": what,
                                                     "reason": f"'{k.name}' is given twice"}))
        else:
            out[k.name] = k.value
    for r in required:
        if r not in out and not problems:
            problems.append(("missing-argument", call.loc, {"what": call.func, "name": r}))
    return out, problems


def default_spike_output(net: ir.LNetwork) -> str | None:
    """The layer whose spikes a network test counts when none is named:
    the first spike output (``output y``) of a spiking neuron layer."""
    for o in net.outputs:
        if o.state is None:
            lay = net.layer(o.layer)
            if lay.kind == "neuron" and lay.neuron is not None and lay.neuron.spiking:
                return o.layer
    return None


def _test_num(e: ir.Expr | None) -> float | None:
    if e is None or isinstance(e, ir.ListExpr | ir.Str):
        return None
    try:
        return float(evaluate(e, {}))
    except EvalError:
        return None


def _test_dim(e: ir.Expr, errors: Collector):
    from spikedsl.checks.neuron import Dims

    return Dims({}, {}, errors)(e)


def _flat_items(e: ir.Expr) -> list[ir.Expr]:
    if isinstance(e, ir.ListExpr):
        return [x for it in e.items for x in _flat_items(it)]
    return [e]


def _unit_text(e: ir.Expr) -> str | None:
    if isinstance(e, ir.Num):
        return e.unit or "1"
    if isinstance(e, ir.Neg):
        return _unit_text(e.operand)
    return None


def _fmt_t(x: float, timed: bool) -> str:
    if not timed:
        return f"{x:g}"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(x) >= scale or unit == "ns":
            return f"{x / scale:g} {unit}"
    return f"{x:g} s"


class NetworkHandle:
    """One lowered network and its targets (each call goes through
    :mod:`spikedsl.targets`, so a refusal has the same text everywhere)."""

    def __init__(self, program: Program, lowered: ir.LNetwork):
        self.program = program
        self.ir = lowered
        self.name = lowered.name

    def to_torch(self, **kw):
        """``nn.Module`` (``spikedsl.targets.torch.build``)."""
        return targets.build("torch", self.ir, **kw)

    def to_norse(self, **kw):
        """``nn.Module`` of Norse cells (``spikedsl.targets.norse.build``)."""
        return targets.build("norse", self.ir, **kw)

    def to_brian2(self, **kw):
        """Run in Brian2; outputs as numpy arrays (``spikedsl.targets.brian2.simulate``)."""
        return targets.simulate("brian2", self.ir, **kw)

    def to_nest(self, inputs=None, **kw):
        """Run in NEST; outputs as numpy arrays (``spikedsl.targets.nest.run``:
        ``weights``, ``record``, ``threads``)."""
        return targets.run("nest", self.ir, inputs, **kw)

    def to_nir(self, **kw):
        """``nir.NIRGraph`` (``spikedsl.targets.nir.convert``)."""
        return targets.source("nir", self.ir, **kw)

    def source(self, target: str = "torch", **kw) -> str:
        """Generated code for ``target``."""
        return targets.source(target, self.ir, **kw)

    def refusal(self, target: str, **options):
        """None if ``target`` can run this network, else the
        :class:`~spikedsl.errors.Unsupported` error its entry points raise."""
        return targets.refusal(target, self.ir, **options)

    @cached_property
    def layers(self) -> list[str]:
        return [la.name for la in self.ir.layers]


def load(path, **_kw) -> Program:
    path = os.path.abspath(os.fspath(path))
    errors = Collector()
    text = _read(path, errors)
    if text is None:
        errors.raise_if_any()
    return _program(path, text, errors)


def loads(text: str, file: str = "<string>", **_kw) -> Program:
    path = os.path.abspath(file) if not file.startswith("<") else file
    return _program(path, text, Collector())


def _program(path: str, text: str, errors: Collector) -> Program:
    """Parse ``text`` (the file ``path``) with its imports, check and lower it."""
    srcs = Sources()
    _collect(path, text, errors, srcs, [path], {path})
    errors.raise_if_any()
    prog = Program(path, srcs, errors)
    errors.raise_if_any()
    return prog


__all__ = ["NetworkHandle", "Program", "SpecError", "load", "loads"]
