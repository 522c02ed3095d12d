"""Event data end to end: a small conv SNN trained on events in N-MNIST's format.

    python examples/events/run.py          # 500 train / 200 test recordings, 8 epochs (< 1 min)
    python examples/events/run.py --smoke  # 60 / 30 recordings, 1 epoch (seconds)

1. Writes a synthetic event set in the real N-MNIST layout and binary format
   (tonic's folders ``out/data/NMNIST/{Train,Test}/<digit>/*.bin``, 40-bit
   event records): scikit-learn digits (upsampled to 24x24) watched by a
   simulated event camera during one 100 ms saccade
   (``spikedsl.runtime.events.saccade_events``). Existing files are kept.
2. Trains events.spk's ``events_nmnist`` (``data = tonic("NMNIST", ...)``:
   tonic's reader, ToFrame binning to the network's 20 steps of 5 ms) with
   the torch target.
Figures: out/frames.png (binned events of a few recordings), out/result.png
(loss and accuracy per epoch); out/results.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "events.spk"


def write_events(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Synthetic N-MNIST-format recordings of scikit-learn digits (balanced
    classes; train and test from disjoint digits)."""
    import numpy as np
    from sklearn.datasets import load_digits

    from spikedsl.runtime.data import _upsample
    from spikedsl.runtime.events import saccade_events, write_nmnist

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    n_events = []
    written = 0
    for split, idx in (("Train", order[:n_train]), ("Test", order[n_train:n_train + n_test])):
        for i in idx:
            f = root / "NMNIST" / split / str(d.target[i]) / f"{i:05d}.bin"
            if f.is_file():
                continue
            img = _upsample(d.images[i:i + 1] / 16.0, 24, "bilinear")[0]
            ev = saccade_events(img, seed=int(i))
            write_nmnist(f, **ev)
            n_events.append(len(ev["t"]))
            written += 1
    return {"written": written, "mean_events": float(np.mean(n_events)) if n_events else None}


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import matplotlib.pyplot as plt

    import spikedsl
    from spikedsl.runtime.train import train

    n_train, n_test = (60, 30) if args.smoke else (500, 200)
    epochs = args.epochs if args.epochs is not None else (1 if args.smoke else 8)
    print(f"== writing N-MNIST-format events to {out / 'data'}")
    c = C.Clock()
    made = write_events(out / "data", n_train, n_test, seed=args.seed)
    sec_write = c.elapsed()
    print(f"  {made['written']} new recordings ({sec_write:.1f} s)")

    # the spec read as if it sat in the output folder, so that path = "out/data" is found
    text = SPEC.read_text(encoding="utf-8").replace('path = "out/data"', 'path = "data"')
    prog = spikedsl.loads(text, file=str(out / "events.spk"))
    print(f"== training events_nmnist: {n_train} / {n_test} recordings, {epochs} epoch(s)")
    c = C.Clock()
    res = train(prog, "events_nmnist", run_dir=out / "run", epochs=epochs, progress=False,
                log=print)
    sec_train = c.elapsed()
    if res.status != "done":
        print(res.message)
        return 1
    hist = res.history
    final = res.final
    print(f"  test accuracy {final['test_accuracy']:.3f}, train {final['train_accuracy']:.3f}; "
          f"{sec_train:.1f} s")

    # figures: binned events of four recordings, curves
    from spikedsl.runtime.data import load_dataset
    from spikedsl.runtime.events import network_args

    net = prog.network("EventConv").ir
    ds = load_dataset("tonic", network_args("tonic", {0: "NMNIST", "path": "data",
                                                      "downsample": 2, "n_train": 4,
                                                      "first_saccade_only": True}, net),
                      str(out), 0)
    fig, axes = plt.subplots(2, 4, figsize=(9, 4.4))
    for k in range(4):
        fr = ds.x_train[k]  # [T, 2, H, W]
        axes[0, k].imshow(fr.sum((0, 1)), cmap="gray_r")
        axes[0, k].set_title(f"label {ds.y_train[k]}: events per pixel", fontsize=8)
        axes[1, k].imshow(fr.sum(1).reshape(fr.shape[0], -1).T, aspect="auto", cmap="gray_r")
        axes[1, k].set_xlabel("step (5 ms)", fontsize=8)
        axes[1, k].set_ylabel("pixel", fontsize=8)
    for a in axes.ravel():
        a.tick_params(labelsize=6)
    C.save(fig, out / "frames.png")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    ep = [r["epoch"] for r in hist]
    a1.plot(ep, [r["train_loss"] for r in hist], label="train")
    a1.plot(ep, [r["test_loss"] for r in hist], label="test")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(ep, [r["train_accuracy"] for r in hist], label="train")
    a2.plot(ep, [r["test_accuracy"] for r in hist], label="test")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.suptitle("EventConv on synthetic N-MNIST-format events (tonic reader + ToFrame)")
    C.save(fig, out / "result.png")
    C.write_results(out, {
        "example": "events", "mode": C.mode(args), "n_train": n_train, "n_test": n_test,
        "epochs": epochs, "test_accuracy": final["test_accuracy"],
        "train_accuracy": final["train_accuracy"], "seconds_write_events": round(sec_write, 1),
        "seconds_train": round(sec_train, 1), "sample_shape": list(ds.shape),
        "dropped_events": ds.info["dropped_events"], "history": hist,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
