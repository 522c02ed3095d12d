"""``spikedsl train FILE [--train NAME] [--run NAME] [--resume] [--epochs N]
[--device cpu|cuda] [--no-progress] [--limit N] [--threads N] [--nproc N]
[--timeout S]``: run a train block.

Exit 0 when the run finished, 1 on a spec or data error, a NaN/Inf stop or a
rank of ``--nproc`` that died, 130 when interrupted with Ctrl-C (a checkpoint
is saved; ``--resume`` goes on).
"""

from __future__ import annotations

import argparse
import sys

from spikedsl.cli._common import count, need_file, positive


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return v


def add_arguments(p) -> None:
    p.add_argument("file", metavar="FILE", help=".spk file with a train block")
    p.add_argument("--train", metavar="NAME", help="the train block (needed when the file "
                   "has several)")
    p.add_argument("--run", "--run-name", dest="run", metavar="NAME",
                   help="run name: files go to runs/NAME/ "
                   "(default: the train block's name)")
    p.add_argument("--resume", action="store_true",
                   help="continue from runs/NAME/checkpoint.pt")
    p.add_argument("--epochs", type=count, metavar="N", help="override the number of epochs")
    p.add_argument("--device", choices=("cpu", "cuda"), help="override the device")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--limit", type=positive, metavar="N",
                   help="use only the first N training and test samples (quick runs)")
    p.add_argument("--threads", type=positive, metavar="N",
                   help="torch CPU threads (default: torch's choice, with --nproc the cores "
                        "divided by N; 1 is often fastest for small networks)")
    p.add_argument("--nproc", type=positive, metavar="N",
                   help="data-parallel training on N processes of this machine "
                        "(DistributedDataParallel; the same global batch as one process)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="with --nproc: seconds a rank waits for a silent peer before the run "
                        "ends (default 120)")


def _summary(res) -> list[str]:
    from spikedsl.runtime.train import _fmt_metric

    lines = [f"{res.message}"]
    if res.history:
        row = res.final
        metrics = [k[len("test_"):] for k in row if k.startswith("test_")]
        w = max(len(m) for m in metrics) if metrics else 4
        lines.append(f"  {'metric':<{w}}  {'train':>10}  {'test':>10}")
        for m in metrics:
            lines.append(f"  {m:<{w}}  {_fmt_metric(m, row.get(f'train_{m}')):>10}  "
                         f"{_fmt_metric(m, row.get(f'test_{m}')):>10}")
        per = sum(r["seconds"] for r in res.history) / len(res.history)
        lines.append(f"  epochs {res.epochs_done}/{res.epochs}, {per:.2f} s per epoch, "
                     f"{res.seconds:.1f} s in all")
    for k, path in res.paths.items():
        if path.exists():
            lines.append(f"  {k:<10}  {path}")
    return lines


def main(args) -> int:
    need_file(args.file)
    import spikedsl
    from spikedsl.runtime.data import DataError
    from spikedsl.runtime.train import train

    prog = spikedsl.load(args.file)
    try:
        res = train(prog, args.train, run_name=args.run, resume=args.resume,
                    epochs=args.epochs, device=args.device, progress=not args.no_progress,
                    limit=args.limit, threads=args.threads, nproc=args.nproc,
                    timeout=args.timeout, log=lambda m: print(m, flush=True))
    except DataError as e:
        if getattr(e, "loc", None) is not None:  # file:line:col: error: ... (the data setting)
            print(e, file=sys.stderr)
        else:
            print(f"spikedsl train: data error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"spikedsl train: error: {e}", file=sys.stderr)
        return 1
    if res.rank != 0:  # a rank started by torchrun: rank 0 reports
        return 0 if res.status == "done" else (130 if res.status == "interrupted" else 1)
    if res.status == "done":
        print("\n".join(_summary(res)))
        return 0
    rest = _summary(res)[1:]
    if rest:
        print("\n".join(rest))
    print(f"spikedsl train: {res.message}", file=sys.stderr)
    return 130 if res.status == "interrupted" else 1
