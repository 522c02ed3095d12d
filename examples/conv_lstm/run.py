"""Spiking ConvLSTM next-frame model (Shvets, paper 000) on seqGraph, one command:

    python examples/conv_lstm/run.py          # seqGraph 2160 (augmented), few epochs (~4 min)
    python examples/conv_lstm/run.py --full   # the paper's runs: seqGraph 216 and 2160, 100 epochs
    python examples/conv_lstm/run.py --smoke  # seconds: 1 epoch on 15 sequences

The spec's `train` blocks are run by `spikedsl.runtime.train` (torch target): one
`sconv_lstm` cell (28 channels, 3x3), batch norm of its membrane, a 3x3
conv2d and a sigmoid on the last frame, BCE against the 5th frame, Adam
lr 1e-4, batch 15, seed 42. Data: `seqgraph(target = next)`, 4 input frames
and the target frame of 28x28 (spikedsl/seqgraph.py).

Batch norm: the spec's `batchnorm` runs per step, and its running statistics
mix the four steps while only the last reaches the output (see the spec);
before every evaluation the running statistics are re-estimated from the
last step's membrane on 600 training sequences ("precise BN", on a copy).

Losses are reported like the paper's Tables 1-2: train and validation loss
after the first epoch ("start") and after the last ("end"), in two units:

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


def recalibrate(model, x, batch: int = 30) -> None:
    """Set the batch norm's running mean / variance to the statistics of the last
    step's membrane (the only step that reaches the output) over ``x`` [N, T, ...]."""
    import torch

    model.eval()
    n, s1, s2 = 0, 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.as_tensor(x[i:i + batch]).transpose(0, 1).contiguous()
            mem = model(xb)["cell.mem"][-1].double()  # [B, C, H, W]
            s1 = s1 + mem.sum((0, 2, 3))
            s2 = s2 + (mem * mem).sum((0, 2, 3))
            n += mem.shape[0] * mem.shape[2] * mem.shape[3]
    mean = s1 / n
    var = (s2 / n - mean * mean) * n / max(n - 1, 1)
    sd = model.state_dict()
    sd["bn.running_mean"].copy_(mean.to(sd["bn.running_mean"].dtype))
    sd["bn.running_var"].copy_(var.clamp_min(0).to(sd["bn.running_var"].dtype))


def evaluate(model, x_tr, y_tr, x_va, y_va, calib) -> dict:
    """Validation BCE (mean per pixel) with the recalibrated batch norm, and with
    batch statistics; mean predictions on chord pixels and on the background.
    Works on a copy: the trained model (and its checkpoint) stay as they are."""
    import copy

    import numpy as np
    import torch

    from spikedsl.runtime.losses import bce

    m = copy.deepcopy(model)
    recalibrate(m, calib)

    def run(mod, train_mode: bool):
        mod.train(train_mode)
        ps = []
        with torch.no_grad():
            for i in range(0, len(x_va), 30):
                xb = torch.as_tensor(x_va[i:i + 30]).transpose(0, 1).contiguous()
                ps.append(mod(xb)["last(frame)"])
        return torch.cat(ps)

    p = run(m, False)
    y = torch.as_tensor(y_va)
    pb = run(copy.deepcopy(model), True)
    chord = y > 0.15
    return {"val": float(bce(p, y)), "val_batchstats": float(bce(pb, y)),
            "chord": float(p[chord].mean()) if bool(chord.any()) else float("nan"),
            "background": float(p[y == 0].mean()), "pred": np.asarray(p)}


def predictions_figure(model, x_val, y_val, n: int, title: str, calib):
    import copy

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    with torch.no_grad():
        xb = torch.as_tensor(x_val[:n]).transpose(0, 1).contiguous()  # [T, B, 1, 28, 28]
        m = copy.deepcopy(model)
        recalibrate(m, calib)
        pred = m(xb)["last(frame)"].numpy()
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
        epochs, limit = 1, 15
    elif args.full:
        epochs, limit = 100, None
    else:
        epochs, limit = 3, None
    epochs = args.epochs or epochs

    results = {"example": "conv_lstm", "mode": C.mode(args), "runs": {}}
    rows = []
    for name in names:
        print(f"== {name}: {epochs} epoch(s)")
        clock = C.Clock()
        log = lambda m: print("  " + m)
        # epoch 1, evaluate ("start"), then continue from the checkpoint to the end
        res = train(prog, name, run_dir=out / name, epochs=1, limit=limit, progress=True,
                    log=log)
        if not res.ok:
            print(f"training stopped: {res.status}: {res.message}")
            return 1
        cfg = res.config
        data = load_dataset(cfg.data, cfg.data_args, cfg.base_dir, cfg.seed)
        x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
        if limit:
            x_tr, y_tr, x_te, y_te = x_tr[:limit], y_tr[:limit], x_te[:limit], y_te[:limit]
        calib = x_tr[np.random.default_rng(0).permutation(len(x_tr))[:600]]
        first = evaluate(res.model, x_tr, y_tr, x_te, y_te, calib)
        if epochs > 1:
            res = train(prog, name, run_dir=out / name, epochs=epochs, limit=limit,
                        progress=True, log=log, resume=True)
            if not res.ok:
                print(f"training stopped: {res.status}: {res.message}")
                return 1
        last = evaluate(res.model, x_tr, y_tr, x_te, y_te, calib)
        n_tr, n_va = len(x_tr), len(x_te)
        pix = int(np.prod(y_te.shape[1:]))
        h = res.history
        # train: mean BCE over the epoch's batches, as logged during training (the
        # paper's train figure); val: recalibrated batch norm, after the epoch
        mean = (h[0]["train_loss"], first["val"], h[-1]["train_loss"], last["val"])
        scale = pix / (n_tr + n_va)
        paper_units = (mean[0] * scale * n_tr, mean[1] * scale * n_va,
                       mean[2] * scale * n_tr, mean[3] * scale * n_va)
        secs, cpu = clock.elapsed(), clock.cpu()
        keys = ("train_start", "val_start", "train_end", "val_end")
        results["runs"][name] = {
            "epochs": len(h), "n_train": n_tr, "n_val": n_va, "seconds": round(secs, 1),
            "cpu_seconds": round(cpu, 1),
            "mean_bce": dict(zip(keys, mean)),
            "paper_units": dict(zip(keys, paper_units)),
            "paper_table2": dict(zip(keys, PAPER[name])),
            "val_end_without_bn_recalibration": h[-1]["test_loss"],
            "val_end_batch_statistics": last["val_batchstats"],
            "val_end_chord_pixels_mean_prediction": last["chord"],
            "val_end_background_mean_prediction": last["background"],
            "history": [{k: r[k] for k in ("epoch", "train_loss", "test_loss")} for r in h],
        }
        label = f"SConvLSTM seqGraph {n_tr + n_va}"
        rows.append([label + f" ({len(h)} ep.)", "mean BCE/pixel"] + [f"{v:.4f}" for v in mean])
        rows.append(["", "paper unit"] + [f"{v:.2f}" for v in paper_units])
        rows.append([f"paper Table 2 ({'216' if name.endswith('216') else '2160'}, 100 ep.)",
                     "paper unit"] + [f"{v}" for v in PAPER[name]])
        print(f"  {n_tr} train / {n_va} val sequences, {secs:.0f} s ({cpu:.0f} s CPU)")
        print(f"  val BCE/pixel after {len(h)} epochs: {last['val']:.4f} (batch norm "
              f"recalibrated on the last step), {h[-1]['test_loss']:.4f} (running statistics "
              f"of all steps, as trained), {last['val_batchstats']:.4f} (batch statistics)")
        print(f"  mean prediction on chord pixels {last['chord']:.3f}, on the background "
              f"{last['background']:.3f}")
        fig, _pred = predictions_figure(res.model, x_te, y_te, 5,
                                       f"{label}: validation sequences after {len(h)} epochs "
                                       f"(val BCE {mean[3]:.4f}/pixel)", calib)
        C.save(fig, out / f"predictions_{name}.png", dpi=100)
        fig, _ = predictions_figure(res.model, x_te, y_te, 3, f"{label}, {len(h)} epochs", calib)
        C.save(fig, out / "result.png", dpi=60)

    print()
    tab = C.table(rows, ["model", "unit", "train start", "val start", "train end", "val end"])
    print(tab)
    results["table"] = tab
    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
