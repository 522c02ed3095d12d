"""Regression benchmark (slow): one training step of the generated torch
module (eager, the default) must not be slower than snnTorch with the same
semantics under torch.compile.

The two run in processes of their own (benchmarks/bench_torch.py's workers:
one compiled model per process), one thread each, timed by the CPU time of
their own process and interleaved step by step, so that the load of a shared
machine hits both alike; the test compares the median over the rounds of the
per-round ratio - a ratio in one run, not an absolute time."""

from __future__ import annotations

import os
import statistics
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("snntorch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_torch  # noqa: E402

ROUNDS = 9


@pytest.mark.slow
def test_eager_step_is_not_slower_than_compiled_snntorch_with_the_same_semantics():
    impls = ["spikedsl", "snntorch-same+compile"]
    with open(os.devnull, "w") as log:
        workers = {k: bench_torch.Worker(k, "mlp25", 1, "cpu", 2, log) for k in impls}
        try:
            times = {k: [] for k in impls}
            for r in range(ROUNDS):
                for k in impls if r % 2 == 0 else impls[::-1]:
                    times[k].append(workers[k].ask("step")["t"])
            dynamo = workers["snntorch-same+compile"].ask("stats")["dynamo"]
        finally:
            for w in workers.values():
                w.close()
    assert dynamo["graphs"] > 0  # torch.compile did compile (it never falls back silently)
    ratio = statistics.median(b / a for a, b in zip(times["spikedsl"],
                                                    times["snntorch-same+compile"]))
    assert ratio >= 1.0, (f"spikedsl eager is {1 / ratio:.2f}x slower than snnTorch + "
                          f"torch.compile (CPU time per step: "
                          f"{statistics.median(times['spikedsl']) * 1e3:.1f} ms vs "
                          f"{statistics.median(times['snntorch-same+compile']) * 1e3:.1f} ms)")
