"""The torch target (spikedsl/back/torch.py): generated code, step semantics,
fused scan vs plain autograd, parameters, encoders, state."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spikedsl
from spikedsl.targets.torch import build, convert, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F64 = torch.float64


def net_of(text: str, name: str = "Net"):
    return spikedsl.loads(text).network(name).ir


def spikes(shape, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=F64) < p).to(F64)


# ------------------------------------------------------------------ surrogates
SURROGATES = {
    "sigmoid(slope = 4)": lambda x: 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
    "fast_sigmoid(slope = 25)": lambda x: 1 / (1 + 25 * x.abs()) ** 2,
    "atan(alpha = 2)": lambda x: 1 / (1 + (math.pi / 2 * 2 * x) ** 2),
    "rectangular(width = 0.5)": lambda x: (x.abs() < 0.5).to(x.dtype) / (2 * 0.5),
    "rectangular(width = 0.25, scale = 1)": lambda x: (x.abs() < 0.25).to(x.dtype),
    "triangle(width = 1)": lambda x: torch.clamp(1 - x.abs() / 1.0, min=0) / 1.0,
    "ste": lambda x: torch.ones_like(x),
}


def surrogate_net(sur: str, op: str = ">="):
    return net_of(f"""
neuron N {{
    state v = 0
    input I
    update v = I
    spike v {op} 0.3
    surrogate {sur}
}}
network Net {{
    steps = 3
    input x[50] : spikes
    layer h[50] = N <- one_to_one(x)
    output h
}}""")


@pytest.mark.parametrize("sur", list(SURROGATES))
@pytest.mark.parametrize("fast", [True, False])
def test_surrogate_gradient_is_the_closed_form(sur, fast):
    m = build(surrogate_net(sur), dtype=F64, fast=fast)
    x = torch.linspace(-1.5, 2.0, 3 * 2 * 50, dtype=F64).reshape(3, 2, 50).requires_grad_()
    z = m(x)["h"]
    assert torch.equal(z, (x >= 0.3).to(F64))
    w = torch.linspace(0.5, 1.5, z.numel(), dtype=F64).reshape(z.shape)
    (z * w).sum().backward()
    expected = w * SURROGATES[sur](x.detach() - 0.3)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-14)


def test_strict_spike_condition():
    m = build(surrogate_net("ste", ">"), dtype=F64)
    x = torch.tensor([0.3, 0.30000001, 0.2], dtype=F64).reshape(1, 1, 3).expand(1, 1, 3)
    x = torch.cat([x, torch.zeros(1, 1, 47, dtype=F64)], 2).expand(3, 1, 50)
    z = m(x)["h"]
    assert z[0, 0, :3].tolist() == [0.0, 1.0, 0.0]


# ------------------------------------------------------------------ fused scan == plain autograd
FEATURES = """
neuron LIF {
    param tau_mem = 10 ms   [trainable, range(1 ms, 100 ms)]
    param v_th    = 1.0     [trainable]
    param r       = 1.0     [per_neuron(uniform(0.8, 1.2)), trainable]
    state v = 0.0
    input I
    dv/dt = (-v + r * I) / tau_mem   method exact
    spike v >= v_th
    reset v = 0
    surrogate fast_sigmoid(slope = 10)
}
neuron ALIF {
    param tau_mem   = 20 ms
    param tau_adapt = 100 ms [trainable]
    param beta      = 1.8
    state v = 0.0
    state a = 0.0
    input I_exc
    input I_inh
    dv/dt = (-v + I_exc - I_inh) / tau_mem   method exact
    da/dt = -a / tau_adapt                    method exact
    spike v >= 1 + beta * a
    reset v -= 1 + beta * a; a += 0.05
    surrogate atan(alpha = 2)
}
neuron Quad {
    param k = 0.04 [trainable]
    param v_init = -0.2 [trainable]
    state v = v_init
    state u = 0.0
    input I
    update v = v + k * v * v + 0.3 * v - u + I; u = u + 0.02 * (0.2 * v - u)
    spike v >= 1
    reset detach v = -0.5; u += 0.1
    refractory 2
    surrogate triangle(width = 0.5)
}
neuron Sig {
    state v = 0
    input I
    update v = 0.8 * v + sigmoid(I) - 0.4 + clip(I, -0.2, 0.2) + where(v > 0.5, 0.1, -0.05)
    spike v > 1
    reset v = v - 1
    surrogate sigmoid(slope = 5)
}
network Net {
    dt = 1 ms
    steps = 12
    input x[2, 6, 6] : spikes
    layer c = LIF <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer p = avgpool2d(c, 2)
    layer f = flatten(p)
    layer a[10] = ALIF <- dense(f) -> I_exc + dense(f, sign = inhibitory) -> I_inh
    layer q[10] = Quad <- dense(a, delay = 2) + one_to_one(a, weight = 0.5)
    layer s[10] = Sig <- dense(q) + dense(a.v)
    output s
    output s.v_pre
    output sum(q)
    output a.a
}
"""


def _grads(m, x):
    out = m(x)
    loss = ((out["s"].sum(0) - 1.0) ** 2).sum() + (out["s.v_pre"] ** 2).mean() + \
        (out["sum(q)"] ** 2).sum() * 0.1 + out["a.a"].sum()
    loss.backward()
    return out, {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def test_fast_path_equals_step_path_outputs_and_gradients():
    net = net_of(FEATURES)
    fast = build(net, dtype=F64, fast=True, seed=3)
    slow = build(net, dtype=F64, fast=False, seed=3)
    with torch.no_grad():
        for m in (fast, slow):
            m.c.weight.mul_(40.0)
            m.a.f.weight.mul_(80.0)
            m.a.f_2.weight.mul_(0.2)
            m.q.a.weight.mul_(3.0)
    x = spikes((12, 4, 2, 6, 6), 0.5)
    o1, g1 = _grads(fast, x)
    o2, g2 = _grads(slow, x)
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], rtol=1e-10, atol=1e-12)
    assert o1["s"].sum() > 0 and o1["sum(q)"].sum() > 0 and o1["a.a"].max() > 0
    assert set(g1) == set(g2)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-9, atol=1e-11, msg=k)
        assert g1[k].abs().max() > 0, k


def test_fused_scan_matches_autograd_of_the_same_equations():
    """The analytic backward of one layer against autograd through the step
    written as plain torch code, on random trajectories (float64)."""
    net = net_of("""
neuron CubaLIF {
    param tau_syn = 5 ms   [trainable]
    param tau_mem = 10 ms  [trainable]
    state syn = 0.0
    state v = 0.1
    input I
    dsyn/dt = (I - syn) / tau_syn                  method exact
    dv/dt   = (-v + syn) / tau_mem                 method exact
    spike v >= 1
    reset v = 0
    surrogate fast_sigmoid(slope = 25)
}
network Net {
    dt = 1 ms
    steps = 30
    input x[7] : direct
    layer h[7] = CubaLIF <- one_to_one(x, weight = 1.0)
    output h
    output h.v
    output h.syn_pre
}""")
    fast = build(net, dtype=F64, fast=True)
    slow = build(net, dtype=F64, fast=False)
    x = torch.rand(30, 3, 7, dtype=F64) * 6
    grads = []
    for m in (fast, slow):
        xx = x.clone().requires_grad_()
        out = m(xx)
        loss = (out["h"] * torch.arange(30, dtype=F64)[:, None, None]).sum() + \
            (out["h.v"] ** 2).sum() + out["h.syn_pre"].sum()
        loss.backward()
        grads.append([xx.grad, m.h.tau_syn.grad, m.h.tau_mem.grad])
    assert fast.h.tau_mem.grad != 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_chunked_backward_equals_the_step_path(monkeypatch):
    """The eager backward runs over chunks of steps; small chunks give the same
    gradients (the adjoint is carried across chunk boundaries)."""
    from spikedsl.targets.torch import NetGen, _load_class
    from spikedsl.targets.torch import adjoint as _torch_adjoint

    monkeypatch.setattr(_torch_adjoint, "CHUNK_ELEMENTS", 100)  # 2 steps of [4, 10]
    net = net_of(FEATURES)
    src = NetGen(net, fast=True, compiled=False).render()
    assert "131072" not in src and "100 //" in src
    fast = _load_class(src, "Net")(seed=3, dtype=F64)
    slow = build(net, dtype=F64, fast=False, seed=3)
    with torch.no_grad():
        for m in (fast, slow):
            m.c.weight.mul_(40.0)
            m.a.f.weight.mul_(80.0)
    x = spikes((12, 4, 2, 6, 6), 0.5)
    o1, g1 = _grads(fast, x)
    o2, g2 = _grads(slow, x)
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], rtol=1e-10, atol=1e-12)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-9, atol=1e-11, msg=k)


CHUNKABLE = """
neuron LIF {
    param tau_mem = 10 ms   [trainable, range(1 ms, 100 ms)]
    param v_th    = 1.0     [trainable]
    state v = 0.0
    input I
    dv/dt = (-v + I) / tau_mem   method exact
    spike v >= v_th
    reset v = 0
    surrogate fast_sigmoid(slope = 10)
}
neuron Cuba {
    param tau_syn = 5 ms   [trainable]
    param tau_mem = 10 ms
    state syn = 0.0
    state v = 0.1
    input I
    dsyn/dt = (I - syn) / tau_syn    method exact
    dv/dt   = (-v + syn) / tau_mem   method exact
    spike v >= 1
    reset v = 0
    surrogate atan(alpha = 2)
}
neuron Refr {
    param beta = 0.8
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v -= 1
    refractory 2
    surrogate fast_sigmoid(slope = 25)
}
network Net {
    dt = 1 ms
    steps = 11
    input x[2, 6, 6] : spikes
    layer c = LIF <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer p = maxpool2d(c, 2)
    layer f = flatten(p)
    layer a[10] = Cuba <- dense(f)
    layer q[10] = Refr <- dense(a) + dense(a.v)
    output q
    output sum(a)
    output a.syn
    output q.v_pre
}
"""


@pytest.mark.parametrize("elements", [4 * 108, 9 * 4 * 108, 1 << 30])
def test_chunked_forward_equals_the_step_path(monkeypatch, elements, compiled=False):
    """A feed-forward network runs chunk by chunk of steps (11 chunks of 1, 2
    of 6 and 5, 1 of 11 here); the neuron states and their gradients cross the
    chunk boundaries."""
    from spikedsl.targets.torch import NetGen, _load_class
    from spikedsl.targets.torch import network as _torch_network

    monkeypatch.setattr(_torch_network, "STEP_CHUNK_ELEMENTS", elements)
    net = net_of(CHUNKABLE)
    src = NetGen(net, fast=True, compiled=compiled).render()
    assert f"chunk = max(1, min(T, {elements} // max(1, B * 108)))" in src
    fast = _load_class(src, "Net")(seed=3, dtype=F64)
    slow = build(net, dtype=F64, fast=False, seed=3)
    with torch.no_grad():
        for m in (fast, slow):
            m.c.weight.mul_(30.0)
            m.a.weight.mul_(60.0)
            m.q.a.weight.mul_(4.0)
    x = spikes((11, 4, 2, 6, 6), 0.5)
    outs, grads = [], []
    for m in (fast, slow):
        out = m(x)
        loss = (out["q"] * torch.arange(1.0, 12.0, dtype=F64)[:, None, None]).sum() + \
            (out["sum(a)"] ** 2).sum() + out["a.syn"].sum() + (out["q.v_pre"] ** 2).mean()
        loss.backward()
        outs.append(out)
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    assert outs[0]["q"].sum() > 0 and outs[0]["sum(a)"].sum() > 0
    for k in outs[0]:
        torch.testing.assert_close(outs[0][k], outs[1][k], rtol=1e-10, atol=1e-12)
    assert set(grads[0]) == set(grads[1])
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-9, atol=1e-11, msg=k)
        assert grads[0][k].abs().max() > 0, k
    for k in ("c.v", "a.v", "a.syn", "q.v", "q.refractory"):
        torch.testing.assert_close(fast.state[k], slow.state[k], rtol=1e-10, atol=1e-12)
    assert fast(x[:, :0])["q"].shape[:2] == (11, 0)  # an empty batch (a rank without data)


@pytest.mark.slow
def test_compiled_chunked_forward_equals_the_step_path(monkeypatch):
    test_chunked_forward_equals_the_step_path(monkeypatch, 9 * 4 * 108, compiled=True)


@pytest.mark.slow
def test_compiled_scans_equal_eager():
    net = net_of(FEATURES)
    eager = build(net, dtype=F64, seed=3)
    comp = build(net, dtype=F64, seed=3, compile=True)
    with torch.no_grad():
        for m in (eager, comp):
            m.c.weight.mul_(40.0)
            m.a.f.weight.mul_(80.0)
    x = spikes((12, 4, 2, 6, 6), 0.5)
    o1, g1 = _grads(eager, x)
    o2, g2 = _grads(comp, x)
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], rtol=1e-10, atol=1e-12)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-9, atol=1e-11, msg=k)


def test_compiled_scan_source_is_functional():
    src = convert(net_of(FEATURES), compile=True)
    assert "torch.compile(" in src and "out=" not in src.split("class Net")[0].split(
        "def _scan0_c_forward")[1].split("def _scan0_c_backward")[0]


# ------------------------------------------------------------------ generated code
def test_generated_code_is_deterministic():
    from spikedsl.targets.torch import NetGen

    net = net_of(FEATURES)
    a = NetGen(net, fast=True, compiled=False).render()  # no cache
    assert a == NetGen(net_of(FEATURES), fast=True, compiled=False).render()
    assert a == convert(net)
    code = ("import spikedsl, sys; from spikedsl.targets.torch import convert; "
            "sys.stdout.write(convert(spikedsl.loads(open(sys.argv[1]).read()).network('Net').ir))")
    # a different hash seed must not change anything (no set / dict-order dependence)
    path = os.path.join(ROOT, "tests", "_torch_features.spk")
    with open(path, "w") as fh:
        fh.write(FEATURES)
    try:
        outs = set()
        for seed in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=ROOT, SPIKEDSL_CACHE="off")
            r = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                               text=True, env=env, timeout=300, check=False)
            assert r.returncode == 0, r.stderr
            outs.add(r.stdout)
    finally:
        os.remove(path)
    assert len(outs) == 1
    assert outs.pop() == a


def test_generated_code_imports_only_torch_and_math_and_passes_ruff(tmp_path):
    files = []
    for fast, comp, net in [(f, c, n) for f in (True, False) for c in (False, True)
                            for n in (net_of(FEATURES), net_of(CHUNKABLE))]:
        src = convert(net, fast=fast, compile=comp)
        imports = {ln.split()[1] for ln in src.splitlines()
                   if ln.startswith(("import ", "from "))}
        assert imports <= {"math", "torch", "torch.nn.functional"}, imports
        p = tmp_path / f"gen_{len(files)}.py"
        p.write_text(src)
        files.append(str(p))
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    r = subprocess.run([ruff, "check", "--isolated", *files], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generated_module_runs_standalone(tmp_path):
    """The file written by `spikedsl compile` needs no spikedsl."""
    src = convert(net_of(FEATURES))
    (tmp_path / "model.py").write_text(src)
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import model; "
            "assert 'spikedsl' not in sys.modules; m = model.Net(seed=1); "
            "out = m(torch.zeros(12, 2, 2, 6, 6)); print(sorted(out))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=""), check=False)
    assert r.returncode == 0, r.stderr
    assert "'s.v_pre'" in r.stdout


# ------------------------------------------------------------------ semantics on small cases
LIF_EXACT = """
neuron LIF {
    param tau_mem = 10 ms
    state v = 0.0
    input I
    dv/dt = (-v + I) / tau_mem   method exact
    spike v >= 1
    reset v = 0
}
network Net {
    dt = 0.1 ms
    steps = 200
    input x[1] : direct
    layer h[1] = LIF <- one_to_one(x)
    output h
    output h.v
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_lif_first_spike_at_the_analytic_time(fast):
    out = run(net_of(LIF_EXACT), np.full((1, 1), 2.0), record=["h.v_pre"], fast=fast)
    z = out["h"][:, 0, 0]
    n = int(np.argmax(z > 0))
    # v(t) = 2 (1 - exp(-t / tau)) reaches 1 at tau ln 2 = 6.931 ms: first grid point 7.0 ms
    assert z[:n].sum() == 0 and (n + 1) * 0.1 == pytest.approx(7.0)
    t = (np.arange(n + 1) + 1) * 1e-4
    np.testing.assert_allclose(out["h.v_pre"][: n + 1, 0, 0], 2 * (1 - np.exp(-t / 0.01)),
                               rtol=1e-12)
    assert out["h.v"][n, 0, 0] == 0.0


REFRACTORY = """
neuron Counter {
    state v = 0
    input I
    update v = v + I
    spike v >= 2
    reset v = 0
    refractory 2
}
network Net {
    steps = 12
    input x[1] : direct
    layer h[1] = Counter <- one_to_one(x)
    output h
    output h.v
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_refractory_holds_the_reset_state_and_ignores_input(fast):
    out = run(net_of(REFRACTORY), np.ones((1, 1)), fast=fast)
    # v: 1, 2->spike->0, held 0, held 0, 1, 2->spike, ...
    assert out["h"][:, 0, 0].tolist() == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert out["h.v"][:, 0, 0].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]


DELAY = """
neuron Relay {
    state v = 0
    input I
    update v = I
    spike v >= 0.5
}
network Net {
    steps = 8
    input x[3] : spikes
    layer d[3] = Relay <- one_to_one(x, delay = 2)
    layer r[3] = Relay <- one_to_one(x) + one_to_one(r, weight = 1.0)
    layer y = one_to_one(d, delay = 1)
    output d
    output r
    output y
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_delay_and_recurrence(fast):
    x = np.zeros((8, 1, 3))
    x[0, 0, 0] = 1
    x[3, 0, 1] = 1
    out = run(net_of(DELAY), x, fast=fast)
    np.testing.assert_array_equal(out["d"][2:], x[:-2])
    assert out["d"][:2].sum() == 0
    np.testing.assert_array_equal(out["y"][3:], x[:-3])
    # r fires on its input, then keeps itself on through the recurrent weight
    assert out["r"][:, 0, 0].tolist() == [1] * 8
    assert out["r"][:, 0, 1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_reset_detach_blocks_the_gradient_through_the_reset():
    text = """
neuron N {{
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v >= 1
    reset {d} v = 0
}}
network Net {{ steps = 20; input x[4] : spikes; layer h[4] = N <- dense(x); output h.v }}
"""
    x = spikes((20, 3, 4), 0.6)
    grads = {}
    for d in ("", "detach"):
        net = net_of(text.format(d=d))
        for fast in (True, False):
            m = build(net, dtype=F64, fast=fast)
            with torch.no_grad():
                m.h.weight.fill_(0.5)
            m(x)["h.v"].sum().backward()
            grads[(d, fast)] = m.h.weight.grad.clone()
    torch.testing.assert_close(grads[("", True)], grads[("", False)])
    torch.testing.assert_close(grads[("detach", True)], grads[("detach", False)])
    assert not torch.allclose(grads[("", True)], grads[("detach", True)])


def test_conv_pool_shapes_and_stages():
    net = net_of("""
neuron N { state v = 0; input I; update v = 0.5 * v + I; spike v >= 1; reset v = 0 }
network Net {
    steps = 4
    input x[1, 12, 12] : spikes
    layer c = N <- conv2d(x, channels = 4, kernel = 3, stride = 1, padding = 1)
    layer m = maxpool2d(c, 2)
    layer s = sumpool2d(m, 2)
    layer a = avgpool2d(c, 3)
    layer b = batchnorm(a)
    layer d = dropout(b, p = 0.5)
    layer f = flatten(d)
    layer y[5] = sigmoid(dense(f))
    output c
    output s
    output y
    output last(y)
}""")
    m = build(net, dtype=F64).eval()
    out = m(spikes((4, 2, 1, 12, 12)))
    assert out["c"].shape == (4, 2, 4, 12, 12)
    assert out["s"].shape == (4, 2, 4, 3, 3)
    assert out["y"].shape == (4, 2, 5)
    assert out["last(y)"].shape == out["y"].shape[1:]
    assert torch.all((out["y"] > 0) & (out["y"] < 1))
    ref = torch.nn.functional.avg_pool2d(torch.nn.functional.max_pool2d(
        out["c"].flatten(0, 1), 2), 2, divisor_override=1)
    torch.testing.assert_close(out["s"].flatten(0, 1), ref)


# ------------------------------------------------------------------ parameters and weights
def test_state_dict_names_and_clamping(tmp_path):
    net = net_of(FEATURES)
    m = build(net)
    names = set(m.state_dict())
    assert {"c.weight", "c.bias", "c.tau_mem", "c.v_th", "c.r", "a.f.weight", "a.f_2.weight",
            "a.tau_adapt", "q.a.weight", "q.a_2.weight", "q.k", "q.v_init", "s.q.weight",
            "s.a_v.weight"} <= names
    assert m.c.r.shape == (3, 6, 6) and m.c.tau_mem.shape == ()
    assert all(0.8 <= v <= 1.2 for v in m.c.r.flatten().tolist())
    with torch.no_grad():
        m.c.tau_mem.fill_(1.0)
        m.a.f_2.weight.fill_(-0.3)
    m.clamp_parameters()
    assert m.c.tau_mem.item() == pytest.approx(0.1)
    assert m.a.f_2.weight.min().item() == 0.0
    w = m.export_weights()
    assert isinstance(w["c.weight"], np.ndarray)
    np.savez(tmp_path / "w.npz", **w)
    m2 = build(net, weights=str(tmp_path / "w.npz"), seed=7)
    for k, v in m2.export_weights().items():
        np.testing.assert_array_equal(v, w[k])
    with pytest.raises(KeyError, match="unknown weight 'nope'"):
        m2.load_weights({"nope": np.zeros(2)})
    with pytest.raises(ValueError, match=r"shape \[2\], expected \[10\]"):
        m2.load_weights({"a.f.bias": np.zeros(2)})


def test_spec_weights_file_is_loaded(tmp_path):
    np.savez(tmp_path / "w.npz", **{"h.weight": np.full((3, 2), 0.25), "h.bias": np.zeros(3)})
    spec = tmp_path / "net.spk"
    spec.write_text("""
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 2; weights = "w.npz"; input x[2] : spikes; layer h[3] = N <- dense(x)
              output h.v }
""")
    net = spikedsl.load(spec).network("Net").ir
    out = run(net, np.ones((2, 1, 2)))
    np.testing.assert_allclose(out["h.v"], 0.5)


def test_sparse_connectivity_equals_numpy():
    net = net_of("""
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 2; input x[30] : spikes
  layer h[20] = N <- sparse(x, p = 0.3, weight = 0.5, seed = 11); output h.v }""")
    m = build(net, dtype=F64)
    mask = np.random.default_rng(11).random((20, 30)) < 0.3
    # one value per synapse (the mask's nonzero entries in C order); files hold (out, in)
    np.testing.assert_array_equal(m.h.weight.numpy(), np.full(int(mask.sum()), 0.5))
    np.testing.assert_array_equal(m.export_weights()["h.weight"], mask * 0.5)
    assert not any(p.requires_grad for p in m.parameters())


def test_state_access_reset_and_continuation():
    net = net_of("""
neuron N { param tau = 5.0; state v = 0; input I; update v = v + (I - v) / tau
           spike v >= 0.5; reset v = 0; refractory 1 }
network Net { steps = 10; input x[4] : spikes
  layer h[4] = N <- dense(x, bias = false) + dense(h, bias = false)
  layer o[4] = N <- dense(h, delay = 3)
  output o.v }""")
    m = build(net, dtype=F64)
    with torch.no_grad():
        m.h.x.weight.mul_(4)
        m.o.weight.mul_(4)
    x = spikes((10, 2, 4), 0.5)
    full = m(x)["o.v"]
    assert set(m.state) >= {"h.v", "o.v", "h.refractory"}
    assert m.state["h.v"].shape == (2, 4)
    m.stateful = True
    m.reset_state()
    part = torch.cat([m(x[:4])["o.v"], m(x[4:])["o.v"]])
    torch.testing.assert_close(part, full)
    m.reset_state()
    torch.testing.assert_close(m(x[:4])["o.v"], full[:4])


# ------------------------------------------------------------------ encoders and inputs
def test_encoders():
    net = net_of("""
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 6
  input a[5] : direct
  input b[5] : poisson(max_rate = 1.0, seed = 3)
  input c[5] : latency(tau = 5, threshold = 0.01)
  layer h[5] = N <- one_to_one(a) + one_to_one(b) + one_to_one(c)
  output h.v }""")
    m = build(net, dtype=F64)
    raw = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]], dtype=F64)
    enc = m.encode({"a": raw, "b": raw, "c": raw})
    assert enc["a"].shape == (6, 1, 5) and torch.equal(enc["a"][3], raw)
    assert torch.equal(enc["b"][:, 0, 0], torch.zeros(6, dtype=F64))
    assert torch.equal(enc["b"][:, 0, 4], torch.ones(6, dtype=F64))
    assert torch.equal(enc["c"].sum(0), torch.ones(1, 5, dtype=F64))
    out = m({"a": raw, "b": raw, "c": raw})["h.v"]
    assert out.shape == (6, 1, 5)
    with pytest.raises(ValueError, match="missing input 'c'"):
        m({"a": raw, "b": raw})


def test_poisson_rate_and_seed():
    net = net_of("""
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 400; input x[3] : poisson(max_rate = 0.5, seed = 1)
  layer h[3] = N <- one_to_one(x); output h.v }""")
    a, b = build(net), build(net)
    raw = torch.tensor([[0.2, 1.0, 4.0]])
    ea, eb = a.encode(raw), b.encode(raw)
    assert torch.equal(ea, eb)
    rate = ea.mean(0)[0]
    assert abs(rate[0] - 0.1) < 0.05 and abs(rate[1] - 0.5) < 0.08 and rate[2] == 1.0


def test_run_matches_the_reference_interpreter():
    reference = pytest.importorskip("spikedsl.runtime.reference")
    net = net_of(FEATURES)
    x = spikes((12, 3, 2, 6, 6), 0.5).numpy()
    w = reference.init_weights(net, 0)
    w["c.weight"] = w["c.weight"] * 40
    w["a.f.weight"] = w["a.f.weight"] * 80
    rec = ["c", "c.v", "a.v_pre", "a.a", "q", "q.u", "s", "s.v"]
    r = reference.run(net, {"x": x}, weights=w, record=rec)
    t = run(net, {"x": x}, weights=w, record=rec)
    assert r["q"].sum() > 0
    for k in r:
        np.testing.assert_allclose(t[k], r[k], rtol=1e-9, atol=1e-12, err_msg=k)


HOISTED_TEMP = """
neuron IF {
    param r = 1 Hz
    param v_threshold = 1
    state v = 0
    input I
    dv/dt = r * I   method euler
    spike v >= v_threshold
    reset v = 0
}
network Net {
    dt = 0.1 ms
    steps = 25
    input x[6] : spikes
    layer h[7] = IF(r = 5000 Hz) <- dense(x)
    output h
    output h.v
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_hoisted_temporary_read_only_by_another_hoisted_tensor(fast):
    """Euler's temporary ``k1_v = r * I`` reads only the input, so it is hoisted
    out of the loop; the loop reads only ``dt * k1_v``, hoisted in turn.  Both
    must be computed (the scan path once emitted only the second: KeyError)."""
    reference = pytest.importorskip("spikedsl.runtime.reference")
    net = net_of(HOISTED_TEMP)
    assert [t.target for t in net.layers[1].neuron.temps] == ["k1_v"]
    x = spikes((25, 3, 6), 0.4).numpy()
    w = reference.init_weights(net, 0)
    w["h.weight"] = w["h.weight"] * 6
    r = reference.run(net, {"x": x}, weights=w)
    t = run(net, {"x": x}, weights=w, fast=fast)
    assert 0 < r["h"].sum() < r["h"].size
    np.testing.assert_array_equal(t["h"], r["h"])
    np.testing.assert_allclose(t["h.v"], r["h.v"], rtol=0, atol=1e-12)


def test_dtype_and_float32_training_step():
    net = net_of(FEATURES)
    m = build(net, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    out = m(spikes((12, 2, 2, 6, 6)).float())
    assert out["s"].dtype == torch.float32
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    out["s.v_pre"].pow(2).mean().backward()
    opt.step()
    m.clamp_parameters()


PLASTIC = """
synapse STDP {
    param a_plus = 0.05
    param a_minus = 0.06
    param tau = 5
    state apre = 0
    state apost = 0
    dapre/dt = -apre / tau
    dapost/dt = -apost / tau
    on_pre { apre += a_plus; w = clip(w + apost, 0, 1) }
    on_post { apost -= a_minus; w = clip(w + apre, 0, 1) }
}
neuron N { param beta = 0.8; state v = 0; input I; update v = beta * v + I
           spike v >= 1; reset v = 0 }
network Net {
    steps = 30
    input x[12] : spikes
    layer h[6] = N <- dense(x, bias = false, init = uniform(0, 0.6)) + one_to_one(h, weight = 0.2)
    layer k[6] = N <- sparse(x, p = 0.5, weight = 0.7, seed = 3)
    output h
    output k
    plasticity STDP on x -> h
    plasticity STDP on x -> k
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_plasticity_equals_the_reference(fast):
    reference = pytest.importorskip("spikedsl.runtime.reference")
    net = net_of(PLASTIC)
    x = spikes((30, 3, 12), 0.4).numpy()
    w = reference.init_weights(net, 0)
    rec = ["h", "k", "h.v", "h.x.weight", "k.weight"]
    r = reference.run(net, {"x": x}, weights=w, record=rec)
    t = run(net, {"x": x}, weights=w, record=rec, fast=fast)
    assert r["h"].sum() > 0 and r["k"].sum() > 0
    assert np.abs(r["h.x.weight"][-1] - r["h.x.weight"][0]).max() > 0.01
    for k in rec:
        np.testing.assert_allclose(t[k], r[k], rtol=1e-10, atol=1e-12, err_msg=k)
    m = build(net, dtype=F64)
    m.stateful = True
    m(torch.as_tensor(x))
    assert m.state["h.x.weight"].shape == (3, 6, 12) and "h.x:apre" in m.state


def test_plasticity_on_conv_is_refused_clearly():
    net = net_of("""
synapse S { state a = 0; on_pre { w = w + 0.1 } }
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 2; input x[1, 4, 4] : spikes
              layer h = N <- conv2d(x, channels = 2, kernel = 3); output h
              plasticity S on x -> h }""")
    with pytest.raises(spikedsl.Unsupported, match="conv2d"):
        convert(net)
