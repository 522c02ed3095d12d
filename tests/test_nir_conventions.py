"""Graphs written by sinabs, Rockpool and Lava-dl, read with their own
conventions (``import-nir --convention sinabs|rockpool|lava``), against a plain
loop of each tool's neuron; and a cnn_sinabs-style graph (IF, Conv2d,
SumPool2d, Flatten, Affine) on every target."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")

from spikedsl import targets  # noqa: E402
from spikedsl.errors import SpecError, Unsupported  # noqa: E402
from spikedsl.frontend.program import loads  # noqa: E402
from spikedsl.targets.nir.importer import convert_nir  # noqa: E402

ROOT = Path(__file__).parents[1]
F = torch.nn.functional


def _available():
    return [t for t in targets.NAMES if targets.unavailable(t) is None]


def _imported(graph, **kw):
    res = convert_nir(graph, **kw)
    return res, loads(res.text, file="<nir import>").network().ir


def _run_all(net, x, weights):
    """{target: output spikes} of every target that runs the network; the others
    refuse with a message (never another exception)."""
    outs, refused = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in _available():
            try:
                out = targets.run(t, net, {net.inputs[0].name: x}, weights=weights)
            except Unsupported as e:
                refused[t] = str(e)
                continue
            outs[t] = out[net.outputs[0].name]
    return outs, refused


# ---------------------------------------------------------------- sinabs
def cnn_sinabs(seed=1, thr=1.0):
    """A small cnn_sinabs (the NIR paper's sinabs example): IF neurons as sinabs'
    to_nir writes them (r = 1), conv, sum pooling, flatten, affine."""
    rng = np.random.default_rng(seed)

    def IF(shape):
        return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, thr))

    w1, b1 = rng.normal(0, 0.6, (4, 2, 3, 3)), rng.normal(0, 0.1, 4)
    w2 = rng.normal(0, 0.5, (4, 4, 3, 3))
    w3 = rng.normal(0, 0.5, (5, 36))
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([2, 10, 10])),
        "conv1": nir.Conv2d(input_shape=(10, 10), weight=w1, stride=1, padding=1, dilation=1,
                            groups=1, bias=b1),
        "if1": IF((4, 10, 10)),
        "pool1": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=(5, 5), weight=w2, stride=2, padding=1, dilation=1,
                            groups=1, bias=np.zeros(4)),
        "if2": IF((4, 3, 3)),
        "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0,
                            end_dim=-1),
        "fc": nir.Affine(weight=w3, bias=np.zeros(5)),
        "if3": IF((5,)),
        "output": nir.Output(output_type=np.array([5])),
    }, edges=[("input", "conv1"), ("conv1", "if1"), ("if1", "pool1"), ("pool1", "conv2"),
              ("conv2", "if2"), ("if2", "flat"), ("flat", "fc"), ("fc", "if3"),
              ("if3", "output")])
    return g, (w1, b1, w2, w3)


def sinabs_loop(x, params, thr=1.0, nir_reading=False):
    """sinabs' IAFSqueeze per step (lif_forward_single with alpha = 1): v += I;
    one spike where v >= thr, v -= thr; then v = max(v, min_v_mem = -thr).
    ``nir_reading``: NIR's IF at dt = 1 instead (spike v > thr, reset to 0)."""
    w1, b1, w2, w3 = (torch.as_tensor(a, dtype=torch.float64) for a in params)
    v = [None, None, None]
    out = []

    def iaf(k, i):
        v[k] = i if v[k] is None else v[k] + i
        if nir_reading:
            z = (v[k] > thr).double()
            v[k] = v[k] * (1 - z)
            return z
        z = (v[k] >= thr).double()
        v[k] = torch.clamp(v[k] - z * thr, min=-thr)
        return z

    for xt in torch.as_tensor(x, dtype=torch.float64):
        z1 = iaf(0, F.conv2d(xt, w1, b1, padding=1))
        p1 = F.avg_pool2d(z1, 2) * 4
        z2 = iaf(1, F.conv2d(p1, w2, stride=2, padding=1))
        out.append(iaf(2, z2.flatten(1) @ w3.T))
    return torch.stack(out).numpy()


def _cnn_input(T=30, B=2, seed=3):
    return (np.random.default_rng(seed).random((T, B, 2, 10, 10)) < 0.5).astype(float)


def test_cnn_sinabs_with_the_sinabs_convention_is_sinabs_iaf():
    g, params = cnn_sinabs()
    res, net = _imported(g, convention="sinabs", steps=30)
    assert "update v = max(v + I, -v_threshold)" in res.text
    assert "reset v -= v_threshold" in res.text
    x = _cnn_input()
    want = sinabs_loop(x, params)
    assert want.sum() >= 10
    outs, refused = _run_all(net, x, res.weights)
    assert {"reference", "torch"} <= set(outs)
    for t, y in outs.items():
        np.testing.assert_array_equal(y, want, err_msg=t)
    for t, msg in refused.items():  # the lower bound min_v_mem = -v_threshold
        if t == "nest":  # NEST holds neurons only
            assert "NEST networks hold neurons only" in msg, msg
            continue
        assert t in ("norse", "nir") and "max(I + v, -v_threshold)" in msg, (t, msg)


def test_cnn_sinabs_runs_on_every_target_read_as_nir():
    """The same graph read with NIR's own equations (dv/dt = r I, forward Euler):
    with dt = 1 s it is the per-step IF without the lower bound, which every
    target expresses (the torch target once failed with KeyError 'k1_v')."""
    g, params = cnn_sinabs()
    res, net = _imported(g, dt=1.0, steps=30)
    assert "dv/dt = r * I   method euler" in res.text
    x = _cnn_input()
    want = sinabs_loop(x, params, nir_reading=True)
    assert want.sum() >= 10
    outs, refused = _run_all(net, x, res.weights)
    # NEST holds neurons only: the conv and pooling stages are refused there
    assert set(refused) <= {"nest"}, refused
    assert set(outs) == set(_available()) - set(refused)
    for t, y in outs.items():
        np.testing.assert_array_equal(y, want, err_msg=t)
    res, net = _imported(g, steps=30)  # the default dt: 1e-4 s
    outs, refused = _run_all(net, x, res.weights)
    assert set(refused) <= {"nest"} and "torch" in outs


def test_sinabs_convention_reads_lif_and_li_in_steps():
    rng = np.random.default_rng(0)
    w = rng.normal(0.5, 0.3, (3, 4))
    tau = np.array([5.0, 10.0, 20.0])  # steps
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([4])),
        "fc": nir.Affine(weight=w, bias=np.zeros(3)),
        "lif": nir.LIF(tau=tau, r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
        "output": nir.Output(output_type=np.array([3])),
    }, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    res, net = _imported(g, convention="sinabs", steps=40)
    x = (rng.random((40, 2, 4)) < 0.4).astype(float)
    v, want = np.zeros((2, 3)), []
    for xt in x:  # LIFSqueeze, norm_input=False: v = exp(-1/tau) v + I
        v = np.exp(-1.0 / tau) * v + xt @ w.T
        z = (v >= 1.0) * 1.0
        v = v - z
        want.append(z)
    want = np.asarray(want)
    assert want.sum() >= 10
    outs, _ = _run_all(net, x, res.weights)
    assert {"reference", "torch"} <= set(outs)
    for t, y in outs.items():
        np.testing.assert_array_equal(y, want, err_msg=t)


# ---------------------------------------------------------------- rockpool
def rockpool_graph(dt=1e-3, seed=0):
    """LinearTorch -> LIFTorch as rockpool's to_nir writes them: CubaLIF with
    r = tau_mem exp(-dt / tau_mem) / dt, v_leak = 0, w_in = 1."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.6, 0.3, (3, 4))
    tau_mem, tau_syn = np.array([0.02, 0.01, 0.03]), np.array([0.005, 0.01, 0.002])
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([4])),
        "lin": nir.Linear(weight=w),
        "lif": nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem,
                           r=tau_mem * np.exp(-dt / tau_mem) / dt, v_leak=np.zeros(3),
                           v_threshold=np.ones(3)),
        "output": nir.Output(output_type=np.array([3])),
    }, edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")])
    return g, w, tau_mem, tau_syn


def test_rockpool_convention_is_lif_torch_with_the_dt_of_the_graph():
    dt = 1e-3
    g, w, tau_mem, tau_syn = rockpool_graph(dt)
    res, net = _imported(g, convention="rockpool", steps=50)
    assert math.isclose(net.dt, dt, rel_tol=1e-9), net.dt  # recovered from r
    x = (np.random.default_rng(1).random((50, 2, 4)) < 0.3).astype(float)
    a, b = np.exp(-dt / tau_mem), np.exp(-dt / tau_syn)
    v, i, want = np.zeros((2, 3)), np.zeros((2, 3)), []
    for xt in x:  # LIFTorch.forward: isyn += x; decay both; v += isyn; subtract
        i = b * (i + xt @ w.T)
        v = a * v + i
        z = (v >= 1.0) * 1.0
        v = v - z
        want.append(z)
    want = np.asarray(want)
    assert want.sum() >= 10
    outs, refused = _run_all(net, x, res.weights)
    assert {"reference", "torch"} <= set(outs)
    for t, y in outs.items():
        np.testing.assert_array_equal(y, want, err_msg=t)
    assert set(refused) <= {"norse", "nir", "nest"}  # NEST: neurons only


# ---------------------------------------------------------------- lava
def test_lava_convention_is_loihis_cuba_neuron():
    """lava-dl's netx writes a CUBA layer as CubaLIF(tau_syn = 1/i_decay, tau_mem =
    1/v_decay, r = 1, v_leak = 0, w_in = tau_syn): u = (1 - i_decay) u + x,
    v = (1 - v_decay) v + u, spike v >= threshold, reset to 0."""
    rng = np.random.default_rng(2)
    w = rng.normal(0.4, 0.2, (3, 4))
    i_decay, v_decay = np.array([0.25, 0.5, 1.0]), np.array([0.1, 0.05, 0.2])
    tau_syn, tau_mem = 1 / i_decay, 1 / v_decay
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([4])),
        "fc": nir.Affine(weight=w, bias=np.zeros(3)),
        "cuba": nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=np.ones(3),
                            v_leak=np.zeros(3), v_threshold=np.full(3, 1.5), w_in=tau_syn),
        "output": nir.Output(output_type=np.array([3])),
    }, edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")])
    res, net = _imported(g, convention="lava", steps=60)
    x = (rng.random((60, 2, 4)) < 0.3).astype(float)
    u, v, want = np.zeros((2, 3)), np.zeros((2, 3)), []
    for xt in x:
        u = (1 - i_decay) * u + xt @ w.T
        v = (1 - v_decay) * v + u
        z = (v >= 1.5) * 1.0
        v = v * (1 - z)
        want.append(z)
    want = np.asarray(want)
    assert want.sum() >= 10
    outs, refused = _run_all(net, x, res.weights)
    assert {"reference", "torch"} <= set(outs)
    for t, y in outs.items():
        np.testing.assert_allclose(y, want, err_msg=t)
    assert set(refused) <= {"norse", "nir", "nest"}  # NEST: neurons only


def test_a_node_the_tool_has_not_is_refused_with_its_name():
    g, *_ = rockpool_graph()
    with pytest.raises(SpecError, match=r"NIR node 'lif' \(CubaLIF\): sinabs has no CubaLIF "
                                        r"neuron \(it reads IF, LIF, LI\)"):
        convert_nir(g, convention="sinabs")


def test_import_nir_cli_takes_the_conventions(tmp_path):
    g, _ = cnn_sinabs()
    path = tmp_path / "cnn.nir"
    nir.write(str(path), g)
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPIKEDSL_CACHE="off")
    r = subprocess.run([sys.executable, "-m", "spikedsl", "import-nir", str(path),
                        "--convention", "sinabs", "-o", str(tmp_path / "cnn.spk")],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "IF_sinabs" in (tmp_path / "cnn.spk").read_text()
    assert "spike function may emit several spikes" in r.stderr
    r = subprocess.run([sys.executable, "-m", "spikedsl", "import-nir", str(path),
                        "--convention", "lava", "-o", str(tmp_path / "c2.spk")],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 1 and "lava has no IF neuron" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "c2.spk").exists()
