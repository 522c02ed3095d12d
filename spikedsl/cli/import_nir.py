"""``spikedsl import-nir net.nir [--dt 1e-4] -o model.spk``.

Writes ``model.spk`` (a readable spec) and ``model.npz`` (its weights, named as
in docs/semantics.md) next to it.  ``--convention norse`` undoes the known bugs
of graphs written by Norse's ``to_nir`` (docs/nir.md).  Exit 1 for a malformed
or unsupported graph, with a message and no traceback.
"""

from __future__ import annotations

import sys

from spikedsl.cli._common import need_file


def add_arguments(p) -> None:
    p.add_argument("file", metavar="NET.nir", help="an NIR graph (HDF5)")
    p.add_argument("--dt", type=float, default=None,
                   help="seconds per step (default: the graph's own dt if spikedsl wrote it, "
                        "else 1e-4; 1e-3 with --convention norse, sinabs or lava; "
                        "rockpool: the dt its graph stores in r)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.spk",
                   help="output spec; the weights go to the same name with .npz")
    p.add_argument("--name", default="Imported", help="network name (default: Imported)")
    p.add_argument("--convention", default="auto",
                   choices=["auto", "nir", "snntorch", "norse", "spikedsl", "sinabs",
                            "rockpool", "lava"],
                   help="how to read the graph: the reading of the tool that wrote it "
                        "(docs/nir.md, 'Conventions'; default: auto)")
    p.add_argument("--steps", type=int, default=None, help="number of steps of the network")


def main(args) -> int:
    need_file(args.file)
    if args.dt is not None and not args.dt > 0:
        print("spikedsl import-nir: error: --dt must be positive", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print("spikedsl import-nir: error: --steps must be positive", file=sys.stderr)
        return 2
    if not args.output.endswith(".spk"):
        print("spikedsl import-nir: error: the output must end in .spk", file=sys.stderr)
        return 2
    from spikedsl.targets.nir.importer import write_import

    r = write_import(args.file, args.output, args.dt, name=args.name,
                     convention=args.convention, steps=args.steps)
    for n in r.notes:
        print(f"note: {n}", file=sys.stderr)
    npz = args.output[:-4] + ".npz"
    print(f"wrote {args.output} and {npz} ({len(r.weights)} arrays)")
    return 0
