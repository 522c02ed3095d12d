"""spikedsl's standard models against Brian2 run directly: plain Brian2 code
that follows Brian2's examples (examples/CUBA.py, examples/COBAHH.py,
examples/IF_curve_Hodgkin_Huxley.py), in Brian2's own schedule and with its
own state updaters.  spikedsl provides only the connectivity (the sparse
masks of spikedsl.lowering.weights) and the initial values (the per-neuron
draws of the same module).  The conventions of docs/coming_from.md are what
is tested: Brian2's ``refractory=D`` holds one step fewer (it is given
D + dt), it delivers a spike in the next step (``delay = 1`` on the one
feed-forward pathway), and it stamps a spike with the start of its step (one
dt before spikedsl's time label)."""

# The Brian2 code below is the examples' own: Brian2 reads the constants of its
# equation strings from the calling frame, which ruff sees as unused names.
# ruff: noqa: F841

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

b2 = pytest.importorskip("brian2")

import spikedsl
from spikedsl.lowering.weights import init_weights, sparse_mask
from spikedsl.runtime import reference
from spikedsl.targets import brian2 as b2t

ROOT = Path(__file__).parents[1]
CUBA = ROOT / "specs" / "networks" / "cuba.spk"
COBA = ROOT / "specs" / "networks" / "coba.spk"
HH = ROOT / "specs" / "neurons" / "hh_brian2.spk"


@pytest.fixture(autouse=True)
def numpy_codegen():
    """Brian2's numpy code generation, quiet, restored afterwards."""
    old = b2.prefs.codegen.target
    b2.prefs.codegen.target = "numpy"
    b2.BrianLogger.log_level_error()
    yield
    b2.prefs.codegen.target = old


def _network(neuron: str, we: str, wi: str, n_exc: int, n_inh: int, p: float, steps: int,
             exc_to_inh_delay: int = 1) -> str:
    """The network of cuba.spk / coba.spk at reduced size (p scaled up to keep
    the number of inputs per neuron)."""
    d = f", delay = {exc_to_inh_delay}" if exc_to_inh_delay else ""
    return f"""
network Small {{
    dt    = 0.1 ms
    steps = {steps}
    layer exc[{n_exc}] = {neuron} <- sparse(exc, p = {p}, weight = {we}, seed = 1) -> Ie + sparse(inh, p = {p}, weight = {wi}, seed = 2) -> Ii
    layer inh[{n_inh}] = {neuron} <- sparse(exc, p = {p}, weight = {we}, seed = 3{d}) -> Ie + sparse(inh, p = {p}, weight = {wi}, seed = 4) -> Ii
    output exc
    output inh
}}
"""


def _small(spec: Path, *args, **kw):
    text = f'import "{spec}"\n' + _network(*args, **kw)
    return spikedsl.loads(text, file=str(ROOT / "tests" / "small.spk")).network("Small").ir


def _connectivity(net):
    """(pre, post) of the excitatory and of the inhibitory synapses, in one group
    of all neurons (exc first, as Brian2's P[:3200], P[3200:]), from our masks."""
    off = {"exc": 0, "inh": net.layer("exc").shape[0]}
    pairs = {"exc": ([], []), "inh": ([], [])}
    for lay in net.layers:
        for p in lay.projections:
            post, pre = np.nonzero(sparse_mask(p))
            pairs[p.source][0].append(pre + off[p.source])
            pairs[p.source][1].append(post + off[lay.name])
    return {k: (np.concatenate(a), np.concatenate(b)) for k, (a, b) in pairs.items()}


def _initial(net, name):
    W = init_weights(net)
    return np.concatenate([W[f"exc.{name}"], W[f"inh.{name}"]])


def _our_spikes(out) -> set[tuple[int, int]]:
    """{(step, neuron)} of a spikedsl run, neurons numbered as in one group."""
    z = np.concatenate([out["exc"][:, 0], out["inh"][:, 0]], axis=1)
    return set(zip(*(a.tolist() for a in np.nonzero(z))))


def _their_spikes(mon, dt) -> set[tuple[int, int]]:
    """{(step, neuron)} of a Brian2 SpikeMonitor: its t is the start of the step."""
    steps = np.round(np.asarray(mon.t_[:]) / dt).astype(int)
    return set(zip(steps.tolist(), np.asarray(mon.i[:]).tolist()))


# ---------------------------------------------------------------- CUBA
def brian2_cuba(v0, conn, duration_steps, refractory_steps):
    """examples/CUBA.py: our connectivity and initial values, the refractory
    period given in steps (50 is Brian2's `refractory=5*ms`)."""
    from brian2 import NeuronGroup, SpikeMonitor, StateMonitor, Synapses, ms, mV, volt

    dt = 0.1 * ms
    taum = 20*ms
    taue = 5*ms
    taui = 10*ms
    Vt = -50*mV
    Vr = -60*mV
    El = -49*mV

    eqs = '''
    dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
    dge/dt = -ge/taue : volt
    dgi/dt = -gi/taui : volt
    '''

    P = NeuronGroup(len(v0), eqs, threshold='v>Vt', reset='v = Vr',
                    refractory=refractory_steps * dt, method='exact', dt=dt)
    P.v = v0 * volt
    P.ge = 0*mV
    P.gi = 0*mV

    we = (60*0.27/10)*mV  # excitatory synaptic weight (voltage)
    wi = (-20*4.5/10)*mV  # inhibitory synaptic weight
    Ce = Synapses(P, P, on_pre='ge += we', dt=dt)
    Ci = Synapses(P, P, on_pre='gi += wi', dt=dt)
    Ce.connect(i=conn["exc"][0], j=conn["exc"][1])
    Ci.connect(i=conn["inh"][0], j=conn["inh"][1])

    s_mon = SpikeMonitor(P)
    v_mon = StateMonitor(P, 'v', record=True, when='end')
    b2.Network(P, Ce, Ci, s_mon, v_mon).run(duration_steps * dt)
    return _their_spikes(s_mon, float(dt)), np.asarray(v_mon.v_).T, float(dt), s_mon


CUBA_ARGS = ("CubaNeuron", "1.62 mV", "-9 mV", 320, 80, 0.2, 1000)  # 400 neurons, 0.1 s


def test_cuba_equals_brian2_run_directly():
    """Same spike trains (neurons, steps, time labels) on the reference and the
    Brian2 target as Brian2's CUBA example run with refractory = 5 ms + dt."""
    net = _small(CUBA, *CUBA_ARGS)
    theirs, v_b2, dt, mon = brian2_cuba(_initial(net, "v0"), _connectivity(net), 1000, 51)
    ref = reference.run(net, {}, record=["exc.v", "inh.v"])
    tgt = b2t.simulate(net, record=["exc.v", "inh.v"])
    assert len(theirs) > 150  # about 5 Hz, as the full network
    for out in (ref, tgt):
        assert _our_spikes(out) == theirs
        v = np.concatenate([out["exc.v"][:, 0], out["inh.v"][:, 0]], axis=1)
        assert float(np.max(np.abs(v - v_b2))) < 1e-12  # volts: the exact steps agree
    # time labels: a spike of step n is at (n + 1) dt here, at n dt in Brian2
    i, t = np.asarray(mon.i[:]), np.asarray(mon.t_[:])
    for k in np.unique(i)[:20]:
        layer, unit = ("exc", k) if k < 320 else ("inh", k - 320)
        ours = b2t.spike_times(ref[layer][:, 0], dt)[unit]
        np.testing.assert_allclose(ours, np.sort(t[i == k]) + dt, rtol=0, atol=1e-12)


def test_cuba_conventions_refractory_count_and_delivery_matter():
    """Brian2's own `refractory=5*ms` gives other spikes, which spikedsl's
    `refractory 4.9 ms` reproduces; without `delay = 1` on exc -> inh the
    spikes differ from Brian2's."""
    net = _small(CUBA, *CUBA_ARGS)
    conn, v0 = _connectivity(net), _initial(net, "v0")
    theirs_50, *_ = brian2_cuba(v0, conn, 1000, 50)
    assert _our_spikes(reference.run(net, {})) != theirs_50
    text = CUBA.read_text().replace("refractory 5 ms", "refractory 4.9 ms")
    assert "refractory 4.9 ms" in text
    net49 = spikedsl.loads(text + _network(*CUBA_ARGS), file=str(CUBA)).network("Small").ir
    assert net49.layers[0].neuron.refractory_steps == 49
    assert _our_spikes(reference.run(net49, {})) == theirs_50
    theirs_51, *_ = brian2_cuba(v0, conn, 1000, 51)
    undelayed = _small(CUBA, *CUBA_ARGS, exc_to_inh_delay=0)
    assert _our_spikes(reference.run(undelayed, {})) != theirs_51


# ---------------------------------------------------------------- COBA (COBAHH)
def brian2_coba(init, conn, duration_steps, refractory_steps):
    """examples/COBAHH.py with our connectivity and initial values (v, ge, gi;
    m, n, h at Brian2's default 0), refractory given in steps (30 is Brian2's
    `refractory=3*ms`)."""
    from brian2 import (
        Equations,
        NeuronGroup,
        SpikeMonitor,
        StateMonitor,
        Synapses,
        cm,
        ms,
        msiemens,
        mV,
        nS,
        siemens,
        ufarad,
        umetre,
        volt,
    )

    dt = 0.1*ms
    # Parameters
    area = 20000*umetre**2
    Cm = (1*ufarad*cm**-2) * area
    gl = (5e-5*siemens*cm**-2) * area

    El = -60*mV
    EK = -90*mV
    ENa = 50*mV
    g_na = (100*msiemens*cm**-2) * area
    g_kd = (30*msiemens*cm**-2) * area
    VT = -63*mV
    # Time constants
    taue = 5*ms
    taui = 10*ms
    # Reversal potentials
    Ee = 0*mV
    Ei = -80*mV
    we = 6*nS  # excitatory synaptic weight
    wi = 67*nS  # inhibitory synaptic weight

    # The model
    eqs = Equations('''
    dv/dt = (gl*(El-v)+ge*(Ee-v)+gi*(Ei-v)-
             g_na*(m*m*m)*h*(v-ENa)-
             g_kd*(n*n*n*n)*(v-EK))/Cm : volt
    dm/dt = alpha_m*(1-m)-beta_m*m : 1
    dn/dt = alpha_n*(1-n)-beta_n*n : 1
    dh/dt = alpha_h*(1-h)-beta_h*h : 1
    dge/dt = -ge*(1./taue) : siemens
    dgi/dt = -gi*(1./taui) : siemens
    alpha_m = 0.32*(mV**-1)*4*mV/exprel((13*mV-v+VT)/(4*mV))/ms : Hz
    beta_m = 0.28*(mV**-1)*5*mV/exprel((v-VT-40*mV)/(5*mV))/ms : Hz
    alpha_h = 0.128*exp((17*mV-v+VT)/(18*mV))/ms : Hz
    beta_h = 4./(1+exp((40*mV-v+VT)/(5*mV)))/ms : Hz
    alpha_n = 0.032*(mV**-1)*5*mV/exprel((15*mV-v+VT)/(5*mV))/ms : Hz
    beta_n = .5*exp((10*mV-v+VT)/(40*mV))/ms : Hz
    ''')

    P = NeuronGroup(len(init["v0"]), model=eqs, threshold='v>-20*mV',
                    refractory=refractory_steps * dt, method='exponential_euler', dt=dt)
    Ce = Synapses(P, P, on_pre='ge+=we', dt=dt)
    Ci = Synapses(P, P, on_pre='gi+=wi', dt=dt)
    Ce.connect(i=conn["exc"][0], j=conn["exc"][1])
    Ci.connect(i=conn["inh"][0], j=conn["inh"][1])

    # Initialization
    P.v = init["v0"] * volt
    P.ge = init["ge0"] * siemens
    P.gi = init["gi0"] * siemens

    s_mon = SpikeMonitor(P)
    v_mon = StateMonitor(P, 'v', record=True, when='end')
    b2.Network(P, Ce, Ci, s_mon, v_mon).run(duration_steps * dt)
    return _their_spikes(s_mon, float(dt)), np.asarray(v_mon.v_).T


COBA_ARGS = ("CobaHH", "6 nS", "67 nS", 320, 80, 0.2, 200)  # 400 neurons, 20 ms


def test_coba_equals_brian2_run_directly():
    """Brian2's COBAHH at reduced size, refractory 3 ms + dt: the same spikes
    on the reference and the Brian2 target."""
    net = _small(COBA, *COBA_ARGS)
    init = {k: _initial(net, k) for k in ("v0", "ge0", "gi0")}
    theirs, v_b2 = brian2_coba(init, _connectivity(net), 200, 31)
    assert len(theirs) > 100
    ref = reference.run(net, {}, record=["exc.v", "inh.v"])
    tgt = b2t.simulate(net, record=["exc.v", "inh.v"])
    for out in (ref, tgt):
        assert _our_spikes(out) == theirs
        v = np.concatenate([out["exc.v"][:, 0], out["inh.v"][:, 0]], axis=1)
        assert float(np.max(np.abs(v - v_b2))) < 1e-9  # volts


# ---------------------------------------------------------------- HH IF curve
HH_K, HH_STEPS = 8, 20000  # 8 currents, 200 ms at dt = 0.01 ms


def brian2_if_curve(num_neurons=HH_K, steps=HH_STEPS):
    """examples/IF_curve_Hodgkin_Huxley.py with 8 neurons for 200 ms at
    dt = 0.01 ms; returns (spike counts, spike steps [T, K], v [T, K])."""
    from brian2 import (
        Equations,
        NeuronGroup,
        SpikeMonitor,
        StateMonitor,
        cm,
        ms,
        msiemens,
        mV,
        siemens,
        ufarad,
        umetre,
    )

    dt = 0.01*ms
    # Parameters
    area = 20000*umetre**2
    Cm = 1*ufarad*cm**-2 * area
    gl = 5e-5*siemens*cm**-2 * area
    El = -65*mV
    EK = -90*mV
    ENa = 50*mV
    g_na = 100*msiemens*cm**-2 * area
    g_kd = 30*msiemens*cm**-2 * area
    VT = -63*mV

    # The model
    eqs = Equations('''
    dv/dt = (gl*(El-v) - g_na*(m*m*m)*h*(v-ENa) - g_kd*(n*n*n*n)*(v-EK) + I)/Cm : volt
    dm/dt = 0.32*(mV**-1)*4*mV/exprel((13.*mV-v+VT)/(4*mV))/ms*(1-m)-0.28*(mV**-1)*5*mV/exprel((v-VT-40.*mV)/(5*mV))/ms*m : 1
    dn/dt = 0.032*(mV**-1)*5*mV/exprel((15.*mV-v+VT)/(5*mV))/ms*(1.-n)-.5*exp((10.*mV-v+VT)/(40.*mV))/ms*n : 1
    dh/dt = 0.128*exp((17.*mV-v+VT)/(18.*mV))/ms*(1.-h)-4./(1+exp((40.*mV-v+VT)/(5.*mV)))/ms*h : 1
    I : amp
    ''')  # noqa: E501
    # Threshold and refractoriness are only used for spike counting
    group = NeuronGroup(num_neurons, eqs,
                        threshold='v > -40*mV',
                        refractory='v > -40*mV',
                        method='exponential_euler', dt=dt)
    group.v = El
    group.I = '0.7*nA * i / num_neurons'

    monitor = SpikeMonitor(group)
    v_mon = StateMonitor(group, 'v', record=True, when='end')
    b2.Network(group, monitor, v_mon).run(steps * dt)
    z = np.zeros((steps, num_neurons))
    for t, k in _their_spikes(monitor, float(dt)):
        z[t, k] = 1.0
    return np.asarray(monitor.count[:]), z, np.asarray(v_mon.v_).T


def _if_curve_net(steps=HH_STEPS):
    text = f"""
import "{HH}"
network IFCurve {{
    dt    = 0.01 ms
    steps = {steps}
    input  x[{HH_K}] : direct
    layer  n[{HH_K}] = HHTraub <- one_to_one(x, weight = 1 nA)
    output n
    output n.v
}}
"""
    net = spikedsl.loads(text, file=str(ROOT / "tests" / "if_curve.spk")).network("IFCurve").ir
    x = np.broadcast_to(0.7 * np.arange(HH_K) / HH_K, (steps, 1, HH_K)).copy()  # nA
    return net, x


HH_COUNTS = [0, 4, 7, 10, 12, 14, 16, 18]


def test_hh_if_curve_reference_equals_brian2():
    """Same spike counts and spike steps; the membrane traces agree to
    3.5e-6 mV, not better: Brian2's exponential_euler loses exprel (see the
    next test), which costs it up to 7 digits of the rate alpha_m near
    v = -50 mV, on the way up of every spike."""
    counts, z_b2, v_b2 = brian2_if_curve()
    net, x = _if_curve_net()
    ref = reference.run(net, x)
    np.testing.assert_array_equal(counts, HH_COUNTS)
    np.testing.assert_array_equal(ref["n"][:, 0].sum(0), HH_COUNTS)
    np.testing.assert_array_equal(ref["n"][:, 0], z_b2)
    dv = float(np.max(np.abs(ref["n.v"][:, 0] - v_b2)))
    assert dv < 1e-8  # volts (measured 3.5e-9: 3.5e-6 mV)


def test_brian2_exponential_euler_turns_exprel_into_exp():
    """Why the traces differ: Brian2 expands the equations with SymPy, so
    exprel((13 mV - v + VT)/(4 mV)) gets the constant term 3.25 in its
    argument, and Brian2's `exprel` then rewrites itself as (exp(x) - 1)/x;
    the generated update of m has no exprel, and near x = 0 its value is off
    by up to ~1e-7 where the exprel form is exact to the last bit."""
    import mpmath
    from brian2 import Equations
    from brian2.stateupdaters.exponential_euler import exponential_euler

    eqs = Equations('''
    dm/dt = 0.32*(mV**-1)*4*mV/exprel((13.*mV-v+VT)/(4*mV))/ms*(1-m)-0.28*(mV**-1)*5*mV/exprel((v-VT-40.*mV)/(5*mV))/ms*m : 1
    v : volt
    VT : volt
    ''')  # noqa: E501
    code = exponential_euler(eqs, {})
    assert "exprel" not in code and "exp(" in code
    # one step of m at v close to -50 mV (x = (13 mV - v + VT)/4 mV near 0)
    mpmath.mp.dps = 40
    h, VT, m0 = 1e-5, -63e-3, 0.3

    def rates(v, er, exp):
        a = 0.32 * 4 / er((13e-3 - v + VT) / 4e-3) / 1e-3
        b = 0.28 * 5 / er((v - VT - 40e-3) / 5e-3) / 1e-3
        return a, -(a + b), exp

    def step_true(v):
        a, A, _ = rates(mpmath.mpf(v), lambda x: mpmath.expm1(x) / x, mpmath.exp)
        return float(-a / A + (a / A + m0) * mpmath.exp(A * h))

    ns = {"VT": VT, "mV": 1e-3, "ms": 1e-3, "dt": h, "m": m0, "exp": np.exp}
    lines = [ln.split(" = ", 1) for ln in code.splitlines() if ln.startswith("_")]
    worst_b2, worst_ours = 0.0, 0.0
    for v in np.linspace(-50.0001e-3, -49.9999e-3, 41):
        env = dict(ns, v=v)
        for name, expr in lines:
            env[name] = eval(expr, {}, env)  # Brian2's own update code
        a, A, _ = rates(v, lambda x: np.expm1(x) / x if x else 1.0, np.exp)
        ours = m0 + h * (a + A * m0) * (np.expm1(A * h) / (A * h))  # spikedsl's form
        worst_b2 = max(worst_b2, abs(env["_m"] - step_true(v)))
        worst_ours = max(worst_ours, abs(ours - step_true(v)))
    assert worst_ours < 1e-15 and worst_b2 > 1e-10


@pytest.mark.slow
def test_hh_if_curve_brian2_target_equals_brian2():
    counts, z_b2, v_b2 = brian2_if_curve()
    net, x = _if_curve_net()
    out = b2t.simulate(net, x)
    np.testing.assert_array_equal(out["n"][:, 0], z_b2)
    assert float(np.max(np.abs(out["n.v"][:, 0] - v_b2))) < 1e-8


@pytest.mark.slow
def test_hh_if_curve_with_brian2s_exprel_kept():
    """With Brian2's exprel kept as a function (SymPy no longer rewrites it),
    the traces agree to 1e-9 mV over 200 ms with Brian2's default code
    generation, Cython (measured 3e-13 V; 2e-16 V before the first spike):
    the rest is the last bit of the rate expressions, which SymPy orders
    differently, carried through 18 spikes.  (With Brian2's numpy target,
    whose vectorised exp differs from libm's in the last bit: 2.5e-12 V.)"""
    import sympy
    from brian2.core.functions import exprel

    saved = exprel.__dict__["eval"]
    exprel.eval = classmethod(lambda cls, arg: sympy.S.One if arg.is_zero else None)
    _clear_brian2_caches()  # parsed and solved equations are cached
    b2.prefs.codegen.target = "cython"
    try:
        counts, z_b2, v_b2 = brian2_if_curve()
    finally:
        exprel.eval = saved
        _clear_brian2_caches()
    net, x = _if_curve_net()
    ref = reference.run(net, x)
    np.testing.assert_array_equal(ref["n"][:, 0], z_b2)
    assert float(np.max(np.abs(ref["n.v"][:, 0] - v_b2))) < 1e-12  # volts: 1e-9 mV


def _clear_brian2_caches():
    """Brian2 memoises parsing and state-updater results (brian2.utils.caching),
    SymPy the evaluation of functions."""
    import importlib
    import inspect

    from sympy.core.cache import clear_cache

    clear_cache()

    for name in ("codegen.translation", "equations.equations", "parsing.statements",
                 "parsing.sympytools", "stateupdaters.base", "stateupdaters.exact"):
        mod = importlib.import_module(f"brian2.{name}")
        for obj in list(vars(mod).values()):
            members = list(vars(obj).values()) if inspect.isclass(obj) else []
            for f in [obj, *members]:
                cache = getattr(getattr(f, "__wrapped__", None), "_cache", None)
                if isinstance(cache, dict):
                    cache.clear()
