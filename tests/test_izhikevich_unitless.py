"""specs/neurons/izhikevich_unitless.spk: Izhikevich's firing classes in the
paper's unitless form.  Every count and spike time written in the spec's test
blocks is computed again here by a plain forward-Euler loop (no spikedsl), and
the blocks pass on the reference interpreter."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from spikedsl.runtime import testing

SPEC = Path(__file__).parents[1] / "specs" / "neurons" / "izhikevich_unitless.spk"

# Izhikevich 2003, Fig. 2: (a, b, c, d)
CLASSES = {"RS": (0.02, 0.2, -65, 8), "IB": (0.02, 0.2, -55, 4), "CH": (0.02, 0.2, -50, 2),
           "FS": (0.1, 0.2, -65, 2), "LTS": (0.02, 0.25, -65, 2), "TC": (0.02, 0.25, -65, 0.05),
           "RZ": (0.1, 0.26, -65, 2)}


def euler(a, b, c, d, dt, T, I=10.0):
    """Forward Euler from v = -65, u = b v: both derivatives from the old (v, u),
    spike when the new v >= 30 (at the end of the step, t = (n + 1) dt), then
    v = c, u += d.  Returns the spike times and the final (v, u)."""
    v, u = -65.0, b * -65.0
    times = []
    for n in range(math.ceil(T / dt - 1e-9)):
        v, u = v + dt * (0.04 * v * v + 5 * v + 140 - u + I), u + dt * a * (b * v - u)
        if v >= 30:
            times.append((n + 1) * dt)
            v, u = c, u + d
    return times, v, u


def blocks() -> dict[str, str]:
    text = SPEC.read_text(encoding="utf-8")
    return dict(re.findall(r'test "([^"]+)" \{\n(.*?)\n\}', text, re.S))


def _num(s: str) -> float:
    return float(s)


def test_every_class_has_blocks_at_both_steps():
    names = set(blocks())
    for k in CLASSES:
        for dt in ("0.5", "0.1"):
            assert f"Izhikevich {k} at dt = {dt}" in names


@pytest.mark.parametrize("cls", sorted(CLASSES))
@pytest.mark.parametrize("dt", [0.5, 0.1])
def test_block_numbers_are_the_euler_loop(cls, dt):
    body = blocks()[f"Izhikevich {cls} at dt = {dt:g}"]
    assert f"neuron = Izh{cls}\n" in body and "drive I = 10\n" in body and "run 200\n" in body
    assert re.search(rf"dt\s+= {dt:g}\n", body)
    times, _, _ = euler(*CLASSES[cls], dt, 200)
    count = int(re.search(r"expect count\(spikes\) == (\d+)", body).group(1))
    first = _num(re.search(r"expect first_spike == (\S+) \+- 1e-6", body).group(1))
    early = re.search(r"expect spike_times at 30 == \[([^\]]*)\] \+- 1e-6", body).group(1)
    assert count == len(times)
    assert abs(first - times[0]) < 1e-9
    assert [_num(x) for x in early.split(",")] == pytest.approx([t for t in times if t <= 30],
                                                               abs=1e-9)


def test_the_two_steps_differ_and_the_issue_example_holds():
    """RS with I = 10 for 200 ms: Euler with h = 0.5 gives 5 spikes; issue 12 saw 9
    when `dt = 0.5, run 200` was read as 400 steps of h = 1.  The trains differ
    with h."""
    t05, _, _ = euler(*CLASSES["RS"], 0.5, 200)
    t01, _, _ = euler(*CLASSES["RS"], 0.1, 200)
    t1, _, _ = euler(*CLASSES["RS"], 1.0, 400)
    assert len(t05) == 5 and len(t1) == 9 and t05 != t01
    ch05, _, _ = euler(*CLASSES["CH"], 0.5, 200)
    ch01, _, _ = euler(*CLASSES["CH"], 0.1, 200)
    assert len(ch05) == 17 and len(ch01) == 22


def test_rest_block_is_the_fixed_point():
    body = blocks()["Izhikevich RS rests at -70"]
    a, b, c, d = CLASSES["RS"]
    times, v, u = euler(a, b, c, d, 0.5, 1000, I=0.0)
    assert times == [] and abs(v + 70) < 0.01 and abs(u + 14) < 0.01
    # 0.04 v^2 + (5 - b) v + 140 = 0: the stable (lower) root
    assert (-(5 - b) - math.sqrt((5 - b) ** 2 - 4 * 0.04 * 140)) / (2 * 0.04) == \
        pytest.approx(-70.0)
    assert "expect v at 1000 == -70 +- 0.01" in body


def test_blocks_pass_on_the_reference():
    results = testing.run_file(str(SPEC), targets=["reference"])
    assert len(results) == len(blocks()) == 16
    bad = [r.line() + "\n" + r.explain() for r in results if not r.passed]
    assert not bad, "\n".join(bad)
