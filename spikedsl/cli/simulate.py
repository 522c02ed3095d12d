"""``spikedsl simulate FILE [--network N] [--target brian2|torch|nest] [--weights W]
[--device D] [--data SPEC] [--samples N] [--batch N] [--seed S] [--plot DIR]
[--output FILE.npz]``: run a network and print a summary.

Inputs come from ``--data`` (a data set such as ``digits``; default: the data
of a train block of this network, else seeded random inputs), encoded once
with the network's encoder (``spikedsl.runtime.reference.encode``) so every target
sees the same spikes.  The summary gives spike counts and rates per layer and
the accuracy when the data has labels (the predicted class is the output
neuron with the most spikes, or the largest mean of a state output).
``--plot DIR`` writes ``raster.png`` and ``traces.png`` (membrane potentials);
``--output`` saves every trace for ``spikedsl plot``.
"""

from __future__ import annotations

import os
import sys
import time

from spikedsl import targets
from spikedsl.cli._common import need_file, network, positive

TARGETS = ("brian2", "torch", "nest")
DEVICES = tuple(dict.fromkeys(d for t in TARGETS for d in targets.get(t).caps.devices))



def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help=".spk file")
    p.add_argument("--network", "-n", metavar="N", help="network (default: the only one)")
    p.add_argument("--target", "-t", choices=TARGETS, default="brian2",
                   help="simulator (default: brian2; nest: NEST's built-in models, "
                        "docs/nest.md)")
    p.add_argument("--threads", type=positive, default=1, metavar="N",
                   help="nest: NEST's local_num_threads (default 1)")
    p.add_argument("--weights", "-w", metavar="W",
                   help="trained weights: runs/NAME/checkpoint.pt or a .npz file "
                        "(default: the network's weights file, else a seeded initialisation)")
    p.add_argument("--device", "-d", choices=DEVICES, default=None,
                   help="brian2: runtime (numpy), numpy, cython or cpp_standalone; "
                        "torch: cpu or cuda")
    p.add_argument("--data", metavar="SPEC",
                   help="data set, e.g. digits or 'npz(\"file.npz\")' (default: the data of a "
                        "train block that uses the network, else random inputs)")
    p.add_argument("--samples", type=positive, default=100, metavar="N",
                   help="number of test samples to simulate (default 100)")
    p.add_argument("--batch", type=positive, default=None, metavar="N",
                   help="samples simulated together (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the encoding and of random "
                   "inputs / weights (default 0)")
    p.add_argument("--plot", metavar="DIR", help="write raster.png and traces.png to DIR")
    p.add_argument("--output", "-o", metavar="FILE.npz",
                   help="save outputs and traces (read by 'spikedsl plot')")


def _usage(msg: str) -> int:
    print(f"spikedsl simulate: error: {msg}", file=sys.stderr)
    return 2


def _data_spec(prog, net_name: str):
    """(spec text, train block name) of a train block using the network."""
    from spikedsl.ir.exprs import SpkPrinter

    for t in prog.trains.values():
        s = {x.name: x.value for x in t.settings}
        v = s.get("network")
        if getattr(v, "id", None) == net_name and "data" in s:
            return SpkPrinter()(s["data"]), t.name
    return None, None


def _inputs(net, args, prog):
    """(encoded inputs [T, B, ...], labels or None, description)."""
    import numpy as np

    from spikedsl.runtime.reference import encode

    if not net.inputs:  # autonomous: one run of `steps` steps, nothing to feed
        if args.data:
            raise ValueError(f"network '{net.name}' has no input layer; --data feeds one")
        return {}, None, "none (the network has no input layer): one run"
    spec, origin = (args.data, None) if args.data else _data_spec(prog, net.name)
    if spec is None:
        rng = np.random.default_rng(args.seed)
        X = {}
        for lay in net.inputs:
            raw = rng.random((args.samples,) + tuple(lay.shape))
            if lay.encoder == "spikes":
                X[lay.name] = (rng.random((net.steps, args.samples) + tuple(lay.shape))
                               < 0.2).astype(np.float64)
            else:
                X[lay.name] = encode(lay, raw, net.steps, seed=args.seed)
        return X, None, f"{args.samples} random samples (seed {args.seed})"
    if len(net.inputs) != 1:
        raise ValueError(f"network '{net.name}' has {len(net.inputs)} inputs; --data feeds one")
    from spikedsl.runtime.data import DataError, load_dataset

    base = os.path.dirname(os.path.abspath(args.file))
    try:
        ds = load_dataset(spec, {}, base, args.seed)
    except DataError as e:
        raise ValueError(str(e)) from None
    lay = net.inputs[0]
    x = np.asarray(ds.x_test[: args.samples], dtype=np.float64)
    n = int(np.prod(lay.shape))
    if int(np.prod(x.shape[1:])) != n:
        raise ValueError(f"data '{spec}' has samples of shape {list(x.shape[1:])}, input "
                         f"'{lay.name}' needs {list(lay.shape)}")
    x = x.reshape((x.shape[0],) + tuple(lay.shape))
    y = None if ds.y_test is None else np.asarray(ds.y_test[: args.samples])
    if lay.encoder == "spikes":
        raise ValueError(f"input '{lay.name}' uses the 'spikes' encoder: give encoded data")
    X = {lay.name: encode(lay, x, net.steps, seed=args.seed)}
    where = f" (from train block '{origin}')" if origin else ""
    return X, y, f"{x.shape[0]} test samples of '{spec}'{where}"


def _record_keys(net, pre: bool = True) -> tuple[list[str], list[str], list[str]]:
    """(record keys, spiking layers, membrane traces) for the summary and plots;
    ``pre``: the potential before the reset where the target records it."""
    spiking, states = [], []
    for lay in net.layers:
        if (lay.kind == "neuron" and lay.neuron.spiking) or (
                lay.kind == "input" and lay.encoder != "direct"):
            spiking.append(lay.name)
        if lay.kind == "neuron" and lay.neuron.states:
            names = [s.name for s in lay.neuron.states]
            s = "v" if "v" in names else names[0]
            states.append(f"{lay.name}.{s}_pre" if pre and lay.neuron.spiking and any(
                a.target == s for a in lay.neuron.reset) else f"{lay.name}.{s}")
    return spiking + states, spiking, states


def _run(net, X, args, weights, record):
    import numpy as np

    devices = targets.get(args.target).caps.devices
    if args.device is not None and args.device not in devices:
        title = {"brian2": "Brian2"}.get(args.target, args.target)
        raise ValueError(f"--device {args.device} is not a {title} device "
                         f"({', '.join(devices)})")
    targets.require(args.target, net)
    if args.target == "brian2":
        return targets.simulate("brian2", net, X, weights=weights,
                                device=args.device or devices[0], record=record,
                                batch_size=args.batch, seed=args.seed)
    if args.target == "nest":
        return targets.run("nest", net, X, weights=weights, record=record, seed=args.seed,
                           threads=args.threads)
    from spikedsl.runtime.devices import torch_device

    device = torch_device(args.device)
    from spikedsl.lowering.weights import init_weights
    from spikedsl.runtime import validate

    W = validate.weights(net, weights, seed=args.seed)
    if W is None:
        W = init_weights(net, args.seed)
    import torch

    if net.plasticity:
        from spikedsl.runtime import reference

        X = validate.inputs(net, X)
        return reference.run(net, X, weights=W, record=record, xp=torch, device=device)
    out = targets.run("torch", net, X, weights=W, dtype=np.float64, record=record,
                      device=device)
    return {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)
            for k, v in out.items()}


def _prediction(net, out):
    import numpy as np

    o = net.outputs[0]
    y = np.asarray(out[o.name], dtype=np.float64)
    if o.reduce == "none":
        y = y.sum(0) if o.state is None else y.mean(0)
    return y.reshape(y.shape[0], -1).argmax(1)


def main(args) -> int:
    need_file(args.file)
    if args.weights:
        need_file(args.weights)
    import numpy as np

    from spikedsl.frontend.program import load

    prog = load(args.file)
    handle = network(prog, args.network)
    net = handle.ir
    try:
        X, labels, what = _inputs(net, args, prog)
    except ValueError as e:
        return _usage(str(e))
    record, spiking, states = _record_keys(net, pre=args.target != "nest")
    print(f"network {net.name}: {len(net.layers)} layers, {net.steps} steps of "
          f"{_dt_text(net)}; target {args.target}"
          + (f" ({args.device or 'runtime'})" if args.target == "brian2" else ""))
    print(f"inputs: {what}")
    print("weights: " + (args.weights or (os.path.basename(net.weights) if net.weights else
                                          f"seeded initialisation (seed {args.seed})")))
    t0 = time.perf_counter()
    out = _run(net, X, args, args.weights, record)
    seconds = time.perf_counter() - t0
    B = next(iter(X.values())).shape[1] if X else 1
    print(f"simulated {B} sample{'' if B == 1 else 's'} in {seconds:.2f} s")
    print()
    rows = [("layer", "neurons", "spikes", "per neuron", "rate")]
    for name in spiking:
        z = np.asarray(out[name])
        n = int(np.prod(z.shape[2:]))
        total = float(z.sum())
        per = total / max(n * B, 1)
        rows.append((name, str(n), f"{total:.0f}", f"{per:.2f}", _rate(per, net)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths))).rstrip())
    if labels is not None and net.outputs:
        pred = _prediction(net, out)
        acc = float((pred == labels[: len(pred)]).mean())
        print()
        print(f"accuracy ({net.outputs[0].name}): {100 * acc:.2f}% on {len(pred)} samples")
    if args.output:
        from spikedsl.runtime.plots import save_simulation

        save_simulation(args.output, out, dt=net.dt, unit=net.dt_unit, spiking=spiking,
                        states=states, network=net.name, target=args.target)
        print(f"wrote {args.output}")
    if args.plot:
        from spikedsl.runtime.plots import raster, traces

        os.makedirs(args.plot, exist_ok=True)
        title = f"{net.name} ({args.target}), sample 0"
        p1 = raster({k: out[k] for k in spiking}, os.path.join(args.plot, "raster.png"),
                    dt=net.dt, unit=net.dt_unit, title=title)
        print(f"wrote {p1}")
        if states:
            p2 = traces({k: out[k] for k in states}, os.path.join(args.plot, "traces.png"),
                        dt=net.dt, unit=net.dt_unit, title=title)
            print(f"wrote {p2}")
    return 0


def _dt_text(net) -> str:
    if net.dt_unit is None:
        return f"{net.dt:g} time unit{'' if net.dt == 1 else 's'}"
    from spikedsl.ir.units import parse_unit

    return f"{net.dt / parse_unit(net.dt_unit)[0]:g} {net.dt_unit}"


def _rate(per_neuron: float, net) -> str:
    steps = net.steps
    if net.dt_unit is None:
        return f"{per_neuron / steps:.3f}/step"
    return f"{per_neuron / (steps * net.dt):.1f} Hz"
