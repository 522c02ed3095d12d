"""Data sets: digits, IDX (MNIST) files, npz, synthetic, seqGraph, batching."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from spikedsl.runtime import seqgraph as sg
from spikedsl.runtime.data import (
    IDX_FILES,
    DataError,
    Dataset,
    batches,
    load_dataset,
    parse_data_spec,
    read_idx,
    stratified_split,
    write_idx,
)


def _check_01(ds: Dataset) -> None:
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.shape[1:] == ds.shape


# ------------------------------------------------------------------- digits
def test_digits_default_flat_split_and_ranges():
    ds = load_dataset("digits", {}, ".", seed=0)
    assert ds.name == "digits" and ds.n_classes == 10
    assert ds.shape == (64,)
    assert ds.n_train + ds.n_test == 1797
    assert ds.n_test == pytest.approx(0.2 * 1797, abs=10)
    _check_01(ds)
    assert ds.x_train.max() == 1.0  # /16 scaling reaches 1
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert set(np.unique(ds.y_train)) == set(range(10))


def test_digits_split_is_stratified():
    ds = load_dataset("digits", {}, ".", seed=3)
    tr = np.bincount(ds.y_train, minlength=10) / ds.n_train
    te = np.bincount(ds.y_test, minlength=10) / ds.n_test
    assert np.abs(tr - te).max() < 0.01
    # per class the test share is the requested fraction (to within rounding)
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(np.bincount(ds.y_test) - 0.2 * counts) <= 0.5)


def test_digits_deterministic_under_seed():
    a = load_dataset("digits", {}, ".", seed=7)
    b = load_dataset("digits", {}, ".", seed=7)
    c = load_dataset("digits", {}, ".", seed=8)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)
    d = load_dataset("digits", {"split_seed": 7}, ".", seed=99)
    np.testing.assert_array_equal(a.y_train, d.y_train)


def test_digits_train_and_test_are_disjoint():
    ds = load_dataset("digits", {}, ".", seed=0)
    tr = {row.tobytes() for row in ds.x_train}
    te = {row.tobytes() for row in ds.x_test}
    # a few digits images are exact duplicates in the data set itself
    assert len(tr & te) <= 5


def test_digits_image_and_upsample_shapes():
    img = load_dataset("digits", {"shape": "image"}, ".", 0)
    assert img.shape == (1, 8, 8)
    flat = load_dataset("digits", {}, ".", 0)
    np.testing.assert_array_equal(img.x_train.reshape(img.n_train, -1), flat.x_train)
    up = load_dataset("digits", {"upsample": 28}, ".", 0)
    assert up.shape == (784,)
    _check_01(up)
    up_img = load_dataset("digits(upsample = 28, shape = image)", {}, ".", 0)
    assert up_img.shape == (1, 28, 28)
    np.testing.assert_array_equal(up_img.x_train.reshape(up_img.n_train, -1), up.x_train)
    # upsampling keeps the mean intensity roughly and the labels untouched
    np.testing.assert_array_equal(up.y_train, flat.y_train)
    assert abs(up.x_train.mean() - flat.x_train.mean()) < 0.02
    near = load_dataset("digits", {"upsample": 16, "interp": "nearest", "shape": "image"}, ".", 0)
    # nearest x2 repeats every pixel in a 2x2 block
    np.testing.assert_array_equal(near.x_train[:, :, ::2, ::2], img.x_train)
    np.testing.assert_array_equal(near.x_train[:, :, 1::2, 1::2], img.x_train)


def test_digits_subsets():
    ds = load_dataset("digits", {"n_train": 100, "n_test": 30}, ".", 0)
    assert (ds.n_train, ds.n_test) == (100, 30)


def test_bad_arguments_are_data_errors():
    with pytest.raises(DataError, match="takes no argument 'colour'.*known: shape"):
        load_dataset("digits", {"colour": 1}, ".", 0)
    with pytest.raises(DataError, match="'shape' must be one of flat, image"):
        load_dataset("digits", {"shape": "cube"}, ".", 0)
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar", {}, ".", 0)
    with pytest.raises(DataError, match="too many positional"):
        load_dataset("synthetic", dict(enumerate(range(9))), ".", 0)
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset("digits", {"test_fraction": 1.5}, ".", 0)


def test_parse_data_spec():
    assert parse_data_spec('mnist("data/m", n_train = 100)') == (
        "mnist", {0: "data/m", "n_train": 100}
    )
    assert parse_data_spec("digits") == ("digits", {})
    assert parse_data_spec("seqgraph(augment = true, degrees = (I, V))") == (
        "seqgraph", {"augment": True, "degrees": ("I", "V")}
    )
    with pytest.raises(DataError):
        parse_data_spec("digits(")


def test_stratified_split_helper():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    tr, te = stratified_split(y, 0.25, seed=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 100
    np.testing.assert_array_equal(np.bincount(y[te]), [2, 5, 8, 10])  # round(n * 0.25)


# ---------------------------------------------------------------------- IDX
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype, suffix: str):
    a = (np.arange(2 * 3 * 5) * 7 % 113).astype(dtype).reshape(2, 3, 5)
    p = tmp_path / f"arr-idx3{suffix}"
    write_idx(p, a)
    if suffix == ".gz":
        with gzip.open(p, "rb") as f:
            assert f.read(2) == b"\x00\x00"
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 5)
    np.testing.assert_array_equal(a, b)


def test_idx_header_is_big_endian(tmp_path: Path):
    p = tmp_path / "x"
    write_idx(p, np.array([1, 258], dtype=np.int32))
    raw = p.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 1])  # int32, one dimension
    assert raw[4:8] == (2).to_bytes(4, "big")
    assert raw[8:] == (1).to_bytes(4, "big") + (258).to_bytes(4, "big")


def test_idx_rejects_bad_files(tmp_path: Path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(DataError, match="10 bytes of data.*holds 3"):
        read_idx(short)
    weird = tmp_path / "weird"
    weird.write_bytes(bytes([0, 0, 0x42, 1]) + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match="unknown IDX element type 0x42"):
        read_idx(weird)


def _write_mnist(root: Path, n_train: int = 50, n_test: int = 20, gz: bool = False) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_train, 28, 28),
                                                                     dtype=np.uint8))
    write_idx(root / f"train-labels-idx1-ubyte{sfx}", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(root / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28),
                                                                    dtype=np.uint8))
    write_idx(root / f"t10k-labels-idx1-ubyte{sfx}", (np.arange(n_test) % 10).astype(np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path: Path, gz: bool):
    _write_mnist(tmp_path / "m", gz=gz)
    ds = load_dataset("mnist", {0: "m"}, str(tmp_path), 0)  # relative to base_dir
    assert (ds.n_train, ds.n_test, ds.shape, ds.n_classes) == (50, 20, (784,), 10)
    _check_01(ds)
    raw = read_idx(tmp_path / "m" / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    np.testing.assert_allclose(ds.x_train[3], raw[3].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, np.arange(50) % 10)
    img = load_dataset("fashion_mnist", {"path": str(tmp_path / "m"), "shape": "image"}, "/", 0)
    assert img.shape == (1, 28, 28) and img.name == "fashion_mnist"
    sub = load_dataset("mnist", {"path": "m", "n_train": 10, "n_test": 5}, str(tmp_path), 0)
    assert (sub.n_train, sub.n_test) == (10, 5)


def test_mnist_torchvision_layout(tmp_path: Path):
    _write_mnist(tmp_path / "MNIST" / "raw")
    assert load_dataset("mnist", {"path": str(tmp_path)}, ".", 0).n_train == 50


def test_mnist_missing_files_message(tmp_path: Path):
    with pytest.raises(DataError) as ei:
        load_dataset("mnist", {"path": "nowhere"}, str(tmp_path), 0)
    msg = str(ei.value)
    for name in IDX_FILES:
        assert name in msg
    assert str(tmp_path / "nowhere") in msg and "does not exist" in msg
    assert "https://" in msg and "mnist" in msg
    # a partly filled directory: still every expected name, and what is there
    d = tmp_path / "partial"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataError) as ei:
        load_dataset("fashion_mnist", {"path": str(d)}, ".", 0)
    msg = str(ei.value)
    assert all(name in msg for name in IDX_FILES)
    assert "fashion-mnist" in msg and str(d) in msg and "holds: train-images" in msg


def test_mnist_default_path_is_relative_to_base_dir(tmp_path: Path):
    with pytest.raises(DataError, match=str(tmp_path / "data" / "mnist")):
        load_dataset("mnist", {}, str(tmp_path), 0)
    _write_mnist(tmp_path / "data" / "mnist")
    assert load_dataset("mnist", {}, str(tmp_path), 0).n_test == 20


def test_mnist_mismatched_counts(tmp_path: Path):
    _write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="t10k images .* and labels .* do not match"):
        load_dataset("mnist", {"path": str(tmp_path)}, ".", 0)


# ---------------------------------------------------------------------- npz
def test_npz_split_and_explicit_test(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.random((100, 3, 4)).astype(np.float32)
    y = np.arange(100) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset("npz", {0: "d.npz"}, str(tmp_path), 0)
    assert (ds.n_train, ds.n_test, ds.shape, ds.n_classes) == (80, 20, (3, 4), 5)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [4] * 5)  # stratified
    np.savez(tmp_path / "e.npz", x=(x * 255).astype(np.uint8), y=y,
             x_test=(x[:7] * 255).astype(np.uint8), y_test=y[:7])
    ds = load_dataset("npz", {"path": "e.npz"}, str(tmp_path), 0)
    assert (ds.n_train, ds.n_test) == (100, 7)
    _check_01(ds)
    np.savez(tmp_path / "u.npz", x=x)  # no labels: autoencoder data
    ds = load_dataset("npz", {"path": "u.npz"}, str(tmp_path), 0)
    assert ds.y_train is None and ds.n_classes == 0 and ds.n_train == 80


def test_npz_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"no such file .*missing\.npz.*'x'"):
        load_dataset("npz", {"path": "missing.npz"}, str(tmp_path), 0)
    np.savez(tmp_path / "nox.npz", images=np.zeros((3, 2)))
    with pytest.raises(DataError, match="has no array 'x' \\(it holds: images\\)"):
        load_dataset("npz", {"path": "nox.npz"}, str(tmp_path), 0)
    np.savez(tmp_path / "big.npz", x=np.full((4, 2), 3.0), y=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="not \\[0, 1\\].*scale = minmax"):
        load_dataset("npz", {"path": "big.npz"}, str(tmp_path), 0)
    ok = load_dataset("npz", {"path": "big.npz", "scale": "minmax", "test_fraction": 0.5},
                      str(tmp_path), 0)
    _check_01(ok)
    np.savez(tmp_path / "noyt.npz", x=np.zeros((4, 2)), y=np.zeros(4, dtype=int),
             x_test=np.zeros((2, 2)))
    with pytest.raises(DataError, match="no array 'y_test'"):
        load_dataset("npz", {"path": "noyt.npz"}, str(tmp_path), 0)
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 2)), y=np.zeros(3, dtype=int))
    with pytest.raises(DataError, match="'y' must have shape \\[4\\]"):
        load_dataset("npz", {"path": "shape.npz"}, str(tmp_path), 0)
    with pytest.raises(DataError, match="needs the argument 'path'"):
        load_dataset("npz", {}, str(tmp_path), 0)


# ---------------------------------------------------------------- synthetic
def test_synthetic_shapes_and_determinism():
    a = load_dataset("synthetic", {}, ".", 0)
    assert (a.n_train, a.n_test, a.shape, a.n_classes) == (800, 200, (64,), 10)
    _check_01(a)
    b = load_dataset("synthetic", {}, ".", 123)  # run seed does not change the data
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = load_dataset("synthetic", {"seed": 1}, ".", 0)
    assert not np.array_equal(a.x_train, c.x_train)
    d = load_dataset("synthetic(300, 20, 3, kind = sparse)", {}, ".", 0)
    assert (d.n_train + d.n_test, d.shape, d.n_classes) == (300, (20,), 3)
    _check_01(d)


@pytest.mark.parametrize("kind", ["blobs", "sparse"])
def test_synthetic_is_learnable(kind: str):
    ds = load_dataset("synthetic", {"kind": kind}, ".", 0)
    centroids = np.stack([ds.x_train[ds.y_train == c].mean(0) for c in range(ds.n_classes)])
    dist = ((ds.x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
    acc = (dist.argmin(1) == ds.y_test).mean()
    assert acc > 0.9


# ------------------------------------------------------------------ batches
def test_batches_deterministic_and_complete():
    x = np.arange(23, dtype=np.float32)[:, None]
    y = np.arange(23)
    run = [yb.tolist() for _, yb in batches(x, y, 5, shuffle=True, seed=1, epoch=2)]
    again = [yb.tolist() for _, yb in batches(x, y, 5, shuffle=True, seed=1, epoch=2)]
    other = [yb.tolist() for _, yb in batches(x, y, 5, shuffle=True, seed=1, epoch=3)]
    assert run == again and run != other
    assert [len(b) for b in run] == [5, 5, 5, 5, 3]
    assert sorted(i for b in run for i in b) == list(range(23))
    for xb, yb in batches(x, y, 5, shuffle=True, seed=1, epoch=2):
        np.testing.assert_array_equal(xb[:, 0], yb)
    plain = [yb.tolist() for _, yb in batches(x, y, 10, shuffle=False)]
    assert plain[0] == list(range(10))
    dropped = list(batches(x, None, 5, shuffle=True, drop_last=True))
    assert len(dropped) == 4 and all(yb is None for _, yb in dropped)


# ----------------------------------------------------------------- seqGraph
def test_seqgraph_chords_and_graphs():
    assert len(sg.all_chords()) == 49 and len(sg.chord_dictionary()) == 49
    assert sorted(sg.chord_dictionary().values()) == list(range(1, 50))
    assert sg.parse_chord("II_{56}") == sg.Chord(1, "56")
    assert sg.parse_chord("VI46").name == "VI46"
    with pytest.raises(ValueError, match="not a chord"):
        sg.parse_chord("VIII7")
    gs = sg.graphs()
    assert len(gs) == 21
    by_start = {(g.start.name, g.end.name): [e.name for e in g.edges] for g in gs}
    # the paper's examples of passing progressions
    assert by_start[("I7", "I56")] == ["V46", "VII6", "II35"]
    assert by_start[("I56", "I34")] == ["VII46", "II6", "IV35"]
    assert by_start[("I34", "I2")] == ["II46", "IV6", "VI35"]
    # a vertical triad shares its edge triads
    assert by_start[("III56", "III34")] == by_start[("V7", "V56")] == by_start[("I34", "I2")]


def test_seqgraph_chord_places_match_the_paper():
    # II7 one dot, II56 two, triads three (the paper's Figure 5 discussion)
    assert len(sg.chord_positions("II7")) == 1
    assert len(sg.chord_positions("II56")) == 2
    for t in ("VI46", "V35", "I35"):
        assert len(sg.chord_positions(t)) == 3
    every = [p for c in sg.all_chords() for p in sg.chord_positions(c)]
    assert len(every) == len(set(every)) == 21 * 5  # no two chords share a pixel
    assert all(0 <= r < 28 and 0 <= c < 28 for r, c in every)


def test_seqgraph_render_is_progressive():
    f = sg.render_sequence(["II7", "VI46", "II56", "V35", "I35"])
    assert f.shape == (5, 1, 28, 28) and f.dtype == np.float32
    for t in range(4):
        drawn_now, drawn_next = f[t] > 0, f[t + 1] > 0
        assert np.all(drawn_next[drawn_now])  # pixels are only added
        assert drawn_next.sum() > drawn_now.sum()
    for r, c in sg.chord_positions("I35"):
        assert f[4, 0, r, c] == pytest.approx(sg.chord_value("I35"))
        assert f[3, 0, r, c] == 0.0
    no_lines = sg.render_sequence(["II7", "VI46", "II56", "V35", "I35"], lines=False)
    assert (no_lines[4] > 0).sum() == 1 + 3 + 2 + 3 + 3
    assert (f[4] > 0).sum() > (no_lines[4] > 0).sum()  # the V35 - I35 line


def test_seqgraph_sizes_values_and_uniqueness():
    progs = sg.progressions()
    assert len(progs) == sg.N_BASE == 216 and len(set(progs)) == 216
    assert len(sg.progressions(sg.DEGREES)) == 7 * 72
    for p in progs:
        assert len(p) == 5 and len(set(p[:4])) == 4  # four distinct input chords
    assert any(p[4] in p[:4] for p in progs) and any(p[4] not in p[:4] for p in progs)
    base = sg.generate()
    assert base.frames.shape == (216, 5, 1, 28, 28) and base.frames.dtype == np.float32
    assert base.frames.min() == 0.0 and base.frames.max() <= 1.0
    flat = base.frames.reshape(216, -1)
    assert len({row.tobytes() for row in flat}) == 216  # different progressions differ
    # two progressions differing in one chord differ in that frame
    i = progs.index(("I7", "V46", "I56", "VII6", "I7"))
    j = progs.index(("I7", "VII6", "I56", "V46", "I7"))
    assert not np.array_equal(base.frames[i, 1], base.frames[j, 1])
    # the target is determined by the four input frames (a learnable task)
    seen: dict[bytes, bytes] = {}
    for f in base.frames:
        assert seen.setdefault(f[:4].tobytes(), f[4].tobytes()) == f[4].tobytes()
    assert len(seen) == 216


def test_seqgraph_augmentation():
    base = sg.generate()
    aug = sg.generate(augment=True)
    assert len(aug) == 2160 and aug.frames.shape == (2160, 5, 1, 28, 28)
    assert aug.frames.min() >= 0.0 and aug.frames.max() <= 1.0
    np.testing.assert_allclose(np.unique(aug.terms), np.linspace(0.01, 0.1, 10), atol=1e-6)
    assert np.all(np.bincount(aug.base_index) == 10)
    for k in (0, 1234):
        b = aug.base_index[k]
        drawn = base.frames[b] > 0
        np.testing.assert_allclose(aug.frames[k][drawn], base.frames[b][drawn] + aug.terms[k],
                                   atol=1e-6)
        assert np.all(aug.frames[k][~drawn] == 0.0)
        assert aug.progressions[k] == base.progressions[b]


def test_seqgraph_split_keeps_augmented_copies_together():
    aug = sg.generate(augment=True)
    tr, va = sg.split(aug, 0.2, seed=0)
    assert (len(tr), len(va)) == (1730, 430)
    assert not set(aug.base_index[tr]) & set(aug.base_index[va])
    _, va2 = sg.split(aug, 0.2, seed=0)
    np.testing.assert_array_equal(va, va2)
    _, va3 = sg.split(aug, 0.2, seed=1)
    assert not np.array_equal(va, va3)


def test_seqgraph_through_load_dataset():
    ds = load_dataset("seqgraph", {}, ".", 0)
    assert (ds.n_train, ds.n_test, ds.shape, ds.n_classes) == (173, 43, (5, 1, 28, 28), 0)
    assert ds.y_train is None
    _check_01(ds)
    aug = load_dataset("seqgraph", {"augment": True, "target": "next"}, ".", 0)
    assert (aug.n_train, aug.n_test, aug.shape) == (1730, 430, (4, 1, 28, 28))
    assert aug.y_train.shape == (1730, 1, 28, 28) and aug.y_train.dtype == np.float32
    assert len(aug.info["progressions_train"]) == 1730
    again = load_dataset("seqgraph", {"augment": "true", "target": "next"}, ".", 0)
    np.testing.assert_array_equal(aug.x_test, again.x_test)
    with pytest.raises(DataError, match="unknown degree 'IX'"):
        load_dataset("seqgraph", {"degrees": "I,IX"}, ".", 0)
    assert load_dataset("seqgraph", {"degrees": "all"}, ".", 0).n_train == 403
