"""The target registry (spikedsl.targets): declared capabilities, and one answer to
"can target T run this network?" that every entry point gives with the same text
(Python API, registry calls, `spikedsl compile / export-nir / simulate`, test
blocks, `verify`), quickly when it is a refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import spikedsl
from spikedsl import targets
from spikedsl.cli import main as cli
from spikedsl.errors import Unsupported
from spikedsl.runtime import testing
from spikedsl.runtime.verify import verify

ROOT = Path(__file__).resolve().parents[1]
HH = (ROOT / "specs" / "neurons" / "hodgkin_huxley.spk").read_text().split("\ntest ")[0]

NEURONS = HH + """
neuron LIF {
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method exact
    spike v >= 1
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}
neuron LIF25 {
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method exact
    spike v >= 1
    reset v = 0
}
synapse Hebb {
    state a = 0
    on_pre { w = w + 0.01 }
}
"""

NETWORKS = {
    # 5 states: the torch target, Brian2 and the reference run it; Norse and NIR refuse
    "hh": """    dt = 0.01 ms
    input x[2] : direct
    layer h[2] = HodgkinHuxley <- dense(x)
    output h""",
    "cell": """    input x[3] : spikes
    layer c = slstm(x, hidden = 2)
    output c""",
    "plastic": """    input x[3] : spikes
    layer h[2] = LIF <- dense(x)
    output h
    plasticity Hebb on x -> h""",
    "conv": """    input x[1, 6, 6] : spikes
    layer c = LIF <- conv2d(x, channels = 2, kernel = 3)
    layer p = avgpool2d(c, 2)
    layer f = flatten(p)
    layer o[3] = LIF <- dense(f)
    output o""",
    "maxpool": """    input x[1, 4, 4] : spikes
    layer m = maxpool2d(x, 2)
    layer f = flatten(m)
    layer y[2] = sigmoid(dense(f))
    layer o[2] = LIF <- dense(y)
    output o""",
    # Norse: no counterpart of the default surrogate for gradients, any surrogate forward
    "surrogate": """    input x[3] : spikes
    layer h[2] = LIF25 <- dense(x)
    output h""",
    # NIR: a membrane of a spiking layer cannot be exported (a run reads the spikes)
    "membrane": """    input x[3] : spikes
    layer h[2] = LIF <- dense(x)
    output h
    output h.v""",
}

# what each target does with each network: None = runs it, else a fragment of the refusal
# (gradient entry points first, then forward runs where they differ)
EXPECTED = {
    "hh": {"norse": "it has 6 states", "nir": "its rk4 step is not linear",
           "nest": "no NEST built-in has its dynamics"},
    "cell": {"norse": "the slstm cell 'c'", "brian2": "the slstm cell 'c'",
             "nir": "the slstm cell 'c'", "nest": "the slstm cell 'c'"},
    "plastic": {"norse": "plasticity on the dense projection 'h'",
                "nir": "plasticity on the dense projection 'h'",
                "nest": "plasticity on the dense projection 'h'"},
    "conv": {"nest": "layer 'p' (avgpool2d): NEST networks hold neurons only"},
    "maxpool": {"nir": "layer 'm' (maxpool2d): NIR has no max pooling node",
                "nest": "layer 'm' (maxpool2d): NEST networks hold neurons only"},
    "surrogate": {"norse": ("its surrogate fast_sigmoid(slope = 25) has no Norse counterpart",
                            None)},
    "membrane": {"nir": ("output 'h.v'", None)},
}


def text_of(key: str) -> str:
    body = NETWORKS[key] if "dt =" in NETWORKS[key] else "    dt = 1 ms\n" + NETWORKS[key]
    return NEURONS + f"network Net {{\n    steps = 3\n{body}\n}}\n"


def message(e: Exception) -> str:
    assert isinstance(e, Unsupported), f"{type(e).__name__}: {e}"  # a crash is a failure
    return e.diagnostics[0].message


def outcome(fn) -> str | None:
    try:
        fn()
    except Unsupported as e:
        return message(e)
    return None


def cli_outcome(args, capsys) -> str | None:
    code = cli(args)
    err = capsys.readouterr().err
    if code == 0:
        return None
    assert code == 1, err
    line = next(ln for ln in err.splitlines() if "error: " in ln)
    return line.split("error: ", 1)[1]


def inputs_of(net):
    rng = np.random.default_rng(0)
    return {la.name: (rng.random((net.steps, 2) + la.shape) < 0.5).astype(np.float64)
            for la in net.inputs}


def test_capabilities_cover_the_language():
    from spikedsl.lowering import network as low

    assert targets.PROJECTIONS == set(low.PROJECTIONS)
    assert targets.STAGES == set(low.STAGES)
    assert targets.CELLS == set(low.CELLS)
    assert targets.ENCODERS == set(low.ENCODERS)
    assert targets.NAMES == ("reference", "torch", "norse", "brian2", "nir", "nest")
    assert targets.GENERATORS == ("torch", "norse", "brian2", "nir")
    caps = targets.get("torch").caps
    assert caps.cells == targets.CELLS and caps.stages == targets.STAGES and caps.gradients
    assert targets.get("nir").caps.stages == {"avgpool2d", "sumpool2d", "flatten", "dropout"}
    assert targets.get("norse").caps.states == (1, 2) and not targets.get("norse").caps.cells
    assert targets.get("brian2").caps.units and "cpp_standalone" in targets.get(
        "brian2").caps.devices
    nest = targets.get("nest").caps
    assert not nest.stages and not nest.cells and not nest.plasticity and nest.partial_traces
    assert "schedule" in targets.get("nest").entries and "source" not in targets.get("nest").entries
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        targets.get("tpu")


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_every_entry_point_gives_the_same_answer(key, tmp_path, capsys):
    spec = tmp_path / f"{key}.spk"
    spec.write_text(text_of(key))
    handle = spikedsl.load(spec).network("Net")
    net = handle.ir
    x = inputs_of(net)
    for name in targets.NAMES:
        if targets.unavailable(name):
            continue
        t0 = time.perf_counter()
        want = targets.refusal(name, net)
        seconds = time.perf_counter() - t0
        want = want and message(want)
        want_fwd = targets.refusal(name, net, forward_only=True)
        want_fwd = want_fwd and message(want_fwd)
        exp = EXPECTED[key].get(name)
        exp, exp_fwd = exp if isinstance(exp, tuple) else (exp, exp)
        for got, frag in ((want, exp), (want_fwd, exp_fwd)):
            if frag is None:
                assert got is None, (name, got)
            else:
                assert got is not None and frag in got, (name, got)
                assert got.startswith(f"{targets.get(name).title} cannot express "), got
        if want is not None:
            assert seconds < 1.0, (name, seconds)
        # code generation and the Python API: the answer without options
        gen = {}
        if name in targets.GENERATORS:
            gen["source"] = outcome(lambda: handle.source(name))
            out = tmp_path / f"{name}.out"
            gen["compile"] = cli_outcome(["compile", str(spec), "-t", name, "-o", str(out)],
                                         capsys)
        if name in ("torch", "norse", "nir"):
            gen["build"] = outcome(lambda: targets.build(name, net))
            gen["to_" + name] = outcome(lambda: getattr(handle, f"to_{name}")())
        if name == "nir":
            gen["export-nir"] = cli_outcome(["export-nir", str(spec), "-o",
                                             str(tmp_path / "g.nir")], capsys)
        for k, got in gen.items():
            assert got == want, (name, k, got, want)
        # runs without gradients: registry, test blocks, verify, simulate
        fwd = {"run": outcome(lambda: targets.run(name, net, x))}
        try:
            testing.run_target(name, net, x)
            fwd["run_target"] = None
        except testing.Skip as s:
            fwd["run_target"] = str(s)
        rep = verify(net, targets=[name], steps=3)
        assert rep.runs[0].status in ("ok", "skip"), rep.runs[0].reason
        fwd["verify"] = rep.runs[0].reason or None
        if name == "brian2":
            fwd["to_brian2"] = outcome(lambda: handle.to_brian2(inputs=x))
        if name in ("brian2", "torch"):
            fwd["simulate"] = cli_outcome(["simulate", str(spec), "-t", name, "--samples", "2"],
                                          capsys)
        for k, got in fwd.items():
            assert got == want_fwd, (name, k, got, want_fwd)


def test_a_neuron_is_checked_against_the_declared_capabilities():
    prog = spikedsl.loads(text_of("hh"))
    hh = prog.network("Net").ir.layer("h").neuron
    assert targets.refusal("torch", hh) is None and targets.refusal("brian2", hh) is None
    e = targets.refusal("norse", hh, file="hh.spk")
    assert message(e) == ("Norse cannot express neuron 'HodgkinHuxley': it has 6 states; Norse's "
                          "cells have one or two")
    assert e.diagnostics[0].loc.file == "hh.spk"


def test_refractory_is_refused_by_norse_and_dropped_by_nir_with_allow_approx():
    text = text_of("conv").replace("reset v = 0\n    surrogate fast_sigmoid(slope = 1)",
                                   "reset v = 0\n    refractory 2 ms\n"
                                   "    surrogate fast_sigmoid(slope = 1)", 1)
    net = spikedsl.loads(text).network("Net").ir
    assert "refractory period; Norse's LIFRefracCell" in message(targets.refusal("norse", net))
    assert "(allow_approx drops it)" in message(targets.refusal("nir", net))
    if not targets.unavailable("nir"):
        assert targets.refusal("nir", net, allow_approx=True) is None


def test_declared_refusals_import_no_target_library():
    code = ("import sys, spikedsl\n"
            "from spikedsl import targets\n"
            f"net = spikedsl.loads({text_of('cell')!r}).network().ir\n"
            "for t in ('norse', 'brian2', 'nir'):\n"
            "    assert 'slstm' in targets.refusal(t, net).diagnostics[0].message\n"
            "assert not {'torch', 'brian2', 'nir', 'norse'} & set(sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr


def test_generated_norse_module_passes_ruff(tmp_path):
    if targets.unavailable("norse"):
        pytest.skip(targets.unavailable("norse"))
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    files = []
    for key in ("conv", "membrane"):
        p = tmp_path / f"{key}.py"
        p.write_text(spikedsl.loads(text_of(key)).network().source("norse"))
        files.append(str(p))
    r = subprocess.run([ruff, "check", "--isolated", *files], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("target", ["nir", "norse", "nest"])
def test_the_refusal_of_an_imported_neuron_points_at_its_own_file(target, tmp_path, capsys):
    """A neuron defined in another file is refused at its line in that file
    (not at that line number of the network's file)."""
    if targets.unavailable(target):
        pytest.skip(targets.unavailable(target))
    (tmp_path / "n.spk").write_text(
        "# neurons\n\nneuron Q {\n    param tau = 10 ms\n    state v = 0\n    state w = 0\n"
        "    input I\n    dv/dt = (-v + I + v*w) / tau\n    dw/dt = -w / tau\n"
        "    spike v >= 1\n    reset v = 0\n}\n")
    (tmp_path / "net.spk").write_text(
        'import "n.spk"\nnetwork N {\n    dt = 1 ms\n    steps = 5\n    input x[2] : direct\n'
        "    layer h[2] = Q <- dense(x)\n    output h\n}\n")
    net = spikedsl.load(str(tmp_path / "net.spk")).network("N").ir
    err = targets.refusal(target, net)
    assert err is not None
    text = err.render() if hasattr(err, "render") else str(err)
    assert f"{tmp_path / 'n.spk'}:3:1: error:" in text, text
    assert "neuron Q {" in text, text
    if target == "nest":  # the command line gives the same answer, no traceback
        code = cli(["simulate", str(tmp_path / "net.spk"), "-t", "nest"])
        err = capsys.readouterr().err
        assert code == 1 and f"{tmp_path / 'n.spk'}:3:1: error: NEST cannot express" in err, err
        assert "Traceback" not in err
