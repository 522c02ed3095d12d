"""Training runs (docs/training.md): ``train`` blocks executed with the torch target.

``train(prog_or_path, train_name)`` resolves the block's settings, loads the
data set (:mod:`spikedsl.runtime.data`), builds the network with the torch target,
and runs epochs of surrogate-gradient training.  Everything a run produces
goes to ``runs/NAME/`` (``NAME`` = the train block's name unless given):

* ``checkpoint.pt``  model / optimiser / scheduler state, RNG states, history
  (written atomically every epoch; ``resume=True`` continues from it);
* ``weights.npz``    the trained parameters, named as in weights files;
* ``metrics.csv``    one row per epoch; ``metrics.png`` loss and accuracy curves.

Every setting, loss, metric and the checkpoint layout are described in
``docs/training.md``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikedsl.errors import diag
from spikedsl.frontend.program import Program
from spikedsl.runtime.checkpoints import (
    _generators,
    _rng_state,
    _set_rng_state,
    _write_npz,
    _write_text,
    atomic_save,
    checkpoint_weights,
    load_checkpoint,
)
from spikedsl.runtime.data import DataError, batches, load_dataset
from spikedsl.runtime.timechunks import StepsModule, supports_chunks
from spikedsl.runtime.train_config import CHECKPOINT_FORMAT, DTYPES, TrainConfig, resolve_config
from spikedsl.runtime.train_task import _Task

__all__ = [
    "CHECKPOINT_FORMAT",
    "DataError",
    "TrainConfig",
    "TrainResult",
    "atomic_save",
    "checkpoint_weights",
    "load_checkpoint",
    "resolve_config",
    "train",
]


# ======================================================================= result
class _RunFile:
    """A file of the run directory as a read-only attribute of :class:`TrainResult`
    (``res.weights`` is ``res.run_dir / "weights.npz"``)."""

    def __init__(self, name: str):
        self.name = name

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    def __get__(self, res: TrainResult | None, owner: type | None = None) -> Path:
        if res is None:  # looked up on the class
            return self  # type: ignore[return-value]
        return res.run_dir / self.name

    def __set__(self, res: TrainResult, value: object) -> None:
        raise AttributeError(f"'{self.attr}' is derived from run_dir: set run_dir instead")


@dataclass
class TrainResult:
    """What a run did: status, final metrics, per-epoch history and files."""

    status: str  # "done" | "nan" | "interrupted" | "failed" (a rank of --nproc died)
    message: str
    train: str
    network: str
    run_dir: Path
    epochs_done: int
    epochs: int
    history: list[dict[str, float]]
    seconds: float
    model: torch.nn.Module | None = field(default=None, repr=False)
    config: TrainConfig | None = field(default=None, repr=False)
    rank: int = 0  # this process's rank (under torchrun); 0 in one process
    nproc: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def final(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}

    # the files of the run directory (module docstring)
    checkpoint = _RunFile("checkpoint.pt")
    weights = _RunFile("weights.npz")
    metrics_csv = _RunFile("metrics.csv")
    plot = _RunFile("metrics.png")

    @property
    def paths(self) -> dict[str, Path]:
        return {"checkpoint": self.checkpoint, "weights": self.weights,
                "metrics": self.metrics_csv, "plot": self.plot}


class _Stop(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ================================================================ the runner
def _select_device(device: str | None) -> torch.device:
    from spikedsl.runtime.devices import torch_device

    return torch_device(device)


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    a = cfg.optimizer_args
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"],
                   weight_decay=a["weight_decay"], amsgrad=a["amsgrad"])
    return torch.optim.SGD(params, lr=a["lr"], momentum=a["momentum"],
                           weight_decay=a["weight_decay"], nesterov=a["nesterov"],
                           dampening=a["dampening"])


def _make_schedule(cfg: TrainConfig, opt):
    a = cfg.schedule_args
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, int(a.get("t_max") or cfg.epochs)), eta_min=a["eta_min"])
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(a["size"]),
                                               gamma=a["gamma"])
    return None


def _columns(metrics: list[str]) -> list[str]:
    cols = ["epoch"]
    for split in ("train", "test"):
        cols += [f"{split}_{m}" for m in metrics]
    return cols + ["lr", "seconds"]


def _csv_text(cols: list[str], history: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in history:
        w.writerow([_fmt_csv(row.get(c)) for c in cols])
    return buf.getvalue()


def _fmt_csv(v) -> str:
    """Empty for a missing value; floats with repr (round-trips exactly)."""
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def plot_history(history: list[dict[str, float]], metrics: list[str], path: Path,
                 title: str = "") -> None:
    """Loss curves and (when measured) accuracy, or the first other metric, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    other = "accuracy" if "accuracy" in metrics else next(
        (m for m in metrics if m != "loss"), None)
    panels = ["loss"] + ([other] if other else [])
    fig = Figure(figsize=(5.0 * len(panels), 3.6), dpi=90)
    fig.subplots_adjust(left=0.1 if len(panels) == 2 else 0.16, right=0.97, bottom=0.15,
                        top=0.86, wspace=0.3)
    FigureCanvasAgg(fig)
    ep = [r["epoch"] for r in history]
    for i, m in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for split, style in (("train", "-o"), ("test", "-s")):
            ys = [r.get(f"{split}_{m}") for r in history]
            if any(y is not None and math.isfinite(y) for y in ys):
                ax.plot(ep, [np.nan if y is None else y for y in ys], style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        if m == "accuracy":
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)

    def writer(f, fh):
        f.savefig(fh, format="png")

    atomic_save(fig, path, writer)


def _fmt_metric(m: str, v: float | None) -> str:
    if v is None or not isinstance(v, float):
        return "-"
    if m == "accuracy":
        return f"{100 * v:.2f}%"
    return f"{v:.4g}"


def format_epoch(row: dict[str, float], metrics: list[str], epochs: int) -> str:
    short = {"accuracy": "acc", "spike_mse": "spike_mse"}
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    for split in ("train", "test"):
        vals = "  ".join(f"{short.get(m, m)} {_fmt_metric(m, row.get(f'{split}_{m}'))}"
                         for m in metrics)
        parts.append(f"{split}: {vals}")
    parts.append(f"lr {row['lr']:.3g}  {row['seconds']:.1f} s")
    return "  |  ".join(parts)


class _Interrupt:
    """SIGINT while training: the first one asks the loop to stop at the next
    batch boundary (and save), a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                self._old = None
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train(prog_or_path: Program | str | os.PathLike, train_name: str | None = None, *,
          run_dir: str | os.PathLike | None = None, run_name: str | None = None,
          resume: bool = False, epochs: int | None = None, device: str | None = None,
          dtype: str | torch.dtype | None = None, progress: bool = True,
          limit: int | None = None, log: Callable[[str], None] | None = None,
          callback: Callable[[dict[str, Any]], None] | None = None,
          build: Callable[..., torch.nn.Module] | None = None,
          threads: int | None = None, nproc: int | None = None,
          timeout: float | None = None, seed: int | None = None) -> TrainResult:
    """Run the train block ``train_name`` of a spec (or of a loaded program).

    * ``run_dir``: where files go (default ``runs/<run_name or train name>``,
      relative to the current directory);
    * ``resume``: continue from ``run_dir/checkpoint.pt`` (bit-identical to an
      uninterrupted run);
    * ``epochs``, ``device``, ``dtype``, ``seed``: override the block's settings;
    * ``limit``: use only the first ``limit`` training and test samples;
    * ``progress``: a tqdm bar (only when stderr is a terminal) and per-epoch
      lines; ``log`` receives those lines instead of ``print``;
    * ``callback(info)``: called after every optimiser step with
      ``{"epoch", "batch", "loss", "model"}``;
    * ``build(net, **kw)``: the module factory (default: the torch target);
    * ``threads``: torch CPU threads during the run (restored afterwards;
      None keeps the current setting; with ``nproc`` > 1, per process, by
      default the cores divided by ``nproc``);
    * ``nproc``: data-parallel training on that many processes of this machine
      (:mod:`spikedsl.runtime.distributed`; the spec must be a file, and
      ``callback`` / ``build`` are not available); ``timeout``: seconds a
      rank waits for a silent peer before the run ends (default 120).
      Started by ``torchrun``, each process joins the group by itself.

    Raises :class:`SpecError` for spec problems and :class:`DataError` when the
    data set cannot be loaded; NaN/Inf losses and Ctrl-C end the run with
    ``status`` ``"nan"`` / ``"interrupted"`` and a message instead.
    """
    if nproc is not None and int(nproc) < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    if timeout is not None and not float(timeout) > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ
    if nproc is not None and int(nproc) > 1:
        if under_torchrun:
            raise ValueError("nproc starts its own processes; under torchrun leave it out")
        from spikedsl.runtime.distributed import train_on_processes

        return train_on_processes(prog_or_path, train_name, int(nproc), run_dir=run_dir,
                                  run_name=run_name, resume=resume, epochs=epochs,
                                  device=device, dtype=dtype, progress=progress, limit=limit,
                                  log=log, callback=callback, build=build, threads=threads,
                                  timeout=timeout, seed=seed)
    if under_torchrun:
        from spikedsl.runtime.distributed import from_environment, leave_group

        prog_or_path = prog_or_path if isinstance(prog_or_path, Program) else _load(
            prog_or_path)
        ctx = from_environment(device or resolve_config(prog_or_path, train_name).device,
                               timeout)
        ok = False
        try:
            res = _with_threads(prog_or_path, train_name, threads, run_dir=run_dir,
                                run_name=run_name, resume=resume, epochs=epochs,
                                device=device, dtype=dtype, progress=progress, limit=limit,
                                log=log, callback=callback, build=build, dist_ctx=ctx,
                                seed=seed)
            ok = True
            return res
        finally:
            leave_group(barrier=ok)
    return _with_threads(prog_or_path, train_name, threads, run_dir=run_dir,
                         run_name=run_name, resume=resume, epochs=epochs, device=device,
                         dtype=dtype, progress=progress, limit=limit, log=log,
                         callback=callback, build=build, dist_ctx=None, seed=seed)


def _with_threads(prog_or_path, train_name, threads, **kw) -> TrainResult:
    """``_train`` with ``threads`` torch threads (restored afterwards)."""
    if threads is None:
        return _train(prog_or_path, train_name, **kw)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _train(prog_or_path, train_name, **kw)
    finally:
        torch.set_num_threads(old_threads)


def _located_data_error(e: DataError, prog: Program, train_name: str) -> DataError:
    """The data error at the ``data = ...`` setting of the train block
    (``file:line:col: error: ...`` with the source line); ``.loc`` keeps the place."""
    t = prog.trains[train_name]
    loc = next((st.value.loc for st in t.settings if st.name == "data"), t.loc)
    err = DataError(diag("data-error", loc, message=str(e)).render(prog.sources))
    err.loc = loc
    return err


def _train(prog_or_path, train_name, *, run_dir, run_name, resume, epochs, device, dtype,
           progress, limit, log, callback, build, dist_ctx=None, seed=None) -> TrainResult:
    t_start = time.perf_counter()
    prog = prog_or_path if isinstance(prog_or_path, Program) else _load(prog_or_path)
    cfg = resolve_config(prog, train_name)
    if epochs is not None:
        if int(epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        cfg.epochs = int(epochs)
    if seed is not None:
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        cfg.seed = int(seed)
    if device is not None:
        cfg.device = device
    if dtype is not None:
        cfg.dtype = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
        if cfg.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    say = log if log is not None else (print if progress else (lambda _m: None))
    D = dist_ctx  # None: one process; else this rank (spikedsl.runtime.distributed.Rank)
    main = D is None or D.is_main
    if not main:
        say = _quiet
    dev = _select_device(cfg.device)
    if D is not None:
        dev = D.device(dev)
    tdtype = DTYPES[cfg.dtype]
    net = prog.network(cfg.network).ir
    train_ir = prog.trains[cfg.name]

    from spikedsl.runtime.events import network_args

    try:  # event data is binned to the network's steps and dt
        data = load_dataset(cfg.data, network_args(cfg.data, cfg.data_args, net),
                            cfg.base_dir, cfg.seed)
    except DataError as e:
        raise _located_data_error(e, prog, cfg.name) from None
    task = _Task(cfg, net, data, prog, train_ir.loc)
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
    if limit is not None:
        x_tr, x_te = x_tr[:limit], x_te[:limit]
        y_tr = None if y_tr is None else y_tr[:limit]
        y_te = None if y_te is None else y_te[:limit]
    if len(x_tr) == 0:
        raise DataError(f"{cfg.describe_data()} has no training samples")

    rdir = Path(run_dir) if run_dir is not None else Path("runs") / (run_name or cfg.name)
    ck_path = rdir / "checkpoint.pt"
    if resume and not ck_path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {ck_path} does not exist "
                                "(run without --resume first)")
    rdir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ model & optimiser
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    torch.manual_seed(cfg.seed)
    if build is None:
        from spikedsl.targets.torch import build as torch_build

        build = torch_build
    model = build(net, dtype=tdtype, device=str(dev), compile=cfg.compile, seed=cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"network '{net.name}' has no trainable parameters")
    opt = _make_optimizer(cfg, params)
    sched = _make_schedule(cfg, opt)
    every = cfg.checkpoint_every
    if every is not None and not supports_chunks(model):
        raise RuntimeError("checkpoint_every needs a module that continues from its state "
                           "with the gradient kept (the torch target's modules do)")
    if every is not None and not task.spike_input and not hasattr(model, "encode"):
        raise RuntimeError("checkpoint_every cuts the encoded input [T, B, ...] into chunks, "
                           "but the module has no encode()")
    steps_module = StepsModule(model, every, {o.name: o.reduce for o in net.outputs})
    runner = steps_module
    if D is not None:
        from spikedsl.runtime.distributed import unused_parameters

        runner = D.wrap(steps_module, dev, unused_parameters(
            net, task.readout.layer, [n for n, p in model.named_parameters() if p.requires_grad]))

    history: list[dict[str, float]] = []
    start_epoch, skip, partial = 0, 0, None
    if resume:
        ck = load_checkpoint(ck_path)
        if ck.get("train") != cfg.name or ck.get("network") != net.name:
            raise ValueError(f"{ck_path} belongs to train '{ck.get('train')}' of network "
                             f"'{ck.get('network')}', not '{cfg.name}' / '{net.name}'")
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError as e:
            raise ValueError(f"{ck_path} does not fit network '{net.name}' "
                             f"(was the spec changed?): {str(e).splitlines()[0]}") from None
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler") is not None:
            sched.load_state_dict(ck["scheduler"])
        history = [dict(r) for r in ck.get("history", [])]
        start_epoch = int(ck["epoch"])
        skip = int(ck.get("batch", 0))
        partial = ck.get("partial") if main else None  # rank 0 carries the partial sums

        def warm_up():
            if hasattr(model, "encode") and not task.spike_input:
                with torch.no_grad():
                    model.encode(torch.zeros((1, *task.input.shape), dtype=tdtype, device=dev))

        rng = ck["rng"]
        per_rank = ck.get("rng_ranks")
        if D is not None and per_rank and len(per_rank) == D.world:
            rng = per_rank[D.rank]
        _set_rng_state(model, rng, warm_up)
        old = ck.get("config", {})
        changed = [k for k in ("loss", "loss_args", "optimizer", "optimizer_args", "batch",
                               "seed", "data", "data_args", "dtype") if k in old and old[k] !=
                   getattr(cfg, k)]
        if ck.get("limit") != limit:
            changed.append("limit")
        if changed:
            say(f"note: the train settings changed since the checkpoint ({', '.join(changed)}); "
                "the run continues with the new ones, so it is no longer reproducible")
        where = f"epoch {start_epoch}" + (f", batch {skip}" if skip else "")
        say(f"resuming {cfg.name} from {ck_path} ({where})")
    elif ck_path.exists() and main:
        say(f"note: starting over; the previous run in {rdir} is overwritten "
            "(use --resume to continue it)")

    cols = _columns(task.metrics)
    needs_x = cfg.loss == "masked_membrane" or "spike_mse" in task.metrics
    if needs_x and not task.spike_input and not hasattr(model, "encode"):
        raise RuntimeError(f"{cfg.loss if cfg.loss == 'masked_membrane' else 'spike_mse'} "
                           "needs the encoded input, but the module has no encode()")

    def save_checkpoint(epoch_done: int, batch_done: int = 0, part=None) -> None:
        rngs = D.gather(_rng_state(model)) if D is not None else None
        if not main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "epoch": epoch_done,
            "batch": batch_done,
            "partial": part,
            "rng": _rng_state(model),
            "history": history,
            "spec": str(Path(cfg.file).resolve()) if cfg.file else prog.file,
            "network": net.name,
            "train": cfg.name,
            "config": cfg.as_dict(),
            "limit": limit,
            "torch": str(torch.__version__),
        }
        if rngs is not None:  # every rank's generators (dropout draws differ per rank)
            state["rng_ranks"] = rngs
            state["nproc"] = D.world
        atomic_save(state, ck_path)

    def save_outputs() -> None:
        if not main:
            return
        if hasattr(model, "export_weights"):
            w = {k: np.asarray(v) for k, v in model.export_weights().items()}
        else:
            w = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        atomic_save(w, rdir / "weights.npz", _write_npz)
        atomic_save(_csv_text(cols, history), rdir / "metrics.csv", _write_text)
        try:
            plot_history(history, task.metrics, rdir / "metrics.png",
                         title=f"{cfg.name} ({net.name})")
        except ImportError:
            pass

    def to_tensor(xb: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(xb).to(device=dev, dtype=tdtype)
        if task.spike_input:
            t = t.transpose(0, 1).contiguous()  # [B, T, ...] -> [T, B, ...]
        return t

    def labels_tensor(yb):
        if yb is None:
            return None
        t = torch.from_numpy(np.asarray(yb)).to(dev)
        return t.to(tdtype) if t.is_floating_point() else t.long()

    def prepare(xt: torch.Tensor, part: slice | None):
        """The encoded batch, and this rank's part of it (the whole batch is
        encoded on every rank, so stochastic encoders draw as in one process)."""
        if task.spike_input:
            enc = xt
        elif hasattr(model, "encode"):
            enc = model.encode(xt)
            if isinstance(enc, dict):
                enc = enc[task.input.name]
        else:
            enc = None
        if part is not None:
            xt = xt[:, part] if task.spike_input else xt[part]
            enc = None if enc is None else enc[:, part]
        return enc, xt

    def n_of(xt: torch.Tensor) -> int:
        return int(xt.shape[1] if task.spike_input else xt.shape[0])

    keys = ["n", *task.metrics]

    def evaluate() -> dict[str, float]:
        if len(x_te) == 0:
            return {}
        was = model.training
        model.eval()
        sums: dict[str, float] = {}
        gens = _generators(model)
        saved = {k: g.get_state() for k, g in gens.items()}
        try:
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), \
                    torch.no_grad():
                torch.manual_seed(cfg.seed + 7919)
                for k, g in gens.items():
                    g.manual_seed(cfg.seed + 7919)
                for xb, yb in batches(x_te, y_te, cfg.batch, shuffle=False):
                    part = D.shard(len(xb)) if D is not None else None
                    xt, yt = to_tensor(xb), labels_tensor(yb)
                    enc, xt = prepare(xt, part)
                    if part is not None:
                        yt = None if yt is None else yt[part]
                        if n_of(xt) == 0:
                            continue
                    out = model(enc if enc is not None else xt)
                    lv = float(task.loss(out, enc, xt, yt))
                    for k, v in task.metric_sums(out, enc, xt, yt, lv).items():
                        sums[k] = sums.get(k, 0.0) + v
        finally:
            for k, g in gens.items():
                g.set_state(saved[k])
            model.train(was)
        if D is not None:
            sums = D.sum_dict(sums, keys)
        n = sums.pop("n", 0.0) or 1.0
        return {k: v / n for k, v in sums.items()}

    def check_finite_params(epoch: int) -> None:
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise _Stop("nan", _nan_message(f"parameter '{name}' became NaN/Inf",
                                                epoch, None, ck_path, history))

    n_batches = math.ceil(len(x_tr) / cfg.batch)
    status, message = "done", ""
    runner.train()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    show_bar = bool(progress and main and tqdm is not None and sys.stderr.isatty())
    epoch = start_epoch
    with _Interrupt() as intr:
        try:
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                sums = dict(partial["sums"]) if partial else {}
                t_prev = float(partial["seconds"]) if partial else 0.0
                run_loss, run_n = float(sums.get("loss", 0.0)), float(sums.get("n", 0.0))
                lr = opt.param_groups[0]["lr"]
                bar = None
                if show_bar:
                    bar = tqdm(total=n_batches, initial=skip, leave=False, dynamic_ncols=True,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr)
                try:
                    for bi, (xb, yb) in enumerate(batches(x_tr, y_tr, cfg.batch, shuffle=True,
                                                          seed=cfg.seed, epoch=epoch)):
                        if bi < skip:
                            continue
                        xt, yt = to_tensor(xb), labels_tensor(yb)
                        part = D.shard(len(xb)) if D is not None else None
                        enc, xt = prepare(xt, part)
                        if part is not None and yt is not None:
                            yt = yt[part]
                        out = runner(enc if enc is not None else xt)
                        n_here = n_of(xt)
                        if n_here:
                            loss = task.loss(out, enc, xt, yt)
                        else:  # an empty part of a short last batch: no gradient
                            loss = sum(v.sum() for v in out.values() if v.requires_grad) * 0.0
                        lv = lv_here = float(loss.detach())
                        stop_asked = intr.requested
                        if D is not None:
                            # the global batch's loss, and whether any rank was interrupted
                            tot, asked = D.sum([lv_here * n_here if n_here else 0.0,
                                                1.0 if intr.requested else 0.0])
                            lv, stop_asked = tot / len(xb), asked > 0
                            # DDP averages the ranks' gradients: weigh each rank's mean
                            # loss by its share, so the step is the one-process step
                            loss = loss * (n_here * D.world / len(xb))
                        if not math.isfinite(lv):
                            raise _Stop("nan", _nan_message(f"the loss became {lv}", epoch,
                                                            bi, ck_path, history))
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if cfg.grad_clip is not None:
                            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                        opt.step()
                        if hasattr(model, "clamp_parameters"):
                            model.clamp_parameters()
                        if n_here:
                            for k, v in task.metric_sums(out, enc, xt, yt, lv_here).items():
                                sums[k] = sums.get(k, 0.0) + v
                        run_loss += lv * len(xb)
                        run_n += len(xb)
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{run_loss / run_n:.4f}")
                        if callback is not None:
                            callback({"epoch": epoch, "batch": bi, "loss": lv, "model": model})
                        if D is not None:
                            D.fault(epoch, bi)
                        else:
                            stop_asked = intr.requested
                        if stop_asked and bi + 1 < n_batches:
                            check_finite_params(epoch)
                            save_checkpoint(epoch, bi + 1, {
                                "sums": D.sum_dict(sums, keys) if D is not None else sums,
                                "seconds": t_prev + time.perf_counter() - t0})
                            raise _Stop("interrupted", _interrupt_message(
                                epoch, bi + 1, n_batches, ck_path))
                finally:
                    if bar is not None:
                        bar.close()
                skip, partial = 0, None
                check_finite_params(epoch)
                if D is not None:
                    sums = D.sum_dict(sums, keys)
                n = sums.pop("n", 0.0) or 1.0
                row: dict[str, float] = {"epoch": epoch + 1}
                for m in task.metrics:
                    row[f"train_{m}"] = sums[m] / n if m in sums else None
                test = evaluate()
                for m in task.metrics:
                    row[f"test_{m}"] = test.get(m)
                row["lr"] = lr
                if sched is not None:
                    sched.step()
                row["seconds"] = t_prev + time.perf_counter() - t0
                history.append(row)
                save_checkpoint(epoch + 1)
                save_outputs()
                say(format_epoch(row, task.metrics, cfg.epochs))
                stop_asked = D.any(intr.requested) if D is not None else intr.requested
                if stop_asked and epoch + 1 < cfg.epochs:
                    epoch += 1
                    raise _Stop("interrupted", _interrupt_message(epoch, 0, n_batches,
                                                                  ck_path))
            epoch = max(cfg.epochs, start_epoch)
            if start_epoch >= cfg.epochs:
                message = (f"nothing to do: the run already has {start_epoch} epoch(s) "
                           f"(asked for {cfg.epochs}; raise --epochs to continue)"
                           if resume else "epochs = 0: nothing to train")
                if not (rdir / "weights.npz").exists() or not history:
                    save_outputs()
        except _Stop as stop:
            status, message = stop.status, stop.message
            epoch = len(history)
        except KeyboardInterrupt:
            status = "interrupted"
            epoch = len(history)
            message = ("interrupted (a second Ctrl-C): "
                       + (f"the last checkpoint (after epoch {epoch}) is {ck_path}; "
                          "continue with --resume" if ck_path.exists() and history
                          else "no checkpoint was written yet"))
    if status == "done" and not message:
        message = f"trained {cfg.name} for {len(history)} epoch(s)"
    return TrainResult(status=status, message=message, train=cfg.name, network=net.name,
                       run_dir=rdir, epochs_done=len(history), epochs=cfg.epochs,
                       history=history, seconds=time.perf_counter() - t_start, model=model,
                       config=cfg, rank=D.rank if D is not None else 0,
                       nproc=D.world if D is not None else 1)


def _nan_message(what: str, epoch: int, batch: int | None, ck_path: Path,
                 history: list) -> str:
    where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
    if history and ck_path.exists():
        keep = (f"the last good checkpoint (after epoch {len(history)}) is kept at {ck_path}")
    else:
        keep = "no checkpoint was written yet"
    return (f"training stopped: {what} in {where}; {keep}. "
            "Try a lower learning rate, grad_clip, or check the data.")


def _interrupt_message(epoch: int, batch: int, n_batches: int, ck_path: Path) -> str:
    where = (f"after epoch {epoch}" if batch == 0 else
             f"in epoch {epoch + 1} after batch {batch}/{n_batches}")
    return f"interrupted: checkpoint saved {where} to {ck_path}; continue with --resume"


def _load(path) -> Program:
    from spikedsl.frontend.program import load

    return load(path)



def _quiet(_line: str) -> None:
    """The log of ranks other than 0."""


def _run_rank(spec: str, train_name: str | None, ctx, *, threads: int | None = None,
              **kw) -> TrainResult:
    """One rank of ``train(..., nproc=N)`` (called in the child processes)."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    return _train(_load(spec), train_name, callback=None, build=None, dist_ctx=ctx, **kw)

