"""NEST target benchmark: a CUBA network (Brian2's CUBA example, Vogels &
Abbott 2005: 80 % excitatory, 20 % inhibitory, p = 0.02, we = 1.62 mV,
wi = -9 mV, taum 20 ms, taue 5 ms, taui 10 ms, refractory 5 ms, v0 uniform
in [Vr, Vt)) at 1000 and 4000 neurons for 1 s of biological time
(dt = 0.1 ms, 10000 steps), with 1 and 2 NEST threads.

Two ways to build the same network, each configuration in a fresh process:

* ``spikedsl``: the .spk network through ``--target nest`` (neurons matched to
  iaf_psc_exp, the sparse masks of every target as explicit connections);
* ``pynest``: the same model written directly in PyNEST (iaf_psc_exp,
  ``pairwise_bernoulli`` connectivity), the floor of what NEST costs.

Reported: build time (matching, planning, creating and connecting),
simulation time (``nest.Simulate``), the firing rate, and the peak resident
memory of the process (``VmHWM``).

Run: ``.venv/bin/python benchmarks/bench_nest.py [--sizes 1000 4000]
[--threads 1 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import peak_mib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPEC = """
neuron Cuba {{
    param taum = 20 ms
    param taue = 5 ms
    param taui = 10 ms
    param Vt   = -50 mV
    param Vr   = -60 mV
    param El   = -49 mV
    param v0   = -55 mV [per_neuron(uniform(-60 mV, -50 mV))]
    state v  = v0
    state ge = 0 mV
    state gi = 0 mV
    input Ie : mV
    input Ii : mV
    jump ge += Ie
    jump gi += Ii
    dv/dt  = (ge + gi - (v - El)) / taum
    dge/dt = -ge / taue
    dgi/dt = -gi / taui
    spike v > Vt
    reset v = Vr
    refractory 5 ms
}}
network CUBA {{
    dt    = 0.1 ms
    steps = 10000
    layer exc[{ne}] = Cuba <- sparse(exc, p = 0.02, weight = 1.62 mV, seed = 1) -> Ie
                          + sparse(inh, p = 0.02, weight = -9 mV, seed = 2) -> Ii
    layer inh[{ni}] = Cuba <- sparse(exc, p = 0.02, weight = 1.62 mV, seed = 3, delay = 1) -> Ie
                          + sparse(inh, p = 0.02, weight = -9 mV, seed = 4) -> Ii
    output exc
    output inh
}}
"""


def run_spikedsl(n: int, threads: int) -> dict:
    t0 = time.perf_counter()
    import spikedsl
    from spikedsl.targets import nest as target

    net = spikedsl.loads(SPEC.format(ne=int(0.8 * n), ni=n - int(0.8 * n)),
                         file="cuba_bench.spk").network("CUBA").ir
    t_load = time.perf_counter() - t0
    tm: dict[str, float] = {}
    t1 = time.perf_counter()
    out = target.run(net, None, threads=threads, timings=tm)
    wall = time.perf_counter() - t1
    spikes = float(out["exc"].sum() + out["inh"].sum())
    return {"load": t_load, "build": wall - tm["simulate"] - tm["collect"],
            "simulate": tm["simulate"], "collect": tm["collect"], "spikes": spikes,
            "rate": spikes / n / 1.0}


def run_pynest(n: int, threads: int) -> dict:
    import numpy as np

    from spikedsl.targets.nest.runtime import import_nest

    nest = import_nest()  # the same OpenMP settings as the target

    t0 = time.perf_counter()
    nest.verbosity = nest.VerbosityLevel.ERROR
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": 0.1, "local_num_threads": threads, "rng_seed": 1})
    ne = int(0.8 * n)
    C, taum = 250.0, 20.0
    k = C / taum  # pA per mV of ge
    params = {"C_m": C, "tau_m": taum, "tau_syn_ex": 5.0, "tau_syn_in": 10.0, "t_ref": 5.0,
              "E_L": -49.0, "V_th": -50.0, "V_reset": -60.0, "I_e": 0.0}
    pop = nest.Create("iaf_psc_exp", n, params=params)
    pop.V_m = nest.random.uniform(-60.0, -50.0)
    exc, inh = pop[:ne], pop[ne:]
    conn = {"rule": "pairwise_bernoulli", "p": 0.02, "allow_autapses": True}
    nest.Connect(exc, pop, conn, {"weight": 1.62 * k, "delay": 0.1})
    nest.Connect(inh, pop, conn, {"weight": -9.0 * k, "delay": 0.1})
    rec = nest.Create("spike_recorder")
    nest.Connect(pop, rec)
    t1 = time.perf_counter()
    nest.Simulate(1000.0)
    t2 = time.perf_counter()
    spikes = float(len(np.asarray(rec.get("events")["times"])))
    return {"load": 0.0, "build": t1 - t0, "simulate": t2 - t1, "collect": 0.0,
            "spikes": spikes, "rate": spikes / n / 1.0}


def child(kind: str, n: int, threads: int) -> None:
    res = (run_spikedsl if kind == "spikedsl" else run_pynest)(n, threads)
    res["peak_mib"] = peak_mib()
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--child", nargs=3, metavar=("KIND", "N", "THREADS"))
    ap.add_argument("--wait-policy", default=None, choices=("active", "passive"),
                    help="OMP_WAIT_POLICY of the runs (default: the target's, passive)")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.wait_policy:
        env["OMP_WAIT_POLICY"] = args.wait_policy
    print(f"load average before: {os.getloadavg()}")
    rows = []
    for n in args.sizes:
        for th in args.threads:
            for kind in ("spikedsl", "pynest"):
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, __file__, "--child", kind, str(n), str(th)],
                                   capture_output=True, text=True, env=env, check=True)
                res = json.loads(next(ln for ln in r.stdout.splitlines()
                                      if ln.startswith("RESULT "))[7:])
                res["process"] = time.perf_counter() - t0
                rows.append((n, th, kind, res))
                print(f"{kind:8s} N={n:5d} threads={th}: build {res['build']:.2f} s, simulate "
                      f"{res['simulate']:.2f} s, process {res['process']:.1f} s, rate "
                      f"{res['rate']:.1f} Hz, peak {res['peak_mib']:.0f} MiB", flush=True)
    print()
    print("| network | threads | build s | simulate s | process s | rate Hz | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, th, kind, r in rows:
        print(f"| {kind} CUBA {n} | {th} | {r['build']:.2f} | {r['simulate']:.2f} | "
              f"{r['process']:.1f} | {r['rate']:.1f} | {r['peak_mib']:.0f} |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
