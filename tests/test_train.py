"""Training runs: config resolution, checkpoints, resume, NaN stop, Ctrl-C,
metrics files, the CLI, and (with the torch target) digits accuracy."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spikedsl
from spikedsl.errors import SpecError
from spikedsl.runtime import train as T

ROOT = Path(__file__).resolve().parents[1]
HAVE_TORCH_TARGET = importlib.util.find_spec("spikedsl.targets.torch") is not None
PY = sys.executable


# ---------------------------------------------------------------------------
# A tiny stand-in for the torch target (dense feed-forward networks, one
# leaky neuron v = 0.9 v + I, threshold 1, reset to 0): the training
# machinery is tested against it so these tests do not depend on the
# generated code.  It follows the target's interface: encode(x) -> [T, B, ...],
# forward -> dict of outputs, clamp_parameters(), export_weights().
# ---------------------------------------------------------------------------
class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + 25 * x.abs()) ** 2


class StandIn(nn.Module):
    def __init__(self, net, *, dtype=torch.float32, device="cpu", compile=False, seed=0,
                 fast=True, weights=None):
        super().__init__()
        self.net = net
        g = torch.Generator().manual_seed(seed)
        self.order = []
        for la in net.layers:
            if la.kind == "neuron":
                p = la.projections[0]
                lin = nn.Linear(int(np.prod(p.in_shape)), int(np.prod(p.out_shape)),
                                bias=p.bias)
                with torch.no_grad():
                    bound = 1.0 / np.sqrt(lin.in_features)
                    lin.weight.uniform_(-bound, bound, generator=g)
                    lin.weight.mul_(3.0)
                    if lin.bias is not None:
                        lin.bias.zero_()
                setattr(self, la.name, lin)
                self.order.append((la.name, p.source))
        self.to(device=device, dtype=dtype)
        self._generators = {}  # seeded Poisson encoders, made on first use (as the target)
        self.clamped = 0

    def encode(self, x):
        inp = self.net.inputs[0]
        T_ = self.net.steps
        if inp.encoder == "poisson":
            p = (x * inp.encoder_args.get("max_rate", 1.0)).clamp(0, 1)
            p = p.unsqueeze(0).expand(T_, *p.shape).contiguous()
            if inp.name not in self._generators:
                self._generators[inp.name] = torch.Generator().manual_seed(7)
            return torch.bernoulli(p, generator=self._generators[inp.name]).to(x.dtype)
        return x.unsqueeze(0).expand(T_, *x.shape).contiguous()

    def forward(self, x):
        if x.dim() == len(self.net.inputs[0].shape) + 1:
            x = self.encode(x)
        rec = {self.net.inputs[0].name: {"z": list(x.unbind(0))}}
        T_, B = x.shape[0], x.shape[1]
        for name, src in self.order:
            lin = getattr(self, name)
            v = torch.zeros(B, lin.out_features, dtype=x.dtype, device=x.device)
            zs, vs, vps = [], [], []
            for t in range(T_):
                v = 0.9 * v + lin(rec[src]["z"][t].flatten(1))
                z = _Spike.apply(v - 1.0)
                vps.append(v)
                v = v - z * v
                zs.append(z)
                vs.append(v)
            rec[name] = {"z": zs, "v": vs, "v_pre": vps}
        out = {}
        for o in self.net.outputs:
            key = "z" if o.state is None else ("v_pre" if o.pre_reset else o.state)
            tr = torch.stack(rec[o.layer][key])
            tr = {"none": tr, "sum": tr.sum(0), "mean": tr.mean(0), "last": tr[-1]}[o.reduce]
            out[o.name] = tr
        return out

    def clamp_parameters(self):
        self.clamped += 1

    def export_weights(self):
        return {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}


def standin(net, **kw):
    return StandIn(net, **kw)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: one thread is fastest and immune to other load on the machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


SPEC = """
neuron N {
    param v_th = 1.0
    state v = 0.0
    input I
    update v = 0.9 * v + I
    spike v >= v_th
    reset v = 0
}
network Net {
    steps = 8
    input x[64] : poisson(max_rate = 1.0)
    layer h[32] = N() <- dense(x)
    layer y[10] = N() <- dense(h)
    output y
    output y.v_pre
}
network AE {
    steps = 6
    input x[64] : poisson(max_rate = 1.0)
    layer h[16] = N() <- dense(x)
    layer y[64] = N() <- dense(h)
    output y.v_pre
    output y
}
train small {
    network   = Net
    data      = digits(n_train = 200, n_test = 100)
    loss      = mse_rate(on = 1.0, off = 0.0)
    optimizer = adam(lr = 2e-3)
    schedule  = cosine
    batch     = 32
    epochs    = 4
    seed      = 3
    metrics   = [accuracy, mse, rate]
    grad_clip = 5.0
}
train ce {
    network   = Net
    data      = digits(n_train = 120, n_test = 60)
    loss      = ce_rate
    optimizer = sgd(lr = 0.05, momentum = 0.9)
    schedule  = step(size = 1, gamma = 0.5)
    batch     = 40
    epochs    = 2
}
train membrane {
    network   = Net
    data      = digits(n_train = 120, n_test = 60)
    loss      = ce_membrane(reduce = max)
    readout   = y.v_pre
    optimizer = adamw(lr = 1e-3)
    batch     = 40
    epochs    = 1
}
train ae {
    network   = AE
    data      = digits(n_train = 100, n_test = 40)
    loss      = masked_membrane(target = x)
    optimizer = adam(lr = 5e-4, weight_decay = 1e-4)
    batch     = 25
    epochs    = 2
    metrics   = [mse, spike_mse]
}
"""


@pytest.fixture()
def spec(tmp_path):
    p = tmp_path / "small.spk"
    p.write_text(SPEC)
    return p


def _run(spec, name, tmp_path, run="r", **kw):
    kw.setdefault("progress", False)
    kw.setdefault("build", standin)
    return T.train(spec, name, run_dir=tmp_path / run, **kw)


def _weights(path):
    with np.load(path) as z:
        return {k: z[k].copy() for k in z.files}


# ------------------------------------------------------------------ config
def test_resolve_config_fills_defaults(spec):
    prog = spikedsl.load(spec)
    cfg = T.resolve_config(prog, "small")
    assert cfg.network == "Net" and cfg.data == "digits"
    assert cfg.data_args == {"n_train": 200.0, "n_test": 100.0}
    assert cfg.loss == "mse_rate" and cfg.loss_args == {"on": 1.0, "off": 0.0}
    assert cfg.optimizer_args["lr"] == 2e-3 and cfg.optimizer_args["weight_decay"] == 0.0
    assert cfg.schedule == "cosine" and cfg.batch == 32 and cfg.epochs == 4 and cfg.seed == 3
    assert cfg.metrics == ["accuracy", "mse", "rate"] and cfg.grad_clip == 5.0
    ce = T.resolve_config(prog, "ce")
    assert ce.optimizer_args["momentum"] == 0.9 and ce.schedule_args == {"size": 1, "gamma": 0.5}
    with pytest.raises(ValueError, match="train blocks"):
        T.resolve_config(prog)


def _with_setting(block: str, setting: str) -> str:
    """SPEC with ``setting`` (``a = 1; b = 2``) put into train ``block``, replacing
    the same keys."""
    keys = {part.split("=")[0].strip() for part in setting.split(";")}
    out, inside = [], False
    for line in SPEC.splitlines():
        if line.startswith(f"train {block} "):
            inside = True
        elif inside and line.strip() == "}":
            out.append(f"    {setting}")
            inside = False
        elif inside and line.split("=")[0].strip() in keys:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("bad, code, text", [
    ("loss = mse_rate(on = 1.0, bogus = 2)", "unknown-argument", "bogus"),
    ("optimizer = adam(lr = -1)", "bad-setting", "lr"),
    ("batch = 0", "bad-setting", "batch"),
    ("epochs = 1.5", "bad-setting", "epochs"),
    ("schedule = step(gamma = 0.5)", "missing-argument", "size"),
    ("loss = ce_membrane(reduce = median)", "bad-setting", "reduce"),
    ("dtype = float8", "bad-setting", "dtype"),
    ("loss = mse_membrane; readout = y", "bad-setting", "membrane readout"),
    ("metrics = [spike_mse]", "bad-setting", "spike_mse"),
    ("loss = masked_membrane(target = x)", "bad-setting", "masked_membrane"),
])
def test_bad_settings_are_spec_errors(tmp_path, bad, code, text):
    p = tmp_path / "bad.spk"
    p.write_text(_with_setting("ce", bad))
    with pytest.raises(SpecError) as ei:
        T.train(p, "ce", run_dir=tmp_path / "r", progress=False, build=standin)
    assert code in ei.value.codes, str(ei.value)
    assert text in str(ei.value)
    assert "bad.spk:" in str(ei.value)  # file:line:col


def test_readout_must_be_an_output(tmp_path):
    p = tmp_path / "r.spk"
    p.write_text(SPEC.replace("readout   = y.v_pre", "readout   = h.v"))
    with pytest.raises(SpecError, match="not an output"):
        _run(p, "membrane", tmp_path)


def test_input_shape_must_match_data(tmp_path):
    p = tmp_path / "s.spk"
    p.write_text(SPEC.replace("data      = digits(n_train = 120, n_test = 60)\n    loss      = ce_rate",
                              "data      = digits(shape = image)\n    loss      = ce_rate"))
    with pytest.raises(SpecError) as ei:
        _run(p, "ce", tmp_path)
    msg = str(ei.value)
    assert "shape mismatch" in msg and "[64]" in msg and "[1, 8, 8]" in msg
    assert "shape = flat" in msg  # the hint


def test_missing_data_is_a_data_error(tmp_path):
    p = tmp_path / "m.spk"
    p.write_text(SPEC.replace("data      = digits(n_train = 120, n_test = 60)",
                              'data      = mnist("nowhere")'))
    with pytest.raises(T.DataError, match="IDX files not found"):
        _run(p, "ce", tmp_path)


# ------------------------------------------------------------------ running
def test_run_writes_metrics_plot_weights_checkpoint(spec, tmp_path):
    res = _run(spec, "small", tmp_path)
    assert res.ok and res.epochs_done == 4 and len(res.history) == 4
    rd = tmp_path / "r"
    for f in ("checkpoint.pt", "weights.npz", "metrics.csv", "metrics.png"):
        assert (rd / f).is_file() and (rd / f).stat().st_size > 0, f
    assert not [p for p in rd.iterdir() if ".tmp" in p.name]
    with open(rd / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "test_mse",
              "test_rate", "lr", "seconds"):
        assert k in rows[0] and np.isfinite(float(rows[-1][k])), k
    assert float(rows[0]["lr"]) == pytest.approx(2e-3)
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine
    assert (rd / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = T.load_checkpoint(rd / "checkpoint.pt")
    for k in ("model", "optimizer", "scheduler", "epoch", "rng", "history", "spec", "network"):
        assert k in ck, k
    assert ck["epoch"] == 4 and ck["network"] == "Net" and ck["train"] == "small"
    assert set(ck["rng"]) >= {"torch", "numpy", "python", "module"}
    assert "_generators[x]" in ck["rng"]["module"]  # the Poisson encoder's generator
    assert Path(ck["spec"]) == spec.resolve()
    assert "h.weight" in ck["model"] and "y.weight" in ck["model"]
    w = _weights(rd / "weights.npz")
    assert np.array_equal(w["h.weight"], ck["model"]["h.weight"].numpy())
    assert np.array_equal(T.checkpoint_weights(rd / "checkpoint.pt")["y.weight"], w["y.weight"])
    assert res.model.clamped == 4 * 7  # clamp_parameters after every step (200/32 -> 7)


def test_seeded_runs_are_reproducible(spec, tmp_path):
    a = _run(spec, "small", tmp_path, "a", epochs=2)
    b = _run(spec, "small", tmp_path, "b", epochs=2)
    wa, wb = _weights(tmp_path / "a/weights.npz"), _weights(tmp_path / "b/weights.npz")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_seed_override_changes_the_run(spec, tmp_path):
    base = _run(spec, "small", tmp_path, "a", epochs=1)
    _run(spec, "small", tmp_path, "b", epochs=1, seed=base.config.seed)
    other = _run(spec, "small", tmp_path, "c", epochs=1, seed=base.config.seed + 1)
    assert other.config.seed == base.config.seed + 1
    w = {r: _weights(tmp_path / r / "weights.npz") for r in "abc"}
    assert all(np.array_equal(w["a"][k], w["b"][k]) for k in w["a"])
    assert not all(np.array_equal(w["a"][k], w["c"][k]) for k in w["a"])
    with pytest.raises(ValueError, match="seed must be >= 0"):
        _run(spec, "small", tmp_path, "d", epochs=1, seed=-1)


def _interrupt_at(epoch, batch):
    def cb(info):
        if info["epoch"] == epoch and info["batch"] == batch:
            os.kill(os.getpid(), signal.SIGINT)
    return cb


@pytest.mark.parametrize("epoch, batch", [(1, 2), (1, 6)])  # mid-epoch and end of epoch
def test_interrupted_and_resumed_run_is_bit_identical(spec, tmp_path, epoch, batch):
    full = _run(spec, "small", tmp_path, "full")
    part = _run(spec, "small", tmp_path, "part", callback=_interrupt_at(epoch, batch))
    assert part.status == "interrupted" and "--resume" in part.message
    assert part.epochs_done < 4
    ck = T.load_checkpoint(tmp_path / "part/checkpoint.pt")
    assert (ck["epoch"], ck["batch"]) == ((1, 3) if batch == 2 else (2, 0))
    done = _run(spec, "small", tmp_path, "part", resume=True)
    assert done.ok and done.epochs_done == 4
    wf, wr = _weights(tmp_path / "full/weights.npz"), _weights(tmp_path / "part/weights.npz")
    assert wf.keys() == wr.keys()
    for k in wf:
        assert np.array_equal(wf[k], wr[k]), k
    fa = T.load_checkpoint(tmp_path / "full/checkpoint.pt")
    fb = T.load_checkpoint(tmp_path / "part/checkpoint.pt")
    for k in fa["model"]:
        assert torch.equal(fa["model"][k], fb["model"][k])
    drop = ("seconds",)
    strip = [{k: v for k, v in r.items() if k not in drop} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k not in drop} for r in done.history]


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_resume_is_bit_identical_with_the_torch_target(spec, tmp_path):
    """The generated module (seeded Poisson encoder made on first use, fast scan)."""
    kw = {"build": None, "epochs": 3, "limit": 96}
    full = _run(spec, "small", tmp_path, "full", **kw)
    part = _run(spec, "small", tmp_path, "part", callback=_interrupt_at(1, 1), **kw)
    assert part.status == "interrupted"
    done = _run(spec, "small", tmp_path, "part", resume=True, **kw)
    assert full.ok and done.ok
    wf, wr = _weights(tmp_path / "full/weights.npz"), _weights(tmp_path / "part/weights.npz")
    assert wf.keys() == wr.keys() and "h.weight" in wf
    for k in wf:
        assert np.array_equal(wf[k], wr[k]), k
    assert [r["test_loss"] for r in full.history] == [r["test_loss"] for r in done.history]


def test_resume_with_more_epochs_and_nothing_to_do(spec, tmp_path):
    _run(spec, "ce", tmp_path)
    again = _run(spec, "ce", tmp_path, resume=True)
    assert again.ok and "nothing to do" in again.message and again.epochs_done == 2
    more = _run(spec, "ce", tmp_path, resume=True, epochs=3)
    assert more.ok and more.epochs_done == 3
    with open(tmp_path / "r/metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_resume_without_checkpoint_is_an_error(spec, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(spec, "ce", tmp_path, resume=True)


def test_nan_stops_with_message_and_keeps_checkpoint(spec, tmp_path):
    def poison(info):
        if info["epoch"] == 2 and info["batch"] == 1:
            with torch.no_grad():
                info["model"].h.weight.fill_(float("nan"))

    res = _run(spec, "small", tmp_path, callback=poison)
    assert res.status == "nan" and res.epochs_done == 2
    assert ("training stopped" in res.message and "NaN" in res.message) or "nan" in res.message
    assert "epoch 3" in res.message and "after epoch 2" in res.message
    ck = T.load_checkpoint(tmp_path / "r/checkpoint.pt")
    assert ck["epoch"] == 2 and torch.isfinite(ck["model"]["h.weight"]).all()
    # the run can go on from the last good checkpoint
    assert _run(spec, "small", tmp_path, resume=True).ok


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    T.atomic_save({"a": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken(obj, fh):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        T.atomic_save({"a": torch.zeros(3)}, path, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    with pytest.raises(OSError):
        T.atomic_save({"a": 1}, tmp_path / "fresh.pt", broken)
    assert not (tmp_path / "fresh.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_checkpoint_failure_keeps_previous_checkpoint(spec, tmp_path, monkeypatch):
    real = torch.save
    calls = {"n": 0}

    def flaky(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's checkpoint
            f.write(b"xx")
            raise OSError("no space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", flaky)
    with pytest.raises(OSError, match="no space"):
        _run(spec, "ce", tmp_path)
    monkeypatch.setattr(torch, "save", real)
    ck = T.load_checkpoint(tmp_path / "r/checkpoint.pt")
    assert ck["epoch"] == 1
    assert not [p for p in (tmp_path / "r").iterdir() if ".tmp" in p.name]


def test_membrane_and_autoencoder_losses_run(spec, tmp_path):
    m = _run(spec, "membrane", tmp_path, "m")
    assert m.ok and np.isfinite(m.final["train_loss"])
    ae = _run(spec, "ae", tmp_path, "ae")
    assert ae.ok
    for k in ("train_loss", "test_mse", "test_spike_mse"):
        assert np.isfinite(ae.final[k]), k
    assert ae.history[-1]["train_loss"] < ae.history[0]["train_loss"] * 1.5


def test_limit_and_overrides(spec, tmp_path):
    res = _run(spec, "small", tmp_path, epochs=1, limit=40, dtype="float64")
    assert res.ok and res.epochs_done == 1 and res.config.dtype == "float64"
    assert next(res.model.parameters()).dtype == torch.float64


# ------------------------------------------------------------------ CLI
def _cli(*args, cwd):
    """``spikedsl ARGS`` in this process (the Ctrl-C test below uses a real one)."""
    from spikedsl import cli

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(old)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_cli_usage_and_spec_errors(tmp_path):
    r = _cli("train", str(tmp_path / "missing.spk"), cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr
    bad = tmp_path / "bad.spk"
    bad.write_text(SPEC.replace("batch     = 40\n    epochs    = 2", "batch     = 0\n    epochs    = 2"))
    r = _cli("train", str(bad), "--train", "ce", cwd=tmp_path)
    assert r.returncode == 1 and "batch" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", str(bad), "--epochs", "-3", cwd=tmp_path)
    assert r.returncode == 2
    r = _cli("train", str(bad), "--train", "nope", cwd=tmp_path)
    assert r.returncode == 1 and "no train block 'nope'" in r.stderr


def test_cli_data_error(tmp_path):
    p = tmp_path / "m.spk"
    p.write_text(SPEC.replace("data      = digits(n_train = 120, n_test = 60)",
                              'data      = mnist("nowhere")'))
    r = _cli("train", str(p), "--train", "ce", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "IDX files not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_cli_trains_and_resumes(tmp_path):
    p = tmp_path / "s.spk"
    p.write_text(SPEC)
    r = _cli("train", str(p), "--train", "ce", "--run", "cli", "--no-progress", "--limit", "80",
             "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "epoch 2/2" in r.stdout and "test" in r.stdout
    assert (tmp_path / "runs/cli/checkpoint.pt").is_file()
    r = _cli("train", str(p), "--train", "ce", "--run", "cli", "--resume", "--epochs", "3",
             "--no-progress", "--limit", "80", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "epoch 3/3" in r.stdout


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_cli_ctrl_c_saves_checkpoint(tmp_path):
    p = tmp_path / "s.spk"
    p.write_text(SPEC.replace("epochs    = 4", "epochs    = 400"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([PY, "-m", "spikedsl.cli", "train", str(p), "--train", "small",
                             "--no-progress", "--threads", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck = tmp_path / "runs/small/checkpoint.pt"
    t0 = time.time()
    while not ck.exists() and time.time() - t0 < 120:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert T.load_checkpoint(ck)["epoch"] >= 1


# ------------------------------------------------------------------ real target
DIGITS = ROOT / "examples" / "digits" / "digits.spk"

LOSS_SPEC = """neuron DLIF {
    param alpha = 0.1
    param v_th = 1.0
    state v = 0.0
    input I
    update v = (1 - alpha) * v + I
    spike v >= v_th
    reset v = 0
    surrogate sigmoid(slope = 1)
}
neuron LI {
    param beta = 0.9
    state v = 0.0
    input I
    update v = beta * v + I
}
network AE {
    steps = 10
    input x[64] : poisson(max_rate = 1.0)
    layer h[32] = DLIF() <- dense(x)
    layer y[64] = DLIF() <- dense(h)
    output y.v_pre
    output y
}
network Cls {
    steps = 10
    input x[64] : direct
    layer h[64] = DLIF() <- dense(x)
    layer o[10] = LI() <- dense(h)
    output o.v
    output mean(o.v)
}
network Sig {
    steps = 6
    input x[64] : poisson(max_rate = 1.0)
    layer h[32] = DLIF() <- dense(x)
    layer f2[64] = sigmoid(dense(h))
    output last(f2)
}
network Next {
    steps = 4
    input x[1, 28, 28] : spikes
    layer c[4, 28, 28] = DLIF() <- conv2d(x, channels = 4, kernel = 3, padding = 1)
    layer frame = sigmoid(conv2d(c, channels = 1, kernel = 3, padding = 1))
    output last(frame)
}
train ae {
    network = AE
    data = digits(n_train = 300, n_test = 100)
    loss = masked_membrane(target = x)
    optimizer = adam(lr = 5e-3, weight_decay = 1e-4)
    batch = 50
    epochs = 3
    metrics = [mse, spike_mse, rate]
}
train cem {
    network = Cls
    data = digits(n_train = 300, n_test = 100)
    loss = ce_membrane(reduce = max)
    batch = 50
    epochs = 3
}
train msem {
    network = Cls
    data = digits(n_train = 300, n_test = 100)
    loss = mse_membrane(on = 1.0, off = 0.0)
    batch = 50
    epochs = 3
    metrics = [accuracy, mse]
}
train msecls {
    network = Cls
    readout = mean(o.v)
    data = digits(n_train = 300, n_test = 100)
    loss = mse
    batch = 50
    epochs = 3
    metrics = [accuracy, mse]
}
train bce_ae {
    network = Sig
    data = digits(n_train = 300, n_test = 100)
    loss = bce(target = x)
    batch = 50
    epochs = 3
    metrics = [mse]
}
train nextframe {
    network = Next
    data = seqgraph(target = next)
    loss = bce
    batch = 16
    epochs = 2
    metrics = [mse]
}
"""


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
@pytest.mark.parametrize("name, metrics", [
    ("ae", ("mse", "spike_mse", "rate")),        # masked_membrane, poisson input
    ("cem", ("accuracy",)),                      # ce_membrane(max) on an LI readout
    ("msem", ("accuracy", "mse")),               # mse_membrane
    ("msecls", ("accuracy", "mse")),             # mse on a reduced mean(o.v) readout
    ("bce_ae", ("mse",)),                        # bce after a sigmoid layer, target = x
    ("nextframe", ("mse",)),                     # spike data, conv, next-frame bce
])
def test_every_loss_trains_with_the_torch_target(tmp_path, name, metrics):
    p = tmp_path / "losses.spk"
    p.write_text(LOSS_SPEC)
    res = T.train(p, name, run_dir=tmp_path / name, epochs=2, limit=64, progress=False)
    assert res.ok, res.message
    for m in ("loss", *metrics):
        for split in ("train", "test"):
            assert np.isfinite(res.final[f"{split}_{m}"]), (split, m)
    grads = [p.detach() for p in res.model.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_digits_lif_classifier_reaches_90_percent(tmp_path):
    t0 = time.perf_counter()
    res = T.train(DIGITS, run_dir=tmp_path / "digits", progress=False)
    took = time.perf_counter() - t0
    assert res.ok, res.message
    acc = res.final["test_accuracy"]
    print(f"digits: test accuracy {acc:.4f} after {res.epochs_done} epochs in {took:.1f} s")
    assert acc >= 0.90
    assert took < 120


# ------------------------------------------------------------------ demo
def test_demo_spec_is_the_example_file():
    from spikedsl.runtime.pipeline import DEMO_SPEC

    assert DIGITS.read_text(encoding="utf-8") == DEMO_SPEC
    prog = spikedsl.load(DIGITS)
    cfg = T.resolve_config(prog)
    assert cfg.name == "digits" and cfg.network == "DigitsSNN" and cfg.loss == "ce_rate"
    net = prog.network("DigitsSNN").ir
    assert [la.shape for la in net.layers] == [(64,), (128,), (10,)]


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_pipeline_runs_end_to_end(tmp_path):
    from spikedsl.runtime.pipeline import run_demo

    lines = []
    res = run_demo(tmp_path / "demo", epochs=1, brian2_limit=8, progress=False,
                   log=lines.append)
    assert res.status == "done", res.message
    assert res.test_accuracy is not None and res.epochs == 1
    text = "\n".join(lines)
    assert "[4/4] summary" in text and "train (torch)" in text
    for step in ("nir", "brian2"):
        if step not in res.skipped:
            continue
        assert "skipped" in text
    if "brian2" not in res.skipped:
        assert res.brian2_samples == 8 and res.brian2_agreement is not None


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_masked_membrane_reads_the_spikes_the_network_saw(tmp_path):
    """X is the module's own encoding of the batch; without a declared spike
    output the spikes are V_pre >= theta, which gives the same loss."""
    from spikedsl.runtime.data import load_dataset
    from spikedsl.targets.torch import build

    p = tmp_path / "ae.spk"
    p.write_text(LOSS_SPEC.replace("    output y.v_pre\n    output y\n",
                                   "    output y.v_pre\n    output y\n    output y.v\n"))
    prog = spikedsl.load(p)
    cfg = T.resolve_config(prog, "ae")
    net = prog.network("AE").ir
    ds = load_dataset(cfg.data, cfg.data_args, cfg.base_dir, 0)
    task = T._Task(cfg, net, ds, prog, None)
    assert task.readout.name == "y.v_pre" and task.spike_out.name == "y"
    assert task.theta == 1.0
    m = build(net, seed=0)
    x = torch.from_numpy(ds.x_train[:20])
    enc = m.encode(x)
    assert set(torch.unique(enc).tolist()) <= {0.0, 1.0}
    out = m(enc)
    got = task.loss(out, enc, x, None)
    X, S, V = enc, out["y"], out["y.v_pre"]
    mask = (X != S).to(V.dtype)
    want = 0.5 * ((mask * (1.0 * X - V)) ** 2).sum() / 20
    assert torch.allclose(got, want, rtol=1e-6)
    assert torch.equal((V >= 1.0).to(V.dtype), S)  # the fallback equals the spikes here
    no_spikes = {k: v for k, v in out.items() if k != "y"}
    task.spike_out = None
    assert torch.allclose(task.loss(no_spikes, enc, x, None), want, rtol=1e-6)


NAN_SPEC = """
neuron LI {
    param beta = 0.9
    state v = 0.0
    input I
    update v = beta * v + I
}
network Reg {
    steps = 5
    input x[64] : direct
    layer o[10] = LI() <- dense(x)
    output o.v
}
train boom {
    network = Reg
    data = digits(n_train = 200, n_test = 50)
    loss = mse_membrane
    optimizer = sgd(lr = 1e30)
    batch = 50
    epochs = 3
}
"""


@pytest.mark.skipif(not HAVE_TORCH_TARGET, reason="the torch target is not there yet")
def test_cli_nan_stop_exit_code_and_message(tmp_path):
    p = tmp_path / "nan.spk"
    p.write_text(NAN_SPEC)
    r = _cli("train", str(p), "--no-progress", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 1
    assert re.search(r"training stopped: the loss became (-?inf|nan) in epoch 1, batch \d+",
                     r.stderr), r.stderr
    assert "no checkpoint was written yet" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs/boom/checkpoint.pt").exists()
