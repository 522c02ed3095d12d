"""``spikedsl verify``: run one network on every target with the same weights
and inputs and compare the results pairwise ("trained = simulated = deployed",
docs/testing.md).  Targets run through :mod:`spikedsl.targets`
(:func:`spikedsl.runtime.testing.run_target`): a refusal is the registry's
text.

    from spikedsl.runtime.verify import verify
    report = verify(net, steps=20, batch=4, seed=0, tol=1e-9)
    print(report.render())
    assert report.ok

Every target gets the same float64 weights (the initialisation every
target uses, :func:`spikedsl.lowering.weights.init_weights`; a network's own
weights file wins) and the same already-encoded float64 inputs
``[T, B, ...]`` drawn from ``numpy.random.default_rng(seed)``.  Each run
records every layer's output and every neuron state before and after reset;
for each pair of targets the report gives the fraction of equal spikes and
the largest absolute difference of the other traces.  A pair is ok when all
spikes agree and the difference is at most ``tol``.

A target that delivers spikes on its own schedule (NEST: at least one step of
delay per connection, docs/nest.md) is compared with the reference run of
the network it actually runs (:func:`spikedsl.targets.schedule`), reported
as ``reference@nest``, when that network differs from the spec's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl import targets as _targets
from spikedsl.errors import Unsupported
from spikedsl.runtime import reference as ref
from spikedsl.runtime.testing import TARGET_ORDER, Skip, run_target

__all__ = [
    "PairReport",
    "TargetRun",
    "VerifyReport",
    "make_inputs",
    "make_weights",
    "traces_of",
    "verify",
]


@dataclass
class TargetRun:
    name: str
    status: str  # "ok" | "skip" | "error"
    reason: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class PairReport:
    a: str
    b: str
    spikes_equal: int
    spikes_total: int
    max_diff: float
    max_diff_trace: str | None
    compared: list[str]
    first_spike_mismatch: str | None
    ok: bool

    @property
    def agreement(self) -> float:
        return 1.0 if self.spikes_total == 0 else self.spikes_equal / self.spikes_total


@dataclass
class VerifyReport:
    network: str
    steps: int
    batch: int
    seed: int
    tol: float
    weights_from: str
    runs: list[TargetRun]
    pairs: list[PairReport]
    activity: dict[str, float]
    dt: float = 1.0
    dt_unit: str | None = None

    @property
    def ran(self) -> list[TargetRun]:
        return [r for r in self.runs if r.status == "ok"]

    @property
    def ok(self) -> bool:
        return len(self.ran) >= 2 and all(p.ok for p in self.pairs) and not any(
            r.status == "error" for r in self.runs)

    @property
    def nonfinite(self) -> dict[str, list[str]]:
        """trace -> the targets whose values of it hold NaN or inf."""
        out: dict[str, list[str]] = {}
        for r in self.ran:
            for k, v in r.outputs.items():
                a = np.asarray(v)
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    out.setdefault(k, []).append(r.name)
        return out

    def render(self) -> str:
        lines = [(f"verify {self.network}: {self.steps} steps, batch {self.batch}, "
                  f"seed {self.seed}, float64, tol {self.tol:g}"),
                 f"weights: {self.weights_from}"]
        w = max(len(r.name) for r in self.runs) if self.runs else 8
        for r in self.runs:
            if r.status == "ok":
                lines.append(f"  {r.name:<{w}}  ran      {r.seconds:7.2f} s")
            else:
                tag = "skipped" if r.status == "skip" else "ERROR  "
                lines.append(f"  {r.name:<{w}}  {tag}  {r.reason}")
        for r in self.runs:
            if r.name.startswith("reference@"):
                t = r.name.split("@", 1)[1]
                lines.append(f"  ({r.name}: the reference on the network {t} runs, with the "
                             f"delays {t} delivers spikes with; docs/{t}.md)")
        if self.activity:
            act = ", ".join(f"{k} {100 * v:.1f} %" for k, v in self.activity.items())
            lines.append(f"spiking (fraction of entries that are spikes): {act}")
        if not self.pairs:
            lines.append("nothing to compare: fewer than two targets ran")
            return "\n".join(lines)
        rows = [("pair", "spikes equal", "max |diff|", "result")]
        for p in self.pairs:
            sp = f"{100 * p.agreement:.4f} % of {p.spikes_total}" if p.spikes_total else "-"
            md = "-" if not p.compared else f"{p.max_diff:.3g}" + (
                f" ({p.max_diff_trace})" if p.max_diff > self.tol and p.max_diff_trace else "")
            if p.ok:
                res = "ok"
            else:
                why = []
                if p.spikes_equal != p.spikes_total:
                    why.append(f"first differing spike {p.first_spike_mismatch}")
                if p.max_diff > self.tol:
                    why.append(f"difference above {self.tol:g}")
                if not p.compared:
                    why.append("no common traces")
                res = "MISMATCH: " + "; ".join(why)
            rows.append((f"{p.a} ~ {p.b}", sp, md, res))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            lines.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
        for k, who in self.nonfinite.items():
            lines.append(f"warning: {k} holds NaN or inf ({', '.join(who)}): the targets "
                         "agree on values that are not numbers")
        lines.append("verified: all targets agree" if self.ok else "NOT verified")
        return "\n".join(lines)


# ------------------------------------------------------------------ inputs & weights
def make_inputs(net: ir.LNetwork, steps: int, batch: int, seed: int = 0,
                scale: float = 1.0, spike_p: float = 0.2) -> dict[str, np.ndarray]:
    """Seeded float64 inputs, already encoded to ``[T, B, ...]``: ``direct``
    U(0, scale); ``poisson`` / ``latency`` encode U(0, 1) data; ``spikes``
    Bernoulli(spike_p)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, lay in enumerate(net.inputs):
        shape = (batch,) + tuple(lay.shape)
        if lay.encoder == "direct":
            out[lay.name] = rng.random((steps,) + shape) * scale
        elif lay.encoder == "spikes":
            out[lay.name] = (rng.random((steps,) + shape) < spike_p).astype(np.float64)
        else:
            data = rng.random(shape)
            out[lay.name] = ref.encode(lay, data, steps, seed=seed * 1000003 + k)
    return out


def make_weights(net: ir.LNetwork, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """The weights every target gets, and where they came from."""
    w = ref.init_weights(net, seed)
    how = f"the initialisation of every target (spikedsl.lowering.weights, seed {seed})"
    if net.weights:
        from spikedsl.runtime import validate

        w.update(validate.read_file(net, net.weights))
        how = f"{net.weights}"
    return w, how


def traces_of(net: ir.LNetwork) -> list[str]:
    """Every layer output and every neuron / cell state (after and before reset)."""
    out = []
    for lay in net.layers:
        if lay.kind == "input":
            continue
        out.append(lay.name)
        if lay.kind in ("neuron", "cell"):
            for s in lay.states:
                out += [f"{lay.name}.{s}", f"{lay.name}.{s}_pre"]
    out += [f"{lp.projection}.weight" for lp in net.plasticity]  # plastic weights
    return out


def _spike_keys(net: ir.LNetwork) -> set[str]:
    keys = set()
    for lay in net.layers:
        if (lay.kind == "neuron" and lay.neuron is not None and lay.neuron.spiking) or \
                lay.kind == "cell":
            keys.add(lay.name)
    for o in net.outputs:
        if o.state is None and o.reduce == "none" and o.layer in keys:
            keys.add(o.name)
    return keys


def _fmt_time(n: int, dt: float, unit: str | None) -> str:
    t = (n + 1) * dt
    if unit:
        from spikedsl.ir.units import parse_unit

        return f"t={t / parse_unit(unit)[0]:g} {unit}"
    return f"step {n}"


def compare(a: TargetRun, b: TargetRun, spike_keys: set[str], tol: float, dt: float = 1.0,
            dt_unit: str | None = None) -> PairReport:
    common = sorted(set(a.outputs) & set(b.outputs))
    eq = tot = 0
    max_diff, where = 0.0, None
    first: tuple[int, str] | None = None
    compared = []
    for k in common:
        x, y = np.asarray(a.outputs[k], np.float64), np.asarray(b.outputs[k], np.float64)
        if x.shape != y.shape:
            if x.size == y.size:
                y = y.reshape(x.shape)
            else:
                max_diff, where = math.inf, f"{k} (shapes {list(x.shape)} vs {list(y.shape)})"
                compared.append(k)
                continue
        compared.append(k)
        if k in spike_keys:
            same = (x != 0) == (y != 0)
            eq += int(same.sum())
            tot += same.size
            if not same.all():
                idx = np.argwhere(~same)
                n = int(idx[:, 0].min())
                row = idx[idx[:, 0] == n][0]
                desc = f"{k}[{_fmt_time(n, dt, dt_unit)}, batch {row[1]}" + (
                    f", neuron {tuple(int(i) for i in row[2:])}" if len(row) > 2 else "") + "]"
                if first is None or n < first[0]:
                    first = (n, desc)
        else:
            both_nan = np.isnan(x) & np.isnan(y)
            with np.errstate(invalid="ignore"):
                d = np.where(both_nan, 0.0, np.abs(x - y))
            d = np.where(np.isnan(d), np.inf, d)
            m = float(d.max()) if d.size else 0.0
            if where is None or m > max_diff:
                max_diff, where = m, k
    ok = bool(compared) and eq == tot and max_diff <= tol
    return PairReport(a.name, b.name, eq, tot, max_diff, where, compared,
                      first[1] if first else None, ok)


# ------------------------------------------------------------------ driver
def _reference_run(label: str, net: ir.LNetwork, inputs, weights, record,
                   runners) -> TargetRun:
    t0 = time.perf_counter()
    try:
        out = run_target("reference", net, dict(inputs), weights=weights, record=record,
                         runners=runners)
        return TargetRun(label, "ok", outputs=out, seconds=time.perf_counter() - t0)
    except Skip as s:
        return TargetRun(label, "skip", reason=str(s))


def verify(net: ir.LNetwork, *, targets: list[str] | None = None, steps: int | None = None,
           batch: int = 2, seed: int = 0, tol: float = 1e-9,
           weights: Mapping[str, np.ndarray] | None = None,
           inputs: Mapping[str, np.ndarray] | None = None, input_scale: float = 1.0,
           weight_scale: float = 1.0, runners: Mapping[str, Callable] | None = None,
           on_run: Callable[[TargetRun], None] | None = None) -> VerifyReport:
    """Run ``net`` on ``targets`` (default: every target) and compare pairwise."""
    if steps is not None:
        net = net.model_copy(update={"steps": int(steps)})
    T = net.steps
    names = list(targets) if targets else list(TARGET_ORDER)
    if weights is None:
        weights, how = make_weights(net, seed)
    else:
        from spikedsl.runtime import validate

        weights, how = validate.weights(net, dict(weights), seed=seed), "given"
    if weight_scale != 1.0:
        proj = {f"{p.param_name}.weight" for lay in net.layers for p in lay.projections
                if p.kind in ("dense", "conv2d")}
        weights = {k: (np.asarray(v) * weight_scale if k in proj else v)
                   for k, v in weights.items()}
        how += f", projection weights x {weight_scale:g}"
    if inputs is None:
        inputs = make_inputs(net, T, batch, seed, scale=input_scale)
    else:
        from spikedsl.runtime import validate

        inputs = validate.inputs(net, inputs)
    record = traces_of(net)
    runs: list[TargetRun] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            out = run_target(name, net, dict(inputs), weights=weights, record=record,
                             runners=runners)
            r = TargetRun(name, "ok", outputs=out, seconds=time.perf_counter() - t0)
        except Skip as s:
            r = TargetRun(name, "skip", reason=str(s))
        except Exception as e:
            import os

            if os.environ.get("SPIKEDSL_DEBUG"):
                raise
            msg = "; ".join(d.message for d in e.diagnostics) if hasattr(
                e, "diagnostics") else f"{type(e).__name__}: {e}"
            r = TargetRun(name, "error", reason=msg)
        runs.append(r)
        if on_run:
            on_run(r)
    spike_keys = _spike_keys(net)
    # targets on their own schedule: compared with the reference of that network
    apart: dict[str, TargetRun] = {}
    for r in list(runs):
        if r.status != "ok" or r.name not in _targets.TARGETS or \
                "schedule" not in _targets.get(r.name).entries:
            continue
        try:
            mapped = _targets.schedule(r.name, net)
        except (Unsupported, _targets.Unavailable):
            mapped = net
        if mapped is net:
            if not any(x.name == "reference" and x.status == "ok" for x in runs):
                runs.insert(0, _reference_run("reference", net, inputs, weights, record, runners))
            continue
        apart[r.name] = _reference_run(f"reference@{r.name}", mapped, inputs, weights, record,
                                       runners)
        runs.insert(runs.index(r), apart[r.name])
    ran = [r for r in runs if r.status == "ok" and r.name not in apart
           and not r.name.startswith("reference@")]
    pairs = [compare(ran[i], ran[j], spike_keys, tol, net.dt, net.dt_unit)
             for i in range(len(ran)) for j in range(i + 1, len(ran))]
    for name, base in apart.items():
        run = next(r for r in runs if r.name == name)
        if base.status == "ok":
            pairs.append(compare(base, run, spike_keys, tol, net.dt, net.dt_unit))
    activity = {}
    ran = ran or [r for r in runs if r.status == "ok"]
    base = ran[0].outputs if ran else {}
    for lay in net.layers:
        if lay.name in spike_keys and lay.name in base:
            activity[lay.name] = float(np.mean(np.asarray(base[lay.name]) != 0))
    return VerifyReport(network=net.name, steps=T, batch=batch, seed=seed, tol=tol,
                        weights_from=how, runs=runs, pairs=pairs, activity=activity, dt=net.dt,
                        dt_unit=net.dt_unit)
