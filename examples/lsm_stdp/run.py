"""Liquid state machine with STDP on its input synapses (review 004), one command:

    python examples/lsm_stdp/run.py          # STDP on 100 digits in Brian2 and torch, readout
                                             # on all 1797 digits; competitive STDP on 800
                                             # digits (~90 s CPU)
    python examples/lsm_stdp/run.py --full   # STDP on 500 digits (competitive: 1500)
    python examples/lsm_stdp/run.py --smoke  # seconds: 1 STDP digit (competitive: 10),
                                             # readout on 210 digits

lsm_stdp.spk holds the liquid twice: `LSM`, whose input projection learns by
pair-based STDP (`plasticity PairSTDP on x -> reservoir`), and `LSMFrozen`,
the same network without plasticity.

1. Unsupervised phase: digits are shown one after the other (100 ms each,
   Poisson input, one encoding shared by both simulators); after each one the
   learned input weights are carried over to the next (the traces and the
   membranes restart at each digit). The same sequence runs in Brian2
   (`spikedsl.targets.brian2.simulate`, native Synapses with on_pre/on_post) and
   with the torch target (`prog.network("LSM").to_torch()`, which runs the
   rule without gradients; `record_plastic` returns the weight trajectory);
   the weight trajectories are compared at every step.
2. Readout: `LSMFrozen` (torch target, batched) runs every digit with the
   initial and with the STDP-learned input weights; a logistic regression
   (scikit-learn) on the spike counts of the 200 reservoir neurons is trained
   on the train split and scored on the test split. Baseline: the same
   regression on the input spike counts.
3. STDP with competition (Diehl & Cook 2015): `WTA`, 200 excitatory
   neurons with a homeostatic threshold and lateral inhibition through 200
   inhibitory ones, learns its input weights by `CompetitiveSTDP` on
   800 digits in torch (the first 20 also in Brian2, compared step by step;
   weights and thresholds carried from digit to digit); `WTAFrozen` reads
   out as in 2., with the initial and the learned weights.
Figures: out/weights.png (weight distribution before/after STDP in both
simulators, synapse trajectories, raster), out/weights_small.png,
out/wta_weights.png and out/result.png (the competitive network's learned
input weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C

HERE = Path(__file__).resolve().parent
SPEC = HERE / "lsm_stdp.spk"
PLASTIC = "reservoir.x.weight"  # the plastic projection's weight (param_name.weight)
WTA_W = "exc.x.weight"  # the competitive network's plastic input weights
WTA_THETA = "exc.theta0"  # its per-neuron initial thresholds theta (carried over)


def stdp_phase(handle, w_init, digits, seed, log):
    """Show ``digits`` one after another with STDP in torch and in Brian2."""
    import numpy as np
    import torch

    from spikedsl.runtime import reference
    from spikedsl.targets import brian2 as b2t

    net = handle.ir
    model = handle.to_torch(dtype=torch.float64, weights=w_init)  # the torch target
    model.record_plastic = True  # outputs the weight trajectory "reservoir.x.weight"
    model.eval()
    w_t = dict(w_init)
    w_b = dict(w_init)
    traj_t, traj_b = [], []  # mean plastic weight per step, and a few synapses per step
    picks = [(3, 10), (50, 27), (80, 36), (120, 44), (150, 52)]
    worst, spikes_equal, rates = 0.0, True, []
    sec_t = sec_b = 0.0
    for k, x in enumerate(digits):
        enc = reference.encode(net.inputs[0], x[None], net.steps, seed=seed + k)
        c = C.Clock()
        model.load_weights({PLASTIC: w_t[PLASTIC]})
        with torch.no_grad():
            ot = {k: v.numpy() for k, v in model(torch.as_tensor(enc)).items()}
        sec_t += c.elapsed()
        c = C.Clock()
        ob = b2t.simulate(net, enc, weights=w_b, record=[PLASTIC])
        sec_b += c.elapsed()
        wt, wb = ot[PLASTIC][:, 0], ob[PLASTIC][:, 0]  # [T, out, in]
        worst = max(worst, float(np.abs(wt - wb).max()))
        spikes_equal &= bool(np.array_equal(ot["reservoir"], ob["reservoir"])
                             and np.array_equal(ot["inhib"], ob["inhib"]))
        rates.append(float(ot["reservoir"].mean()))
        traj_t.append(np.stack([wt[:, i, j] for i, j in picks], 1))
        traj_b.append(np.stack([wb[:, i, j] for i, j in picks], 1))
        w_t = dict(w_t, **{PLASTIC: wt[-1]})
        w_b = dict(w_b, **{PLASTIC: wb[-1]})
        if log and (k == 0 or (k + 1) % max(1, len(digits) // 5) == 0):
            log(f"  digit {k + 1:3d}/{len(digits)}: mean w torch {wt[-1].mean():.4f} brian2 "
                f"{wb[-1].mean():.4f}; max |torch - brian2| so far {worst:.2e}; reservoir "
                f"rate {1000 * rates[-1]:.1f} Hz")
        last = (enc[:, 0], ot["reservoir"][:, 0], ot["inhib"][:, 0])
    return {"w_torch": w_t[PLASTIC], "w_brian2": w_b[PLASTIC], "max_abs_diff": worst,
            "spikes_equal": spikes_equal, "traj_torch": np.concatenate(traj_t),
            "traj_brian2": np.concatenate(traj_b), "seconds_torch": sec_t,
            "seconds_brian2": sec_b, "mean_rate_hz": 1000 * float(np.mean(rates)),
            "raster": last, "picks": picks}


def wta_phase(handle, w_init, digits, n_brian2, seed, log):
    """Competitive STDP (WTA): ``digits`` one after another in torch; the first
    ``n_brian2`` also in Brian2, compared step by step. After each digit the
    learned input weights and the thresholds theta (output ``last(exc.theta)``)
    are passed on as the next digit's weights and ``theta0``."""
    import numpy as np
    import torch

    from spikedsl.runtime import reference
    from spikedsl.targets import brian2 as b2t

    net = handle.ir
    model = handle.to_torch(dtype=torch.float64, weights=w_init)
    model.eval()
    w_t = dict(w_init)
    w_b = dict(w_init)
    worst_w = worst_theta = 0.0
    spikes_equal = True
    counts, sec_t, sec_b = [], 0.0, 0.0
    for k, x in enumerate(digits):
        enc = reference.encode(net.inputs[0], x[None], net.steps, seed=seed + k)
        both = k < n_brian2
        model.record_plastic = both
        model.load_weights({WTA_W: w_t[WTA_W], WTA_THETA: w_t[WTA_THETA]})
        c = C.Clock()
        with torch.no_grad():
            ot = {key: v.numpy() for key, v in model(torch.as_tensor(enc)).items()}
        sec_t += c.elapsed()
        w_t = dict(w_t, **{WTA_W: model.state[WTA_W][0].numpy().copy(),
                           WTA_THETA: ot["last(exc.theta)"][0]})
        counts.append(float(ot["exc"].sum()))
        if both:
            c = C.Clock()
            ob = b2t.simulate(net, enc, weights=w_b, record=[WTA_W])
            sec_b += c.elapsed()
            worst_w = max(worst_w, float(np.abs(ot[WTA_W] - ob[WTA_W]).max()))
            worst_theta = max(worst_theta, float(np.abs(ot["last(exc.theta)"]
                                                        - ob["last(exc.theta)"]).max()))
            spikes_equal &= bool(np.array_equal(ot["exc"], ob["exc"]))
            w_b = dict(w_b, **{WTA_W: ob[WTA_W][-1, 0], WTA_THETA: ob["last(exc.theta)"][0]})
            if k == n_brian2 - 1:
                w_b_end = dict(w_b)
                w_t_end = dict(w_t)
        if log and (k == 0 or (k + 1) % max(1, len(digits) // 5) == 0):
            log(f"  digit {k + 1:4d}/{len(digits)}: {np.mean(counts[-50:]):.1f} excitatory "
                f"spikes per digit; mean w {w_t[WTA_W].mean():.3f} (std "
                f"{w_t[WTA_W].std():.3f}); mean theta {w_t[WTA_THETA].mean():.3f}")
    if n_brian2 == 0:
        w_b_end = w_t_end = w_t
    return {"weights": w_t, "max_abs_diff": worst_w, "max_abs_diff_theta": worst_theta,
            "max_abs_diff_final": float(np.abs(w_t_end[WTA_W] - w_b_end[WTA_W]).max()),
            "spikes_equal": spikes_equal, "seconds_torch": sec_t, "seconds_brian2": sec_b,
            "spikes_per_digit": float(np.mean(counts)), "n_brian2": n_brian2}


def features(model, x, steps, seed, batch=256):
    """Reservoir spike counts (excitatory + inhibitory) and input counts."""
    import numpy as np
    import torch

    from spikedsl.runtime import reference

    feats, ins = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            enc = reference.encode(model_input, x[i:i + batch], steps, seed=seed + i,
                                   dtype=np.float32)
            out = model(torch.as_tensor(enc))
            feats.append(np.concatenate([out["reservoir"].sum(0).numpy(),
                                         out["inhib"].sum(0).numpy()], 1))
            ins.append(enc.sum(0))
    return np.concatenate(feats), np.concatenate(ins)


model_input = None  # the input layer of LSMFrozen (set in main)


def wta_features(model, x, seed, batch=256):
    """Spike counts of the competitive network's excitatory neurons."""
    import numpy as np
    import torch

    from spikedsl.runtime import reference

    feats = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            enc = reference.encode(model.ir_input, x[i:i + batch], model.ir_steps,
                                   seed=seed + i, dtype=np.float32)
            feats.append(model(torch.as_tensor(enc))["exc"].sum(0).numpy())
    return np.concatenate(feats)


def readout(f_tr, y_tr, f_te, y_te):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(f_tr, y_tr)
    return float(clf.score(f_tr, y_tr)), float(clf.score(f_te, y_te))


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--wta-digits", type=int, default=800,
                   help="digits shown to the competitive network (default 800)")
    p.add_argument("--wta-brian2", type=int, default=20,
                   help="how many of them also run in Brian2 (default 20)")
    args = p.parse_args(argv)
    C.setup_torch(args.threads)
    out = C.out_dir(__file__, args)
    import matplotlib.pyplot as plt
    import numpy as np

    import spikedsl
    from spikedsl.runtime.data import load_dataset

    global model_input
    prog = spikedsl.load(SPEC)
    net = prog.network("LSM").ir
    frozen = prog.network("LSMFrozen")
    data = load_dataset("digits", {}, str(HERE), args.seed)
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
    n_stdp = 1 if args.smoke else (500 if args.full else 100)
    if args.smoke:
        x_tr, y_tr, x_te, y_te = x_tr[:150], y_tr[:150], x_te[:60], y_te[:60]

    # initial weights: the torch target's initialisation of the frozen twin (same names);
    # brian2's default would build the torch target of the plastic network, which refuses
    m0 = frozen.to_torch(seed=args.seed)
    w_init = {k: np.asarray(v, dtype=np.float64) for k, v in m0.export_weights().items()}
    model_input = frozen.ir.inputs[0]

    print(f"== STDP: {n_stdp} digits x {net.steps} ms in torch and in Brian2")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data.x_train))[:n_stdp]
    st = stdp_phase(prog.network("LSM"), w_init, data.x_train[order], seed=1000, log=print)
    print(f"  torch {st['seconds_torch']:.0f} s, Brian2 {st['seconds_brian2']:.0f} s; "
          f"max |w_torch - w_brian2| over all steps {st['max_abs_diff']:.2e}; "
          f"identical spikes: {st['spikes_equal']}")

    print("== readout: logistic regression on spike counts")
    res_ro = {}
    for label, w in (("initial", w_init), ("after STDP", dict(w_init, **{PLASTIC:
                                                                         st["w_torch"]}))):
        m = frozen.to_torch(weights=w)
        m.eval()
        c = C.Clock()
        f_tr, in_tr = features(m, x_tr, frozen.ir.steps, seed=1)
        f_te, in_te = features(m, x_te, frozen.ir.steps, seed=2)
        acc_tr, acc_te = readout(f_tr, y_tr, f_te, y_te)
        res_ro[label] = {"train_accuracy": acc_tr, "test_accuracy": acc_te,
                         "reservoir_rate_hz": 1000 * float(f_tr[:, :160].mean()) / frozen.ir.steps,
                         "inhib_rate_hz": 1000 * float(f_tr[:, 160:].mean()) / frozen.ir.steps,
                         "seconds": round(c.elapsed(), 1)}
        print(f"  {label:10s} input weights: test accuracy {100 * acc_te:.1f} % (train "
              f"{100 * acc_tr:.1f} %), rates E {res_ro[label]['reservoir_rate_hz']:.1f} Hz, "
              f"I {res_ro[label]['inhib_rate_hz']:.1f} Hz")
    _base_tr, base_te = readout(in_tr, y_tr, in_te, y_te)
    print(f"  baseline (input spike counts, no liquid): test accuracy {100 * base_te:.1f} %")

    # ---------------------------------------- STDP with competition (Diehl & Cook)
    wta, wta_frozen = prog.network("WTA"), prog.network("WTAFrozen")
    n_wta = 10 if args.smoke else (1500 if args.full else args.wta_digits)
    n_b2 = 2 if args.smoke else min(args.wta_brian2, n_wta)
    m0 = wta_frozen.to_torch(seed=args.seed)
    wta_init = {k: np.asarray(v, dtype=np.float64) for k, v in m0.export_weights().items()}
    print(f"== STDP with lateral inhibition and homeostatic thresholds: {n_wta} digits in "
          f"torch, the first {n_b2} also in Brian2")
    order = rng.permutation(len(data.x_train))
    order = np.resize(order, n_wta)  # more digits than the training set: a second pass
    wt = wta_phase(wta, wta_init, data.x_train[order], n_b2, seed=5000, log=print)
    print(f"  torch {wt['seconds_torch']:.0f} s, Brian2 {wt['seconds_brian2']:.0f} s; max "
          f"|w_torch - w_brian2| over the first {n_b2} digits {wt['max_abs_diff']:.2e}, "
          f"theta {wt['max_abs_diff_theta']:.2e}; identical spikes: {wt['spikes_equal']}")
    res_wta = {}
    for label, w in (("initial", wta_init), ("after STDP", wt["weights"])):
        m = wta_frozen.to_torch(weights=w)
        m.eval()
        m.ir_input, m.ir_steps = wta_frozen.ir.inputs[0], wta_frozen.ir.steps
        f_tr = wta_features(m, x_tr, seed=1)
        f_te = wta_features(m, x_te, seed=2)
        acc_tr, acc_te = readout(f_tr, y_tr, f_te, y_te)
        res_wta[label] = {"train_accuracy": acc_tr, "test_accuracy": acc_te,
                          "spikes_per_digit": float(f_tr.sum(1).mean()),
                          "active_neurons": int((f_tr.sum(0) > 0).sum())}
        print(f"  {label:10s} weights: test accuracy {100 * acc_te:.1f} % (train "
              f"{100 * acc_tr:.1f} %), {res_wta[label]['spikes_per_digit']:.1f} spikes per "
              f"digit, {res_wta[label]['active_neurons']} of {f_tr.shape[1]} neurons active")

    # ---------------------------------------------------------------- figures
    w0 = w_init[PLASTIC].ravel()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    bins = np.linspace(0, 1, 41)
    axes[0].hist(w0, bins, alpha=0.5, label="initial")
    axes[0].hist(st["w_torch"].ravel(), bins, histtype="step", lw=2, label="after STDP, torch")
    axes[0].hist(st["w_brian2"].ravel(), bins, histtype="step", lw=1, ls="--", color="k",
                 label="after STDP, Brian2")
    axes[0].set_xlabel("input weight x -> reservoir")
    axes[0].set_ylabel("synapses")
    axes[0].set_title(f"weight distribution ({n_stdp} digits of STDP)", fontsize=9)
    axes[0].legend(fontsize=7)
    t = np.arange(1, len(st["traj_torch"]) + 1)
    for i in range(st["traj_torch"].shape[1]):
        axes[1].plot(t, st["traj_torch"][:, i], lw=1.2, color=f"C{i}")
        axes[1].plot(t[::200], st["traj_brian2"][::200, i], "o", ms=3, mfc="none", color="k")
    axes[1].set_xlabel("time (ms)")
    axes[1].set_ylabel("w")
    axes[1].set_title("5 synapses: torch (lines), Brian2 (dots); max diff "
                      f"{st['max_abs_diff']:.1e}", fontsize=9)
    _enc, res, inh = st["raster"]
    tt, ii = np.nonzero(res)
    axes[2].plot(tt + 1, ii, "|", ms=3, color="C0")
    tt, ii = np.nonzero(inh)
    axes[2].plot(tt + 1, ii + 160, "|", ms=3, color="C3")
    axes[2].set_xlabel("time (ms)")
    axes[2].set_ylabel("neuron (blue E, red I)")
    axes[2].set_title("reservoir raster, last STDP digit", fontsize=9)
    fig.tight_layout()
    C.save(fig, out / "weights.png")
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    ax.hist(w0, bins, alpha=0.5, label="initial")
    ax.hist(st["w_torch"].ravel(), bins, histtype="step", lw=2, label="STDP, torch")
    ax.hist(st["w_brian2"].ravel(), bins, histtype="step", ls="--", color="k",
            label="STDP, Brian2")
    ax.set_xlabel("input weight")
    ax.set_title(f"LSM readout: {100 * res_ro['after STDP']['test_accuracy']:.1f} % "
                 f"(digits test)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    C.save(fig, out / "weights_small.png", dpi=70)

    results = {
        "example": "lsm_stdp", "mode": C.mode(args), "n_stdp_digits": n_stdp,
        "n_train": len(x_tr), "n_test": len(x_te),
        "torch_vs_brian2": {"max_abs_weight_difference": st["max_abs_diff"],
                            "identical_spikes": st["spikes_equal"],
                            "seconds_torch": round(st["seconds_torch"], 1),
                            "seconds_brian2": round(st["seconds_brian2"], 1)},
        "stdp_mean_rate_hz": st["mean_rate_hz"],
        "weights": {"initial_mean": float(w0.mean()), "after_mean": float(st["w_torch"].mean()),
                    "initial_std": float(w0.std()), "after_std": float(st["w_torch"].std()),
                    "after_at_0": float((st["w_torch"] <= 1e-9).mean()),
                    "after_at_wmax": float((st["w_torch"] >= 1 - 1e-9).mean())},
        "readout": {"test_accuracy": res_ro["after STDP"]["test_accuracy"], **{
            k: v for k, v in res_ro.items()}, "input_counts_baseline_test_accuracy": base_te},
    }
    results["competitive"] = {
        "n_stdp_digits": n_wta, "spikes_per_digit_stdp": wt["spikes_per_digit"],
        "torch_vs_brian2": {"digits": n_b2, "max_abs_weight_difference": wt["max_abs_diff"],
                            "max_abs_theta_difference": wt["max_abs_diff_theta"],
                            "identical_spikes": wt["spikes_equal"],
                            "seconds_torch": round(wt["seconds_torch"], 1),
                            "seconds_brian2": round(wt["seconds_brian2"], 1)},
        "theta_mean": float(wt["weights"][WTA_THETA].mean()),
        "readout": res_wta}
    wl = wt["weights"][WTA_W]
    fig, axes = plt.subplots(len(wl) // 20, 20, figsize=(10, 0.5 * len(wl) // 20 + 0.4))
    for i, ax in enumerate(axes.ravel()):
        ax.imshow(wl[i].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle(f"input weights of the {len(wl)} excitatory neurons after competitive STDP "
                 f"({n_wta} digits); readout {100 * res_wta['after STDP']['test_accuracy']:.1f}"
                 f" % (untrained {100 * res_wta['initial']['test_accuracy']:.1f} %)", fontsize=8)
    fig.savefig(out / "result.png", dpi=60, bbox_inches="tight")
    print(f"  figure: {out / 'result.png'}")
    C.save(fig, out / "wta_weights.png", dpi=80)
    rows = [["liquid, initial input weights", f"{100 * res_ro['initial']['test_accuracy']:.1f}"],
            [f"liquid, after STDP ({n_stdp} digits)",
             f"{100 * res_ro['after STDP']['test_accuracy']:.1f}"],
            ["input spike counts (no liquid)", f"{100 * base_te:.1f}"],
            ["competitive (WTA), initial input weights",
             f"{100 * res_wta['initial']['test_accuracy']:.1f}"],
            [f"competitive (WTA), after STDP ({n_wta} digits)",
             f"{100 * res_wta['after STDP']['test_accuracy']:.1f}"]]
    print()
    print(C.table(rows, ["readout features", "test accuracy %"]))
    C.write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
