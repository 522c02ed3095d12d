"""``spikedsl verify FILE [--network N]``: run a network on every target with
the same weights and inputs and compare (docs/testing.md, "verify").

Prints which targets ran (or why not), then one row per pair of targets:
the fraction of equal spikes and the largest difference of the other traces
(states before and after reset, stage values, outputs).  Exit 1 when a pair
disagrees beyond ``--tol``, a target fails, or fewer than two targets ran.
"""

from __future__ import annotations

import sys

from spikedsl.cli._common import need_file, network
from spikedsl.targets import NAMES

TARGET_CHOICES = NAMES  # reference, torch, norse, brian2, nir


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help=".spk file")
    p.add_argument("--network", "-n", default=None, metavar="N",
                   help="the network to verify (needed when the file has several)")
    p.add_argument("--steps", type=int, default=None, help="time steps (default: the network's)")
    p.add_argument("--batch", type=int, default=2, help="batch size of the random inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    p.add_argument("--tol", type=float, default=1e-9,
                   help="largest allowed absolute difference of states (default 1e-9)")
    p.add_argument("-t", "--target", action="append", default=None, metavar="T",
                   help=f"compare only these targets ({', '.join(TARGET_CHOICES)}); "
                        "repeat or separate with commas")
    p.add_argument("--input-scale", type=float, default=1.0,
                   help="direct inputs are uniform in [0, SCALE) (default 1)")
    p.add_argument("--weight-scale", type=float, default=1.0,
                   help="multiply the dense/conv2d weights (to make a network spike more)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="a weights file (.npz) to use instead of seeded random weights")
    p.add_argument("--quantize", type=int, default=None, metavar="BITS",
                   help="instead of comparing targets: run the reference interpreter with "
                        "float weights and with weights rounded to BITS-bit integers, and "
                        "compare (spikes, predicted class, accuracy with --data)")
    p.add_argument("--platform", default=None,
                   choices=("xylo", "xylo-imu", "loihi2", "spinnaker2", "speck"),
                   help="with --quantize (or alone): the chip's weight width")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="with --quantize: measure accuracy on the test split of this data "
                        "set (e.g. digits, 'mnist(\"data/mnist\")'); paths relative to FILE")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="with --data: the first N test samples only")


def main(args) -> int:
    need_file(args.file)
    if args.steps is not None and args.steps <= 0:
        print("spikedsl verify: error: --steps must be positive", file=sys.stderr)
        return 2
    if args.batch <= 0:
        print("spikedsl verify: error: --batch must be positive", file=sys.stderr)
        return 2
    targets = None
    if args.target:
        targets = [t.strip() for v in args.target for t in v.split(",") if t.strip()]
        bad = [t for t in targets if t not in TARGET_CHOICES]
        if bad:
            print(f"spikedsl verify: error: unknown target '{bad[0]}' "
                  f"(known: {', '.join(TARGET_CHOICES)})", file=sys.stderr)
            return 2
    from spikedsl.frontend.program import load
    from spikedsl.runtime.verify import verify

    prog = load(args.file)
    if not prog.networks:
        print(f"spikedsl verify: error: {args.file} defines no network", file=sys.stderr)
        return 2
    if args.network is None and len(prog.networks) > 1:
        print(f"spikedsl verify: error: {args.file} has networks {', '.join(prog.networks)}; "
              "choose one with --network", file=sys.stderr)
        return 2
    if args.network is not None and args.network not in prog.networks:
        print(f"spikedsl verify: error: no network '{args.network}' in {args.file} "
              f"(it has {', '.join(prog.networks)})", file=sys.stderr)
        return 2
    net = network(prog, args.network).ir
    if args.quantize is not None or args.platform is not None:
        return _quantized(net, args)
    weights = None
    if args.weights:
        need_file(args.weights)
        from spikedsl.runtime import validate

        weights = validate.read_file(net, args.weights)  # exactly the network's arrays
    report = verify(net, targets=targets, steps=args.steps, batch=args.batch, seed=args.seed,
                    tol=args.tol, weights=weights, input_scale=args.input_scale,
                    weight_scale=args.weight_scale)
    print(report.render())
    return 0 if report.ok else 1


def _quantized(net, args) -> int:
    """``--quantize BITS`` / ``--platform P``: float vs quantised weights."""
    import os

    from spikedsl.runtime.quantized import compare_quantized

    weight_max = None
    bits = args.quantize
    if args.platform:
        from spikedsl.targets.nir.platforms import platform

        p = platform(args.platform)
        if bits is None:
            bits, weight_max = p.weight_bits, p.weight_max
    if not 2 <= bits <= 32:
        print("spikedsl verify: error: --quantize BITS must be in 2..32", file=sys.stderr)
        return 2
    if args.weights:
        need_file(args.weights)
    data = (args.data, os.path.dirname(os.path.abspath(args.file))) if args.data else None
    rep = compare_quantized(net, bits, weight_max=weight_max, weights=args.weights, data=data,
                            limit=args.limit, batch=args.batch, seed=args.seed,
                            steps=args.steps, platform=args.platform)
    print(rep.render())
    return 0
