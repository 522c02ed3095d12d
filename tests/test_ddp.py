"""Data-parallel training (``train --nproc N``) and gradient checkpointing
over time (``checkpoint_every``), on digits with a tiny network in float64."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import spikedsl
from spikedsl.errors import SpecError
from spikedsl.runtime import train as T
from spikedsl.runtime.distributed import Rank
from spikedsl.runtime.timechunks import chunked_forward
from spikedsl.targets.torch import build

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# 64-24-10 LIF on digits, float64.  limit = 97 with batch 32: the last
# training and test batch holds one sample, so with 2 ranks one part is empty.
SPEC = """neuron LIF {
    param tau_mem = 10 ms
    param v_th    = 1.0
    param r       = 40.0
    state v = 0.0
    input I
    dv/dt = (-v + r * I) / tau_mem method exact
    spike v >= v_th
    reset v = 0.0
    surrogate fast_sigmoid(slope = 25)
}

network Tiny {
    dt    = 1 ms
    steps = STEPS
    input  x[64] : direct
    layer  h[24] = LIF() <- dense(x)
    layer  y[10] = LIF() <- dense(h)
    output y
}

train tiny {
    network   = Tiny
    data      = digits
    loss      = ce_rate
    optimizer = adam(lr = 2e-3)
    batch     = 32
    epochs    = 2
    seed      = 0
    dtype     = float64
    metrics   = [accuracy, rate]EXTRA
}
"""
LIMIT = 97


def _spec(tmp_path: Path, steps: int = 8, extra: str = "", name: str = "tiny.spk") -> Path:
    p = tmp_path / name
    p.write_text(SPEC.replace("STEPS", str(steps)).replace("EXTRA", extra))
    return p


def _weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _cli(*args, cwd, env=None, timeout=300):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([PY, "-m", "spikedsl.cli", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


# ======================================================== checkpoint_every
@pytest.mark.parametrize("bad", ["0", "2.5", "-3", "fast"])
def test_checkpoint_every_is_validated_with_a_location(tmp_path, bad):
    p = _spec(tmp_path, extra=f"\n    checkpoint_every = {bad}")
    with pytest.raises(SpecError) as ei:
        T.resolve_config(spikedsl.load(p), "tiny")
    msg = str(ei.value)
    assert "tiny.spk:" in msg and "checkpoint_every" in msg
    assert "expected an integer >= 1" in msg


NET = """neuron LIF {
    param tau_mem = 10 ms
    param r = 40.0
    state v = 0.0
    input I
    dv/dt = (-v + r * I) / tau_mem method exact
    spike v >= 1.0
    reset v = 0.0
    surrogate fast_sigmoid(slope = 25)
}
network Net {
    dt = 1 ms
    steps = 40
    input  x[64] : direct
    layer  h[24] = LIF() <- dense(x)
    layer  r[12] = LIF() <- dense(h) + dense(r)
    layer  y[10] = LIF() <- dense(r) + dense(h, delay = 3)
    output y
    output sum(y)
    output mean(r.v)
    output last(h.v)
    output y.v_pre
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_checkpoint_every_gives_the_same_gradients(tmp_path, fast):
    """Chunks of k steps (recomputed in the backward) give the outputs and the
    gradients of one call: feed-forward scans, a recurrent group, a delayed
    projection, reduced outputs (sum, mean, last) and a pre-reset trace."""
    (tmp_path / "n.spk").write_text(NET)
    net = spikedsl.load(tmp_path / "n.spk").network("Net").ir
    m = build(net, dtype=torch.float64, fast=fast, seed=3)
    x = torch.rand(6, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    enc = m.encode(x)
    w = {k: torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
         for i, (k, v) in enumerate(m(enc).items())}

    def grads(out):
        loss = sum((out[k] * w[k]).sum() for k in w)
        return torch.autograd.grad(loss, list(m.parameters()))

    ref_out = m(enc)
    ref = grads(ref_out)
    size = max(float(g.abs().max()) for g in ref)
    assert size > 1e-3  # the gradient is not trivial
    reduces = {o.name: o.reduce for o in net.outputs}
    for k in (1, 7, 13, 40):
        out = chunked_forward(m, enc, k, reduces)
        for name in ref_out:
            assert torch.allclose(out[name], ref_out[name], rtol=0, atol=1e-12), (k, name)
        got = grads(out)
        # the step path sums in the same order; the fast path's projections
        # over k steps at once round differently (~1e-14 of the gradient)
        diff = max(float((a - b).abs().max()) for a, b in zip(ref, got))
        assert diff <= 1e-13 * size, (k, diff, size)
        assert not m.stateful and not m.carry_grad and m.state  # flags restored


def test_checkpoint_every_trains_like_without(tmp_path):
    a = T.train(_spec(tmp_path, steps=30, name="a.spk"), "tiny", run_dir=tmp_path / "a",
                progress=False, limit=64, epochs=1)
    b = T.train(_spec(tmp_path, steps=30, extra="\n    checkpoint_every = 7", name="b.spk"),
                "tiny", run_dir=tmp_path / "b", progress=False, limit=64, epochs=1)
    assert a.config.checkpoint_every is None and b.config.checkpoint_every == 7
    assert _max_diff(_weights(a.weights), _weights(b.weights)) <= 1e-12
    for k, v in a.final.items():
        if k != "seconds":
            assert abs(v - b.final[k]) <= 1e-12, k


def test_checkpoint_every_needs_a_stateful_module(tmp_path):
    from tests.test_train import standin

    p = _spec(tmp_path, extra="\n    checkpoint_every = 4")
    with pytest.raises(RuntimeError, match="checkpoint_every needs a module"):
        T.train(p, "tiny", run_dir=tmp_path / "r", progress=False, limit=8, build=standin)


# ======================================================== sharding
def test_shards_cover_the_batch_in_order():
    for n in (0, 1, 5, 32, 33):
        for world in (1, 2, 3):
            parts = [Rank(r, world, 1.0, "gloo").shard(n) for r in range(world)]
            idx = [i for p in parts for i in range(n)[p]]
            assert idx == list(range(n))
            sizes = [len(range(n)[p]) for p in parts]
            assert max(sizes) - min(sizes) <= 1


# ======================================================== --nproc 2
def test_nproc_2_gives_the_weights_and_metrics_of_one_process(tmp_path):
    """Same global batch (32, cut 16 + 16; the last batch of one sample gives
    rank 1 an empty part): the same weights after an epoch within 1e-10 in
    float64 (only the order of the gradient sums differs) and the same metrics."""
    p = _spec(tmp_path)
    one = T.train(p, "tiny", run_dir=tmp_path / "one", progress=False, limit=LIMIT, epochs=1,
                  threads=1)
    lines: list[str] = []
    two = T.train(p, "tiny", run_dir=tmp_path / "two", progress=False, limit=LIMIT, epochs=1,
                  nproc=2, log=lines.append)
    assert two.status == "done", two.message
    assert two.nproc == 2 and two.epochs_done == 1
    assert any(line.startswith("epoch 1/1") for line in lines)  # rank 0's lines, relayed
    w1, w2 = _weights(one.weights), _weights(two.weights)
    assert _max_diff(w1, w2) <= 1e-10
    assert _max_diff(w1, {k: v.numpy() for k, v in two.model.state_dict().items()}) <= 1e-10
    moved = max(float(np.abs(w1[k] - v).max()) for k, v in
                _weights_at_start(p).items())
    assert moved > 1e-3  # the epoch did train
    for k, v in one.final.items():
        if k == "seconds":
            continue
        assert abs(v - two.final[k]) <= 1e-12, (k, v, two.final[k])
    assert one.final["train_accuracy"] == two.final["train_accuracy"]
    ck = T.load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert ck["nproc"] == 2 and len(ck["rng_ranks"]) == 2


def _weights_at_start(p: Path) -> dict[str, np.ndarray]:
    net = spikedsl.load(p).network("Tiny").ir
    m = build(net, dtype=torch.float64, seed=0)
    return {k: v.detach().numpy() for k, v in m.state_dict().items()}


def _killed_run(tmp_path: Path, p: Path) -> list[str]:
    """Rank 1 is killed (SIGKILL) after batch 1 of epoch 2."""
    args = ["train", str(p), "--run", "d", "--no-progress", "--limit", str(LIMIT),
            "--nproc", "2", "--timeout", "60"]
    t0 = time.monotonic()
    r = _cli(*args, cwd=tmp_path, env={"SPIKEDSL_DDP_FAULT": "1:2:1"})
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert "rank 1 of 2 was killed by SIGKILL" in r.stderr, r.stderr
    assert "the other ranks were stopped" in r.stderr
    assert "after epoch 1" in r.stderr and "--resume --nproc 2" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert took < 60  # the dead rank was noticed, not waited for
    assert T.load_checkpoint(tmp_path / "runs/d/checkpoint.pt")["epoch"] == 1
    return args


def test_killed_rank_ends_the_run_with_a_clear_message(tmp_path):
    """The run ends at once with exit 1 and a message naming the rank and the
    checkpoint to resume from; no traceback."""
    _killed_run(tmp_path, _spec(tmp_path))


@pytest.mark.slow
def test_resume_after_a_killed_run_gives_the_uninterrupted_weights(tmp_path):
    """--resume --nproc 2 continues from the epoch-1 checkpoint of a run whose
    rank 1 died to the weights of an uninterrupted one-process run."""
    p = _spec(tmp_path)
    ref = T.train(p, "tiny", run_dir=tmp_path / "ref", progress=False, limit=LIMIT,
                  threads=1)
    args = _killed_run(tmp_path, p)
    r = _cli(*args, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming tiny" in r.stdout and "epoch 2/2" in r.stdout
    assert _max_diff(_weights(ref.weights), _weights(tmp_path / "runs/d/weights.npz")) <= 1e-10


@pytest.mark.slow
def test_silent_rank_ends_the_run_after_the_timeout(tmp_path):
    p = _spec(tmp_path)
    t0 = time.monotonic()
    r = _cli("train", str(p), "--run", "h", "--no-progress", "--limit", str(LIMIT),
             "--nproc", "2", "--timeout", "4", cwd=tmp_path,
             env={"SPIKEDSL_DDP_FAULT": "1:1:2:hang"})
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert "rank 1 of 2 stopped answering" in r.stderr and "timed out after 4 s" in r.stderr
    assert "Traceback" not in r.stderr
    assert took < 60


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_with_a_checkpoint(tmp_path):
    p = _spec(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([PY, "-m", "spikedsl.cli", "train", str(p), "--run", "c",
                             "--no-progress", "--limit", str(LIMIT), "--nproc", "2",
                             "--epochs", "2000"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck = tmp_path / "runs/c/checkpoint.pt"
    t0 = time.time()
    while not ck.exists() and time.time() - t0 < 120:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert T.load_checkpoint(ck)["epoch"] >= 1


@pytest.mark.slow
def test_torchrun_gives_the_weights_of_nproc(tmp_path):
    """Under torchrun each process joins the group itself; --run-name names the
    run (torchrun takes --run for its own --run-path)."""
    p = _spec(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                        "2", "-m", "spikedsl", "train", str(p), "--run-name", "tr",
                        "--no-progress", "--limit", str(LIMIT), "--epochs", "1",
                        "--threads", "1"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("epoch 1/1") == 1  # rank 0 prints, rank 1 does not
    one = T.train(p, "tiny", run_dir=tmp_path / "one", progress=False, limit=LIMIT, epochs=1,
                  threads=1)
    assert _max_diff(_weights(one.weights), _weights(tmp_path / "runs/tr/weights.npz")) <= 1e-10
