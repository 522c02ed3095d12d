"""Where a ``sparse`` projection of the torch target is faster as one dense
product than event-driven: both forms of the generated helpers (``_sparse``
with the weights of ``_sparse_weights``) on the same inputs, float64, one
thread, under ``torch.inference_mode``, median time per call.

Grid: n inputs = n outputs in (1000, 4000), density p in (0.02, 0.1, 0.5),
rows (batch, or steps x batch) in (1, 4, 16, 64, 256), and the fraction of
nonzero inputs per row in (0.005, 0.05) (CUBA fires about 0.05 % of its
neurons per step, a trained classifier's hidden layer a few percent).
Printed: both times and the product rows x density; the generated code
switches to the dense product above SPARSE_DENSE_ABOVE
(spikedsl/targets/torch/network.py).

Run: .venv/bin/python benchmarks/bench_sparse.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import median_time  # noqa: E402 (benchmarks/common.py)

SPEC = """
neuron N {{ state v = 0; input I; update v = I; spike v >= 1 }}
network Net {{ steps = 1; input x[{n}] : spikes
  layer h[{n}] = N <- sparse(x, p = {p}, weight = 0.5, seed = 1); output h }}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    args = ap.parse_args()
    import torch

    import spikedsl
    from spikedsl.targets.torch import build

    torch.set_num_threads(1)
    print(f"load average: {os.getloadavg()}")
    print(f"{'n':>5} {'p':>5} {'rows':>5} {'active':>7} {'rows*p':>7} {'events us':>10} "
          f"{'dense us':>9} faster")
    g = torch.Generator().manual_seed(0)
    for n in args.sizes:
        for p in (0.02, 0.1, 0.5):
            m = build(spikedsl.loads(SPEC.format(n=n, p=p)).network("Net").ir,
                      dtype=torch.float64)
            ns = type(m)._spikedsl_namespace
            h = m.h
            for rows in (1, 4, 16, 64, 256):
                ev = ns["_sparse_weights"](h.weight, h, rows, float("inf"))
                de = ns["_sparse_weights"](h.weight, h, rows, 0.0)
                for act in (0.005, 0.05):
                    x = (torch.rand((rows, n), generator=g, dtype=torch.float64) < act).to(
                        torch.float64)
                    with torch.inference_mode():
                        te = median_time(lambda: ns["_sparse"](x, ev, None, True), args.repeats)
                        td = median_time(lambda: ns["_sparse"](x, de, None, True), args.repeats)
                    print(f"{n:5d} {p:5.2f} {rows:5d} {act:7.3f} {rows * p:7.2f} "
                          f"{te * 1e6:10.1f} {td * 1e6:9.1f} {'events' if te < td else 'dense'}",
                          flush=True)
    print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
