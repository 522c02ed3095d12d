"""``spikedsl test FILE... [--target T] [-k PATTERN]``: run the test blocks.

One line per test and target (PASS / FAIL / SKIP with the reason / ERROR),
the failing expectations under a FAIL with their ``file:line:col``, then the
summary ``N passed, N failed, N skipped``.  Exit 1 on any failure, error or
spec error; 2 on a usage error.  A directory stands for every ``*.spk`` file
below it.
"""

from __future__ import annotations

import os
import sys

from spikedsl.cli._common import load_or_report
from spikedsl.targets import NAMES

TARGET_CHOICES = NAMES  # reference, torch, norse, brian2, nir


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=".spk files or directories (every *.spk below)")
    p.add_argument("-t", "--target", action="append", default=None, metavar="T",
                   help=f"run only on these targets ({', '.join(TARGET_CHOICES)}); "
                        "repeat or separate with commas")
    p.add_argument("-k", dest="pattern", default=None, metavar="PATTERN",
                   help="run only tests whose name contains PATTERN (or matches the glob)")
    p.add_argument("--imports", action="store_true",
                   help="also run the tests of imported files")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also list every checked expectation")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print failures and the summary only")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="write what each test recorded to DIR/<test>-<target>.npz "
                        "(draw it with `spikedsl plot`)")


def _files(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if f.endswith(".spk")]
        elif os.path.isfile(p):
            out.append(p)
        else:
            print(f"spikedsl: error: no such file: {p}", file=sys.stderr)
            return None
    return out


def _targets(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        for t in v.split(","):
            t = t.strip()
            if not t:
                continue
            if t not in TARGET_CHOICES:
                print(f"spikedsl test: error: unknown target '{t}' "
                      f"(known: {', '.join(TARGET_CHOICES)})", file=sys.stderr)
                return False
            out.append(t)
    return out


def main(args) -> int:
    from spikedsl.runtime import testing

    files = _files(args.files)
    targets = _targets(args.target)
    if files is None or targets is False:
        return 2
    results: list = []
    spec_errors = 0

    def show(r) -> None:
        if args.save:
            path = testing.save_traces(r, args.save)
            r.traces = None  # keep memory flat over many tests
            if path and args.verbose:
                print(f"    saved {path}")
        if args.quiet and not r.failed:
            return
        print(r.line())
        if r.failed:
            for line in r.details().splitlines():
                print(f"    {line}")
        elif args.verbose:
            for c in r.checks:
                print(f"    ok  {c.text}  ({c.actual})")
        sys.stdout.flush()

    for f in files:
        prog = load_or_report(f)
        if prog is None:
            spec_errors += 1
            continue
        results += testing.run_program(prog, targets=targets, pattern=args.pattern,
                                       include_imports=args.imports, on_result=show)
    line = testing.summary(results)
    if spec_errors:
        line += f", {spec_errors} file{'s' if spec_errors != 1 else ''} with errors"
    print(line)
    if not results and not spec_errors:
        print("no tests ran", file=sys.stderr)
    return 1 if spec_errors or any(r.failed for r in results) else 0
