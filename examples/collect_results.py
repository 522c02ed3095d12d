"""Print the Markdown results table of examples/README.md from the
``out/results.json`` files the examples wrote:

    python examples/collect_results.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict | None:
    p = HERE / name / "out" / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def pct(v) -> str:
    return f"{100 * v:.1f} %"


def pm(mean, std) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f} %"


def fmt_time(r: dict) -> str:
    return f"{r.get('wall_seconds', 0):.0f} s / {r.get('cpu_seconds', 0):.0f} s"


def rows() -> list[list[str]]:
    out = []
    r = load("autoencoder")
    if r:
        for i, (name, run) in enumerate(r["runs"].items()):
            out.append(["autoencoder", (f"{run['network']} on {run['data']}, {run['epochs']} ep. "
                        f"({run['updates']} updates)"), "test Spike-MSE / MSE",
                        f"{run['test']['spike_mse']:.3f} / {run['test']['mse']:.3f}",
                        "MNIST 784-196-784, 1 ep.: MSE 0.357 (Table 1)"
                        if run["network"] == "784-196-784" else "-",
                        fmt_time(r) if i == 0 else "",
                        "python examples/autoencoder/run.py" if i == 0 else ""])
    r = load("audio_to_image")
    if r:
        out.extend(audio_rows(r))
    r = load("mdn_classifier")
    if r:
        paper = {"lif1": "98.69", "fs": "98.67", "rs": "98.33", "sds": "94.87", "wds": "95.34"}
        n = len(r.get("seeds", [0]))
        for key, run in r["runs"].items():
            out.append(["mdn_classifier", f"{run['label']}, {r['epochs']} ep., {n} seeds",
                        "test accuracy, mean ± std (last / best epoch)",
                        (f"{pm(run['test_accuracy'], run.get('test_accuracy_std', 0.0))} / "
                         f"{pm(run['best_test_accuracy'], run.get('best_test_accuracy_std', 0.0))}"),
                        f"MNIST {paper[key]} % (Table 3, 5 seeds)" if key in paper else "-",
                        fmt_time(r) if key == "lif" or len(r["runs"]) == 1 else "",
                        "python examples/mdn_classifier/run.py" if key == "lif" else ""])
        th = r.get("theta")
        if th:
            cl = th["clusters"]
            if "M_ab_mean_std" in th:
                (ab, sab), (cd, scd) = th["M_ab_mean_std"], th["M_cd_mean_std"]
                value = f"{ab:.1f} ± {sab:.1f} / {cd:.1f} ± {scd:.1f}"
            else:
                value = f"{cl['ab']['M']} / {cl['cd']['M']}"
            out.append(["mdn_classifier", f"k-means of learned theta (mean shift M), {n} seeds",
                        "clusters (a,b) / (c,d)", value, "MNIST: 1 / 3 (sect. 4.3)", "", ""])
    r = load("conv_lstm")
    if r:
        for run in r["runs"].values():
            m, p, t2 = run["mean_bce"], run["paper_units"], run["paper_table2"]
            n = run["n_train"] + run["n_val"]
            out.append(["conv_lstm", f"SConvLSTM seqGraph {n}, {run['epochs']} ep.",
                        "train/val loss start -> end (paper unit; per-step batch norm)",
                        (f"{p['train_start']:.1f}/{p['val_start']:.2f} -> {p['train_end']:.2f}/"
                        f"{p['val_end']:.2f} (BCE/pixel {m['val_end']:.4f})"),
                        (f"{t2['train_start']}/{t2['val_start']} -> {t2['train_end']}/"
                        f"{t2['val_end']} (Table 2, 100 ep.)"), fmt_time(r),
                        "python examples/conv_lstm/run.py"])
    r = load("spiking_gan")
    if r:
        cls = r["classes"]
        d_gen = sum(c["nn_rms_distance_generated"] for c in cls.values()) / len(cls)
        d_real = sum(c["nn_rms_distance_real_test"] for c in cls.values()) / len(cls)
        extra = ("minibatch std + feature matching" if r.get("mbstd") and r.get("fm")
                 else "minibatch std" if r.get("mbstd") else
                 "feature matching" if r.get("fm") else "plain")
        out.append(["spiking_gan", (f"TTFS IF GAN, one per digit ({len(cls)}), "
                    f"{r['epochs']} ep., {extra}"),
                    "samples classified as their digit; diversity / real (pixels, PCA 16); "
                    "NN RMS dist.",
                    (f"{pct(r['mean_samples_classified_as_class'])}; "
                     f"{100 * r['mean_diversity_ratio']:.0f} %, "
                     f"{100 * r['mean_diversity_ratio_pca']:.0f} %; {d_gen:.3f} "
                     f"(real {d_real:.3f})"),
                    "qualitative only (Fig. 2)", fmt_time(r), "python examples/spiking_gan/run.py"])
    r = load("spiking_vae")
    if r:
        out.append(["spiking_vae", f"Bernoulli-latent spiking VAE, {r['epochs']} ep.",
                    "test MSE (mean digit); samples classified (real); classes; diversity "
                    "(pixels, PCA 16)",
                    (f"{r['test_reconstruction_mse']:.4f} ({r['test_mse_of_mean_digit']:.4f}); "
                     f"{pct(r['samples_confidently_classified'])} "
                     f"({pct(r['real_test_confidently_classified'])}); "
                     f"{r['classes_with_2pc_of_samples']}/10; "
                     f"{100 * r['mean_diversity_ratio']:.0f} %, "
                     f"{100 * r['mean_diversity_ratio_pca']:.0f} %"),
                    "FSVAE MNIST: FID 97.06 (notes, table)", fmt_time(r),
                    "python examples/spiking_vae/run.py"])
    r = load("lsm_stdp")
    if r:
        ro = r["readout"]
        out.append(["lsm_stdp", f"LSM 160E+40I, STDP on {r['n_stdp_digits']} digits",
                    "readout test accuracy (after STDP / initial / inputs only)",
                    (f"{pct(ro['after STDP']['test_accuracy'])} / {pct(ro['initial']['test_accuracy'])}"
                    f" / {pct(ro['input_counts_baseline_test_accuracy'])}"), "- (review, no figure)",
                    fmt_time(r), "python examples/lsm_stdp/run.py"])
        tb = r["torch_vs_brian2"]
        out.append(["lsm_stdp", "same STDP run in torch and Brian2", "max abs(w_torch - w_brian2)",
                    (f"{tb['max_abs_weight_difference']:.1e} (identical spikes: "
                    f"{tb['identical_spikes']})"), "-", "", ""])
        comp = r.get("competitive")
        if comp:
            ro = comp["readout"]
            out.append(["lsm_stdp", (f"STDP with competition (200E+200I, lateral inhibition, "
                                     f"homeostatic theta), {comp['n_stdp_digits']} digits"),
                        "readout test accuracy (after STDP / untrained)",
                        (f"{pct(ro['after STDP']['test_accuracy'])} / "
                         f"{pct(ro['initial']['test_accuracy'])}"),
                        "- (review, no figure)", "", ""])
            tb = comp["torch_vs_brian2"]
            out.append(["lsm_stdp", f"same, first {tb['digits']} digits in torch and Brian2",
                        "max abs(w_torch - w_brian2)",
                        (f"{tb['max_abs_weight_difference']:.1e} (identical spikes: "
                         f"{tb['identical_spikes']})"), "-", "", ""])
    return out


def audio_rows(r: dict) -> list[list[str]]:
    """Audio to image (paper 001, sect. 4.2): test MSE against T_h on Dataset A,
    Dataset B at its T_h."""
    au, ac, runs = r["audio"], r["audiocoder"], r["runs"]
    src = au["source"].split(" (")[0]
    a = sorted((v for k, v in runs.items() if k.startswith("A_")), key=lambda v: v["th"])
    b = sorted((v for k, v in runs.items() if k.startswith("B_")), key=lambda v: v["th"])
    size = "1560-2048-196" if ac["network"].endswith("Full") else "1560-256-196"
    rows = []
    if a:
        rows.append(["audio_to_image",
                     (f"Dataset A: {src} digits ({au['n_train']}/{au['n_test']}) -> digits 28x28, "
                      f"AC {size}/196-784, T = {ac['steps']}, {ac['epochs']} ep."),
                     f"test MSE at T_h = {' / '.join(str(v['th']) for v in a)}",
                     " / ".join(f"{v['test_mse']:.3f}" for v in a),
                     "TI-46 -> MNIST: 0.254 at T_h = 15 (Table 1, Fig. 10A)", fmt_time(r),
                     "python examples/audio_to_image/run.py"])
        rows.append(["audio_to_image", "Dataset A: test outputs nearest their digit's image",
                     f"share at T_h = {' / '.join(str(v['th']) for v in a)}",
                     " / ".join(pct(v["test_class_match"]) for v in a), "-", "", ""])
    for v in b:
        rows.append(["audio_to_image", f"Dataset B (one image per audio sample), T_h = {v['th']}",
                     "test / train MSE", f"{v['test_mse']:.3f} / {v['train_mse']:.3f}",
                     "0.543 (test, T_h = 10; Table 1)" if v["th"] == 10 else "-",
                     "" if a else fmt_time(r), ""])
    return rows


def main() -> int:
    sys.path.insert(0, str(HERE))
    import _common as C

    print(C.table(rows(), ["example", "run", "metric", "value", "paper", "time (wall / CPU)",
                           "command"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
