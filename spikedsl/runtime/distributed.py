"""Data-parallel training on several processes (``spikedsl train --nproc N``).

:func:`launch` starts ``N`` processes on this machine (``spawn``), joined by a
``torch.distributed`` process group (gloo on the CPU, nccl on CUDA) whose
rendezvous store listens on a free localhost port chosen by the operating
system.  Every rank runs the same training loop (:mod:`spikedsl.runtime.train`)
with a :class:`Rank`: the model is wrapped in ``DistributedDataParallel``,
each global batch (the ``batch`` setting, as in one process) is cut into
``N`` contiguous parts, one per rank, metric sums are added over the ranks
(``all_reduce``), and rank 0 alone writes checkpoints and outputs.

The parent watches its children: a rank that dies, fails or stops answering
ends the run within the collective timeout, with a message naming it; the
others are stopped.  Ctrl-C in the parent is passed on once to every rank,
which stop together at the next batch boundary after a checkpoint.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) each process
joins the group itself (:func:`from_environment`) and no children are made.
"""

from __future__ import annotations

import datetime
import os
import pickle
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = 120.0  # seconds a collective may wait for a silent rank
FAULT_ENV = "SPIKEDSL_DDP_FAULT"  # test hook: "RANK:EPOCH:BATCH[:hang]" (1-based)


class CommError(RuntimeError):
    """A collective failed: a peer died or did not answer within the timeout."""


# ====================================================================== a rank
class Rank:
    """This process's place in the process group and the collectives the
    training loop needs."""

    def __init__(self, rank: int, world: int, timeout: float, backend: str,
                 local_rank: int | None = None):
        self.rank = rank
        self.world = world
        self.timeout = timeout
        self.backend = backend
        self.local_rank = rank if local_rank is None else local_rank
        self._fault = _parse_fault(os.environ.get(FAULT_ENV), rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, dev: torch.device) -> torch.device:
        """One CUDA device per rank (``cuda`` -> ``cuda:LOCAL_RANK``)."""
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(dev)
        return dev

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` samples (sizes
        differ by at most one; a part may be empty when ``n`` < ranks)."""
        q, r = divmod(n, self.world)
        lo = self.rank * q + min(self.rank, r)
        return slice(lo, lo + q + (1 if self.rank < r else 0))

    def wrap(self, module: torch.nn.Module, dev: torch.device, unused: bool = False
             ) -> torch.nn.Module:
        """``DistributedDataParallel(module)``; ``unused``: some parameters do not
        reach the loss (DDP then looks for them at every step).  Buffers are not
        broadcast: they are equal on every rank (batch-norm statistics apart)."""
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.index] if dev.type == "cuda" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers' new name
            return DDP(module, device_ids=ids, broadcast_buffers=False,
                       find_unused_parameters=unused)

    def _collective(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except RuntimeError as e:
            raise CommError(_comm_text(e, self.timeout)) from None

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64 on the CPU / the device)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        self._collective(dist.all_reduce, t)
        return [float(v) for v in t.cpu()]

    def sum_dict(self, sums: dict[str, float], keys: list[str]) -> dict[str, float]:
        """The per-rank metric sums added over the ranks (every rank calls it
        with the same ``keys``; a missing key counts 0)."""
        return dict(zip(keys, self.sum([float(sums.get(k, 0.0)) for k in keys])))

    def any(self, flag: bool) -> bool:
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (None elsewhere)."""
        out = [None] * self.world if self.is_main else None
        self._collective(dist.gather_object, obj, out, dst=0)
        return out

    def _comm_device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def fault(self, epoch: int, batch: int) -> None:
        """The test hook (``SPIKEDSL_DDP_FAULT``): this rank dies (SIGKILL) or
        hangs after the given batch of the given epoch."""
        if self._fault is not None and self._fault[:2] == (epoch + 1, batch + 1):
            if self._fault[2] == "hang":
                while True:
                    time.sleep(3600)
            os.kill(os.getpid(), signal.SIGKILL)


def unused_parameters(net, readout_layer: str, names: list[str]) -> bool:
    """Whether some trainable parameters (weights-file names ``layer.*``)
    belong to layers the readout layer does not depend on."""
    layers = {la.name: la for la in net.layers}
    seen: set[str] = set()
    todo = [readout_layer]
    while todo:
        name = todo.pop()
        if name in seen or name not in layers:
            continue
        seen.add(name)
        la = layers[name]
        todo += [p.source for p in la.projections]
        if la.source:
            todo.append(la.source)
    return any(n.split(".", 1)[0] not in seen for n in names)


def _parse_fault(text: str | None, rank: int):
    if not text:
        return None
    parts = text.split(":")
    try:
        r, e, b = int(parts[0]), int(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        raise ValueError(f"{FAULT_ENV} must be RANK:EPOCH:BATCH[:hang], got {text!r}") from None
    return (e, b, parts[3] if len(parts) > 3 else "kill") if r == rank else None


def _comm_text(e: BaseException, timeout: float) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's source location
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"a collective operation timed out after {timeout:g} s ({text})"
    return f"a collective operation failed ({text})"


def _is_comm_error(e: BaseException) -> bool:
    if isinstance(e, CommError):
        return True
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(e, dist_error):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in text for w in (
        "gloo", "nccl", "connection closed", "connection reset", "broken pipe",
        "timed out", "socket"))


def backend_for(device: str | None) -> str:
    return "nccl" if (device or "cpu").split(":")[0] == "cuda" else "gloo"


def _timeout(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=float(seconds))


def from_environment(device: str | None, timeout: float | None) -> Rank | None:
    """The rank of a process started by ``torchrun`` (None when not)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    backend = backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", timeout=_timeout(timeout))
    return Rank(dist.get_rank(), dist.get_world_size(), timeout, backend,
                int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def leave_group(barrier: bool = True) -> None:
    """End this process's membership of the process group (after a barrier
    when the run went well, so that no rank leaves while another still needs
    it); a process that exits with the group open is aborted by torch."""
    if not dist.is_initialized():
        return
    if barrier:
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - a broken group is left all the same
            pass
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass


# ================================================================ the children
@dataclass
class _Job:
    spec: str
    train_name: str | None
    kwargs: dict[str, Any]
    backend: str
    timeout: float
    port: int
    world: int
    parent: int


def _send(conn, msg) -> None:
    try:
        conn.send(msg)
    except (OSError, EOFError, BrokenPipeError):  # the parent is gone
        os._exit(1)


def _watch_parent(parent: int) -> None:
    """End this rank when the launching process is gone (killed without
    a chance to stop its children)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _error_message(rank: int, e: BaseException) -> tuple:
    """What a failing rank sends: the exception itself when it survives
    pickling (the parent raises it), else its text."""
    from spikedsl.errors import SpecError

    if _is_comm_error(e):
        return ("comm", str(e) if isinstance(e, CommError) else _comm_text(e, 0.0))
    if isinstance(e, SpecError):
        try:
            return ("exc", pickle.dumps((type(e), e.diagnostics, e.sources)), "spec")
        except Exception:  # noqa: BLE001 - fall back to the text
            return ("text", str(e))
    try:
        data = pickle.dumps(e)
        pickle.loads(data)
        return ("exc", data, "plain")
    except Exception:  # noqa: BLE001 - not picklable: send the text
        return ("text", f"{type(e).__name__}: {e}")


def _worker(rank: int, job: _Job, conn) -> None:
    """One rank: join the group, train, report to the parent."""
    os.setpgrp()  # Ctrl-C reaches the parent only; it passes it on exactly once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the training loop listens
    threading.Thread(target=_watch_parent, args=(job.parent,), daemon=True).start()
    code = 0
    try:
        store = dist.TCPStore("127.0.0.1", job.port, job.world, False,
                              timeout=_timeout(job.timeout))
        dist.init_process_group(job.backend, store=store, rank=rank, world_size=job.world,
                                timeout=_timeout(job.timeout))
        ctx = Rank(rank, job.world, job.timeout, job.backend)
        from spikedsl.runtime.train import _run_rank

        kw = dict(job.kwargs)
        if rank == 0:
            kw["log"] = lambda line: _send(conn, ("log", line))
        else:
            kw["progress"] = False
            kw["log"] = None
        res = _run_rank(job.spec, job.train_name, ctx, **kw)
        if rank == 0:
            weights = {k: v.detach().cpu().numpy() for k, v in res.model.state_dict().items()}
            _send(conn, ("result", {
                "status": res.status, "message": res.message, "epochs_done": res.epochs_done,
                "epochs": res.epochs, "history": res.history, "run_dir": str(res.run_dir),
                "state": weights}))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, no traceback
        _send(conn, ("error", *_error_message(rank, e)))
        code = 1
    finally:
        leave_group(barrier=code == 0)
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


# ================================================================ the parent
def free_store(world: int, timeout: float):
    """A rendezvous store on a free localhost port (port 0: the OS picks)."""
    return dist.TCPStore("127.0.0.1", 0, world, True, timeout=_timeout(timeout),
                         wait_for_workers=False)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not answer"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(spec: str, train_name: str | None, nproc: int, *, device: str | None,
           timeout: float | None, log, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run ``nproc`` ranks and wait for them.  Returns rank 0's report
    (``status``, ``message``, ``history``, ``state`` ...), or
    ``{"status": "failed", "message": ...}`` when a rank died or failed; an
    exception raised by a rank before training (spec, data, resume problems)
    is raised here."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    store = free_store(nproc, timeout)
    job = _Job(spec=spec, train_name=train_name, kwargs=kwargs, backend=backend_for(device),
               timeout=timeout, port=store.port, world=nproc, parent=os.getpid())
    ctx = mp.get_context("spawn")
    procs, conns = [], []
    for r in range(nproc):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(r, job, send), name=f"spikedsl-rank{r}")
        p.start()
        send.close()
        procs.append(p)
        conns.append(recv)

    sigints = [0]

    def on_sigint(signum, frame):
        sigints[0] += 1
        for p in procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGINT, on_sigint)
    result: dict[str, Any] | None = None
    errors: dict[int, tuple] = {}
    exited: dict[int, int | None] = {}
    first_failure: float | None = None
    stopped: set[int] = set()  # ranks this process had to end
    open_conns = {c: r for r, c in enumerate(conns)}

    def take(msg: tuple, r: int) -> bool:
        """Handle a rank's message; True for an error."""
        nonlocal result
        if msg[0] == "log":
            log(msg[1])
        elif msg[0] == "result":
            result = msg[1]
        elif msg[0] == "error":
            errors[r] = msg[1:]
            return True
        return False

    try:
        while len(exited) < nproc:
            ready = wait(list(open_conns) + [p.sentinel for p in procs
                                             if procs.index(p) not in exited], timeout=0.5)
            for obj in ready:
                if obj in open_conns:
                    r = open_conns[obj]
                    try:
                        msg = obj.recv()
                    except (EOFError, OSError):
                        del open_conns[obj]
                        continue
                    if take(msg, r):
                        first_failure = first_failure or time.monotonic()
            for r, p in enumerate(procs):
                if r not in exited and not p.is_alive():
                    p.join()
                    exited[r] = p.exitcode
                    if p.exitcode != 0:
                        first_failure = first_failure or time.monotonic()
            if first_failure is not None and len(exited) < nproc:
                # a rank failed: give the others a moment to notice, then stop them
                waited = time.monotonic() - first_failure
                if waited > 3.0:
                    for r, p in enumerate(procs):
                        if r not in exited and p.is_alive():
                            stopped.add(r)
                            p.terminate() if waited < 6.0 else p.kill()
            if sigints[0] >= 2 and first_failure is None:
                first_failure = time.monotonic()  # a second Ctrl-C: stop soon
        for c in list(open_conns):  # what was sent just before exiting
            while c.poll():
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    break
                take(msg, open_conns[c])
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if old is not None:
            signal.signal(signal.SIGINT, old)
        del store

    if result is not None and not errors and all(c == 0 for c in exited.values()):
        return result
    return _failure(nproc, exited, errors, stopped, timeout, result, sigints[0])


def _failure(nproc: int, exited: dict[int, int | None], errors: dict[int, tuple],
             stopped: set[int], timeout: float, result, sigints: int) -> dict[str, Any]:
    from spikedsl.errors import SpecError

    # an error raised by a rank's own code (spec, data, resume ...): raise it
    for r in sorted(errors):
        kind, *rest = errors[r]
        if kind == "exc":
            data, how = rest
            if how == "spec":
                cls, diags, sources = pickle.loads(data)
                raise cls(diags, sources) if issubclass(cls, SpecError) else SpecError(diags,
                                                                                      sources)
            raise pickle.loads(data)
    if result is not None and result.get("status") == "interrupted":
        return result
    dead = [r for r, c in sorted(exited.items())
            if c != 0 and r not in errors and r not in stopped]
    if dead:
        r = dead[0]
        what = f"rank {r} of {nproc} {_describe_exit(exited[r])}"
    elif any(k == "text" for k, *_ in errors.values()):
        r = next(r for r in sorted(errors) if errors[r][0] == "text")
        what = f"rank {r} of {nproc} failed: {errors[r][1]}"
    elif errors:
        r = min(errors)
        what = f"rank {r} of {nproc} stopped: {errors[r][1]}"
        silent = [q for q in range(nproc) if q not in errors and q in stopped]
        if silent:
            what = (f"rank {silent[0]} of {nproc} stopped answering (rank {r}: "
                    f"{errors[r][1]})")
    elif sigints:
        what = "interrupted"
    else:
        what = "a rank ended without a result"
    return {"status": "failed", "message": what}


def train_on_processes(prog_or_path, train_name, nproc: int, *, run_dir, run_name, resume, epochs,
            device, dtype, progress, limit, log, callback, build, threads,
            timeout, seed=None):
    """``train(..., nproc=N)``: checks what can be checked here (spec errors are
    located before any process starts), runs the ranks, returns rank 0's
    result with the trained module rebuilt in this process."""
    from spikedsl.frontend.program import Program
    from spikedsl.runtime.checkpoints import load_checkpoint
    from spikedsl.runtime.train import TrainResult, _load, _quiet
    from spikedsl.runtime.train_config import DTYPES, resolve_config

    t_start = time.perf_counter()
    if callback is not None or build is not None:
        raise ValueError("callback and build are not available with nproc > 1 "
                         "(they would have to run in every process)")
    prog = prog_or_path if isinstance(prog_or_path, Program) else _load(prog_or_path)
    cfg = resolve_config(prog, train_name)
    spec = cfg.file or prog.file
    if not spec or not os.path.isfile(spec):
        raise ValueError("nproc > 1 needs the spec as a file (every process loads it)")
    if epochs is not None and int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype).replace("torch.", "")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    rdir = Path(run_dir) if run_dir is not None else Path("runs") / (run_name or cfg.name)
    if resume and not (rdir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {rdir / 'checkpoint.pt'} does "
                                "not exist (run without --resume first)")
    if threads is None:  # the cores shared out between the processes
        threads = max(1, (os.cpu_count() or 1) // nproc)
    say = log if log is not None else (print if progress else _quiet)
    kwargs = {"run_dir": str(rdir), "run_name": None, "resume": resume,
              "epochs": epochs, "device": device, "dtype": dtype, "progress": progress,
              "limit": limit, "threads": threads, "seed": seed}
    rep = launch(os.path.abspath(spec), cfg.name, nproc, device=device or cfg.device,
                 timeout=timeout, log=say, kwargs=kwargs)
    history: list[dict[str, float]] = list(rep.get("history") or [])
    model = None
    if rep["status"] == "failed":
        if (rdir / "checkpoint.pt").exists():
            try:
                history = [dict(r) for r in load_checkpoint(rdir / "checkpoint.pt")["history"]]
            except Exception:  # noqa: BLE001 - the message names the file anyway
                history = []
        hint = checkpoint_hint(rdir, nproc)
        message = (f"training stopped: {rep['message']}; the other ranks were stopped. "
                   f"{hint[0].upper()}{hint[1:]}")
    else:
        message = rep["message"]
        from spikedsl.targets.torch import build as torch_build

        c = resolve_config(prog, cfg.name)
        model = torch_build(prog.network(c.network).ir, dtype=DTYPES[dtype or c.dtype],
                            device="cpu", compile=False, seed=c.seed)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in rep["state"].items()})
    epochs_total = int(rep.get("epochs", epochs if epochs is not None else cfg.epochs))
    return TrainResult(status=rep["status"], message=message, train=cfg.name,
                       network=cfg.network, run_dir=rdir, epochs_done=len(history),
                       epochs=epochs_total, history=history,
                       seconds=time.perf_counter() - t_start, model=model, config=cfg,
                       nproc=nproc)

def checkpoint_hint(run_dir: Path, nproc: int) -> str:
    ck = run_dir / "checkpoint.pt"
    if not ck.exists():
        return "no checkpoint was written yet"
    try:
        from spikedsl.runtime.checkpoints import load_checkpoint

        c = load_checkpoint(ck)
        where = f"after epoch {int(c['epoch'])}" + (
            f", batch {int(c['batch'])}" if int(c.get("batch", 0)) else "")
    except Exception:  # noqa: BLE001 - an unreadable file is still named
        where = "unreadable"
    return (f"the last checkpoint ({where}) is {ck}; continue with --resume "
            f"--nproc {nproc}")
