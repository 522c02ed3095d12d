"""`test` blocks: drives, expectations, the time convention, checks, the
runner's results and messages, `spikedsl test`, and the pytest plugin."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spikedsl
from spikedsl.cli import main as cli
from spikedsl.errors import SpecError, unsupported
from spikedsl.runtime import testing

ROOT = Path(__file__).resolve().parents[1]

LIF = """
neuron LIF {
    param tau_mem = 10 ms
    param v_th    = 1.0
    param v_reset = 0.0
    param r       = 1.0
    param t_ref   = 0 ms
    state v = 0.0
    input I
    dv/dt = (v_reset - v + r * I) / tau_mem   method exact
    spike v >= v_th
    reset v = v_reset
    refractory t_ref
}
neuron IF {
    param th = 1.0
    state v = 0.0
    input I
    input J
    update v = v + I - J
    spike v >= th
    reset v = 0
}
neuron Lin {
    param tau = 4 ms
    state x = 1.0
    input I
    dx/dt = (I - x) / tau
}
"""


def write(tmp_path: Path, body: str, name="t.spk") -> Path:
    p = tmp_path / name
    p.write_text(LIF + body)
    return p


def run(tmp_path: Path, body: str, targets=("reference",), **kw) -> list[testing.Result]:
    return testing.run_file(write(tmp_path, body), targets=list(targets), **kw)


def one(tmp_path, body, **kw) -> testing.Result:
    rs = run(tmp_path, body, **kw)
    assert len(rs) == 1, rs
    return rs[0]


def lines_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


# ------------------------------------------------------------------ analytic cases
@pytest.mark.parametrize("I", [1.5, 2.0, 4.0])
@pytest.mark.parametrize("t_ref", [0.0, 2.0])
def test_lif_first_spike_and_count_analytic(tmp_path, I, t_ref):
    tau, dt, run_ms = 10.0, 0.1, 100.0
    t_star = tau * math.log(I / (I - 1.0))
    k = math.ceil(t_star / dt - 1e-9)
    R = math.ceil(t_ref / dt - 1e-9)
    steps = round(run_ms / dt)
    count = (steps - k) // (k + R) + 1
    r = one(tmp_path, f"""
test "LIF analytic" {{
    neuron = LIF(tau_mem = {tau} ms, t_ref = {t_ref} ms)
    dt = {dt} ms
    drive I = {I}
    run {run_ms} ms
    expect first_spike == {t_star} ms +- {dt} ms
    expect first_spike == {k * dt} ms
    expect count(spikes) == {count}
    expect count == {count}
    expect v at {k * dt - dt:.10g} ms == {I * (1 - math.exp(-(k - 1) * dt / tau)):.15g} +- 1e-12
    expect rate == {count / (run_ms * 1e-3)} Hz +- 1e-9 Hz
    targets = all
}}""")
    assert r.status == "pass", r.details()


def test_linear_ode_state_against_closed_form(tmp_path):
    # x(t) = 2 + (1 - 2) exp(-t / 4 ms)
    x = {t: 2 - math.exp(-t / 4) for t in (1.0, 4.0, 10.0)}
    r = one(tmp_path, f"""
test "linear" {{
    neuron = Lin
    dt = 0.5 ms
    drive I = 2.0
    run 10 ms
    expect x at 0 ms == 1.0
    expect x at 1 ms == {x[1.0]:.15g} +- 1e-12
    expect x at 4 ms == {x[4.0]:.15g} +- 1e-12
    expect x at 10 ms == {x[10.0]:.15g} +- 1e-12
    expect max(x) == {x[10.0]:.15g} +- 1e-12
    expect min(x) > 1.0
    expect last(x) == {x[10.0]:.15g} +- 1e-12
}}""")
    assert r.passed, r.details()


# ------------------------------------------------------------------ drives and time convention
def test_input_spike_times_come_out_at_the_same_times(tmp_path):
    """IF with threshold 1 and unit input spikes fires in the step of each input spike."""
    r = one(tmp_path, """
test "spikes in, spikes out" {
    neuron = IF
    dt = 1 ms
    drive I = spikes([1 ms, 2.5 ms, 7 ms, 7 ms])
    run 10 ms
    expect spike_times == [1 ms, 3 ms, 7 ms]
    expect v_pre at 7 ms == 2
    expect spikes at 3 ms == 1
    expect spikes at 4 ms == 0
}""")
    assert r.passed, r.details()


def test_constant_window_step_ramp_and_drives_add(tmp_path):
    r = one(tmp_path, """
test "windows" {
    neuron = IF(th = 1000)
    drive I = 1.0 from 2 to 5          # steps 2, 3, 4
    drive I = step(10, 8)              # from step 8 on
    drive J = ramp(0, 10) from 0 to 10 # 0, 1, 2, ... at the start of each step
    run 10
    expect v at 2 == -1                # 0 + (0 - 0) + (0 - 1)
    expect v at 5 == 3 - (0 + 1 + 2 + 3 + 4)
    expect v at 8 == 3 - 28
    expect v at 10 == 3 + 20 - 45
}""")
    assert r.passed, r.details()


def test_list_drive_gives_one_neuron_per_value(tmp_path):
    r = one(tmp_path, """
test "three neurons" {
    neuron = IF
    drive I = [0.3, 0.5, 1.0]
    run 12
    expect count(spikes) == [3, 6, 12]
    expect first_spike == [4, 2, 1]
    expect spike_times == [[4, 8, 12], [2, 4, 6, 8, 10, 12], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    expect count >= 3
    expect v at 3 == [0.9, 0.5, 0] +- 1e-12
}""")
    assert r.passed, r.details()


def test_poisson_drive_is_seeded_and_has_the_rate(tmp_path):
    body = """
test "poisson" {
    neuron = IF(th = 0.5)
    dt = 1 ms
    drive I = poisson(200 Hz, seed = 3)
    run 2000 ms
    expect rate == 200 Hz +- 20 Hz
}"""
    a = one(tmp_path, body)
    b = one(tmp_path, body)
    assert a.passed, a.details()
    assert a.checks[0].actual == b.checks[0].actual


def test_file_drives(tmp_path):
    np.save(tmp_path / "drive.npy", np.array([0.5, 0.5, 0.5, 0.0, 1.0]))
    np.savez(tmp_path / "drives.npz", a=np.ones((4, 2)) * [0.25, 1.0])
    (tmp_path / "drive.csv").write_text("0.6\n0.6\n")
    r = one(tmp_path, """
test "files" {
    neuron = IF(th = 100)
    drive I = file("drive.npy") from 1 to 10   # steps 1..5: 0.5, 0.5, 0.5, 0, 1
    drive J = file("drives.npz", key = "a", scale = -1)  # steps 0..3, subtracted
    run 8
    expect v at 1 == [0.25, 1.0]
    expect v at 6 == [2.5 + 1.0, 2.5 + 4.0]
    expect count(spikes) == 0
}""")
    assert r.passed, r.details()
    r = one(tmp_path, """
test "csv" {
    neuron = IF
    drive I = file("drive.csv")
    run 3
    expect spike_times == [2]
}""")
    assert r.passed, r.details()


def test_missing_drive_file_is_an_error_at_the_drive(tmp_path):
    p = write(tmp_path, """
test "no file" {
    neuron = IF
    drive I = file("nope.npy")
    run 3
    expect count == 0
}""")
    rs = testing.run_file(p, targets=["reference", "torch"])
    assert [r.status for r in rs] == ["error", "error"]
    assert "does not exist" in rs[0].reason
    assert rs[0].loc.line == lines_of(p, 'file("nope.npy")')


def test_units_of_drives_and_states(tmp_path):
    p = tmp_path / "u.spk"
    p.write_text("""
neuron Cap {
    param C = 1 nF
    state v = -70 mV
    input I : nA
    dv/dt = I / C
}
test "capacitor" {
    neuron = Cap
    dt = 1 ms
    drive I = 2 nA from 0 ms to 5 ms
    run 10 ms
    expect v at 5 ms == -60 mV +- 1e-9 mV
    expect v at 10 ms == -60 mV +- 1e-9 mV
    expect max(v) <= -60 mV + 1 uV
}
""")
    rs = testing.run_file(p, targets=["reference"])
    assert rs[0].passed, rs[0].details()


def test_at_zero_is_the_initial_value_and_windows_of_reductions(tmp_path):
    r = one(tmp_path, """
test "windows" {
    neuron = IF
    drive I = 0.5
    run 10
    expect v at 0 == 0
    expect count(spikes) at 4 == 2
    expect spike_times at 5 == [2, 4]
    expect max(v) at 1 == 0.5
    expect rate at 4 == 0.5
}""")
    assert r.passed, r.details()


def test_network_test_with_outputs_and_states(tmp_path):
    r = one(tmp_path, """
network Net {
    steps = 10
    input x[2] : direct
    layer h[2] = IF <- one_to_one(x, weight = 0.5)
    layer y[2] = IF(th = 2) <- one_to_one(h)
    output y
}
test "network" {
    network = Net
    drive x = [0.5, 1.0]
    run 8
    expect count(h) == [2, 4]
    expect count(y) == [1, 2]
    expect count == [1, 2]             # the network's spike output y
    expect h.v at 3 == [0.75, 0.5]
    expect y.v_pre at 4 == [1, 2]
    expect first_spike(y) == [8, 4]
}""")
    assert r.passed, r.details()


def test_network_test_random_weights_are_the_same_on_every_run(tmp_path):
    body = """
network Net {
    dt = 1 ms
    steps = 20
    input x[5] : poisson(max_rate = 0.5)
    layer h[8] = LIF <- dense(x)
    output h
}
test "net" {
    network = Net
    seed = 3
    batch = 2
    drive x = 1.0
    expect count(h) >= 0
    expect max(h.v) < 100
}"""
    a, b = one(tmp_path, body), one(tmp_path, body)
    assert a.passed and a.checks[1].actual == b.checks[1].actual


# ------------------------------------------------------------------ failures: message and location
def test_a_wrong_expectation_fails_with_message_and_location(tmp_path):
    p = write(tmp_path, """
test "wrong on purpose" {
    neuron = LIF(tau_mem = 10 ms)
    dt = 0.1 ms
    drive I = 2.0 from 0 ms to 50 ms
    run 50 ms
    expect count(spikes) == 7
    expect first_spike == 6.0 ms +- 0.1 ms
    expect v at 3 ms < 0.5
    expect spike_times == [7 ms, 14 ms]
}""")
    r = testing.run_file(p, targets=["reference"])[0]
    assert r.status == "fail"
    bad = r.failures
    assert [c.text for c in bad] == ["expect first_spike == 6.0 ms +- 0.1 ms",
                                     "expect v at 3 ms < 0.5",
                                     "expect spike_times == [7 ms, 14 ms]"]
    first = bad[0]
    assert (first.loc.file, first.loc.line, first.loc.col) == (str(p), lines_of(
        p, "first_spike == 6.0"), 5)
    assert first.expected == "== 6 ms ± 0.1 ms" and first.actual == "7 ms"
    assert bad[1].expected == "< 0.5" and bad[1].actual.startswith("0.518363")
    assert bad[2].actual == "[7 ms, 14 ms, 21 ms, 28 ms, 35 ms, 42 ms, 49 ms] (7 spikes)"
    text = r.details()
    assert f"{p}:{lines_of(p, 'first_spike == 6.0')}:5: expect first_spike == 6.0 ms +- 0.1 ms" \
        in text
    assert "expected == 6 ms ± 0.1 ms, got 7 ms" in text


def test_no_spike_is_reported_as_such(tmp_path):
    r = one(tmp_path, """
test "silent" {
    neuron = LIF
    dt = 1 ms
    drive I = 0.5
    run 20 ms
    expect first_spike == 5 ms +- 1 ms
    expect first_spike > 20 ms         # no spike counts as never
}""")
    assert r.status == "fail" and len(r.failures) == 1
    assert r.failures[0].actual == "no spike"


def test_default_tolerance_absorbs_rounding_only(tmp_path):
    r = one(tmp_path, """
test "tol" {
    neuron = IF
    dt = 0.1 ms
    drive I = 0.3
    run 2 ms
    expect first_spike == 0.4 ms       # (3 + 1) * 0.1 ms in floating point
    expect v at 0.3 ms == 0.9          # 0.3 + 0.3 + 0.3
    expect v at 0.3 ms != 0.9000001
}""")
    assert r.passed, r.details()
    r = one(tmp_path, """
test "tol setting" {
    neuron = IF
    drive I = 0.3
    run 3
    tolerance = 0.01
    expect v at 3 == 0.905
}""")
    assert r.passed, r.details()


# ------------------------------------------------------------------ targets and skips
def test_targets_are_skipped_with_their_reason(tmp_path):
    p = write(tmp_path, """
test "t" {
    neuron = IF
    drive I = 0.5
    run 4
    expect count == 2
    targets = [reference, torch, norse]
}""")

    def refuses(net, inputs, weights=None, dtype=None, record=None):
        raise unsupported("torch", "neuron 'IF'", "testing the skip path")

    def broken(net, inputs, weights=None, dtype=None, record=None):
        raise RuntimeError("boom")

    rs = testing.run_file(p, runners={"torch": refuses, "norse": broken})
    assert [(r.target, r.status) for r in rs] == [("reference", "pass"), ("torch", "skip"),
                                                  ("norse", "error")]
    assert rs[1].reason == "torch cannot express neuron 'IF': testing the skip path"
    assert "boom" in rs[2].reason
    assert testing.summary(rs) == "1 passed, 1 failed, 1 skipped"


def test_an_unknown_target_is_a_skip():
    net = spikedsl.loads("neuron N { state v = 0; input I; update v = I; spike v >= 1 }\n"
                         "network Net { steps = 2; input x[1] : direct; layer h[1] = N <- "
                         "one_to_one(x); output h }").network().ir
    with pytest.raises(testing.Skip, match="unknown target 'no_such_target'"):
        testing.run_target("no_such_target", net, {"x": np.zeros((2, 1, 1))})


def test_every_target_either_passes_or_says_why(tmp_path):
    """`targets = all`: nothing is silently passed; skips carry a reason."""
    p = write(tmp_path, """
test "all" {
    neuron = IF
    drive I = 0.5
    run 4
    expect count == 2
    targets = all
}""")
    rs = testing.run_file(p)
    assert [r.target for r in rs] == list(testing.TARGET_ORDER)
    for r in rs:
        assert r.status in ("pass", "skip", "fail", "error")
        if r.status == "skip":
            assert r.reason
        if r.status == "pass":
            assert r.checks and all(c.ok for c in r.checks)
    assert rs[0].passed


def test_pattern_and_target_selection(tmp_path):
    p = write(tmp_path, """
test "alpha one" { neuron = IF; drive I = 1; run 2; expect count == 2 }
test "beta two" { neuron = IF; drive I = 1; run 2; expect count == 2 }
""")
    rs = testing.run_file(p, targets=["reference"], pattern="BETA")
    assert [r.test for r in rs] == ["beta two"]
    rs = testing.run_file(p, targets=["reference"], pattern="*one")
    assert [r.test for r in rs] == ["alpha one"]


# ------------------------------------------------------------------ checks (spec errors)
def errors_of(body: str) -> list[tuple[str, int, int, str]]:
    text = LIF + body
    with pytest.raises(SpecError) as info:
        spikedsl.loads(text, file="<t>")
    base = LIF.count("\n")
    return [(d.code, d.loc.line - base if d.loc else 0, d.loc.col if d.loc else 0, d.message)
            for d in info.value.diagnostics]


@pytest.mark.parametrize("body,code,line,col,message", [
    ('test "a" {\n neuron = LIF\n dt = 1 ms\n run 5 ms\n expect v == 1\n}',
     "bad-argument", 5, 9, ("expect v: a trace needs a time, e.g. 'v at 5 ms', or a "
                            "reduction such as 'max(v)'")),
    ('test "a" {\n neuron = LIF\n dt = 1 ms\n run 5 ms\n expect first_spike == 7\n}',
     "dim-compare", 5, 24, "cannot compare first_spike (s) and 1"),
    ('test "a" {\n neuron = LIF\n dt = 1 ms\n run 5 ms\n expect v at 1.5 ms == 0\n}',
     "bad-argument", 5, 14, "at: 1.5 ms is not a multiple of dt (1 ms)"),
    ('test "a" {\n neuron = LIF\n dt = 1 ms\n run 5 ms\n expect v at 6 ms == 0\n}',
     "bad-argument", 5, 14, "at: 6 ms is after the end of the run (5 ms)"),
    ('test "a" {\n neuron = LIF\n dt = 1 ms\n run 5\n expect count == 0\n}',
     "dim-time", 4, 6, "run must be a time, got 1"),
    ('test "a" {\n neuron = IF\n run 5 ms\n expect count == 0\n}',
     "bad-argument", 3, 6, "run: dt has no unit, so times are plain numbers (in units of dt)"),
    ('test "a" {\n neuron = LIF\n run 5\n expect count == 0\n}',
     "dim-dt", 2, 11, "neuron 'LIF' uses units, so dt must carry a time unit"),
    ('test "a" {\n neuron = IF\n run 5\n drive I = sine(1)\n expect count == 0\n}',
     "bad-drive", 4, 12, "unknown drive 'sine'"),
    ('test "a" {\n neuron = IF\n run 5\n drive I = step(1)\n expect count == 0\n}',
     "missing-argument", 4, 12, "step needs the argument 'onset'"),
    ('test "a" {\n neuron = IF\n run 5\n drive I = poisson(10, speed = 1)\n expect count == 0\n}',
     "unknown-argument", 4, 24, "poisson takes no argument 'speed'"),
    ('test "a" {\n neuron = IF\n run 5\n expect count == N_SPIKES\n}',
     "undefined-name", 4, 18, "undefined name 'N_SPIKES'"),
    ('test "a" {\n neuron = IF\n run 5\n expect count == 1 +- -1\n}',
     "bad-argument", 4, 23, "+-: the tolerance must be a non-negative number"),
    ('test "a" {\n neuron = IF\n run 5\n expect first_spike at 2 == 1\n}',
     "bad-argument", 4, 24, "expect first_spike: first_spike takes no 'at'"),
    ('test "a" {\n neuron = IF\n run 5\n expect count(v) == 1\n}',
     "unknown-quantity", 4, 9, "unknown quantity 'count(...)' in expect"),
    ('test "a" {\n neuron = IF\n run 5\n expect spike_times < [1]\n}',
     "bad-argument", 4, 23, "expect spike_times: spike_times compares with == or != only"),
    ('test "a" {\n neuron = Lin\n dt = 1 ms\n run 5 ms\n expect count == 1\n}',
     "bad-argument", 5, 9, "expect count: neuron 'Lin' has no spike condition"),
    ('test "a" {\n neuron = IF(th = 1, bogus = 2)\n run 5\n expect count == 1\n}',
     "unknown-override", 2, 22, "neuron 'IF' has no parameter 'bogus'"),
    ('test "a" {\n neuron = IF\n run 5\n drive I = 1 from 3 to 2\n expect count == 1\n}',
     "bad-argument", 4, 24, "drive I: the window is empty ('to' must come after 'from')"),
    ('test "a" {\n neuron = IF\n steps = 0\n expect count == 1\n}',
     "bad-setting", 3, 10, "steps: expected a positive integer"),
    ('test "a" {\n neuron = IF\n run 5\n targets = [reference, loihi]\n}',
     "unknown-target", 4, 24, "unknown target 'loihi'"),
])
def test_test_block_checks(body, code, line, col, message):
    errs = errors_of(body)
    assert errs[0] == (code, line, col, message), errs


NET = """
network Net {
    dt = 1 ms
    steps = 10
    input x[2] : direct
    layer h[2] = LIF <- one_to_one(x)
    layer r[2] = Lin <- one_to_one(h)
    output r.x
}
"""


@pytest.mark.parametrize("body,code,line,col,message", [
    ('test "a" {\n network = Net\n dt = 2 ms\n expect count(h) == 0\n}',
     "bad-setting", 3, 2, ("dt: a network test runs at the dt of network 'Net'; remove this "
                          "setting")),
    ('test "a" {\n network = Net\n expect count == 0\n}',
     "bad-argument", 3, 9, ("expect count: network 'Net' has no spike output; name a layer, "
                           "e.g. count(h)")),
    ('test "a" {\n network = Net\n expect h.v at 11 ms == 0\n}',
     "bad-argument", 3, 16, "at: 11 ms is after the end of the run (10 ms)"),
    ('test "a" {\n network = Net\n expect count(h.v) == 0\n}',
     "unknown-quantity", 3, 9, "unknown quantity 'count(...)' in expect"),
    ('test "a" {\n network = Net\n drive y = 1\n expect count(h) == 0\n}',
     "unknown-drive", 3, 8, "'y' is not an input of 'Net'"),
])
def test_network_test_block_checks(body, code, line, col, message):
    errs = errors_of(NET + body)
    assert errs[0] == (code, line + NET.count("\n"), col, message), errs


def test_a_valid_test_block_has_no_errors():
    spikedsl.loads(LIF + """
test "ok" {
    neuron = LIF(tau_mem = 20 ms)
    dt = 0.5 ms
    seed = 1
    batch = 2
    tolerance = 1e-6
    drive I = step(2.0, 10 ms, base = 0.5) from 0 ms to 80 ms
    drive I = poisson(rate = 100 Hz, seed = 2, weight = 0.1)
    drive I = spikes([1 ms, 2 ms], weight = 0.2)
    drive I = ramp(0, 1) from 10 ms to 20 ms
    run 100 ms
    expect first_spike < 50 ms
    expect rate > 10 Hz
    expect v at 0 ms == 0
    expect v_pre at 10.5 ms <= 1
    expect spike_times != []
    targets = [reference, torch, brian2]
}
""")


# ------------------------------------------------------------------ `spikedsl test`
def test_cli_runs_tests_and_exits_1_on_failure(tmp_path, capsys):
    good = write(tmp_path, """
test "good" { neuron = IF; drive I = 0.5; run 4; expect count == 2; targets = [reference] }
""", "good.spk")
    bad = write(tmp_path, """
test "bad" { neuron = IF; drive I = 0.5; run 4; expect count == 3; targets = [reference] }
""", "bad.spk")
    assert cli(["test", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["PASS  good.spk::good [reference]", "1 passed, 0 failed, 0 skipped"]
    assert cli(["test", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  bad.spk::bad [reference]" in out
    line = lines_of(bad, "expect count == 3")
    assert f"{bad}:{line}:" in out
    assert "expected == 3, got 2" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed, 0 skipped"
    assert cli(["test", str(tmp_path), "-k", "good", "-t", "reference"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed, 0 skipped"


def test_cli_usage_and_spec_errors(tmp_path, capsys):
    assert cli(["test", str(tmp_path / "missing.spk")]) == 2
    p = write(tmp_path, 'test "x" { neuron = Nope; run 1 }')
    assert cli(["test", str(p)]) == 1
    err = capsys.readouterr().err
    assert "error: unknown neuron or stage 'Nope'" in err
    good = write(tmp_path, 'test "x" { neuron = IF; run 1; expect count == 0 }', "g.spk")
    assert cli(["test", str(good), "--target", "loihi"]) == 2


# ------------------------------------------------------------------ pytest plugin
def pytest_run(args, cwd, ini: str | None = None):
    if ini is not None:
        (Path(cwd) / "pytest.ini").write_text(ini)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    from importlib.metadata import entry_points

    installed = any(e.value == "spikedsl.runtime.pytest_plugin"
                    for e in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "spikedsl.runtime.pytest_plugin"]
    return subprocess.run([sys.executable, "-m", "pytest", *plugin,
                           "-p", "no:cacheprovider", "-rA", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


PLUGIN_SPK = """
test "passes" { neuron = IF; drive I = 0.5; run 4; expect count == 2; targets = [reference] }
test "fails" {
    neuron = IF
    drive I = 0.5
    run 4
    expect count == 3
    targets = [reference]
}
test "skips" {
    neuron = LIF(t_ref = 2 ms)         # NIR neurons have no refractory period
    dt = 1 ms
    drive I = 2
    run 10 ms
    expect count >= 0
    targets = [nir]
}
"""


@pytest.fixture
def plugin_dir(tmp_path):
    d = tmp_path / "proj"
    (d / "specs").mkdir(parents=True)
    (d / "specs" / "n.spk").write_text(LIF + PLUGIN_SPK)
    (d / "fixtures" / "invalid").mkdir(parents=True)
    (d / "fixtures" / "invalid" / "broken.spk").write_text('test "x" { neuron = Nope }\n')
    (d / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    return d


def test_pytest_plugin_items_failures_and_skips(plugin_dir):
    r = pytest_run(["specs/n.spk", "--spk-target", "reference,nir"], plugin_dir, ini="[pytest]\n")
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert "PASSED specs/n.spk::passes[reference]" in out
    assert "FAILED specs/n.spk::fails[reference]" in out
    assert "SKIPPED [1] specs/n.spk:" in out and "[nir] NIR cannot express" in out
    line = lines_of(plugin_dir / "specs" / "n.spk", "expect count == 3")
    assert f"n.spk:{line}:5: expect count == 3" in out
    assert "expected == 3, got 2" in out
    assert "1 failed, 1 passed, 1 skipped" in out


def test_pytest_plugin_collects_only_what_is_asked(plugin_dir):
    # a directory on the command line: its .spk files, but not */fixtures/* or */invalid/*
    r = pytest_run([".", "--collect-only", "-q"], plugin_dir, ini="[pytest]\n")
    assert "broken.spk" not in r.stdout and "n.spk::passes[reference]" in r.stdout, r.stdout
    # no arguments (testpaths / rootdir): no .spk unless spk_paths says so
    r = pytest_run(["--collect-only", "-q"], plugin_dir, ini="[pytest]\n")
    assert ".spk" not in r.stdout and "test_plain" in r.stdout
    r = pytest_run(["--collect-only", "-q"], plugin_dir, ini="[pytest]\nspk_paths = specs\n")
    assert "n.spk::passes[reference]" in r.stdout and "broken" not in r.stdout


def test_pytest_plugin_reports_spec_errors_cleanly(plugin_dir):
    r = pytest_run(["fixtures/invalid/broken.spk"], plugin_dir, ini="[pytest]\n")
    assert r.returncode != 0
    assert "ERROR collecting" in r.stdout
    assert "broken.spk:1:21: error: unknown neuron or stage 'Nope'" in r.stdout
    assert "Traceback" not in r.stdout
