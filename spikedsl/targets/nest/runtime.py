"""Run a :class:`~.plan.Plan` with PyNEST and read the results back into the
output dict of every target (numpy ``[T, B, ...]``).

NEST is one simulation kernel per process: every run starts with
``nest.ResetKernel()``.  The batch runs as B copies of the network in one
simulation (populations per sample, no connection between copies).
"""

from __future__ import annotations

import os

import numpy as np

from spikedsl.runtime.arrays import NumpyArrays, reduce_steps
from spikedsl.targets.nest.plan import LEAD, Plan, nest_weight, place_channels, synapses


def drive_values(plan: Plan, enc: dict[str, np.ndarray], W: dict[str, np.ndarray],
                 batch: int) -> dict[int, np.ndarray]:
    """id(drive) -> what it delivers each step ``[T, B, N]`` in NEST units: the
    projection of the encoded input computed as the reference computes it
    (:mod:`spikedsl.runtime.interpreter`), times the neuron's factor."""
    from spikedsl.runtime.interpreter import _Weights

    A = NumpyArrays(np.float64)
    weights = _Weights(A, W, batch)
    out = {}
    for d in plan.drives:
        x = enc[d.src]
        T = x.shape[0]
        n = plan.populations[d.dst].size
        y = np.zeros((T, batch, n))
        for t in range(T):
            k = t - d.proj.delay
            if k >= 0:
                y[t] = np.asarray(weights.apply(d.proj, x[k])).reshape(batch, n)
        out[id(d)] = y * d.factor.reshape(-1)
    return out


def import_nest():
    """PyNEST, without its start-up banner on stdout (``PYNEST_QUIET``), and with
    OpenMP threads that sleep rather than spin while they wait
    (``OMP_WAIT_POLICY=passive`` unless set; it takes effect when NEST is the
    first to load OpenMP): on a machine shared with other work, spinning threads
    make two NEST threads 10 to 30 times slower than one (docs/benchmarks.md)."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import nest

    return nest


def _quiet(nest) -> None:
    try:
        nest.verbosity = nest.VerbosityLevel.ERROR
    except AttributeError:  # NEST < 3.9
        nest.set_verbosity("M_ERROR")


def _set(nodes, values: dict[str, object]) -> None:
    """Parameters per node (arrays) or shared (scalars)."""
    shared, per = {}, {}
    for k, v in values.items():
        a = np.asarray(v)
        if a.dtype == bool or a.ndim == 0:
            shared[k] = a.item()
        elif np.all(a == a.reshape(-1)[0]):
            shared[k] = float(a.reshape(-1)[0])
        else:
            per[k] = [float(x) for x in a.reshape(-1)]
    if shared:
        nodes.set(shared)
    if per:
        nodes.set(per)


def simulate(plan: Plan, enc: dict[str, np.ndarray], W: dict[str, np.ndarray], steps: int,
             batch: int, record: list[str], threads: int = 1,
             timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Build and run the NEST network; returns outputs and recorded traces.
    ``timings`` (if given) receives the seconds of ``build`` (populations,
    connections, generators, recorders), ``simulate`` (NEST's run, lead-in
    included) and ``collect``."""
    import time

    nest = import_nest()
    t0 = time.perf_counter()
    h = plan.h_ms
    _quiet(nest)
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": h, "local_num_threads": int(threads),
                          "print_time": False})
    drives = drive_values(plan, enc, W, batch)
    place_channels(plan, W, drives)
    # populations, one per sample
    nodes: dict[tuple[str, int], object] = {}
    for name, pop in plan.populations.items():
        params = pop.params()
        blocked = {**params, **pop.match.blockers}
        for b in range(batch):
            nc = nest.Create(pop.match.model, pop.size)
            _set(nc, blocked)
            _set(nc, pop.match.init)
            nodes[(name, b)] = nc
    ids = {key: np.asarray(nc.tolist(), dtype=np.int64) for key, nc in nodes.items()}
    # projections between neuron layers
    for c in plan.connections:
        syn = synapses(c, W)
        x = nest_weight(plan.populations[c.dst], c.state, syn.values)
        delay = c.delay * h
        for b in range(batch):
            pre, post = nodes[(c.src, b)], nodes[(c.dst, b)]
            if syn.kind == "dense":
                nest.Connect(pre, post, "all_to_all", {"weight": x, "delay": delay})
            elif syn.kind == "one_to_one":
                nest.Connect(pre, post, "one_to_one", {"weight": x, "delay": delay})
            elif len(x):  # sparse: the fixed mask of every target, as explicit pairs
                src, dst = ids[(c.src, b)][syn.pre], ids[(c.dst, b)][syn.post]
                nest.Connect(src, dst, "one_to_one",
                             {"weight": np.ascontiguousarray(x), "delay": np.full(len(x), delay)})
    # inputs: generators per neuron and sample
    _generators(nest, plan, drives, nodes, batch, steps)
    # recording
    spikes = {name: nest.Create("spike_recorder") for name in plan.populations}
    for (name, b), nc in nodes.items():
        nest.Connect(nc, spikes[name])
    wanted = _wanted(plan, record)
    meters = {}
    for name, states in wanted.items():
        recs = sorted({r for s in states for r in plan.populations[name].records()[s][0]})
        mm = nest.Create("multimeter", params={"record_from": recs, "interval": h})
        for b in range(batch):
            nest.Connect(mm, nodes[(name, b)])
        meters[name] = (mm, recs)
    # the lead-in: nothing spikes; then the states that moved start again
    t1 = time.perf_counter()
    nest.Simulate(LEAD * h)
    for (name, b), nc in nodes.items():
        pop = plan.populations[name]
        restore = {k: v for k, v in pop.params().items() if k in pop.match.blockers}
        _set(nc, restore)
        _set(nc, {k: v for k, v in pop.match.init.items() if k in pop.match.held})
    nest.Simulate((steps + 1) * h)  # one more: the multimeter's sample of the last step
    t2 = time.perf_counter()
    out = _collect(plan, ids, spikes, meters, wanted, enc, steps, batch, record, drives, W)
    if timings is not None:
        timings.update(build=t1 - t0, simulate=t2 - t1, collect=time.perf_counter() - t2)
    return out


def _generators(nest, plan: Plan, drives: dict[int, np.ndarray], nodes, batch: int,
                steps: int) -> None:
    """Spike generators (jump inputs) and step current generators (currents), one
    per neuron, sample and target: NEST step n + LEAD - lead reads the jump of
    step n; a current of step n acts in NEST step n + LEAD."""
    h = plan.h_ms
    by_target: dict[tuple[str, str | None, str], np.ndarray] = {}
    for d in plan.drives:
        key = (d.dst, d.state, "jump" if d.state is not None else "current")
        by_target[key] = by_target.get(key, 0) + drives[id(d)]
    for (dst, state, kind), vals in by_target.items():
        pop = plan.populations[dst]
        T = vals.shape[0]
        if kind == "jump":
            vals = nest_weight(pop, state, vals)
            read = np.arange(T) + LEAD - pop.match.lead  # NEST step that reads step n's jump
            times = np.round(read * h, 9)
            for b in range(batch):
                gens = nest.Create("spike_generator", pop.size)
                spec = []
                for j in range(pop.size):
                    nz = np.nonzero(vals[:, b, j])[0]
                    spec.append({"spike_times": times[nz].tolist(),
                                 "spike_weights": vals[nz, b, j].tolist()})
                gens.set(spec)
                nest.Connect(gens, nodes[(dst, b)], "one_to_one", {"weight": 1.0, "delay": h})
        else:
            times = np.round((np.arange(T) + LEAD - 1) * h, 9)
            for b in range(batch):
                gens = nest.Create("step_current_generator", pop.size)
                spec = []
                for j in range(pop.size):
                    v = vals[:, b, j]
                    change = np.nonzero(np.diff(np.concatenate([[0.0], v])))[0]
                    spec.append({"amplitude_times": times[change].tolist(),
                                 "amplitude_values": v[change].tolist()})
                gens.set(spec)
                nest.Connect(gens, nodes[(dst, b)], "one_to_one", {"delay": h})


def _wanted(plan: Plan, record: list[str]) -> dict[str, list[str]]:
    """layer -> user states to record (outputs and asked traces NEST can record)."""
    out: dict[str, list[str]] = {}
    keys = [f"{o.layer}.{o.state}" for o in plan.net.outputs if o.state is not None]
    for key in keys + list(record):
        name, _, state = key.partition(".")
        if name in plan.populations and state and not state.endswith("_pre"):
            if state in plan.populations[name].records() and state not in out.get(name, []):
                out.setdefault(name, []).append(state)
    return out


def _pending(plan: Plan, pop, state: str, traces: dict[str, np.ndarray],
             drives: dict[int, np.ndarray], W: dict[str, np.ndarray], steps: int,
             batch: int) -> np.ndarray:
    """What NEST added to a synaptic state at the end of each step for the next
    one (NEST units, ``[T, B, N]``): a recorded synaptic state of a ``lead`` 1
    model holds it already, spikedsl's state after step n does not."""
    out = np.zeros((steps, batch, pop.size))
    for d in plan.drives:
        if d.dst == pop.name and d.state == state:
            out[:-1] += drives[id(d)][1:steps]
    for c in plan.connections:
        if c.dst == pop.name and c.state == state:
            syn = synapses(c, W)
            z = traces[c.src].reshape(steps, batch, -1)
            lag = c.mapped - 1
            if steps > lag:  # out[n] gets the spikes of step n + 1 - mapped
                got = syn.propagate(z[:steps - lag].reshape(-1, z.shape[-1]))
                out[lag:] += got.reshape(steps - lag, batch, -1)
    return out


def _events(rec, keys: list[str]) -> dict[str, np.ndarray]:
    """A recorder's events; under MPI (NEST built with it, ``mpirun -np N``) each
    process records its own neurons: gathered to every process with mpi4py."""
    nest = import_nest()
    ev = rec.get("events")
    out = {k: np.asarray(ev[k]) for k in keys}
    if nest.NumProcesses() > 1:
        from mpi4py import MPI

        parts = MPI.COMM_WORLD.allgather(out)
        out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    return out


def _collect(plan: Plan, ids: dict[tuple[str, int], np.ndarray], spikes, meters, wanted, enc, steps: int, batch: int,
             record: list[str], drives: dict[int, np.ndarray],
             W: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    h = plan.h_ms
    traces: dict[str, np.ndarray] = {}
    top = max(int(a.max()) for a in ids.values()) + 1
    where_b, where_j = np.zeros(top, dtype=np.int64), np.zeros(top, dtype=np.int64)
    for (_, b), a in ids.items():
        where_b[a], where_j[a] = b, np.arange(len(a))
    for name, rec in spikes.items():
        pop = plan.populations[name]
        z = np.zeros((steps, batch, pop.size))
        ev = _events(rec, ["senders", "times"])
        n = np.rint(np.asarray(ev["times"]) / h).astype(np.int64) - 1 - LEAD
        ok = (n >= 0) & (n < steps)
        g = np.asarray(ev["senders"], dtype=np.int64)[ok]
        z[n[ok], where_b[g], where_j[g]] = 1.0
        traces[name] = z.reshape((steps, batch) + tuple(pop.layer.shape))
    for name, (mm, recs) in meters.items():
        pop = plan.populations[name]
        ev = _events(mm, ["senders", "times", *recs])
        n = np.rint(np.asarray(ev["times"]) / h).astype(np.int64) - 1 - LEAD
        ok = (n >= 0) & (n < steps)
        g = np.asarray(ev["senders"], dtype=np.int64)[ok]
        raw = {}
        for r in recs:
            a = np.zeros((steps, batch, pop.size))
            a[n[ok], where_b[g], where_j[g]] = np.asarray(ev[r])[ok]
            raw[r] = a
        jumped = {syn.state for syn in pop.placed.values()} if pop.match.kind in (
            "current", "conductance") else set()
        for s in wanted[name]:
            names, per = pop.records()[s]
            total = sum(raw[r] for r in names)
            if s in jumped:
                total = total - _pending(plan, pop, s, traces, drives, W, steps, batch)
            traces[f"{name}.{s}"] = (total / np.asarray(per).reshape(-1)).reshape(
                (steps, batch) + tuple(pop.layer.shape))
    for la in plan.net.inputs:
        traces[la.name] = np.asarray(enc[la.name])
    out: dict[str, np.ndarray] = {}
    for o in plan.net.outputs:
        key = o.layer if o.state is None else f"{o.layer}.{o.state}"
        out[o.name] = reduce_steps(traces[key], o.reduce)
    for key in record:
        if key in traces:
            out[key] = traces[key]
    return out


__all__ = ["drive_values", "simulate"]
