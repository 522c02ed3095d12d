"""Helpers shared by commands."""

from __future__ import annotations

import os
import sys

from spikedsl import atomic
from spikedsl.errors import UsageError


def integer(lo: int):
    """An argparse type: an integer >= ``lo``."""
    import argparse

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


positive = integer(1)
count = integer(0)


def load_or_report(path: str):
    """The program in ``path``, or None after printing its errors and their count."""
    from spikedsl.errors import SpecError
    from spikedsl.frontend.program import load

    try:
        return load(path)
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        n = len(e.diagnostics)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return None


def network(prog, name: str | None):
    """The network ``name`` of ``prog`` (None: its only network); an unknown or
    ambiguous name is a usage error."""
    try:
        return prog.network(name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def need_file(path: str) -> None:
    """A missing input file is a usage error (exit 2)."""
    if os.path.isdir(path):
        print(f"spikedsl: error: {path} is a directory, not a file", file=sys.stderr)
        raise SystemExit(2)
    if not os.path.isfile(path):
        print(f"spikedsl: error: no such file: {path}", file=sys.stderr)
        raise SystemExit(2)


def write_text(path: str | None, text: str) -> None:
    """Write to ``path`` atomically, or to stdout when path is None or '-'."""
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    atomic.write_text(path, text)
