"""The reference interpreter (spikedsl/runtime/reference.py, on numpy)
against closed forms, direct implementations written here, and naive loops;
tests/test_interpreter.py runs it on torch too."""

from __future__ import annotations

import math

import numpy as np
import pytest

import spikedsl
from spikedsl import ir
from spikedsl.lowering.neuron import place
from spikedsl.runtime import reference

LIF = """
neuron LIF {
    param tau_mem = 10 ms
    param v_th    = 1.0
    param v_reset = 0.0
    param r       = 1.0
    param t_ref   = 0 ms
    state v = 0.0
    input I
    dv/dt = (v_reset - v + r * I) / tau_mem   method exact
    spike v >= v_th
    reset v = v_reset
    refractory t_ref
}
"""


def net_of(text: str, name: str | None = None) -> ir.LNetwork:
    return spikedsl.loads(text).network(name).ir


def lif_net(I: float, dt_ms: float, steps: int, t_ref_ms: float = 0.0, tau_ms=10.0):
    text = LIF + f"""
network N {{
    dt = {dt_ms} ms
    steps = {steps}
    input x[1] : direct
    layer h[1] = LIF(tau_mem = {tau_ms} ms, t_ref = {t_ref_ms} ms) <- one_to_one(x)
    output h
    output h.v
}}
"""
    net = net_of(text)
    x = np.full((steps, 1, 1), I)
    return net, reference.run(net, {"x": x}, record=["h.v_pre"])


# ------------------------------------------------------------------ LIF, analytic
@pytest.mark.parametrize("I", [1.2, 1.5, 2.0, 3.0, 5.0])
def test_lif_first_spike_is_the_analytic_crossing(I):
    dt = 0.01  # ms
    tau = 10.0
    _, out = lif_net(I, dt, 3000, tau_ms=tau)
    z = out["h"][:, 0, 0]
    t_star = tau * math.log(I / (I - 1.0))  # ms, r = v_th = 1
    n = int(np.nonzero(z)[0][0])
    t_first = (n + 1) * dt  # docs/semantics.md: a spike in step n is at (n + 1) dt
    # `exact` samples the continuous solution on the grid: the first grid time >= t*
    assert t_first == pytest.approx(math.ceil(t_star / dt - 1e-9) * dt, abs=1e-9)
    assert t_star <= t_first < t_star + dt
    # the membrane just before the spike is below threshold, the closed form holds
    v = out["h.v"][:, 0, 0]
    t = (np.arange(n) + 1) * dt
    np.testing.assert_allclose(v[:n], I * (1 - np.exp(-t / tau)), rtol=1e-12, atol=1e-13)
    assert out["h.v_pre"][n, 0, 0] >= 1.0 > v[n - 1]
    assert v[n] == 0.0  # hard reset


@pytest.mark.parametrize("I,t_ref", [(2.0, 0.0), (2.0, 2.0), (3.0, 3.5), (1.5, 1.0), (5.0, 0.25)])
def test_lif_spike_count_with_refractory_period(I, t_ref):
    dt, tau, steps = 0.1, 10.0, 1000
    _, out = lif_net(I, dt, steps, t_ref_ms=t_ref, tau_ms=tau)
    k = math.ceil(tau * math.log(I / (I - 1.0)) / dt - 1e-9)  # steps to threshold from rest
    R = math.ceil(t_ref / dt - 1e-9)  # refractory steps
    # spikes in steps k-1, k-1 + (k+R), ...: after a spike v is held at 0 for R steps
    expected = (steps - k) // (k + R) + 1
    z = out["h"][:, 0, 0]
    assert int(z.sum()) == expected
    idx = np.nonzero(z)[0]
    assert idx[0] == k - 1
    assert np.all(np.diff(idx) == k + R)
    # during the refractory steps v stays at the reset value
    if R:
        assert np.all(out["h.v"][idx[0]:idx[0] + R + 1, 0, 0] == 0.0)


def test_lif_spec_example_numbers():
    """A test block's case: I = 2, tau = 10 ms, dt = 0.1 ms, 2 ms refractory, 50 ms."""
    _, out = lif_net(2.0, 0.1, 500, t_ref_ms=2.0)
    times = (np.nonzero(out["h"][:, 0, 0])[0] + 1) * 0.1
    np.testing.assert_allclose(times, [7.0, 16.0, 25.0, 34.0, 43.0])
    assert out["h.v"][29, 0, 0] == pytest.approx(2 * (1 - math.exp(-0.3)), abs=1e-12)


# ------------------------------------------------------------------ linear ODE, closed form
LINEAR = """
neuron Cascade {
    param tau1 = 5 ms
    param tau2 = 20 ms
    state x = 0.0
    state y = 0.5
    input I
    dx/dt = (I - x) / tau1
    dy/dt = (x - y) / tau2
}
network N {
    dt = 0.1 ms
    steps = 400
    input u[1] : direct
    layer c[1] = Cascade <- one_to_one(u)
    output c.x
    output c.y
}
"""


def test_linear_ode_exact_step_matches_the_closed_form():
    net = net_of(LINEAR)
    assert net.layer("c").neuron.method == "exact"
    I, t1, t2, y0 = 1.5, 5.0, 20.0, 0.5
    out = reference.run(net, {"u": np.full((400, 1, 1), I)})
    t = (np.arange(400) + 1) * 0.1  # ms, state after step n at (n+1) dt
    x = I * (1 - np.exp(-t / t1))
    # y' = (x - y)/t2 with x(t) above, y(0) = y0:
    y = I * (1 - (t2 * np.exp(-t / t2) - t1 * np.exp(-t / t1)) / (t2 - t1)) \
        + y0 * np.exp(-t / t2)
    np.testing.assert_allclose(out["c.x"][:, 0, 0], x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["c.y"][:, 0, 0], y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method,order", [("euler", 1), ("rk2", 2), ("rk4", 4)])
def test_explicit_methods_converge_with_their_order(method, order):
    text = """
neuron D {
    param tau = 10 ms
    state v = 1.0
    input I
    dv/dt = -v / tau   method %s
}
network N {
    dt = %s ms
    steps = %d
    input u[1] : direct
    layer c[1] = D <- one_to_one(u)
    output c.v
}
"""
    errs = []
    for dt, steps in ((1.0, 20), (0.5, 40)):
        net = net_of(text % (method, dt, steps))
        out = reference.run(net, {"u": np.zeros((steps, 1, 1))})
        errs.append(abs(out["c.v"][-1, 0, 0] - math.exp(-2.0)))
    assert math.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.25)


# ------------------------------------------------------------------ Izhikevich
IZH_PARAMS = {"IzhikevichRS": (0.02, 0.2, -65.0, 8.0), "IzhikevichFS": (0.1, 0.2, -65.0, 2.0)}


def izhikevich_direct(a, b, c, d, I, dt, steps):
    """Izhikevich (2003) in mV and ms, forward Euler on both states from the
    old values, spike at v >= 30 mV, then v = c, u += d."""
    v, u = -65.0, b * -65.0
    spikes = []
    for n in range(steps):
        dv = 0.04 * v * v + 5.0 * v + 140.0 - u + I[n]
        du = a * (b * v - u)
        v, u = v + dt * dv, u + dt * du
        if v >= 30.0:
            spikes.append(n)
            v, u = c, u + d
    return spikes


def izhikevich_direct_si(a, b, c, d, I, dt, steps):
    """The same in volts and seconds, with the operations in the order of the
    spec's equations (so float64 rounding is identical: the model is chaotic
    enough that a rounding difference moves a late spike by one step)."""
    k2, k1, k0, t_unit, mV = 0.04 / 1e-3, 5.0, 140e-3, 1e-3, 1e-3
    v, u = -65 * mV, b * (-65 * mV)
    spikes = []
    for n in range(steps):
        kv = (k2 * v ** 2 + k1 * v + k0 - u + I[n]) / t_unit
        ku = a * (b * v - u) / t_unit
        v, u = v + dt * kv, u + dt * ku
        if v - 30 * mV >= 0:
            spikes.append(n)
            v, u = c * mV, u + d * mV
    return spikes


@pytest.mark.parametrize("name", sorted(IZH_PARAMS))
def test_izhikevich_presets_match_a_direct_implementation(name, specs_dir):
    prog = spikedsl.load(specs_dir / "neurons" / "izhikevich.spk")
    neuron = prog.neuron(name)
    a, b, c, d = IZH_PARAMS[name]
    assert neuron.param("a").value == a and neuron.param("d").value == pytest.approx(d * 1e-3)
    dt, steps = 0.1, 5000  # 500 ms; step drive of 10 mV from 50 ms to 450 ms
    I = np.zeros(steps)
    I[500:4500] = 10.0
    want = izhikevich_direct_si(a, b, c, d, I * 1e-3, dt * 1e-3, steps)
    in_mv = izhikevich_direct(a, b, c, d, I, dt, steps)
    assert abs(len(in_mv) - len(want)) <= 1 and in_mv[:20] == want[:20]
    net = ir.LNetwork(
        name="izh", dt=1e-4, dt_unit="ms", steps=steps,
        layers=(ir.LLayer(name="x", kind="input", shape=(1,), encoder="direct"),
                ir.LLayer(name="n", kind="neuron", shape=(1,), neuron=place(neuron, 1e-4),
                          states=tuple(neuron.state_names),
                          projections=(ir.LProjection(kind="one_to_one", source="x",
                                                      target_input="I", in_shape=(1,),
                                                      out_shape=(1,), param_name="n"),))),
        outputs=(ir.LOutput(name="n", layer="n", shape=(1,)),))
    out = reference.run(net, {"x": (I * 1e-3)[:, None, None]})  # volts
    got = list(np.nonzero(out["n"][:, 0, 0])[0])
    assert got == want
    # regular spiking adapts (longer intervals), fast spiking fires much more
    assert len(want) > 5
    if name == "IzhikevichRS":
        isi = np.diff(want)
        assert isi[-1] > isi[0]


@pytest.fixture
def specs_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "specs"


# ------------------------------------------------------------------ step semantics
DIS = """
neuron Acc {
    param th = 1.0
    state v = 0.0
    input I
    update v = v + I
    spike v >= th
    reset v = 0
}
neuron Two {
    state v = 0.0
    state u = 0.0
    input I
    update v = v + I
    update u = u + 0.5
    spike v >= 1
    reset v = u; u += 10
    refractory 2
}
"""


def test_reset_statements_run_in_order_and_refractory_holds_only_reset_states():
    net = net_of(DIS + """
network N {
    steps = 8
    input x[1] : direct
    layer h[1] = Two <- one_to_one(x)
    output h
    output h.v
    output h.u
    output h.v_pre
}
""")
    out = reference.run(net, {"x": np.full((8, 1, 1), 0.6)})
    z = out["h"][:, 0, 0]
    # step 0: v=0.6; step 1: v=1.2 -> spike; reset v = u (=1.0, after its update), u += 10
    assert list(z) == [0, 1, 0, 0, 1, 0, 0, 1]
    assert out["h.v_pre"][1, 0, 0] == pytest.approx(1.2)
    assert out["h.v"][1, 0, 0] == pytest.approx(1.0)
    assert out["h.u"][1, 0, 0] == pytest.approx(11.0)
    # steps 2, 3 refractory: input ignored and the reset states v, u held
    assert out["h.v"][2, 0, 0] == pytest.approx(1.0) and out["h.v"][3, 0, 0] == pytest.approx(1.0)
    assert out["h.u"][3, 0, 0] == pytest.approx(11.0)
    # step 4: integrates again, v = 1.6 >= 1 -> spike
    assert out["h.v_pre"][4, 0, 0] == pytest.approx(1.6)


def test_feed_forward_same_step_recurrent_and_delay_read_earlier_steps():
    net = net_of(DIS + """
network N {
    steps = 6
    input x[1] : direct
    layer a[1] = Acc <- one_to_one(x)
    layer b[1] = Acc <- one_to_one(a)
    layer c[1] = Acc <- one_to_one(a, delay = 2)
    layer d[1] = Acc <- one_to_one(x) + one_to_one(d, weight = 1.0)
    output a
    output b
    output c
    output d
}
""")
    x = np.zeros((6, 1, 1))
    x[1] = 1.0
    out = reference.run(net, {"x": x})
    assert list(out["a"][:, 0, 0]) == [0, 1, 0, 0, 0, 0]
    assert list(out["b"][:, 0, 0]) == [0, 1, 0, 0, 0, 0]  # same step
    assert list(out["c"][:, 0, 0]) == [0, 0, 0, 1, 0, 0]  # two steps later
    # d spikes at 1, then its own spike of step n-1 drives it again at step n
    assert list(out["d"][:, 0, 0]) == [0, 1, 1, 1, 1, 1]


def naive_conv(x, w, b, s, p):
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xp = np.zeros((B, C, H + 2 * p, W + 2 * p))
    xp[:, :, p:p + H, p:p + W] = x
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    y = np.zeros((B, O, Ho, Wo))
    for bb in range(B):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    y[bb, o, i, j] = np.sum(xp[bb, :, i * s:i * s + kh, j * s:j * s + kw]
                                            * w[o]) + b[o]
    return y


def test_conv_pool_flatten_dense_against_naive_loops():
    net = net_of("""
network N {
    steps = 3
    input x[2, 7, 7] : direct
    layer c = conv2d(x, channels = 3, kernel = 3, stride = 2, padding = 1)
    layer pa = avgpool2d(c, 2)
    layer pm = maxpool2d(c, 2)
    layer ps = sumpool2d(c, kernel = 2, stride = 1)
    layer f = flatten(ps)
    layer y[5] = dense(f)
    output c
    output pa
    output pm
    output ps
    output y
}
""")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 2, 7, 7))
    w = reference.init_weights(net, seed=3)
    out = reference.run(net, {"x": x}, weights=w)
    for n in range(3):
        c = naive_conv(x[n], w["c.weight"], w["c.bias"], 2, 1)
        np.testing.assert_allclose(out["c"][n], c, atol=1e-12)
        for name, red, k, s in (("pa", np.mean, 2, 2), ("pm", np.max, 2, 2), ("ps", np.sum, 2, 1)):
            Ho = (c.shape[2] - k) // s + 1
            want = np.array([[[[red(c[b, o, i * s:i * s + k, j * s:j * s + k]) for j in range(Ho)]
                               for i in range(Ho)] for o in range(3)] for b in range(2)])
            np.testing.assert_allclose(out[name][n], want, atol=1e-12)
        ps = out["ps"][n].reshape(2, -1)
        np.testing.assert_allclose(out["y"][n], ps @ w["y.weight"].T + w["y.bias"], atol=1e-12)


def test_sign_sparse_and_one_to_one_weights():
    net = net_of(DIS + """
network N {
    steps = 1
    input x[4] : direct
    layer e[4] = dense(x, sign = inhibitory, bias = false)
    layer s[3] = Acc <- sparse(x, p = 0.5, weight = 2.0, seed = 7)
    output e
    output s.v_pre
}
""")
    w = {"e.weight": np.arange(-8, 8, dtype=float).reshape(4, 4)}
    x = np.ones((1, 1, 4))
    out = reference.run(net, {"x": x}, weights=w)
    np.testing.assert_allclose(out["e"][0, 0], -np.abs(w["e.weight"]).sum(1))
    mask = np.random.default_rng(7).random((3, 4)) < 0.5
    np.testing.assert_allclose(out["s.v_pre"][0, 0], 2.0 * mask.sum(1))


def test_output_reductions_and_float32():
    net = net_of(DIS + """
network N {
    steps = 5
    input x[2] : direct
    layer h[2] = Acc <- one_to_one(x)
    output sum(h)
    output mean(h.v)
    output last(h.v_pre)
}
""")
    x = np.full((5, 3, 2), 0.5)
    out = reference.run(net, {"x": x})
    assert out["sum(h)"].shape == (3, 2) and np.all(out["sum(h)"] == 2)
    np.testing.assert_allclose(out["mean(h.v)"], np.full((3, 2), (0.5 + 0 + 0.5 + 0 + 0.5) / 5))
    np.testing.assert_allclose(out["last(h.v_pre)"], 0.5)
    out32 = reference.run(net, {"x": x}, dtype=np.float32)
    assert out32["sum(h)"].dtype == np.float32


def test_encoders():
    net = net_of("""
network N {
    steps = 2000
    input p[3] : poisson(max_rate = 0.5, seed = 4)
    input l[4] : latency(tau = 5, threshold = 0.01)
    layer a = flatten(p)
    layer b = flatten(l)
    output a
    output b
}
""")
    pl, ll = net.layer("p"), net.layer("l")
    x = np.array([[0.2, 0.6, 4.0]])
    s1 = reference.encode(pl, x, 2000)
    s2 = reference.encode(pl, x, 2000)
    np.testing.assert_array_equal(s1, s2)  # seeded
    np.testing.assert_allclose(s1.mean(0)[0], [0.1, 0.3, 1.0], atol=0.03)
    d = np.array([[0.05, 0.3, 0.7, 1.0]])
    lat = reference.encode(ll, d, 20)
    assert lat.shape == (20, 1, 4) and np.all(lat.sum(0) == 1)
    torch = pytest.importorskip("torch")
    spikegen = pytest.importorskip("snntorch.spikegen")
    for normalize in (0.0, 1.0):
        for linear in (0.0, 1.0):
            lay = ll.model_copy(update={"encoder_args": {"tau": 5.0, "threshold": 0.01,
                                                         "normalize": normalize,
                                                         "linear": linear}})
            want = spikegen.latency(torch.tensor(d, dtype=torch.float64), num_steps=20, tau=5.0,
                                    threshold=0.01, normalize=bool(normalize),
                                    linear=bool(linear), bypass=True).numpy()
            np.testing.assert_array_equal(reference.encode(lay, d, 20), want)
    # already-encoded inputs pass through; [B, ...] data is encoded for net.steps
    out = reference.run(net, {"p": s1, "l": d})
    np.testing.assert_array_equal(out["a"], s1)
    assert out["b"].shape == (2000, 1, 4)


def test_batchnorm_and_dropout_in_eval_mode():
    net = net_of("""
network N {
    steps = 2
    input x[2, 3, 3] : direct
    layer bn = batchnorm(x)
    layer dr = dropout(bn, p = 0.5)
    output dr
}
""")
    w = {"bn.weight": np.array([2.0, 3.0]), "bn.bias": np.array([0.5, -1.0]),
         "bn.running_mean": np.array([1.0, -1.0]), "bn.running_var": np.array([4.0, 0.25])}
    x = np.random.default_rng(0).normal(size=(2, 1, 2, 3, 3))
    out = reference.run(net, {"x": x}, weights=w)
    sh = (1, 2, 1, 1)
    want = (x - w["bn.running_mean"].reshape(sh)) / np.sqrt(w["bn.running_var"].reshape(sh)
                                                            + 1e-5) * w["bn.weight"].reshape(sh) \
        + w["bn.bias"].reshape(sh)
    np.testing.assert_allclose(out["dr"], want, atol=1e-12)


def test_weight_names_follow_the_weights_file_convention():
    net = net_of(LIF.replace("param tau_mem = 10 ms", "param tau_mem = 10 ms [trainable, "
                             "per_neuron(uniform(5 ms, 15 ms))]") + """
network N {
    dt = 1 ms
    steps = 2
    input x[3] : direct
    layer h[4] = LIF <- dense(x) + dense(h, bias = false)
    layer y[2] = LIF <- dense(h)
    output y
}
""")
    shapes = reference.weight_shapes(net)
    assert shapes["h.x.weight"] == (4, 3) and shapes["h.x.bias"] == (4,)
    assert shapes["h.h.weight"] == (4, 4) and "h.h.bias" not in shapes
    assert shapes["y.weight"] == (2, 4) and shapes["h.tau_mem"] == (4,)
    w = reference.init_weights(net, seed=1)
    assert set(w) == set(shapes)
    assert np.all((w["h.tau_mem"] >= 5e-3) & (w["h.tau_mem"] <= 15e-3))
    w2 = reference.init_weights(net, seed=1)
    assert all(np.array_equal(w[k], w2[k]) for k in w)


PLASTIC = DIS + """
synapse Count {
    param a = 1.0
    state pre = 0
    state post = 0
    param tau = 1.4426950408889634   # 1 / ln 2: pre halves every step
    dpre/dt = -pre / tau
    on_pre { pre += a; w = w + 0.1 }
    on_post { post += 1; w = w + pre }
}
network N {
    steps = 4
    input x[1] : spikes
    layer h[1] = Acc(th = 0.5) <- one_to_one(x, weight = 0.2)
    output h
    output h.v_pre
    plasticity Count on x -> h
}
"""


def test_plasticity_order_within_a_step():
    """docs/semantics.md: 1. rule dynamics, 2. transmission with the old weight
    then on_pre, 3. the layer's step, 4. on_post."""
    net = net_of(PLASTIC)
    x = np.array([1.0, 0.0, 1.0, 1.0]).reshape(4, 1, 1)
    out = reference.run(net, {"x": x}, record=["h.weight"])
    w = out["h.weight"][:, 0, 0, 0]
    v = out["h.v_pre"][:, 0, 0]
    # step 0: transmits 0.2 (v = 0.2 < 0.5), then on_pre: pre = 1, w = 0.3
    assert v[0] == pytest.approx(0.2) and w[0] == pytest.approx(0.3)
    # step 1: pre decays to 0.5, no spikes
    assert v[1] == pytest.approx(0.2) and w[1] == pytest.approx(0.3)
    # step 2: pre = 0.25; transmits 0.3: v = 0.5 -> spike; on_pre (pre = 1.25, w = 0.4)
    # before on_post (w = 0.4 + 1.25 = 1.65)
    assert v[2] == pytest.approx(0.5) and out["h"][2, 0, 0] == 1
    assert w[2] == pytest.approx(1.65)
    # step 3: transmits 1.65
    assert v[3] == pytest.approx(1.65)


def test_plasticity_on_numpy_equals_torch(specs_dir):
    """The liquid state machine with STDP: the same run on numpy and on torch."""
    torch = pytest.importorskip("torch")
    from spikedsl.runtime.verify import make_inputs

    net = spikedsl.load(specs_dir / "networks" / "lsm_stdp.spk").network(
        "LiquidStateMachine").ir.model_copy(update={"steps": 40})
    w = reference.init_weights(net, seed=0)
    x = make_inputs(net, 40, 2, seed=0)
    key = f"{net.plasticity[0].projection}.weight"
    rec = ["reservoir", "inhib", "reservoir.v", key]
    a = reference.run(net, x, weights=w, record=rec)
    b = reference.run(net, x, weights=w, record=rec, xp=torch)
    assert a["reservoir"].mean() > 0.01
    for k in rec + ["readout.v"]:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12)
    assert not np.allclose(a[key][0], a[key][-1])  # the weights did learn


def test_input_errors_are_clear():
    net = net_of(DIS + """
network N {
    steps = 2
    input x[2] : direct
    layer h[2] = Acc <- one_to_one(x)
    output h
}
""")
    with pytest.raises(ValueError, match="missing input 'x'"):
        reference.run(net, {})
    with pytest.raises(ValueError, match="expects \\[2\\]"):
        reference.run(net, {"x": np.zeros((2, 1, 3))})
    out = reference.run(net, np.ones((4, 1, 2)))  # one array for the single input, T from it
    assert out["h"].shape == (4, 1, 2)


def test_cells_match_snntorch():
    torch = pytest.importorskip("torch")
    snn = pytest.importorskip("snntorch")
    net = net_of("""
network N {
    steps = 6
    input x[2, 5, 5] : direct
    input u[4] : direct
    layer c = sconv_lstm(x, channels = 3, kernel = 3, threshold = 0.05)
    layer s = slstm(u, hidden = 4, threshold = 0.05)
    output c
    output s
    output c.mem
    output s.syn
}
""")
    w = reference.init_weights(net, seed=2)
    # snnTorch 1.0's SLSTM.forward zeroes its state whenever the state's shape
    # differs from the *input's* shape, so compare with in_features == hidden
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 2, 5, 5))
    u = rng.normal(size=(6, 3, 4))
    out = reference.run(net, {"x": x, "u": u}, weights=w)
    conv = snn.SConv2dLSTM(2, 3, 3, threshold=0.05).double()
    lstm = snn.SLSTM(4, 4, threshold=0.05).double()
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor(w["c.weight"]))
        conv.conv.bias.copy_(torch.tensor(w["c.bias"]))
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm.lstm_cell, k).copy_(torch.tensor(w[f"s.{k}"]))
        syn_c = mem_c = torch.zeros((3, 3, 5, 5), dtype=torch.float64)
        syn_s = mem_s = torch.zeros((3, 4), dtype=torch.float64)
        for n in range(6):
            xt = torch.tensor(x[n])
            spk_c, syn_c, mem_c = conv(xt, syn_c, mem_c)
            spk_s, syn_s, mem_s = lstm(torch.tensor(u[n]), syn_s, mem_s)
            np.testing.assert_allclose(out["c.mem"][n], mem_c.numpy(), atol=1e-12)
            np.testing.assert_array_equal(out["c"][n], spk_c.numpy())
            np.testing.assert_allclose(out["s.syn"][n], syn_s.numpy(), atol=1e-12)
            np.testing.assert_array_equal(out["s"][n], spk_s.numpy())
    assert 0 < out["c"].mean() < 1 and 0 < out["s"].mean() < 1
