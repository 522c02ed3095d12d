"""Norse target: neurons run as Norse cells where the lowered step equals the
cell's step; outputs and gradients equal the torch target's (float64)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("norse.torch")

from helpers.nir import reference

import spikedsl
from spikedsl.targets import norse as norse_target

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    yield
    torch.set_num_threads(n)
    logging.disable(logging.NOTSET)


NEURONS = {
    # exact LIF with a trainable time constant, leak, r, v >= v_th -> LIFBoxCell
    "lif_exact": """
neuron N {
    param tau_mem = 10 ms [trainable]
    param v_leak = 0.1
    param r = 1.5
    param v_th = 1.0 [trainable]
    state v = 0.2
    input I
    dv/dt = (v_leak - v + r * I) / tau_mem   method exact
    spike v >= v_th
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}""",
    # snnTorch's Leaky as an update, per-neuron decay -> LIFBoxCell
    "leaky": """
neuron N {
    param beta = 0.9 [per_neuron, trainable]
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
    surrogate triangle(width = 1)
}""",
    # subtractive reset -> LIFBoxCell with reset_subtract
    "lif_subtract": """
neuron N {
    param tau = 5 ms
    param v_th = 0.8 [trainable]
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method euler
    spike v >= v_th
    reset v -= v_th
    surrogate sigmoid(slope = 4)
}""",
    # detached reset
    "lif_detach": """
neuron N {
    param tau = 5 ms [trainable]
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method euler
    spike v > 1
    reset detach v = -0.2
    surrogate fast_sigmoid(slope = 1)
}""",
    "if": """
neuron N {
    param w = 0.5 [trainable]
    state v = 0
    input I
    update v = v + w * I
    spike v >= 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}""",
    # snnTorch's Synaptic -> LIBoxCell -> LIFBoxCell
    "synaptic": """
neuron N {
    param alpha = 0.8 [trainable]
    param beta = 0.7
    state syn = 0
    state v = 0
    input I
    update syn = alpha * syn + I
    update v = beta * v + alpha * syn + I
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}""",
    # Norse's own LIFCell step written as an update -> LIFCell
    "norse_lif": """
neuron N {
    param tau_syn = 5 ms [trainable]
    param tau_mem = 10 ms
    param v_leak = 0.05
    state i = 0
    state v = 0
    input I
    update v = v + dt / tau_mem * (v_leak - v + i + I)
    update i = (1 - dt / tau_syn) * (i + I)
    spike v > 0.3
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}""",
    # non-spiking readouts
    "li": """
neuron N {
    param tau = 20 ms [trainable]
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method exact
}""",
    "norse_li": """
neuron N {
    param tau_syn = 5 ms
    param tau_mem = 10 ms [trainable]
    state i = 0
    state v = 0
    input I
    update v = v + dt / tau_mem * (-v + i + I)
    update i = (1 - dt / tau_syn) * (i + I)
}""",
}
SPIKING = {"lif_exact", "leaky", "lif_subtract", "lif_detach", "if", "synaptic", "norse_lif"}
UNITLESS = {"leaky", "if", "synaptic"}


def net_text(kind: str, body: str | None = None) -> str:
    src = "" if kind in SPIKING else ".v"
    out = "o" if kind in SPIKING else "o.v"
    body = body or f"""
    input x[6] : spikes
    layer h[7] = N <- dense(x) + dense(h{src}, bias = false)
    layer o[4] = N <- dense(h{src})
    output {out}
    output h.v
    output h.v_pre"""
    dt = "dt = 1" if kind in UNITLESS else "dt = 1 ms"
    return NEURONS[kind] + f"\nnetwork Net {{\n    {dt}\n    steps = 20\n{body}\n}}\n"


def compare(text: str, scale=3.0, seed=0, atol=1e-9):
    """Outputs and gradients of the Norse and torch modules, same weights."""
    from spikedsl.targets import torch as t

    net = spikedsl.loads(text).network("Net").ir
    mt = t.build(net, dtype=torch.float64, seed=seed, fast=False)
    mn = norse_target.build(net, dtype=torch.float64, seed=seed)
    W0 = mt.export_weights()
    assert set(mn.state_dict()) == set(mt.state_dict())
    g = torch.Generator().manual_seed(seed)
    x = {la.name: (torch.rand((net.steps, 3) + la.shape, generator=g) < 0.4).double()
         for la in net.inputs}
    for s in (scale, 3 * scale, 10 * scale):  # strong enough weights to fire
        W = {k: v * (s if k.endswith("weight") and v.ndim >= 2 else 1.0) for k, v in W0.items()}
        mt.load_weights(W)
        with torch.no_grad():
            o = mt(x)
        if all(float(o[k].sum()) > 0 for k in o if "." not in k and "(" not in k):
            break
    mn.load_weights(W)
    ot, on = mt(x), mn(x)
    assert set(ot) == set(on)
    spikes = 0.0
    for k in ot:
        np.testing.assert_allclose(on[k].detach().numpy(), ot[k].detach().numpy(), rtol=0,
                                   atol=atol, err_msg=k)
        if "." not in k:
            spikes += float(ot[k].detach().sum())
    # the reference interpreter agrees too
    ref = reference(net, {k: v.numpy() for k, v in x.items()}, W)
    for k in ot:
        np.testing.assert_allclose(ref[k], ot[k].detach().numpy(), atol=1e-9)

    def loss(out):
        total = 0
        for v in out.values():
            w = torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape)
            total = total + (v * w).sum()
        return total

    names = [n for n, _ in mt.named_parameters()]
    gt = torch.autograd.grad(loss(ot), list(mt.parameters()), allow_unused=True)
    pn = dict(mn.named_parameters())
    gn = torch.autograd.grad(loss(on), [pn[n] for n in names], allow_unused=True)
    for n, a, b in zip(names, gt, gn):
        assert (a is None) == (b is None), n
        if a is not None:
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9,
                                       atol=1e-9 * max(1.0, float(a.abs().max())), err_msg=n)
    return net, ot, spikes


@pytest.mark.parametrize("kind", sorted(NEURONS))
def test_outputs_and_gradients_equal_torch_target(kind):
    _net, _out, spikes = compare(net_text(kind))
    if kind in SPIKING:
        assert spikes > 0


def test_conv_pool_flatten_delay_one_to_one():
    body = """
    input x[2, 6, 6] : spikes
    layer c = N <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer p = avgpool2d(c, 2)
    layer s = sumpool2d(c, 2)
    layer m = maxpool2d(c, 2)
    layer f = flatten(p)
    layer k[27] = N <- dense(f, delay = 2) + one_to_one(s, weight = 0.5)
    layer o[4] = N <- dense(k) + sparse(k, p = 0.5, weight = 0.3)
    layer r[5] = sigmoid(dense(m))
    output o
    output sum(k)
    output last(r)"""
    _net, _out, spikes = compare(net_text("lif_exact", body), scale=4.0)
    assert spikes > 0


def test_generated_source_is_deterministic_and_readable():
    net = spikedsl.loads(net_text("synaptic")).network("Net").ir
    a, b = norse_target.convert(net), norse_target.convert(net)
    assert a == b
    assert "norse.LIBoxParameters" in a and "norse.LIFBoxParameters" in a
    compile(a, "<norse>", "exec")
    assert spikedsl.loads(net_text("norse_lif")).network("Net").source("norse").count(
        "norse.LIFCell(") == 2


def test_build_loads_the_network_weights_file(tmp_path):
    text = net_text("leaky")
    net = spikedsl.loads(text).network("Net").ir
    m = norse_target.build(net, dtype=torch.float64)
    W = {k: v * 2 for k, v in m.export_weights().items()}
    np.savez(tmp_path / "w.npz", **W)
    prog = spikedsl.loads(text.replace("steps = 20", 'steps = 20\n    weights = "w.npz"'),
                          file=str(tmp_path / "net.spk"))
    m2 = norse_target.build(prog.network("Net").ir, dtype=torch.float64)
    for k, v in m2.export_weights().items():
        np.testing.assert_array_equal(v, W[k])


# ---------------------------------------------------------------------- refusals
def refuse(text: str, *fragments, **kw):
    net = spikedsl.loads(text).network("Net").ir
    with pytest.raises(spikedsl.Unsupported) as e:
        norse_target.convert(net, **kw)
    msg = e.value.render()
    for f in fragments:
        assert f in msg, msg
    return msg


def _with(kind, old, new):
    return net_text(kind).replace(old, new)


def test_refuses_default_surrogate_and_allow_approx_notes_it():
    text = _with("lif_exact", "surrogate fast_sigmoid(slope = 1)", "")
    msg = refuse(text, "Norse cannot express neuron 'N'", "fast_sigmoid(slope = 25)",
                 "whatever its alpha")
    assert ":2:" in msg.splitlines()[0]  # the neuron's line
    net = spikedsl.loads(text).network("Net").ir
    p = norse_target.plan(net, allow_approx=True)
    assert any("gradients differ" in n for n in p.notes)
    norse_target.build(net, allow_approx=True)


def test_refuses_exact_cubalif_naming_the_term():
    text = """
neuron N {
    param tau_syn = 5 ms
    param tau_mem = 10 ms
    state syn = 0
    state v = 0
    input I
    dsyn/dt = (-syn + I) / tau_syn   method exact
    dv/dt = (-v + syn) / tau_mem     method exact
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}
network Net {
    dt = 1 ms
    steps = 5
    input x[3] : spikes
    layer h[2] = N <- dense(x)
    output h
}
"""
    refuse(text, "the input enters the step of 'v' as", "Norse's LIFCell")
    refuse(text.replace("method exact", "method euler"), "explicit Euler", "LIFCell")


def test_refuses_what_norse_cannot_express():
    refuse(_with("lif_exact", "reset v = 0", "reset v = 0\n    refractory 2 ms"),
           "refractory period")
    refuse(_with("lif_exact", "dv/dt = (v_leak - v + r * I) / tau_mem   method exact",
                 "dv/dt = (v * v + I) / tau_mem   method euler"), "v**2", "not linear")
    refuse(_with("lif_subtract", "reset v -= v_th", "reset v -= 0.5"),
           "neither a reset to a value nor the subtraction of the threshold")
    refuse(_with("if", "reset v = 0", "reset detach v = 0"), "IAFCell resets to a value")
    alif = """
neuron N {
    param tau = 10 ms
    state v = 0
    state a = 0
    input I
    dv/dt = (-v + I) / tau
    da/dt = -a / (100 ms)
    spike v >= 1 + a
    reset v = 0; a += 0.1
    surrogate fast_sigmoid(slope = 1)
}
network Net {
    dt = 1 ms
    steps = 5
    input x[3] : spikes
    layer h[2] = N <- dense(x)
    output h
}
"""
    refuse(alif, "depends on v and a")
    refuse(alif.replace("layer h[2] = N <- dense(x)", "layer h = slstm(x, hidden = 2)"),
           "no spiking LSTM cell")


def test_bug_norse_superspike_ignores_alpha():
    """Norse 1.1's SuperSpike backward is 1/(|x|+1)^2 whatever alpha is: only
    fast_sigmoid(slope = 1) maps to method 'super'."""
    from norse.torch.functional.threshold import threshold

    x = torch.tensor([-0.5, 0.0, 0.3], dtype=torch.float64, requires_grad=True)
    for alpha in (1.0, 100.0):
        (g,) = torch.autograd.grad(threshold(x, "super", alpha).sum(), x)
        np.testing.assert_allclose(g.numpy(), 1 / (x.detach().abs().numpy() + 1) ** 2)


def test_same_initial_weights_and_run_encodes_like_torch():
    """Same seed, same parameters as the torch target; run() encodes raw [B, ...]
    inputs with the shared reference encoder."""
    from spikedsl.targets import torch as t

    text = net_text("lif_exact", """
    input x[4] : poisson(max_rate = 0.8)
    layer h[3] = N <- dense(x)
    output h
    output h.v""")
    net = spikedsl.loads(text).network("Net").ir
    a = norse_target.build(net, seed=7).export_weights()
    b = t.build(net, seed=7).export_weights()
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    x = np.random.default_rng(0).random((2, 4))
    ra, rb = norse_target.run(net, x, record=["h.v_pre"]), t.run(net, x, record=["h.v_pre"])
    assert set(ra) == set(rb)
    for k in ra:
        np.testing.assert_allclose(ra[k], rb[k], atol=1e-9)


# ---------------------------------------------------------------------- jumps
JUMP = NEURONS["norse_lif"].replace(
    "    update v = v + dt / tau_mem * (v_leak - v + i + I)\n"
    "    update i = (1 - dt / tau_syn) * (i + I)",
    "    jump i += I\n"
    "    dv/dt = (v_leak - v + i) / tau_mem   method euler\n"
    "    di/dt = -i / tau_syn                 method euler")


def _jump_text(method: str = "euler") -> str:
    return net_text("norse_lif").replace(NEURONS["norse_lif"],
                                         JUMP.replace("method euler", f"method {method}"))


def test_jump_of_the_current_is_norse_lifcell():
    """Norse's LIFCell (lif_feed_forward_step) adds the input to the current before
    the membrane update (i_jump = i + I; v += dt/tau_mem (v_leak - v + i_jump);
    i = i_jump - dt/tau_syn i_jump): spikedsl's jump at the start of the step
    followed by an Euler step.  It maps to LIFCell; outputs equal the reference,
    gradients equal the torch target's on the same step written as updates."""
    from spikedsl.targets import torch as t

    text = _jump_text()
    assert "jump i += I" in text
    net = spikedsl.loads(text).network("Net").ir
    assert norse_target.convert(net).count("norse.LIFCell(") == 2
    mn = norse_target.build(net, dtype=torch.float64, seed=0)
    upd = spikedsl.loads(net_text("norse_lif")).network("Net").ir
    mt = t.build(upd, dtype=torch.float64, seed=0, fast=False)
    W = {k: v * (3.0 if k.endswith("weight") and v.ndim >= 2 else 1.0)
         for k, v in mt.export_weights().items()}
    mn.load_weights(W)
    mt.load_weights(W)
    g = torch.Generator().manual_seed(0)
    x = {la.name: (torch.rand((net.steps, 3) + la.shape, generator=g) < 0.4).double()
         for la in net.inputs}
    on, ot = mn(x), mt(x)
    ref = reference(net, {k: v.numpy() for k, v in x.items()}, W)
    assert float(on["o"].detach().sum()) > 0
    for k in on:
        np.testing.assert_allclose(on[k].detach().numpy(), ref[k], rtol=0, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(ot[k].detach().numpy(), ref[k], rtol=0, atol=1e-12, err_msg=k)
    lo = sum((v * torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape)).sum()
             for v in on.values())
    lt = sum((v * torch.linspace(0.5, 1.5, v.numel(), dtype=v.dtype).reshape(v.shape)).sum()
             for v in ot.values())
    names = [n for n, _ in mt.named_parameters()]
    pn = dict(mn.named_parameters())
    gt = torch.autograd.grad(lt, list(mt.parameters()), allow_unused=True)
    gn = torch.autograd.grad(lo, [pn[n] for n in names], allow_unused=True)
    for n, a, b in zip(names, gt, gn):
        assert (a is None) == (b is None), n
        if a is not None:
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9,
                                       atol=1e-9 * max(1.0, float(a.abs().max())), err_msg=n)


def test_native_norse_lifcell_equals_the_jump_neuron():
    """Norse's own LIFCell in float64, against the reference interpreter."""
    import norse.torch as nt

    # Norse starts v at v_leak
    net = spikedsl.loads(JUMP.replace("param tau_syn = 5 ms [trainable]", "param tau_syn = 5 ms")
                         .replace("state v = 0", "state v = v_leak") + """
network Net {
    dt = 1 ms
    steps = 60
    input x[4] : direct
    layer h[4] = N <- one_to_one(x)
    output h
    output h.v
}
""").network("Net").ir
    g = torch.Generator().manual_seed(1)
    x = (torch.rand((60, 2, 4), generator=g) * 0.2).double()
    ref = reference(net, x.numpy(), {})
    f64 = {"dtype": torch.float64}
    p = nt.LIFParameters(tau_mem_inv=torch.tensor(100.0, **f64),
                         tau_syn_inv=torch.tensor(200.0, **f64),
                         v_leak=torch.tensor(0.05, **f64), v_th=torch.tensor(0.3, **f64),
                         v_reset=torch.tensor(0.0, **f64))
    cell, state, zs, vs = nt.LIFCell(p), None, [], []
    with torch.no_grad():
        for t_ in range(60):
            z, state = cell(x[t_], state)
            zs.append(z)
            vs.append(state.v)
    assert ref["h"].sum() > 0
    np.testing.assert_array_equal(torch.stack(zs).numpy(), ref["h"])
    np.testing.assert_allclose(torch.stack(vs).numpy(), ref["h.v"], rtol=0, atol=1e-12)


def test_exact_jump_maps_to_the_synapse_and_membrane_cells():
    """The exact step after a jump of the current equals LIBoxCell -> LIFBoxCell
    (the membrane reads the new current) with decay rates (1 - a)/dt."""
    net = spikedsl.loads(_jump_text("exact")).network("Net").ir
    src = norse_target.convert(net)
    assert "norse.LIBoxParameters" in src and "norse.LIFBoxParameters" in src
    mn = norse_target.build(net, dtype=torch.float64, seed=0)
    W = {k: v * (3.0 if k.endswith("weight") and v.ndim >= 2 else 1.0)
         for k, v in mn.export_weights().items()}
    mn.load_weights(W)
    g = torch.Generator().manual_seed(0)
    x = {la.name: (torch.rand((net.steps, 3) + la.shape, generator=g) < 0.4).double()
         for la in net.inputs}
    on = mn(x)
    ref = reference(net, {k: v.numpy() for k, v in x.items()}, W)
    assert float(on["o"].detach().sum()) > 0
    for k in on:
        np.testing.assert_allclose(on[k].detach().numpy(), ref[k], rtol=0, atol=1e-12, err_msg=k)


def test_refuses_jump_neurons_norse_cannot_run():
    refuse(_jump_text().replace("reset v = 0", "reset v = 0\n    refractory 2 ms"),
           "refractory period", "LIFRefracCell")
    refuse(_jump_text().replace("spike v > 0.3", "spike v > 0.3 and i > 0.1"),
           "joins comparisons with and/or", "Norse neurons fire on one threshold")
    refuse(_jump_text().replace("jump i += I", "jump i += I * i"), "not linear", "'I * i'")
