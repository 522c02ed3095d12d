"""Scaling benchmark: CUBA, COBA and a Brunel-style balanced network at
several sizes for 1 s of biological time (dt = 0.1 ms, 10000 steps) on the
torch target (float64, event-driven sparse projections), Brian2 (cython and
cpp_standalone) and NEST (1 and 2 threads).

Networks (80 % excitatory, 20 % inhibitory, every pathway ``sparse`` with the
masks every target shares, ``spikedsl.lowering.weights.mask_pairs``):

* ``cuba``: specs/networks/cuba.spk (Brian2's CUBA example), p = 0.02;
* ``coba``: specs/networks/coba.spk (Brian2's COBAHH example), p = 0.02;
* ``brunel``: specs/networks/brunel.spk (delta synapses, g = 5, delay
  1.5 ms, DC drive), p = 0.1 at 5000 neurons, and at other sizes the same
  expected in-degree (p = 0.1 * 5000 / N, capped at 0.5).

Each measurement runs in a fresh child process (``--child``), which reports
the build time (code generation, drawing the masks, creating and connecting),
the simulation time (torch: the forward call under ``torch.inference_mode``; Brian2
cython: ``Network.run`` after a zero-length run has generated and compiled the
code; cpp_standalone: the binary's own run time, ``device._last_run_time``;
NEST: ``nest.Simulate``), the number of spikes and the peak resident memory
of the process (``VmHWM``, interpreter and libraries included).

Run:
    .venv/bin/python benchmarks/bench_scale.py --done
        CUBA at 4000 neurons: torch against Brian2 cython in one run, the ratio
        of simulation times, torch's peak memory and the spike trains compared.
    .venv/bin/python benchmarks/bench_scale.py --models cuba coba brunel \\
        --sizes 1000 4000 10000 50000 --runners torch brian2-cython \\
        brian2-cpp nest-1 nest-2 [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from common import peak_mib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNERS = ("torch", "brian2-cython", "brian2-cpp", "nest-1", "nest-2")
SPECS = {"cuba": "specs/networks/cuba.spk", "coba": "specs/networks/coba.spk",
         "brunel": "specs/networks/brunel.spk"}
NETWORKS = {"cuba": "CUBA", "coba": "COBA", "brunel": "Brunel"}


def spec_text(model: str, n: int) -> str:
    """The spec of ``model`` with ``n`` neurons (80 % excitatory)."""
    with open(os.path.join(ROOT, SPECS[model]), encoding="utf-8") as fh:
        text = fh.read()
    ne, ni = int(0.8 * n), n - int(0.8 * n)
    text = re.sub(r"layer(\s+)exc\[\d+\]", rf"layer\1exc[{ne}]", text)
    text = re.sub(r"layer(\s+)inh\[\d+\]", rf"layer\1inh[{ni}]", text)
    if model == "brunel":
        p = min(0.5, 0.1 * 5000 / n)
        text = re.sub(r"p = 0\.1\b", f"p = {p:.6g}", text)
    return text


def load(model: str, n: int):
    import spikedsl

    return spikedsl.loads(spec_text(model, n), file=os.path.join(ROOT, SPECS[model])).network(
        NETWORKS[model]).ir


def run_torch(net) -> tuple[dict, dict]:
    import torch

    from spikedsl.targets import torch as target

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    m = target.build(net, dtype=torch.float64)
    m.eval()
    t1 = time.perf_counter()
    with torch.inference_mode():
        out = m()
    t2 = time.perf_counter()
    return {"build": t1 - t0, "simulate": t2 - t1}, {k: v.numpy() for k, v in out.items()}


def _brian2_flags(b2) -> None:
    gcc = b2.prefs.codegen.cpp.extra_compile_args_gcc
    b2.prefs.codegen.cpp.extra_compile_args_gcc = [
        f for f in gcc if f != "-ffast-math"] + ["-ffp-contract=off"]


def run_brian2_cython(net) -> tuple[dict, dict]:
    import brian2 as b2

    from spikedsl.targets import brian2 as target

    b2.BrianLogger.log_level_error()
    _brian2_flags(b2)
    b2.prefs.codegen.target = "cython"
    t0 = time.perf_counter()
    network, handles = target.build(net)
    network.run(0 * b2.second, namespace={})  # code generation and compilation
    t1 = time.perf_counter()
    network.run(handles["duration"], namespace={})
    t2 = time.perf_counter()
    return {"build": t1 - t0, "simulate": t2 - t1}, handles["collect"]()


def run_brian2_cpp(net) -> tuple[dict, dict]:
    import brian2 as b2

    from spikedsl.targets import brian2 as target

    b2.BrianLogger.log_level_error()
    _brian2_flags(b2)
    directory = tempfile.mkdtemp(prefix="bench_scale_")
    b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
    t0 = time.perf_counter()
    network, handles = target.build(net)
    network.run(handles["duration"], namespace={})
    b2.device.build(directory=directory, compile=True, run=True, with_output=False)
    t1 = time.perf_counter()
    sim = float(b2.device._last_run_time)
    out = handles["collect"]()
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    return {"build": t1 - t0 - sim, "simulate": sim}, out


def run_nest(net, threads: int) -> tuple[dict, dict]:
    from spikedsl.targets import nest as target

    tm: dict[str, float] = {}
    t0 = time.perf_counter()
    out = target.run(net, None, threads=threads, timings=tm)
    wall = time.perf_counter() - t0
    return {"build": wall - tm["simulate"] - tm["collect"], "simulate": tm["simulate"]}, out


def child(model: str, n: int, runner: str, save: str | None) -> None:
    import numpy as np

    t0 = time.perf_counter()
    net = load(model, n)
    t_load = time.perf_counter() - t0
    if runner == "torch":
        res, out = run_torch(net)
    elif runner == "brian2-cython":
        res, out = run_brian2_cython(net)
    elif runner == "brian2-cpp":
        res, out = run_brian2_cpp(net)
    else:
        res, out = run_nest(net, int(runner.split("-")[1]))
    spikes = {k: np.asarray(v) for k, v in out.items() if k in ("exc", "inh")}
    res.update(load=t_load, peak_mib=peak_mib(),
               spikes=float(sum(float(v.sum()) for v in spikes.values())))
    res["rate_hz"] = res["spikes"] / n / (net.steps * net.dt)
    if save:
        np.savez_compressed(save, **{k: np.argwhere(v != 0) for k, v in spikes.items()})
    print("RESULT " + json.dumps(res), flush=True)


def measure(model: str, n: int, runner: str, timeout: float, save: str | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model, str(n), runner]
    if save:
        cmd += ["--save", save]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    lines = p.stderr.strip().splitlines() or ["no output"]
    said = [ln for ln in lines if "error" in ln.lower()] or lines
    return {"error": f"exit {p.returncode}: {said[-1].strip()[:300]}"}


def done(timeout: float) -> int:
    """The CUBA criterion: torch within 3x Brian2 cython, under 2 GB, same spikes."""
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "torch.npz"), os.path.join(d, "brian2.npz")
        rb = measure("cuba", 4000, "brian2-cython", timeout, b)
        rt = measure("cuba", 4000, "torch", timeout, a)
        print(f"brian2 cython: {json.dumps(rb)}")
        print(f"torch:         {json.dumps(rt)}")
        if "error" in rb or "error" in rt:
            return 1
        za, zb = np.load(a), np.load(b)
        same = all(np.array_equal(za[k], zb[k]) for k in ("exc", "inh"))
    ratio = rt["simulate"] / rb["simulate"]
    print(f"CUBA 4000 neurons, 1 s: torch {rt['simulate']:.2f} s, Brian2 cython "
          f"{rb['simulate']:.2f} s, ratio {ratio:.2f} (<= 3: {ratio <= 3}); torch peak "
          f"{rt['peak_mib']:.0f} MiB (< 2048: {rt['peak_mib'] < 2048}); same spike trains: "
          f"{same} ({rt['spikes']:.0f} spikes)")
    print(f"load: {os.getloadavg()}")
    return 0 if ratio <= 3 and rt["peak_mib"] < 2048 and same else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cuba"], choices=sorted(SPECS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--runners", nargs="+", default=["torch", "brian2-cython"],
                    choices=RUNNERS)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    ap.add_argument("--done", action="store_true", help="the CUBA criterion (see above)")
    ap.add_argument("--json", help="append every result to this file (JSON lines)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "N", "RUNNER"))
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.save)
        return 0
    if args.done:
        return done(args.timeout)
    print(f"load average before: {os.getloadavg()}")
    print(f"{'model':7} {'N':>6} {'runner':14} {'build s':>8} {'sim s':>8} {'peak MiB':>9} "
          f"{'rate Hz':>8}")
    for model in args.models:
        for n in args.sizes:
            for runner in args.runners:
                r = measure(model, n, runner, args.timeout)
                r.update(model=model, n=n, runner=runner, load=os.getloadavg()[0])
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(r) + "\n")
                if "error" in r:
                    print(f"{model:7} {n:6d} {runner:14} {r['error']}", flush=True)
                    continue
                print(f"{model:7} {n:6d} {runner:14} {r['build']:8.2f} {r['simulate']:8.2f} "
                      f"{r['peak_mib']:9.0f} {r['rate_hz']:8.2f}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
