"""Spiking GAN with time-to-first-spike coding (paper 002, sect. 1), one command:

    python examples/spiking_gan/run.py          # one GAN per digit class 0-9 on 8x8 digits (~3 min)
    python examples/spiking_gan/run.py --full   # MNIST 28x28 (100-400-784 / 784-400-2), 50 epochs
    python examples/spiking_gan/run.py --smoke  # seconds: 1 epoch, one class

The generator and the discriminator are two networks of spiking_gan.spk,
compiled by spikedsl to torch modules (`prog.network(...).to_torch()`). The
language has no adversarial `train` block (one network, one data set, one
loss), so the alternating GAN training is written here, around the two
modules:

* integrate-and-fire neurons with t_ref = 1000 steps: at most one spike each;
* codes: a real image is latency-coded (spikedsl's linear `latency` encoder:
  value 1 -> step 0, value 0 -> step T-1); the last step carries "no spike",
  i.e. value 0, for real and generated images alike (the encoder puts
  pixels < 0.01 there); a noise vector is drawn from Uni{0, t_max} and is
  one spike per noise neuron at that step;
* decoding: a neuron's value is its earliness e = (T - 1 - t_spike) / (T - 1)
  (0 if it never fires), computed as sum_t cumsum(z)[t] / (T - 1), which is
  differentiable through the surrogate of the spike;
* the discriminator's class is the earlier of its two output neurons
  (d[0] fake, d[1] real); least-squares losses on the earliness:
  D: (e_real - 1)^2 + e_fake^2 on real images and the reverse on generated
  ones; G: the reverse for its samples, backpropagated through the frozen D;
* alternating updates (D then G) on every batch, Adam.

Against mode collapse (the plain GAN's samples of a digit are nearly one
image), two devices of the GAN literature, both on by default:
* minibatch standard deviation (Karras et al. 2018): `DiscriminatorMB` has a
  second input `s`, a constant current carrying the mean over pixels of the
  standard deviation of its input images across the batch, so that it can
  tell a collapsed batch from a real one (`--mbstd 0`: plain `Discriminator`);
* feature matching (Salimans et al. 2016): the generator's loss also holds
  the squared difference between the mean earliness of the discriminator's
  hidden layer on its samples and on the real batch (`--fm 0`: none).

As in Kotariya & Ganguly (via the lecture notes) one GAN is trained per digit
class. Reported: the discriminator's accuracy, and sample-quality figures
that need no Inception network: the share of generated samples a logistic
regression trained on real digits assigns to the GAN's class; their
diversity, the mean pairwise RMS distance of 64 samples over that of the
real training images of the digit, in pixels and in the real digits' first
16 principal components (pixel noise, which the decoded spike times carry,
inflates the first and barely enters the second); the mean distance from a
generated sample to its nearest real training image (against the same
distance for held-out real images), and from a real test image to its
nearest sample (coverage).
Figures: out/samples.png (real vs generated for every class),
out/losses.png, out/result.png; out/samples.npz holds the samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "spiking_gan.spk"


def earliness(z):
    """[T, B, ...] spikes (at most one per neuron) -> [B, ...] in [0, 1]:
    (T-1-t)/(T-1) for a spike at step t < T-1, else 0."""
    t = z.shape[0]
    return z[: t - 1].cumsum(0).sum(0) / (t - 1)


def latency_real(net_ir, x, steps: int):
    """Real images [B, ...] -> the Discriminator's latency code [T, B, ...],
    with the last step (value 0) emptied."""
    import torch

    from spikedsl.runtime import reference

    enc = reference.encode(net_ir.inputs[0], x, steps, dtype="float32")
    enc[-1] = 0.0
    return torch.as_tensor(enc, dtype=torch.float32)


def noise(batch: int, n: int, steps: int, t_max: int, gen):
    """Uni{0, t_max} spike times -> one spike per noise neuron, [T, B, n]."""
    import torch

    t = torch.randint(0, t_max + 1, (batch, n), generator=gen)
    z = torch.zeros(steps, batch, n)
    z.scatter_(0, t.unsqueeze(0), 1.0)
    return z


def batch_std(e):
    """Minibatch standard deviation (Karras et al. 2018): the mean over pixels of
    the standard deviation across the batch, [B, n] -> [B, 1] (one value, repeated)."""
    sd = (e.var(0, unbiased=False) + 1e-8).sqrt().mean()
    return sd.expand(e.shape[0], 1)


def d_forward(D, spikes, mbstd: bool):
    """The discriminator on a latency code [T, B, n]: (earliness of d, of h)."""
    if mbstd:
        e = earliness(spikes)
        s = batch_std(e).unsqueeze(0).expand(spikes.shape[0], -1, -1)
        out = D({"x": spikes, "s": s})
    else:
        out = D(spikes)
    return earliness(out["d"]), earliness(out["h"])


def train_gan(prog, gname, dname, x_real, *, epochs, batch, lr_g, lr_d, seed, gain, log,
              mbstd=False, fm=0.0):
    """Alternating LSGAN updates; ``mbstd``: the discriminator also reads the
    minibatch standard deviation of its input; ``fm``: weight of feature
    matching (Salimans et al. 2016: the generator also matches the mean
    earliness of the discriminator's hidden layer on the real batch)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    gnet, dnet = prog.network(gname), prog.network(dname)
    G, D = gnet.to_torch(), dnet.to_torch()
    # weight gain: IF neurons with one input spike each need a larger drive than
    # the default (Kaiming-uniform) initialisation gives to fire at all.
    with torch.no_grad():
        for m in (G, D):
            for name, p in m.named_parameters():
                if name.endswith("weight"):
                    p.mul_(gain)
    steps = gnet.ir.steps
    n_z = gnet.ir.inputs[0].shape[0]
    t_max = steps - 2
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    real_all = latency_real(dnet.ir, x_real, steps)  # [T, N, 64]
    n = real_all.shape[1]
    hist = []
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        sums = np.zeros(4)
        nb = 0
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            real = real_all[:, idx]
            b = real.shape[1]
            if b < 2:
                continue
            # ---- discriminator step (G frozen: its sample is detached)
            with torch.no_grad():
                fake = G(noise(b, n_z, steps, t_max, gen))["g"]
                fake[-1] = 0.0
            e_r, _ = d_forward(D, real, mbstd)
            e_f, _ = d_forward(D, fake, mbstd)
            loss_d = 0.5 * (((e_r[:, 1] - 1) ** 2 + e_r[:, 0] ** 2).mean()
                            + ((e_f[:, 0] - 1) ** 2 + e_f[:, 1] ** 2).mean())
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            # ---- generator step (D frozen: only G's parameters are stepped)
            g_sp = G(noise(b, n_z, steps, t_max, gen))["g"]
            g_sp = torch.cat([g_sp[:-1], torch.zeros_like(g_sp[-1:])], 0)
            e_g, h_g = d_forward(D, g_sp, mbstd)
            loss_g = ((e_g[:, 1] - 1) ** 2 + e_g[:, 0] ** 2).mean()
            if fm:
                with torch.no_grad():
                    _, h_r = d_forward(D, real, mbstd)
                loss_g = loss_g + fm * ((h_g.mean(0) - h_r.mean(0)) ** 2).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            with torch.no_grad():
                acc = 0.5 * ((e_r[:, 1] > e_r[:, 0]).float().mean()
                             + (e_f[:, 0] >= e_f[:, 1]).float().mean())
                rate = g_sp[:-1].sum(0).mean()
            sums += [float(loss_d.detach()), float(loss_g.detach()), float(acc), float(rate)]
            nb += 1
        hist.append(dict(zip(("loss_d", "loss_g", "d_acc", "g_active"), sums / nb)))
        if log and (ep == 0 or (ep + 1) % max(1, epochs // 5) == 0 or ep == epochs - 1):
            h = hist[-1]
            log(f"  epoch {ep + 1:3d}/{epochs}: loss D {h['loss_d']:.3f}  loss G "
                f"{h['loss_g']:.3f}  D accuracy {h['d_acc']:.2f}  active G pixels "
                f"{h['g_active']:.2f}")
    return G, D, hist


def sample(G, gnet_ir, n: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    steps = gnet_ir.steps
    with torch.no_grad():
        g = G(noise(n, gnet_ir.inputs[0].shape[0], steps, steps - 2, gen))["g"]
        g[-1] = 0.0
        return earliness(g).numpy()


def pairwise_rms(x) -> float:
    """Mean RMS distance over all pairs of distinct images of ``x`` [N, pixels]."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).mean(-1), 0.0))
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--classes", type=str, default=None,
                   help="comma-separated digit classes (default: all ten; --smoke: 0)")
    p.add_argument("--gain", type=float, default=None,
                   help="factor on the initial weights (default 3)")
    p.add_argument("--lr-g", type=float, default=2e-3)
    p.add_argument("--lr-d", type=float, default=1e-3)
    p.add_argument("--mbstd", type=int, choices=(0, 1), default=1,
                   help="1 (default): the discriminator reads the minibatch standard "
                        "deviation; 0: the plain discriminator")
    p.add_argument("--fm", type=float, default=1.0,
                   help="weight of the feature-matching term of the generator (default 1; "
                        "0: none)")
    args = p.parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    import spikedsl
    from spikedsl.runtime.data import load_dataset

    prog = spikedsl.load(SPEC)
    if args.full:
        C.need_mnist("the 784-pixel GAN")
        data = load_dataset("mnist", {"path": str(C.MNIST_DIR)}, str(HERE), args.seed)
        gname, side = "MnistGenerator", 28
        dname = "MnistDiscriminatorMB" if args.mbstd else "MnistDiscriminator"
        epochs, batch, gain = 50, 100, 3.0
    else:
        data = load_dataset("digits", {}, str(HERE), args.seed)
        gname, side = "Generator", 8
        dname = "DiscriminatorMB" if args.mbstd else "Discriminator"
        epochs, batch, gain = (1 if args.smoke else 40), 32, 3.0
    epochs = args.epochs or epochs
    gain = args.gain or gain
    classes = ([int(c) for c in args.classes.split(",")] if args.classes
               else ([0] if args.smoke else list(range(10))))
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test

    # a reference classifier of real digits, for the sample-quality figures
    clf = LogisticRegression(max_iter=2000).fit(x_tr, y_tr)
    print(f"reference classifier (logistic regression) on real test digits: "
          f"{100 * clf.score(x_te, y_te):.1f} %")

    # diversity is also measured in the space of the real digits' first 16
    # principal components, which pixel noise barely enters
    pca = PCA(16, random_state=0).fit(x_tr)
    results = {"example": "spiking_gan", "mode": C.mode(args), "epochs": epochs,
               "mbstd": bool(args.mbstd), "fm": args.fm,
               "classes": {}}
    samples, hists = {}, {}
    for c in classes:
        xc = x_tr[y_tr == c]
        if args.smoke:
            xc = xc[:64]
        clock = C.Clock()
        print(f"== digit {c}: {len(xc)} training images, {epochs} epochs")
        G, _D, hist = train_gan(prog, gname, dname, xc, epochs=epochs, batch=batch,
                               lr_g=args.lr_g, lr_d=args.lr_d, seed=args.seed + c, gain=gain, log=print,
                                mbstd=bool(args.mbstd), fm=args.fm)
        s = sample(G, prog.network(gname).ir, 64, seed=1000 + c)
        samples[c], hists[c] = s, hist
        # quality: class assigned by the reference classifier, nearest-neighbour distance
        ok = float((clf.predict(s) == c).mean())
        d_gen = np.sqrt(((s[:, None, :] - xc[None]) ** 2).mean(-1)).min(1).mean()
        xr = x_te[y_te == c]
        d_real = np.sqrt(((xr[:, None, :] - xc[None]) ** 2).mean(-1)).min(1).mean()
        diversity, div_real = pairwise_rms(s), pairwise_rms(xc)
        div_pca = pairwise_rms(pca.transform(s)) / pairwise_rms(pca.transform(xc))
        cover = float(np.sqrt(((xr[:, None, :] - s[None]) ** 2).mean(-1)).min(1).mean())
        results["classes"][c] = {
            "n_train": len(xc), "d_accuracy_last_epoch": hist[-1]["d_acc"],
            "loss_d": hist[-1]["loss_d"], "loss_g": hist[-1]["loss_g"],
            "samples_classified_as_class": ok, "nn_rms_distance_generated": float(d_gen),
            "nn_rms_distance_real_test": float(d_real), "sample_diversity_rms": diversity,
            "real_diversity_rms": div_real, "diversity_ratio": diversity / div_real,
            "coverage_rms": cover, "diversity_ratio_pca": div_pca,
            "seconds": round(clock.elapsed(), 1)}
        print(f"  samples classified as {c}: {100 * ok:.0f} %;  RMS distance to the nearest "
              f"training image: generated {d_gen:.3f}, real test images {d_real:.3f}; "
              f"diversity generated {diversity:.3f}, real {div_real:.3f}  ({clock.elapsed():.0f} s)")

    rows = [[c, f"{100 * r['samples_classified_as_class']:.0f} %",
             f"{r['nn_rms_distance_generated']:.3f}", f"{r['nn_rms_distance_real_test']:.3f}",
             f"{r['sample_diversity_rms']:.3f}", f"{r['real_diversity_rms']:.3f}",
             f"{100 * r['d_accuracy_last_epoch']:.0f} %"]
            for c, r in results["classes"].items()]
    tab = C.table(rows, ["digit", "samples -> class", "NN dist. generated",
                         "NN dist. real test", "diversity gen.", "diversity real",
                         "D accuracy"])
    print()
    print(tab)
    mean_ok = float(np.mean([r["samples_classified_as_class"]
                             for r in results["classes"].values()]))
    print(f"mean share of samples classified as their GAN's digit: {100 * mean_ok:.1f} %")
    results["table"] = tab
    results["mean_samples_classified_as_class"] = mean_ok
    mean_div = float(np.mean([r["diversity_ratio"] for r in results["classes"].values()]))
    print(f"mean diversity of the samples relative to the real digits: {100 * mean_div:.0f} %")
    results["mean_diversity_ratio"] = mean_div
    mean_pca = float(np.mean([r["diversity_ratio_pca"] for r in results["classes"].values()]))
    print(f"the same in the real digits' 16 principal components: {100 * mean_pca:.0f} %")
    results["mean_diversity_ratio_pca"] = mean_pca
    np.savez_compressed(out / "samples.npz", **{f"digit{c}": v for c, v in samples.items()})

    # ---------------------------------------------------------------- figures
    k = 8
    fig, axes = plt.subplots(len(classes), 2 * k + 1, figsize=((2 * k + 1) * 0.5,
                                                                 len(classes) * 0.55 + 0.4))
    axes = np.atleast_2d(axes)
    for r, c in enumerate(classes):
        real = x_tr[y_tr == c][:k]
        for j in range(2 * k + 1):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
            if j < k and j < len(real):
                ax.imshow(real[j].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            elif j > k:
                ax.imshow(samples[c][j - k - 1].reshape(side, side), cmap="gray", vmin=0, vmax=1)
    axes[0, k // 2].set_title("real (training)", fontsize=8)
    axes[0, k + 1 + k // 2].set_title("generated (decoded spike times)", fontsize=8)
    fig.suptitle(f"TTFS spiking GAN, one per digit, {epochs} epochs", fontsize=9)
    C.save(fig, out / "samples.png", dpi=100)
    fig, axes = plt.subplots(1, 1, figsize=(5, 3))
    for c in classes:
        axes.plot([h["loss_d"] for h in hists[c]], color="C0", alpha=0.4)
        axes.plot([h["loss_g"] for h in hists[c]], color="C1", alpha=0.4)
    axes.plot([], color="C0", label="discriminator")
    axes.plot([], color="C1", label="generator")
    axes.set_xlabel("epoch")
    axes.set_ylabel("least-squares loss")
    axes.legend(fontsize=7)
    fig.tight_layout()
    C.save(fig, out / "losses.png")
    # small result image: 6 generated samples per class
    fig, axes = plt.subplots(len(classes), 6, figsize=(6 * 0.45, len(classes) * 0.45))
    axes = np.atleast_2d(axes)
    for r, c in enumerate(classes):
        for j in range(6):
            axes[r, j].imshow(samples[c][j].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            axes[r, j].axis("off")
    C.save(fig, out / "result.png", dpi=70)

    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
