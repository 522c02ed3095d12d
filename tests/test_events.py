"""Event data through tonic (spikedsl/runtime/events.py): tiny files in the
real formats (N-MNIST's 40-bit binary records, SHD's HDF5 layout) written
here, read back with tonic's readers and binned to the network's steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tonic = pytest.importorskip("tonic")
h5py = pytest.importorskip("h5py")

from spikedsl.runtime import events as E  # noqa: E402
from spikedsl.runtime.data import DataError, load_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _nmnist(root: Path, samples: dict[str, list[tuple[int, dict]]]) -> Path:
    for split, items in samples.items():
        for i, (label, ev) in enumerate(items):
            E.write_nmnist(root / "NMNIST" / split / str(label) / f"{i:05d}.bin", **ev)
    return root


def _ev(x, y, t, p):
    return {"x": x, "y": y, "t": t, "p": p}


def test_nmnist_binary_format_round_trips_through_tonic(tmp_path):
    f = tmp_path / "a.bin"
    ev = _ev([0, 33, 5, 200], [0, 20, 33, 239], [0, 1500, 70000, 2 ** 23 - 1], [1, 0, 1, 0])
    E.write_nmnist(f, **ev)
    raw = f.read_bytes()
    assert len(raw) == 4 * 5  # 40 bits per event
    # record 2: x=33 y=20, p=0, t=1500 = 0x0005DC -> bytes 21 14 00 05 DC
    assert raw[5:10] == bytes([33, 20, 0x00, 0x05, 0xDC])
    assert raw[15:20] == bytes([200, 239, 0x7F, 0xFF, 0xFF])  # p=0, t=2**23-1
    got = tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype)
    assert got["x"].tolist() == ev["x"] and got["y"].tolist() == ev["y"]
    assert got["t"].tolist() == ev["t"] and got["p"].tolist() == ev["p"]
    with pytest.raises(ValueError, match="23-bit"):
        E.write_nmnist(f, [0], [0], [2 ** 23], [1])


def test_nmnist_binned_to_the_network_steps(tmp_path):
    root = _nmnist(tmp_path, {
        "Train": [(3, _ev([5, 6, 7, 1], [2, 2, 30, 1], [1500, 1600, 4999, 9000], [0, 1, 1, 1])),
                  (7, _ev([10], [11], [0], [1]))],
        "Test": [(1, _ev([0, 0], [0, 0], [200, 300], [1, 1]))],
    })
    ds = load_dataset("tonic", {0: "NMNIST", "path": str(root), "steps": 5, "dt": 1e-3}, ".", 0)
    assert ds.shape == (5, 2, 34, 34) and ds.n_classes == 10
    assert ds.x_train.shape == (2, 5, 2, 34, 34) and ds.x_test.shape == (1, 5, 2, 34, 34)
    assert ds.y_train.tolist() == [3, 7] and ds.y_test.tolist() == [1]
    x = ds.x_train[0]
    # [T, polarity, y, x]: bins of 1 ms from t = 0; t = 9000 us lies after 5 steps
    assert x[1, 0, 2, 5] == 1 and x[1, 1, 2, 6] == 1 and x[4, 1, 30, 7] == 1
    assert x.sum() == 3 and ds.info["dropped_events"] == 1
    assert ds.x_train[1][0, 1, 11, 10] == 1
    assert ds.x_test[0].sum() == 1  # two events in one bin and pixel: a 1, not a count
    assert ds.info["binning"] == "time" and ds.info["bin_us"] == 1000.0


def test_nmnist_span_binning_downsample_and_first_saccade(tmp_path):
    root = _nmnist(tmp_path, {"Train": [(0, _ev([33, 2], [33, 3], [0, 150_000], [1, 0]))],
                              "Test": [(0, _ev([4], [4], [10], [1]))]})
    ds = load_dataset("tonic", {0: "nmnist", "path": str(root), "bins": 4, "downsample": 2},
                      ".", 0)
    assert ds.shape == (4, 2, 17, 17) and ds.info["binning"] == "span"
    x = ds.x_train[0]
    assert x[0, 1, 16, 16] == 1 and x[3, 0, 1, 1] == 1 and x.sum() == 2
    ds = load_dataset("tonic", {0: "NMNIST", "path": str(root), "bins": 4,
                                "first_saccade_only": True}, ".", 0)
    assert ds.x_train[0].sum() == 1 and ds.x_train[0][0, 1, 33, 33] == 1


def test_shd_hdf5_layout(tmp_path):
    f = tmp_path / "SHD" / "shd_train.h5"
    E.write_shd(f, times=[[0.0005, 0.0021, 0.5], [0.001]], units=[[3, 699, 10], [42]],
                labels=[4, 19])
    E.write_shd(tmp_path / "SHD" / "shd_test.h5", times=[[0.003]], units=[[0]], labels=[0])
    with h5py.File(f, "r") as h:
        assert set(h) == {"spikes", "labels", "extra"}
        assert set(h["spikes"]) == {"times", "units"}
    ds = load_dataset("tonic", {0: "SHD", "path": str(tmp_path), "steps": 4, "dt": 1e-3},
                      ".", 0)
    assert ds.shape == (4, 700) and ds.n_classes == 20
    assert ds.y_train.tolist() == [4, 19]
    x = ds.x_train[0]
    assert x[0, 3] == 1 and x[2, 699] == 1 and x.sum() == 2  # 0.5 s lies after 4 ms
    assert ds.x_train[1][1, 42] == 1 and ds.x_test[0][3, 0] == 1
    ds2 = load_dataset("tonic", {0: "SHD", "path": str(tmp_path), "bins": 2, "downsample": 7},
                       ".", 0)
    assert ds2.shape == (2, 100)
    assert ds2.x_train[0][:, 99].sum() == 1 and ds2.x_train[0][:, 0].sum() == 1


def test_bins_must_match_the_network(tmp_path):
    _nmnist(tmp_path, {"Train": [(0, _ev([1], [1], [1], [1]))],
                       "Test": [(0, _ev([1], [1], [1], [1]))]})
    with pytest.raises(DataError, match="bins = 30, but the network runs 25 steps"):
        load_dataset("tonic", {0: "NMNIST", "path": str(tmp_path), "bins": 30, "steps": 25},
                     ".", 0)
    with pytest.raises(DataError, match="needs 'bins'"):
        load_dataset("tonic", {0: "NMNIST", "path": str(tmp_path)}, ".", 0)
    with pytest.raises(DataError, match="binning = time needs a step length"):
        load_dataset("tonic", {0: "NMNIST", "path": str(tmp_path), "bins": 3,
                               "binning": "time"}, ".", 0)
    with pytest.raises(DataError, match="unknown event data set 'DVSGesture2'"):
        load_dataset("tonic", {0: "DVSGesture2", "path": str(tmp_path), "bins": 3}, ".", 0)


def test_missing_files_say_where_tonic_puts_them(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_dataset("tonic", {0: "NMNIST", "path": str(tmp_path), "bins": 3}, ".", 0)
    msg = str(e.value)
    assert f"{tmp_path}/NMNIST/Train/<digit>/*.bin" in msg and "junk.txt" in msg
    assert "tonic.datasets.NMNIST(save_to=" in msg and "never downloads" in msg
    with pytest.raises(DataError, match=r"SHD/shd_train\.h5"):
        load_dataset("tonic", {0: "SHD", "path": str(tmp_path / "nope"), "bins": 3}, ".", 0)


def test_subsets_and_cache(tmp_path):
    items = [(k % 10, _ev([k], [k], [100 * k], [1])) for k in range(12)]
    _nmnist(tmp_path, {"Train": items, "Test": items[:3]})
    args = {0: "NMNIST", "path": str(tmp_path), "bins": 2, "n_train": 5, "cache": True}
    a = load_dataset("tonic", args, ".", 0)
    assert a.n_train == 5 and a.n_test == 3 and "cache" in a.info
    b = load_dataset("tonic", args, ".", 0)
    assert b.info["cache"] == a.info["cache"]
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    c = load_dataset("tonic", dict(args, split_seed=1), ".", 0)
    assert c.y_train.tolist() != a.y_train.tolist() or \
        not np.array_equal(c.x_train, a.x_train)


SPEC = """
neuron N {{
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (-v + 5 * I) / tau
    spike v >= 1
    reset v = 0
}}
network Net {{
    dt = 1 ms
    steps = 6
    input x[2, 34, 34] : spikes
    layer o[10] = N() <- dense(x)
    output o
}}
train t {{
    network = Net
    data = tonic("NMNIST", path = "{path}")
    epochs = 1
    batch = 2
}}
"""


def test_training_reads_the_network_steps_and_dt(tmp_path):
    pytest.importorskip("torch")
    import spikedsl
    from spikedsl.runtime.train import train

    rng = np.random.default_rng(0)
    items = [(k % 10, _ev(rng.integers(0, 34, 40), rng.integers(0, 34, 40),
                          np.sort(rng.integers(0, 8000, 40)), rng.integers(0, 2, 40)))
             for k in range(6)]
    _nmnist(tmp_path / "ev", {"Train": items, "Test": items[:2]})
    spec = tmp_path / "m.spk"
    spec.write_text(SPEC.format(path="ev"))
    res = train(spikedsl.load(spec), "t", run_dir=tmp_path / "run", progress=False)
    assert res.status == "done" and res.epochs_done == 1
    assert 0.0 <= res.final["test_accuracy"] <= 1.0


def test_missing_files_are_located_at_the_data_setting(tmp_path):
    import spikedsl

    spec = tmp_path / "m.spk"
    spec.write_text(SPEC.format(path="nowhere"))
    pytest.importorskip("torch")
    from spikedsl.runtime.train import train

    with pytest.raises(DataError) as e:
        train(spikedsl.load(spec), "t", run_dir=tmp_path / "run", progress=False)
    first = str(e.value).splitlines()[0]
    assert first.startswith(f"{spec}:19:12: error: tonic(\"NMNIST\"): no N-MNIST files")
    r = subprocess.run([sys.executable, "-m", "spikedsl.cli", "train", str(spec)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{spec}:19:12: error: tonic(\"NMNIST\")")
    assert 'data = tonic("NMNIST", path = "nowhere")' in r.stderr
    assert "Traceback" not in r.stderr


def test_saccade_events_of_a_digit():
    img = np.zeros((24, 24))
    img[4:20, 10:14] = 1.0  # a bar
    ev = E.saccade_events(img, seed=0)
    assert len(ev["t"]) > 100
    assert ev["t"].min() >= 0 and ev["t"].max() < 100_000 and np.all(np.diff(ev["t"]) >= 0)
    assert set(np.unique(ev["p"])) == {0, 1}
    assert ev["x"].min() >= 10 and ev["x"].max() <= 33 - 10 + 3 + 1  # near the bar


def test_event_example_smoke(tmp_path):
    """examples/events/run.py --smoke: writes N-MNIST-format files, trains, reports."""
    pytest.importorskip("torch")
    import importlib.util
    import json

    import torch

    spec = importlib.util.spec_from_file_location("example_events_run",
                                                  ROOT / "examples" / "events" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    try:
        rc = mod.main(["--smoke", "--out", str(tmp_path), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["example"] == "events" and res["sample_shape"] == [20, 2, 17, 17]
    assert 0.0 <= res["test_accuracy"] <= 1.0
    assert len(list((tmp_path / "data" / "NMNIST" / "Train").rglob("*.bin"))) == 60
    for f in ("frames.png", "result.png"):
        assert (tmp_path / f).is_file()
