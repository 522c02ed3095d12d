"""``spikedsl simulate`` and ``spikedsl plot``: summaries, accuracy, plots,
usage errors; and a trained checkpoint giving the same predictions in Brian2
as in torch (slow)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

pytest.importorskip("brian2")
pytest.importorskip("matplotlib")

from spikedsl.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIGITS = os.path.join(ROOT, "specs", "networks", "digits_classifier.spk")

SPEC = """
neuron DLIF {
    param beta = 0.8
    state v = 0
    input I
    update v = beta * v + I
    spike v >= 1
    reset v = 0
}
network Small {
    dt = 1 ms
    steps = 15
    input x[64] : poisson(max_rate = 1.0)
    layer h[20] = DLIF <- dense(x)
    layer o[10] = DLIF <- dense(h)
    output o
}
train t {
    network = Small
    data = digits
    loss = ce_rate
}
"""


@pytest.fixture()
def spec(tmp_path):
    p = tmp_path / "small.spk"
    p.write_text(SPEC)
    return str(p)


@pytest.fixture()
def weights(tmp_path):
    rng = np.random.default_rng(0)
    w = {"h.weight": rng.uniform(-0.1, 0.4, (20, 64)), "h.bias": np.zeros(20),
         "o.weight": rng.uniform(-0.2, 0.8, (10, 20)), "o.bias": np.zeros(10)}
    path = tmp_path / "w.npz"
    np.savez(path, **w)
    return str(path)


def test_simulate_prints_a_summary_with_accuracy(spec, weights, tmp_path, capsys):
    rc = main(["simulate", spec, "--weights", weights, "--samples", "12", "--plot",
               str(tmp_path / "plots"), "--output", str(tmp_path / "sim.npz")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "inputs: 12 test samples of 'digits' (from train block 't')" in out
    assert re.search(r"^h\s+20\s+\d+\s+[\d.]+\s+[\d.]+ Hz$", out, re.MULTILINE), out
    assert re.search(r"^accuracy \(o\): [\d.]+% on 12 samples$", out, re.MULTILINE), out
    for f in ("plots/raster.png", "plots/traces.png", "sim.npz"):
        assert os.path.getsize(tmp_path / f) > 1000, f
    # spikedsl plot reads the saved simulation
    rc = main(["plot", str(tmp_path / "sim.npz"), "-o", str(tmp_path / "again")])
    assert rc == 0
    assert os.path.getsize(tmp_path / "again" / "sim_raster.png") > 1000
    assert os.path.getsize(tmp_path / "again" / "sim_traces.png") > 1000


def test_simulate_brian2_and_torch_agree(spec, weights, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        from spikedsl.targets import torch as _  # noqa: F401
    except ImportError:
        pytest.skip("the torch target does not exist yet")
    outs = {}
    for target in ("brian2", "torch"):
        rc = main(["simulate", spec, "--weights", weights, "--samples", "8", "--target", target,
                   "--output", str(tmp_path / f"{target}.npz")])
        assert rc == 0, capsys.readouterr().err
        with np.load(tmp_path / f"{target}.npz") as f:
            outs[target] = {k: f[k] for k in f.files if k != "__meta__"}
    for k in ("o", "h", "x"):
        assert np.array_equal(outs["brian2"][k], outs["torch"][k]), k


def test_random_inputs_without_data(tmp_path, capsys):
    p = tmp_path / "nodata.spk"
    p.write_text(SPEC.split("train t")[0])
    rc = main(["simulate", str(p), "--samples", "3", "--seed", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "inputs: 3 random samples (seed 2)" in out
    assert "accuracy" not in out


@pytest.mark.parametrize("argv, message", [
    (["--network", "Nope"], "no network 'Nope'"),
    (["--device", "cuda"], "not a Brian2 device"),
    (["--data", "mnist(\"/nonexistent\")"], "mnist"),
])
def test_simulate_usage_errors(spec, argv, message, capsys):
    rc = main(["simulate", spec, "--samples", "2"] + argv)
    err = capsys.readouterr().err
    assert rc in (1, 2), err
    assert message in err


def test_simulate_missing_file_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["simulate", "/nonexistent.spk"])
    assert e.value.code == 2
    assert "no such file" in capsys.readouterr().err


def test_plot_a_training_run(tmp_path, capsys):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,train_loss,test_loss,train_accuracy,test_accuracy,lr\n"
        "1,2.3,2.2,0.1,0.12,0.001\n2,1.5,1.6,0.5,0.48,0.001\n3,1.0,,0.7,,0.001\n")
    assert main(["plot", str(run)]) == 0
    assert os.path.getsize(run / "curves.png") > 1000
    assert main(["plot", str(tmp_path / "runs")]) == 2
    assert "no metrics.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_checkpoint_gives_the_same_predictions(tmp_path, monkeypatch, capsys):
    """Train the digits classifier briefly (torch), then simulate the test set
    with its checkpoint in Brian2 and in torch: the same predictions."""
    pytest.importorskip("torch")
    try:
        from spikedsl.targets import torch as _  # noqa: F401
    except ImportError:
        pytest.skip("the torch target does not exist yet")
    monkeypatch.chdir(tmp_path)
    rc = main(["train", DIGITS, "--train", "digits_ce", "--epochs", "1", "--run", "b2",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ckpt = str(tmp_path / "runs" / "b2" / "checkpoint.pt")
    assert os.path.isfile(ckpt)
    res = {}
    for target in ("brian2", "torch"):
        assert main(["simulate", DIGITS, "--weights", ckpt, "--samples", "60", "--target",
                     target, "--output", f"{target}.npz"]) == 0
        out = capsys.readouterr().out
        res[target] = re.search(r"accuracy \(o\): ([\d.]+)%", out).group(1)
        with np.load(f"{target}.npz") as f:
            res[target + "_o"] = f["o"]
    assert np.array_equal(res["brian2_o"], res["torch_o"])
    assert res["brian2"] == res["torch"]
