"""The end-to-end demo (``make demo``, ``python -m spikedsl.runtime.pipeline``,
``examples/digits/run.py``):

1. train a 64-128-10 LIF classifier on scikit-learn's digits with the torch
   target (``examples/digits/digits.spk``);
2. export the trained network to NIR (HDF5), when the NIR target is there;
3. simulate the trained network in Brian2 on the test set, when the Brian2
   target and Brian2 are there, and compare its predictions and output
   spikes with torch's;
4. print a table of the figures.

Every step that cannot run (a target not installed) is skipped with a
message, never silently.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEMO_SPEC", "DemoResult", "demo_spec_path", "main", "run_demo"]

_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits.spk"

# The same text as examples/digits/digits.spk (tests keep the two equal), so
# the demo also runs from an installed package without the examples folder.
DEMO_SPEC = """\
# The spikedsl demo: a 64-128-10 LIF classifier for scikit-learn's 8x8 digits.
#
# Trained with surrogate gradients on the torch target (`spikedsl train`),
# exported to NIR and simulated in Brian2 with the trained weights
# (examples/digits/run.py, `make demo`).

# Leaky integrate-and-fire neuron with a physical time constant (NIR `LIF`):
#   tau_mem dv/dt = (v_leak - v) + r * I,  spike v >= v_th,  reset v = v_reset
# The ODE is linear, so `exact` gives v' = v_inf + (v - v_inf) exp(-dt / tau_mem).
neuron LIF {
    param tau_mem = 10 ms
    param v_leak  = 0.0
    param v_th    = 1.0
    param v_reset = 0.0
    param r       = 10.0  # input gain: v_inf = r * I
    state v = 0.0
    input I
    dv/dt = (v_leak - v + r * I) / tau_mem method exact
    spike v >= v_th
    reset v = v_reset
    surrogate fast_sigmoid(slope = 25)
}

network DigitsSNN {
    dt    = 1 ms
    steps = 16
    input  x[64] : direct  # pixel intensity in [0, 1] as current
    layer  h[128] = LIF() <- dense(x)
    layer  y[10]  = LIF() <- dense(h)
    output y               # spikes [T, B, 10]; class = most spikes
}

train digits {
    network   = DigitsSNN
    data      = digits   # 1437 train / 360 test, stratified
    loss      = ce_rate  # cross-entropy on spike counts
    optimizer = adam(lr = 2e-3)
    schedule  = cosine
    batch     = 64
    epochs    = 12
    seed      = 0
    metrics   = [accuracy, rate]
}
"""


def demo_spec_path(out_dir: str | os.PathLike | None = None) -> Path:
    """``examples/digits/digits.spk`` in a source checkout, else a copy of
    :data:`DEMO_SPEC` written to ``out_dir``."""
    if _EXAMPLE.is_file():
        return _EXAMPLE
    out = Path(out_dir or ".")
    out.mkdir(parents=True, exist_ok=True)
    p = out / "digits.spk"
    p.write_text(DEMO_SPEC, encoding="utf-8")
    return p


@dataclass
class DemoResult:
    """The figures of one demo run (``None`` where a step was skipped)."""

    spec: Path
    out_dir: Path
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    epochs: int = 0
    seconds_per_epoch: float | None = None
    train_seconds: float | None = None
    nir_file: Path | None = None
    nir_nodes: int | None = None
    nir_seconds: float | None = None
    nir_roundtrip: float | None = None  # re-imported graph: identical output spikes
    brian2_accuracy: float | None = None
    brian2_agreement: float | None = None  # same predicted class as torch
    brian2_spike_agreement: float | None = None  # identical output spikes (elementwise)
    brian2_samples: int = 0
    brian2_seconds: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "done"
    message: str = ""

    def table(self) -> str:
        def pct(v):
            return "-" if v is None else f"{100 * v:.2f}%"

        def sec(v):
            return "-" if v is None else f"{v:.1f} s"

        rows = [("step", "result", "time")]
        rows.append(("train (torch)",
                     (f"test accuracy {pct(self.test_accuracy)}, train "
                      f"{pct(self.train_accuracy)}, {self.epochs} epochs "
                      f"({sec(self.seconds_per_epoch)}/epoch)"), sec(self.train_seconds)))
        if "nir" in self.skipped:
            rows.append(("NIR export", f"skipped: {self.skipped['nir']}", "-"))
        else:
            rt = "" if self.nir_roundtrip is None else \
                f", re-imported: same spikes {pct(self.nir_roundtrip)}"
            rows.append(("NIR export", f"{self.nir_file} ({self.nir_nodes} nodes){rt}",
                         sec(self.nir_seconds)))
        if "brian2" in self.skipped:
            rows.append(("Brian2", f"skipped: {self.skipped['brian2']}", "-"))
        else:
            rows.append(("Brian2", (f"test accuracy {pct(self.brian2_accuracy)} on "
                                    f"{self.brian2_samples} samples"),
                         sec(self.brian2_seconds)))
            rows.append(("Brian2 vs torch", (f"same class {pct(self.brian2_agreement)}, "
                                             "same output spikes "
                                             f"{pct(self.brian2_spike_agreement)}"), ""))
        rows.append(("total", self.status, sec(self.seconds)))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        line = f"+-{'-' * w0}-+-{'-' * w1}-+-{'-' * 8}-+"
        out = [line]
        for i, (a, b, c) in enumerate(rows):
            out.append(f"| {a:<{w0}} | {b:<{w1}} | {c:>8} |")
            if i == 0:
                out.append(line)
        out.append(line)
        return "\n".join(out)


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _unavailable(on: bool, title: str, name: str, missing: str) -> str | None:
    """Why a stage of the demo is skipped (None: it runs): switched off, the
    target ``spikedsl.targets.<name>`` or the package ``name`` missing."""
    if not on:
        return "switched off"
    if not _have(f"spikedsl.targets.{name}"):
        return f"the {title} target (spikedsl.targets.{name}) is not installed"
    if not _have(name):
        return missing
    return None


def run_demo(out_dir: str | os.PathLike = "out/demo", epochs: int | None = None, *,
             spec: str | os.PathLike | None = None, train_name: str = "digits",
             nir: bool = True, brian2: bool = True, brian2_limit: int | None = None,
             brian2_device: str = "runtime", threads: int | None = 1,
             progress: bool = True, log=print) -> DemoResult:
    """Train, export to NIR, simulate in Brian2, compare; returns the figures.

    ``threads`` limits torch's CPU threads during the run (1 is fastest for a
    network this small and is unaffected by other load; None keeps torch's
    setting).  ``brian2_limit`` simulates only the first N test samples."""
    t_all = time.perf_counter()
    import numpy as np
    import torch

    import spikedsl
    from spikedsl.runtime.data import load_dataset
    from spikedsl.runtime.train import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = Path(spec) if spec is not None else demo_spec_path(out)
    res = DemoResult(spec=spec_path, out_dir=out)
    prog = spikedsl.load(spec_path)

    # ------------------------------------------------------------------ 1. train
    log(f"[1/4] training '{train_name}' from {spec_path} on the torch target")
    t0 = time.perf_counter()
    tr = train(prog, train_name, run_dir=out / "run", epochs=epochs, progress=progress,
               threads=threads, log=lambda m: log("      " + m))
    res.train_seconds = time.perf_counter() - t0
    res.epochs = tr.epochs_done
    if tr.history:
        res.train_accuracy = tr.final.get("train_accuracy")
        res.test_accuracy = tr.final.get("test_accuracy")
        res.seconds_per_epoch = sum(r["seconds"] for r in tr.history) / len(tr.history)
    if not tr.ok:
        res.status, res.message = tr.status, tr.message
        res.seconds = time.perf_counter() - t_all
        log(tr.message)
        return res
    log(f"      weights: {tr.weights}")
    net = prog.network(tr.network).ir
    cfg = tr.config
    with np.load(tr.weights) as z:
        weights = {k: z[k] for k in z.files}

    # torch's view of the test set: encoded inputs and output spikes
    data = load_dataset(cfg.data, cfg.data_args, cfg.base_dir, cfg.seed)
    model = tr.model
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(data.x_test).to(next(model.parameters()).dtype)
        enc = model.encode(xt) if hasattr(model, "encode") else xt
        torch_out = model(enc)
    out_name = next(o.name for o in net.outputs)
    torch_y = torch_out[out_name].detach().cpu().numpy()
    torch_pred = torch_y.sum(0).reshape(torch_y.shape[1], -1).argmax(1)
    enc_np = enc.detach().cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ 2. NIR
    log("[2/4] exporting the trained network to NIR")
    why = _unavailable(nir, "NIR", "nir", "the 'nir' package is not installed (pip install nir)")
    if why:
        res.skipped["nir"] = why
    else:
        from spikedsl.targets import nir as nir_target

        t0 = time.perf_counter()
        try:
            path = out / "digits.nir"
            notes = nir_target.write(net, path, weights=weights)
            import nir as nir_pkg

            g = nir_pkg.read(path)
            res.nir_file, res.nir_nodes = path, len(g.nodes)
            res.nir_seconds = time.perf_counter() - t0
            log(f"      {path}: {len(g.nodes)} nodes ({', '.join(sorted(g.nodes))})")
            for n_ in notes:
                log(f"      note: {n_}")
        except Exception as e:
            res.skipped["nir"] = f"export failed: {str(e).splitlines()[0]}"
        if "nir" not in res.skipped and _have("spikedsl.targets.nir.importer"):
            # round trip: import the graph back into .spk and run it on torch
            try:
                from spikedsl.targets.nir.importer import load_nir

                back = load_nir(res.nir_file, out_dir=str(out / "from_nir"), name="FromNIR")
                m2 = back.network("FromNIR").to_torch(dtype=xt.dtype)
                m2.eval()
                with torch.no_grad():
                    o2 = m2(enc)
                y2 = o2.get(out_name, next(iter(o2.values())))
                y2 = y2.detach().cpu().numpy().reshape(torch_y.shape)
                res.nir_roundtrip = float((y2 == torch_y).mean())
                log(f"      round trip: {out / 'from_nir' / 'FromNIR.spk'} (imported back) "
                    f"gives identical output spikes for {100 * res.nir_roundtrip:.3f}%")
            except Exception as e:
                log(f"      round trip not checked: {str(e).splitlines()[0]}")
    if "nir" in res.skipped:
        log(f"      skipped: {res.skipped['nir']}")

    # ------------------------------------------------------------------ 3. Brian2
    log("[3/4] simulating the trained network in Brian2")
    why = _unavailable(brian2, "Brian2", "brian2", "Brian2 is not installed (pip install brian2)")
    if why:
        res.skipped["brian2"] = why
    else:
        from spikedsl.targets import brian2 as b2_target

        n = len(data.x_test) if brian2_limit is None else min(brian2_limit, len(data.x_test))
        t0 = time.perf_counter()
        try:
            sim = b2_target.simulate(net, {net.inputs[0].name: enc_np[:, :n]},
                                     weights=weights, device=brian2_device)
            res.brian2_seconds = time.perf_counter() - t0
            b2_y = np.asarray(sim[out_name])
            b2_pred = b2_y.sum(0).reshape(b2_y.shape[1], -1).argmax(1)
            y_true = data.y_test[:n]
            res.brian2_samples = n
            res.brian2_accuracy = float((b2_pred == y_true).mean())
            res.brian2_agreement = float((b2_pred == torch_pred[:n]).mean())
            res.brian2_spike_agreement = float((b2_y == torch_y[:, :n]).mean())
            log(f"      {n} test samples in {res.brian2_seconds:.1f} s: accuracy "
                f"{100 * res.brian2_accuracy:.2f}% (torch on the same samples "
                f"{100 * float((torch_pred[:n] == y_true).mean()):.2f}%), same class as "
                f"torch for {100 * res.brian2_agreement:.2f}%, identical output spikes "
                f"{100 * res.brian2_spike_agreement:.3f}%")
        except Exception as e:
            res.skipped["brian2"] = f"simulation failed: {str(e).splitlines()[0]}"
    if "brian2" in res.skipped:
        log(f"      skipped: {res.skipped['brian2']}")

    # ------------------------------------------------------------------ 4. table
    res.seconds = time.perf_counter() - t_all
    log("[4/4] summary")
    log(res.table())
    return res


def main(argv: list[str] | None = None, *, spec: str | os.PathLike | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spikedsl.runtime.pipeline",
                                description="Train on digits, export NIR, simulate in Brian2.")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--spec", default=spec, help="spec file (default: examples/digits/digits.spk)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--no-nir", action="store_true", help="skip the NIR export")
    p.add_argument("--no-brian2", action="store_true", help="skip the Brian2 simulation")
    p.add_argument("--brian2-limit", type=int, metavar="N",
                   help="simulate only the first N test samples in Brian2")
    p.add_argument("--brian2-device", default="runtime",
                   help="Brian2 device: runtime, numpy, cython, cpp_standalone")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    from spikedsl.errors import SpecError, exit_code
    from spikedsl.runtime.data import DataError

    try:
        res = run_demo(a.out, a.epochs, spec=a.spec, nir=not a.no_nir,
                       brian2=not a.no_brian2, brian2_limit=a.brian2_limit,
                       brian2_device=a.brian2_device, threads=a.threads,
                       progress=not a.no_progress)
    except (SpecError, DataError, KeyboardInterrupt) as e:
        if isinstance(e, SpecError):
            print(e.render(), file=sys.stderr)
        elif isinstance(e, DataError):
            print(f"demo: data error: {e}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return exit_code(e)
    return 0 if res.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
