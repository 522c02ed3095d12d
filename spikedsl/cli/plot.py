"""``spikedsl plot RUN_DIR_OR_NPZ [-o DIR]``: plot a saved simulation
(``spikedsl simulate --output sim.npz``: raster and state traces) or a
training run directory (``runs/NAME/metrics.csv``: loss / accuracy curves)."""

from __future__ import annotations

import os
import sys


def add_arguments(p) -> None:
    p.add_argument("path", metavar="RUN_DIR_OR_NPZ",
                   help="a run directory (with metrics.csv) or a simulation .npz")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="directory for the PNG files (default: next to the input)")
    p.add_argument("--sample", type=int, default=0, help="which sample of a simulation")


def _error(msg: str) -> int:
    print(f"spikedsl plot: error: {msg}", file=sys.stderr)
    return 2


def main(args) -> int:
    path = args.path
    if os.path.isdir(path):
        metrics = os.path.join(path, "metrics.csv")
        if not os.path.isfile(metrics):
            return _error(f"{path} has no metrics.csv (is it a training run directory?)")
        from spikedsl.runtime.plots import curves

        out_dir = args.output or path
        os.makedirs(out_dir, exist_ok=True)
        out = curves(metrics, os.path.join(out_dir, "curves.png"),
                     title=os.path.basename(os.path.abspath(path)))
        print(f"wrote {out}")
        return 0
    if not os.path.isfile(path):
        return _error(f"no such file or directory: {path}")
    if path.endswith(".csv"):
        from spikedsl.runtime.plots import curves

        out_dir = args.output or os.path.dirname(os.path.abspath(path))
        out = curves(path, os.path.join(out_dir, "curves.png"))
        print(f"wrote {out}")
        return 0
    if not path.endswith(".npz"):
        return _error(f"{path}: expected a run directory, a metrics.csv or a .npz file")
    from spikedsl.runtime.plots import load_simulation, raster, traces

    try:
        arrays, meta = load_simulation(path)
    except (OSError, ValueError, SyntaxError) as e:
        return _error(f"{path}: cannot read ({e})")
    base = os.path.splitext(os.path.basename(path))[0]
    out_dir = args.output or os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    title = f"{meta.get('network') or base}, sample {args.sample}"
    spikes = {k: arrays[k] for k in meta.get("spiking", []) if k in arrays}
    states = {k: arrays[k] for k in meta.get("states", []) if k in arrays}
    if not spikes and not states:
        return _error(f"{path} holds no spike trains or state traces")
    for k, v in list(spikes.items()) + list(states.items()):
        if v.ndim >= 3 and not 0 <= args.sample < v.shape[1]:
            return _error(f"--sample {args.sample}: '{k}' has {v.shape[1]} samples")
    if spikes:
        print("wrote " + raster(spikes, os.path.join(out_dir, f"{base}_raster.png"),
                                dt=meta.get("dt", 1.0), unit=meta.get("unit"),
                                sample=args.sample, title=title))
    if states:
        print("wrote " + traces(states, os.path.join(out_dir, f"{base}_traces.png"),
                                dt=meta.get("dt", 1.0), unit=meta.get("unit"),
                                sample=args.sample, title=title))
    return 0
