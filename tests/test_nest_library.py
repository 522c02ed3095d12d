"""The test blocks of specs/neurons/nest.spk: every figure written there is
computed here again without spikedsl (closed forms of the linear models, and
scipy's solve_ivp for AdEx), and the blocks pass on the reference interpreter."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from spikedsl.runtime import testing

SPEC = Path(__file__).parents[1] / "specs" / "neurons" / "nest.spk"

# NEST defaults (ms, mV, pA, pF, nS)
E_L, C_M, TAU_M, TAU_S, V_TH, DT = -70.0, 250.0, 10.0, 2.0, -55.0, 0.1
R_STEPS = 20  # t_ref / dt


def blocks() -> dict[str, str]:
    text = SPEC.read_text(encoding="utf-8")
    return dict(re.findall(r'test "([^"]+)" \{\n(.*?)\n\}', text, re.S))


def expected(test: str, quantity: str) -> tuple[float, float]:
    """(value, tolerance) of ``expect QUANTITY == VALUE UNIT +- TOL UNIT``."""
    body = blocks()[test]
    m = re.search(rf"expect {re.escape(quantity)} == (\S+)(?: \w+)? \+- (\S+)", body)
    assert m, (test, quantity)
    return float(m.group(1)), float(m.group(2))


def count(test: str) -> int:
    return int(re.search(r"expect count\(spikes\) == (\d+)", blocks()[test]).group(1))


def lif_spike_times(i_e: float, t_end: float) -> list[float]:
    """iaf_psc_delta / iaf_psc_exp (no synaptic input) under constant I_e, exact
    propagation on the grid: from V_reset = E_L the threshold is reached after
    k steps, k the first with E_L + I_e R (1 - e^{-k dt/tau_m}) >= V_th; then
    R_STEPS clamped steps and k again."""
    ir = i_e * TAU_M / C_M
    k = next(k for k in range(1, 10**6) if E_L + ir * (1 - math.exp(-k * DT / TAU_M)) >= V_TH)
    times = [k * DT]
    while times[-1] + (R_STEPS + k) * DT <= t_end + 1e-9:
        times.append(times[-1] + (R_STEPS + k) * DT)
    return times


def close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol


# ---------------------------------------------------------------- linear models
def test_iaf_psc_delta_and_exp_constant_current():
    times = lif_spike_times(500.0, 100.0)
    assert times == pytest.approx([13.9, 29.8, 45.7, 61.6, 77.5, 93.4], abs=1e-9)
    assert 13.8 < TAU_M * math.log(20 / 5) < 13.9  # the continuous crossing
    for name in ("iaf_psc_delta: first spike time for constant I_e",
                 "iaf_psc_exp: first spike time for constant I_e"):
        v, tol = expected(name, "first_spike")
        assert close(v, times[0], tol) and count(name) == len(times)
    body = blocks()["iaf_psc_delta: first spike time for constant I_e"]
    assert "[13.9 ms, 29.8 ms, 45.7 ms]" in body
    v, tol = expected("iaf_psc_delta: first spike time for constant I_e", "V_m at 5 ms")
    assert close(v, E_L + 20.0 * (1 - math.exp(-0.5)), tol)


def test_iaf_psc_delta_jump():
    v, tol = expected("iaf_psc_delta: a spike moves V_m by its weight", "V_m at 20 ms")
    assert close(v, E_L + 5.0 * math.exp(-10.0 / TAU_M), tol)


def test_iaf_psc_exp_subthreshold_and_psp():
    name = "iaf_psc_exp: subthreshold response to I_e"
    for t in (10.0, 100.0):
        v, tol = expected(name, f"V_m at {t:g} ms")
        assert close(v, E_L + 200.0 * TAU_M / C_M * (1 - math.exp(-t / TAU_M)), tol)
    name = "iaf_psc_exp: current and potential after one input spike"
    w, t0 = 1000.0, 5.0
    v, tol = expected(name, "I_syn_ex at 7 ms")
    assert close(v, w * math.exp(-(7.0 - t0) / TAU_S), tol)

    def psp(t):
        d = t - t0
        k = w / C_M * TAU_M * TAU_S / (TAU_M - TAU_S)
        return E_L + k * (math.exp(-d / TAU_M) - math.exp(-d / TAU_S))

    v, tol = expected(name, "V_m at 9 ms")
    assert close(v, psp(9.0), tol)
    grid = [psp(t0 + DT * j) for j in range(1, 250)]
    v, tol = expected(name, "max(V_m)")
    assert close(v, max(grid), tol)
    assert int(np.argmax(grid)) + 1 == 40  # Δ = 4.0 ms, next to 2.5 ln 5 = 4.024 ms
    assert max(grid) < V_TH


def test_iaf_psc_exp_strong_spike_without_refractory_period():
    w, t0 = 3000.0, 5.0
    k = w / C_M * TAU_M * TAU_S / (TAU_M - TAU_S)  # 30 mV
    v = [E_L + k * (math.exp(-DT * j / TAU_M) - math.exp(-DT * j / TAU_S)) for j in range(1, 60)]
    first = next(j for j, x in enumerate(v, start=1) if x >= V_TH)
    assert first == 27 and v[first - 2] < V_TH - 0.04  # Δ = 2.7 ms, margin 0.04 mV
    i_left = w * math.exp(-first * DT / TAU_S)
    assert i_left / 1000.0 * 5.35 < V_TH - E_L  # the PSP of what is left stays below
    body = blocks()["iaf_psc_exp: a strong input spike without refractory period"]
    assert f"expect spike_times == [{t0 + first * DT:g} ms]" in body


def test_iaf_cond_exp_closed_forms():
    g_l = 16.6667
    v, tol = expected("iaf_cond_exp: subthreshold response to I_e", "V_m at 20 ms")
    assert close(v, E_L + 100.0 / g_l * (1 - math.exp(-20.0 * g_l / C_M)), tol)
    v, tol = expected("iaf_cond_exp: the excitatory conductance jumps and decays",
                      "g_ex at 5.2 ms")
    assert close(v, 10.0 * math.exp(-0.2 / 0.2), tol)


# ---------------------------------------------------------------- AdEx
C, G_L, EL, D_T, V_T, V_PEAK, V_R, TAU_W, A, B = (
    281e-12, 30e-9, -70.6e-3, 2e-3, -50.4e-3, 0.0, -60e-3, 144e-3, 4e-9, 80.5e-12)


def adex_spikes(i_e: float, t_end: float) -> list[float]:
    """Spike times (ms) of aeif_cond_exp (no synaptic input) from rest, integrated
    by LSODA to rtol 1e-11 with an event at V = V_peak, then V = V_reset, w += b."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        v, w = y
        return [(-G_L * (v - EL) + G_L * D_T * np.exp((v - V_T) / D_T) - w + i_e) / C,
                (A * (v - EL) - w) / TAU_W]

    def peak(t, y):
        return y[0] - V_PEAK

    peak.terminal, peak.direction = True, 1
    t0, y, out = 0.0, [EL, 0.0], []
    while True:
        s = solve_ivp(f, (t0, t_end), y, method="LSODA", rtol=1e-11, atol=[1e-12, 1e-18],
                      events=peak, max_step=1e-4)
        if not s.t_events[0].size:
            return out
        t0 = float(s.t_events[0][0])
        out.append(t0 * 1e3)
        y = [V_R, float(s.y_events[0][0][1]) + B]


def test_adex_rheobase_values():
    i_rh = (G_L + A) * (V_T - EL - D_T + D_T * math.log(1 + A / G_L))
    assert i_rh * 1e12 == pytest.approx(627.311, abs=1e-3)
    assert G_L * (V_T - EL - D_T) * 1e12 == pytest.approx(546.0)
    assert A / G_L < TAU_W / (C / G_L)  # saddle-node: the formula is the onset
    text = SPEC.read_text(encoding="utf-8")
    assert "= 627.31 pA" in text and "546 pA" in text


def test_adex_blocks_against_solve_ivp():
    pytest.importorskip("scipy")
    assert adex_spikes(500e-12, 0.3) == []
    assert count("aeif_cond_exp: no spike below the rheobase of the resting neuron") == 0
    one = adex_spikes(600e-12, 0.5)
    name = "aeif_cond_exp: one spike below the rheobase of the adapted neuron"
    assert len(one) == 1 == count(name)
    v, tol = expected(name, "first_spike")
    assert abs(v - one[0]) < 1e-3 and tol == 0.02  # block: the continuous time, one step
    many = adex_spikes(1000e-12, 0.1)
    name = "aeif_cond_exp: adapting repetitive firing at 1000 pA"
    assert len(many) == count(name) == 6
    assert 100.0 - many[-1] > 10.0  # the window ends far from a spike
    assert np.all(np.diff(np.diff(many)) > 0)  # adaptation: growing intervals
    v, tol = expected(name, "first_spike")
    assert abs(v - many[0]) < 1e-3 and tol == 0.015
    early = re.search(r"spike_times at 30 ms == \[([^\]]*)\]", blocks()[name]).group(1)
    got = [float(x.strip().split()[0]) for x in early.split(",")]
    assert got == pytest.approx([t for t in many if t <= 30.0], abs=1e-3)
    text = SPEC.read_text(encoding="utf-8")
    assert ", ".join(f"{t:.3f}" for t in many[:4]) in text.replace("\n#", "")


# ---------------------------------------------------------------- the blocks run
def test_blocks_pass_on_the_reference():
    results = testing.run_file(str(SPEC), targets=["reference"])
    assert len(results) == len(blocks()) == 11
    bad = [r.line() + "\n" + r.explain() for r in results if not r.passed]
    assert not bad, "\n".join(bad)
