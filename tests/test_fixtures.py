"""Every check has a valid/invalid fixture pair (tests/fixtures/{valid,invalid}).

An invalid fixture ends with ``# expect: CODE LINE:COL MESSAGE`` lines: the
file must give exactly these diagnostics (code, exact position, message), all
at once.  Its valid twin, the corrected file, must load cleanly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import spikedsl
from spikedsl.errors import CATALOGUE, SpecError

HERE = Path(__file__).parent / "fixtures"
INVALID = sorted((HERE / "invalid").glob("*.spk"))
VALID = sorted((HERE / "valid").glob("*.spk"))
EXPECT = re.compile(r"^# expect: (\S+) (\d+):(\d+) (.*)$", re.MULTILINE)


def test_enough_fixtures():
    assert len(INVALID) >= 40
    assert {p.name for p in INVALID} == {p.name for p in VALID}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture(path):
    text = path.read_text()
    expected = [(c, int(line), int(col), msg) for c, line, col, msg in EXPECT.findall(text)]
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(SpecError) as info:
        spikedsl.load(path)
    got = [(d.code, d.loc.line, d.loc.col, d.message) for d in info.value.diagnostics]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for (_, _, _, m), (_, _, _, want) in zip(got, expected):
        # messages quoting an absolute path are compared by file name
        assert m == want or m.split("/")[-1] == want.split("/")[-1]
    for d in info.value.diagnostics:
        assert d.code in CATALOGUE
        rendered = d.render()
        assert rendered.startswith(f"{path}:{d.loc.line}:{d.loc.col}: error: ")
        # the caret sits under the reported column of the quoted source line
        lines = rendered.split("\n")
        src, caret = lines[1], lines[2]
        assert caret.index("^") - 4 == d.loc.col - 1
        assert src[4:] == path.read_text().split("\n")[d.loc.line - 1].replace("\t", " ")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture(path):
    spikedsl.load(path)


def test_fixtures_cover_the_catalogue():
    seen = set()
    for p in INVALID:
        seen |= {m[0] for m in EXPECT.findall(p.read_text())}
    assert seen <= set(CATALOGUE)
    assert len(seen) >= 60
