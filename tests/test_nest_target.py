"""The NEST target (docs/nest.md): neurons matched to NEST's built-in models
from the lowered step, NEST's exact propagators equal to closed forms, a CUBA
network equal to the reference under the documented delay mapping, threads,
refusals with the nearest built-in."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.models import cuba_small

import spikedsl
from spikedsl import targets
from spikedsl.cli import main as cli
from spikedsl.errors import Unsupported
from spikedsl.runtime import reference, testing
from spikedsl.runtime.verify import verify

if targets.unavailable("nest"):
    pytest.skip(targets.unavailable("nest"), allow_module_level=True)

from spikedsl.targets import nest as nest_target  # noqa: E402
from spikedsl.targets.nest.plan import make_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NEST = ROOT / "specs" / "neurons" / "nest.spk"


def net_of(text: str, name: str = "Net"):
    return spikedsl.loads(text, file=str(ROOT / "nest_test.spk")).network(name).ir


# ---------------------------------------------------------------- iaf_psc_exp
E_L, C_M, TAU_M, TAU_S, T_REF, V_TH, V_RESET, I_E = (
    -70e-3, 250e-12, 10e-3, 2e-3, 2e-3, -55e-3, -70e-3, 300e-12)
DT, STEPS, W = 1e-4, 300, 1000e-12
# spikes in steps 26, 66, 116: the inputs of steps 40, 72 and 78 arrive while refractory
# (V_m clamped, I_syn_ex still jumps); those of steps 0 and 1 before NEST could
# deliver a spike from step 0 on (the lead-in, docs/nest.md)
INPUT_STEPS = [0, 1, 20, 40, 55, 58, 61, 66, 72, 78, 150]


def psc_exp_closed_form():
    """NEST's exact propagation written out: I(t) = I0 e^{-t/τs} over a step h,
    V(h) = E_L + (V0 - E_L) e^{-h/τm} + I_e τm/C (1 - e^{-h/τm})
           + I0/C · τm τs/(τm - τs) · (e^{-h/τm} - e^{-h/τs})."""
    R = math.ceil(T_REF / DT - 1e-9)
    em, es = math.exp(-DT / TAU_M), math.exp(-DT / TAU_S)
    v, i_syn, r = E_L, 0.0, 0
    vs, isyn, spikes = [], [], []
    for n in range(STEPS):
        if n in INPUT_STEPS:
            i_syn += W
        if r == 0:
            v = (E_L + (v - E_L) * em + I_E * TAU_M / C_M * (1 - em)
                 + i_syn / C_M * TAU_M * TAU_S / (TAU_M - TAU_S) * (em - es))
        i_syn *= es
        z = r == 0 and v >= V_TH
        if z:
            v, r = V_RESET, R
        elif r > 0:
            r -= 1
        vs.append(v)
        isyn.append(i_syn)
        spikes.append(z)
    return np.array(vs), np.array(isyn), np.array(spikes, dtype=float)


PSC_NET = f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = {STEPS}
    input  s[1] : spikes
    layer  n[1] = iaf_psc_exp(I_e = 300 pA) <- one_to_one(s, weight = 1000 pA) -> S_ex
    output n
    output n.V_m
}}
"""


def test_iaf_psc_exp_equals_the_closed_form_to_1e_9_mV():
    net = net_of(PSC_NET)
    x = np.zeros((STEPS, 1, 1))
    x[INPUT_STEPS, 0, 0] = 1.0
    out = targets.run("nest", net, x, record=["n.I_syn_ex"])
    v, isyn, z = psc_exp_closed_form()
    np.testing.assert_array_equal(np.nonzero(z)[0], [26, 66, 116])
    assert all(any(k < n <= k + 20 for k in (26, 66)) for n in (40, 72, 78))
    np.testing.assert_array_equal(out["n"][:, 0, 0], z)
    assert np.max(np.abs(out["n.V_m"][:, 0, 0] - v)) * 1e3 < 1e-9  # mV
    assert np.max(np.abs(out["n.I_syn_ex"][:, 0, 0] - isyn)) * 1e12 < 1e-9  # pA
    m = make_plan(net).populations["n"].match
    assert m.model == "iaf_psc_exp" and m.exact and m.lead == 1
    # I_e folds into the resting potential: E_L + I_e tau_m / C_m = -58 mV
    par = {k: np.asarray(v).item() for k, v in m.params.items()}
    assert par["tau_m"] == 10.0 and par["E_L"] == -58.0
    assert par["t_ref"] == 2.0 and par["C_m"] == 250.0


# ---------------------------------------------------------------- iaf_psc_delta
DELTA_NET = f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = 60
    input  s[1] : spikes
    input  c[1] : direct
    layer  n[1] = iaf_psc_delta(I_e = 100 pA) <- one_to_one(s, weight = 16 mV) -> S
                                              + one_to_one(c, weight = 200 pA) -> I
    output n
    output n.V_m
}}
"""


def test_iaf_psc_delta_equals_the_reference_and_loses_jumps_while_refractory():
    net = net_of(DELTA_NET)
    x = np.zeros((60, 1, 1))
    x[[0, 1, 3, 10, 22, 23, 24, 30, 31, 45], 0, 0] = 1.0
    c = np.random.default_rng(0).random((60, 1, 1))
    out = targets.run("nest", net, {"s": x, "c": c})
    ref = reference.run(net, {"s": x, "c": c})
    np.testing.assert_array_equal(out["n"], ref["n"])
    assert np.max(np.abs(out["n.V_m"] - ref["n.V_m"])) * 1e3 < 1e-9
    # closed form: the jump, then one exact step; lost while V_m is clamped
    em = math.exp(-0.1 / 10)
    v, r, zs = -70.0, 0, []
    for n in range(60):
        if r == 0:
            v = v + 16.0 * x[n, 0, 0]
            i = 100.0 + 200.0 * c[n, 0, 0]
            v = -70.0 + i * 10 / 250 + (v + 70.0 - i * 10 / 250) * em
        z = r == 0 and v >= -55.0
        if z:
            v, r = -70.0, 20
        elif r > 0:
            r -= 1
        zs.append(z)
        assert abs(out["n.V_m"][n, 0, 0] * 1e3 - v) < 1e-9
    np.testing.assert_array_equal(np.nonzero(zs)[0], np.nonzero(out["n"][:, 0, 0])[0])
    assert out["n"][:, 0, 0].sum() >= 2
    m = make_plan(net).populations["n"].match
    # NEST adds the spike after the propagation: the weight decayed over the step
    assert m.model == "iaf_psc_delta" and m.lead == 0
    assert float(m.jumps["S"][1]) == pytest.approx(1e3 * em, rel=1e-15)


def test_izhikevich_and_the_library_of_nest_spk():
    """Every neuron of nest.spk is its NEST model; the exactly integrated ones
    give the reference's numbers, the others (NEST's adaptive solver) close."""
    cases = {
        "iaf_psc_delta": ("dt = 0.1 ms", "iaf_psc_delta(I_e = 200 pA)", "S", "5 mV"),
        "iaf_psc_exp": ("dt = 0.1 ms", "iaf_psc_exp(I_e = 300 pA)", "S_ex", "400 pA"),
        "iaf_cond_exp": ("dt = 0.1 ms", "iaf_cond_exp(I_e = 300 pA)", "S_ex", "5 nS"),
        "izhikevich": ("dt = 0.1", "izhikevich(I_e = 5)", "S", "3"),
        "hh_psc_alpha": ("dt = 0.01 ms", "hh_psc_alpha(I_e = 500 pA)", "S_ex", "100 pA"),
    }
    for model, (dt, nrn, inp, w) in cases.items():
        T = 2000
        net = net_of(f"""
import "{NEST}"
network Net {{
    {dt}
    steps = {T}
    input s[1] : spikes
    layer n[1] = {nrn} <- one_to_one(s, weight = {w}) -> {inp}
    output n
    output n.V_m
}}
""")
        m = make_plan(net).populations["n"].match
        assert m.model == model
        x = (np.random.default_rng(1).random((T, 2, 1)) < 0.05).astype(float)
        out, ref = targets.run("nest", net, x), reference.run(net, x)
        dv = np.max(np.abs(out["n.V_m"] - ref["n.V_m"]))
        assert out["n"].sum() >= 2, model
        if m.exact:
            np.testing.assert_array_equal(out["n"], ref["n"])
            assert dv < (1e-9 if model == "izhikevich" else 1e-12), (model, dv)
        else:  # the same ODEs, NEST's Runge-Kutta-Fehlberg against rk4
            assert abs(out["n"].sum() - ref["n"].sum()) <= 1, model
            assert dv < 1e-3, (model, dv)
    # aeif_cond_exp: matched with its parameters (its rk4 step overflows at the spike, where
    # NEST integrates min(V_m, V_peak); so no comparison of runs here)
    net = net_of(f"""
import "{NEST}"
network Net {{
    dt = 0.01 ms
    steps = 10
    input s[1] : spikes
    layer n[1] = aeif_cond_exp(a = 2 nS, b = 60 pA) <- one_to_one(s, weight = 5 nS) -> S_ex
    output n
}}
""")
    m = make_plan(net).populations["n"].match
    p = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.params.items()}
    assert m.model == "aeif_cond_exp" and not m.exact
    assert (p["a"], p["b"], p["C_m"], p["g_L"], p["Delta_T"], p["tau_w"]) == (
        2.0, 60.0, 281.0, 30.0, 2.0, 144.0)
    assert (p["E_L"], p["V_th"], p["V_peak"], p["V_reset"]) == (-70.6, -50.4, 0.0, -60.0)


# ---------------------------------------------------------------- CUBA network
CUBA = cuba_small()


def test_cuba_neuron_is_iaf_psc_exp_in_nest_units():
    plan = make_plan(net_of(CUBA, "CUBA"))
    m = plan.populations["exc"].match
    assert m.model == "iaf_psc_exp" and m.kind == "current"
    p = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.params.items()}
    assert p["tau_m"] == 20.0 and p["E_L"] == -49.0 and p["V_reset"] == -60.0
    assert p["t_ref"] == 5.0 and p["C_m"] == 250.0
    assert p["V_th"] == np.nextafter(-50.0, 1.0)  # spike v > Vt
    # ge (mV) is I_syn_ex (pA) = ge C_m / tau_m: 12.5 pA per mV
    syn = {s.state: s for s in m.syn}
    assert np.allclose(syn["ge"].per_unit, 12500.0, rtol=1e-12, atol=0)
    assert np.all(syn["gi"].params["tau_syn"] == 10.0)
    # every projection between the layers runs with NEST's one-step delay: spikedsl delay 2
    assert {(c.dst, c.src, c.delay, c.mapped) for c in plan.connections} == {
        (d, s, 1, 2) for d in ("exc", "inh") for s in ("exc", "inh")}


def test_cuba_verify_agrees_with_the_reference_under_the_delay_mapping(capsys):
    net = net_of(CUBA, "CUBA")
    mapped = targets.schedule("nest", net)
    assert mapped is not net
    assert all(p.delay == 2 for la in mapped.layers for p in la.projections)
    rep = verify(net, targets=["reference", "nest"], batch=2)
    names = [r.name for r in rep.runs]
    assert names == ["reference", "reference@nest", "nest"], names
    (pair,) = rep.pairs  # nest is compared with the reference of the network it runs
    assert (pair.a, pair.b) == ("reference@nest", "nest")
    # an autonomous network runs one sample (no inputs to batch)
    assert pair.spikes_total == 2000 * 100 and pair.spikes_equal == pair.spikes_total
    assert pair.max_diff < 1e-12 and rep.ok
    ran = {r.name: r for r in rep.runs}
    assert ran["nest"].outputs["exc"].sum() > 50  # it spikes (autonomous: El above Vt)
    # the spec's own timing differs: the mapping matters
    assert not np.array_equal(ran["nest"].outputs["exc"], ran["reference"].outputs["exc"])
    spec = ROOT / "cuba_nest.spk"
    try:
        spec.write_text(CUBA)
        code = cli(["verify", str(spec), "-t", "nest", "--steps", "500"])
    finally:
        spec.unlink()
    text = capsys.readouterr().out
    assert code == 0 and "reference@nest ~ nest" in text and "verified" in text


def test_simulate_cli_runs_nest_and_saves_what_nest_records(tmp_path, capsys):
    """``spikedsl simulate -t nest``: the spikes equal the NEST target's, the
    membrane trace is the state after the reset (NEST has no pre-reset value)."""
    spec = tmp_path / "cuba.spk"
    spec.write_text(cuba_small(1000))
    out = tmp_path / "run.npz"
    code = cli(["simulate", str(spec), "-t", "nest", "--threads", "2", "-o", str(out),
                "--plot", str(tmp_path / "plots")])
    text = capsys.readouterr().out
    assert code == 0 and "target nest" in text, text
    saved = np.load(out)
    direct = nest_target.run(net_of(cuba_small(1000), "CUBA"), None, record=["exc.v"])
    np.testing.assert_array_equal(saved["exc"], direct["exc"])
    np.testing.assert_array_equal(saved["exc.v"], direct["exc.v"])
    assert saved["exc"].sum() > 10 and (tmp_path / "plots" / "traces.png").exists()


def test_results_do_not_depend_on_the_number_of_threads():
    net = net_of(CUBA, "CUBA")
    one = nest_target.run(net, None, record=["exc.v", "exc.ge"], threads=1, batch=2)
    two = nest_target.run(net, None, record=["exc.v", "exc.ge"], threads=2, batch=2)
    assert one["exc"].sum() > 50
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])


def test_mpi():
    if not nest_target.mpi_available():
        pytest.skip("the installed NEST is built without MPI (the nest-simulator wheel "
                    "is); docs/nest.md says how to run with an MPI build")
    import shutil
    import subprocess
    import sys

    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("NEST has MPI but there is no mpirun")
    code = ("import numpy as np, spikedsl, nest\n"
            "from spikedsl.targets import nest as t\n"
            f"net = spikedsl.loads({CUBA!r}).network('CUBA').ir\n"
            "out = t.run(net, None, batch=1)\n"
            "if nest.Rank() == 0: np.save('mpi_exc.npy', out['exc'])\n")
    env = dict(os.environ, SPIKEDSL_NEST_IN_PROCESS="1")  # the ranks are the NEST processes
    subprocess.run([mpirun, "-np", "2", sys.executable, "-c", code], check=True, timeout=600,
                   env=env)
    single = nest_target.run(net_of(CUBA, "CUBA"), None, batch=1)
    np.testing.assert_array_equal(np.load("mpi_exc.npy"), single["exc"])


# ---------------------------------------------------------------- refusals
QIF = """
neuron QIF {
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (v * v + I) / tau
    spike v >= 1
    reset v = 0
}
network Net {
    dt = 0.1 ms
    steps = 10
    input x[2] : spikes
    layer q[2] = QIF <- dense(x)
    output q
}
"""


def test_an_unmatched_neuron_is_refused_quickly_naming_the_nearest_builtin():
    net = net_of(QIF)
    t0 = time.perf_counter()
    err = targets.refusal("nest", net)
    seconds = time.perf_counter() - t0
    assert seconds < 1.0, seconds
    msg = err.diagnostics[0].message
    assert msg == ("NEST cannot express neuron 'QIF': no NEST built-in has its dynamics; the "
                   "nearest is iaf_psc_delta: its dv/dt has the term 'v**2 / tau', which "
                   "iaf_psc_delta's dV_m/dt = -(V_m - E_L) / tau_m + (I_e + I) / C_m has not")
    with pytest.raises(Unsupported, match="the nearest is iaf_psc_delta"):
        targets.run("nest", net, np.zeros((10, 1, 2)))


def test_an_exact_three_state_neuron_with_an_additive_reset_is_refused_not_crashed():
    """Linear dynamics with an adaptation-like state but an exact step: every
    matcher refuses (aeif_cond_exp's reads the derivatives, which an exact step
    does not have), none raises."""
    net = net_of("""
neuron A {
    param tau_w = 100 ms
    param tau_s = 5 ms
    param a = 2 nS
    param C = 200 pF
    param g = 10 nS
    state v = 0 mV
    state w = 0 pA
    state s = 0 pA
    input I : pA
    dv/dt = (-g * v - w + s) / C
    dw/dt = (a * v - w) / tau_w
    ds/dt = -s / tau_s
    jump s += I
    spike v >= 10 mV
    reset v = 0 mV; w += 10 pA
    refractory 2 ms [clamp v]
}
network Net {
    dt = 0.1 ms
    steps = 50
    input x[2] : direct
    layer h[2] = A <- one_to_one(x, weight = 500 pA)
    output h
}
""")
    err = targets.refusal("nest", net)
    assert err is not None and "NEST cannot express neuron 'A'" in err.diagnostics[0].message


@pytest.mark.parametrize("change, fragment", [
    ("method exact", None),
    ("method euler", "method euler: NEST's iaf_psc_delta integrates exactly"),
])
def test_the_integration_method_matters(change, fragment):
    text = QIF.replace("(v * v + I) / tau", f"(-v + I) / tau  {change}")
    err = targets.refusal("nest", net_of(text))
    if fragment is None:
        assert err is None
    else:
        assert fragment in err.diagnostics[0].message


def test_weights_of_both_signs_into_currents_that_decay_differently_are_refused():
    text = f"""
import "{NEST}"
network Net {{
    dt = 0.1 ms
    steps = 20
    input x[3] : spikes
    layer a[2] = iaf_psc_exp(tau_syn_in = 5 ms) <- dense(x) -> S_ex
    layer b[2] = iaf_psc_exp(tau_syn_in = 5 ms) <- dense(a, bias = false) -> S_ex
    output b
}}
"""
    net = net_of(text)
    assert targets.refusal("nest", net) is None  # the signs are known with the weights
    x = np.ones((20, 1, 3))
    with pytest.raises(Unsupported, match="sends positive weights to its excitatory current"):
        targets.run("nest", net, x)
    ok = text.replace("bias = false)", "bias = false, sign = excitatory)").replace(
        "dense(x) -> S_ex", "dense(x, sign = excitatory) -> S_ex")
    out = targets.run("nest", net_of(ok), x)
    ref = reference.run(targets.schedule("nest", net_of(ok)), x)
    np.testing.assert_array_equal(out["b"], ref["b"])


def test_test_blocks_skip_nest_where_its_delays_differ():
    prog = spikedsl.loads(CUBA.replace("steps = 2000", "steps = 20") + """
test "cuba runs" {
    network = CUBA
    run 2 ms
    expect count(exc) >= 0
    targets = [reference, nest]
}
""", file=str(ROOT / "cuba_test.spk"))
    results = {r.target: r for r in testing.run_program(prog)}
    assert results["reference"].status == "pass"
    assert results["nest"].status == "skip"
    assert "later than this network's schedule" in results["nest"].reason
