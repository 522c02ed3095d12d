"""The torch target against hand-written snnTorch and Norse networks: same
weights, same inputs -> the same spikes and the same gradients (float64).

The .spk neurons that equal the libraries' step exactly:

* ``snn.Leaky(beta, threshold, reset_mechanism="zero", reset_delay=False)``:
  ``update v = beta * v + I; spike v > threshold; reset v = 0`` (no
  ``detach``: with reset_delay=False snnTorch resets with ``mem - spk * mem``,
  and the gradient flows through ``spk``).  snnTorch's ``>`` is strict.
  (``reset_mechanism="subtract"`` is not ``reset v -= threshold``: when the
  membrane is still above threshold after the subtraction, snnTorch subtracts
  the threshold once more on the next step.)
* Norse ``LIFBoxCell`` (``dv = dt * tau_mem_inv * (v_leak - v + I)``) and
  ``LIFCell`` (current ``i`` jumps by the input, then both decay, Euler):
  the updates below with ``surrogate fast_sigmoid(slope = 1)`` - Norse 1.1's
  SuperSpike backward is ``g / (|x| + 1)^2`` whatever ``alpha`` says.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import spikedsl
from spikedsl.targets.torch import build

F64 = torch.float64


def _x(shape, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=F64) < p).to(F64)


# ------------------------------------------------------------------ snnTorch
snn = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_sg

_CTX = {"FastSigmoid": ("slope",), "Sigmoid": ("slope",), "ATan": ("alpha",)}


def _f64(cls):
    """snnTorch's surrogate with float64 spikes (its forward returns float32);
    the backward is snnTorch's own."""

    class Sur(cls):
        @staticmethod
        def forward(ctx, input_, *args):
            ctx.save_for_backward(input_)
            for name, v in zip(_CTX.get(cls.__name__, ()), args):
                setattr(ctx, name, v)
            return (input_ > 0).to(input_.dtype)

    return Sur


SNN_SURROGATES = {
    "fast_sigmoid(slope = 25)": lambda x: _f64(snn_sg.FastSigmoid).apply(x, 25),
    "atan(alpha = 2)": lambda x: _f64(snn_sg.ATan).apply(x, 2.0),
    "sigmoid(slope = 5)": lambda x: _f64(snn_sg.Sigmoid).apply(x, 5),
}

LEAKY = """
neuron Leaky {{
    param beta = 0.8
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v {reset}
    surrogate {sur}
}}
network Net {{
    steps = 30
    input x[40] : spikes
    layer h[32] = Leaky <- dense(x)
    layer o[8] = Leaky <- dense(h)
    output o
    output o.v
}}
"""


def _snntorch_net(sur, mechanism):
    leaky = [snn.Leaky(beta=torch.tensor(0.8, dtype=F64), threshold=1.0,
                       reset_mechanism=mechanism, reset_delay=False,
                       spike_grad=SNN_SURROGATES[sur]) for _ in range(2)]
    fc = [torch.nn.Linear(40, 32).double(), torch.nn.Linear(32, 8).double()]
    return fc, leaky


@pytest.mark.parametrize("sur", list(SNN_SURROGATES))
@pytest.mark.parametrize("fast", [True, False])
def test_leaky_network_equals_snntorch(sur, fast, reset="= 0"):
    net = spikedsl.loads(LEAKY.format(sur=sur, reset=reset)).network("Net").ir
    m = build(net, dtype=F64, fast=fast, seed=2)
    with torch.no_grad():
        m.h.weight.mul_(3.0)
        m.o.weight.mul_(3.0)
    fc, leaky = _snntorch_net(sur, "zero" if reset == "= 0" else "subtract")
    with torch.no_grad():
        for lin, name in zip(fc, ("h", "o")):
            lin.weight.copy_(getattr(m, name).weight)
            lin.bias.copy_(getattr(m, name).bias)
    x = _x((30, 6, 40))
    out = m(x)
    m1, m2 = leaky[0].reset_mem(), leaky[1].reset_mem()
    zs, vs = [], []
    for t in range(30):
        z1, m1 = leaky[0](fc[0](x[t]), m1)
        z2, m2 = leaky[1](fc[1](z1), m2)
        zs.append(z2)
        vs.append(m2)
    zs, vs = torch.stack(zs), torch.stack(vs)
    assert out["o"].sum() > 10
    assert torch.equal(out["o"], zs)
    torch.testing.assert_close(out["o.v"], vs, rtol=1e-12, atol=1e-12)
    target = torch.arange(8, dtype=F64)
    loss1 = ((out["o"].sum(0) - target) ** 2).sum() + (out["o.v"] ** 2).mean()
    loss2 = ((zs.sum(0) - target) ** 2).sum() + (vs ** 2).mean()
    loss1.backward()
    loss2.backward()
    for lin, name in zip(fc, ("h", "o")):
        for a, b in ((getattr(m, name).weight.grad, lin.weight.grad),
                     (getattr(m, name).bias.grad, lin.bias.grad)):
            assert a.abs().max() > 0
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_each_surrogate_equals_snntorchs_formula():
    """The surrogates the table shares with snnTorch (sigmoid, fast_sigmoid,
    atan, straight-through) have snnTorch's backward."""
    x = torch.linspace(-2, 2, 101, dtype=F64)
    cases = [("sigmoid(slope = 5)", snn_sg.Sigmoid, (5,)),
             ("fast_sigmoid(slope = 25)", snn_sg.FastSigmoid, (25,)),
             ("atan(alpha = 2)", snn_sg.ATan, (2.0,)),
             ("ste", snn_sg.StraightThroughEstimator, ())]
    for sur, cls, args in cases:
        net = spikedsl.loads(f"""
neuron N {{ state v = 0; input I; update v = I; spike v > 0; surrogate {sur} }}
network Net {{ steps = 1; input x[101] : spikes; layer h[101] = N <- one_to_one(x)
              output h }}""").network("Net").ir
        m = build(net, dtype=F64)
        a = x.clone().reshape(1, 1, 101).requires_grad_()
        m(a)["h"].sum().backward()
        b = x.clone().requires_grad_()
        _f64(cls).apply(b, *args).sum().backward()
        torch.testing.assert_close(a.grad.flatten(), b.grad, rtol=1e-12, atol=1e-14, msg=sur)


def test_latency_encoder_equals_spikegen():
    from snntorch import spikegen

    net = spikedsl.loads("""
neuron N { state v = 0; input I; update v = I; spike v >= 1 }
network Net { steps = 12
  input a[20] : latency(tau = 5, threshold = 0.01)
  input b[20] : latency(tau = 3, threshold = 0.1, normalize = 0, linear = 1)
  layer h[20] = N <- one_to_one(a) + one_to_one(b)
  output h }""").network("Net").ir
    m = build(net, dtype=F64)
    data = torch.rand(5, 20, dtype=F64)
    data[0, :3] = torch.tensor([0.0, 0.005, 1.0])
    enc = m.encode({"a": data, "b": data})
    ref_a = spikegen.latency(data, num_steps=12, tau=5, threshold=0.01, normalize=True)
    ref_b = spikegen.latency(data, num_steps=12, tau=3, threshold=0.1, normalize=False,
                             linear=True)
    assert torch.equal(enc["a"], ref_a.to(F64))
    assert torch.equal(enc["b"], ref_b.to(F64))


CELLS = """
network Net {
    steps = 6
    input x[2, 6, 6] : spikes
    layer f = flatten(x)
    layer lstm = slstm(f, hidden = 72, threshold = 0.5)
    layer conv = sconv_lstm(x, channels = 3, kernel = 3, threshold = 0.25)
    output lstm
    output lstm.mem
    output conv
    output conv.syn
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_cells_equal_snntorch_slstm_and_sconv2dlstm(fast):
    net = spikedsl.loads(CELLS).network("Net").ir
    m = build(net, dtype=F64, fast=fast, seed=4)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(6.0)
    sur = lambda x: _f64(snn_sg.ATan).apply(x, 2.0)
    # hidden == inputs: snnTorch 1.0's SLSTM zeroes its state whenever its shape
    # differs from the input's (a bug); with equal sizes it keeps its memory
    lstm = snn.SLSTM(72, 72, threshold=0.5, spike_grad=sur).double()
    conv = snn.SConv2dLSTM(2, 3, 3, threshold=0.25, spike_grad=sur).double()
    with torch.no_grad():
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm.lstm_cell, k).copy_(getattr(m.lstm, k))
        conv.conv.weight.copy_(m.conv.weight)
        conv.conv.bias.copy_(m.conv.bias)
    x = _x((6, 3, 2, 6, 6))
    out = m(x)
    s1, h1 = torch.zeros(3, 72, dtype=F64), torch.zeros(3, 72, dtype=F64)
    s2, h2 = torch.zeros(3, 3, 6, 6, dtype=F64), torch.zeros(3, 3, 6, 6, dtype=F64)
    z1s, h1s, z2s, s2s = [], [], [], []
    for t in range(6):
        z1, s1, h1 = lstm(x[t].flatten(1), s1, h1)
        z2, s2, h2 = conv(x[t], s2, h2)
        z1s.append(z1)
        h1s.append(h1)
        z2s.append(z2)
        s2s.append(s2)
    ref = {"lstm": torch.stack(z1s), "lstm.mem": torch.stack(h1s), "conv": torch.stack(z2s),
           "conv.syn": torch.stack(s2s)}
    assert ref["lstm"].sum() > 0 and ref["conv"].sum() > 0
    for k, v in ref.items():
        torch.testing.assert_close(out[k].to(F64), v.to(F64), rtol=1e-10, atol=1e-10, msg=k)
    (out["lstm"].sum() + out["conv"].sum() + out["lstm.mem"].pow(2).sum()).backward()
    (ref["lstm"].sum() + ref["conv"].sum() + ref["lstm.mem"].pow(2).sum()).backward()
    torch.testing.assert_close(m.lstm.weight_ih.grad, lstm.lstm_cell.weight_ih.grad,
                               rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(m.conv.weight.grad, conv.conv.weight.grad, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ Norse
norse = pytest.importorskip("norse.torch")

NORSE = """
neuron Box {
    param tau_mem_inv = 100.0
    state v = 0
    input I
    update v = v + 0.001 * tau_mem_inv * (0.0 - v + I)
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}
neuron Cuba {
    state v = 0
    state i = 0
    input I
    update v = v + 0.001 * 100.0 * (0.0 - v + (i + I)); i = (i + I) + (-0.001 * 200.0 * (i + I))
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}
neuron BoxOde {
    param tau_mem = 10 ms
    state v = 0
    input I
    dv/dt = (I - v) / tau_mem   method euler
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}
network NetBox { steps = 40; input x[20] : spikes; layer h[16] = Box <- dense(x, bias = false)
                 output h; output h.v }
network NetCuba { steps = 40; input x[20] : spikes; layer h[16] = Cuba <- dense(x, bias = false)
                  output h; output h.v }
network NetOde { dt = 1 ms; steps = 40; input x[20] : spikes
                 layer h[16] = BoxOde <- dense(x, bias = false); output h; output h.v }
"""


def _norse_cell(kind):
    from norse.torch import LIFBoxCell, LIFBoxParameters, LIFCell, LIFParameters

    t = lambda v: torch.as_tensor(v, dtype=F64)
    if kind == "NetCuba":
        return LIFCell(LIFParameters(tau_mem_inv=t(100.0), tau_syn_inv=t(200.0), v_th=t(1.0),
                                     v_leak=t(0.0), v_reset=t(0.0), method="super",
                                     alpha=t(100.0)), dt=1e-3)
    return LIFBoxCell(LIFBoxParameters(tau_mem_inv=t(100.0), v_th=t(1.0), v_leak=t(0.0),
                                       v_reset=t(0.0), method="super", alpha=t(100.0)),
                      dt=1e-3)


@pytest.mark.parametrize("name", ["NetBox", "NetCuba", "NetOde"])
@pytest.mark.parametrize("fast", [True, False])
def test_lif_equals_norse(name, fast):
    net = spikedsl.loads(NORSE).network(name).ir
    m = build(net, dtype=F64, fast=fast, seed=5)
    with torch.no_grad():
        m.h.weight.mul_(30.0)
    W = m.h.weight.detach().clone().requires_grad_()
    cell = _norse_cell(name)
    x = _x((40, 4, 20))
    out = m(x)
    s, zs, vs = None, [], []
    for t in range(40):
        z, s = cell(x[t] @ W.t(), s)
        zs.append(z)
        vs.append(s.v)
    zs, vs = torch.stack(zs), torch.stack(vs)
    assert zs.sum() > 20
    assert torch.equal(out["h"], zs)
    torch.testing.assert_close(out["h.v"], vs, rtol=1e-12, atol=1e-12)
    ((out["h"].sum(0) - 3) ** 2).sum().backward()
    ((zs.sum(0) - 3) ** 2).sum().backward()
    assert W.grad.abs().max() > 0
    torch.testing.assert_close(m.h.weight.grad, W.grad, rtol=1e-6, atol=1e-9)


def test_surrogate_constants_are_exact():
    """atan's constant is pi/2 * alpha, computed in double precision."""
    from spikedsl.ir import LSurrogate
    from spikedsl.targets.torch.neuron import surrogate_code

    _, e = surrogate_code(LSurrogate(name="atan", args={"alpha": 3.0}), "x", "f")
    assert repr(math.pi / 2 * 3.0) in e and "1.5 /" in e


@pytest.mark.parametrize("cname,batch", [("mlp25", 16), ("mlp100", 64)])
def test_benchmark_network_equals_snntorch_with_the_same_semantics(cname, batch):
    """benchmarks/bench_torch.py's 784-256-10 LIF network against its
    snnTorch model (snn.Leaky, reset_delay=False, fast_sigmoid(25)), float64:
    identical output spikes, weight and bias gradients within 1e-12 (T = 100,
    batch 64 runs the forward in two chunks of steps, the states carried)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import bench_torch

    num = bench_torch.check_numerics(bench_torch.CONFIGS[cname], B=batch)
    assert num["spikes_equal"]
    assert num["spikes"] > 100 * batch // 8
    assert num["max_rel_grad_diff"] <= 1e-12
