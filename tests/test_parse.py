"""Parser details: separators, continuation lines, units after numbers."""

from __future__ import annotations

import pytest

import spikedsl
from spikedsl.errors import SpecError

NEURON = "neuron L {\n state v = 0\n input I\n update v = 0.5 * v + I\n spike v >= 1\n reset v = 0\n}\n"


def test_continuation_lines():
    prog = spikedsl.loads(NEURON + """
network N {
    steps = 3
    input x[4] : direct
    layer r[5] = L
        <- dense(x, bias = false)
         + dense(r)
    output r
}
""")
    layer = prog.network("N").ir.layer("r")
    assert [p.source for p in layer.projections] == ["x", "r"]
    assert layer.projections[1].recurrent


def test_semicolons_and_newlines_inside_parentheses():
    prog = spikedsl.loads(NEURON.replace("update v = 0.5 * v + I", "update v = clip(\n v + I,\n 0, 5)")
                          + "network N { steps = 2; input x[2] : direct; layer h[2] = L <- dense(x); "
                            "output h }\n")
    assert prog.network("N").ir.steps == 2


def test_units_only_after_numbers():
    prog = spikedsl.loads("neuron V {\n param A = 2 mV\n state V = 0 mV\n input I : mV\n"
                          " dV/dt = (A - V + I) / (10 ms)\n}\n")
    n = prog.neuron("V")
    assert n.param("A").value == pytest.approx(2e-3)
    assert n.uses_units


def test_reserved_word_message():
    with pytest.raises(SpecError) as e:
        spikedsl.loads("neuron L {\n state spike = 0\n}\n")
    assert e.value.codes == ["reserved-word"]
    assert e.value.diagnostics[0].loc.line == 2 and e.value.diagnostics[0].loc.col == 8
