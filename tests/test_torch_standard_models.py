"""The torch target on the constructs of the standard models (jumps, the
refractory clamp with inputs kept and the refractory step, ODEs mixed with
update, compound spike conditions, exponential Euler with exprel, networks
without inputs): the fused scan (fast path), the step path and the reference
interpreter agree (float64, 1e-12 of each trace's scale, identical spikes),
and the gradients agree with finite differences where the step is smooth
and with the step path's autograd (the definition) for surrogates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers.models import cuba_small

import spikedsl
from spikedsl.errors import Unsupported
from spikedsl.lowering import refractory
from spikedsl.runtime import reference
from spikedsl.targets.torch import NetGen, _load_class, build, run
from spikedsl.targets.torch.neuron import MAX_ANALYTIC_SIZE, analytic_size, make_plan

ROOT = Path(__file__).parents[1]
NEST = ROOT / "specs" / "neurons" / "nest.spk"
HH = ROOT / "specs" / "neurons" / "hh_brian2.spk"
F64 = torch.float64


def net_of(text: str, name: str = "Net"):
    return spikedsl.loads(text, file=str(ROOT / "tests" / "models.spk")).network(name).ir


def fused(net, layer: str) -> bool:
    """Whether the layer runs as a fused scan on the fast path."""
    n = net.layer(layer).neuron
    tp = {p.name for p in n.params if p.trainable or p.per_neuron}
    return analytic_size(make_plan(n, n.dt, tp, "scan")) <= \
        MAX_ANALYTIC_SIZE


def three_way(net, inputs, record, weights=None) -> dict[str, float]:
    """Reference, torch fast path and torch step path on the same inputs:
    identical spikes, states within 1e-12 of each trace's scale.  Returns the
    largest difference of every trace (relative to its scale)."""
    ref = reference.run(net, inputs, record=record, weights=weights)
    out = {}
    for fast in (True, False):
        got = run(net, inputs, record=record, weights=weights, fast=fast)
        for k in record:
            a, b = got[k], ref[k]
            assert a.shape == b.shape, k
            if "." not in k:  # spikes
                np.testing.assert_array_equal(a, b, err_msg=f"{k} (fast={fast})")
                continue
            scale = max(float(np.max(np.abs(b))), 1e-300)
            d = float(np.max(np.abs(a - b))) / scale
            assert d <= 1e-12, f"{k} (fast={fast}): {d:.3g} of {scale:.3g}"
            out[f"{k}@{'fast' if fast else 'step'}"] = d
    return out


def functional(net):
    """The module with the scans written for torch.compile (plain tensor
    code), run without compiling: the code path of ``compile=True``."""
    src = NetGen(net, fast=True, compiled=True).render()
    lines = [ln for ln in src.splitlines() if " = torch.compile(" not in ln]
    assert len(lines) < len(src.splitlines())
    return _load_class("\n".join(lines) + "\n", net.name)(dtype=F64)


def loss_of(out: dict) -> torch.Tensor:
    loss = 0
    for v in out.values():
        w = torch.linspace(0.3, 1.7, v.numel(), dtype=F64).reshape(v.shape)
        loss = loss + (v * w).sum() + 0.1 * (v * v * w).sum()
    return loss


def grads(m, x: dict) -> tuple[dict, dict]:
    """Outputs and the gradients of loss_of(outputs) for inputs and parameters."""
    xx = {k: v.clone().requires_grad_() for k, v in x.items()}
    out = m(xx)
    loss_of(out).backward()
    g = {k: v.grad for k, v in xx.items()}
    g.update({k: p.grad for k, p in m.named_parameters()})
    return out, g


def assert_same_grads(g1: dict, g2: dict, rtol: float = 1e-10) -> float:
    """Equal gradients (None counts as 0); returns the largest relative difference."""
    worst = 0.0
    assert set(g1) == set(g2)
    for k in g1:
        a = g1[k] if g1[k] is not None else torch.zeros(())
        b = g2[k] if g2[k] is not None else torch.zeros(())
        scale = max(float(a.abs().max()), float(b.abs().max()), 1e-300)
        d = float((a - b).abs().max()) / scale
        assert d <= rtol, f"{k}: {d:.3g}"
        worst = max(worst, d)
    return worst


def fast_step_grads(net, x: dict, weights=None) -> tuple[dict, dict, float]:
    """Gradients of the fused scan and of the step path's autograd (equal)."""
    res = []
    for fast in (True, False):
        m = build(net, dtype=F64, fast=fast, weights=weights)
        res.append(grads(m, x))
    (o1, g1), (o2, g2) = res
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], rtol=0, atol=1e-12)
    return o1, g1, assert_same_grads(g1, g2)


def central_difference(f, value: float, h: float) -> float:
    return (f(value + h) - f(value - h)) / (2 * h)


# ---------------------------------------------------------------- iaf_psc_exp
PSC_STEPS = 300
PSC_INPUT = [20, 40, 55, 58, 61, 66, 72, 78, 150]  # 58..72 arrive while refractory


def psc_net():
    return net_of(f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = {PSC_STEPS}
    input  s[1] : spikes
    layer  n[1] = iaf_psc_exp(I_e = 300 pA) <- one_to_one(s, weight = 1000 pA) -> S_ex
    output n
    output n.V_m
}}
""")


def test_iaf_psc_exp_with_input_spikes_during_refractory():
    from test_standard_models import psc_exp_closed_form

    net = psc_net()
    assert fused(net, "n")
    x = np.zeros((PSC_STEPS, 1, 1))
    x[PSC_INPUT, 0, 0] = 1.0
    three_way(net, x, ["n", "n.V_m", "n.I_syn_ex"])
    v, z = psc_exp_closed_form()
    for fast in (True, False):
        out = run(net, x, fast=fast)
        np.testing.assert_array_equal(np.nonzero(out["n"][:, 0, 0])[0], [56, 90, 193])
        np.testing.assert_array_equal(out["n"][:, 0, 0], z)
        assert np.max(np.abs(out["n.V_m"][:, 0, 0] - v)) < 1e-12  # volts


# ---------------------------------------------------------------- aeif_cond_exp
def test_aeif_cond_exp_adaptation_runs_while_the_membrane_is_clamped():
    net = net_of(f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = 400
    input  s[2] : spikes
    layer  n[2] = aeif_cond_exp(t_ref = 2 ms, I_e = 1500 pA, V_peak = -40 mV)
                  <- one_to_one(s, weight = 5 nS) -> S_ex
    output n
}}
""")
    x = np.zeros((400, 1, 2))
    x[::7, 0, 1] = 1.0
    rec = ["n", "n.V_m", "n.w", "n.w_pre", "n.g_ex"]
    three_way(net, x, rec)
    out = run(net, x, record=rec)
    z, v, w, w_pre = (out[k][:, 0, 0] for k in ("n", "n.V_m", "n.w", "n.w_pre"))
    spikes = np.nonzero(z)[0]
    assert len(spikes) == 5 and out["n"][:, 0, 1].sum() == 5
    R = 20
    for k in spikes:
        assert w[k] - w_pre[k] == pytest.approx(80.5e-12, rel=1e-12)  # w += b
        assert v[k] == pytest.approx(-60e-3, rel=1e-15)
        np.testing.assert_array_equal(v[k:k + R + 1], v[k])  # clamped: reset + R steps
        assert v[k + R + 1] != v[k]
        assert np.all(np.diff(w[k:k + R + 1]) != 0)  # w keeps evolving
    assert np.all(np.diff(np.diff(spikes)) > 0)  # adaptation: growing intervals
    assert np.all(np.nonzero(out["n"][:, 0, 1])[0] < spikes)  # excitatory input: earlier


# ---------------------------------------------------------------- mixed ODE + update
MIXED = """
neuron Counted {
    param tau  = 10  [trainable]
    param v_th = 1.0 [trainable]
    state v  = 0
    state rc = 0
    input I
    dv/dt = (I - v) / tau  method euler
    update rc = max(rc - 1, 0)
    spike v >= v_th and rc == 0
    reset rc = 3
}
network Net {
    dt    = 1
    steps = 30
    input  x[3] : direct
    layer  n[3] = Counted <- dense(x)
    output n
    output n.v
    output n.rc
}
"""


def test_mixed_ode_and_update_with_a_guard():
    net = net_of(MIXED)
    assert fused(net, "n")
    w = {"n.weight": np.eye(3) * 20.0, "n.bias": np.zeros(3)}
    x = np.broadcast_to(np.array([1.0, 0.06, 0.04]), (30, 2, 3)).copy()
    three_way(net, x, ["n", "n.v", "n.rc"], weights=w)
    z = run(net, x, weights=w)["n"][:, 0]
    np.testing.assert_array_equal(np.nonzero(z[:, 0])[0], [0, 3, 6, 9, 12, 15, 18, 21, 24, 27])
    assert 0 < z[:, 1].sum() < 10 and z[:, 2].sum() == 0
    _, g, _ = fast_step_grads(net, {"x": torch.as_tensor(x)}, weights=w)
    assert g["n.v_th"].abs() > 0 and g["n.tau"].abs() > 0


# ---------------------------------------------------------------- compound conditions
EITHER = """
neuron Either {
    param tau = 5 ms [trainable]
    param th  = 1.0  [trainable]
    state v = 0
    state u = 0
    state c = 0
    input I
    input J
    dv/dt = (I - v) / tau    method exact
    du/dt = (J - u) / (8 ms) method exact
    update c = max(c - 1, 0)
    spike v >= th and u > 0.2 or u >= 1.5 and c == 0
    reset v = 0; u -= 0.5; c = 3
    refractory 1 ms [clamp v]
    surrogate fast_sigmoid(slope = 10)
}
network Net {
    dt    = 0.5 ms
    steps = 60
    input  x[4] : direct
    input  y[4] : direct
    layer  e[4] = Either <- dense(x) -> I + dense(y) -> J
    output e
    output e.v
    output e.u
}
"""


def either_data():
    w = {"e.x.weight": np.diag([3.0, 3.0, 0.2, 0.0]), "e.x.bias": np.zeros(4),
         "e.y.weight": np.diag([1.0, 0.0, 4.0, 4.0]), "e.y.bias": np.zeros(4)}
    x = {"x": np.full((60, 2, 4), 1.0), "y": np.full((60, 2, 4), 1.0)}
    x["y"][:, 1] = 0.5
    return w, x


def test_compound_and_or_condition():
    net = net_of(EITHER)
    assert fused(net, "e")
    w, x = either_data()
    three_way(net, x, ["e", "e.v", "e.u", "e.c"], weights=w)
    z = run(net, x, weights=w)["e"][:, 0]
    # neuron 0 spikes through `v >= th and u > 0.2`, neurons 2 and 3 through
    # `u >= 1.5 and c == 0` (v stays below th), neuron 1 never (u = 0)
    assert z[:, 0].sum() > 0 and z[:, 1].sum() == 0 and z[:, 2].sum() > 0 and z[:, 3].sum() > 0
    out = run(net, x, weights=w, record=["e.v"])
    assert out["e.v"][:, 0, 2].max() < 1.0
    tx = {k: torch.as_tensor(v) for k, v in x.items()}
    _, g, _ = fast_step_grads(net, tx, weights=w)
    assert g["e.th"].abs() > 0 and g["e.x.weight"].abs().max() > 0


def test_compound_surrogate_is_the_product_rule():
    """One step: z = H(a)·H(b) or H(a) + H(c) − H(a)·H(c); the gradient of z
    with respect to each input is the surrogate of its leaf times the partial
    derivative of the combination (guards have none)."""
    text = """
neuron Two {
    state a = 0
    state b = 0
    state c = 0
    input A
    input B
    input C
    update a = A; b = B; c = C
    spike a >= 0.5 and b > 0.2 or c >= 1 and b != 7
    surrogate sigmoid(slope = 4)
}
network Net {
    steps = 1
    input xa[64] : direct
    input xb[64] : direct
    input xc[64] : direct
    layer n[64] = Two <- one_to_one(xa) -> A + one_to_one(xb) -> B + one_to_one(xc) -> C
    output n
}
"""
    net = net_of(text)
    g = torch.Generator().manual_seed(4)
    x = {k: (torch.rand((1, 1, 64), generator=g, dtype=F64) * 2 - 0.3) for k in ("xa", "xb", "xc")}
    x["xb"][0, 0, :8] = 7.0  # the guard b != 7 is false there
    a, b, c = x["xa"], x["xb"], x["xc"]

    def d(v, k=4.0):
        s = torch.sigmoid(k * v)
        return k * s * (1 - s)

    Ha, Hb, Hc = (a >= 0.5).to(F64), (b > 0.2).to(F64), (c >= 1).to(F64)
    G = (b != 7).to(F64)
    P, Q = Ha * Hb, Hc * G
    z = P + Q - P * Q
    want = {"xa": d(a - 0.5) * Hb * (1 - Q), "xb": d(b - 0.2) * Ha * (1 - Q),
            "xc": d(c - 1) * G * (1 - P)}
    for fast in (True, False):
        m = build(net, dtype=F64, fast=fast)
        assert fused(net, "n")
        xx = {k: v.clone().requires_grad_() for k, v in x.items()}
        out = m(xx)["n"]
        assert torch.equal(out, z) and 0 < z.sum() < 64
        out.sum().backward()
        for k in want:
            torch.testing.assert_close(xx[k].grad, want[k], rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------- HH (exponential Euler)
def test_hh_with_exponential_euler_and_exprel():
    net = net_of(f"""
import "{HH}"
network Net {{
    dt    = 0.05 ms
    steps = 200
    input  x[4] : direct
    layer  n[4] = HHTraub <- one_to_one(x, weight = 1 nA)
    output n
    output n.v
}}
""")
    x = np.broadcast_to(np.array([0.0, 0.2, 0.7, 1.5]), (200, 1, 4)).copy()
    three_way(net, x, ["n", "n.v", "n.m", "n.n", "n.h"])
    z = run(net, x)["n"][:, 0]
    assert z[:, 0].sum() == 0 and z[:, 3].sum() >= 2


EE = """
neuron EE {
    param tau = 5 ms [trainable]
    param k   = 0.5  [trainable]
    state v = -60 mV
    state m = 0.1
    input I : mV
    dv/dt = (I - v) / tau  method exponential_euler
    dm/dt = (k * exprel(-v / (10 mV)) * (1 - m) - exp(v / (20 mV)) * m) / ms  method exponential_euler
    spike v > -40 mV and m > 0.3
    reset detach v = -60 mV
    refractory 1 ms
    surrogate atan(alpha = 2)
}
network Net {
    dt    = 0.1 ms
    steps = 150
    input  x[3] : direct
    layer  q[3] = EE <- one_to_one(x, weight = 1 mV) -> I
    output q
    output q.v
    output q.m_pre
}
"""


def test_exponential_euler_in_the_fused_scan():
    net = net_of(EE)
    assert net.layer("q").neuron.method == "exponential_euler" and fused(net, "q")
    x = np.broadcast_to(np.array([-50.0, -20.0, 10.0]), (150, 2, 3)).copy()
    three_way(net, x, ["q", "q.v", "q.m", "q.m_pre"])
    z = run(net, x)["q"][:, 0]
    assert z[:, 0].sum() == 0 and z[:, 2].sum() >= 2
    _, g, _ = fast_step_grads(net, {"x": torch.as_tensor(x)})
    assert g["q.k"].abs() > 0 and g["q.tau"].abs() > 0


def test_exponential_euler_gradient_equals_finite_differences():
    """d loss / d tau and d k through exprel, with the spike's reset detached
    and a loss on the states (no surrogate on this path)."""
    net = net_of(EE)
    x = torch.as_tensor(np.broadcast_to(np.array([-50.0, -20.0, 10.0]), (150, 1, 3)).copy())

    def loss(name: str, value: float | None = None, grad: bool = False):
        m = build(net, dtype=F64, fast=True)
        if value is not None:
            with torch.no_grad():
                getattr(m.q, name).fill_(value)
        out = m({"x": x})
        L = (out["q.v"] ** 2).sum() * 1e3 + out["q.m_pre"].sum()
        if grad:
            L.backward()
            return float(getattr(m.q, name).grad), out["q"]
        return L.item(), out["q"]

    for name, value in (("tau", 5e-3), ("k", 0.5)):
        g, z0 = loss(name, grad=True)
        h = value * 1e-6
        assert torch.equal(loss(name, value + h)[1], z0) and torch.equal(loss(name, value - h)[1], z0)
        fd = central_difference(lambda v, n=name: loss(n, v)[0], value, h)
        assert g == pytest.approx(fd, rel=1e-7), name


# ---------------------------------------------------------------- jumps: gradients
JUMPY = """
neuron Jumpy {
    param tau_m = 10 ms [trainable]
    param tau_s = 3 ms  [trainable]
    param tau_a = 30 ms [trainable]
    param gain  = 1.5   [trainable]
    param v_th  = 1.0
    state v = 0
    state i = 0
    state a = 0
    input S
    input D
    jump i += gain * S
    jump v += D
    dv/dt = (-v + i) / tau_m
    di/dt = -i / tau_s
    da/dt = (v - a) / tau_a
    spike v >= v_th
    reset detach v = 0
    refractory 2 ms
    surrogate sigmoid(slope = 4)
}
network Net {
    dt    = 0.5 ms
    steps = 60
    input  s[4] : spikes
    input  d[4] : spikes
    layer  j[3] = Jumpy <- dense(s) -> S + dense(d) -> D
    output j
    output j.v
    output j.a
}
"""


def jumpy_data(batch: int = 2):
    g = torch.Generator().manual_seed(7)
    x = {"s": (torch.rand((60, batch, 4), generator=g, dtype=F64) < 0.3).to(F64),
         "d": (torch.rand((60, batch, 4), generator=g, dtype=F64) < 0.2).to(F64)}
    w = {"j.s.weight": np.abs(reference.init_weights(net_of(JUMPY), 0)["j.s.weight"]) * 3,
         "j.d.weight": np.full((3, 4), 0.1)}
    return x, w


def test_jumps_and_the_refractory_step():
    net = net_of(JUMPY)
    n = net.layer("j").neuron
    assert n.refractory_steps == 4 and n.clamp == ("v",)
    assert {u.target for u in refractory.declared(n).refr_updates} == {"a"}  # i reads no v
    assert fused(net, "j")
    x, w = jumpy_data()
    xn = {k: v.numpy() for k, v in x.items()}
    three_way(net, xn, ["j", "j.v", "j.i", "j.a"], weights=w)
    out = run(net, xn, weights=w, record=["j.v", "j.i"])
    z, v = out["j"][:, 0, 0], out["j.v"][:, 0, 0]
    k = int(np.nonzero(z)[0][0])
    np.testing.assert_array_equal(v[k:k + 5], 0.0)  # D jumps on v are lost while refractory
    assert len(np.unique(out["j.i"][k:k + 5, 0, 0])) == 5  # i keeps decaying and jumping
    _, g, _ = fast_step_grads(net, x, weights=w)
    assert all(g[p].abs().max() > 0 for p in ("j.gain", "j.tau_a", "j.tau_s", "j.s.weight"))
    mf = functional(net)
    mf.load_weights(w)
    _, gf = grads(mf, x)
    _, gs = grads(build(net, dtype=F64, weights=w), x)
    assert_same_grads(gf, gs)


@pytest.mark.parametrize("param", ["j.gain", "j.s.weight", "j.tau_a", "j.tau_m"])
def test_jump_and_refractory_gradients_equal_finite_differences(param):
    """d loss / d gain, d W (the weight of the jumped input), d tau_a (the
    adaptation evolving toward the clamped membrane while refractory) and
    d tau_m: the reset is detached and the loss reads the states, so the
    derivative is the true one between spike-time changes."""
    net = net_of(JUMPY)
    x, w = jumpy_data(1)
    idx = (1, 2) if param == "j.s.weight" else ()

    def loss(delta: float = 0.0, grad: bool = False):
        m = build(net, dtype=F64, fast=True, weights=w)
        p = dict(m.named_parameters())[param]
        with torch.no_grad():
            p[idx] += delta
        out = m(x)
        L = (out["j.v"] ** 2).sum() + out["j.a"].sum()
        if grad:
            L.backward()
            return float(p.grad[idx]), out["j"]
        return L.item(), out["j"]

    g, z0 = loss(grad=True)
    value = dict(build(net, dtype=F64, weights=w).named_parameters())[param][idx].item()
    h = abs(value) * 1e-6
    assert z0.sum() >= 3
    assert torch.equal(loss(h)[1], z0) and torch.equal(loss(-h)[1], z0)
    fd = central_difference(lambda v: loss(v - value)[0], value, h)
    assert g == pytest.approx(fd, rel=1e-6)


def test_compiled_form_of_the_scans_equals_eager():
    """The functional scans (what compile=True compiles) on jumps, the
    refractory step and compound conditions."""
    for text, data in ((JUMPY, jumpy_data), (EITHER, either_data)):
        net = net_of(text)
        if text is JUMPY:
            x, w = data()
        else:
            w, xn = data()
            x = {k: torch.as_tensor(v) for k, v in xn.items()}
        mf = functional(net)
        mf.load_weights(w)
        o1, g1 = grads(mf, x)
        o2, g2 = grads(build(net, dtype=F64, weights=w), x)
        for k in o1:
            torch.testing.assert_close(o1[k], o2[k], rtol=0, atol=1e-13)
        assert_same_grads(g1, g2)


# ---------------------------------------------------------------- no input layer
AUTO_STEPS = 700
# Brian2's CUBA at reduced size (80 + 20 neurons): tests/helpers/models.py

def auto_net():
    return net_of(cuba_small(AUTO_STEPS), "CUBA")


def test_network_without_inputs_runs_for_its_steps():
    net = auto_net()
    assert not net.inputs
    rec = ["exc", "inh", "exc.v", "exc.ge", "inh.gi"]
    ref = reference.run(net, {}, record=rec)
    assert ref["exc"].shape == (AUTO_STEPS, 1, 80) and ref["exc"].sum() > 0
    assert ref["inh"].sum() > 0
    three_way(net, {}, rec)
    for fast in (True, False):
        m = build(net, dtype=F64, fast=fast)
        out = m()
        np.testing.assert_array_equal(out["exc"].numpy(), ref["exc"])
        np.testing.assert_array_equal(out["inh"].numpy(), ref["inh"])
    np.testing.assert_array_equal(run(net)["exc"], ref["exc"])


def test_simulate_runs_a_network_without_inputs(tmp_path, capsys):
    from spikedsl.cli import main

    net = auto_net()
    ref = reference.run(net, {})
    f = tmp_path / "auto.spk"
    f.write_text(cuba_small(AUTO_STEPS))
    assert main(["simulate", str(f), "-t", "torch"]) == 0
    text = capsys.readouterr().out
    assert "inputs: none" in text and "simulated 1 sample in" in text
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith(("exc", "inh"))}
    assert int(rows["exc"][2]) == int(ref["exc"].sum())
    assert int(rows["inh"][2]) == int(ref["inh"].sum())


# ---------------------------------------------------------------- Norse refuses
def test_norse_refuses_refractory_and_compound_spikes():
    norse = pytest.importorskip("spikedsl.targets.norse")
    with pytest.raises(Unsupported, match="it has 3 states|it has a refractory period"):
        norse.convert(psc_net())
    text = """
neuron N {
    param tau_mem = 10 ms
    state v = 0
    input S
    dv/dt = (S - v) / tau_mem
    spike v >= 1 and v < 5
    reset v = 0
}
network Net {
    dt = 1 ms
    steps = 5
    input x[2] : direct
    layer h[2] = N <- dense(x) -> S
    output h
}
"""
    with pytest.raises(Unsupported, match="joins comparisons with and/or"):
        norse.convert(net_of(text))
