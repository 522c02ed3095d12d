"""Spiking ConvLSTM next-frame model (Shvets, paper 000) on seqGraph, one command:

    python examples/conv_lstm/run.py          # seqGraph 2160 (augmented), 15 epochs (~4 min CPU)
    python examples/conv_lstm/run.py --full   # the paper's runs: seqGraph 216 and 2160, 100 epochs
    python examples/conv_lstm/run.py --smoke  # seconds: 2 epochs on 15 sequences

The spec's `train` blocks are run by `spikedsl.runtime.train` (torch target): one
`sconv_lstm` cell (28 channels, 3x3), batch norm of its membrane, a 3x3
conv2d and a sigmoid on the last frame, BCE against the 5th frame, Adam
lr 1e-4, batch 15, seed 42. Data: `seqgraph(target = next)`, 4 input frames
and the target frame of 28x28 (spikedsl/seqgraph.py).

Batch norm: the spec's `batchnorm(cell.mem, per_step = true)` keeps running
statistics and an affine weight / bias per time step (BatchNorm-through-time),
so the model is evaluated as trained, in evaluation mode, with no
re-estimation of the statistics.

Losses are reported like the paper's Tables 1-2: train and validation loss
after the first epoch ("start") and after the last ("end"), and after every
epoch (the trajectory), in two units:

* mean BCE per pixel (what `spikedsl.runtime.train` logs);
* the paper's unit (authors' notebook): BCE summed over pixels and over the
  samples of the split, divided by the size of the whole data set
  (train + validation), so the validation figure is about 1/4 of the train one.

Figures: out/predictions_<run>.png (4 input frames, target, prediction for
validation sequences), out/result.png, out/<run>/metrics.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "conv_lstm.spk"
PAPER = {  # Table 2 (SConvLSTM): train start, val start, train end, val end
    "sconvlstm_seqgraph216": (416.1, 108.1, 8.67, 2.17),
    "sconvlstm_seqgraph2160": (89.29, 6.01, 5.88, 1.49),
}


def evaluate(model, x_va, y_va) -> dict:
    """Validation BCE (mean per pixel) in evaluation mode (running statistics of
    each step); mean predictions on chord pixels and on the background."""
    import numpy as np
    import torch

    from spikedsl.runtime.losses import bce

    model.eval()
    ps = []
    with torch.no_grad():
        for i in range(0, len(x_va), 30):
            xb = torch.as_tensor(x_va[i:i + 30]).transpose(0, 1).contiguous()
            ps.append(model(xb)["last(frame)"])
    p = torch.cat(ps)
    y = torch.as_tensor(y_va)
    chord = y > 0.15
    return {"val": float(bce(p, y)),
            "chord": float(p[chord].mean()) if bool(chord.any()) else float("nan"),
            "background": float(p[y == 0].mean()), "pred": np.asarray(p)}


def predictions_figure(model, x_val, y_val, n: int, title: str):
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    model.eval()
    with torch.no_grad():
        xb = torch.as_tensor(x_val[:n]).transpose(0, 1).contiguous()  # [T, B, 1, 28, 28]
        pred = model(xb)["last(frame)"].numpy()
    fig, axes = plt.subplots(n, 6, figsize=(6 * 1.1, n * 1.15))
    names = ["frame 1", "frame 2", "frame 3", "frame 4", "target", "prediction"]
    for i in range(n):
        imgs = [x_val[i, t, 0] for t in range(4)] + [y_val[i, 0], pred[i, 0]]
        for j, im in enumerate(imgs):
            ax = axes[i, j]
            ax.imshow(np.asarray(im), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(names[j], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig, pred


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--data", choices=["216", "2160", "both"], default=None,
                   help="which seqGraph set (default: 2160; --full: both)")
    args = p.parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import numpy as np

    import spikedsl
    from spikedsl.runtime.data import load_dataset
    from spikedsl.runtime.train import train

    prog = spikedsl.load(SPEC)
    which = args.data or ("both" if args.full else ("216" if args.smoke else "2160"))
    names = {"216": ["sconvlstm_seqgraph216"], "2160": ["sconvlstm_seqgraph2160"],
             "both": ["sconvlstm_seqgraph216", "sconvlstm_seqgraph2160"]}[which]
    if args.smoke:
        epochs, limit = 2, 15
    elif args.full:
        epochs, limit = 100, None
    else:
        epochs, limit = 15, None
    epochs = args.epochs or epochs

    results = {"example": "conv_lstm", "mode": C.mode(args), "runs": {}}
    rows, traj_rows = [], []
    for name in names:
        print(f"== {name}: {epochs} epoch(s)")
        clock = C.Clock()
        res = train(prog, name, run_dir=out / name, epochs=epochs, limit=limit, progress=True,
                    log=lambda m: print("  " + m))
        if not res.ok:
            print(f"training stopped: {res.status}: {res.message}")
            return 1
        cfg = res.config
        data = load_dataset(cfg.data, cfg.data_args, cfg.base_dir, cfg.seed)
        x_tr, x_te, y_te = data.x_train, data.x_test, data.y_test
        if limit:
            x_tr, x_te, y_te = x_tr[:limit], x_te[:limit], y_te[:limit]
        last = evaluate(res.model, x_te, y_te)
        n_tr, n_va = len(x_tr), len(x_te)
        pix = int(np.prod(y_te.shape[1:]))
        h = res.history
        # train: mean BCE over the epoch's batches, as logged during training (the
        # paper's train figure); val: the trainer's test loss after the epoch, in
        # evaluation mode (running statistics of each step)
        scale = pix / (n_tr + n_va)
        traj = [(r["epoch"], r["train_loss"], r["test_loss"], r["train_loss"] * scale * n_tr,
                 r["test_loss"] * scale * n_va) for r in h]
        mean = (h[0]["train_loss"], h[0]["test_loss"], h[-1]["train_loss"], h[-1]["test_loss"])
        paper_units = (traj[0][3], traj[0][4], traj[-1][3], traj[-1][4])
        secs, cpu = clock.elapsed(), clock.cpu()
        keys = ("train_start", "val_start", "train_end", "val_end")
        results["runs"][name] = {
            "epochs": len(h), "n_train": n_tr, "n_val": n_va, "seconds": round(secs, 1),
            "cpu_seconds": round(cpu, 1),
            "mean_bce": dict(zip(keys, mean)),
            "paper_units": dict(zip(keys, paper_units)),
            "paper_table2": dict(zip(keys, PAPER[name])),
            "val_end_recomputed": last["val"],
            "val_end_chord_pixels_mean_prediction": last["chord"],
            "val_end_background_mean_prediction": last["background"],
            "trajectory": [{"epoch": e, "train_bce": a, "val_bce": b, "train_paper_unit": c,
                            "val_paper_unit": d} for e, a, b, c, d in traj],
        }
        label = f"SConvLSTM seqGraph {n_tr + n_va}"
        rows.append([label + f" ({len(h)} ep.)", "mean BCE/pixel"] + [f"{v:.4f}" for v in mean])
        rows.append(["", "paper unit"] + [f"{v:.2f}" for v in paper_units])
        rows.append([f"paper Table 2 ({'216' if name.endswith('216') else '2160'}, 100 ep.)",
                     "paper unit"] + [f"{v}" for v in PAPER[name]])
        traj_rows += [[label if i == 0 else "", e, f"{a:.4f}", f"{b:.4f}", f"{c:.2f}", f"{d:.2f}"]
                      for i, (e, a, b, c, d) in enumerate(traj)]
        print(f"  {n_tr} train / {n_va} val sequences, {secs:.0f} s ({cpu:.0f} s CPU)")
        print(f"  val BCE/pixel after {len(h)} epochs: {last['val']:.4f} (evaluation mode, "
              f"per-step running statistics)")
        print(f"  mean prediction on chord pixels {last['chord']:.3f}, on the background "
              f"{last['background']:.3f}")
        fig, _pred = predictions_figure(res.model, x_te, y_te, 5,
                                       f"{label}: validation sequences after {len(h)} epochs "
                                       f"(val BCE {mean[3]:.4f}/pixel)")
        C.save(fig, out / f"predictions_{name}.png", dpi=100)
        fig, _ = predictions_figure(res.model, x_te, y_te, 3, f"{label}, {len(h)} epochs")
        C.save(fig, out / "result.png", dpi=60)

    print()
    print(C.table(traj_rows, ["model", "epoch", "train BCE/px", "val BCE/px", "train (paper)",
                              "val (paper)"]))
    print()
    tab = C.table(rows, ["model", "unit", "train start", "val start", "train end", "val end"])
    print(tab)
    results["table"] = tab
    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
