"""Data sets for training runs (pure numpy; torch is never imported here).

``load_dataset("digits", {"shape": "image"}, base_dir, seed)`` returns a
:class:`Dataset` of float32 arrays in [0, 1].  Data sets: ``digits``,
``mnist(path)``, ``fashion_mnist(path)``, ``npz(path)``, ``synthetic(...)``,
``seqgraph(...)``, ``tonic(...)`` (event data, spikedsl/runtime/events.py),
``spoken_digits(...)`` (spectrograms, spikedsl/runtime/spoken.py);
see ``docs/data.md``.
"""

from __future__ import annotations

import ast
import gzip
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "batches",
    "load_dataset",
    "parse_data_spec",
    "read_idx",
    "stratified_split",
    "write_idx",
]


class DataError(Exception):
    """A data set cannot be loaded (missing files, bad arguments, bad contents)."""


@dataclass
class Dataset:
    """Train / test arrays; ``x`` float32 in [0, 1] shaped ``[N, *shape]``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    shape: tuple[int, ...]
    n_classes: int  # 0 when there are no class labels
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


# ----------------------------------------------------------------- arguments
_MISSING = object()


class _Args:
    """Named arguments of one data set, with positional ones mapped by order."""

    def __init__(self, name: str, args: Mapping[Any, Any] | None, params: Sequence[str]):
        self.name = name
        self.values: dict[str, Any] = {}
        for key, val in (args or {}).items():
            if isinstance(key, int):
                if not 0 <= key < len(params):
                    raise DataError(
                        f"{name}: too many positional arguments (takes {len(params)}: "
                        f"{', '.join(params) or 'none'})"
                    )
                key = params[key]
            if key not in params:
                raise DataError(
                    f"{name} takes no argument '{key}'; known: {', '.join(params) or 'none'}"
                )
            if key in self.values:
                raise DataError(f"{name}: argument '{key}' given twice")
            self.values[key] = val

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.values:
            return self.values[key]
        if default is _MISSING:
            raise DataError(f"{self.name} needs the argument '{key}'")
        return default

    def num(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise DataError(f"{self.name}: '{key}' must be a number, got {v!r}")
        if not lo <= float(v) <= hi:
            raise DataError(f"{self.name}: '{key}' must lie in [{lo:g}, {hi:g}], got {v}")
        return float(v)

    def integer(self, key: str, default: int | None, lo: int = 0) -> int | None:
        v = self.get(key, default)
        if v is None:
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise DataError(f"{self.name}: '{key}' must be an integer >= {lo}, got {v!r}")
        return int(v)

    def flag(self, key: str, default: bool) -> bool:
        v = self.get(key, default)
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        if isinstance(v, (bool, int, np.integer)) and int(v) in (0, 1):
            return bool(v)
        raise DataError(f"{self.name}: '{key}' must be true or false, got {v!r}")

    def choice(self, key: str, default: str, options: Sequence[str]) -> str:
        v = self.get(key, default)
        if v not in options:
            raise DataError(
                f"{self.name}: '{key}' must be one of {', '.join(options)}, got {v!r}"
            )
        return str(v)

    def path(self, key: str, default: str | None, base_dir: str) -> Path:
        """A path relative to ``base_dir``; required when ``default`` is None."""
        v = self.get(key) if default is None else self.get(key, default)
        if not isinstance(v, (str, os.PathLike)):
            raise DataError(f"{self.name}: '{key}' must be a path string, got {v!r}")
        p = Path(v).expanduser()
        return p if p.is_absolute() else Path(base_dir) / p


def parse_data_spec(text: str) -> tuple[str, dict[Any, Any]]:
    """``'mnist("data", n_train = 1000)'`` -> ``("mnist", {0: "data", "n_train": 1000})``.

    Bare names (``image``, ``true``) become strings / booleans.
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise DataError(f"cannot read data set {text!r}: {e.msg}") from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise DataError(f"cannot read data set {text!r}: expected NAME or NAME(args)")

    def value(v: ast.expr) -> Any:
        if isinstance(v, ast.Name):
            return {"true": True, "false": False}.get(v.id, v.id)
        if isinstance(v, ast.Tuple | ast.List):
            return tuple(value(e) for e in v.elts)
        try:
            return ast.literal_eval(v)
        except ValueError:
            raise DataError(f"cannot read data set {text!r}: bad argument") from None

    args: dict[Any, Any] = {i: value(a) for i, a in enumerate(node.args)}
    for kw in node.keywords:
        if kw.arg is None:
            raise DataError(f"cannot read data set {text!r}: '**' is not allowed")
        args[kw.arg] = value(kw.value)
    return node.func.id, args


# ------------------------------------------------------------------- helpers
def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: per class, ``round(n_c * test_fraction)`` to test.

    Returns sorted-by-shuffle train and test index arrays.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    tr, te = np.concatenate(train), np.concatenate(test)
    return rng.permutation(tr), rng.permutation(te)


def _random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    return perm[n_test:], perm[:n_test]


def _split(
    x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    if y is not None:
        tr, te = stratified_split(y, test_fraction, seed)
        return x[tr], y[tr], x[te], y[te]
    tr, te = _random_split(len(x), test_fraction, seed)
    return x[tr], None, x[te], None


def _subset(
    x: np.ndarray, y: np.ndarray | None, n: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``n`` samples of a seeded shuffle (all when ``n`` is None or large)."""
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[idx], (None if y is None else y[idx])


def _upsample(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize ``[N, H, W]`` to ``[N, size, size]`` (bilinear with half-pixel centres,
    as ``align_corners=False``, or nearest)."""
    _, h, w = img.shape

    def coords(src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = (np.arange(size) + 0.5) * src / size - 0.5
        if mode == "nearest":
            i = np.clip(np.floor((np.arange(size) + 0.5) * src / size), 0, src - 1).astype(int)
            return i, i, np.zeros(size)
        pos = np.clip(pos, 0, src - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, src - 1)
        return i0, i1, pos - i0

    r0, r1, fr = coords(h)
    c0, c1, fc = coords(w)
    top = img[:, r0][:, :, c0] * (1 - fc) + img[:, r0][:, :, c1] * fc
    bot = img[:, r1][:, :, c0] * (1 - fc) + img[:, r1][:, :, c1] * fc
    out = top * (1 - fr)[None, :, None] + bot * fr[None, :, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _finish(
    name: str,
    x_tr: np.ndarray,
    y_tr: np.ndarray | None,
    x_te: np.ndarray,
    y_te: np.ndarray | None,
    n_classes: int,
    **info: Any,
) -> Dataset:
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    for part in (x_tr, x_te):
        if part.size and (not np.isfinite(part).all() or part.min() < 0 or part.max() > 1):
            raise DataError(f"{name}: values must lie in [0, 1]")
    ys = [None if y is None else np.asarray(y, dtype=np.int64) for y in (y_tr, y_te)]
    return Dataset(
        name=name,
        x_train=x_tr,
        y_train=ys[0],
        x_test=x_te,
        y_test=ys[1],
        shape=tuple(int(s) for s in x_tr.shape[1:]),
        n_classes=n_classes,
        info=info,
    )


def _image_shape(a: _Args, x: np.ndarray) -> np.ndarray:
    """Flatten ``[N, H, W]`` (``shape = flat``) or add a channel (``shape = image``)."""
    mode = a.choice("shape", "flat", ("flat", "image"))
    return x.reshape(len(x), -1) if mode == "flat" else x[:, None]


# ----------------------------------------------------------------- data sets
def _digits(a: _Args, base_dir: str, seed: int) -> Dataset:
    from sklearn.datasets import load_digits  # lazy: scikit-learn is an optional extra

    test_fraction = a.num("test_fraction", 0.2, 0.0, 0.9)
    up = a.integer("upsample", None, lo=8)
    interp = a.choice("interp", "bilinear", ("bilinear", "nearest"))
    split_seed = a.integer("split_seed", seed)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    if up is not None and up != 8:
        x = _upsample(x, up, interp)
    x = _image_shape(a, x)
    x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, split_seed)
    x_tr, y_tr = _subset(x_tr, y_tr, a.integer("n_train", None), split_seed)
    x_te, y_te = _subset(x_te, y_te, a.integer("n_test", None), split_seed)
    return _finish("digits", x_tr, y_tr, x_te, y_te, 10)


# IDX element types (third byte of the magic number).
_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` is decompressed): big-endian header, magic
    ``0x0000TTNN`` (TT element type, NN number of dimensions), NN uint32 sizes."""
    p = Path(path)
    try:
        with _open(p) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {p}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise DataError(f"{p}: unknown IDX element type 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{p}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = _IDX_TYPES[code]
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise DataError(
            f"{p}: IDX header says {dims} ({need} bytes of data) but the file holds {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    a = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    key = a.dtype.newbyteorder("=")
    if key not in codes:
        raise DataError(f"IDX cannot store dtype {a.dtype}")
    if a.ndim == 0 or a.ndim > 255:
        raise DataError("IDX needs an array with 1..255 dimensions")
    header = bytes([0, 0, codes[key], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    data = header + a.astype(_IDX_TYPES[codes[key]]).tobytes()
    p = Path(path)
    if p.suffix == ".gz":
        with gzip.open(p, "wb") as f:
            f.write(data)
    else:
        p.write_bytes(data)


IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_SOURCES: dict[str, tuple[str, str, str]] = {
    # name -> (default directory, torchvision folder, where to get the files)
    "mnist": (
        "data/mnist",
        "MNIST",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/ "
            "(mirror of http://yann.lecun.com/exdb/mnist/)"
        ),
    ),
    "fashion_mnist": (
        "data/fashion_mnist",
        "FashionMNIST",
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
            "(see https://github.com/zalandoresearch/fashion-mnist)"
        ),
    ),
}


def _find_idx(root: Path, folder: str) -> dict[str, Path] | None:
    """The four IDX files under ``root`` (also ``root/raw`` and ``root/<folder>/raw``,
    the torchvision layout), plain or ``.gz``; None when any is missing."""
    for d in (root, root / "raw", root / folder / "raw"):
        found = {}
        for name in IDX_FILES:
            for cand in (d / name, d / (name + ".gz")):
                if cand.is_file():
                    found[name] = cand
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def _idx_dataset(name: str, a: _Args, base_dir: str, seed: int) -> Dataset:
    default_dir, folder, source = _IDX_SOURCES[name]
    root = a.path("path", default_dir, base_dir)
    files = _find_idx(root, folder)
    if files is None:
        present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise DataError(
            f"{name}: IDX files not found in {root}"
            + ("" if root.is_dir() else " (the directory does not exist)")
            + ".\n  expected these 4 files there (each may also end in .gz): "
            + ", ".join(IDX_FILES)
            + f"\n  get them from {source}"
            + f"\n  and put them in {root}"
            + (f"\n  the directory holds: {', '.join(present[:10])}" if present else "")
        )
    arrays = {k: read_idx(p) for k, p in files.items()}
    x_tr, y_tr = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    x_te, y_te = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for xs, ys, part in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise DataError(
                f"{name}: {part} images {xs.shape} and labels {ys.shape} do not match "
                "(expected [N, H, W] images and [N] labels)"
            )
        if xs.dtype != np.uint8:
            raise DataError(f"{name}: {part} images must be unsigned bytes, got {xs.dtype}")
    split_seed = a.integer("split_seed", seed)
    x_tr, y_tr = _subset(x_tr, y_tr, a.integer("n_train", None), split_seed)
    x_te, y_te = _subset(x_te, y_te, a.integer("n_test", None), split_seed)
    to01 = [_image_shape(a, xs.astype(np.float32) / 255.0) for xs in (x_tr, x_te)]
    return _finish(name, to01[0], y_tr, to01[1], y_te, 10, files=files)


def _npz(a: _Args, base_dir: str, seed: int) -> Dataset:
    path = a.path("path", None, base_dir)
    if not path.is_file():
        raise DataError(
            f"npz: no such file {path}; expected an .npz with arrays 'x' [N, ...] and "
            "optionally 'y' [N] (int labels), 'x_test', 'y_test'"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"npz: cannot read {path}: {e}") from None
    if "x" not in arrs:
        raise DataError(
            f"npz: {path} has no array 'x' (it holds: {', '.join(sorted(arrs)) or 'nothing'}); "
            "expected 'x' and optionally 'y', 'x_test', 'y_test'"
        )
    if "y_test" in arrs and "x_test" not in arrs:
        raise DataError(f"npz: {path} has 'y_test' but no array 'x_test'")
    if "x_test" in arrs and ("y" in arrs) != ("y_test" in arrs):
        missing = "y_test" if "y" in arrs else "y"
        raise DataError(f"npz: {path} has labels for only one split: no array '{missing}'")
    scale = a.choice("scale", "auto", ("auto", "none", "minmax"))

    def norm(x: np.ndarray, key: str) -> np.ndarray:
        if x.dtype == np.uint8 and scale == "auto":
            return x.astype(np.float32) / 255.0
        if x.dtype.kind not in "fiub":
            raise DataError(f"npz: '{key}' must be numeric, got {x.dtype}")
        x = x.astype(np.float32)
        if scale == "minmax":
            lo, hi = float(arrs["x"].min()), float(arrs["x"].max())
            return np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(
                f"npz: '{key}' values span [{x.min():g}, {x.max():g}], not [0, 1]; "
                "rescale them or use npz(path, scale = minmax)"
            )
        return x

    def labels(key: str, n: int) -> np.ndarray | None:
        if key not in arrs:
            return None
        y = arrs[key]
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"npz: '{key}' must have shape [{n}], got {list(y.shape)}")
        if y.dtype.kind not in "iu" and not (
            y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)
        ):
            raise DataError(f"npz: '{key}' must hold integer class labels")
        if y.size and y.min() < 0:
            raise DataError(f"npz: '{key}' holds negative labels")
        return y.astype(np.int64)

    x = norm(arrs["x"], "x")
    y = labels("y", len(x))
    split_seed = a.integer("split_seed", seed)
    if "x_test" in arrs:
        x_te = norm(arrs["x_test"], "x_test")
        y_te = labels("y_test", len(x_te))
        if x_te.shape[1:] != x.shape[1:]:
            raise DataError(
                f"npz: 'x' samples {list(x.shape[1:])} and 'x_test' samples "
                f"{list(x_te.shape[1:])} differ in shape"
            )
        x_tr, y_tr = x, y
    else:
        x_tr, y_tr, x_te, y_te = _split(x, y, a.num("test_fraction", 0.2, 0.0, 0.9), split_seed)
    ys = [v for v in (y_tr, y_te) if v is not None and v.size]
    n_classes = int(max(v.max() for v in ys)) + 1 if ys else 0
    n_classes = a.integer("classes", n_classes) or 0
    return _finish("npz", x_tr, y_tr, x_te, y_te, n_classes, file=str(path))


def _synthetic(a: _Args, base_dir: str, seed: int) -> Dataset:
    n = a.integer("n", 1000, lo=2) or 2
    features = a.integer("features", 64, lo=1) or 1
    classes = a.integer("classes", 10, lo=2) or 2
    gen_seed = a.integer("seed", 0)
    kind = a.choice("kind", "blobs", ("blobs", "sparse"))
    noise = a.num("noise", 0.15 if kind == "blobs" else 0.05, 0.0, 1.0)
    test_fraction = a.num("test_fraction", 0.2, 0.0, 0.9)
    rng = np.random.default_rng(gen_seed)
    y = np.arange(n, dtype=np.int64) % classes  # balanced classes
    y = rng.permutation(y)
    if kind == "blobs":
        # class prototypes in [0.1, 0.9] plus Gaussian noise, clipped to [0, 1]
        protos = rng.uniform(0.1, 0.9, size=(classes, features))
        x = protos[y] + rng.normal(0.0, noise, size=(n, features))
    else:
        # each class switches on its own ~20 % of features; noise flips pixels
        protos = (rng.random((classes, features)) < 0.2).astype(np.float64)
        flip = rng.random((n, features)) < noise
        x = np.abs(protos[y] - flip) * rng.uniform(0.6, 1.0, size=(n, features))
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, gen_seed)
    return _finish("synthetic", x_tr, y_tr, x_te, y_te, classes, kind=kind)


def _seqgraph(a: _Args, base_dir: str, seed: int) -> Dataset:
    from spikedsl.runtime import seqgraph as sg

    augment = a.flag("augment", False)
    n_terms = a.integer("terms", len(sg.DEFAULT_TERMS), lo=1) or 1
    lo = a.num("term_min", 0.01, 0.0, 0.1)
    hi = a.num("term_max", 0.1, lo, 0.1)
    degrees = a.get("degrees", sg.DEFAULT_DEGREES)
    if isinstance(degrees, str):
        degrees = tuple(d.strip() for d in degrees.split(",")) if degrees != "all" else sg.DEGREES
    lines = a.flag("lines", True)
    target = a.choice("target", "none", ("none", "next"))
    val_fraction = a.num("val_fraction", 0.2, 0.0, 0.9)
    split_seed = a.integer("split_seed", seed) or 0
    terms = tuple(float(t) for t in np.round(np.linspace(lo, hi, n_terms), 6))
    try:
        data = sg.generate(augment=augment, terms=terms, degrees=degrees, lines=lines)
    except ValueError as e:
        raise DataError(f"seqgraph: {e}") from None
    tr, va = sg.split(data, val_fraction, split_seed)
    x = data.frames
    info = {
        "progressions_train": [data.progressions[i] for i in tr],
        "progressions_test": [data.progressions[i] for i in va],
        "terms_train": data.terms[tr],
        "terms_test": data.terms[va],
        "layout": "[N, T, C, H, W] (batch first; frames 0-3 input, 4 target)",
    }
    if target == "next":
        xi, yt = x[:, : sg.N_INPUT], x[:, sg.N_INPUT]
        ds = _finish("seqgraph", xi[tr], None, xi[va], None, 0, **info)
        ds.y_train, ds.y_test = yt[tr], yt[va]  # float frames, not class labels
        return ds
    return _finish("seqgraph", x[tr], None, x[va], None, 0, **info)


def _tonic(a: _Args, base_dir: str, seed: int) -> Dataset:
    from spikedsl.runtime.events import load_tonic  # event data: tonic, h5py on demand

    return load_tonic(a, base_dir, seed)


def _spoken(a: _Args, base_dir: str, seed: int) -> Dataset:
    from spikedsl.runtime.spoken import load_spoken  # spectrograms of spoken digits

    return load_spoken(a, base_dir, seed)


_Loader = Callable[[_Args, str, int], Dataset]

# name -> (parameter names in positional order, loader)
DATASETS: dict[str, tuple[tuple[str, ...], _Loader]] = {
    "digits": (
        ("shape", "upsample", "interp", "test_fraction", "split_seed", "n_train", "n_test"),
        _digits,
    ),
    "mnist": (
        ("path", "shape", "n_train", "n_test", "split_seed"),
        lambda a, b, s: _idx_dataset("mnist", a, b, s),
    ),
    "fashion_mnist": (
        ("path", "shape", "n_train", "n_test", "split_seed"),
        lambda a, b, s: _idx_dataset("fashion_mnist", a, b, s),
    ),
    "npz": (("path", "test_fraction", "split_seed", "scale", "classes"), _npz),
    "synthetic": (
        ("n", "features", "classes", "seed", "kind", "noise", "test_fraction"),
        _synthetic,
    ),
    "seqgraph": (
        ("augment", "terms", "term_min", "term_max", "degrees", "lines", "target",
         "val_fraction", "split_seed"),
        _seqgraph,
    ),
    # spoken digits 0-9 as 39-channel spectrograms (spikedsl/runtime/spoken.py, spoken.PARAMS)
    "spoken_digits": (
        ("source", "path", "per_digit", "frames", "channels", "noise", "snr_min", "snr_max",
         "test_fraction", "split_seed", "shape", "cache", "n_train", "n_test", "gen_seed"),
        _spoken,
    ),
    # event data sets read with tonic (spikedsl/runtime/events.py, events.PARAMS)
    "tonic": (
        ("name", "path", "bins", "binning", "downsample", "n_train", "n_test", "split_seed",
         "first_saccade_only", "cache", "steps", "dt"),
        _tonic,
    ),
}


def load_dataset(
    spec: str, args: Mapping[Any, Any] | None = None, base_dir: str = ".", seed: int = 0
) -> Dataset:
    """Load data set ``spec`` (a name, or ``"name(args)"`` text) with ``args``.

    ``args`` maps argument names (or positions, as ints) to values; relative
    paths are taken from ``base_dir`` (the spec file's directory).  ``seed``
    (the run's seed) drives the train/test split unless ``split_seed`` is given.
    Raises :class:`DataError` with a message meant for the user.
    """
    name, extra = parse_data_spec(spec) if "(" in spec else (spec.strip(), {})
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; known: {', '.join(DATASETS)}")
    merged = dict(extra)
    merged.update(args or {})
    params, loader = DATASETS[name]
    return loader(_Args(name, merged, params), str(base_dir), int(seed))


def batches(
    x: np.ndarray,
    y: np.ndarray | None,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(xb, yb)`` batches; the order depends only on ``seed`` and ``epoch``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], (None if y is None else y[idx])
