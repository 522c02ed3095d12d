"""Property-based fuzzing of the parser and checker: any text, random or a
mutation of a real spec, either loads or raises SpecError — nothing else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikedsl
from spikedsl.errors import SpecError

SEEDS = [p.read_text() for p in sorted((Path(__file__).parent / "fixtures" / "valid").glob("*.spk"))]
TOKENS = ["neuron", "network", "layer", "input", "output", "param", "state", "spike", "reset",
          "update", "dv/dt", "=", "+=", "(", ")", "[", "]", "{", "}", ";", "\n", "->", "<-",
          "1e-3", "0", "-1", "ms", "mV", "nA", "v", "I", "tau", "dense(x)", "conv2d(x, channels=2)",
          "exp(", ",", "**", ">=", "+-", "\"s\"", "#", "method exact", "detach", "test", "train",
          "expect", "run 5 ms", "drive I = 1", "import \"x.spk\"", "[trainable]", "LIF"]


def must_be_clean(text: str) -> None:
    try:
        spikedsl.loads(text, file="fuzz.spk")
    except SpecError as e:
        for d in e.diagnostics:
            assert d.message
            d.render()


FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(st.text(max_size=300))
def test_random_text(text):
    must_be_clean(text)


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_token_soup(text):
    must_be_clean(text)


@FAST
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_specs(seed, data):
    text = seed
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["delete", "insert", "swap", "dup"]))
        i = data.draw(st.integers(0, max(len(text) - 1, 0)))
        j = data.draw(st.integers(i, min(len(text), i + 20)))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + data.draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "swap":
            text = text[:i] + text[j:j + (j - i)] + text[i:j] + text[j + (j - i):]
        else:
            text = text[:j] + text[i:j] + text[j:]
    must_be_clean(text)


@FAST
@given(st.sampled_from(SEEDS), st.floats(allow_nan=True, allow_infinity=True))
def test_weird_numbers(seed, x):
    must_be_clean(seed.replace("10", repr(x)).replace("1.0", repr(x)))
