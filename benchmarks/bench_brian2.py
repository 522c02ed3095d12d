"""Brian2 target overhead: the generated network against a hand-written Brian2
script of the same network (same device, same steps, same inputs and
weights, same results), median of several runs in one process.

Network: the digits classifier of specs/networks/digits_classifier.spk
(64 Poisson inputs -> 128 LIF -> 10 LIF, exact integration, hard reset), a
batch of B samples simulated as B copies, T steps of 1 ms.

Timed: the CPU time of ``Network.run`` (code generation included) for numpy
and cython; the simulation time of the compiled binary
(``device._last_run_time``) and the wall time of the whole build for
cpp_standalone.  Generated and hand-written runs alternate, so both see the
same machine load.

Run:  .venv/bin/python benchmarks/bench_brian2.py [--devices numpy,cython,cpp_standalone]
      [--repeats 5] [--steps 500] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPEC = """
import "specs/neurons/lif.spk"

network Bench {{
    dt    = 1 ms
    steps = {steps}
    input  x[64] : poisson(max_rate = 1.0)
    layer  h[128] = LIF(tau_mem = 10 ms) <- dense(x)
    layer  o[10]  = LIF(tau_mem = 10 ms) <- dense(h)
    output o
}}
"""


# ----------------------------------------------------------------- hand-written
def handwritten(inputs, weights, steps):
    """The same network written directly in Brian2 (what a person would write
    for the spikedsl step semantics: one slot, explicit order, the exact LIF
    step in run_regularly, synaptic input accumulated and cleared)."""
    import brian2 as b2

    x = inputs["x"]
    T, B, n_in = x.shape
    dt = 1e-3 * b2.second
    clock = b2.Clock(dt=dt, name="clock")
    t_idx, b_idx, k_idx = np.nonzero(x)
    inp = b2.SpikeGeneratorGroup(B * n_in, b_idx * n_in + k_idx, t_idx * 1e-3 * b2.second,
                                 clock=clock, when="start", order=0, name="inp")
    eqs = """
    v : 1
    I : 1
    b : 1 (constant)
    """
    lif = """
    v = (I + b) + (v - (I + b)) * exp(-dt / (10*ms))
    I = 0
    """
    objs = [inp]
    prev, n_prev, order = inp, n_in, 1
    for name, n in (("h", 128), ("o", 10)):
        g = b2.NeuronGroup(B * n, eqs, threshold="v >= 1", reset="v = 0", clock=clock,
                           name=name)
        g.b = np.tile(weights[f"{name}.bias"], B)
        s = b2.Synapses(prev, g, "w : 1", on_pre="I_post += w", clock=clock, name=f"s_{name}")
        j = np.repeat(np.arange(n), n_prev)
        i = np.tile(np.arange(n_prev), n)
        off = np.arange(B)[:, None]
        s.connect(i=(i[None] + off * n_prev).ravel(), j=(j[None] + off * n).ravel())
        s.w = np.tile(weights[f"{name}.weight"].ravel(), B)
        s.pre.when, s.pre.order = "start", order
        g.run_regularly(lif, when="start", order=order + 1)
        g.thresholder["spike"].when, g.thresholder["spike"].order = "start", order + 2
        g.resetter["spike"].when, g.resetter["spike"].order = "start", order + 3
        objs += [g, s]
        prev, n_prev, order = g, n, order + 4
    mon = b2.SpikeMonitor(prev, name="mon")
    net = b2.Network(*objs, mon)

    def collect():
        out = np.zeros((T, B * 10))
        out[np.round(np.asarray(mon.t_) / 1e-3).astype(int), np.asarray(mon.i)] = 1
        return {"o": out.reshape(T, B, 10)}

    return net, collect


def generated(ns, inputs, weights):
    net, handles = ns["build"](inputs, weights, [])
    return net, lambda: ns["collect"](handles)


# ----------------------------------------------------------------- timing
def time_runtime(make, steps, target):
    import brian2 as b2

    b2.prefs.codegen.target = target
    net, collect = make()
    t0 = time.process_time()  # CPU time of this process: robust against other load
    net.run(steps * 1e-3 * b2.second, namespace={})
    return time.process_time() - t0, collect()


def time_standalone(make, steps):
    import brian2 as b2

    directory = tempfile.mkdtemp(prefix="spikedsl_bench_")
    b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
    try:
        net, collect = make()
        net.run(steps * 1e-3 * b2.second, namespace={})
        t0 = time.perf_counter()
        b2.device.build(directory=directory, compile=True, run=True, with_output=False)
        total = time.perf_counter() - t0
        sim = float(b2.device._last_run_time)
        return sim, total, collect()
    finally:
        b2.device.reinit()
        b2.set_device("runtime")
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="numpy,cython,cpp_standalone")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--standalone-repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)

    import brian2 as b2
    from helpers.brian2 import random_weights

    import spikedsl
    from spikedsl.targets import brian2 as b2t

    b2.BrianLogger.log_level_error()
    net = spikedsl.loads(SPEC.format(steps=args.steps),
                         file=os.path.join(ROOT, "bench.spk")).network("Bench").ir
    W = random_weights(net, -0.3, 1.6, seed=0, scale={"h": 4.0, "o": 3.0})
    rng = np.random.default_rng(0)
    X = {"x": (rng.random((args.steps, args.batch, 64)) < 0.3).astype(np.float64)}
    ns = b2t.module(net)
    makers = {"generated": lambda: generated(ns, X, W),
              "hand-written": lambda: handwritten(X, W, args.steps)}
    rows = []
    for device in [d.strip() for d in args.devices.split(",") if d.strip()]:
        times: dict[str, list[float]] = {k: [] for k in makers}
        totals: dict[str, list[float]] = {k: [] for k in makers}
        outs = {}
        reps = args.standalone_repeats if device == "cpp_standalone" else args.repeats
        if device == "cython":  # compile once (cached), then time
            for make in makers.values():
                time_runtime(make, 2, "cython")
        for _ in range(reps):
            for name, make in makers.items():  # interleaved: same machine load
                if device == "cpp_standalone":
                    sim, total, out = time_standalone(make, args.steps)
                    totals[name].append(total)
                else:
                    sim, out = time_runtime(make, args.steps, device)
                times[name].append(sim)
                outs[name] = out
        same = np.array_equal(outs["generated"]["o"], outs["hand-written"]["o"])
        g, h = statistics.median(times["generated"]), statistics.median(times["hand-written"])
        extra = ""
        if device == "cpp_standalone":
            extra = (f"; build+run {statistics.median(totals['generated']):.1f} s vs "
                     f"{statistics.median(totals['hand-written']):.1f} s")
        rows.append((device, g, h, g / h, same, extra))
        print(f"{device:15s} generated {g:8.3f} s  hand-written {h:8.3f} s  ratio {g / h:5.2f}"
              f"  same spikes: {same}{extra}", flush=True)
    print()
    print("| device | generated (s) | hand-written (s) | ratio | same output spikes |")
    print("|---|---:|---:|---:|---|")
    for device, g, h, r, same, extra in rows:
        print(f"| {device} | {g:.3f} | {h:.3f} | {r:.2f} | {'yes' if same else 'NO'}{extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
