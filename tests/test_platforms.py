"""Neuromorphic platform checks (spikedsl/targets/nir/platform_check.py,
platforms.py), weight quantisation and ``verify --quantize``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikedsl
from spikedsl.errors import CATALOGUE, SpecError
from spikedsl.targets.nir.platform_check import check_platform, quantize_weights
from spikedsl.targets.nir.platforms import PLATFORMS, SOURCES

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "specs" / "networks" / "digits_classifier.spk"

NEURONS = """
neuron LIF {
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (-v + 10 * I) / tau
    spike v >= 1
    reset v = 0
}
neuron IF {
    state v = 0
    input I
    dv/dt = 1000 * I
    spike v >= 1
    reset v = 0
}
"""


def _net(tmp_path, body: str, name: str = "N"):
    f = tmp_path / "m.spk"
    f.write_text(NEURONS + f"network {name} {{\n    dt = 1 ms\n    steps = 4\n{body}}}\n")
    prog = spikedsl.load(f)
    return prog, prog.network(name).ir, f


def _codes(rep):
    return [(d.code, d.loc.line, d.loc.col) for d in rep.diagnostics]


def test_digits_on_xylo_reports_every_limit_at_the_layer():
    prog = spikedsl.load(DIGITS)
    net = prog.network().ir
    rep = check_platform(net, "xylo", sources=prog.sources)
    assert _codes(rep) == [("platform-limit", 11, 5), ("platform-limit", 13, 5)]
    m = [d.message for d in rep.diagnostics]
    assert m[0] == "xylo: layer 'x': input channels 64 exceeds the limit 16 [rockpool-mapper]"
    assert m[1] == "xylo: layer 'o': output neurons 10 exceeds the limit 8 [rockpool-mapper]"
    text = rep.diagnostics[1].render(prog.sources)
    assert text.startswith(f"{DIGITS}:13:5: error: xylo: layer 'o'")
    assert "layer  o[10]  = LIF(tau_mem = 10 ms) <- dense(h)" in text
    with pytest.raises(SpecError) as e:
        rep.raise_if_errors()
    assert len(e.value.diagnostics) == 2
    assert any("tau 10 ms becomes 8 ms" in n for n in rep.notes)


@pytest.mark.parametrize("name", ["loihi2", "spinnaker2"])
def test_digits_fits_loihi2_and_spinnaker2(name):
    net = spikedsl.load(DIGITS).network().ir
    rep = check_platform(net, name)
    assert rep.ok, rep.render()
    assert rep.total("neurons") == 64 + 128 + 10
    assert rep.total("synapses") == 64 * 128 + 128 * 10  # + no stored bias counted
    assert rep.total("cores") == 2
    bits = PLATFORMS[name].weight_bits
    assert rep.total("weight_bits") == (64 * 128 + 128 * 10) * bits
    assert "fits" in rep.render()


def test_digits_on_speck_refuses_leaky_neurons():
    net = spikedsl.load(DIGITS).network().ir
    rep = check_platform(net, "speck")
    assert [d.code for d in rep.diagnostics] == ["platform-unsupported"] * 2
    assert "integrate-and-fire neurons without a membrane leak" in rep.diagnostics[0].message


def test_conv_if_network_fits_speck_and_its_limits(tmp_path):
    body = ("    input x[2, 32, 32] : spikes\n"
            "    layer c = IF() <- conv2d(x, channels = 8, kernel = 3, stride = 2)\n"
            "    layer p = sumpool2d(c, 2)\n"
            "    layer o[10] = IF() <- dense(p)\n"
            "    output o\n")
    _, net, _ = _net(tmp_path, body)
    rep = check_platform(net, "speck")
    assert rep.ok, rep.render()
    assert rep.total("cores") == 2
    # a dense layer straight on the 15x15 map would need a 15x15 kernel: fine; 17x17 is not
    body2 = body.replace("stride = 2", "stride = 3").replace("sumpool2d(c, 2)",
                                                              "avgpool2d(c, 2)")
    body2 += "    layer q[4] = IF() <- dense(x)\n"
    _, net2, f = _net(tmp_path, body2)
    rep2 = check_platform(net2, "speck")
    msgs = [d.message for d in rep2.diagnostics]
    assert any("stride of conv2d(x) 3x3 exceeds the limit 1/2/4/8" in m for m in msgs)
    assert any("NIR AvgPool2d" in m for m in msgs)
    assert any("kernel of dense(x)" in m and "32x32 exceeds the limit 16x16" in m
               for m in msgs)
    assert len(msgs) == 3  # all at once
    lines = f.read_text().splitlines()
    for d in rep2.diagnostics:
        assert lines[d.loc.line - 1][d.loc.col - 1:].startswith("layer")


def test_speck_core_memory_and_destinations(tmp_path):
    body = ("    input x[2, 64, 64] : spikes\n"
            "    layer c = IF() <- conv2d(x, channels = 64, kernel = 3, padding = 1)\n"
            "    layer a[4] = IF() <- dense(c)\n"
            "    output a\n")
    _, net, _ = _net(tmp_path, body)
    rep = check_platform(net, "speck")
    msgs = " | ".join(d.message for d in rep.diagnostics)
    # 64 channels of 64x64 = 262144 neuron entries: no core has that many
    assert "core memory (kernel / neuron entries)" in msgs and "/ 262144" in msgs
    body = ("    input x[1, 8, 8] : spikes\n"
            "    layer h[4] = IF() <- dense(x)\n"
            "    layer a[2] = IF() <- dense(h)\n    layer b[2] = IF() <- dense(h)\n"
            "    layer c[2] = IF() <- dense(h)\n    output a\n    output b\n    output c\n")
    _, net, _ = _net(tmp_path, body)
    rep = check_platform(net, "speck")
    assert [d.message for d in rep.diagnostics] == [
        "speck: layer 'h': destination layers 3 exceeds the limit 2 [sinabs-overview]"]


def test_xylo_imu_hidden_fan_out_and_recurrence(tmp_path):
    body = ("    input x[8] : spikes\n"
            "    layer h[600] = LIF() <- dense(x) + dense(h)\n"
            "    layer o[4] = LIF() <- dense(h) + dense(o)\n"
            "    output o\n")
    _, net, _ = _net(tmp_path, body)
    rep = check_platform(net, "xylo-imu")
    msgs = [d.message for d in rep.diagnostics]
    assert "xylo-imu: layer 'o': a recurrent output layer is not supported: output neurons " \
           "may not be recurrent [rockpool-mapper]" in msgs
    assert any("hidden neurons in the network 600 exceeds the limit 496" in m for m in msgs)
    assert any("fan-out per neuron 604 exceeds the limit 512" in m for m in msgs)
    assert any("recurrent weights 360016 exceeds the limit 31744" in m for m in msgs)
    assert any("hidden neurons reached by the input 600 exceeds the limit 128" in m
               for m in msgs)
    assert any("hidden neurons feeding the outputs 600 exceeds the limit 128" in m
               for m in msgs)
    assert len(msgs) == 6
    assert check_platform(net, "loihi2").ok


def test_cores_and_delays(tmp_path):
    body = ("    input x[4] : spikes\n"
            "    layer a[30000] = LIF() <- dense(x)\n"
            "    layer b[10000] = LIF() <- dense(x, delay = 9)\n"
            "    output b\n")
    _, net, _ = _net(tmp_path, body)
    rep = check_platform(net, "spinnaker2")
    msgs = [d.message for d in rep.diagnostics]
    assert msgs == [
        "spinnaker2: layer 'b': delay of dense(x) in steps 9 exceeds the limit 8 [py-spinnaker2]",
        "spinnaker2: layer 'b': cores in use up to this layer 160 exceeds the limit 152 "
        "[spinnaker2-datasheet]"]
    assert rep.layers[1].cores == 120 and rep.layers[2].cores == 40
    rep = check_platform(net, "xylo")
    assert any("delay = 9" in d.message and "no synaptic delays" in d.message
               for d in rep.diagnostics)


def test_threshold_must_fit_the_state(tmp_path):
    body = "    input x[4] : spikes\n    layer o[2] = LIF() <- dense(x)\n    output o\n"
    _, net, _ = _net(tmp_path, body)
    w = {"o.weight": np.full((2, 4), 1e-7), "o.bias": np.zeros(2)}
    rep = check_platform(net, "xylo", weights=w)
    assert [d.code for d in rep.diagnostics] == ["platform-limit"]
    assert "threshold in weight quanta" in rep.diagnostics[0].message
    assert "32767 (16-bit state)" in rep.diagnostics[0].message
    assert check_platform(net, "xylo", weights={"o.weight": np.full((2, 4), 0.3),
                                                "o.bias": np.zeros(2)}).ok


def test_quantize_weights():
    net = spikedsl.load(DIGITS).network().ir
    rng = np.random.default_rng(0)
    W = {"h.weight": rng.normal(0, 0.2, (128, 64)), "h.bias": rng.normal(0, 0.1, 128),
         "o.weight": rng.normal(0, 0.2, (10, 128)), "o.bias": np.zeros(10)}
    Wq, info = quantize_weights(net, W, bits=4)
    for k in ("h", "o"):
        s = info[k]["scale"]
        q = Wq[f"{k}.weight"] / s
        np.testing.assert_allclose(q, np.round(q), atol=1e-9)
        assert np.abs(q).max() == 7 and info[k]["levels"] <= 15
        assert np.abs(Wq[f"{k}.weight"] - W[f"{k}.weight"]).max() <= s / 2 + 1e-12
        qb = Wq[f"{k}.bias"] / s
        np.testing.assert_allclose(qb, np.round(qb), atol=1e-9)
    assert info["h"]["scale"] == pytest.approx(np.abs(W["h.weight"]).max() / 7)
    Wq15, info15 = quantize_weights(net, W, bits=5, weight_max=15)
    assert info15["o"]["qmax"] == 15 and info15["o"]["rel_rms_error"] < \
        info["o"]["rel_rms_error"]
    with pytest.raises(ValueError):
        quantize_weights(net, W, bits=1)


def test_compare_quantized_measures_the_effect(tmp_path):
    from spikedsl.runtime.quantized import compare_quantized

    body = ("    input x[16] : spikes\n    layer h[32] = LIF() <- dense(x)\n"
            "    layer o[5] = LIF() <- dense(h)\n    output o\n")
    _, net, _ = _net(tmp_path, body)
    net = net.model_copy(update={"steps": 30})
    rng = np.random.default_rng(1)
    W = {"h.weight": rng.normal(0.05, 0.3, (32, 16)), "h.bias": np.zeros(32),
         "o.weight": rng.normal(0.05, 0.3, (5, 32)), "o.bias": np.zeros(5)}
    hi = compare_quantized(net, 16, weights=W, batch=16)
    lo = compare_quantized(net, 2, weights=W, batch=16)
    eq = lambda r: sum(e for e, _ in r.spikes.values()) / sum(t for _, t in r.spikes.values())
    assert eq(hi) > 0.999 and hi.class_agreement == 1.0
    assert eq(lo) < eq(hi) and lo.counts["h"] > hi.counts["h"]
    assert "quantized vs float N: 2-bit weights" in lo.render()


def test_cli_check_export_and_verify(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "spikedsl.cli", *a],
                                    capture_output=True, text=True, cwd=ROOT, timeout=300,
                                    check=False)
    r = run("check", str(DIGITS), "--platform", "xylo")
    assert r.returncode == 1
    assert f"{DIGITS}:11:5: error: xylo: layer 'x': input channels 64" in r.stderr
    assert f"{DIGITS}:13:5: error: xylo: layer 'o': output neurons 10" in r.stderr
    assert "DigitsClassifier does not fit xylo: 2 errors" in r.stderr
    assert "total" in r.stdout and "Traceback" not in r.stderr
    out = tmp_path / "d.nir"
    r = run("export-nir", str(DIGITS), "--platform", "speck", "-o", str(out))
    assert r.returncode == 1 and not out.exists()
    r = run("export-nir", str(DIGITS), "--platform", "loihi2", "--quantize", "-o", str(out))
    assert r.returncode == 0, r.stderr
    import nir

    g = nir.read(str(out))
    assert g.metadata["platform"] == "loihi2" and int(g.metadata["quantized_bits"]) == 8
    for node in g.nodes.values():
        if isinstance(node, nir.Affine):
            w = np.asarray(node.weight)
            q = w / (np.abs(w).max() / 127)
            np.testing.assert_allclose(q, np.round(q), atol=1e-6)
    r = run("check", str(DIGITS), "--quantize")
    assert r.returncode == 2 and "needs --platform" in r.stderr
    r = run("verify", str(DIGITS), "--quantize", "4", "--batch", "2", "--steps", "5")
    assert r.returncode == 0, r.stderr
    assert "quantized vs float DigitsClassifier: 4-bit weights" in r.stdout


def test_limits_cite_known_sources():
    docs = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    for p in PLATFORMS.values():
        for limit, key in p.sources.items():
            assert key in SOURCES, (p.name, limit, key)
            assert hasattr(p, limit), (p.name, limit)
        assert f"`{p.name}`" in docs
    for key in SOURCES:
        assert f"[{key}]" in docs, key
    assert {"platform-limit", "platform-unsupported"} <= set(CATALOGUE)
