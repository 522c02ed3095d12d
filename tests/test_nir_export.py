"""NIR export: refusals (with the neuron, its line and the reason), allow_approx,
weights from dicts / .npz / torch checkpoints, the export-nir command."""

from __future__ import annotations

import os

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from helpers.nir import random_inputs, random_weights, reference

import spikedsl
from spikedsl.targets import nir as nir_target
from spikedsl.targets.nir import importer as nir_import

LIF = """neuron LIF {
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (-v + I) / tau
    spike v >= 1
    reset v = 0
}
"""


def net_of(neuron: str, body: str, steps=10) -> spikedsl.ir.LNetwork:
    text = neuron + f"network Net {{\n    dt = 1 ms\n    steps = {steps}\n{body}\n}}\n"
    return spikedsl.loads(text).network("Net").ir


def refused(net, *fragments, line=None, **kw):
    with pytest.raises(spikedsl.Unsupported) as e:
        nir_target.export(net, weights={}, **kw)
    d = e.value.diagnostics[0]
    assert d.code == "unsupported"
    msg = d.message
    for f in fragments:
        assert f in msg, msg
    if line is not None:
        assert d.loc is not None and d.loc.line == line, (d.loc, msg)
    return msg


BODY = "    input x[3] : spikes\n    layer h[4] = N <- dense(x)\n    output h"


@pytest.mark.parametrize("neuron, fragments", [
    ("""neuron N {
    state v = 0
    input I
    dv/dt = v * v + I   method euler
    spike v >= 1
    reset v = 0
}
""", ["neuron 'N'", "'v**2'", "not linear"]),
    ("""neuron N {
    param tau = 10 ms
    state v = 0
    state a = 0
    input I
    dv/dt = (-v + I) / tau
    da/dt = -a / (100 ms)
    spike v >= 1 + a
    reset v = 0; a += 0.1
}
""", ["neuron 'N'", "depends on v and a", "adaptive thresholds"]),
    ("""neuron N {
    param tau = 10 ms
    state v = 0
    state a = 0
    input I
    dv/dt = (-v + I - a) / tau
    da/dt = -a / (100 ms)
    spike v >= 1
    reset v = 0; a += 0.1
}
""", ["its reset changes 'a'", "adaptive"]),
    (LIF.replace("LIF", "N").replace("reset v = 0", "reset v -= 1"),
     ["subtractive reset", "allow_approx resets to 0"]),
    (LIF.replace("LIF", "N").replace("reset v = 0", "reset v = 0\n    refractory 2 ms"),
     ["refractory period"]),
    (LIF.replace("LIF", "N").replace("reset v = 0\n", ""),
     ["it has no reset"]),
    ("""neuron N {
    state a = 0
    state b = 0
    state v = 0
    input I
    update a = 0.5 * a + I
    update b = 0.5 * b + a
    update v = 0.5 * v + b
    spike v > 1
    reset v = 0
}
""", ["3 states"]),
])
def test_neuron_refusals_name_neuron_line_and_reason(neuron, fragments):
    refused(net_of(neuron, BODY), *fragments, line=1)


def test_structural_refusals():
    lif = LIF.replace("LIF", "N")
    refused(net_of(lif, "    input x[3] : spikes\n    layer h[4] = N <- dense(x, delay = 2)\n"
                   "    output h"), "delay of 2 steps")
    refused(net_of(lif, "    input x[1, 6, 6] : spikes\n    layer m = maxpool2d(x, 2)\n"
                   "    layer f = flatten(m)\n    layer h[4] = N <- dense(f)\n    output h"),
            "max pooling", line=13)
    refused(net_of(lif, "    input x[3] : spikes\n    layer b = batchnorm(x)\n"
                   "    layer h[4] = N <- dense(b)\n    output h"), "batch normalisation")
    refused(net_of(lif, "    input x[3] : spikes\n    layer c = slstm(x, hidden = 4)\n"
                   "    output c"), "LSTM")
    refused(net_of(lif, "    input x[3] : spikes\n    layer h[4] = N <- dense(x)\n"
                   "    layer o[2] = N <- dense(h.v)\n    output o"), "reads the state 'h.v'")
    refused(net_of(lif, BODY + "\n    output h.v"), "output 'h.v'", "spikes only")
    refused(net_of(lif, BODY.replace("output h", "output sum(h)")), "no reduction over time")
    refused(net_of(lif, "    input x[3] : spikes\n    layer y[2] = sigmoid(dense(x))\n"
                   "    output y"), "elementwise 'sigmoid'")
    refused(net_of(lif, "    input x[3] : spikes\n    layer a[4] = N <- dense(x) + dense(b)\n"
                   "    layer b[4] = N <- dense(x)\n    output a"),
            "form no cycle")
    two = """neuron N {
    state v = 0
    input I_exc
    input I_inh
    update v = 0.9 * v + I_exc - I_inh
    spike v > 1
    reset v = 0
}
"""
    refused(net_of(two, "    input x[3] : spikes\n    layer h[4] = N <- dense(x) + dense(x)"
                   " -> I_inh\n    output h"), "several inputs")
    # one of the inputs unused: fine (it is zero)
    nir_target.export(net_of(two, BODY), weights=random_weights(net_of(two, BODY)))


def test_allow_approx_lists_every_change(tmp_path):
    lif = LIF.replace("LIF", "N").replace("reset v = 0", "reset v -= 1\n    refractory 2 ms")
    net = net_of(lif, BODY + "\n    output h.v\n    output sum(h)")
    W = random_weights(net)
    g, notes = nir_target.export(net, weights=W, allow_approx=True)
    text = "\n".join(notes)
    for f in ("refractory period dropped", "subtractive reset replaced", "output 'h.v': dropped",
              "no reduction over time"):
        assert f in text, text
    assert g.metadata["notes"] == text
    nir.write(str(tmp_path / "a.nir"), g)
    nir.read(str(tmp_path / "a.nir"))


def test_weights_from_npz_and_checkpoints(tmp_path):
    torch = pytest.importorskip("torch")
    net = net_of(LIF, "    input x[3] : spikes\n    layer h[4] = LIF <- dense(x)\n    output h")
    W = random_weights(net, seed=5)
    np.savez(tmp_path / "w.npz", **W)
    torch.save({"model": {k: torch.as_tensor(v) for k, v in W.items()}, "epoch": 3},
               tmp_path / "checkpoint.pt")
    torch.save({k: torch.as_tensor(v) for k, v in W.items()}, tmp_path / "state.pt")
    for src in (W, str(tmp_path / "w.npz"), str(tmp_path / "checkpoint.pt"),
                str(tmp_path / "state.pt")):
        g, _ = nir_target.export(net, weights=src)
        np.testing.assert_array_equal(g.nodes["w_h"].weight, W["h.weight"])
        np.testing.assert_array_equal(g.nodes["w_h"].bias, W["h.bias"])
    (tmp_path / "bad.pt").write_text("nope")
    with pytest.raises(spikedsl.SpecError) as e:
        nir_target.export(net, weights=str(tmp_path / "bad.pt"))
    assert e.value.codes == ["weights-file"]
    with pytest.raises(spikedsl.SpecError) as e:
        nir_target.export(net, weights={"h.weight": np.ones((2, 2)), "h.bias": np.ones(4)})
    assert e.value.codes == ["weights-shape"]
    # no weights: the torch target's initialisation, and a note says so
    g, notes = nir_target.export(net)
    assert any("no weights given" in n for n in notes)


def test_sparse_and_one_to_one_export_roundtrip(tmp_path):
    net = net_of(LIF, "    input x[6] : spikes\n    layer h[6] = LIF <- sparse(x, p = 0.5, "
                 "weight = 1.5) + one_to_one(x, weight = 0.7)\n    output h", steps=20)
    W = random_weights(net)
    path = str(tmp_path / "s.nir")
    nir_target.write(net, path, weights=W)
    g = nir.read(path)
    assert {type(v).__name__ for v in g.nodes.values()} >= {"Linear", "Scale"}
    r = nir_import.write_import(path, str(tmp_path / "s.spk"))
    net2 = spikedsl.load(str(tmp_path / "s.spk")).network("Imported").ir
    x = random_inputs(net, net.steps, p=0.5)
    a = reference(net, x, W)["h"]
    b = reference(net2, {net2.inputs[0].name: x["x"]}, None)[r.outputs["out_h"]]
    assert a.sum() > 0
    np.testing.assert_array_equal(a, b)


def test_unitless_network_dt_and_metadata(tmp_path):
    leaky = """neuron L {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
}
"""
    text = leaky + "network Net {\n    steps = 5\n    input x[3] : spikes\n" \
                   "    layer h[2] = L <- dense(x)\n    output h\n}\n"
    net = spikedsl.loads(text).network("Net").ir
    g, notes = nir_target.export(net, weights=random_weights(net), dt=1e-3)
    np.testing.assert_allclose(g.nodes["h"].tau, 1e-3 / 0.1)
    assert g.metadata["dt"] == 1e-3 and g.metadata["layer_order"] == "x,h"
    assert g.nodes["h"].metadata["discretization"] == "euler"
    assert not any("no time unit" in n for n in notes)


def test_compile_and_to_nir_entry_points(tmp_path):
    prog = spikedsl.loads(LIF + "network Net {\n    dt = 1 ms\n    steps = 5\n"
                          "    input x[3] : spikes\n    layer h[2] = LIF <- dense(x)\n"
                          "    output h\n}\n")
    g = prog.network("Net").to_nir()
    assert isinstance(g, nir.NIRGraph)


class _Result:
    def __init__(self, rc, out, err):
        self.returncode, self.stdout, self.stderr = rc, out, err


def run_cli(*argv):
    """The command line in this process (the subprocess path, including 'no
    traceback', is tested in test_nir_import_errors.py)."""
    import contextlib
    import io

    from spikedsl.cli import main

    out, err = io.StringIO(), io.StringIO()
    os.environ.pop("SPIKEDSL_DEBUG", None)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code
    return _Result(rc, out.getvalue(), err.getvalue())


def test_cli_export_and_import(tmp_path):
    torch = pytest.importorskip("torch")
    spec = tmp_path / "m.spk"
    spec.write_text(LIF + "network Net {\n    dt = 1 ms\n    steps = 5\n"
                    "    input x[3] : spikes\n    layer h[2] = LIF <- dense(x)\n"
                    "    output h\n}\n")
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    W = {"h.weight": np.full((2, 3), 0.5), "h.bias": np.zeros(2)}
    torch.save({"model": {k: torch.as_tensor(v) for k, v in W.items()}},
               run / "checkpoint.pt")
    out = tmp_path / "m.nir"
    r = run_cli("export-nir", str(spec), "--weights", str(run), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    np.testing.assert_array_equal(nir.read(str(out)).nodes["w_h"].weight, W["h.weight"])
    r = run_cli("import-nir", str(out), "-o", str(tmp_path / "back.spk"))
    assert r.returncode == 0, r.stderr
    back = spikedsl.load(str(tmp_path / "back.spk")).network("Imported").ir
    assert back.dt == 1e-3
    bad = tmp_path / "bad.spk"
    bad.write_text(LIF.replace("reset v = 0", "reset v -= 1") + "network Net {\n    dt = 1 ms\n"
                   "    steps = 5\n    input x[3] : spikes\n    layer h[2] = LIF <- dense(x)\n"
                   "    output h\n}\n")
    r = run_cli("export-nir", str(bad), "-o", str(tmp_path / "bad.nir"))
    assert r.returncode == 1
    assert "bad.spk:1:1: error: NIR cannot express neuron 'LIF'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad.nir").exists()
    r = run_cli("export-nir", str(bad), "--allow-approx", "-o", str(tmp_path / "bad.nir"))
    assert r.returncode == 0 and "subtractive reset replaced" in r.stderr
    r = run_cli("export-nir", str(spec), "--network", "Nope", "-o", str(out))
    assert r.returncode == 2
