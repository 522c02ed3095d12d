"""Every file of the model library passes `spikedsl check`."""

from __future__ import annotations

from pathlib import Path

import pytest

import spikedsl

SPECS = sorted((Path(__file__).parents[1] / "specs").rglob("*.spk"))


def test_library_is_not_empty():
    assert len(SPECS) >= 5


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_spec_checks(path):
    prog = spikedsl.load(path)
    assert prog.neurons or prog.networks


def test_make_test_runs_every_test_block_of_the_library_on_every_target():
    """`make test` (what CI runs) hands specs/ and examples/ to pytest, whose
    plugin makes one item per test block and target; the long ones are marked
    slow, and stay in `make test`."""
    import os
    import re
    import subprocess
    import sys

    from spikedsl.runtime.testing import test_targets, tests_of

    root = Path(__file__).parents[1]
    make = (root / "Makefile").read_text()
    assert re.search(r"(?m)^test:.*\n\t.*pytest -q tests specs examples$", make)
    files = sorted(p for d in ("specs", "examples") for p in (root / d).rglob("*.spk"))
    expected = set()
    for p in files:
        prog = spikedsl.load(p)
        for t in tests_of(prog):
            for target in test_targets(t):
                expected.add(f"{p.relative_to(root).as_posix()}::{t.name}[{target}]")
    assert len(expected) >= 200
    env = dict(os.environ, PYTHONPATH=str(root))
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "specs",
                        "examples"], capture_output=True, text=True, cwd=root, env=env,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    got = {ln for ln in r.stdout.splitlines() if "::" in ln}
    assert got == expected
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow",
                        "specs", "examples"], capture_output=True, text=True, cwd=root,
                       env=env, timeout=300, check=False)
    slow = {ln for ln in r.stdout.splitlines() if "::" in ln}
    assert slow and slow < got
    assert any("hodgkin_huxley" in ln for ln in slow)
