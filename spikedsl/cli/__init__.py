"""Command line: ``spikedsl COMMAND ...`` (README.md, "Command line").

Exit codes: 0 success, 1 spec error (or failed tests/verification), 2 usage
error.  No traceback reaches the user (set SPIKEDSL_DEBUG=1 to see one).
Importing this module imports neither torch nor brian2: each command lives
in ``spikedsl/cli/<name>.py`` with ``add_arguments(parser)`` and
``main(args) -> int`` and imports heavy libraries inside ``main``.  Target
names, devices and refusals come from :mod:`spikedsl.targets`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from spikedsl.targets import GENERATORS

COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("check", "parse, check and lower a spec; print a summary"),
    "ir": ("ir", "print the IR of a spec as JSON"),
    "compile": ("compile", f"generate code for a target ({', '.join(GENERATORS)})"),
    "fmt": ("fmt", "print a spec in canonical format (or rewrite it with -i)"),
    "train": ("train", "train a network as described by a train block"),
    "simulate": ("simulate", "simulate a network (Brian2 or torch), optionally with weights"),
    "export-nir": ("export_nir", "export a network to an NIR graph (HDF5)"),
    "import-nir": ("import_nir", "turn an NIR graph into a .spk file and a weights file"),
    "test": ("test", "run the test blocks of spec files on every target"),
    "verify": ("verify", "run a network on every target and compare the results"),
    "plot": ("plot", "plot a saved run or simulation (raster, traces, loss curves)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _Parser(prog="spikedsl", description="A compiler for spiking neural networks.")
    from spikedsl import __version__

    parser.add_argument("--version", action="version", version=f"spikedsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    mains = {}
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        m = importlib.import_module(f"spikedsl.cli.{mod}")
        m.add_arguments(p)
        mains[name] = m.main
    return parser, mains


def main(argv: list[str] | None = None) -> int:
    from spikedsl.errors import EXIT_CODES, exit_code

    parser, mains = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(mains[args.command](args) or 0)
    except tuple(EXIT_CODES) as e:
        _report(e, args.command)
        return exit_code(e)
    except Exception as e:
        if os.environ.get("SPIKEDSL_DEBUG"):
            raise
        msg = str(e) or type(e).__name__
        print(f"spikedsl {args.command}: error: {msg}", file=sys.stderr)
        print("(set SPIKEDSL_DEBUG=1 for details)", file=sys.stderr)
        return 1


def _report(e: BaseException, command: str) -> None:
    """Print what stopped ``command``: one of :data:`spikedsl.errors.EXIT_CODES`."""
    from spikedsl.errors import SpecError

    if isinstance(e, SpecError):
        n = len(e.diagnostics)
        print(e.render(), file=sys.stderr)
        print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)
    elif isinstance(e, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
    elif not isinstance(e, BrokenPipeError):  # a usage or user error
        print(f"spikedsl {command}: error: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
