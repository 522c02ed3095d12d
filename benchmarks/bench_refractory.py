"""What a refractory period costs the torch target in training: forward and
forward + backward of a 784-256-10 LIF network (batch 128, T = 25, float32,
one thread, CPU time, median of 15 after 3 warm-up calls) without a
refractory period and with one of 2 steps, whose rules lowering writes as the
neuron's statements (a counter state; docs/semantics.md).  Both layers run as
fused scans with the analytic backward; the counter only steers the step, so
it is left out of the backward.

Run: .venv/bin/python benchmarks/bench_refractory.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import median_time  # noqa: E402 (benchmarks/common.py)

SPEC = """
neuron LIF {{
    param tau = 5
    param th = 1.0
    state v = 0
    input I
    dv/dt = (-v + I) / tau
    spike v > th
    reset v = 0
{refractory}}}
network Net {{
    dt = 1
    steps = 25
    input x[784] : direct
    layer h[256] = LIF <- dense(x)
    layer o[10] = LIF <- dense(h)
    output sum(o)
}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    import torch

    import spikedsl

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = (torch.rand(25, 128, 784) < 0.2).float()
    print(f"load average before: {os.getloadavg()}")
    print(f"{'refractory':>10} {'forward ms':>11} {'fwd+bwd ms':>11} {'output spikes':>14}")
    for steps in (0, 2):
        refr = f"    refractory {steps}\n" if steps else ""
        m = spikedsl.loads(SPEC.format(refractory=refr)).network("Net").to_torch()
        with torch.no_grad():
            m.h.weight.mul_(20.0)
            m.o.weight.mul_(20.0)
        spikes = {}

        def fwd():
            with torch.no_grad():
                spikes["o"] = float(m(x)["sum(o)"].sum())

        def both():
            m.zero_grad()
            m(x)["sum(o)"].square().mean().backward()

        f, fb = (median_time(g, args.repeats, warmup=3, clock=time.process_time)
                 for g in (fwd, both))
        print(f"{steps:>10} {f * 1e3:>11.1f} {fb * 1e3:>11.1f} {spikes['o']:>14.0f}")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
