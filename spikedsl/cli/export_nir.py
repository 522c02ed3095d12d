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

from spikedsl.atomic import atomic_path
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
    from spikedsl.cli import _platform

    _platform.add_arguments(p, export=True)


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
    from spikedsl.cli import _platform

    bits = _platform.quantize_bits(args, "export-nir")
    if args.platform:  # nothing is written for a network that does not fit
        rep = _platform.report(prog, handle.ir, args, weights=weights, dt=args.dt)
        if not rep.ok:
            return 1
    if bits is not None:
        from spikedsl.lowering.weights import load_weights
        from spikedsl.targets.nir.platform_check import quantize_weights
        from spikedsl.targets.nir.platforms import platform as get_platform

        p = get_platform(args.platform) if args.platform else None
        W = load_weights(handle.ir, weights)
        if not any(k.endswith(".weight") for k in W):
            from spikedsl.lowering.weights import init_weights

            W = {**init_weights(handle.ir), **W}
        weights, qinfo = quantize_weights(
            handle.ir, W, bits=p.weight_bits if bits is True else bits,
            weight_max=p.weight_max if bits is True else None)
        for k, q in qinfo.items():
            print(f"quantized {k}: {q['bits']}-bit, scale {q['scale']:.4g}, max |error| "
                  f"{q['max_abs_error']:.3g}")
    graph, notes = targets.export("nir", handle.ir, weights=weights,
                                  allow_approx=args.allow_approx, dt=args.dt)
    if args.platform:
        graph.metadata["platform"] = args.platform
    if bits is not None:
        graph.metadata["quantized_bits"] = int(p.weight_bits if bits is True else bits)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    out = args.output
    with atomic_path(out, ".nir") as tmp:
        nir.write(tmp, graph)
    kinds = sorted({type(v).__name__ for v in graph.nodes.values()})
    print(f"wrote {out} ({len(graph.nodes)} nodes: {', '.join(kinds)})")
    return 0
