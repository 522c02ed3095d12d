"""`spikedsl verify`: same weights and inputs on every target, pairwise
comparison, and detection of injected mismatches."""

from __future__ import annotations

import numpy as np
import pytest

import spikedsl
from spikedsl import ir
from spikedsl.cli import main as cli
from spikedsl.runtime import reference
from spikedsl.runtime.verify import compare, make_inputs, make_weights, traces_of, verify

SPEC = """
neuron LIF {
    param tau_mem = 5 ms
    param v_th    = 1.0
    param t_ref   = 2 ms
    state v = 0.0
    input I
    dv/dt = (-v + I) / tau_mem
    spike v >= v_th
    reset v = 0
    refractory t_ref
}
network Net {
    dt = 1 ms
    steps = 30
    input x[6] : direct
    layer h[10] = LIF <- dense(x) + dense(h, bias = false)
    layer y[4] = LIF <- dense(h)
    output y
    output y.v
}
"""


@pytest.fixture
def net() -> ir.LNetwork:
    return spikedsl.loads(SPEC).network().ir


def ref_runner(net, inputs, weights=None, dtype=np.float64, record=None):
    return reference.run(net, inputs, weights=weights, dtype=dtype, record=record)


def late_runner(net, inputs, weights=None, dtype=np.float64, record=None):
    """A broken target: delivers every feed-forward spike one step late (what
    Brian2's default synaptic schedule would do)."""
    layers = []
    for lay in net.layers:
        projs = tuple(p.model_copy(update={"delay": p.delay + 1})
                      if not p.recurrent and net.layer(p.source).kind == "neuron" else p
                      for p in lay.projections)
        layers.append(lay.model_copy(update={"projections": projs}))
    return reference.run(net.model_copy(update={"layers": tuple(layers)}), inputs,
                         weights=weights, dtype=dtype, record=record)


def noisy_runner(net, inputs, weights=None, dtype=np.float64, record=None):
    out = reference.run(net, inputs, weights=weights, dtype=dtype, record=record)
    return {k: (v + 1e-7 if "." in k else v) for k, v in out.items()}


RUNNERS = {"ref2": ref_runner, "late": late_runner, "noisy": noisy_runner}


@pytest.fixture
def weights() -> dict[str, np.ndarray]:
    """Mostly excitatory weights, so that both layers spike."""
    rng = np.random.default_rng(5)
    return {"h.x.weight": rng.uniform(0, 0.6, (10, 6)), "h.x.bias": np.zeros(10),
            "h.h.weight": rng.uniform(-0.3, 0.3, (10, 10)),
            "y.weight": rng.uniform(0.5, 1.5, (4, 10)), "y.bias": np.zeros(4)}


def test_identical_targets_agree(net, weights):
    rep = verify(net, targets=["reference", "ref2"], runners=RUNNERS, input_scale=2.0, weights=weights)
    assert rep.ok, rep.render()
    (p,) = rep.pairs
    assert p.agreement == 1.0 and p.max_diff == 0.0
    assert p.spikes_total == 30 * 2 * (10 + 4)  # h and y spikes, batch 2
    assert set(p.compared) >= {"h", "y", "h.v", "h.v_pre", "y.v"}
    assert rep.activity["h"] > 0.1 and rep.activity["y"] > 0.1  # the check is not vacuous
    assert "verified: all targets agree" in rep.render()


def test_verify_detects_spikes_delivered_one_step_late(net, weights):
    rep = verify(net, targets=["reference", "late"], runners=RUNNERS, input_scale=2.0, weights=weights)
    assert not rep.ok
    (p,) = rep.pairs
    assert p.agreement < 1.0
    assert p.first_spike_mismatch is not None and p.first_spike_mismatch.startswith("y[")
    text = rep.render()
    assert "MISMATCH: first differing spike y[t=" in text
    assert text.splitlines()[-1] == "NOT verified"


def test_verify_detects_state_differences_beyond_tol(net, weights):
    rep = verify(net, targets=["reference", "noisy"], runners=RUNNERS, input_scale=2.0, weights=weights)
    assert not rep.ok
    assert rep.pairs[0].agreement == 1.0 and rep.pairs[0].max_diff == pytest.approx(1e-7)
    rep = verify(net, targets=["reference", "noisy"], runners=RUNNERS, input_scale=2.0, weights=weights,
                 tol=1e-6)
    assert rep.ok, rep.render()


def test_a_target_error_or_a_single_target_is_not_verified(net):
    def broken(*a, **k):
        raise RuntimeError("boom")

    rep = verify(net, targets=["reference", "broken"], runners={"broken": broken})
    assert not rep.ok and rep.runs[1].status == "error" and "boom" in rep.runs[1].reason
    rep = verify(net, targets=["reference"])
    assert not rep.ok and "nothing to compare" in rep.render()


def test_inputs_and_weights_are_seeded(net):
    a = make_inputs(net, 5, 3, seed=1)
    b = make_inputs(net, 5, 3, seed=1)
    assert a["x"].shape == (5, 3, 6) and np.array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], make_inputs(net, 5, 3, seed=2)["x"])
    w1, how = make_weights(net, seed=0)
    w2, _ = make_weights(net, seed=0)
    assert set(w1) >= {"h.x.weight", "h.x.bias", "h.h.weight", "y.weight", "y.bias"}
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert how
    assert traces_of(net) == ["h", "h.v", "h.v_pre", "h.refractory", "h.refractory_pre", "y",
                              "y.v", "y.v_pre", "y.refractory", "y.refractory_pre"]


def test_compare_reports_the_first_differing_spike():
    from spikedsl.runtime.verify import TargetRun

    z = np.zeros((4, 1, 3))
    z2 = z.copy()
    z2[2, 0, 1] = 1
    a = TargetRun("a", "ok", outputs={"h": z, "h.v": np.zeros((4, 1, 3))})
    b = TargetRun("b", "ok", outputs={"h": z2, "h.v": np.full((4, 1, 3), np.nan)})
    p = compare(a, b, {"h"}, 1e-9, dt=1e-3, dt_unit="ms")
    assert p.spikes_equal == 11 and p.spikes_total == 12
    assert p.first_spike_mismatch == "h[t=3 ms, batch 0, neuron (1,)]"
    assert p.max_diff == np.inf and not p.ok


@pytest.mark.parametrize("other", ["torch", "brian2"])
def test_real_targets_agree_with_the_reference(net, other, weights):
    rep = verify(net, targets=["reference", other], input_scale=2.0, weights=weights, steps=15)
    run = rep.runs[1]
    if run.status == "skip":
        pytest.skip(run.reason)
    assert rep.ok, rep.render()


def test_cli_verify(tmp_path, capsys):
    p = tmp_path / "net.spk"
    p.write_text(SPEC)
    assert cli(["verify", str(p), "-t", "reference", "--steps", "5"]) == 1
    out = capsys.readouterr().out
    assert "verify Net: 5 steps, batch 2, seed 0, float64, tol 1e-09" in out
    assert "nothing to compare" in out
    assert cli(["verify", str(p), "-t", "loihi"]) == 2
    assert cli(["verify", str(p), "--network", "Nope"]) == 2
    with pytest.raises(SystemExit) as e:
        cli(["verify", str(tmp_path / "missing.spk")])
    assert e.value.code == 2
    two = tmp_path / "two.spk"
    two.write_text(SPEC + SPEC.split("neuron LIF")[1].split("}\n", 1)[1].replace(
        "network Net", "network Net2"))
    assert cli(["verify", str(two)]) == 2
    assert "choose one with --network" in capsys.readouterr().err


def test_cli_verify_with_torch(tmp_path, capsys):
    pytest.importorskip("torch")
    from spikedsl import targets

    if targets.unavailable("torch"):
        pytest.skip(targets.unavailable("torch"))
    p = tmp_path / "net.spk"
    p.write_text(SPEC)
    code = cli(["verify", str(p), "-t", "reference,torch", "--steps", "10", "--input-scale", "2",
                "--weight-scale", "10"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "reference ~ torch" in out and "100.0000 %" in out
