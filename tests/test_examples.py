"""The examples in examples/: every spec checks, and a tiny version of every
run (``run.py --smoke``: 1 epoch, few samples) works end to end and writes
its figures and results.json.

The smoke runs are called in process (``main(["--smoke", ...])``, torch and
the other imports are paid once per session); the same runs as separate
commands (``python examples/NAME/run.py --smoke``, > 20 s each with the
imports) are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"

EXAMPLES = {
    # name: (spec, networks that must be in it, files a smoke run writes)
    "autoencoder": ("autoencoder.spk", ["AE784", "AE64"], ["result.png", "results.json"]),
    "mdn_classifier": ("mdn_classifier.spk",
                       ["DigitsLIF", "DigitsLIF1", "DigitsFS", "DigitsRS", "DigitsSDS",
                        "DigitsWDS", "DigitsMDN"],
                       ["accuracy.png", "theta_clusters.png", "result.png", "results.json"]),
    "conv_lstm": ("conv_lstm.spk", ["SConvLSTM"], ["result.png", "results.json"]),
    "spiking_gan": ("spiking_gan.spk", ["Generator", "Discriminator"],
                    ["samples.png", "result.png", "results.json"]),
    "lsm_stdp": ("lsm_stdp.spk", ["LSM"], ["weights.png", "result.png", "results.json"]),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_spec_checks(name):
    import spikedsl

    spec, nets, _ = EXAMPLES[name]
    prog = spikedsl.load(EX / name / spec)
    for n in nets:
        net = prog.network(n).ir
        assert net.steps > 0 and net.layers


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_spec_checks_on_the_command_line(name):
    spec = EX / name / EXAMPLES[name][0]
    r = subprocess.run([sys.executable, "-m", "spikedsl.cli", "check", str(spec)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


def _main(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}_run", EX / name / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _smoke(name: str, tmp_path: Path, *extra: str) -> dict:
    """``run.py --smoke`` in this process; returns its results.json."""
    import torch

    threads = torch.get_num_threads()
    try:
        rc = _main(name)(["--smoke", "--out", str(tmp_path), "--threads", str(threads), *extra])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    for f in EXAMPLES[name][2]:
        assert (tmp_path / f).is_file(), f"{name} --smoke did not write {f}"
    return json.loads((tmp_path / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_smoke_command(name, tmp_path):
    """The one command, as a user runs it (a fresh interpreter)."""
    res = _smoke_command(name, tmp_path)
    assert res["example"] == name and res["mode"] == "smoke"


def _smoke_command(name: str, tmp_path: Path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, str(EX / name / "run.py"), "--smoke", "--out",
                        str(tmp_path), *extra], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300, check=False)
    assert r.returncode == 0, f"{name} --smoke failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for f in EXAMPLES[name][2]:
        assert (tmp_path / f).is_file(), f"{name} --smoke did not write {f}:\n{r.stdout[-2000:]}"
    return json.loads((tmp_path / "results.json").read_text())


def test_autoencoder_smoke(tmp_path):
    res = _smoke("autoencoder", tmp_path)
    run = next(iter(res["runs"].values()))
    for k in ("spike_mse", "mse"):
        assert 0.0 <= run["test"][k] < 4.0  # standardised maps: 2.0 = uncorrelated


def test_mdn_classifier_smoke(tmp_path):
    res = _smoke("mdn_classifier", tmp_path)
    assert res["runs"] and len(res["seeds"]) == 2
    for r in res["runs"].values():
        accs = [s["test_accuracy"] for s in r["seeds"]]
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
        assert abs(r["test_accuracy"] - sum(accs) / 2) < 1e-12
        assert abs(r["test_accuracy_std"] - abs(accs[0] - accs[1]) / 2 ** 0.5) < 1e-12
    assert res["theta"]["clusters"]["abcd"]["centres"]
    assert len(res["theta"]["M_ab"]) == 2 and len(res["theta"]["seeds"]) == 2


def test_conv_lstm_smoke(tmp_path):
    res = _smoke("conv_lstm", tmp_path)
    run = next(iter(res["runs"].values()))
    assert all(v > 0 for v in run["mean_bce"].values())
    # evaluated as trained (per-step batch norm): the trainer's test loss after the
    # last epoch is the validation loss recomputed in evaluation mode
    assert len(run["trajectory"]) == 2
    assert abs(run["val_end_recomputed"] - run["mean_bce"]["val_end"]) < 1e-5


def test_spiking_gan_smoke(tmp_path):
    res = _smoke("spiking_gan", tmp_path)
    assert res["classes"]


def test_lsm_stdp_smoke(tmp_path):
    res = _smoke("lsm_stdp", tmp_path)
    assert 0.0 <= res["readout"]["test_accuracy"] <= 1.0
    assert res["torch_vs_brian2"]["max_abs_weight_difference"] < 1e-4
