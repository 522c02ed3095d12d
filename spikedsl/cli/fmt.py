"""``spikedsl fmt FILE... [-i] [--check]``: canonical formatting."""

from __future__ import annotations

import sys

from spikedsl.cli._common import need_file, write_text


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-i", "--in-place", action="store_true", help="rewrite the files")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a file is not formatted (writes nothing)")


def main(args) -> int:
    from spikedsl.frontend.fmt import format_text

    status = 0
    for f in args.files:
        need_file(f)
    for f in args.files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        out = format_text(text, f)
        if args.check:
            if out != text:
                print(f"{f}: would reformat", file=sys.stderr)
                status = 1
        elif args.in_place:
            if out != text:
                write_text(f, out)
        else:
            sys.stdout.write(out)
    return status
