"""``spikedsl export-nir FILE [--network N] [--weights ckpt|npz] [--allow-approx] -o net.nir``.

Writes the network as an NIR graph (HDF5).  Weights: a torch checkpoint
(``runs/NAME/checkpoint.pt``, a dict with key "model", or a run directory), an
``.npz`` weights file, or by default the network's own ``weights = "..."`` file
(else the torch target's initialisation).  Exit 1 when NIR cannot express the
network (the message names the neuron, its line and the reason).
"""

from __future__ import annotations

import os
import sys

from spikedsl.cli._common import need_file


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help="a .spk file")
    p.add_argument("--network", "-n", help="network name (default: the only one)")
    p.add_argument("--weights", "-w", metavar="CKPT|NPZ",
                   help="trained weights: torch checkpoint, run directory or .npz")
    p.add_argument("--allow-approx", action="store_true",
                   help="export a close graph where NIR cannot express the network exactly, "
                        "listing every change")
    p.add_argument("--dt", type=float, default=None,
                   help="seconds per step for networks without a time unit (default 1e-4)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.nir", help="output file")


def main(args) -> int:
    import spikedsl

    need_file(args.file)
    weights = args.weights
    if weights is not None:
        if os.path.isdir(weights):
            weights = os.path.join(weights, "checkpoint.pt")
        need_file(weights)
    if args.dt is not None and not args.dt > 0:
        print("spikedsl export-nir: error: --dt must be positive", file=sys.stderr)
        return 2
    prog = spikedsl.load(args.file)
    try:
        handle = prog.network(args.network)
    except KeyError as e:
        print(f"spikedsl export-nir: error: {e.args[0]}", file=sys.stderr)
        return 2
    import nir

    from spikedsl import targets

    graph, notes = targets.export("nir", handle.ir, weights=weights,
                                  allow_approx=args.allow_approx, dt=args.dt)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    out = args.output
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        nir.write(tmp, graph)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    kinds = sorted({type(v).__name__ for v in graph.nodes.values()})
    print(f"wrote {out} ({len(graph.nodes)} nodes: {', '.join(kinds)})")
    return 0
