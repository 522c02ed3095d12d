"""``spikedsl compile FILE --target T [--allow-approx] [-o OUT]``: generated code for a
target.  ``--allow-approx`` (norse, nir) turns the refusals a target can
approximate into notes: Norse's 'super' surrogate for another surrogate, NIR
dropping refractory periods and delays."""

from __future__ import annotations

from spikedsl.cli._common import need_file, network, write_text
from spikedsl.targets import GENERATORS


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--target", "-t", required=True, choices=list(GENERATORS))
    p.add_argument("--network", "-n", help="network name (default: the only one)")
    p.add_argument("-o", "--output", help="output file (default: stdout; required for nir)")
    p.add_argument("--allow-approx", action="store_true",
                   help="norse, nir: approximate what the target cannot express exactly "
                        "(Norse: the 'super' surrogate; NIR: drop refractory periods and "
                        "delays), with a note")


def main(args) -> int:
    import spikedsl

    need_file(args.file)
    prog = spikedsl.load(args.file)
    handle = network(prog, args.network)
    if args.target == "nir":
        if not args.output:
            import sys

            print("spikedsl compile: error: --target nir needs -o FILE.nir", file=sys.stderr)
            return 2
        import nir

        nir.write(args.output, handle.to_nir(allow_approx=args.allow_approx))
        print(f"wrote {args.output}")
        return 0
    kw = {"allow_approx": True} if args.allow_approx and args.target in ("norse", "nir") else {}
    write_text(args.output, handle.source(args.target, **kw))
    return 0
