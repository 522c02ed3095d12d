"""``--platform`` / ``--quantize`` for ``spikedsl check`` and ``spikedsl export-nir``
(spikedsl/targets/nir/platform_check.py; docs/platforms.md)."""

from __future__ import annotations

import sys

PLATFORM_NAMES = ("xylo", "xylo-imu", "loihi2", "spinnaker2", "speck")


def add_arguments(p, export: bool = False) -> None:
    p.add_argument("--platform", choices=PLATFORM_NAMES, default=None,
                   help="check the network against a neuromorphic chip's limits and print its "
                        "resource use (docs/platforms.md)")
    p.add_argument("--quantize", nargs="?", const="platform", default=None, metavar="BITS",
                   help=("round the weights to signed BITS-bit integers times one scale per "
                         "projection before writing (default BITS: the --platform's width)"
                         if export else
                         "report each projection's quantisation scale and error at BITS bits "
                         "(default: the --platform's width)"))
    if not export:
        p.add_argument("--network", "-n", default=None, metavar="N",
                       help="with --platform: the network to check (default: all)")
        p.add_argument("--weights", "-w", default=None, metavar="CKPT|NPZ",
                       help="with --platform: trained weights (checkpoint, run directory, .npz)")


def quantize_bits(args, cmd: str):
    """True (the platform's width), an int, or None; exits 2 on a usage error."""
    q = getattr(args, "quantize", None)
    if q is None:
        return None
    if q == "platform":
        if not args.platform:
            print(f"spikedsl {cmd}: error: --quantize without BITS needs --platform",
                  file=sys.stderr)
            raise SystemExit(2)
        return True
    try:
        bits = int(q)
    except ValueError:
        bits = 0
    if not 2 <= bits <= 32:
        print(f"spikedsl {cmd}: error: --quantize BITS must be an integer in 2..32, got {q!r}",
              file=sys.stderr)
        raise SystemExit(2)
    return bits


def report(prog, net, args, weights=None, dt=None):
    """Check ``net``; prints the report on stdout and the errors on stderr.
    Returns the report."""
    from spikedsl.targets.nir.platform_check import check_platform

    rep = check_platform(net, args.platform, weights=weights, dt=dt,
                         quantize=quantize_bits(args, "check"), sources=prog.sources)
    print(rep.render(errors=False))
    if rep.diagnostics:
        for d in rep.diagnostics:
            print(d.render(prog.sources), file=sys.stderr)
        n = len(rep.diagnostics)
        print(f"{net.name} does not fit {args.platform}: {n} error{'s' if n != 1 else ''}",
              file=sys.stderr)
    else:
        print(f"  fits {args.platform}: no limit exceeded")
    return rep
