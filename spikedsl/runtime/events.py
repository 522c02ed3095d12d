"""Neuromorphic event data sets through tonic (optional extra ``spikedsl[events]``).

``data = tonic("NMNIST", path = "data", bins = 25)`` in a train block, or from
Python ``load_dataset("tonic", {0: "NMNIST", "path": "data", "steps": 25,
"dt": 1e-3})``.  Files are read with tonic's readers (``tonic.io``) in tonic's
own folder layout and binned with ``tonic.transforms.ToFrame`` to one frame per
network step: ``[T, 2, H, W]`` (N-MNIST: polarity, y, x) or ``[T, channels]``
(SHD, SSC).  A pixel or channel with one event or more in a bin is 1 (the
``spikes`` encoder takes 0/1).  Nothing is downloaded: a missing file is a
:class:`DataError` that says where tonic puts the files.  See docs/data.md.

Binning (``binning``):

* ``time`` (the default when the network's ``dt`` has a time unit): bins of
  width ``dt`` from the start of the recording, ``T = steps`` of them; later
  events are dropped (``info["dropped_events"]`` counts them);
* ``span``: each recording spread over ``T`` equal bins (the default for a
  unitless ``dt``).

``write_nmnist`` and ``write_shd`` write the real file formats (tests and the
example make small synthetic sets with them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from spikedsl.runtime.data import DataError, Dataset, _Args, _finish

__all__ = ["EVENT_SETS", "PARAMS", "load_tonic", "network_args", "saccade_events", "write_nmnist",
           "write_shd"]

# the order of positional arguments of tonic(...) (data.DATASETS registers it)
PARAMS = ("name", "path", "bins", "binning", "downsample", "n_train", "n_test", "split_seed",
          "first_saccade_only", "cache", "steps", "dt")

EVENT_SETS: dict[str, dict[str, Any]] = {
    # name: tonic class, sensor size (x, y, p), classes, file layout
    "NMNIST": {"cls": "NMNIST", "sensor": (34, 34, 2), "classes": 10, "kind": "bins",
               "folders": ("Train", "Test"), "what": "N-MNIST"},
    "SHD": {"cls": "SHD", "sensor": (700, 1, 1), "classes": 20, "kind": "h5",
            "files": ("shd_train.h5", "shd_test.h5"), "what": "Spiking Heidelberg Digits"},
    "SSC": {"cls": "SSC", "sensor": (700, 1, 1), "classes": 35, "kind": "h5",
            "files": ("ssc_train.h5", "ssc_test.h5"), "what": "Spiking Speech Commands"},
}


def _tonic():
    try:
        import tonic
        import tonic.io  # noqa: F401
        import tonic.transforms  # noqa: F401
    except ImportError as e:
        raise DataError("tonic(...) needs the tonic package: pip install 'spikedsl[events]' "
                        f"({e})") from None
    return tonic


def network_args(data: str, args: dict, net) -> dict:
    """The arguments of data set ``data`` with the network's step count and
    ``dt`` (in seconds, None when unitless) added for event data sets."""
    if data != "tonic":
        return args
    out = dict(args)
    out.setdefault("steps", int(net.steps))
    out.setdefault("dt", float(net.dt) if net.dt_unit else None)
    return out


# ------------------------------------------------------------------ files
def _nmnist_files(root: Path, folder: str) -> list[tuple[Path, int]] | None:
    for base in (root / "NMNIST" / folder, root / folder):
        if base.is_dir():
            out = []
            for d in sorted(p for p in base.iterdir() if p.is_dir()):
                if not d.name[-1:].isdigit():
                    continue
                label = int(d.name[-1])  # tonic: the folder name's last digit
                out += [(f, label) for f in sorted(d.glob("*.bin"))]
            if out:
                return out
    return None


def _h5_file(root: Path, name: str, fname: str) -> Path | None:
    for p in (root / name / fname, root / fname):
        if p.is_file():
            return p
    return None


def _missing(name: str, root: Path, expected: list[str]) -> DataError:
    spec = EVENT_SETS[name]
    have = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else None
    held = (f"it holds: {', '.join(have)}" if have else "it is empty") if have is not None \
        else "it does not exist"
    return DataError(
        f"tonic(\"{name}\"): no {spec['what']} files in {root} ({held}). Expected tonic's "
        f"layout: {'; '.join(expected)}. tonic.datasets.{spec['cls']}(save_to=\"{root}\") "
        "downloads and extracts them there; spikedsl never downloads")


# ------------------------------------------------------------------ binning
def _frames(ev: np.ndarray, sensor: tuple[int, int, int], T: int, binning: str,
            window_us: float | None) -> tuple[np.ndarray, int]:
    """``ToFrame`` to exactly ``T`` binary frames; returns (frames, dropped events)."""
    from tonic.transforms import ToFrame

    shape = (T, sensor[2], sensor[1], sensor[0])
    if len(ev) == 0:
        return np.zeros(shape, np.float32), 0
    t = ev["t"].astype(np.float64)
    if binning == "time":
        start, window = 0.0, float(window_us)
    else:
        start = float(t.min())
        window = max(1.0, math.ceil((float(t.max()) - start + 1.0) / T))
    end = start + T * window
    keep = (t >= start) & (t < end)
    dropped = int((~keep).sum())
    ev = ev[keep]
    if len(ev) == 0:
        return np.zeros(shape, np.float32), dropped
    fr = ToFrame(sensor_size=sensor, time_window=window, start_time=start, end_time=end)(ev)
    fr = np.asarray(fr)
    out = np.zeros(shape, np.float32)
    n = min(T, fr.shape[0])
    out[:n] = fr[:n].reshape((n,) + shape[1:]) > 0
    return out, dropped


def _sensor(sensor, k: int) -> tuple[int, int, int]:
    sx, sy, sp = sensor
    return (-(-sx // k), -(-sy // k), sp)


def _downsample(ev: np.ndarray, sensor, k: int):
    """tonic's ``Downsample(spatial_factor = 1/k)``: coordinates divided by k, floored."""
    if k == 1:
        return ev, sensor
    from tonic.transforms import Downsample

    return Downsample(spatial_factor=1.0 / k)(ev), _sensor(sensor, k)


# ------------------------------------------------------------------ the loader
def load_tonic(a: _Args, base_dir: str, seed: int) -> Dataset:
    raw = a.get("name")
    if not isinstance(raw, str) or raw.upper() not in EVENT_SETS:
        raise DataError(f"tonic: unknown event data set {raw!r}; known: "
                        f"{', '.join(EVENT_SETS)}")
    name = raw.upper()
    spec = EVENT_SETS[name]
    root = a.path("path", "data", base_dir)
    steps = a.integer("steps", None, lo=1)
    bins = a.integer("bins", None, lo=1)
    if bins is not None and steps is not None and bins != steps:
        raise DataError(f"tonic(\"{name}\"): bins = {bins}, but the network runs {steps} "
                        "steps; one bin is one step (leave bins out to take the network's)")
    T = bins or steps
    if T is None:
        raise DataError(f"tonic(\"{name}\") needs 'bins' (the number of time steps)")
    dt = a.get("dt", None)
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float))
                           or not dt > 0):
        raise DataError(f"tonic: 'dt' must be a positive number of seconds, got {dt!r}")
    binning = a.choice("binning", "time" if dt is not None else "span", ("time", "span"))
    if binning == "time" and dt is None:
        raise DataError(f"tonic(\"{name}\"): binning = time needs a step length: a network "
                        "dt with a time unit (e.g. dt = 1 ms), or use binning = span")
    k = a.integer("downsample", 1, lo=1)
    first = a.flag("first_saccade_only", False)
    if first and name != "NMNIST":
        raise DataError("tonic: 'first_saccade_only' applies to NMNIST only")
    n_train, n_test = a.integer("n_train", None, 1), a.integer("n_test", None, 1)
    split_seed = a.integer("split_seed", seed)
    use_cache = a.flag("cache", False)

    tonic = _tonic()
    cls = getattr(tonic.datasets, spec["cls"])
    window_us = None if dt is None else float(dt) * 1e6

    # the samples of each split (files or HDF5 indices), then seeded subsets
    parts = []
    for split, n in (("train", n_train), ("test", n_test)):
        if spec["kind"] == "bins":
            folder = spec["folders"][0 if split == "train" else 1]
            files = _nmnist_files(root, folder)
            if files is None:
                raise _missing(name, root, [f"{root}/NMNIST/{f}/<digit>/*.bin"
                                            for f in spec["folders"]])
            items = files
        else:
            fname = spec["files"][0 if split == "train" else 1]
            f = _h5_file(root, name, fname)
            if f is None:
                raise _missing(name, root, [f"{root}/{name}/{x}" for x in spec["files"]])
            items = [(f, i) for i in range(_h5_len(f))]
        if n is not None and n < len(items):
            pick = np.sort(np.random.default_rng([split_seed, 0 if split == "train" else 1])
                           .permutation(len(items))[:n])
            items = [items[i] for i in pick]
        parts.append(items)

    key = None
    if use_cache:
        key = _cache_key(name, parts, T, binning, window_us, k, first)
        hit = _cache_read(root, key)
        if hit is not None:
            return hit

    out = []
    dropped = 0
    for items in parts:
        xs, ys = [], []
        for src, idx in items:
            if spec["kind"] == "bins":
                try:
                    ev = tonic.io.read_mnist_file(str(src), dtype=cls.dtype)
                except Exception as e:
                    raise DataError(f"tonic(\"{name}\"): cannot read {src}: {e}") from None
                if first:
                    ev = ev[ev["t"] < 1e5]  # as tonic.datasets.NMNIST(first_saccade_only)
                label = idx
            else:
                ev, label = _h5_sample(src, idx, cls.dtype)
            ev, sensor = _downsample(ev, spec["sensor"], k)
            fr, d = _frames(ev, sensor, T, binning, window_us)
            dropped += d
            if spec["kind"] == "h5":
                fr = fr.reshape(T, -1)
            xs.append(fr)
            ys.append(int(label))
        if not xs:
            sx, sy, sp = _sensor(spec["sensor"], k)
            frame = (sp, sy, sx) if spec["kind"] == "bins" else (sx,)
            out.append((np.zeros((0, T) + frame, np.float32), np.zeros(0, np.int64)))
            continue
        out.append((np.stack(xs), np.asarray(ys, np.int64)))
    (x_tr, y_tr), (x_te, y_te) = out
    for y in (y_tr, y_te):
        if len(y) and (y.min() < 0 or y.max() >= spec["classes"]):
            raise DataError(f"tonic(\"{name}\"): labels outside 0..{spec['classes'] - 1}")
    info = {"layout": "[N, T, C, H, W] (polarity, y, x)" if spec["kind"] == "bins"
            else "[N, T, channels]", "binning": binning, "bins": T,
            "bin_us": window_us if binning == "time" else None,
            "sensor_size": list(_sensor(spec["sensor"], k)), "dropped_events": dropped,
            "root": str(root)}
    ds = _finish(f"tonic({name})", x_tr, y_tr, x_te, y_te, spec["classes"], **info)
    if key is not None:
        _cache_write(root, key, ds)
    return ds


# ------------------------------------------------------------------ HDF5 (SHD / SSC)
def _h5():
    try:
        import h5py
    except ImportError:
        raise DataError("reading SHD/SSC needs h5py: pip install 'spikedsl[events]'") from None
    return h5py


def _h5_len(path: Path) -> int:
    h5py = _h5()
    try:
        with h5py.File(path, "r") as f:
            for k in ("spikes/times", "spikes/units", "labels"):
                if k not in f:
                    raise DataError(f"{path}: no dataset '{k}' (the SHD layout has "
                                    "spikes/times, spikes/units and labels)")
            n = len(f["labels"])
            if len(f["spikes/times"]) != n or len(f["spikes/units"]) != n:
                raise DataError(f"{path}: spikes/times, spikes/units and labels differ in "
                                "length")
            return n
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _h5_sample(path: Path, i: int, dtype) -> tuple[np.ndarray, int]:
    """Sample ``i`` as tonic's HSD datasets read it (times in s -> us, polarity 1)."""
    from tonic.io import make_structured_array

    h5py = _h5()
    with h5py.File(path, "r") as f:
        times = np.asarray(f["spikes/times"][i], dtype=np.float64) * 1e6
        units = np.asarray(f["spikes/units"][i])
        label = int(f["labels"][i])
    if len(times) != len(units):
        raise DataError(f"{path}: sample {i} has {len(times)} times but {len(units)} units")
    if len(units) and (units.min() < 0 or units.max() >= 700):
        raise DataError(f"{path}: sample {i} has units outside 0..699")
    return make_structured_array(times, units, 1, dtype=dtype), label


# ------------------------------------------------------------------ cache
def _cache_key(name, parts, T, binning, window_us, k, first) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([name, T, binning, window_us, k, first]).encode())
    for items in parts:
        h.update(b"|")
        for src, idx in items:
            st = os.stat(src)
            h.update(f"{src}:{idx}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


def _cache_path(root: Path, key: str) -> Path:
    return root / ".spikedsl-cache" / f"tonic-{key}.npz"


def _cache_read(root: Path, key: str) -> Dataset | None:
    p = _cache_path(root, key)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            ds = Dataset(name=str(z["name"]), x_train=z["x_train"], y_train=z["y_train"],
                         x_test=z["x_test"], y_test=z["y_test"],
                         shape=tuple(int(s) for s in z["shape"]), n_classes=int(z["n_classes"]),
                         info=info)
    except Exception:
        return None
    ds.info["cache"] = str(p)
    return ds


def _cache_write(root: Path, key: str, ds: Dataset) -> None:
    p = _cache_path(root, key)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, name=ds.name, x_train=ds.x_train.astype(np.uint8),
                            y_train=ds.y_train, x_test=ds.x_test.astype(np.uint8),
                            y_test=ds.y_test, shape=np.asarray(ds.shape),
                            n_classes=ds.n_classes, info=json.dumps(ds.info))
        os.replace(tmp, p)
    except OSError:
        return
    ds.info["cache"] = str(p)


# ------------------------------------------------------------------ writers
def write_nmnist(path: str | os.PathLike, x, y, t, p) -> None:
    """Write events in N-MNIST's binary format: 40 bits per event, big-endian
    fields x (8 bits), y (8), polarity (1) and timestamp in us (23)."""
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    if not (len(x) == len(y) == len(t) == len(p)):
        raise ValueError("x, y, t and p must have the same length")
    if len(t) and (t.min() < 0 or t.max() >= 2 ** 23):
        raise ValueError("N-MNIST timestamps are 23-bit microseconds")
    if len(x) and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 239):
        raise ValueError("x must be 0..255 and y 0..239 (240 marks overflow records)")
    rec = np.empty((len(x), 5), np.uint8)
    rec[:, 0] = x
    rec[:, 1] = y
    rec[:, 2] = ((p & 1) << 7) | ((t >> 16) & 0x7F)
    rec[:, 3] = (t >> 8) & 0xFF
    rec[:, 4] = t & 0xFF
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(rec.tobytes())


def write_shd(path: str | os.PathLike, times, units, labels, keys=None, speakers=None) -> None:
    """Write an SHD/SSC-layout HDF5 file: ``spikes/times`` (seconds) and
    ``spikes/units`` (variable-length per sample), ``labels``, ``extra/keys``
    and ``extra/speaker``."""
    h5py = _h5()
    n = len(labels)
    if len(times) != n or len(units) != n:
        raise ValueError("times, units and labels must have one entry per sample")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        tt = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
        uu = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i in range(n):
            tt[i] = np.asarray(times[i], np.float16)
            uu[i] = np.asarray(units[i], np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        k = keys if keys is not None else [f"class {c}" for c in range(int(max(labels)) + 1)]
        f.create_dataset("extra/keys", data=np.asarray([s.encode() for s in k]))
        f.create_dataset("extra/speaker", data=np.asarray(
            speakers if speakers is not None else np.zeros(n), np.uint16))


def saccade_events(image, sensor: tuple[int, int] = (34, 34), duration_us: int = 100_000,
                   step_us: int = 1000, amplitude: float = 3.0, threshold: float = 0.2,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Events of a simulated event camera watching ``image`` ([h, w] in [0, 1],
    centred on a ``sensor`` = (width, height) array) while it moves along one
    saccade (there and back along a diagonal of ``amplitude`` pixels), as
    N-MNIST was recorded.  A pixel emits an ON (p = 1) or OFF (p = 0) event
    each time its log intensity moved by ``threshold`` since its last event.
    Returns ``{"x", "y", "t", "p"}`` (t in us, sorted)."""
    img = np.asarray(image, dtype=np.float64)
    W, H = sensor
    h, w = img.shape
    canvas = np.zeros((H + 2, W + 2))
    oy, ox = 1 + (H - h) // 2, 1 + (W - w) // 2
    canvas[oy:oy + h, ox:ox + w] = img
    rng = np.random.default_rng(seed)

    def view(dx: float, dy: float) -> np.ndarray:  # bilinear shift, cropped to the sensor
        ix, iy = int(np.floor(dx)), int(np.floor(dy))
        fx, fy = dx - ix, dy - iy
        a = np.roll(np.roll(canvas, iy, 0), ix, 1)
        b = np.roll(a, 1, 1)
        c = np.roll(a, 1, 0)
        d = np.roll(b, 1, 0)
        out = (1 - fx) * (1 - fy) * a + fx * (1 - fy) * b + (1 - fx) * fy * c + fx * fy * d
        return out[1:H + 1, 1:W + 1]

    n = max(1, duration_us // step_us)
    ref = np.log(0.05 + view(0.0, 0.0))
    xs, ys, ts, ps = [], [], [], []
    for k in range(1, n + 1):
        s = k / n
        off = amplitude * (2 * s if s <= 0.5 else 2 * (1 - s))
        cur = np.log(0.05 + view(off, 0.5 * off))
        diff = cur - ref
        for pol, mask in ((1, diff >= threshold), (0, diff <= -threshold)):
            yy, xx = np.nonzero(mask)
            xs.append(xx)
            ys.append(yy)
            ts.append(k * step_us - rng.integers(1, step_us + 1, size=len(xx)))
            ps.append(np.full(len(xx), pol))
        moved = np.abs(diff) >= threshold
        ref[moved] = cur[moved]
    x, y, t, p = (np.concatenate(v).astype(np.int64) for v in (xs, ys, ts, ps))
    order = np.argsort(t, kind="stable")
    return {"x": x[order], "y": y[order], "t": t[order], "p": p[order]}
