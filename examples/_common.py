"""Small helpers shared by the examples (argument parsing, output folder,
timing, figures, results file). Not part of the spikedsl package.

Every example's ``run.py`` is one command::

    python examples/<name>/run.py            # default: embedded data, < 5 min on 2 cores
    python examples/<name>/run.py --smoke    # a few seconds: end-to-end check (tests)
    python examples/<name>/run.py --full     # paper-size run (needs data/mnist for some)

and writes its figures and ``results.json`` to ``examples/<name>/out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


def setup_torch(threads: int | None = 1) -> None:
    """One intra-op thread by default: these networks are small and step
    through time, so a second thread buys little on two cores and costs a lot
    when the machine is shared (OpenMP threads spinning against other jobs)."""
    import torch

    torch.set_num_threads(max(1, int(threads or 1)))


def _threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover
        return 0


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_true",
                   help="tiny run (1 epoch, few samples, seconds): checks the pipeline end to end")
    g.add_argument("--full", action="store_true",
                   help="paper-size run (MNIST from data/mnist where the paper used it)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ./out next "
                                                          "to run.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("SPIKEDSL_THREADS", "1")),
                   help="torch intra-op threads (default 1, or $SPIKEDSL_THREADS)")
    return p


def out_dir(run_file: str, args) -> Path:
    d = Path(args.out) if getattr(args, "out", None) else Path(run_file).resolve().parent / "out"
    d.mkdir(parents=True, exist_ok=True)
    return d


def mode(args) -> str:
    return "smoke" if args.smoke else ("full" if args.full else "default")


MNIST_DIR = ROOT / "data" / "mnist"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def mnist_present(path: Path = MNIST_DIR) -> bool:
    """True when the four MNIST IDX files (or .gz, or torchvision's raw/ layout) exist."""
    for base in (path, path / "raw", path / "MNIST" / "raw"):
        if all((base / f).exists() or (base / (f + ".gz")).exists() for f in MNIST_FILES):
            return True
    return False


def need_mnist(what: str) -> None:
    if not mnist_present():
        sys.exit(f"--full runs {what} on MNIST, but the IDX files are not in {MNIST_DIR}.\n"
                 f"Put {', '.join(MNIST_FILES)} (or their .gz) there "
                 "(https://ossci-datasets.s3.amazonaws.com/mnist/), or run without --full.")


class Clock:
    """Wall-clock and process CPU timer (``elapsed()``, ``cpu()``, in seconds)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def cpu(self) -> float:
        return time.process_time() - self.c0


_START = time.perf_counter()


def wall_seconds() -> float:
    """Wall-clock seconds since this module was imported (run.py imports it first)."""
    return time.perf_counter() - _START


def cpu_seconds() -> float:
    """CPU seconds of this process since it started (imports included)."""
    return time.process_time()


def save(fig, path: Path, dpi: int = 90) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    print(f"  figure: {path}")
    return path


def write_results(out: Path, results: dict) -> Path:
    """results.json, with the whole command's wall and CPU time (imports included)."""
    results["wall_seconds"] = round(wall_seconds(), 1)
    results["cpu_seconds"] = round(cpu_seconds(), 1)
    results["threads"] = _threads()
    print(f"  time: {results['wall_seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU "
          f"({results['threads']} torch thread(s))")
    p = out / "results.json"
    p.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"  results: {p}")
    return p


def table(rows: list[list], header: list[str]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
