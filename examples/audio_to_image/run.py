"""Audio to image synthesis with spiking autoencoders (Roy, Panda & Roy, paper 001, sect. 4.2):

    python examples/audio_to_image/run.py           # espeak-ng digits, AE on digits upsampled
                                                    # to 28x28, T_h sweep on Dataset A and
                                                    # Dataset B at T_h = 10 (a few minutes)
    python examples/audio_to_image/run.py --smoke   # seconds: tiny data, 1 epoch each
    python examples/audio_to_image/run.py --full    # the paper's sizes: AE on MNIST, 2048
                                                    # hidden neurons, T = 60, 20 epochs
    ... --source fsdd --path DIR                    # Free Spoken Digit Dataset recordings
    ... --source ti46 --path DIR                    # TI-46 digits (the paper's corpus)

The pipeline of the paper's Fig. 8:

1. the image autoencoder AE-SNN 784-196-784 is trained (the spec's train
   block ``ae784_digits``: masked membrane loss, T = 15);
2. each training audio sample is paired with an image (Dataset A: one image
   per digit class; Dataset B: a random training image of its class per
   sample); each distinct image, Poisson-encoded for 15 steps, goes through
   the AE's encoder and its hidden spike map (196 x 15) is stored; only its
   first T_h steps are kept;
3. the audiocoder AC-SNN (spectrogram -> 256 -> 196) learns to emit that map,
   repeated over its T = 30 steps, with the masked membrane loss (eqs. 5-8,
   the stored map in the place of the input spikes);
4. the audiocoder is stacked on the AE's decoder weights W(2) (network
   ``AudioToImage``) and the output spike map, summed over time and
   normalised, is compared with the images (normalised): Dataset A against
   the class's image; Dataset B, train: the paired image, test: the lowest
   MSE over the training images of the same label.

Figures: out/mse_vs_th.png (test MSE against T_h, as Fig. 10A; A and B as
Fig. 9A), out/generated.png (5 test samples per digit for A and B, as
Fig. 9B), out/result.png (both, small), out/ae784_*/metrics.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "audio_to_image.spk"
PAPER = {"A": {"mse": 0.254, "th": 15, "ann": 0.408, "ann_adam": 0.144},
         "B": {"mse": 0.543, "th": 10, "ann": 0.611, "ann_adam": 0.556}}


def poisson(x, steps: int, gen):
    import torch

    return (torch.rand((steps,) + tuple(x.shape), generator=gen) < x.clamp(0, 1)).float()


def hidden_maps(ae, images, steps: int, seed: int, batch: int = 250):
    """The AE's hidden spike maps [steps, N, 196] of Poisson-encoded images."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    ae.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.as_tensor(images[i:i + batch], dtype=torch.float32)
            out.append(ae(poisson(x, steps, gen))["h"])
    return torch.cat(out, 1)


def image_maps(ae, images, pairs, steps: int, seed: int):
    """The stored hidden state of a multimodal data set: one map per distinct
    image (the paper generates the hidden-state representations "of the images"),
    returned per pair [steps, len(pairs), 196]."""
    import numpy as np
    import torch

    uniq, inv = np.unique(pairs, return_inverse=True)
    maps = hidden_maps(ae, images[uniq], steps, seed)
    return maps[:, torch.as_tensor(inv)]


def repeat_th(maps, th: int, steps: int):
    """Keep the first ``th`` steps of ``maps`` [T_ae, N, n] and repeat them over ``steps``."""
    import torch

    idx = torch.arange(steps) % th
    return maps[:th][idx]


def class_images(x, y):
    """Dataset A's image per class: the training image nearest (normalised MSE)
    to its class mean (the paper picks one image per class by hand)."""
    import numpy as np
    import torch

    from spikedsl.runtime.losses import normalized_mse

    idx = []
    for c in range(10):
        members = np.flatnonzero(y == c)
        xc = torch.as_tensor(x[members])
        d = normalized_mse(xc, xc.mean(0, keepdim=True).expand_as(xc))
        idx.append(int(members[int(d.argmin())]))
    return np.array(idx)


def train_audiocoder(prog, name, x, target, *, epochs, batch, lr, seed, log):
    """Adam on the masked membrane loss between the audiocoder's hidden layer and
    the stored maps ``target`` [T, N, 196] (fresh Poisson input spikes per batch)."""
    import torch

    from spikedsl.runtime.losses import masked_membrane

    torch.manual_seed(seed)
    model = prog.network(name).to_torch()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    steps = model.steps
    n = len(xt)
    hist = []
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot, nb = 0.0, 0
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            out = model(poisson(xt[idx], steps, gen))
            loss = masked_membrane(out["h.v_pre"], out["h"], target[:, idx], theta=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            nb += 1
        hist.append(tot / max(nb, 1))
        if log and (ep == epochs - 1 or ep % 5 == 0):
            log(f"epoch {ep + 1}/{epochs}: loss {hist[-1]:.1f}")
    return model, hist


def synthesize(prog, name, ac, ae, x, seed: int, batch: int = 200):
    """Output spike maps [N, 784] (summed over time) of the stacked model
    audiocoder + decoder on spectrograms ``x``."""
    import torch

    net = prog.network(name).to_torch()
    sd = net.state_dict()
    sd["c.weight"] = ac.state_dict()["c.weight"]
    sd["h.weight"] = ac.state_dict()["h.weight"]
    sd["y.weight"] = ae.state_dict()["y.weight"]
    net.load_state_dict(sd)
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.as_tensor(x[i:i + batch], dtype=torch.float32)
            out.append(net(poisson(xb, net.steps, gen))["y"].sum(0))
    return torch.cat(out)


def decode(prog, name, ae, maps, batch: int = 250):
    """Output spike maps [N, 784] of the AE's decoder fed with hidden maps [T, N, 196]."""
    import torch

    net = prog.network(name).to_torch()
    net.load_state_dict({"y.weight": ae.state_dict()["y.weight"]})
    net.eval()
    with torch.no_grad():
        return torch.cat([net(maps[:, i:i + batch])["y"].sum(0)
                          for i in range(0, maps.shape[1], batch)])


def nmse_to(out, refs):
    """Normalised MSE of each output map [N, 784] against its reference [N, 784]."""
    from spikedsl.runtime.losses import normalized_mse

    return normalized_mse(out, refs)


def nmse_min(out, labels, cand, cand_labels):
    """For each output map the lowest normalised MSE over the candidate images of
    the same label (Dataset B's test metric); also returns the class match of the
    overall nearest candidate."""
    import torch

    from spikedsl.runtime.losses import standardize

    a, b = standardize(out), standardize(cand)
    d = torch.cdist(a, b) ** 2 / a.shape[1]  # [N, K]
    same = torch.as_tensor(labels)[:, None] == torch.as_tensor(cand_labels)[None, :]
    best = torch.where(same, d, torch.full_like(d, float("inf"))).min(1).values
    nearest = torch.as_tensor(cand_labels)[d.argmin(1)]
    return best, (nearest == torch.as_tensor(labels)).float()


def evaluate(kind, out_tr, out_te, y_tr, y_te, pairs_tr, images, img_labels, a_idx):
    """Paper's metrics (sect. 4.2.2) and the share of outputs nearest to an image of
    their own class."""
    import torch

    imgs = torch.as_tensor(images, dtype=torch.float32)
    if kind == "A":
        cls = imgs[a_idx]  # [10, 784]
        tr = nmse_to(out_tr, cls[torch.as_tensor(y_tr)])
        te = nmse_to(out_te, cls[torch.as_tensor(y_te)])
        _, match = nmse_min(out_te, y_te, cls, list(range(10)))
    else:
        tr = nmse_to(out_tr, imgs[torch.as_tensor(pairs_tr)])
        te, match = nmse_min(out_te, y_te, imgs[torch.as_tensor(pairs_tr)], y_tr)
    return {"train_mse": float(tr.mean()), "test_mse": float(te.mean()),
            "test_class_match": float(match.mean())}


def audio_args(args):
    a = {"source": args.source, "frames": 40}
    if args.path:
        a["path"] = str(Path(args.path).resolve())
    if args.source == "espeak":
        a["per_digit"] = args.per_digit or (4 if args.smoke else 400 if args.full else 100)
    return a


def figure_sweep(results, th_list, path):
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    a = [runs[f"A_Th{t}"] for t in th_list if f"A_Th{t}" in runs]
    ts = [r["th"] for r in a]
    ax.plot(ts, [r["test_mse"] for r in a], "o-", label="Dataset A, test")
    ax.plot(ts, [r["train_mse"] for r in a], "o--", label="Dataset A, train", alpha=0.7)
    ax.plot(ts, [r["target_floor_mse"] for r in a], ":", color="gray",
            label="A: decoder fed the target maps")
    b = [r for k, r in runs.items() if k.startswith("B_")]
    if b:
        ax.plot([r["th"] for r in b], [r["test_mse"] for r in b], "s", color="C3",
                label="Dataset B, test")
    ax.plot([PAPER["A"]["th"]], [PAPER["A"]["mse"]], "x", color="C0", label="paper A (TI-46/MNIST)")
    ax.plot([PAPER["B"]["th"]], [PAPER["B"]["mse"]], "x", color="C3", label="paper B")
    ax.set_xlabel("T_h (stored hidden-state steps)")
    ax.set_ylabel("MSE (normalised maps)")
    ax.set_title("audio-to-image synthesis: MSE vs T_h", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return C.save(fig, path, dpi=110)


def figure_images(panels, ref_images, spec_example, path, dpi=100, per_class=5):
    """Rows: digits; per panel (dataset) ``per_class`` generated maps; first column
    the reference (Dataset A's image), last a test spectrogram of that digit."""
    import matplotlib.pyplot as plt
    import numpy as np

    cols = 1 + per_class * len(panels) + 1
    fig, axes = plt.subplots(10, cols, figsize=(cols * 0.62, 10 * 0.62))
    for d in range(10):
        row = axes[d]
        row[0].imshow(ref_images[d].reshape(28, 28), cmap="gray")
        for p, (label, maps, ys) in enumerate(panels):
            sel = np.flatnonzero(ys == d)[:per_class]
            for j in range(per_class):
                ax = row[1 + p * per_class + j]
                if j < len(sel):
                    ax.imshow(maps[sel[j]].reshape(28, 28), cmap="gray")
                else:
                    ax.axis("off")
                if d == 0 and j == 0:
                    ax.set_title(label, fontsize=7, loc="left")
        row[-1].imshow(spec_example[d], cmap="magma", aspect="auto", origin="lower")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(str(d), rotation=0, fontsize=8, ha="right", va="center")
    axes[0, 0].set_title("image A", fontsize=7)
    axes[0, -1].set_title("audio", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return C.save(fig, path, dpi=dpi)


def figure_result(left: Path, right: Path, path: Path):
    """result.png: the MSE-vs-T_h plot beside the small image grid."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    a, b = mpimg.imread(left), mpimg.imread(right)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), width_ratios=[a.shape[1] / a.shape[0],
                                                                  b.shape[1] / b.shape[0]])
    for ax, im in zip(axes, (a, b), strict=True):
        ax.imshow(im)
        ax.axis("off")
    fig.subplots_adjust(wspace=0.02, left=0, right=1, top=1, bottom=0)
    return C.save(fig, path, dpi=80)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--source", choices=("espeak", "fsdd", "ti46"), default="espeak",
                   help="spoken digits: espeak-ng synthesis (default), FSDD or TI-46 files")
    p.add_argument("--path", default=None, help="folder of the FSDD / TI-46 recordings")
    p.add_argument("--per-digit", type=int, default=None,
                   help="espeak utterances per digit (default 100; --smoke 4, --full 400)")
    p.add_argument("--th", default=None,
                   help="T_h values for Dataset A, comma-separated (default 1,2,5,10,15)")
    p.add_argument("--th-b", default=None, help="T_h values for Dataset B (default 10)")
    p.add_argument("--ac-epochs", type=int, default=None,
                   help="audiocoder epochs (default 15; --smoke 1; --full 20)")
    p.add_argument("--lr", type=float, default=2e-3, help="audiocoder Adam learning rate")
    p.add_argument("--batch", type=int, default=10, help="audiocoder batch size")
    args = p.parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import numpy as np
    import torch

    import spikedsl
    from spikedsl.runtime.data import DataError, load_dataset
    from spikedsl.runtime.train import train

    prog = spikedsl.load(SPEC)
    full = args.full
    if full:
        C.need_mnist("the 784-196-784 image autoencoder")
    ae_run = "ae784_mnist" if full else "ae784_digits"
    ac_net, a2i_net, dec_net = (("AudiocoderFull", "AudioToImageFull", "DecoderFull") if full
                                else ("Audiocoder", "AudioToImage", "Decoder"))
    th_a = [int(t) for t in (args.th or ("2,10" if args.smoke else "1,2,5,10,15")).split(",")]
    th_b = [int(t) for t in (args.th_b or "10").split(",")]
    ac_epochs = args.ac_epochs or (1 if args.smoke else 20 if full else 15)
    lr, batch = args.lr, args.batch
    ae_steps = prog.network("AE784").ir.steps
    if max(th_a + th_b) > ae_steps or min(th_a + th_b) < 1:
        sys.exit(f"T_h must lie in 1..{ae_steps} (the AE's duration)")

    # ---------------------------------------------------------------- audio
    clock = C.Clock()
    try:
        audio = load_dataset("spoken_digits", audio_args(args), str(HERE), args.seed)
    except DataError as e:
        sys.exit(f"error: {e}")
    xa_tr, ya_tr, xa_te, ya_te = audio.x_train, audio.y_train, audio.x_test, audio.y_test
    t_audio = clock.elapsed()
    print(f"== audio: {audio.info['source']}: {len(xa_tr)} train / {len(xa_te)} test "
          f"spectrograms of {audio.info['channels']} x {audio.info['frames']} "
          f"({t_audio:.1f} s{', from the cache' if audio.info.get('from_cache') else ''})")

    # ---------------------------------------------------------------- AE-SNN
    ae_epochs = args.epochs or (1 if args.smoke else None)
    print(f"== image autoencoder: {ae_run}")
    clock = C.Clock()
    res = train(prog, ae_run, run_dir=out / ae_run, epochs=ae_epochs,
                limit=200 if args.smoke else None, progress=False,
                log=lambda m: print("  " + m))
    if not res.ok:
        print(f"training stopped: {res.status}: {res.message}")
        return 1
    t_ae = clock.elapsed()
    ae = res.model
    cfg = res.config
    imgs = load_dataset(cfg.data, cfg.data_args, cfg.base_dir, cfg.seed)
    x_img, y_img = imgs.x_train, imgs.y_train
    ae_te = ae_mse(ae, imgs.x_test, ae_steps)
    print(f"  AE test MSE {float(ae_te.mean()):.3f} ({t_ae:.0f} s)")

    # ---------------------------------------------------------------- pairs
    rng = np.random.default_rng(args.seed)
    a_idx = class_images(x_img, y_img)
    pairs = {"A": a_idx[ya_tr],
             "B": np.array([rng.choice(np.flatnonzero(y_img == d)) for d in ya_tr])}
    maps = {k: image_maps(ae, x_img, v, ae_steps, seed=args.seed + 11) for k, v in pairs.items()}
    for k, m in maps.items():
        print(f"  Dataset {k}: {len(pairs[k])} pairs, {len(np.unique(pairs[k]))} distinct images;"
              f" hidden maps {list(m.shape)} (rate {float(m.mean()):.3f} spikes/step)")

    # ---------------------------------------------------------------- audiocoders
    results = {"example": "audio_to_image", "mode": C.mode(args),
               "audio": {"source": audio.info["source"], "n_train": len(xa_tr),
                         "n_test": len(xa_te), "channels": audio.info["channels"],
                         "frames": audio.info["frames"], "seconds": round(t_audio, 1)},
               "autoencoder": {"run": ae_run, "epochs": cfg.epochs if ae_epochs is None
                               else ae_epochs, "test_mse": float(ae_te.mean()),
                               "train_seconds": round(t_ae, 1)},
               "audiocoder": {"network": ac_net, "epochs": ac_epochs, "lr": lr, "batch": batch,
                              "steps": prog.network(ac_net).ir.steps},
               "paper": PAPER, "runs": {}}
    steps = prog.network(ac_net).ir.steps
    keep = {}
    for kind, ths in (("A", th_a), ("B", th_b)):
        for th in ths:
            name = f"{kind}_Th{th}"
            print(f"== audiocoder, Dataset {kind}, T_h = {th}: {ac_epochs} epoch(s)")
            target = repeat_th(maps[kind], th, steps)
            clock = C.Clock()
            ac, hist = train_audiocoder(prog, ac_net, xa_tr, target, epochs=ac_epochs, batch=batch,
                                        lr=lr, seed=args.seed, log=lambda m: print("  " + m))
            t_ac = clock.elapsed()
            o_tr = synthesize(prog, a2i_net, ac, ae, xa_tr, seed=args.seed + 3)
            o_te = synthesize(prog, a2i_net, ac, ae, xa_te, seed=args.seed + 4)
            m = evaluate(kind, o_tr, o_te, ya_tr, ya_te, pairs["B"], x_img, y_img, a_idx)
            floor = nmse_to(decode(prog, dec_net, ae, target),
                            torch.as_tensor(x_img[pairs[kind]])).mean()
            m.update({"th": th, "target_floor_mse": float(floor), "train_seconds": round(t_ac, 1),
                      "loss_first": hist[0], "loss_last": hist[-1]})
            results["runs"][name] = m
            keep[name] = o_te.numpy()
            print(f"  test MSE {m['test_mse']:.3f}  train MSE {m['train_mse']:.3f}  "
                  f"(decoder on the target maps: {m['target_floor_mse']:.3f}); nearest image of "
                  f"the right digit: {100 * m['test_class_match']:.1f} %  ({t_ac:.0f} s)")

    # ---------------------------------------------------------------- report
    print()
    rows = [[k, r["th"], f"{r['test_mse']:.3f}", f"{r['train_mse']:.3f}",
             f"{r['target_floor_mse']:.3f}", f"{100 * r['test_class_match']:.1f} %",
             f"{r['train_seconds']:.0f} s"] for k, r in results["runs"].items()]
    print(C.table(rows, ["run", "T_h", "test MSE", "train MSE", "target-map floor",
                         "right digit", "train time"]))
    print(f"paper (TI-46 -> MNIST, Table 1): A {PAPER['A']['mse']} (T_h 15), "
          f"B {PAPER['B']['mse']} (T_h 10)")
    figure_sweep(results, th_a, out / "mse_vs_th.png")
    th_show = 10 if "A_Th10" in keep and "B_Th10" in keep else None
    ka = f"A_Th{th_show}" if th_show else next(k for k in keep if k.startswith("A_"))
    kb = f"B_Th{th_show}" if th_show else next(k for k in keep if k.startswith("B_"))
    spec = np.stack([xa_te[np.flatnonzero(ya_te == d)[0]].reshape(audio.info["channels"], -1)
                     if (ya_te == d).any() else np.zeros((audio.info["channels"], 2))
                     for d in range(10)])
    panels = [(f"A, T_h={results['runs'][ka]['th']}", keep[ka], ya_te),
              (f"B, T_h={results['runs'][kb]['th']}", keep[kb], ya_te)]
    figure_images(panels, x_img[a_idx], spec, out / "generated.png")
    figure_images(panels, x_img[a_idx], spec, out / "generated_small.png", dpi=60, per_class=3)
    figure_result(out / "mse_vs_th.png", out / "generated_small.png", out / "result.png")
    C.write_results(out, results)
    return 0


def ae_mse(ae, images, steps, seed: int = 7, batch: int = 250):
    """The AE-SNN's own test MSE (output map summed over its T steps vs the image)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ae.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.as_tensor(images[i:i + batch], dtype=torch.float32)
            out.append(nmse_to(ae(poisson(x, steps, gen))["y"].sum(0), x))
    return torch.cat(out)


if __name__ == "__main__":
    sys.exit(main())
