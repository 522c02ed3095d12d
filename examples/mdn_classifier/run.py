"""Meta-dynamic neurons classifier (Cheng, Zhang, Jia & Xu, paper 003), one command:

    python examples/mdn_classifier/run.py          # 64-128-10 on digits, 7 neuron types,
                                                   # 5 seeds, 20 epochs each (~3 min CPU)
    python examples/mdn_classifier/run.py --full   # 784-500-10 on MNIST (data/mnist IDX
                                                   # files), 5 seeds, 20 epochs each
    python examples/mdn_classifier/run.py --smoke  # seconds: 2 seeds, 1 epoch on 200 samples
    options: --seeds N (number of seeds, from --seed on), --epochs N

Every network of mdn_classifier.spk is trained by its own `train` block
(`spikedsl.runtime.train`, torch target; rate-coded MSE loss, eq. 4; Adam lr 1e-3,
batch 100): the library LIF, the paper's 1st-order meta neuron (its "LIF"),
the four 2nd-order presets of Table 2 (2-FS, 2-RS, 2-SDS, 2-WDS) and the
2nd-order MDN with per-neuron trainable theta, each with five seeds (the
paper averages five runs; here the seeds change the initial weights, the
input spikes and the batch order, the data split stays fixed): test accuracy
as mean +- standard deviation over the seeds (sample std, ddof = 1). Then
the learned theta of every seed's MDN are clustered as in sect. 3.3 / 4.3:
(theta_a, theta_b) and (theta_c, theta_d) pairs separately, the number of
clusters M from mean shift, then k-means with K = M (scikit-learn); plus a
4-D k-means with K = 4 whose centres are set next to the Table 2 presets.

Figures: out/accuracy.png (test accuracy per epoch, mean +- std over the
seeds), out/theta_clusters.png (the first seed's learned theta),
out/result.png. Table: printed and in out/results.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "mdn_classifier.spk"

# (train suffix, label in the table)
MODELS = [
    ("lif", "LIF (library, exact leak, tau 5 ms)"),
    ("lif1", "LIF: 1st-order meta neuron (paper's LIF)"),
    ("fs", "2-FS (fixed, Table 2)"),
    ("rs", "2-RS (fixed, Table 2)"),
    ("sds", "2-SDS (fixed, Table 2)"),
    ("wds", "2-WDS (fixed, Table 2)"),
    ("mdn", "MDN, trainable per-neuron theta"),
]
PRESETS = {  # Table 2: theta_a, theta_b, theta_c, theta_d
    "2-FS": (0.060, 0.219, -0.065, 0.003),
    "2-RS": (0.060, 0.219, -0.010, 0.050),
    "2-SDS": (-0.009, 0.246, -0.058, 0.065),
    "2-WDS": (0.005, 0.158, -0.058, 0.065),
    "init": (0.02, 0.2, 0.0, 0.08),
}
PAPER_MNIST = {"lif1": 98.69, "fs": 98.67, "rs": 98.33, "sds": 94.87, "wds": 95.34}  # Table 3


def learned_theta(model) -> dict:
    """Per-neuron theta of every layer: {layer: [n, 4] array}."""
    import numpy as np

    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    out = {}
    for layer in ("h", "o"):
        keys = [f"{layer}.theta_{c}" for c in "abcd"]
        if all(k in sd for k in keys):
            out[layer] = np.stack([sd[k].reshape(-1) for k in keys], 1)
    return out


def cluster(theta, seed: int = 0) -> dict:
    """The paper's procedure (sect. 3.3): mean shift gives M, k-means with K = M,
    on (a, b) and (c, d) separately; and a 4-D k-means with K = 4."""
    import numpy as np
    from sklearn.cluster import KMeans, MeanShift, estimate_bandwidth

    res = {}
    for name, cols in (("ab", [0, 1]), ("cd", [2, 3])):
        pts = theta[:, cols]
        bw = estimate_bandwidth(pts, quantile=0.3, random_state=seed)
        if not bw or bw <= 0:
            m = 1
        else:
            m = len(MeanShift(bandwidth=bw).fit(pts).cluster_centers_)
        km = KMeans(n_clusters=m, n_init=10, random_state=seed).fit(pts)
        order = np.argsort(-np.bincount(km.labels_, minlength=m))
        res[name] = {"M": int(m), "centres": km.cluster_centers_[order].tolist(),
                     "sizes": np.bincount(km.labels_, minlength=m)[order].tolist()}
    k = min(4, len(theta))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(theta)
    sizes = np.bincount(km.labels_, minlength=k)
    order = np.argsort(-sizes)
    cents = km.cluster_centers_[order]
    names = [n for n in PRESETS if n != "init"]
    ref = np.array([PRESETS[n] for n in names])
    nearest = [names[int(np.argmin(((ref - c) ** 2).sum(1)))] for c in cents]
    res["abcd"] = {"K": k, "centres": cents.tolist(), "sizes": sizes[order].tolist(),
                   "nearest_preset": nearest}
    return res


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def pm(values, scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds, --seed, --seed + 1, ... (default 5; --smoke: 2)")
    args = p.parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import numpy as np

    import spikedsl
    from spikedsl.runtime.train import train

    prog = spikedsl.load(SPEC)
    prefix = "mnist" if args.full else "digits"
    if args.full:
        C.need_mnist("the 784-500-10 classifiers")
    epochs = args.epochs or (1 if args.smoke else 20)
    n_seeds = args.seeds or (2 if args.smoke else 5)
    seeds = [args.seed + i for i in range(n_seeds)]
    limit = 200 if args.smoke else None
    models = MODELS if not args.smoke else [MODELS[1], MODELS[2], MODELS[-1]]

    results = {"example": "mdn_classifier", "mode": C.mode(args), "epochs": epochs,
               "seeds": seeds, "runs": {}}
    histories: dict[str, list] = {}
    thetas: list[dict] = []  # per seed: {layer: [n, 4]}
    for key, label in models:
        name = f"{prefix}_{key}"
        clock = C.Clock()
        per_seed = []
        for seed in seeds:
            print(f"== {name} seed {seed}: {label}")
            res = train(prog, name, run_dir=out / f"{name}_s{seed}", epochs=epochs,
                        limit=limit, progress=True, log=lambda m: print("  " + m), seed=seed)
            if not res.ok:
                print(f"training stopped: {res.status}: {res.message}")
                return 1
            h = res.history
            acc = [r["test_accuracy"] for r in h]
            histories.setdefault(key, []).append(acc)
            per_seed.append({"seed": seed, "test_accuracy": acc[-1],
                             "best_test_accuracy": max(acc),
                             "train_accuracy": h[-1]["train_accuracy"],
                             "test_rate": h[-1].get("test_rate")})
            if key == "mdn":
                thetas.append(learned_theta(res.model))
        col = {k: [r[k] for r in per_seed] for k in ("test_accuracy", "best_test_accuracy",
                                                     "train_accuracy")}
        rates = [r["test_rate"] for r in per_seed if r["test_rate"] is not None]
        results["runs"][key] = {
            "label": label, "network": res.network, "seeds": per_seed,
            "test_accuracy": mean_std(col["test_accuracy"])[0],
            "test_accuracy_std": mean_std(col["test_accuracy"])[1],
            "best_test_accuracy": mean_std(col["best_test_accuracy"])[0],
            "best_test_accuracy_std": mean_std(col["best_test_accuracy"])[1],
            "train_accuracy": mean_std(col["train_accuracy"])[0],
            "test_rate": float(np.mean(rates)) if rates else None,
            "seconds": round(clock.elapsed(), 1),
        }

    # ------------------------------------------------------------------ table
    print()
    rows = []
    for key, r in results["runs"].items():
        paper = PAPER_MNIST.get(key)
        ps = r["seeds"]
        rows.append([r["label"], pm([x["test_accuracy"] for x in ps], digits=2),
                     pm([x["best_test_accuracy"] for x in ps], digits=2),
                     pm([x["train_accuracy"] for x in ps], digits=2),
                     f"{r['test_rate']:.3f}" if r["test_rate"] is not None else "-",
                     f"{r['seconds']:.0f} s", f"{paper:.2f}" if paper else "-"])
    tab = C.table(rows, [f"neuron ({len(seeds)} seeds, {epochs} ep.)", "test acc %",
                         "best test %", "train acc %", "output rate", "time",
                         "paper MNIST %"])
    print(tab)
    results["table"] = tab

    # ------------------------------------------------------------------ clustering
    import matplotlib.pyplot as plt

    theta = thetas[0] if thetas else None
    if theta:
        per_seed_cl = []
        for seed, th in zip(seeds, thetas):
            pts = np.concatenate([th[k] for k in th], 0)
            per_seed_cl.append({"seed": seed, "mean": pts.mean(0).tolist(),
                                "clusters": cluster(pts, seed=seed)})
        all_theta = np.concatenate([theta[k] for k in theta], 0)
        cl = per_seed_cl[0]["clusters"]
        m_ab = [c["clusters"]["ab"]["M"] for c in per_seed_cl]
        m_cd = [c["clusters"]["cd"]["M"] for c in per_seed_cl]
        near = [n for c in per_seed_cl for n, size in zip(c["clusters"]["abcd"]["nearest_preset"],
                                                          c["clusters"]["abcd"]["sizes"])
                for _ in range(size)]
        means = np.array([c["mean"] for c in per_seed_cl])
        results["theta"] = {
            "n_neurons": len(all_theta), "seed": seeds[0],
            "mean": all_theta.mean(0).tolist(), "std": all_theta.std(0).tolist(),
            "min": all_theta.min(0).tolist(), "max": all_theta.max(0).tolist(),
            "clusters": cl,
            "seeds": per_seed_cl,
            "M_ab": m_ab, "M_cd": m_cd,
            "M_ab_mean_std": mean_std(m_ab), "M_cd_mean_std": mean_std(m_cd),
            "mean_over_seeds": means.mean(0).tolist(),
            "std_over_seeds": means.std(0, ddof=1).tolist() if len(means) > 1 else [0.0] * 4,
            "neurons_nearest_preset": {n: near.count(n) for n in sorted(set(near))},
        }
        print(f"\nlearned theta, {len(seeds)} seeds: mean shift M of (theta_a, theta_b) "
              f"{m_ab} ({pm(m_ab, 1, 1)}), of (theta_c, theta_d) {m_cd} ({pm(m_cd, 1, 1)})")
        print("  mean theta over neurons, mean ± std over seeds: " + "  ".join(
            f"{a:+.4f} ± {b:.4f}" for a, b in zip(results["theta"]["mean_over_seeds"],
                                                  results["theta"]["std_over_seeds"])))
        print("  neurons of all seeds by the preset nearest to their 4-D k-means centre: "
              + ", ".join(f"{k} {v}" for k, v in results["theta"]["neurons_nearest_preset"]
                          .items()))
        print(f"\nseed {seeds[0]}: learned theta of {len(all_theta)} neurons (hidden + output), "
              f"init (0.02, 0.2, 0, 0.08):")
        print("  mean " + "  ".join(f"{v:+.4f}" for v in all_theta.mean(0))
              + "   std " + "  ".join(f"{v:.4f}" for v in all_theta.std(0)))
        print(f"  mean shift -> M = {cl['ab']['M']} centre(s) of (theta_a, theta_b), "
              f"M = {cl['cd']['M']} of (theta_c, theta_d); k-means centres:")
        for nm in ("ab", "cd"):
            for c, s in zip(cl[nm]["centres"], cl[nm]["sizes"]):
                print(f"    ({nm[0]}, {nm[1]}) = ({c[0]:+.4f}, {c[1]:+.4f})  [{s} neurons]")
        rows = [[f"k-means centre {i + 1} ({s} neurons)"] + [f"{v:+.4f}" for v in c]
                + [cl["abcd"]["nearest_preset"][i]]
                for i, (c, s) in enumerate(zip(cl["abcd"]["centres"], cl["abcd"]["sizes"]))]
        rows += [[f"preset {n}"] + [f"{v:+.3f}" for v in p] + [""] for n, p in PRESETS.items()]
        ctab = C.table(rows, ["4-D k-means (K = 4) / Table 2", "theta_a", "theta_b", "theta_c",
                              "theta_d", "nearest preset"])
        print(ctab)
        results["theta_table"] = ctab

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, (nm, cols, lab) in zip(axes, (("ab", [0, 1], ("theta_a", "theta_b")),
                                              ("cd", [2, 3], ("theta_c", "theta_d")))):
            for layer, mk in (("h", "."), ("o", "x")):
                if layer in theta:
                    ax.scatter(theta[layer][:, cols[0]], theta[layer][:, cols[1]], s=10,
                               marker=mk, alpha=0.6,
                               label=f"learned ({'hidden' if layer == 'h' else 'output'})")
            c = np.array(cl[nm]["centres"])
            ax.scatter(c[:, 0], c[:, 1], s=120, marker="*", c="k", label="k-means centres")
            for pn, p in PRESETS.items():
                ax.scatter(p[cols[0]], p[cols[1]], s=50, marker="s", facecolors="none",
                           edgecolors="r")
                ax.annotate(pn, (p[cols[0]], p[cols[1]]), fontsize=7, color="r",
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(lab[0])
            ax.set_ylabel(lab[1])
            ax.set_title(f"seed {seeds[0]}, ({lab[0]}, {lab[1]}): mean shift M = {cl[nm]['M']}",
                         fontsize=9)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        C.save(fig, out / "theta_clusters.png")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, accs in histories.items():
        a = 100 * np.array(accs)
        ep = np.arange(1, a.shape[1] + 1)
        line, = ax.plot(ep, a.mean(0), marker=".", label=results["runs"][key]["label"])
        if len(a) > 1:
            sd = a.std(0, ddof=1)
            ax.fill_between(ep, a.mean(0) - sd, a.mean(0) + sd, color=line.get_color(),
                            alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{'MNIST 784-500-10' if args.full else 'digits 64-128-10'}, "
                 f"rate-coded MSE loss, mean ± std of {len(seeds)} seeds", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    C.save(fig, out / "accuracy.png")
    fig2, ax2 = plt.subplots(figsize=(5, 3.2))
    for key, accs in histories.items():
        a = 100 * np.array(accs)
        ax2.plot(range(1, a.shape[1] + 1), a.mean(0), label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"test accuracy (%), mean of {len(seeds)} seeds")
    ax2.legend(fontsize=7, ncol=2)
    ax2.grid(alpha=0.3)
    fig2.tight_layout()
    C.save(fig2, out / "result.png", dpi=70)

    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
