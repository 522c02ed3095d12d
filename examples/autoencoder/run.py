"""Spiking autoencoder (Roy, Panda & Roy, paper 001) on digits, one command:

    python examples/autoencoder/run.py            # 784-196-784 on digits upsampled to 28x28,
                                                  # 40 epochs = 600 updates (as many as the
                                                  # paper's 1 MNIST epoch), and 64-16-64 on
                                                  # 8x8 digits, 40 epochs (~1-2 min)
    python examples/autoencoder/run.py --full     # the paper's run: MNIST, 1 epoch
    python examples/autoencoder/run.py --smoke    # seconds: 1 epoch on 200 samples

Training is the spec's own `train` block run by `spikedsl.runtime.train` (torch
target, masked membrane loss, Adam lr 5e-4, wd 1e-4, batch 100). The
evaluation follows the paper's definitions (sect. 4.1):

* Spike-MSE: MSE between the input spike map and the output spike map, both
  summed over the whole duration;
* MSE: MSE between the input image and the output spike map summed over the
  duration;

both maps normalised per image to zero mean and unit variance first.
Figures: out/reconstructions.png (input image / input spike map / output
spike map), out/result.png (the same, small), out/<run>/metrics.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "autoencoder.spk"


def poisson(x, steps: int, gen):
    import torch

    return (torch.rand((steps,) + tuple(x.shape), generator=gen) < x.clamp(0, 1)).float()


def evaluate(model, x_np, steps: int, seed: int, batch: int = 200):
    """Spike-MSE and MSE (paper's definitions) averaged over the samples, the
    Poisson floor (input spike map vs image), and the maps of the first batch."""
    import torch

    from spikedsl.runtime.losses import normalized_mse

    gen = torch.Generator().manual_seed(seed)
    model.eval()
    s_mse, mse, floor, first = [], [], [], None
    with torch.no_grad():
        for i in range(0, len(x_np), batch):
            x = torch.as_tensor(x_np[i:i + batch], dtype=torch.float32)
            enc = poisson(x, steps, gen)
            out = model(enc)
            y = out["y"]
            in_map, out_map = enc.sum(0), y.sum(0)
            s_mse.append(normalized_mse(out_map, in_map))
            mse.append(normalized_mse(out_map, x))
            floor.append(normalized_mse(in_map, x))
            if first is None:
                first = (x.numpy(), in_map.numpy(), out_map.numpy())
    cat = lambda v: float(torch.cat(v).mean())
    return {"spike_mse": cat(s_mse), "mse": cat(mse), "poisson_floor_mse": cat(floor)}, first


def grid_figure(maps, side: int, n: int, title: str):
    import matplotlib.pyplot as plt
    import numpy as np

    x, in_map, out_map = maps
    rows = [("image", x), ("input spikes (sum)", in_map), ("output spikes (sum)", out_map)]
    fig, axes = plt.subplots(3, n, figsize=(n * 0.9, 3 * 0.95))
    for r, (label, m) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.asarray(m[c]).reshape(side, side), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=8)
    return fig


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import spikedsl
    from spikedsl.runtime.train import train

    prog = spikedsl.load(SPEC)
    if args.full:
        C.need_mnist("the 784-196-784 autoencoder")
        runs = [("ae784_mnist", 28, 1)]
        limit = None
    elif args.smoke:
        runs = [("ae64_digits", 8, 1)]
        limit = 200
    else:
        runs = [("ae784_digits", 28, 40), ("ae64_digits", 8, 40)]
        limit = None

    results = {"example": "autoencoder", "mode": C.mode(args), "runs": {}}
    for name, side, epochs in runs:
        epochs = args.epochs or epochs
        print(f"== {name}: {epochs} epoch(s)")
        clock = C.Clock()
        res = train(prog, name, run_dir=out / name, epochs=epochs, limit=limit,
                    progress=True, log=lambda m: print("  " + m))
        t_train, c_train = clock.elapsed(), clock.cpu()
        if not res.ok:
            print(f"training stopped: {res.status}: {res.message}")
            return 1
        net = prog.network(res.network).ir
        from spikedsl.runtime.data import load_dataset

        cfg = res.config
        data = load_dataset(cfg.data, cfg.data_args, cfg.base_dir, cfg.seed)
        x_tr, x_te = data.x_train, data.x_test
        if limit:
            x_tr, x_te = x_tr[:limit], x_te[:limit]
        m_te, maps = evaluate(res.model, x_te, net.steps, seed=1)
        m_tr, _ = evaluate(res.model, x_tr, net.steps, seed=2)
        n_h = next(la for la in net.layers if la.name == "h").shape[0]
        arch = f"{net.layers[0].shape[0]}-{n_h}-{net.layers[-1].shape[0]}"
        updates = epochs * -(-len(x_tr) // cfg.batch)
        results["runs"][name] = {
            "network": arch, "data": cfg.data if not cfg.data_args else
            f"{cfg.data}({', '.join(f'{k} = {v}' for k, v in cfg.data_args.items())})",
            "epochs": epochs, "updates": updates, "train_seconds": round(t_train, 1),
            "train_cpu_seconds": round(c_train, 1),
            "test": m_te, "train": m_tr,
            "final_loss": res.final.get("loss"),
        }
        print(f"  {arch}: {updates} updates in {t_train:.1f} s ({c_train:.1f} s CPU)")
        print(f"  test : Spike-MSE {m_te['spike_mse']:.3f}  MSE {m_te['mse']:.3f}   "
              f"(Poisson input map vs image: {m_te['poisson_floor_mse']:.3f})")
        print(f"  train: Spike-MSE {m_tr['spike_mse']:.3f}  MSE {m_tr['mse']:.3f}")
        fig = grid_figure(maps, side, 10, f"{arch} spiking autoencoder, test set: Spike-MSE "
                                          f"{m_te['spike_mse']:.3f}, MSE {m_te['mse']:.3f}")
        C.save(fig, out / f"reconstructions_{name}.png", dpi=110)
        if name == runs[0][0]:
            fig = grid_figure(maps, side, 10, f"{arch} AE-SNN (digits): Spike-MSE "
                                              f"{m_te['spike_mse']:.3f}, MSE {m_te['mse']:.3f}")
            C.save(fig, out / "result.png", dpi=70)
    print()
    rows = [[n, r["network"], r["epochs"], r["updates"], f"{r['test']['spike_mse']:.3f}",
             f"{r['test']['mse']:.3f}", f"{r['train_seconds']:.0f} s / {r['train_cpu_seconds']:.0f} s"]
            for n, r in results["runs"].items()]
    print(C.table(rows, ["run", "network", "epochs", "updates", "test Spike-MSE", "test MSE",
                         "train wall / CPU"]))
    print("paper (MNIST 784-196-784, 1 epoch, T = 15): test MSE 0.357 (Table 1)")
    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
