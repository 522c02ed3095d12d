"""The command line: exit codes, error format, no traceback, lazy imports, fmt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spikedsl.cli import main
from spikedsl.frontend.fmt import format_text

FIX = Path(__file__).parent / "fixtures"
GOOD = FIX / "valid" / "dim-dt.spk"


def run(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    return subprocess.run([sys.executable, "-m", "spikedsl.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_check_ok(capsys):
    assert main(["check", str(GOOD)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "network Net" in out


def test_check_verbose_says_method(capsys):
    assert main(["check", "-v", str(FIX / "valid" / "exact-nonlinear.spk")]) == 0
    assert "method euler (as written)" in capsys.readouterr().out


def test_spec_error_exit_1_and_format():
    bad = FIX / "invalid" / "dim-mismatch.spk"
    r = run("check", str(bad))
    assert r.returncode == 1
    assert f"{bad}:7:14: error: cannot add mV and nA" in r.stderr
    assert "^~~~" in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_error_exit_2():
    assert run("check").returncode == 2
    assert run("compile", str(GOOD)).returncode == 2  # --target missing
    r = run("check", "does/not/exist.spk")
    assert r.returncode == 2 and "no such file" in r.stderr
    assert run("frobnicate").returncode == 2


def test_all_errors_of_a_file_at_once(tmp_path):
    f = tmp_path / "many.spk"
    f.write_text("neuron A {\n param x = = 1\n state v = 0\n param y = ) \n}\n"
                 "neuron B {\n state v = 0\n dv/dt = foo(v)\n spike v\n}\n")
    r = run("check", str(f))
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
    assert [ln.split(": error:")[0].split(":", 1)[1] for ln in lines] == ["2:12", "4:12"]


def test_semantic_errors_all_at_once(tmp_path):
    f = tmp_path / "many.spk"
    f.write_text("neuron B {\n state v = 0\n dv/dt = foo(v)\n spike v\n}\n")
    r = run("check", str(f))
    assert "3:10: error: unknown function 'foo'" in r.stderr
    assert "4:8: error: the spike condition must be a comparison" in r.stderr
    assert "2 errors" in r.stderr


def test_binary_garbage_is_a_clean_error(tmp_path):
    f = tmp_path / "bin.spk"
    f.write_bytes(b"\xff\xfe\x00neuron")
    r = run("check", str(f))
    assert r.returncode == 1 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_ir_json_has_locations(capsys):
    assert main(["ir", str(GOOD)]) == 0
    data = json.loads(capsys.readouterr().out)
    neuron = data["modules"][0]["neurons"][0]
    assert neuron["loc"]["line"] == 1 and neuron["loc"]["col"] == 8
    assert "Net" in data["lowered"]


def test_cli_does_not_import_torch_or_brian2():
    code = ("import sys, spikedsl.cli as c; c.build_parser(); "
            "import spikedsl; spikedsl.load(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'brian2', 'nir', 'norse') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    r = subprocess.run([sys.executable, "-c", code, str(GOOD)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.stdout.strip() == "[]", r.stderr


@pytest.mark.parametrize("path", sorted((FIX / "valid").glob("*.spk")), ids=lambda p: p.stem)
def test_fmt_idempotent_and_same_ir(path):
    import spikedsl

    text = path.read_text()
    once = format_text(text, str(path))
    assert format_text(once, str(path)) == once

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("loc", "method_loc", "file")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    a = spikedsl.loads(text, file=str(path))
    b = spikedsl.loads(once, file=str(path))
    assert strip([m.model_dump(mode="json") for m in a.modules]) == \
        strip([m.model_dump(mode="json") for m in b.modules])


def test_fmt_keeps_comments():
    text = "# head\nneuron A {  # trailing\n  state v=0 # s\n\n  # own line\n  param x=1\n}\n"
    out = format_text(text)
    for c in ("# head", "# trailing", "# s", "# own line"):
        assert c in out
    assert "    state v = 0  # s" in out


def test_fmt_check_flag(tmp_path):
    f = tmp_path / "a.spk"
    f.write_text("neuron A {\n  state v=0\n}\n")
    assert main(["fmt", "--check", str(f)]) == 1
    assert main(["fmt", "-i", str(f)]) == 0
    assert main(["fmt", "--check", str(f)]) == 0
    assert f.read_text() == "neuron A {\n    state v = 0\n}\n"


LIBRARY = sorted(Path(__file__).parents[1].glob("specs/**/*.spk")) + \
    sorted(Path(__file__).parents[1].glob("examples/**/*.spk"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_library_is_in_canonical_format(path):
    text = path.read_text()
    assert format_text(text, str(path)) == text, f"run: spikedsl fmt -i {path}"


def test_fmt_aligns_runs_and_keeps_blank_lines():
    text = ("# about A\n\nneuron A {\n  param tau=10 ms  # time\n  param v_threshold=1 # th\n"
            "\n  state v=0\n  state adaptation=0\n  input I\n  dv/dt=(I-v)/tau method exact\n"
            "  dadaptation/dt=-adaptation/tau method exact\n}\n"
            "network N {\n  dt=1 ms\n  steps=5\n  input x[2] : direct\n  layer hidden[3] = A <- dense(x)\n"
            "  output hidden\n}\n")
    assert format_text(text) == (
        "# about A\n\nneuron A {\n"
        "    param tau         = 10 ms  # time\n"
        "    param v_threshold = 1      # th\n\n"
        "    state v          = 0\n"
        "    state adaptation = 0\n"
        "    input I\n"
        "    dv/dt          = (I - v) / tau     method exact\n"
        "    dadaptation/dt = -adaptation / tau method exact\n}\n\n"
        "network N {\n"
        "    dt    = 1 ms\n"
        "    steps = 5\n"
        "    input  x[2] : direct\n"
        "    layer  hidden[3] = A <- dense(x)\n"
        "    output hidden\n}\n")
