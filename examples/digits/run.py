"""The spikedsl demo on scikit-learn's digits: train a 64-128-10 LIF classifier
(digits.spk, torch target), export it to NIR, simulate it in Brian2 with the
trained weights, compare with torch, print a table.

    python examples/digits/run.py [--out out/digits] [--epochs N] [--no-brian2] ...

The logic lives in spikedsl/pipeline.py (``make demo`` runs the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a source checkout without installing

from spikedsl.runtime.pipeline import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv = ["--out", "out/digits", *argv]
    sys.exit(main(argv, spec=HERE / "digits.spk"))
