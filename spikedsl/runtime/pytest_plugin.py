"""pytest plugin: the ``test`` blocks of ``*.spk`` files become pytest items.

Registered through the ``pytest11`` entry point, so it is active wherever
spikedsl is installed; it only collects ``.spk`` files you ask for:

* a ``.spk`` file named on the command line (``pytest specs/neurons/lif.spk``);
* ``.spk`` files below a directory named on the command line
  (``pytest specs/``), except those matching ``spk_ignore``;
* ``.spk`` files below the paths of the ini option ``spk_paths`` (relative to
  the ini file), also when pytest runs its ``testpaths``:

      [tool.pytest.ini_options]
      spk_paths = ["specs"]

Files without a ``test "..."`` block are never loaded.  ``spk_ignore``
(glob patterns, default ``*/invalid/*`` and ``*/fixtures/*``) keeps test
data, such as deliberately broken fixture files, out of directory collection.

One item per test and target, named ``<test name>[<target>]``.  A target that
cannot run the test is a pytest *skip* with the reason; a failing
expectation shows expected vs actual at the ``.spk`` line; a spec error in a
file is a collection error with the usual ``file:line:col: error:`` message.
Choose targets with ``--spk-target torch`` (repeatable) or the ini option
``spk_targets``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import pytest

_HAS_TEST = re.compile(rb"(?m)^[ \t]*test[ \t]+\"")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("spikedsl", "spikedsl .spk test blocks")
    group.addoption("--spk-target", action="append", default=None, metavar="TARGET",
                    help="run .spk test blocks only on these targets (reference, torch, norse, "
                         "brian2, nir); repeatable or comma separated")
    parser.addini("spk_paths", type="args", default=[],
                  help="paths whose *.spk test blocks are collected (relative to the ini file)")
    parser.addini("spk_ignore", type="args", default=["*/invalid/*", "*/fixtures/*"],
                  help="glob patterns of .spk files never collected from directories")
    parser.addini("spk_targets", type="args", default=[],
                  help="targets to run .spk test blocks on (default: each test's own list)")


def _under(path: Path, base: Path) -> bool:
    try:
        path.relative_to(base)
        return True
    except ValueError:
        return False


def _cli_paths(config) -> tuple[list[Path], bool]:
    """Paths given on the command line, and whether they were given explicitly."""
    explicit = True
    src = getattr(config, "args_source", None)
    if src is not None and getattr(src, "name", "") != "ARGS":
        explicit = False
    out = []
    for a in config.args:
        p = a.split("::", 1)[0]
        if not p:
            continue
        out.append(Path(os.path.abspath(os.path.join(str(config.invocation_params.dir), p))))
    return out, explicit


def _ini_base(config) -> Path:
    return Path(os.path.dirname(str(config.inipath))) if config.inipath else Path(
        str(config.rootpath))


def _wanted(config, path: Path) -> bool:
    path = Path(os.path.abspath(str(path)))
    args, explicit = _cli_paths(config)
    if explicit and any(a == path for a in args):
        return True  # named on the command line
    for pat in config.getini("spk_ignore"):
        if fnmatch.fnmatch(str(path), pat) or fnmatch.fnmatch(path.as_posix(), pat):
            return False
    base = _ini_base(config)
    for p in config.getini("spk_paths"):
        q = Path(p) if os.path.isabs(p) else base / p
        if _under(path, Path(os.path.abspath(str(q)))):
            return True
    return explicit and any(a.is_dir() and _under(path, a) for a in args)


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix != ".spk":
        return None
    if not _wanted(parent.config, file_path):
        return None
    try:
        if not _HAS_TEST.search(file_path.read_bytes()):
            return None
    except OSError:
        return None
    return SpkFile.from_parent(parent, path=file_path)


def _targets(config) -> list[str] | None:
    vals = config.getoption("spk_target") or config.getini("spk_targets") or []
    out = [t.strip() for v in vals for t in str(v).split(",") if t.strip()]
    return out or None


SLOW_WORK = 20000  # steps x states of a test above which its items are marked "slow"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: long-running tests (deselect with -m 'not slow')")


def _slow(case) -> bool:
    """A test whose run is long: more than SLOW_WORK steps x neuron states (the
    Hodgkin-Huxley tests of the library; -m "not slow" leaves them out)."""
    net = getattr(case, "net", None)
    if net is None:
        return False
    states = sum(len(la.neuron.states) for la in net.layers if la.kind == "neuron")
    return case.steps * case.batch * max(states, 1) > SLOW_WORK


class SpkFailure(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class SpkFile(pytest.File):
    """A .spk file: one item per (test block, target)."""

    def collect(self):
        from spikedsl.errors import SpecError
        from spikedsl.frontend.program import load
        from spikedsl.runtime.testing import TARGET_ORDER, select, test_targets, tests_of

        try:
            prog = load(self.path)
        except SpecError as e:
            n = len(e.diagnostics)
            raise self.CollectError(f"{e.render()}\n{n} error{'s' if n != 1 else ''} in "
                                    f"{self.path.name}") from None
        self._program = prog
        self._cases: dict[int, object] = {}
        wanted = _targets(self.config)
        if wanted:
            bad = [t for t in wanted if t not in TARGET_ORDER]
            if bad:
                raise self.CollectError(f"unknown target '{bad[0]}' given to --spk-target / "
                                        f"spk_targets (known: {', '.join(TARGET_ORDER)})")
        mine = {id(t) for t in tests_of(prog)}
        for t in select(prog):
            if id(t) not in mine:
                continue
            slow = _slow(self.case(t))
            for target in test_targets(t):
                if wanted and target not in wanted:
                    continue
                item = SpkItem.from_parent(self, name=f"{t.name}[{target}]", test=t,
                                           target=target)
                if slow:
                    item.add_marker(pytest.mark.slow)
                yield item

    def case(self, t):
        from spikedsl.runtime.testing import build_case

        key = id(t)
        if key not in self._cases:
            try:
                self._cases[key] = build_case(self._program, t)
            except Exception as e:
                self._cases[key] = e
        return self._cases[key]


class SpkItem(pytest.Item):
    def __init__(self, *, test, target: str, **kw):
        super().__init__(**kw)
        self.test = test
        self.target = target
        self._result = None

    def runtest(self) -> None:
        from spikedsl.runtime.testing import CaseError, run_case

        case = self.parent.case(self.test)
        if isinstance(case, CaseError):
            raise SpkFailure(case.render())
        if isinstance(case, Exception):
            raise case
        r = run_case(case, self.target)
        self._result = r
        if r.skipped:
            try:  # report the skip at the .spk test, not here
                exc = pytest.skip.Exception(f"[{self.target}] {r.reason}",
                                            _use_item_location=True)
            except TypeError:  # pragma: no cover - older pytest
                exc = pytest.skip.Exception(f"[{self.target}] {r.reason}")
            raise exc
        if r.failed:
            raise SpkFailure(r.details())

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, SpkFailure):
            return f"{self.test.name} [{self.target}]\n{excinfo.value.text}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        line = self.test.loc.line - 1 if self.test.loc else 0
        return self.path, line, f"{self.test.name} [{self.target}]"
