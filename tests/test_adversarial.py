"""Bad input, replayed case by case: exit code, no traceback, the user's path
or file:line:col in the message, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NET = """neuron N {
    param tau = 10 ms
    state v = 0
    input I
    dv/dt = (I - v) / tau
    spike v >= 1
    reset v = 0
}
network Net {
    dt    = 1 ms
    steps = 5
    input x[64] : direct
    layer h[10] = N <- dense(x)
    output h
}
train run {
    network = Net
    data    = digits
    epochs  = 1
}
"""


def spikedsl(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPIKEDSL_CACHE="off")
    env.pop("SPIKEDSL_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "spikedsl", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, env=env, timeout=300, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture()
def spec(tmp_path):
    p = tmp_path / "net.spk"
    p.write_text(NET)
    return p


def test_non_utf8_file_names_the_file_and_byte(tmp_path):
    p = tmp_path / "bad.spk"
    p.write_bytes(b"neuron N {\n    state v = 0  # caf\xe9\n}\n")
    r = spikedsl("check", p, cwd=tmp_path)
    assert r.returncode == 1
    assert f"{p}:2:23: error: the file is not UTF-8 text: byte 0xe9 at offset 33" in r.stderr
    assert "hint: save the file as UTF-8" in r.stderr


def test_a_directory_is_not_no_such_file(tmp_path):
    d = tmp_path / "dir.spk"
    d.mkdir()
    r = spikedsl("check", d, cwd=tmp_path)
    assert r.returncode == 2
    assert f"{d} is a directory, not a file" in r.stderr
    r = spikedsl("import-nir", d, "-o", tmp_path / "x.spk", cwd=tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr


def test_compile_into_a_directory_leaves_nothing_and_names_the_path(spec, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = spikedsl("compile", "--target", "torch", spec, "-o", out, cwd=tmp_path)
    assert r.returncode == 1
    assert f"cannot write {out}: Is a directory" in r.stderr
    assert ".tmp" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["net.spk", "out"]
    assert os.listdir(out) == []


def test_compile_into_a_missing_directory(spec, tmp_path):
    target = tmp_path / "nope" / "m.py"
    r = spikedsl("compile", "--target", "torch", spec, "-o", target, cwd=tmp_path)
    assert r.returncode == 1
    assert f"cannot write {target}: No such file or directory" in r.stderr


def test_truncated_nir_file(spec, tmp_path):
    pytest.importorskip("nir")
    good = tmp_path / "net.nir"
    assert spikedsl("export-nir", spec, "-o", good, cwd=tmp_path).returncode == 0
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    cut = tmp_path / "cut.nir"
    cut.write_bytes(good.read_bytes()[:2000])
    r = spikedsl("import-nir", cut, "-o", tmp_path / "imp.spk", cwd=tmp_path)
    assert r.returncode == 1
    assert "truncated HDF5 file (2000 bytes)" in r.stderr
    r = spikedsl("import-nir", spec, "-o", tmp_path / "imp.spk", cwd=tmp_path)
    assert r.returncode == 1 and "not an HDF5 file" in r.stderr
    assert not (tmp_path / "imp.spk").exists()


def test_resume_without_checkpoint_leaves_no_run_directory(spec, tmp_path):
    r = spikedsl("train", spec, "--resume", "--run", "r1", cwd=tmp_path)
    assert r.returncode == 1
    assert "no checkpoint to resume from" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_cuda_on_a_cpu_machine_is_refused_by_every_command(spec, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for cmd in (["simulate", "-t", "torch", "-d", "cuda", spec],
                ["train", spec, "--device", "cuda", "--limit", "10"]):
        r = spikedsl(*cmd, cwd=tmp_path)
        assert r.returncode == 1, cmd
        assert "device cuda was asked for, but CUDA is not available" in r.stderr
        assert "SPIKEDSL_DEBUG" not in r.stderr


def test_physically_meaningless_override(tmp_path):
    p = tmp_path / "o.spk"
    p.write_text(NET.replace("N <- dense(x)", "N(tau = -2 ms) <- dense(x)"))
    r = spikedsl("check", p, cwd=tmp_path)
    assert r.returncode == 1
    assert f"{p}:13:27: error: parameter 'tau' must be positive" in r.stderr


def test_huge_expression_is_located_not_a_recursion_error(tmp_path):
    p = tmp_path / "deep.spk"
    p.write_text(NET.replace("(I - v) / tau", "(" + " + ".join(["v"] * 1000) + ") / tau"))
    r = spikedsl("check", p, cwd=tmp_path)
    assert r.returncode == 1
    assert f"{p}:5:13: error: expression nested too deeply" in r.stderr
    assert "recursion" not in r.stderr


def test_literal_overflow(tmp_path):
    p = tmp_path / "big.spk"
    p.write_text(NET.replace("param tau = 10 ms", "param tau = 1e400 ms"))
    r = spikedsl("check", p, cwd=tmp_path)
    assert r.returncode == 1
    assert f"{p}:2:17: error: number 1e400 is out of range" in r.stderr


def test_a_file_with_several_networks_is_a_usage_error_everywhere(tmp_path):
    two = NET + NET.split("train run")[0].split("}\n", 1)[1].replace("network Net", "network Other")
    p = tmp_path / "two.spk"
    p.write_text(two)
    for cmd in (["compile", "--target", "torch"], ["simulate", "-t", "torch"],
                ["export-nir", "-o", tmp_path / "x.nir"]):
        r = spikedsl(*cmd, p, cwd=tmp_path)
        assert r.returncode == 2, cmd
        assert "has networks Net, Other; name one (--network on the command line)" in r.stderr
    assert not (tmp_path / "x.nir").exists()


# ---------------------------------------------------------------- inputs and weights
# One network every target runs (a LIF equal to Norse's and NIR's), a spike input,
# a trainable time constant with a range: the same data must be accepted or refused,
# with the same message, by every target (spikedsl/runtime/validate.py).
RUN = """neuron N {
    param tau = 5 ms [trainable, range(1 ms, 100 ms)]
    state v = 0
    input I
    dv/dt = -v / tau
    jump_placeholder
    spike v >= 1
    reset v = 0
}
network Net {
    dt    = 1 ms
    steps = 20
    input x[4] : spikes
    layer h[3] = N <- dense(x, init = uniform(0.5, 1.5))
    output h
}
"""
RUN = RUN.replace("    dv/dt = -v / tau\n    jump_placeholder\n", "    dv/dt = (I - v) / tau\n")
OTHER = RUN.replace("layer h[3]", "layer o[3]").replace("output h", "output o")


def _available():
    from spikedsl import targets

    return [t for t in targets.NAMES if targets.unavailable(t) is None]


def _net(tmp_path, text=RUN, name="run.spk"):
    from spikedsl.frontend.program import load

    p = tmp_path / name
    p.write_text(text)
    return load(p).network().ir


def _spikes(T, B=2, seed=0):
    import numpy as np

    return (np.random.default_rng(seed).random((T, B, 4)) < 0.5).astype(float)


def _refusals(net, x, weights=None):
    """{target: message} of every available target, each refusing."""
    from spikedsl import targets
    from spikedsl.errors import InvalidData

    out = {}
    for t in _available():
        with pytest.raises(InvalidData) as e:
            targets.run(t, net, {"x": x}, weights=weights)
        out[t] = str(e.value)
    return out


def _weights_file(tmp_path, net, name, change):
    import numpy as np

    from spikedsl.lowering.weights import init_weights

    w = init_weights(net)
    change(w)
    p = tmp_path / name
    np.savez(p, **w)
    return p


def _drop(k):
    return lambda w: w.pop(k)


def _set(k, v):
    def f(w):
        w[k] = w[k] * 0 + v if hasattr(w[k], "shape") else v
    return f


WEIGHT_CASES = {
    "missing": (_drop("h.weight"), "has no entry 'h.weight'"),
    "extra": (lambda w: w.update({"zzz.weight": w["h.bias"]}),
              "has an entry 'zzz.weight' that network 'Net' does not have"),
    "nan": (lambda w: w["h.weight"].__setitem__((0, 0), float("nan")),
            "entry 'h.weight' holds 1 NaN or infinite value(s)"),
    "inf-bias": (lambda w: w["h.bias"].__setitem__(1, float("inf")),
                 "entry 'h.bias' holds 1 NaN or infinite value(s)"),
    "tau-zero": (_set("h.tau", 0.0),
                 "entry 'h.tau' holds 0, outside the range [0.001, 0.1] of parameter 'tau'"),
    "shape": (lambda w: w.update({"h.weight": w["h.weight"].T}),
              "entry 'h.weight' has shape [4, 3], network 'Net' expects [3, 4]"),
}


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_bad_weights_file_is_refused_alike_by_every_target(tmp_path, case):
    net = _net(tmp_path)
    change, expected = WEIGHT_CASES[case]
    path = _weights_file(tmp_path, net, f"{case}.npz", change)
    msgs = _refusals(net, _spikes(20), weights=str(path))
    assert len(set(msgs.values())) == 1, msgs
    msg = next(iter(msgs.values()))
    assert f"weights file '{path}'" in msg and expected in msg, msg


def test_another_networks_weights_are_refused(tmp_path):
    net = _net(tmp_path)
    other = _net(tmp_path, OTHER, "other.spk")
    path = _weights_file(tmp_path, other, "other.npz", lambda w: None)
    msgs = _refusals(net, _spikes(20), weights=str(path))
    assert len(set(msgs.values())) == 1, msgs
    msg = next(iter(msgs.values()))
    assert "has no entries 'h.weight', 'h.bias', 'h.tau'" in msg
    assert "has entries 'o.weight', 'o.bias', 'o.tau' that network 'Net' does not have" in msg


def test_a_weights_dict_may_leave_arrays_out_but_not_add_any(tmp_path):
    import numpy as np

    from spikedsl import targets
    from spikedsl.errors import InvalidData
    from spikedsl.lowering.weights import init_weights

    net = _net(tmp_path)
    x = _spikes(20)
    w = init_weights(net, seed=0)
    full = {t: targets.run(t, net, {"x": x}, weights=w)["h"] for t in _available()}
    part = {t: targets.run(t, net, {"x": x}, weights={"h.weight": w["h.weight"]})["h"]
            for t in _available()}
    for t in full:
        assert full[t].sum() > 5, t
        np.testing.assert_array_equal(part[t], full[t])
    with pytest.raises(InvalidData, match="the weights argument has an entry 'nope'"):
        targets.run("reference", net, {"x": x}, weights={"nope": np.zeros(3)})


@pytest.mark.parametrize("target", ["torch", "brian2"])
def test_simulate_refuses_a_weights_file_without_an_array(tmp_path, target):
    pytest.importorskip("torch" if target == "torch" else "brian2")
    spec = tmp_path / "run.spk"
    spec.write_text(RUN)
    path = _weights_file(tmp_path, _net(tmp_path), "missing.npz", _drop("h.weight"))
    before = sorted(os.listdir(tmp_path))
    r = spikedsl("simulate", spec, "-t", target, "-w", path, "--samples", "2", cwd=tmp_path)
    assert r.returncode == 1
    assert f"error: weights file '{path}' has no entry 'h.weight'" in r.stderr
    assert "Brian 2" not in r.stderr and "SPIKEDSL_DEBUG" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_verify_refuses_nan_weights(tmp_path):
    spec = tmp_path / "run.spk"
    spec.write_text(RUN)
    path = _weights_file(tmp_path, _net(tmp_path), "nan.npz",
                         WEIGHT_CASES["nan"][0])
    r = spikedsl("verify", spec, "--weights", path, "-t", "reference", cwd=tmp_path)
    assert r.returncode == 1
    assert f"weights file '{path}': entry 'h.weight' holds 1 NaN" in r.stderr
    assert "0 ok" not in r.stdout


@pytest.mark.parametrize("T", [7, 45])
def test_a_run_lasts_the_steps_of_its_inputs_on_every_target(tmp_path, T):
    import numpy as np

    from spikedsl import targets

    net = _net(tmp_path)
    assert net.steps == 20
    x = _spikes(T)
    outs = {t: targets.run(t, net, {"x": x}, record=["h.v"] if t != "nir" else None)
            for t in _available()}
    ref = outs["reference"]
    assert ref["h"].shape == (T, 2, 3) and ref["h"].sum() >= 3
    for t, out in outs.items():
        assert out["h"].shape == (T, 2, 3), t
        np.testing.assert_array_equal(out["h"], ref["h"], err_msg=t)
        if "h.v" in out:
            np.testing.assert_allclose(out["h.v"], ref["h.v"], atol=1e-5, err_msg=t)


def _bad_inputs():
    import numpy as np

    nan = _spikes(20)
    nan[3, 1, 2] = np.nan
    graded = _spikes(20)
    graded[0, 0, 0] = 0.5
    return {
        "T = 0": (np.zeros((0, 2, 4)), "input 'x' has no time steps (T = 0, shape [0, 2, 4])"),
        "B = 0": (np.zeros((20, 0, 4)), "input 'x' has no samples (B = 0"),
        "features": (np.zeros((20, 2, 5)),
                     "input 'x' has shape [20, 2, 5]; network 'Net' expects [T, B, 4] "
                     "(encoded) or [B, 4] (raw)"),
        "nan": (nan, "input 'x' holds 1 NaN or infinite value(s) (the first at index "
                     "[3, 1, 2])"),
        "graded": (graded, "input 'x' uses the 'spikes' encoder, but holds 0.5"),
        "raw spikes": (np.zeros((2, 4)), "input 'x' uses the 'spikes' encoder: give spike "
                                         "trains [T, B, 4], got shape [2, 4]"),
    }


@pytest.mark.parametrize("case", ["T = 0", "B = 0", "features", "nan", "graded",
                                  "raw spikes"])
def test_bad_inputs_are_refused_alike_by_every_target(tmp_path, case):
    net = _net(tmp_path)
    x, expected = _bad_inputs()[case]
    msgs = _refusals(net, x)
    assert set(msgs) >= {"reference"}
    assert len(set(msgs.values())) == 1, msgs
    assert expected in next(iter(msgs.values()))


def test_bad_inputs_never_reach_brian2(tmp_path):
    """A refusal happens before Brian2 is imported: no "Brian 2 encountered an
    unexpected error", no debug log."""
    pytest.importorskip("brian2")
    spec = tmp_path / "run.spk"
    spec.write_text(RUN)
    script = tmp_path / "bad.py"
    script.write_text(
        "import sys\nimport numpy as np\nfrom spikedsl import targets\n"
        "from spikedsl.frontend.program import load\n"
        f"net = load({str(spec)!r}).network().ir\n"
        "x = np.full((20, 1, 4), 0.5)\n"
        "targets.run('brian2', net, {'x': x})\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPIKEDSL_CACHE="off", TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       env=env, timeout=300, check=False)
    assert r.returncode == 1
    assert "InvalidData" in r.stderr and "holds 0.5" in r.stderr
    assert "Brian 2 encountered" not in r.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith("brian_debug")]


# ---------------------------------------------------------------- names
# Names that a target uses itself are renamed in its code: the runs agree.
NAMED = """neuron N {
    param tau = 5 ms
    param PNAME = 1.5
    state SNAME = 0
    input I
    dSNAME/dt = (PNAME * I - SNAME) / tau
    spike SNAME >= 1
    reset SNAME = 0
}
network Net {
    dt    = 1 ms
    steps = 30
    input x[4] : spikes
    layer LNAME[3] = N <- dense(x, init = uniform(1.0, 2.0))
    output LNAME
}
"""


@pytest.mark.parametrize("param,state,layer", [
    ("r", "w", "h"),  # AdEx's adaptation variable: the weight of a Brian2 synapse
    ("xi", "v", "h"),  # Brian2's noise term (and xi_1, xi_2, ...)
    ("self", "v", "h"),  # an argument of Brian2's code templates; torch's module
    ("owner", "scalar_code", "self"),
    ("r", "v", "F"),  # a unit (renamed by the NIR import)
])
def test_reserved_names_are_renamed_on_every_target(tmp_path, param, state, layer):
    import numpy as np

    from spikedsl import targets

    text = NAMED.replace("PNAME", param).replace("SNAME", state).replace("LNAME", layer)
    net = _net(tmp_path, text)
    x = _spikes(30)
    outs = {t: targets.run(t, net, {"x": x}) for t in _available()}
    ref = outs["reference"][layer]
    assert ref.sum() >= 10
    for t, out in outs.items():
        np.testing.assert_array_equal(out[layer], ref, err_msg=t)


def test_a_layer_named_forward_is_refused_at_its_name(tmp_path):
    from spikedsl import targets

    text = NAMED.replace("PNAME", "r").replace("SNAME", "v").replace("LNAME", "forward")
    net = _net(tmp_path, text)
    for t in _available():
        err = targets.refusal(t, net)
        if t in ("torch", "norse"):
            assert err is not None
            assert str(err).startswith(f"{tmp_path / 'run.spk'}:14:11: error: "), str(err)
            assert "layer name 'forward'" in str(err)
        else:
            assert err is None, (t, err)
            assert targets.run(t, net, {"x": _spikes(30)})["forward"].sum() >= 10
    r = spikedsl("compile", "-t", "torch", tmp_path / "run.spk", "-o", tmp_path / "m.py",
                 cwd=tmp_path)
    assert r.returncode == 1 and ":14:11: error: torch cannot express layer name" in r.stderr
    assert not (tmp_path / "m.py").exists()


def test_dt_zero_is_one_error(tmp_path):
    p = tmp_path / "dt0.spk"
    p.write_text(NET.replace("dt    = 1 ms", "dt    = 0 ms"))
    r = spikedsl("check", p, cwd=tmp_path)
    assert r.returncode == 1
    assert f"{p}:10:13: error: dt: expected a positive duration" in r.stderr
    assert "must carry a time unit" not in r.stderr
    assert r.stderr.rstrip().endswith("1 error")


def test_compile_has_the_allow_approx_flag_its_refusal_names(tmp_path):
    pytest.importorskip("norse")
    p = tmp_path / "s.spk"
    p.write_text(RUN.replace("    reset v = 0\n", "    reset v = 0\n    surrogate sigmoid(slope = 5)\n"))
    r = spikedsl("compile", "-t", "norse", p, "-o", tmp_path / "m.py", cwd=tmp_path)
    assert r.returncode == 1 and "allow_approx uses 'super'" in r.stderr
    assert not (tmp_path / "m.py").exists()
    r = spikedsl("compile", "-t", "norse", "--allow-approx", p, "-o", tmp_path / "m.py",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "norse" in (tmp_path / "m.py").read_text()
