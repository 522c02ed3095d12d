"""``spikedsl check FILE...``: parse, check and lower; print a summary."""

from __future__ import annotations

from spikedsl.cli._common import load_or_report, need_file


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help=".spk files")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say which integration method each neuron got")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    from spikedsl.cli import _platform

    _platform.add_arguments(p)


def summary(prog, verbose: bool = False) -> list[str]:
    lines = []
    for name, n in prog.neurons.items():
        low = prog.neuron(name)
        what = {"update": "discrete update", "none": "no dynamics"}.get(low.method,
                                                                         f"method {low.method}")
        extra = ""
        if verbose and low.method in ("exact", "euler", "rk2", "rk4"):
            chosen = "as written" if any(o.method for o in n.odes) else (
                "default: linear system" if low.method == "exact" else
                "default: the system is nonlinear")
            extra = f" ({chosen})"
        lines.append(f"  neuron  {name}: {len(low.states)} state(s), {what}{extra}")
    for name in prog.synapses:
        lines.append(f"  synapse {name}")
    for name, net in prog.lowered.items():
        shapes = ", ".join(
            f"{la.name}{list(la.shape)}" for la in net.layers)
        lines.append(f"  network {name}: {len(net.layers)} layers, {net.steps} steps: {shapes}")
    for name in prog.trains:
        lines.append(f"  train   {name}")
    if prog.tests:
        lines.append(f"  {len(prog.tests)} test block(s)")
    return lines


def main(args) -> int:

    failed = 0
    for f in args.files:
        need_file(f)
    if getattr(args, "quantize", None) is not None and not args.platform:
        from spikedsl.cli._platform import quantize_bits

        quantize_bits(args, "check")  # exits 2 unless BITS is given
        import sys

        print("spikedsl check: error: --quantize needs --platform", file=sys.stderr)
        return 2
    for f in args.files:
        prog = load_or_report(f)
        if prog is None:
            failed += 1
            continue
        if not args.quiet:
            print(f"{f}: ok")
            for line in summary(prog, args.verbose):
                print(line)
        if getattr(args, "platform", None):
            failed += _check_platform(prog, f, args)
    return 1 if failed else 0


def _check_platform(prog, f: str, args) -> int:
    """``--platform``: every network (or ``--network``) against the chip's limits."""
    import os
    import sys

    from spikedsl.cli import _platform

    names = [args.network] if args.network else list(prog.lowered)
    if args.network and args.network not in prog.lowered:
        print(f"spikedsl check: error: no network '{args.network}' in {f}", file=sys.stderr)
        raise SystemExit(2)
    weights = args.weights
    if weights and os.path.isdir(weights):
        weights = os.path.join(weights, "checkpoint.pt")
    bad = 0
    for name in names:
        rep = _platform.report(prog, prog.lowered[name], args, weights=weights)
        bad += 0 if rep.ok else 1
    return 1 if bad else 0
