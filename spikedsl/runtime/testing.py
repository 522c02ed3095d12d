"""Equation-level tests: run the ``test`` blocks of spec files on every target.

    from spikedsl.runtime import testing
    results = testing.run_file("specs/neurons/lif.spk")            # every test, every target
    results = testing.run_file(path, targets=["reference", "torch"], pattern="refractory")
    for r in results:
        print(r.line())

A neuron test is turned into an ordinary ``ir.LNetwork`` so that every
network target can run it: one ``direct`` input layer ``drive_<input>`` per
driven neuron input (shape ``[N]``, N = the number of values a drive gives,
1 by default), a ``one_to_one(weight = 1)`` projection into that input of the
neuron layer ``neuron``, ``dt`` = the test's dt and ``steps = ceil(run / dt)``.
Its outputs are the spikes ``neuron`` and the traces the expectations read
(``neuron.v``, ``neuron.v_pre``).  A network test runs the network itself
with the drives as (encoded) inputs, the same seeded weights on every target,
and the traces it reads added as outputs.

Time convention (docs/semantics.md): a spike in step n is at ``(n + 1)·dt``; ``X at t``
is the value after the step that ends at ``t`` (``at 0`` is the initial
value).  Drives are sampled at the start of each step (``t_n = n·dt``): a
drive ``from t0 to t1`` is on in the steps with ``t0 <= n·dt < t1``; an input
spike at time ``t`` is delivered in the step ``(n·dt, (n+1)·dt]`` that
contains it.  docs/testing.md has the whole syntax.

Targets are those of :mod:`spikedsl.targets`, run through its ``run``:
``reference`` (spikedsl/runtime/reference.py), ``torch``, ``norse``,
``brian2`` and ``nir`` (export to NIR, import back, run the imported network
on the reference).  A target whose library is not installed or that refuses
the network (:class:`spikedsl.errors.Unsupported`, the registry's text) is
*skipped* with the reason, never counted as passed.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir, targets
from spikedsl.errors import Loc, SpecError, Unsupported
from spikedsl.frontend.program import (
    TEST_DRIVES,
    TEST_SPIKE_FUNCS,
    TEST_TARGETS,
    Program,
    TestQuantity,
    bind_args,
    default_spike_output,
    parse_quantity,
)
from spikedsl.lowering.neuron import place
from spikedsl.runtime import reference as ref
from spikedsl.runtime.expectations import (
    CaseError,
    Check,
    _num,
    _nums,
    evaluate_expect,
)

__all__ = [
    "RUNNERS",
    "TARGET_ORDER",
    "Case",
    "CaseError",
    "Check",
    "Result",
    "Skip",
    "build_case",
    "run_case",
    "run_file",
    "run_program",
    "run_target",
    "summary",
]

NEURON_LAYER = "cell"
TARGET_ORDER = targets.NAMES  # reference, torch, norse, brian2, nir


class Skip(Exception):
    """A target cannot run a network (unknown, library missing, Unsupported)."""


# ------------------------------------------------------------------ results
@dataclass
class Result:
    """The outcome of one test on one target."""

    test: str
    target: str
    status: str  # "pass" | "fail" | "skip" | "error"
    loc: Loc | None = None
    checks: list[Check] = field(default_factory=list)
    reason: str = ""  # skip / error reason
    seconds: float = 0.0
    traces: dict | None = field(default=None, repr=False)  # what the run recorded
    net: ir.LNetwork | None = field(default=None, repr=False)  # the network it ran

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")

    @property
    def skipped(self) -> bool:
        return self.status == "skip"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def line(self) -> str:
        """One line: ``PASS  lif.spk::LIF reaches threshold [torch]`` (+ reason)."""
        tag = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}[self.status]
        head = f"{tag:<5} {os.path.basename(self.loc.file) if self.loc else '?'}::{self.test} " \
               f"[{self.target}]"
        if self.status == "skip" and self.reason:
            return f"{head}: {self.reason}"
        return head

    def details(self) -> str:
        """Multi-line explanation of a failure (empty when it passed)."""
        if self.status == "fail":
            return "\n".join(c.render() for c in self.failures)
        if self.status == "error":
            where = f"{self.loc.file}:{self.loc.line}:{self.loc.col}: " if self.loc else ""
            return f"{where}{self.reason}"
        return ""


def summary(results: Iterable[Result]) -> str:
    rs = list(results)
    p = sum(r.passed for r in rs)
    f = sum(r.failed for r in rs)
    s = sum(r.skipped for r in rs)
    return f"{p} passed, {f} failed, {s} skipped"


# ------------------------------------------------------------------ target runners
def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def _runner(name: str) -> Callable:
    """The registry's ``run`` of target ``name`` as a runner."""

    def run(net, inputs, weights=None, dtype=np.float64, record=None):
        return targets.run(name, net, inputs, weights=weights, dtype=dtype, record=record)

    run.partial = targets.get(name).caps.partial_traces  # type: ignore[attr-defined]
    return run


# name -> runner(net, inputs, weights=None, dtype=float64, record=None) -> dict
RUNNERS: dict[str, Callable] = {name: _runner(name) for name in TARGET_ORDER}


def run_target(target: str, net: ir.LNetwork, inputs, *, weights=None, dtype=np.float64,
               record: list[str] | None = None,
               runners: Mapping[str, Callable] | None = None) -> dict[str, np.ndarray]:
    """Run ``net`` on ``target`` (through :mod:`spikedsl.targets`, or a runner
    of ``runners``); returns numpy arrays.  Raises :class:`Skip` when the
    target cannot: unknown, a package missing, or refused (the registry's
    :class:`Unsupported` text)."""
    fn = dict(runners or {}).get(target)
    if fn is None:
        if target not in targets.TARGETS:
            raise Skip(f"unknown target '{target}'")
        why = targets.unavailable(target)
        if why:
            raise Skip(why)
        fn = RUNNERS[target]
    try:
        out = fn(net, inputs, weights=weights, dtype=dtype, record=record)
    except Unsupported as e:
        raise Skip("; ".join(d.message for d in e.diagnostics)) from None
    return {k: _to_numpy(v) for k, v in dict(out).items()}


# ------------------------------------------------------------------ cases
@dataclass
class Case:
    """A test block made runnable: the network, its (encoded) inputs, weights."""

    test: ir.Test
    program: Program
    kind: str  # "neuron" | "network"
    subject: str  # neuron or network name
    net: ir.LNetwork
    inputs: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None
    targets: tuple[str, ...]
    dt: float  # in the test's time unit (seconds when timed)
    steps: int
    timed: bool
    time_unit: str | None  # the unit dt was written in
    tolerance: float | None
    traces: dict[str | None, str]  # quantity operand -> output name
    initial: dict[str, np.ndarray]  # output name -> value at t = 0, [B, ...]
    batch: int = 1

    @property
    def name(self) -> str:
        return self.test.name

    @property
    def loc(self) -> Loc | None:
        return self.test.loc


def _settings(t: ir.Test) -> dict[str, ir.Setting]:
    return {s.name: s for s in t.settings}


def test_targets(t: ir.Test) -> tuple[str, ...]:
    s = _settings(t).get("targets")
    if s is None:
        return TARGET_ORDER
    v = s.value
    items = v.items if isinstance(v, ir.ListExpr) else (v,)
    names = [getattr(i, "id", "") for i in items]
    if "all" in names:
        return TARGET_ORDER
    return tuple(n for n in TARGET_ORDER if n in names)


class _Clock:
    def __init__(self, dt: float, steps: int):
        self.dt, self.steps = dt, steps
        self.t = np.arange(steps) * dt  # start of each step
        self.eps = 1e-9 * dt

    def window(self, d: ir.Drive) -> np.ndarray:
        t0 = _num(d.start, 0.0)
        t1 = _num(d.stop, math.inf)
        return (self.t >= t0 - self.eps) & (self.t < t1 - self.eps)

    def spike_step(self, t: float) -> int:
        return max(math.ceil(t / self.dt - 1e-9) - 1, 0)


def drive_values(d: ir.Drive, clock: _Clock, batch: int, seed: int, index: int,
                 base_dir: str) -> np.ndarray:
    """The values of one drive line: ``[T, B or 1, n]`` (n: values per step)."""
    T = clock.steps
    on = clock.window(d)
    v = d.value
    if isinstance(v, ir.Call) and v.func in TEST_DRIVES:
        args, problems = bind_args(v, *TEST_DRIVES[v.func])
        if problems:
            raise CaseError(f"bad arguments of {v.func}(...)", v.loc)
        kind = v.func
        if kind == "step":
            amp, onset = _num(args["amplitude"]), _num(args["onset"])
            base = _num(args.get("base"), 0.0)
            vals = np.where(clock.t >= onset - clock.eps, amp, base)
            out = vals[:, None, None]
        elif kind == "ramp":
            a, b = _num(args["initial"]), _num(args["final"])
            t0 = _num(d.start, 0.0)
            t1 = min(_num(d.stop, math.inf), T * clock.dt)
            span = max(t1 - t0, clock.dt)
            out = (a + (b - a) * (clock.t - t0) / span)[:, None, None]
        elif kind == "poisson":
            rate = _num(args["rate"])
            w = _num(args.get("weight"), 1.0)
            s = args.get("seed")
            rng = np.random.default_rng(int(_num(s)) if s is not None else [seed, index])
            p = min(max(rate * clock.dt, 0.0), 1.0)
            out = (rng.random((T, batch, 1)) < p) * w
        elif kind == "spikes":
            times = _nums(args["times"])
            w = _num(args.get("weight"), 1.0)
            trains = times if times and all(isinstance(x, list) for x in times) else [times]
            out = np.zeros((T, 1, len(trains)))
            for j, train in enumerate(trains):
                if any(isinstance(x, list) for x in train):
                    raise CaseError("spikes(...) takes a list of times or a list of lists",
                                    args["times"].loc)
                for t in train:
                    n = clock.spike_step(t)
                    if n < T:
                        out[n, 0, j] += w
        else:  # file
            path = args["path"].value  # type: ignore[union-attr]
            full = path if os.path.isabs(path) else os.path.join(base_dir, path)
            key = args["key"].value if "key" in args else None  # type: ignore[union-attr]
            scale = _num(args.get("scale"), 1.0)
            a = _load_array(full, key, args["path"].loc)
            a = np.asarray(a, dtype=np.float64) * scale
            if a.ndim == 1:
                a = a[:, None]
            elif a.ndim != 2:
                raise CaseError(f"{path}: expected an array [T] or [T, N], got shape "
                                f"{list(a.shape)}", args["path"].loc)
            out = np.zeros((T, 1, a.shape[1]))
            starts = np.nonzero(on)[0]
            s0 = int(starts[0]) if len(starts) else T
            k = min(len(a), T - s0)
            out[s0:s0 + k, 0, :] = a[:k]
    else:
        vals = np.asarray(_nums(v), dtype=np.float64).reshape(-1)
        out = np.broadcast_to(vals[None, None, :], (T, 1, len(vals)))
    return np.asarray(out, dtype=np.float64) * on[:, None, None]


def _load_array(path: str, key: str | None, loc) -> np.ndarray:
    if not os.path.isfile(path):
        raise CaseError(f"drive file '{path}' does not exist", loc)
    try:
        if path.endswith(".npz"):
            with np.load(path) as z:
                if key is None:
                    if len(z.files) != 1:
                        raise CaseError(f"{os.path.basename(path)} holds {z.files}; name one "
                                        f"with key = \"...\"", loc)
                    key = z.files[0]
                if key not in z.files:
                    raise CaseError(f"{os.path.basename(path)} has no array '{key}' "
                                    f"(it has {z.files})", loc)
                return np.asarray(z[key])
        if path.endswith(".npy"):
            return np.load(path)
        return np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=1)
    except CaseError:
        raise
    except (OSError, ValueError) as e:
        raise CaseError(f"cannot read drive file '{path}': {e}", loc) from None


def _combine(parts: list[np.ndarray], size: int | None, what: str, loc) -> np.ndarray:
    """Sum drive arrays [T, B|1, n] of one input; n is 1 or the common size."""
    sizes = {p.shape[2] for p in parts} - {1}
    if size is not None:
        sizes |= {size} if size != 1 else set()
    if len(sizes) > 1:
        raise CaseError(f"the drives of {what} give different numbers of values "
                        f"({', '.join(map(str, sorted(sizes)))})", loc)
    n = sizes.pop() if sizes else 1
    B = max(p.shape[1] for p in parts)
    out = np.zeros((parts[0].shape[0], B, n))
    for p in parts:
        out = out + p
    return out


def build_case(prog: Program, t: ir.Test, *, seed: int | None = None) -> Case:
    """Turn a checked test block into a runnable :class:`Case`."""
    st = _settings(t)
    seed = int(_num(st["seed"].value)) if seed is None and "seed" in st else (seed or 0)
    batch = int(_num(st["batch"].value)) if "batch" in st else 1
    tol = _num(st["tolerance"].value) if "tolerance" in st else None
    base_dir = os.path.dirname(t.loc.file) if t.loc and t.loc.file and not t.loc.file.startswith(
        "<") else os.getcwd()
    if "neuron" in st:
        return _neuron_case(prog, t, st, seed, batch, tol, base_dir)
    return _network_case(prog, t, st, seed, batch, tol, base_dir)


def _steps(t: ir.Test, st, dt: float) -> int:
    if t.run is not None:
        return max(1, math.ceil(_num(t.run) / dt - 1e-9))
    return int(_num(st["steps"].value))


def _neuron_case(prog, t, st, seed, batch, tol, base_dir) -> Case:
    v = st["neuron"].value
    name = v.func if isinstance(v, ir.Call) else v.id  # type: ignore[union-attr]
    overrides = {k.name: _num(k.value) for k in v.kwargs} if isinstance(v, ir.Call) else {}
    neuron = prog.neuron(name, **overrides)
    dt, unit = 1.0, None
    if "dt" in st:
        dt = _num(st["dt"].value)
        unit = st["dt"].value.unit if isinstance(st["dt"].value, ir.Num) else None
    neuron = place(neuron, dt, unit)
    timed = unit is not None
    steps = _steps(t, st, dt)
    clock = _Clock(dt, steps)
    per_input: dict[str, list[np.ndarray]] = {}
    for i, d in enumerate(t.drives):
        per_input.setdefault(d.name, []).append(drive_values(d, clock, batch, seed, i, base_dir))
    if not per_input and neuron.inputs:
        per_input[neuron.inputs[0]] = [np.zeros((steps, 1, 1))]
    arrays = {k: _combine(p, None, f"input '{k}'", t.loc) for k, p in per_input.items()}
    sizes = {a.shape[2] for a in arrays.values()} - {1}
    if len(sizes) > 1:
        raise CaseError("the drives give different numbers of values per step "
                        f"({', '.join(map(str, sorted(sizes)))}); use 1 or N everywhere", t.loc)
    N = sizes.pop() if sizes else 1
    shape = (N,)
    layers, projs, inputs = [], [], {}
    multi = len(arrays) > 1
    for k in neuron.inputs:
        if k not in arrays:
            continue
        lname = f"drive_{k}"
        a = np.broadcast_to(arrays[k], (steps, batch, N)).copy()
        inputs[lname] = a
        layers.append(ir.LLayer(name=lname, kind="input", shape=shape, encoder="direct",
                                encoder_args={}))
        projs.append(ir.LProjection(kind="one_to_one", source=lname, target_input=k,
                                    in_shape=shape, out_shape=shape, weight=1.0,
                                    param_name=f"{NEURON_LAYER}.{lname}" if multi else
                                    NEURON_LAYER))
    if not layers:  # a neuron without inputs: one unconnected input keeps targets happy
        layers.append(ir.LLayer(name="drive", kind="input", shape=shape, encoder="direct"))
        inputs["drive"] = np.zeros((steps, batch, N))
    layers.append(ir.LLayer(name=NEURON_LAYER, kind="neuron", shape=shape, neuron=neuron,
                            projections=tuple(projs), states=tuple(neuron.state_names)))
    traces: dict[str | None, str] = {}
    outputs: list[ir.LOutput] = []

    def want(key: str | None):
        if key in traces:
            return
        if key in (None, "spikes"):
            oname, state, pre = NEURON_LAYER, None, False
        else:
            base = key.removesuffix("_pre")
            oname, state, pre = f"{NEURON_LAYER}.{key}", base, key.endswith("_pre")
        traces[key] = oname
        if all(o.name != oname for o in outputs):
            outputs.append(ir.LOutput(name=oname, layer=NEURON_LAYER, state=state,
                                      pre_reset=pre, shape=shape))

    if neuron.spiking:
        want(None)
        traces["spikes"] = NEURON_LAYER
    for e in t.expects:
        q = parse_quantity(e.quantity)
        if q is not None:
            want(q.operand)
    net = ir.LNetwork(name=f"test_{name}", dt=dt, dt_unit=unit, steps=steps,
                      layers=tuple(layers), outputs=tuple(outputs),
                      file=t.loc.file if t.loc else "", source_line=t.loc.line if t.loc else 0)
    env: dict[str, float] = {p.name: p.value for p in neuron.params}
    initial = {}
    for s in neuron.states:
        x0 = float(ref.evaluate(s.init, env))
        full = np.full((batch, N), x0)
        initial[f"{NEURON_LAYER}.{s.name}"] = full
        initial[f"{NEURON_LAYER}.{s.name}_pre"] = full
    initial[NEURON_LAYER] = np.zeros((batch, N))
    return Case(test=t, program=prog, kind="neuron", subject=name, net=net, inputs=inputs,
                weights=None, targets=test_targets(t), dt=dt, steps=steps, timed=timed,
                time_unit=unit, tolerance=tol, traces=traces, initial=initial, batch=batch)


def _network_case(prog, t, st, seed, batch, tol, base_dir) -> Case:
    name = st["network"].value.id  # type: ignore[union-attr]
    net = prog.lowered[name]
    dt = net.dt
    steps = _steps(t, st, dt) if (t.run is not None or "steps" in st) else net.steps
    clock = _Clock(dt, steps)
    per_input: dict[str, list[np.ndarray]] = {}
    for i, d in enumerate(t.drives):
        per_input.setdefault(d.name, []).append(drive_values(d, clock, batch, seed, i, base_dir))
    inputs = {}
    for k, lay in enumerate(net.inputs):
        size = math.prod(lay.shape)
        if lay.name in per_input:
            raw = _combine(per_input[lay.name], size, f"input '{lay.name}'", t.loc)
        else:
            raw = np.zeros((steps, 1, 1))
        raw = np.broadcast_to(raw, (steps, batch, size)).reshape((steps, batch) + tuple(lay.shape))
        if lay.encoder == "latency":
            x = ref.encode(lay, raw[0], steps)
        elif lay.encoder == "poisson":
            rng_seed = int(lay.encoder_args.get("seed", 0)) + 1000003 * seed + k
            x = ref.encode(lay, raw, steps, seed=rng_seed)
        else:
            x = np.array(raw)
        inputs[lay.name] = x
    traces: dict[str | None, str] = {}
    outputs = list(net.outputs)
    default = default_spike_output(net)

    def want(key: str | None):
        if key in traces:
            return
        if key in (None, "spikes"):
            key2 = default
        else:
            key2 = key
        if key2 is None:
            raise CaseError(f"network '{name}' has no spike output", t.loc)
        lname, _, state = key2.partition(".")
        pre = state.endswith("_pre")
        base = state[:-4] if pre else state
        oname = f"{lname}.{state}" if state else lname
        traces[key] = oname
        if all(not (o.name == oname and o.reduce == "none") for o in outputs):
            if any(o.name == oname for o in outputs):
                oname = f"{oname}#trace"
                traces[key] = oname
            lay = net.layer(lname)
            outputs.append(ir.LOutput(name=oname, layer=lname, state=base or None, pre_reset=pre,
                                      shape=lay.shape))

    for e in t.expects:
        q = parse_quantity(e.quantity)
        if q is not None:
            want(q.operand)
    net2 = net.model_copy(update={"steps": steps, "outputs": tuple(outputs)})
    weights = ref.init_weights(net, seed)
    if net.weights:
        weights.update(ref.load_weights(net.weights))
    initial = {}
    for lay in net.layers:
        if lay.kind == "neuron" and lay.neuron is not None:
            env: dict[str, object] = {p.name: p.value for p in lay.neuron.params}
            for p in lay.neuron.params:
                if f"{lay.name}.{p.name}" in weights:
                    env[p.name] = weights[f"{lay.name}.{p.name}"]
            for s in lay.neuron.states:
                x0 = np.broadcast_to(ref.evaluate(s.init, env), (batch,) + tuple(lay.shape))
                initial[f"{lay.name}.{s.name}"] = np.array(x0, dtype=np.float64)
                initial[f"{lay.name}.{s.name}_pre"] = np.array(x0, dtype=np.float64)
            initial[lay.name] = np.zeros((batch,) + tuple(lay.shape))
    return Case(test=t, program=prog, kind="network", subject=name, net=net2, inputs=inputs,
                weights=weights, targets=test_targets(t), dt=dt, steps=steps,
                timed=net.dt_unit is not None, time_unit=net.dt_unit, tolerance=tol,
                traces=traces, initial=initial, batch=batch)


# ------------------------------------------------------------------ running
def _same_schedule(target: str, net: ir.LNetwork, runners) -> None:
    """A target that delivers spikes later than the network's schedule (NEST)
    cannot be held to the expectations of the spec's timing: skipped, with
    the way to compare it (``spikedsl verify``, which maps the delays)."""
    if dict(runners or {}).get(target) is not None or target not in targets.TARGETS:
        return
    t = targets.get(target)
    if "schedule" not in t.entries or targets.unavailable(target):
        return
    try:
        mapped = targets.schedule(target, net)
    except Unsupported as e:
        raise Skip("; ".join(d.message for d in e.diagnostics)) from None
    if mapped is not net:
        raise Skip(f"{t.title} delivers spikes between layers later than this network's "
                   f"schedule (docs/{target}.md); compare with `spikedsl verify -t {target}`")


def run_case(case: Case, target: str, *, runners: Mapping[str, Callable] | None = None) -> Result:
    """Run one case on one target and check every expectation."""
    import time

    t0 = time.perf_counter()
    try:
        _same_schedule(target, case.net, runners)
        out = run_target(target, case.net, case.inputs, weights=case.weights, runners=runners)
    except Skip as s:
        return Result(case.name, target, "skip", case.loc, reason=str(s))
    except SpecError as e:
        return Result(case.name, target, "error", case.loc,
                      reason="; ".join(d.message for d in e.diagnostics))
    except Exception as e:
        if os.environ.get("SPIKEDSL_DEBUG"):
            raise
        return Result(case.name, target, "error", case.loc,
                      reason=f"{target} raised {type(e).__name__}: {e}")
    checks = [evaluate_expect(case, e, out, target) for e in case.test.expects]
    status = "pass" if all(c.ok for c in checks) else "fail"
    missing = sorted({c.missing for c in checks if c.missing})
    runner = (dict(runners or {}).get(target) or RUNNERS.get(target))
    if missing and getattr(runner, "partial", False) and all(c.ok or c.missing for c in checks):
        n_ok = sum(c.ok for c in checks)
        return Result(case.name, target, "skip", case.loc, checks=checks,
                      reason=f"{target} cannot return {', '.join(map(repr, missing))} "
                             f"({n_ok} other expectation{'s' if n_ok != 1 else ''} passed)",
                      seconds=time.perf_counter() - t0)
    return Result(case.name, target, status, case.loc, checks=checks,
                  seconds=time.perf_counter() - t0, traces=out, net=case.net)


def save_traces(result: Result, directory: str) -> str | None:
    """Write what a test recorded as a simulation file that ``spikedsl plot``
    draws (raster, traces); returns the path, or None if nothing ran."""
    import re

    from spikedsl.runtime.plots import save_simulation

    if not result.traces or result.net is None:
        return None
    os.makedirs(directory, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", result.test).strip("_") or "test"
    arrays = {k: np.asarray(v) for k, v in result.traces.items()
              if np.asarray(v).ndim >= 2 and np.issubdtype(np.asarray(v).dtype, np.number)}
    spiking = [o.name for o in result.net.outputs if o.state is None and o.name in arrays]
    states = [k for k in arrays if k not in spiking]
    return save_simulation(os.path.join(directory, f"{slug}-{result.target}.npz"), arrays,
                           dt=result.net.dt, unit=result.net.dt_unit, spiking=spiking,
                           states=states, network=result.test, target=result.target)


def select(prog: Program, pattern: str | None = None) -> list[ir.Test]:
    """Tests of ``prog`` whose name matches ``pattern`` (substring, or a glob
    when it contains * ? [, case-insensitive)."""
    out = []
    for t in prog.tests:
        if pattern:
            p = pattern.lower()
            n = t.name.lower()
            if any(c in p for c in "*?["):
                if not fnmatch.fnmatchcase(n, p):
                    continue
            elif p not in n:
                continue
        out.append(t)
    return out


def tests_of(prog: Program, only_file: bool = True) -> list[ir.Test]:
    """Tests defined in the program's own file (not its imports)."""
    if not only_file:
        return list(prog.tests)
    return [t for t in prog.tests if t.loc is None or t.loc.file == prog.file]


def run_program(prog: Program, *, targets: Iterable[str] | None = None,
                pattern: str | None = None, runners: Mapping[str, Callable] | None = None,
                include_imports: bool = False,
                on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run the (matching) tests of a loaded program on their targets."""
    wanted = tuple(targets) if targets else None
    results: list[Result] = []
    mine = {id(t) for t in tests_of(prog, not include_imports)}
    for t in select(prog, pattern):
        if id(t) not in mine:
            continue
        names = test_targets(t)
        if wanted is not None:
            extra = [w for w in wanted if w not in TARGET_ORDER and runners and w in runners]
            names = tuple(n for n in names if n in wanted) + tuple(extra)
        try:
            case = build_case(prog, t)
        except CaseError as e:
            for n in names:
                r = Result(t.name, n, "error", e.loc or t.loc, reason=str(e))
                results.append(r)
                if on_result:
                    on_result(r)
            continue
        for n in names:
            r = run_case(case, n, runners=runners)
            results.append(r)
            if on_result:
                on_result(r)
    return results


def run_file(path, **kw) -> list[Result]:
    """Load ``path`` (raises SpecError) and run its tests; see :func:`run_program`."""
    from spikedsl.frontend.program import load

    return run_program(load(path), **kw)


_ = TEST_SPIKE_FUNCS, TEST_TARGETS, TestQuantity  # re-exported names
