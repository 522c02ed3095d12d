"""Plots of simulations and training runs (matplotlib, Agg; no display needed).

* :func:`raster` - spike rasters, one panel per layer;
* :func:`traces` - state traces (membrane potentials) of a few neurons;
* :func:`curves` - loss / accuracy curves of a training run (``metrics.csv``);
* :func:`save_simulation` / :func:`load_simulation` - the ``.npz`` that
  ``spikedsl simulate --output`` writes and ``spikedsl plot`` reads.

Times follow docs/semantics.md: a spike or state of step n belongs to
``t = (n + 1)·dt``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from spikedsl.atomic import atomic_path

__all__ = [
    "curves",
    "load_simulation",
    "raster",
    "read_metrics",
    "save_simulation",
    "time_axis",
    "traces",
]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def time_axis(steps: int, dt: float, unit: str | None) -> tuple[np.ndarray, str]:
    """End-of-step times (n + 1)·dt in the unit dt was written in (or steps)."""
    n = np.arange(1, steps + 1, dtype=np.float64)
    if unit is None:
        return n * dt, "time (steps)"
    from spikedsl.ir.units import parse_unit

    scale, _ = parse_unit(unit)
    return n * dt / scale, f"time ({unit})"


def _flat(a: np.ndarray, sample: int) -> np.ndarray:
    """[T, B, ...] -> [T, N] of one sample (or [T, ...] already one sample)."""
    a = np.asarray(a)
    if a.ndim >= 3:
        a = a[:, sample]
    return a.reshape(a.shape[0], -1)


def raster(spikes: Mapping[str, np.ndarray], path, *, dt: float = 1.0,
           unit: str | None = None, sample: int = 0, title: str = "") -> str:
    """Spike raster of every layer in ``spikes`` (name -> ``[T, B, ...]``) for
    one sample; returns the path of the PNG."""
    names = list(spikes)
    if not names:
        raise ValueError("nothing to plot: no spike trains")
    sizes = [_flat(spikes[k], sample).shape[1] for k in names]
    fig = _figure(8.0, 1.2 + sum(min(1.8, 0.6 + 0.02 * s) for s in sizes))
    ratios = [max(1.0, min(4.0, s / 16)) for s in sizes]
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios})[:, 0]
    xlabel = "time"
    for ax, name in zip(axes, names):
        s = _flat(spikes[name], sample)
        t, xlabel = time_axis(s.shape[0], dt, unit)
        steps, idx = np.nonzero(s)
        ax.scatter(t[steps], idx, s=4, marker="|", color="k", linewidths=0.8)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_xlim(0, t[-1] + (t[1] - t[0] if len(t) > 1 else 1))
        rate = s.mean()
        ax.set_ylabel(f"{name}\n({int(s.sum())} spikes)", fontsize=8)
        ax.text(1.0, 1.02, f"{100 * rate:.1f}% of steps", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel(xlabel)
    fig.suptitle(title or f"spike raster (sample {sample})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def traces(states: Mapping[str, np.ndarray], path, *, dt: float = 1.0, unit: str | None = None,
           sample: int = 0, neurons: int = 5, title: str = "",
           thresholds: Mapping[str, float] | None = None) -> str:
    """State traces (name -> ``[T, B, ...]``), the first ``neurons`` neurons of
    each, one panel per trace; returns the path of the PNG."""
    names = list(states)
    if not names:
        raise ValueError("nothing to plot: no state traces")
    fig = _figure(8.0, 1.0 + 1.8 * len(names))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    xlabel = "time"
    for ax, name in zip(axes, names):
        v = _flat(states[name], sample)
        t, xlabel = time_axis(v.shape[0], dt, unit)
        for k in range(min(neurons, v.shape[1])):
            ax.plot(t, v[:, k], lw=1.0, label=f"{k}")
        if thresholds and name in thresholds:
            ax.axhline(thresholds[name], color="gray", ls="--", lw=0.8)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if v.shape[1] > 1:
            ax.legend(fontsize=6, ncol=min(neurons, v.shape[1]), loc="upper right",
                      title="neuron", title_fontsize=6)
    axes[-1].set_xlabel(xlabel)
    fig.suptitle(title or f"state traces (sample {sample})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` (numbers; empty cells are NaN)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out = {}
            for k, v in row.items():
                try:
                    out[k] = float(v) if v not in ("", None) else math.nan
                except ValueError:
                    out[k] = math.nan
            rows.append(out)
    return rows


def curves(rows: Sequence[Mapping[str, float]] | str | os.PathLike, path, *,
           title: str = "") -> str:
    """Loss and accuracy (and other metrics) per epoch of a training run;
    ``rows`` are the rows of ``metrics.csv`` or its path."""
    if isinstance(rows, str | os.PathLike):
        rows = read_metrics(rows)
    if not rows:
        raise ValueError("nothing to plot: the metrics file has no rows")
    cols = [c for c in rows[0] if c != "epoch"]
    x = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    groups: dict[str, list[str]] = {}
    for c in cols:
        metric = c.split("_", 1)[1] if c.split("_", 1)[0] in ("train", "test", "val") and \
            "_" in c else c
        groups.setdefault(metric, []).append(c)
    order = sorted(groups, key=lambda m: (m != "loss", m != "accuracy", m))
    order = [m for m in order if any(
        math.isfinite(r.get(c, math.nan)) for r in rows for c in groups[m])][:4]
    if not order:
        raise ValueError("nothing to plot: no numeric metric")
    fig = _figure(4.2 * len(order), 3.4)
    axes = fig.subplots(1, len(order), squeeze=False)[0]
    for ax, m in zip(axes, order):
        for c in groups[m]:
            ys = [r.get(c, math.nan) for r in rows]
            ax.plot(x, ys, "-o", ms=3, label=c.split("_", 1)[0] if c != m else c)
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        if m == "accuracy":
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------- saved simulations
def save_simulation(path, arrays: Mapping[str, np.ndarray], *, dt: float, unit: str | None,
                    spiking: Sequence[str], states: Sequence[str], network: str = "",
                    target: str = "") -> str:
    """Traces of a simulation plus what a plot needs (dt, which traces are spikes)."""
    data = {k: np.asarray(v) for k, v in arrays.items()}
    data["__meta__"] = np.array(repr({"dt": dt, "unit": unit, "spiking": list(spiking),
                                      "states": list(states), "network": network,
                                      "target": target}))
    path = os.fspath(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, **data)
    return path


def load_simulation(path) -> tuple[dict[str, np.ndarray], dict]:
    """(traces, meta) of a file written by :func:`save_simulation`; a plain
    ``.npz`` of ``[T, B, ...]`` arrays also loads (0/1 arrays count as spikes)."""
    import ast

    with np.load(path, allow_pickle=False) as f:
        arrays = {k: np.asarray(f[k]) for k in f.files}
    meta_text = arrays.pop("__meta__", None)
    if meta_text is not None:
        meta = ast.literal_eval(str(meta_text))
    else:
        spiking = [k for k, v in arrays.items() if v.ndim >= 2 and np.isin(v, (0, 1)).all()]
        meta = {"dt": 1.0, "unit": None, "spiking": spiking,
                "states": [k for k, v in arrays.items() if k not in spiking and v.ndim >= 2],
                "network": "", "target": ""}
    return arrays, meta
