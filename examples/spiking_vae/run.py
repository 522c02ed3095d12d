"""Spiking VAE with Bernoulli latent spikes (FSVAE-style, paper 002 sect. 2), one command:

    python examples/spiking_vae/run.py          # class-conditional VAE on 8x8 digits (~2 min)
    python examples/spiking_vae/run.py --smoke  # seconds: 1 epoch on a few digits

spiking_vae.spk holds the model: a spiking encoder, a latent layer of
Bernoulli spikes sampled at every step (`BernoulliSpike`: fires where
sigmoid(logit) exceeds a uniform random number, the input `u`), an
autoregressive Bernoulli prior (`zp`) and a spiking decoder (`VAE`), and the
same decoder fed by spikes drawn from the prior (`Sampler`). Both are
compiled by spikedsl to torch modules. A `train` block has one fixed loss,
so the ELBO is written here, on the modules' outputs:

    loss = BCE(sigmoid(mean_t y), x)  (summed over pixels)
         + beta * sum_t sum_j KL(Bernoulli(q_tj) || Bernoulli(p_tj))

with q = `z.p` (the posterior firing probabilities) and p = `zp.p` (the
prior's), per image. Reported: reconstruction MSE on the test digits, the
share of samples (drawn from the prior for each label) that a logistic
regression trained on real digits assigns to their label, and their
diversity (mean pairwise RMS distance of a digit's samples over that of the
real training images of the digit, in pixels and in the real digits' first
16 principal components).
Figures: out/reconstructions.png, out/samples.png, out/result.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "spiking_vae.spk"
N_CLASSES = 10


def pairwise_rms(x) -> float:
    """Mean RMS distance over all pairs of distinct rows of ``x`` [N, features]."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).mean(-1), 0.0))
    return float(d.sum() / (len(x) * (len(x) - 1)))


def bernoulli_kl(q, p, eps: float = 1e-6):
    """KL(Bernoulli(q) || Bernoulli(p)) elementwise."""
    import torch

    q = q.clamp(eps, 1 - eps)
    p = p.clamp(eps, 1 - eps)
    return q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))


def vae_inputs(x, steps: int, n_latent: int, gen):
    """The VAE's inputs: the image as a constant current, and one uniform random
    number per latent neuron and step."""
    import torch

    b = x.shape[0]
    return {"x": x.expand(steps, b, -1), "u": torch.rand(steps, b, n_latent, generator=gen)}


def elbo(out, x, beta: float, free_bits: float = 0.0):
    """(loss, reconstruction BCE, KL), averaged over the batch; the KL is the
    true one, summed over steps and latent neurons.

    With ``free_bits`` > 0 (Kingma et al. 2016) the encoder feels an image's KL
    only above that many nats, which keeps the posterior from collapsing onto
    the prior before the decoder has learned to read the latent spikes; the
    prior is always fitted to the posterior by the full KL (the two halves
    of the KL gradient are split with ``detach``; the prior reads the
    posterior's spikes without gradient, see ``forward``)."""
    import torch

    logits = out["mean(y)"]
    rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    rec = rec.sum(1).mean()
    q, p = out["z.p"], out["zp.p"]
    kl = bernoulli_kl(q, p).sum((0, 2))
    if not free_bits:
        return rec + beta * kl.mean(), rec, kl.mean()
    kl_enc = bernoulli_kl(q, p.detach()).sum((0, 2)).clamp(min=free_bits)
    kl_prior = bernoulli_kl(q.detach(), p).sum((0, 2))
    return rec + beta * (kl_enc.mean() + kl_prior.mean()), rec, kl.mean()


def sampler_weights(vae_state: dict, prior_state: dict) -> dict:
    """The Sampler's weights: the VAE's decoder as it is, the latent layer's
    recurrent projection from the Prior."""
    w = {k: v for k, v in vae_state.items() if k.split(".")[0] in ("d1", "d2", "y")}
    w["z.z.weight"], w["z.z.bias"] = prior_state["zp.weight"], prior_state["zp.bias"]
    return w


def forward(model, prior, inputs):
    """The VAE's outputs plus the prior's probabilities ``zp.p`` on its spikes."""
    out = dict(model(inputs))
    out["zp.p"] = prior(out["z"].detach())["zp.p"]
    return out


def train(prog, x_tr, *, epochs, batch, lr, beta, warmup, free_bits, seed, log):
    import numpy as np
    import torch

    torch.manual_seed(seed)
    net = prog.network("VAE")
    model, prior = net.to_torch(), prog.network("Prior").to_torch()
    steps, n_lat = net.ir.steps, 16
    opt = torch.optim.Adam([*model.parameters(), *prior.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.as_tensor(x_tr, dtype=torch.float32)
    n = len(x_all)
    hist = []
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        sums, nb = np.zeros(2), 0
        model.train()
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            xb = x_all[idx]
            out = forward(model, prior, vae_inputs(xb, steps, n_lat, gen))
            # KL warm-up: beta grows linearly over the first `warmup` epochs
            b_now = beta * min(1.0, (ep + i / n) / warmup) if warmup else beta
            loss, rec, kl = elbo(out, xb, b_now, free_bits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums += [float(rec.detach()), float(kl.detach())]
            nb += 1
        h = dict(zip(("reconstruction", "kl"), sums / nb))
        hist.append(dict(h, neg_elbo=h["reconstruction"] + h["kl"]))
        if log and (ep == 0 or (ep + 1) % max(1, epochs // 8) == 0 or ep == epochs - 1):
            h = hist[-1]
            log(f"  epoch {ep + 1:3d}/{epochs}: -ELBO {h['neg_elbo']:.2f} nats (reconstruction "
                f"{h['reconstruction']:.2f}, KL {h['kl']:.2f})")
    return model, prior, hist


def reconstruct(model, x, steps: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        out = model(vae_inputs(torch.as_tensor(x, dtype=torch.float32), steps, 16, gen))
        return torch.sigmoid(out["mean(y)"]).numpy(), out["z"].mean().item()


def generate(sampler, n: int, steps: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = sampler(torch.rand(steps, n, 16, generator=gen))
        return torch.sigmoid(out["mean(y)"]).numpy()


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (default 1)")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--free-bits", type=float, default=20.0,
                   help="nats of KL per image that cost nothing (default 20; 0: plain ELBO)")
    p.add_argument("--warmup", type=float, default=5,
                   help="epochs over which the KL weight grows from 0 to beta (default 5)")
    args = p.parse_args(argv)
    if args.full:
        sys.exit("spiking_vae has no --full run (digits only)")
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    import spikedsl
    from spikedsl.runtime.data import load_dataset

    prog = spikedsl.load(SPEC)
    data = load_dataset("digits", {}, str(HERE), args.seed)
    x_tr, x_te, y_te = data.x_train, data.x_test, data.y_test
    epochs = args.epochs or (1 if args.smoke else 30)
    if args.smoke:
        x_tr, x_te, y_te = x_tr[:128], x_te[:64], y_te[:64]
    steps = prog.network("VAE").ir.steps

    clf = LogisticRegression(max_iter=2000).fit(data.x_train, data.y_train)
    pca = PCA(16, random_state=0).fit(data.x_train)
    print(f"reference classifier (logistic regression) on real test digits: "
          f"{100 * clf.score(data.x_test, data.y_test):.1f} %")

    clock = C.Clock()
    print(f"== spiking VAE: {len(x_tr)} training digits, {epochs} epochs")
    model, prior, hist = train(prog, x_tr, epochs=epochs, batch=64, lr=args.lr, beta=args.beta,
                        warmup=args.warmup if not args.smoke else 0,
                        free_bits=args.free_bits, seed=args.seed,
                        log=print)
    train_s = clock.elapsed()
    rec, rate = reconstruct(model, x_te, steps, seed=1)
    mse = float(((rec - x_te) ** 2).mean())
    mse_mean = float(((x_te - x_tr.mean(0)) ** 2).mean())  # predicting the mean digit
    sampler = prog.network("Sampler").to_torch(weights=sampler_weights(
        *({k: v.detach().numpy() for k, v in m.state_dict().items()} for m in (model, prior))))
    n_samples = 100 if args.smoke else 1000
    samples = generate(sampler, n_samples, steps, seed=2)
    # the VAE is unconditional: a sample's digit is the one the reference
    # classifier gives it; "classified" = that class has probability >= 0.5
    # (the same share for the real test digits is the yardstick)
    prob, prob_real = clf.predict_proba(samples), clf.predict_proba(x_te)
    pred = prob.argmax(1)
    confident = float((prob.max(1) >= 0.5).mean())
    confident_real = float((prob_real.max(1) >= 0.5).mean())
    per = {}
    for c in range(N_CLASSES):
        s = samples[pred == c]
        xc = data.x_train[data.y_train == c]
        r = {"share": float((pred == c).mean())}
        if len(s) >= 2:
            r["diversity_ratio"] = pairwise_rms(s) / pairwise_rms(xc)
            r["diversity_ratio_pca"] = (pairwise_rms(pca.transform(s))
                                        / pairwise_rms(pca.transform(xc)))
        per[c] = r
    weighted = [(r["share"], r["diversity_ratio"], r["diversity_ratio_pca"])
                for r in per.values() if "diversity_ratio" in r]
    wsum = sum(w for w, _, _ in weighted)
    mean_div = sum(w * d for w, d, _ in weighted) / wsum
    mean_pca = sum(w * d for w, _, d in weighted) / wsum
    classes_seen = int(sum(r["share"] >= 0.02 for r in per.values()))
    rows = [[c, f"{100 * r['share']:.1f} %",
             f"{100 * r['diversity_ratio']:.0f} %" if "diversity_ratio" in r else "-",
             f"{100 * r['diversity_ratio_pca']:.0f} %" if "diversity_ratio" in r else "-"]
            for c, r in per.items()]
    tab = C.table(rows, ["digit (classifier)", "share of samples", "diversity (pixels)",
                         "diversity (PCA 16)"])
    print()
    print(tab)
    print(f"test reconstruction MSE {mse:.4f} (predicting the mean digit: {mse_mean:.4f}); "
          f"latent firing rate {rate:.2f}")
    print(f"samples classified with probability >= 0.5: {100 * confident:.1f} % (real test "
          f"digits: {100 * confident_real:.1f} %); digits with >= 2 % of the samples: "
          f"{classes_seen}/10")
    print(f"diversity relative to the real digits of the same class: {100 * mean_div:.0f} % "
          f"(pixels), {100 * mean_pca:.0f} % (PCA 16)")

    # ---------------------------------------------------------------- figures
    k = 10
    fig, axes = plt.subplots(2, k, figsize=(k * 0.6, 1.4))
    for j in range(k):
        i = int(np.nonzero(y_te == j)[0][0]) if (y_te == j).any() else j
        for r, img in enumerate((x_te[i], rec[i])):
            axes[r, j].imshow(img.reshape(8, 8), cmap="gray", vmin=0, vmax=1)
            axes[r, j].axis("off")
    axes[0, 0].set_title("test digits (top) and their reconstructions", fontsize=7, loc="left")
    C.save(fig, out / "reconstructions.png", dpi=100)
    m = 8
    fig, axes = plt.subplots(N_CLASSES, m, figsize=(m * 0.5, N_CLASSES * 0.5))
    for c in range(N_CLASSES):
        s = samples[pred == c]
        for j in range(m):
            if j < len(s):
                axes[c, j].imshow(s[j].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
            axes[c, j].axis("off")
    fig.suptitle("spiking VAE: samples from the prior, one row per classified digit",
                 fontsize=7)
    C.save(fig, out / "samples.png", dpi=100)
    fig, axes = plt.subplots(6, 10, figsize=(10 * 0.45, 6 * 0.45))
    for j, ax in enumerate(axes.ravel()):
        ax.imshow(samples[j].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    C.save(fig, out / "result.png", dpi=70)

    results = {"example": "spiking_vae", "mode": C.mode(args), "epochs": epochs,
               "n_train": len(x_tr), "n_test": len(x_te), "beta": args.beta,
               "history": hist, "test_reconstruction_mse": mse,
               "test_mse_of_mean_digit": mse_mean, "latent_rate": rate,
               "samples_confidently_classified": confident,
               "real_test_confidently_classified": confident_real,
               "classes_with_2pc_of_samples": classes_seen,
               "mean_diversity_ratio": mean_div, "mean_diversity_ratio_pca": mean_pca,
               "classes": per, "table": tab, "train_seconds": round(train_s, 1)}
    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
