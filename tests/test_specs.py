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
