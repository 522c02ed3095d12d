"""``spikedsl ir FILE``: the IR as JSON (spec IR with locations, lowered IR)."""

from __future__ import annotations

from spikedsl.cli._common import need_file, write_text


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--lowered", action="store_true", help="print only the lowered networks")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")


def main(args) -> int:
    import json

    import spikedsl

    need_file(args.file)
    prog = spikedsl.load(args.file)
    if args.lowered:
        text = json.dumps({k: v.model_dump(mode="json") for k, v in prog.lowered.items()},
                          indent=2)
    else:
        text = prog.to_json()
    write_text(args.output, text + "\n")
    return 0
