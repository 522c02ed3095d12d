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
    "spiking_gan": ("spiking_gan.spk", ["Generator", "Discriminator", "DiscriminatorMB"],
                    ["samples.png", "result.png", "results.json"]),
    "spiking_vae": ("spiking_vae.spk", ["VAE", "Prior", "Sampler"],
                    ["reconstructions.png", "samples.png", "result.png", "results.json"]),
    "lsm_stdp": ("lsm_stdp.spk", ["LSM", "WTA", "WTAFrozen"],
                 ["weights.png", "weights_small.png", "wta_weights.png", "result.png",
                  "results.json"]),
    "audio_to_image": ("audio_to_image.spk", ["AE784", "Audiocoder", "AudioToImage", "Decoder"],
                       ["mse_vs_th.png", "generated.png", "result.png", "results.json"]),
}
NEEDS_ESPEAK = {"audio_to_image"}


def _need_tools(name: str) -> None:
    from spikedsl.runtime.spoken import espeak_binary

    if name in NEEDS_ESPEAK and espeak_binary() is None:
        pytest.skip("espeak-ng is not installed (make espeak, or apt-get install espeak-ng): "
                    "it speaks the example's digits")


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


def _module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}_mod", EX / name / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _smoke(name: str, tmp_path: Path, *extra: str) -> dict:
    """``run.py --smoke`` in this process; returns its results.json."""
    import torch

    _need_tools(name)
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
    _need_tools(name)
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
    for r in res["classes"].values():
        # diversity relative to the real digits of the class: positive and finite
        assert 0.0 < r["diversity_ratio"] < 5.0 and 0.0 < r["diversity_ratio_pca"] < 5.0
        assert r["real_diversity_rms"] > 0.1  # 8x8 digits of one class differ


def test_spiking_vae_smoke(tmp_path):
    res = _smoke("spiking_vae", tmp_path)
    assert 0.0 < res["test_reconstruction_mse"] < 0.5
    assert 0.0 < res["latent_rate"] < 1.0
    assert abs(sum(r["share"] for r in res["classes"].values()) - 1.0) < 1e-9
    assert res["history"][0]["kl"] > 0.0


def test_spiking_vae_sampler_takes_the_vae_weights():
    """The Sampler is the Prior's latent layer and the VAE's decoder."""
    import numpy as np
    import torch

    import spikedsl

    prog = spikedsl.load(EX / "spiking_vae" / "spiking_vae.spk")
    mod = _module("spiking_vae")
    vae, prior = prog.network("VAE").to_torch(), prog.network("Prior").to_torch(seed=1)
    state = {k: v.detach().numpy() for k, v in vae.state_dict().items()}
    pstate = {k: v.detach().numpy() for k, v in prior.state_dict().items()}
    w = mod.sampler_weights(state, pstate)
    sampler = prog.network("Sampler").to_torch(weights=w)
    assert set(w) | {"z.u.weight"} == set(sampler.state_dict())
    np.testing.assert_array_equal(w["z.z.weight"], pstate["zp.weight"])
    np.testing.assert_array_equal(w["d1.weight"], state["d1.weight"])
    # u = 0: every latent neuron with p > 0 fires at every step
    out = sampler(torch.zeros(4, 2, 16))
    assert out["z"].min() == 1.0


def test_bernoulli_latent_fires_with_its_probability():
    """BernoulliSpike fires where sigmoid(I) > u: rate = sigmoid(I) for uniform u."""
    import numpy as np
    import torch

    import spikedsl

    prog = spikedsl.load(EX / "spiking_vae" / "spiking_vae.spk")
    vae = prog.network("VAE").to_torch()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, generator=g).expand(2000, 1, 64)
    with torch.no_grad():
        out = vae({"x": x, "u": torch.rand(2000, 1, 16, generator=g)})
    p = out["z.p"].numpy()
    # the logits vary over steps (recurrence), so compare rate and mean probability
    assert abs(out["z"].numpy().mean() - p.mean()) < 0.02
    assert np.all((p > 0) & (p < 1))


def test_lsm_stdp_smoke(tmp_path):
    res = _smoke("lsm_stdp", tmp_path)
    assert 0.0 <= res["readout"]["test_accuracy"] <= 1.0
    assert res["torch_vs_brian2"]["max_abs_weight_difference"] < 1e-4
    comp = res["competitive"]
    assert comp["torch_vs_brian2"]["max_abs_weight_difference"] < 1e-9
    assert comp["torch_vs_brian2"]["identical_spikes"] is True
    assert comp["theta_mean"] > 0.0  # the homeostatic thresholds rose
    for r in comp["readout"].values():
        assert 0.0 <= r["test_accuracy"] <= 1.0


def test_competitive_stdp_same_on_torch_and_brian2():
    """Diehl & Cook's network (lateral inhibition, homeostatic threshold,
    competitive STDP), three digits one after another with the weights and
    thresholds carried over: identical weights, thresholds and spikes in torch
    and Brian2 at every step; the weights learned and the inhibition worked."""
    import numpy as np

    pytest.importorskip("brian2")
    import spikedsl
    from spikedsl.runtime.data import load_dataset

    mod = _module("lsm_stdp")
    prog = spikedsl.load(EX / "lsm_stdp" / "lsm_stdp.spk")
    w0 = {k: np.asarray(v, dtype=np.float64)
          for k, v in prog.network("WTAFrozen").to_torch(seed=0).export_weights().items()}
    data = load_dataset("digits", {}, str(EX), 0)
    st = mod.wta_phase(prog.network("WTA"), w0, data.x_train[:3], 3, seed=11, log=None)
    assert st["max_abs_diff"] < 1e-12 and st["max_abs_diff_theta"] < 1e-12
    assert st["spikes_equal"]
    w = st["weights"]
    assert np.abs(w[mod.WTA_W] - w0[mod.WTA_W]).max() > 1e-3  # STDP changed the weights
    assert w[mod.WTA_THETA].max() > 0.0
    # lateral inhibition: far fewer spikes than 100 neurons firing freely
    assert 0 < st["spikes_per_digit"] < 100


def test_audio_to_image_smoke(tmp_path):
    res = _smoke("audio_to_image", tmp_path)
    assert res["audio"]["channels"] == 39 and res["audio"]["n_train"] > 0
    assert set(res["runs"]) == {"A_Th2", "A_Th10", "B_Th10"}
    for r in res["runs"].values():
        for k in ("test_mse", "train_mse", "target_floor_mse"):
            assert 0.0 <= r[k] < 4.0  # standardised maps: 2.0 = uncorrelated
        assert 0.0 <= r["test_class_match"] <= 1.0
