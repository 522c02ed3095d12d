"""A built wheel carries the grammar, templates and specs and works outside
the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out), str(ROOT)], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        pytest.fail(r.stderr[-2000:])
    return next(out.glob("spikedsl-*.whl"))


def test_wheel_contains_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "spikedsl/_data/grammar/spk.lark" in names
    assert any(n.startswith("spikedsl/_data/specs/") for n in names) or not (ROOT / "specs").exists()
    templates = [n for n in names if n.startswith("spikedsl/_data/targets/")]
    assert templates == sorted(templates)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_wheel_works_outside_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    spec = tmp_path / "a.spk"
    spec.write_text("neuron A {\n param tau = 5\n state v = 0\n input I\n"
                    " dv/dt = (I - v) / tau\n spike v >= 1\n reset v = 0\n}\n")
    code = ("import spikedsl, spikedsl.resources as r; "
            "print(spikedsl.__file__); print(r.grammar_path('spk.lark')); "
            f"p = spikedsl.load(r'{spec}'); print(p.neuron('A').method)")
    env = dict(os.environ, PYTHONPATH=str(target), SPIKEDSL_CACHE="off")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    mod, grammar, method = r.stdout.split()
    assert mod.startswith(str(target))
    assert grammar.startswith(str(target)) and "_data" in grammar
    assert method == "exact"
