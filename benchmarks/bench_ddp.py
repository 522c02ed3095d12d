"""Data-parallel training (``train --nproc N``) and ``checkpoint_every`` on digits.

``ddp``: time per epoch of the digits example (examples/digits/digits.spk:
64-128-10 LIF, 16 steps, batch 64, 1437 training samples) on 1 process and on
N processes with the same global batch, and the largest difference between
the final weights of the two runs.  Each configuration runs in its own
``spikedsl train`` process; the per-epoch seconds are read from metrics.csv
(training + evaluation, without start-up), the median over the epochs is
reported, and the wall time of the whole command is given too.

``memory``: the memory one training step (forward + backward, float32,
``--batch`` digits) of the same network with ``steps = T`` takes, without and
with ``checkpoint_every = k``: peak resident memory (``resource.getrusage``
``ru_maxrss``) of a fresh process above its resident memory just before the
step.  ``--recurrent`` makes the hidden layer read itself (``dense(x) + dense(h)``),
so it runs step by step with plain autograd instead of the fused scan.

    .venv/bin/python benchmarks/bench_ddp.py ddp --epochs 3 --nproc 2
    .venv/bin/python benchmarks/bench_ddp.py memory --steps 200 --every 10 25 50
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits" / "digits.spk"


def _spec(tmp: Path, dtype: str, steps: int | None = None, every: int | None = None,
          batch: int | None = None, recurrent: bool = False) -> Path:
    text = DIGITS.read_text()
    if batch is not None:
        text = text.replace("    batch     = 64", f"    batch     = {batch}")
    if recurrent:
        text = text.replace("layer  h[128] = LIF() <- dense(x)",
                            "layer  h[128] = LIF() <- dense(x) + dense(h)")
    text = text.replace("    metrics   = [accuracy, rate]",
                        f"    metrics   = [accuracy, rate]\n    dtype     = {dtype}")
    if steps is not None:
        text = text.replace("steps = 16", f"steps = {steps}")
    if every is not None:
        text = text.replace("    seed      = 0",
                            f"    seed      = 0\n    checkpoint_every = {every}")
    name = f"digits_{dtype}_{steps}_{every}_{batch}_{recurrent}.spk"
    (tmp / name).write_text(text)
    return tmp / name


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def ddp(args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = _spec(tmp, args.dtype, args.steps, None, args.batch)
        out = {}
        for n in (1, args.nproc):
            cmd = [sys.executable, "-m", "spikedsl.cli", "train", str(spec), "--run", f"n{n}",
                   "--epochs", str(args.epochs), "--no-progress"]
            cmd += ["--threads", str(args.threads)] if n == 1 else ["--nproc", str(n)]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=tmp, env=_env(), capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
            with open(tmp / "runs" / f"n{n}" / "metrics.csv") as fh:
                rows = list(csv.DictReader(fh))
            secs = [float(row["seconds"]) for row in rows]
            with np.load(tmp / "runs" / f"n{n}" / "weights.npz") as z:
                w = {k: z[k] for k in z.files}
            out[n] = {"epoch_s": statistics.median(secs), "epochs_s": secs, "wall_s": wall,
                      "test_accuracy": float(rows[-1]["test_accuracy"]), "weights": w}
        a, b = out[1]["weights"], out[args.nproc]["weights"]
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        size = max(float(np.abs(a[k]).max()) for k in a)
        res = {"nproc": args.nproc, "dtype": args.dtype, "epochs": args.epochs,
               "batch": args.batch or 64, "steps": args.steps or 16,
               "max_weight_diff": diff, "max_weight": size}
        for n, v in out.items():
            res[f"p{n}"] = {k: v[k] for k in ("epoch_s", "epochs_s", "wall_s", "test_accuracy")}
        res["load_before"] = args.load
        res["load_after"] = os.getloadavg()
        return res


_MEMORY_CHILD = """
import json, os, resource, sys, time
import torch
import spikedsl
from spikedsl.runtime.data import load_dataset
from spikedsl.runtime.timechunks import StepsModule
from spikedsl.targets.torch import build

spec, batch, every = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
net = spikedsl.load(spec).network("DigitsSNN").ir
model = build(net, dtype=torch.float32, seed=0)
run = StepsModule(model, None if every == "none" else int(every),
                  {o.name: o.reduce for o in net.outputs})
x = torch.from_numpy(load_dataset("digits", {}, ".", 0).x_train[:batch]).float()
y = torch.arange(batch) % 10
enc = model.encode(x)

def rss_mib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def step(e, t):
    loss = torch.nn.functional.cross_entropy(run(e)["y"].sum(0), t)
    loss.backward()
    return loss

step(enc[:, :1], y[:1])  # warm-up: lazy imports, first-call allocations
model.zero_grad(set_to_none=True)
before = rss_mib()
t0 = time.perf_counter()
loss = step(enc, y)
took = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
grad = float(sum(p.grad.double().abs().sum() for p in model.parameters()))
print(json.dumps({"before_mib": before, "peak_mib": peak, "step_mib": peak - before,
                  "seconds": took, "loss": float(loss), "grad_l1": grad}))
"""


def memory(args) -> dict:
    """One training step (forward + backward) per fresh process: the peak RSS
    above the RSS just before the step (module built, batch encoded, one
    warm-up step on one sample).  glibc is told to map every block above 8 KiB
    by itself and return it when freed (MALLOC_MMAP_THRESHOLD_), so the
    resident size follows what torch holds instead of what the heap kept."""
    res = {"steps": args.steps, "batch": args.batch, "dtype": "float32",
           "recurrent": args.recurrent, "runs": []}
    env = dict(_env(), MALLOC_MMAP_THRESHOLD_="8192")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = _spec(tmp, "float32", args.steps, None, args.batch, args.recurrent)
        for every in [None, *args.every]:
            r = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(spec), str(args.batch),
                                "none" if every is None else str(every)],
                               cwd=tmp, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["checkpoint_every"] = every
            res["runs"].append(row)
            print(f"checkpoint_every={every}: step {row['step_mib']:.1f} MiB above "
                  f"{row['before_mib']:.0f} MiB, {row['seconds']:.2f} s, loss {row['loss']!r}, "
                  f"|grad|_1 {row['grad_l1']!r}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("ddp")
    a.add_argument("--nproc", type=int, default=2)
    a.add_argument("--epochs", type=int, default=3)
    a.add_argument("--dtype", default="float64")
    a.add_argument("--threads", type=int, default=1, help="torch threads of the 1-process run")
    a.add_argument("--batch", type=int, default=None, help="global batch (default: 64)")
    a.add_argument("--steps", type=int, default=None, help="time steps (default: 16)")
    m = sub.add_parser("memory")
    m.add_argument("--steps", type=int, default=200)
    m.add_argument("--every", type=int, nargs="+", default=[10, 25, 50])
    m.add_argument("--batch", type=int, default=64)
    m.add_argument("--recurrent", action="store_true")
    args = ap.parse_args()
    args.load = os.getloadavg()
    out = ddp(args) if args.what == "ddp" else memory(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
