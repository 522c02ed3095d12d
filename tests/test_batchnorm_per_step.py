"""``batchnorm(x, per_step = true)``: batch normalisation through time (one row
of running statistics, weight and bias per step) in lowering, the torch target
(training and evaluation, gradients against finite differences, stateful
continuation, fast and step-by-step paths), the reference interpreter, Norse,
and the refusals of NIR and Brian2."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spikedsl
from spikedsl import targets
from spikedsl.lowering.weights import weight_shapes
from spikedsl.runtime import reference
from spikedsl.targets.torch import build

F64 = torch.float64

LIF = """
neuron LIF {
    param tau = 5
    state v = 0
    input I
    dv/dt = (I - v) / tau
    spike v >= 1
    reset v = 0
}
"""

CONV = LIF + """
network Net {
    steps = 4
    input x[2, 5, 5] : spikes
    layer c = LIF <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer b = batchnorm(c.v, per_step = true, momentum = 0.2)
    layer f = flatten(b)
    layer y[3] = sigmoid(dense(f))
    output b
    output y
    output c.v
}
"""

# smooth: tanh -> per-step batchnorm -> sigmoid (finite differences apply)
SMOOTH = """
network Net {
    steps = 3
    input x[4] : direct
    layer p[5] = tanh(dense(x))
    layer b = batchnorm(p, per_step = true)
    layer y[2] = sigmoid(dense(b))
    output y
}
"""

# the batch norm inside a recurrent step group (read back with a delay)
RECURRENT = LIF + """
network Net {
    steps = 5
    input x[4] : spikes
    layer h[6] = LIF <- dense(x) + dense(b, bias = false, delay = 1)
    layer b = batchnorm(h.v, per_step = true)
    layer y[2] = sigmoid(dense(b))
    output y
    output b
}
"""


def net_of(text: str):
    return spikedsl.loads(text).network("Net").ir


def rand(shape, seed=0, p=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=F64)
    return (x < p).to(F64) if p is not None else x


def random_stats(m, seed=1):
    """Distinct running statistics and affine rows per step."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn = m.b
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g, dtype=F64))
        bn.running_var.copy_(0.2 + torch.rand(bn.running_var.shape, generator=g, dtype=F64))
        bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=g, dtype=F64))
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g, dtype=F64))


def test_lowering_shapes_and_default():
    net = net_of(CONV)
    b = net.layer("b")
    assert b.args["per_step"] is True and b.args["momentum"] == 0.2
    shapes = weight_shapes(net)
    for k in ("weight", "bias", "running_mean", "running_var"):
        assert shapes[f"b.{k}"] == (4, 3)
    plain = net_of(CONV.replace("per_step = true, ", ""))
    assert plain.layer("b").args["per_step"] is False
    assert weight_shapes(plain)["b.running_mean"] == (3,)


@pytest.mark.parametrize("fast", [True, False])
def test_training_normalises_each_step_with_its_own_statistics(fast):
    net = net_of(CONV)
    m = build(net, dtype=F64, fast=fast, seed=2)
    with torch.no_grad():
        m.c.weight.mul_(4.0)
    random_stats(m)
    w, bias = m.b.weight.detach().clone(), m.b.bias.detach().clone()
    mean0, var0 = m.b.running_mean.clone(), m.b.running_var.clone()
    m.train()
    x = rand((4, 6, 2, 5, 5), p=0.5)
    out = m(x)
    cv = out["c.v"].detach()
    assert float(cv.std()) > 0.1
    for t in range(4):
        ref = torch.nn.BatchNorm2d(3, momentum=0.2).double()
        with torch.no_grad():
            ref.weight.copy_(w[t])
            ref.bias.copy_(bias[t])
            ref.running_mean.copy_(mean0[t])
            ref.running_var.copy_(var0[t])
        ref.train()
        want = ref(cv[t])
        torch.testing.assert_close(out["b"][t], want, rtol=1e-10, atol=1e-10)
        # row t of the running statistics moved towards step t's batch statistics
        torch.testing.assert_close(m.b.running_mean[t], ref.running_mean)
        torch.testing.assert_close(m.b.running_var[t], ref.running_var)
    # the rows differ: each step has statistics of its own
    assert float((m.b.running_mean[0] - m.b.running_mean[3]).abs().max()) > 1e-3


@pytest.mark.parametrize("text", [CONV, RECURRENT], ids=["conv", "recurrent"])
def test_eval_mode_equals_the_reference_interpreter(text):
    net = net_of(text)
    m = build(net, dtype=F64, seed=3)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("weight") and p.dim() >= 2:
                p.mul_(4.0)
    random_stats(m)
    m.eval()
    shape = (net.steps, 3) + tuple(net.inputs[0].shape)
    x = rand(shape, seed=4, p=0.5)
    with torch.no_grad():
        out = m(x)
    W = m.export_weights()
    ref = reference.run(net, {"x": x.numpy()}, weights=W)
    for k in ("y", "b"):
        np.testing.assert_allclose(ref[k], out[k].numpy(), rtol=1e-10, atol=1e-10)
    # a per-step affine: step t = (v - mean[t]) / sqrt(var[t] + eps) * weight[t] + bias[t]
    b = out["b"].numpy()
    assert not np.allclose(b[0].std(), b[-1].std())
    # the same network with shared statistics gives other numbers
    plain = build(net_of(text.replace("per_step = true", "per_step = false")), dtype=F64)
    Wp = {k: (v[0] if k.startswith("b.") else v) for k, v in W.items()}
    plain.load_weights(Wp)
    plain.eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x)["b"], out["b"])


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradients_match_finite_differences(train):
    net = net_of(SMOOTH)
    m = build(net, dtype=F64, seed=5)
    random_stats(m)
    m.train(train)
    x = rand((3, 8, 4), seed=6) * 2 - 1
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in m.named_parameters())
    buffers = {n: b.clone() for n, b in m.named_buffers()}

    def f(*ps):
        state = dict(zip(names, ps))
        state.update({n: b.clone() for n, b in buffers.items()})  # running stats untouched
        return torch.func.functional_call(m, state, (x,))["y"]

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5)
    # the gradient reaches every row of the per-step affine
    f(*params).sum().backward()
    gw = params[names.index("b.weight")].grad
    assert gw.shape == (3, 5) and bool((gw.abs().sum(1) > 0).all())


def test_fast_and_step_paths_agree_with_gradients():
    net = net_of(RECURRENT)
    ms = [build(net, dtype=F64, fast=f, seed=7) for f in (True, False)]
    x = rand((5, 4, 4), seed=8, p=0.6)
    res = []
    for m in ms:
        with torch.no_grad():
            m.h.x.weight.mul_(5.0)
        m.train()
        out = m(x)
        (out["y"] ** 2).sum().backward()
        res.append((out, {n: p.grad.clone() for n, p in m.named_parameters()},
                    m.b.running_mean.clone()))
    (o1, g1, r1), (o2, g2, r2) = res
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r1, r2)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-9, atol=1e-11, msg=k)
    assert float(g1["b.weight"].abs().sum()) > 0


def test_stateful_calls_continue_the_step_count():
    net = net_of(CONV)
    m = build(net, dtype=F64, seed=9)
    random_stats(m)
    m.eval()
    x = rand((4, 2, 2, 5, 5), seed=10, p=0.5)
    with torch.no_grad():
        whole = m(x)["b"]
        m.stateful = True
        m.reset_state()
        parts = torch.cat([m(x[:2])["b"], m(x[2:])["b"]])
        assert int(m.state["b@step"]) == 4
        torch.testing.assert_close(parts, whole)
        with pytest.raises(ValueError, match="statistics for 4 steps; this call runs steps 4 to 5"):
            m(x[:2])
        m.stateful = False
        with pytest.raises(ValueError, match="per step and has statistics for 4 steps"):
            m(torch.cat([x, x]))
    with pytest.raises(ValueError, match="step 4 has none"):
        reference.run(net, {"x": torch.cat([x, x]).numpy()}, weights=m.export_weights())


def test_norse_runs_it_like_torch():
    pytest.importorskip("norse")
    text = """
neuron N {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
    surrogate triangle(width = 1)
}
network Net {
    dt = 1
    steps = 4
    input x[6] : spikes
    layer h[5] = N <- dense(x)
    layer b = batchnorm(h.v, per_step = true)
    layer y[2] = sigmoid(dense(b))
    output y
    output h
}
"""
    net = net_of(text)
    assert targets.refusal("norse", net) is None
    mt = build(net, dtype=F64, seed=11)
    mn = targets.build("norse", net, dtype=F64, seed=11)
    random_stats(mt)
    with torch.no_grad():
        mt.h.weight.mul_(6.0)
    mn.load_weights(mt.export_weights())
    x = rand((4, 3, 6), seed=12, p=0.5)
    for train in (True, False):
        mt.train(train)
        mn.train(train)
        ot, on = mt(x), mn(x)
        assert float(ot["h"].detach().sum()) > 0
        torch.testing.assert_close(on["y"], ot["y"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mn.b.running_mean, mt.b.running_mean)


BRIAN2 = """
neuron LIF {
    param tau = 5 ms
    state v = 0 mV
    input I : mV
    dv/dt = (I - v) / tau
    spike v >= 1 mV
    reset v = 0 mV
}
network Net {
    dt = 1 ms
    steps = 4
    input x[2, 5, 5] : spikes
    layer c = LIF <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer s = batchnorm(c, per_step = true)
    layer b = batchnorm(c.v, per_step = true)
    layer f = flatten(b)
    layer y[3] = dense(f)
    output s
    output b
    output y
}
"""


def test_brian2_runs_it_as_a_per_step_affine():
    """Evaluation mode is a per-step affine: Brian2 reads rows of TimedArrays
    (for a spiking source and for a membrane in volts) and equals the reference."""
    pytest.importorskip("brian2")
    from helpers.brian2 import random_inputs

    from spikedsl.lowering.weights import init_weights

    net = net_of(BRIAN2)
    rng = np.random.default_rng(0)
    W = init_weights(net, 0)
    W["c.weight"] = W["c.weight"] * 6.0
    for name, unit in (("s", 1.0), ("b", 1e-3)):
        T, C = W[f"{name}.running_mean"].shape
        W[f"{name}.running_mean"] = rng.uniform(-0.2, 0.5, (T, C)) * unit
        W[f"{name}.running_var"] = rng.uniform(0.5, 2.0, (T, C)) * unit ** 2
        W[f"{name}.weight"] = rng.uniform(0.5, 1.5, (T, C))
        W[f"{name}.bias"] = rng.uniform(-0.2, 0.2, (T, C)) * unit
    x = random_inputs(net, batch=2, p=0.5)
    ref = reference.run(net, x, weights=W)
    got = targets.run("brian2", net, x, weights=W)
    assert float(np.abs(ref["s"]).max()) > 0.1
    for k in ("s", "b", "y"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, atol=1e-9 * np.abs(ref[k]).max())
    long = {"x": np.concatenate([x["x"], x["x"]])}
    with pytest.raises(ValueError, match="statistics for 4 steps; this run has 8"):
        targets.run("brian2", net, long, weights=W)


def test_nir_refuses_it():
    err = targets.refusal("nir", net_of(CONV))
    assert err is not None and "NIR cannot express layer 'b' (batchnorm)" in str(err)
    assert "no batch normalisation node" in str(err) and ":15:1:" in str(err)


def test_generated_code_is_deterministic_and_passes_ruff(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from spikedsl.targets.torch import convert

    files = []
    for text in (CONV, RECURRENT):
        for fast in (True, False):
            src = convert(net_of(text), fast=fast)
            assert src == convert(net_of(text), fast=fast)
            assert "_bn_step0(" in src and ("_bn_steps(" in src or "[b_t0 + t]" in src)
            p = tmp_path / f"gen_{len(files)}.py"
            p.write_text(src)
            files.append(str(p))
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    r = subprocess.run([ruff, "check", "--isolated", *files], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_chunks_of_steps_read_their_own_rows(monkeypatch):
    """A feed-forward network runs chunk by chunk of steps (here 1 step per
    chunk): the per-step batch norm of chunk k reads and updates row k, as on
    the step path."""
    from spikedsl.targets.torch import NetGen, _load_class
    from spikedsl.targets.torch import network as _torch_network

    monkeypatch.setattr(_torch_network, "STEP_CHUNK_ELEMENTS", 1)
    net = net_of(CONV)
    src = NetGen(net, fast=True, compiled=False).render()
    assert "for k in range(chunks):" in src and "b_t0 + t0" in src
    fast = _load_class(src, "Net")(seed=2, dtype=F64)
    slow = build(net, dtype=F64, fast=False, seed=2)
    for m in (fast, slow):
        with torch.no_grad():
            m.c.weight.mul_(4.0)
        random_stats(m)
        m.train()
    x = rand((4, 6, 2, 5, 5), p=0.5)
    o1, o2 = fast(x), slow(x)
    assert float(o1["b"].detach().std()) > 0.1
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.b.running_mean, slow.b.running_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast.b.running_var, slow.b.running_var, rtol=1e-12, atol=1e-14)
