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
