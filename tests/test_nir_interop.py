"""Interoperation with snnTorch and Norse through NIR.

* spikedsl's NIR files load in snnTorch's ``import_from_nir`` and Norse's
  ``from_nir`` and give spikedsl's outputs where those importers are correct;
* graphs written by snnTorch's ``export_to_nir`` and Norse's ``to_nir`` import
  into spikedsl and give the outputs of the network in the tool that wrote them;
* every known upstream bug is pinned by a test that shows the behaviour
  (docs/nir.md, "Known upstream bugs").  If one of these tests fails after an
  upgrade, the bug was fixed: update the docs and the workaround.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nir = pytest.importorskip("nir")

from helpers.nir import random_weights, reference

import spikedsl
from spikedsl.targets import nir as nir_target
from spikedsl.targets.nir import importer as nir_import

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)  # Norse logs a warning per diverging parameter
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    logging.disable(logging.NOTSET)


def snn():
    return pytest.importorskip("snntorch")


def norse():
    return pytest.importorskip("norse.torch")


def spikes(T, B, shape, p=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B) + tuple(shape), generator=g) < p).float()


def run_stateful(m, x):
    """Step a nirtorch module (``out, state = m(x_t, state)``) over time."""
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = m(x[t], state)
            outs.append(out)
    return torch.stack(outs).numpy()


def run_snntorch_seq(net, x):
    import snntorch.utils

    snntorch.utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x[t]) for t in range(x.shape[0])]).numpy()


def import_and_run(graph, x, **kw):
    r = nir_import.convert_nir(graph, **kw)
    net = spikedsl.loads(r.text).network("Imported").ir
    out = reference(net, {net.inputs[0].name: x.numpy().astype(np.float64)}, r.weights)
    return r, out


def only_output(r, out):
    names = list(dict.fromkeys(r.outputs.values()))
    assert len(names) == 1, names
    return out[names[0]]


LEAKY = """
neuron Leaky {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
}
neuron Synaptic {
    param alpha = 0.8
    param beta = 0.7
    state syn = 0
    state v = 0
    input I
    update syn = alpha * syn + I
    update v = beta * v + alpha * syn + I
    spike v > 1
    reset v = 0
}
"""


def spk_net(body: str, steps=30, dt="0.1 ms") -> tuple:
    net = spikedsl.loads(LEAKY + f"network Net {{\n dt = {dt}\n steps = {steps}\n{body}\n}}\n")
    return net.network("Net").ir


# ====================================================================== spikedsl -> snnTorch
@pytest.mark.parametrize("body", [
    (" input x[6] : spikes\n layer h[5] = Leaky <- dense(x)\n layer o[3] = Leaky(beta = 0.8)"
     " <- dense(h)\n output o"),
    (" input x[6] : spikes\n layer h[5] = Synaptic <- dense(x)\n layer o[3] = Synaptic"
     "(alpha = 0.5) <- dense(h, bias = false)\n output o"),
], ids=["leaky", "synaptic"])
def test_spikedsl_graph_runs_in_snntorch(body, tmp_path):
    snn()
    from snntorch.import_nir import import_from_nir

    net = spk_net(body)
    W = random_weights(net, scale=4.0, seed=2)
    path = tmp_path / "net.nir"
    nir_target.write(net, str(path), weights=W)
    m = import_from_nir(nir.read(str(path)))
    import snntorch.utils

    snntorch.utils.reset(m)
    x = spikes(net.steps, 4, (6,))
    ours = reference(net, x.numpy().astype(np.float64), W)["o"]
    theirs = run_stateful(m, x)
    assert ours.sum() > 0
    np.testing.assert_array_equal(theirs, ours)


@pytest.mark.parametrize("per_neuron", [False, True])
def test_snntorch_import_rescales_thresholds(per_neuron):
    """snnTorch's Leaky has no input gain: import_from_nir divides the threshold by
    w_scale = r dt / tau instead (same spikes).  Bug: it takes the first distinct
    w_scale for the whole layer, so per-neuron time constants give wrong spikes."""
    snn()
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    net = spikedsl.loads(f"""
neuron L {{
    param tau = 2 ms {"[per_neuron]" if per_neuron else ""}
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method euler
    spike v > 1
    reset v = 0
}}
network Net {{
    dt = 0.1 ms
    steps = 40
    input x[6] : spikes
    layer h[5] = L <- dense(x)
    output h
}}
""").network("Net").ir
    W = random_weights(net, scale=40.0, seed=1)
    if per_neuron:
        W["h.tau"] = np.array([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    m = import_from_nir(nir_target.convert(net, weights=W))
    snntorch.utils.reset(m)
    x = spikes(net.steps, 4, (6,), p=0.5)
    ours = reference(net, x.numpy().astype(np.float64), W)["h"]
    theirs = run_stateful(m, x)
    assert ours.sum() > 0
    assert np.array_equal(theirs, ours) is (not per_neuron)


def test_bug_snntorch_import_of_recurrent_graphs(tmp_path):
    """snnTorch's import_from_nir wraps a LIF <-> Affine cycle into a sub-graph whose
    Input feeds the *recurrent* Affine (``(input, w_rec)`` in _create_rnn_subgraph), so
    the feed-forward input is multiplied by the recurrent weights; read back from a
    file, nirtorch 2.6 cannot even build it (it iterates the compiled sub-graph as a
    dict).  spikedsl imports such graphs correctly (see the RLeaky test)."""
    snn()
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    net = spk_net(" input x[6] : spikes\n layer h[5] = Leaky <- dense(x) + dense(h)\n"
                  " layer o[3] = Leaky <- dense(h)\n output o")
    W = random_weights(net, scale=4.0, seed=2)
    g = nir_target.convert(net, weights=W)
    m = import_from_nir(g)
    snntorch.utils.reset(m)
    x = spikes(net.steps, 4, (6,))
    ours = reference(net, x.numpy().astype(np.float64), W)["o"]
    assert ours.sum() > 0
    assert not np.array_equal(run_stateful(m, x), ours)
    nir_target.write(net, str(tmp_path / "r.nir"), weights=W)
    with pytest.raises(AttributeError):
        import_from_nir(nir.read(str(tmp_path / "r.nir")))


def test_spikedsl_conv_graph_in_snntorch_needs_batch_1(tmp_path):
    """snnTorch maps NIR's Flatten(start_dim=0) (NIR shapes have no batch) to
    torch.nn.Flatten(0), which also flattens the batch: conv nets run with batch 1."""
    snn()
    from snntorch.import_nir import import_from_nir

    net = spk_net(" input x[1, 6, 6] : spikes\n layer c = Leaky <- conv2d(x, channels = 2,"
                  " kernel = 3)\n layer p = avgpool2d(c, 2)\n layer f = flatten(p)\n"
                  " layer o[3] = Leaky <- dense(f)\n output o")
    W = random_weights(net, scale=5.0, seed=2)  # a draw that makes o spike
    g = nir_target.convert(net, weights=W)
    m = import_from_nir(g)
    import snntorch.utils

    x = spikes(net.steps, 1, (1, 6, 6), p=0.5)
    snntorch.utils.reset(m)
    theirs = run_stateful(m, x)  # [T, 3]: the batch is gone
    ours = reference(net, x.numpy().astype(np.float64), W)["o"]
    assert theirs.shape == (net.steps, 3) and ours.shape == (net.steps, 1, 3)
    assert ours.sum() > 0
    np.testing.assert_array_equal(theirs, ours[:, 0])
    x2 = spikes(net.steps, 2, (1, 6, 6))
    snntorch.utils.reset(m)
    with pytest.raises(RuntimeError):
        run_stateful(m, x2)  # batch 2: flattened into the features


# ====================================================================== snnTorch -> spikedsl
def _leaky(n, beta=0.9, **kw):
    import snntorch as s

    return s.Leaky(beta=torch.full((n,) if isinstance(n, int) else n, beta),
                   threshold=torch.ones(n if not isinstance(n, int) else (n,)),
                   init_hidden=True, **kw)


def test_snntorch_graph_imports_and_matches():
    s = snn()
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 5), _leaky(5, reset_mechanism="zero"),
        torch.nn.Linear(5, 3),
        s.Synaptic(alpha=torch.full((3,), 0.8), beta=torch.full((3,), 0.7),
                   threshold=torch.ones(3), init_hidden=True, reset_mechanism="zero",
                   reset_delay=False))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[2].weight.mul_(3)
    g = export_to_nir(net, torch.randn(1, 6), ignore_dims=[0])
    x = spikes(40, 4, (6,))
    theirs = run_snntorch_seq(net, x)
    r, out = import_and_run(g, x)
    ours = only_output(r, out)
    assert theirs.sum() > 0
    np.testing.assert_array_equal(ours, theirs)


def test_snntorch_conv_graph_imports_and_matches():
    snn()
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), _leaky((2, 6, 6), reset_mechanism="zero"),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(18, 4),
        _leaky(4, beta=0.8, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(4)
    g = export_to_nir(net, torch.randn(1, 1, 8, 8), ignore_dims=[0])
    x = spikes(25, 3, (1, 8, 8), p=0.5)
    theirs = run_snntorch_seq(net, x)
    r, out = import_and_run(g, x)
    ours = only_output(r, out)
    assert theirs.sum() > 0
    np.testing.assert_array_equal(ours, theirs)


def test_snntorch_recurrent_graph_imports_and_matches():
    s = snn()
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(2)
    rl = s.RLeaky(beta=torch.full((5,), 0.9), threshold=torch.ones(5), linear_features=5,
                  init_hidden=True, reset_mechanism="zero", reset_delay=False)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), rl, torch.nn.Linear(5, 2),
                              _leaky(2, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(5)
        net[2].weight.abs_().mul_(2)
        rl.recurrent.weight.mul_(2)
    g = export_to_nir(net, torch.randn(1, 6), ignore_dims=[0])
    assert ("1.lif", "1.w_rec") in g.edges and ("1.w_rec", "1.lif") in g.edges
    x = spikes(40, 3, (6,))
    theirs = run_snntorch_seq(net, x)
    r, out = import_and_run(g, x)
    assert "dense(n1_lif)" in r.text  # the cycle became a recurrent projection
    ours = only_output(r, out)
    assert theirs.sum() > 0
    np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------------- snnTorch bugs
def test_bug_snntorch_export_scalar_beta_fails():
    """snnTorch writes a scalar beta/threshold as 0-d arrays; NIR's type inference
    then rejects the graph.  Workaround: per-neuron tensors (as in these tests)."""
    s = snn()
    from snntorch.export_nir import export_to_nir

    net = torch.nn.Sequential(torch.nn.Linear(6, 5), s.Leaky(beta=0.9, init_hidden=True))
    with pytest.raises((ValueError, AssertionError)):
        export_to_nir(net, torch.randn(1, 6), ignore_dims=[0])


def test_bug_snntorch_subtract_reset_exported_as_reset_to_zero():
    """snnTorch's default reset (subtract) is written as NIR's reset to v_reset = 0:
    the imported network (NIR semantics) differs from the snnTorch network."""
    snn()
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), _leaky(5))  # reset_mechanism="subtract"
    with torch.no_grad():
        net[0].weight.mul_(4)
    g = export_to_nir(net, torch.randn(1, 6), ignore_dims=[0])
    assert np.all(np.asarray(g.nodes["1"].v_reset) == 0)
    x = spikes(40, 4, (6,), p=0.6)
    theirs = run_snntorch_seq(net, x)
    r, out = import_and_run(g, x)
    assert not np.array_equal(only_output(r, out), theirs)


def test_bug_snntorch_synaptic_delayed_reset():
    """Synaptic's default reset_delay=True with reset to zero also drops the input of
    the step after a spike; only reset_delay=False follows NIR (Leaky is unaffected)."""
    s = snn()
    from snntorch.export_nir import export_to_nir

    def make(delay):
        torch.manual_seed(4)
        net = torch.nn.Sequential(torch.nn.Linear(6, 3), s.Synaptic(
            alpha=torch.full((3,), 0.8), beta=torch.full((3,), 0.7), threshold=torch.ones(3),
            init_hidden=True, reset_mechanism="zero", reset_delay=delay))
        with torch.no_grad():
            net[0].weight.mul_(4)
        return net

    x = spikes(40, 4, (6,), p=0.5)
    for delay, equal in ((False, True), (True, False)):
        net = make(delay)
        g = export_to_nir(net, torch.randn(1, 6), ignore_dims=[0])
        r, out = import_and_run(g, x)
        assert np.array_equal(only_output(r, out), run_snntorch_seq(net, x)) is equal


def _single_neuron_graph(node, dt=None):
    n = int(np.prod(np.shape(node.v_leak if hasattr(node, "v_leak") else node.r)))
    w = np.eye(n) * 0.6
    meta = {} if dt is None else {"dt": dt}
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([n])), "w": nir.Linear(weight=w),
                               "neuron": node, "output": nir.Output(np.array([n]))},
                        edges=[("input", "w"), ("w", "neuron"), ("neuron", "output")],
                        metadata=meta)


def test_bug_snntorch_import_if_becomes_leaky():
    """snnTorch's import_from_nir turns NIR's IF into Leaky(beta=0.9)."""
    snn()
    from snntorch.import_nir import import_from_nir

    n = 4
    g = _single_neuron_graph(nir.IF(r=np.ones(n), v_threshold=np.ones(n)))
    m = import_from_nir(g)
    assert float(m.neuron.beta) == pytest.approx(0.9)


def test_bug_snntorch_import_ignores_v_reset_and_dt():
    """snnTorch's import_from_nir resets to 0 whatever v_reset says, and assumes
    dt = 1e-4 s; spikedsl reads both."""
    snn()
    from snntorch.import_nir import import_from_nir

    n = 4
    lif = nir.LIF(tau=np.full(n, 1e-3), r=np.full(n, 10.0), v_leak=np.zeros(n),
                  v_threshold=np.ones(n), v_reset=np.full(n, 0.5))
    m = import_from_nir(_single_neuron_graph(lif))
    assert m.neuron.reset_mechanism == "zero"
    assert float(m.neuron.beta.reshape(-1)[0]) == pytest.approx(1 - 1e-4 / 1e-3)
    # spikedsl: reset to 0.5, and at dt = 1e-3 the decay is 1 - dt/tau = 0
    r = nir_import.convert_nir(_single_neuron_graph(lif), dt=1e-3)
    assert "v_reset = 0.5" in r.text and "dt    = 1 ms" in r.text


def test_bug_nirtorch_default_map_drops_affine_bias():
    """nirtorch's default Affine mapping assigns the bias to ``weight.bias``: the
    Linear keeps its random bias.  snnTorch and Norse use their own mapping."""
    import nirtorch

    torch.manual_seed(0)
    w, b = np.eye(3), np.array([1.0, 2.0, 3.0])
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "a": nir.Affine(weight=w, bias=b),
                            "output": nir.Output(np.array([3]))},
                     edges=[("input", "a"), ("a", "output")])
    m = nirtorch.nir_to_torch(g, {})
    assert not np.allclose(m.a.bias.detach().numpy(), b)
    # spikedsl keeps it
    r = nir_import.convert_nir(g)
    np.testing.assert_array_equal(r.weights["a.bias"], b)


# ====================================================================== spikedsl -> Norse
def test_spikedsl_graph_runs_in_norse():
    """Norse's from_nir is right for LIF with r = 1 (Euler, as LIFBoxCell) and for IF
    with r = 1/dt (IAFCell adds the input unscaled), when v_reset = 0."""
    nt = norse()
    net = spikedsl.loads("""
neuron L {
    param tau = 5 ms
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method euler
    spike v > 1
    reset v = 0
}
neuron F {
    state v = 0
    input I
    update v = v + I
    spike v > 1
    reset v = 0
}
network Net {
    dt = 1 ms
    steps = 30
    input x[6] : spikes
    layer h[5] = L <- dense(x)
    layer k[4] = F <- dense(h)
    output k
}
""").network("Net").ir
    W = random_weights(net, scale=6.0, seed=1)
    g = nir_target.convert(net, weights=W)
    m = nt.from_nir(g, dt=1e-3)
    x = spikes(net.steps, 4, (6,))
    ours = reference(net, x.numpy().astype(np.float64), W)["k"]
    theirs = run_stateful(m, x)
    assert ours.sum() > 0
    np.testing.assert_array_equal(theirs, ours)


def test_spikedsl_current_jump_runs_in_norse():
    """A jump of the current followed by an Euler step is exported as CubaLIF with
    Dirac input (w_in = tau_syn/dt, r = 1).  Norse's from_nir runs CubaLIF
    semi-implicitly (LIBoxCell on w_in*x, then LIFBoxCell on the new current), which
    is the same step: the current it stores is the jumped one."""
    nt = norse()
    net = spikedsl.loads("""
neuron J {
    param tau_syn = 4 ms
    param tau_mem = 8 ms
    state syn = 0
    state v = 0
    input S
    jump syn += S
    dsyn/dt = -syn / tau_syn       method euler
    dv/dt = (-v + syn) / tau_mem   method euler
    spike v > 1
    reset v = 0
}
network Net {
    dt = 1 ms
    steps = 40
    input x[6] : spikes
    layer h[5] = J <- dense(x)
    layer o[3] = J <- dense(h)
    output o
}
""").network("Net").ir
    W = random_weights(net, scale=6.0, seed=1)
    g = nir_target.convert(net, weights=W)
    assert g.nodes["h"].metadata["input"] == "dirac"
    np.testing.assert_allclose(g.nodes["h"].w_in, 4.0)
    m = nt.from_nir(g, dt=1e-3)
    x = spikes(net.steps, 4, (6,))
    ours = reference(net, x.numpy().astype(np.float64), W)["o"]
    theirs = run_stateful(m, x)
    assert ours.sum() > 0
    np.testing.assert_array_equal(theirs, ours)


def test_bug_norse_from_nir_ignores_r_v_reset_and_has_no_li():
    nt = norse()
    n = 3
    lif = nir.LIF(tau=np.full(n, 5e-3), r=np.full(n, 2.0), v_leak=np.zeros(n),
                  v_threshold=np.ones(n), v_reset=np.full(n, 0.25))
    m = nt.from_nir(_single_neuron_graph(lif), dt=1e-3)
    cell = m.neuron
    assert type(cell).__name__ == "LIFBoxCell"
    assert float(cell.p.v_reset) == 0.0  # v_reset dropped
    # r = 2 is ignored: one step from rest with input 1 gives dt/tau * 1, not * 2
    _, st = cell(torch.ones(1, n), None)
    np.testing.assert_allclose(st.v.detach().numpy(), 0.2, rtol=1e-6)
    li = nir.LI(tau=np.full(n, 5e-3), r=np.ones(n), v_leak=np.zeros(n))
    m = nt.from_nir(_single_neuron_graph(li), dt=1e-3)
    assert getattr(m, "neuron", None) is None  # no mapping for LI


def test_bug_norse_from_nir_cubalif_synapse_uses_v_leak():
    """Norse's from_nir builds CubaLIF's synapse as an LIBoxCell with the
    membrane's v_leak: the current relaxes towards v_leak instead of 0."""
    nt = norse()
    n = 2
    node = nir.CubaLIF(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 1e-2), r=np.ones(n),
                       v_leak=np.full(n, 0.5), v_threshold=np.full(n, 10.0))
    m = nt.from_nir(_single_neuron_graph(node), dt=1e-3)
    assert float(m.neuron.synapse.p.v_leak.reshape(-1)[0]) == 0.5


# ====================================================================== Norse -> spikedsl
def _norse_dense(nt, first, second):
    torch.manual_seed(0)
    net = nt.SequentialState(torch.nn.Linear(6, 5), first, torch.nn.Linear(5, 3), second)
    with torch.no_grad():
        net[0].weight.mul_(8)
        net[2].weight.mul_(8)
    return net


def test_norse_graph_imports_and_matches():
    nt = norse()
    net = _norse_dense(
        nt, nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor(200.0),
                                              v_leak=torch.tensor(0.1))),
        nt.LIFCell(nt.LIFParameters(tau_mem_inv=torch.tensor(150.0),
                                    tau_syn_inv=torch.tensor(300.0))))
    g = nt.to_nir(net, torch.randn(1, 6))
    x = spikes(40, 4, (6,))
    theirs = run_stateful(net, x)
    r, out = import_and_run(g, x, convention="norse")
    ours = only_output(r, out)
    assert theirs.sum() > 0
    np.testing.assert_array_equal(ours, theirs)


def test_norse_if_and_li_graph_imports_and_matches(tmp_path):
    nt = norse()
    net = _norse_dense(nt, nt.IAFCell(), nt.LIBoxCell(nt.LIBoxParameters(
        tau_mem_inv=torch.tensor(50.0))))
    g = nt.to_nir(net, torch.randn(1, 6))
    path = tmp_path / "norse.nir"
    nir.write(str(path), g, compression=None)  # see test_bug_norse_scalar_parameters...
    x = spikes(30, 3, (6,))
    theirs = run_stateful(net, x)
    r, out = import_and_run(str(path), x, convention="norse")
    ours = only_output(r, out)
    assert np.abs(theirs).sum() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)  # Norse runs float32


def test_bug_norse_to_nir_writes_dt_times_tau():
    """Norse 1.1 writes tau = dt / tau_mem_inv (= dt * tau) instead of 1 / tau_mem_inv;
    convention='norse' divides by dt.  Read as plain NIR the neuron is far too fast."""
    nt = norse()
    net = _norse_dense(nt, nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor(200.0))),
                       nt.LIFBoxCell())
    g = nt.to_nir(net, torch.randn(1, 6), dt=1e-3)
    assert float(np.asarray(g.nodes["1"].tau)) == pytest.approx(1e-3 / 200.0)  # not 5e-3
    r = nir_import.convert_nir(g, convention="norse")
    assert "tau = 0.005" in r.text  # (float32: 0.00500000032844 s)
    r_plain = nir_import.convert_nir(g)
    assert any("convention='norse'" in n for n in r_plain.notes)


def test_bug_norse_scalar_parameters_cannot_be_written_compressed(tmp_path):
    """Norse writes 0-d parameters; nir.write's default gzip compression fails on them
    (h5py: scalar datasets take no filters).  ``compression=None`` works, and NIR's
    reader then rejects the graph's [1, 6] input (the batch dimension) in its type
    check, while spikedsl imports it."""
    nt = norse()
    net = _norse_dense(nt, nt.LIFBoxCell(), nt.LIFBoxCell())
    g = nt.to_nir(net, torch.randn(1, 6))
    with pytest.raises(TypeError):
        nir.write(str(tmp_path / "a.nir"), g)
    nir.write(str(tmp_path / "b.nir"), g, compression=None)
    with pytest.raises(ValueError):
        nir.read(str(tmp_path / "b.nir"))
    r = nir_import.convert_nir(str(tmp_path / "b.nir"), convention="norse")
    assert "input  input_[6]" in r.text


def test_bug_norse_to_nir_has_no_flatten():
    """Norse's to_nir maps torch.nn.Flatten to no node (None in the graph): conv nets
    with a flatten cannot be exported; spikedsl says so."""
    nt = norse()
    net = nt.SequentialState(torch.nn.Conv2d(1, 2, 3), nt.LIFBoxCell(), torch.nn.Flatten(),
                             torch.nn.Linear(72, 3), nt.LIFBoxCell())
    g = nt.to_nir(net, torch.randn(1, 1, 8, 8))
    assert any(v is None for v in g.nodes.values())
    with pytest.raises(spikedsl.SpecError) as e:
        nir_import.convert_nir(g, convention="norse")
    assert e.value.codes == ["nir-unknown-node"]
