"""Training-step time of the torch target against snnTorch and Norse as their
users write them.

One training step = forward + backward + Adam, CPU, float32, inputs already
encoded ([T, B, ...] Poisson spikes), loss cross-entropy on output spike
counts.  Implementations of the same network, every one starting from the
same weights:

* ``spikedsl``                  the generated module (default: eager)
* ``spikedsl+compile``          the same with ``compile=True``
* ``snntorch-same``             ``snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism="zero",
                                reset_delay=False, spike_grad=surrogate.fast_sigmoid(slope=25))``
                                in a loop: the same semantics as the spec (identical
                                spikes and gradients, checked below in float64)
* ``snntorch-default``          ``snn.Leaky(beta=0.9, reset_mechanism="zero")``: snnTorch's
                                defaults otherwise (reset delayed by one step, atan surrogate)
* ``...+compile``               the same module under ``torch.compile(model)``
* ``norse``                     ``LIFBoxCell`` in a loop (its own discretisation, same cost)
* ``gemm``                      the floor: the matrix products of forward and backward
                                alone (``F.linear`` / ``F.conv2d`` as a user calls them, with
                                fixed output gradients, on the chunks of steps the generated
                                module uses), no neuron, no optimiser
* ``gemm-onednn``               the same with the dense products through oneDNN, as the
                                generated module computes them

Python float parameters, float32 throughout.  Every implementation runs in a
fresh process of its own (one compiled model per process: dynamo's recompile
limit is made an error, so a compiled model can never silently run eagerly),
built and warmed up one after the other; the timed steps are then
interleaved: one step of every implementation per round, in a rotating order,
so that a change of the machine's load hits all of them alike.  Per round the
ratio of two implementations' steps is taken, the table gives medians.

Two modes: ``cpu1`` (one thread, CPU time of the worker process: robust on a
shared machine) and ``wall2`` (two threads, wall clock).

    .venv/bin/python benchmarks/bench_torch.py                  # everything, both modes
    .venv/bin/python benchmarks/bench_torch.py --configs mlp25 --modes cpu1 --rounds 20
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NEURON = """
neuron DLIF {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 25)
}
"""

CONFIGS = {
    "mlp25": {"kind": "mlp", "T": 25, "B": 128},
    "mlp100": {"kind": "mlp", "T": 100, "B": 128},
    "conv25": {"kind": "conv", "T": 25, "B": 32},
    "conv100": {"kind": "conv", "T": 100, "B": 32},
}
IMPLS = ["spikedsl", "spikedsl+compile", "snntorch-same", "snntorch-same+compile",
         "snntorch-default", "snntorch-default+compile", "norse", "gemm", "gemm-onednn"]
MODES = {"cpu1": (1, "cpu"), "wall2": (2, "wall")}
PAUSE = 0.2  # seconds between two timed wall-clock steps (see run_config)
TAG = "@@bench "  # prefix of the worker's protocol lines (anything else is ignored)
# inductor's cache of this benchmark (not the machine-wide one, which others may clear)
INDUCTOR_CACHE = os.path.join(tempfile.gettempdir(), f"spikedsl-bench-inductor-{os.getuid()}")


def spec(cfg) -> str:
    if cfg["kind"] == "mlp":
        return NEURON + f"""
network Net {{
    steps = {cfg['T']}
    input x[784] : spikes
    layer h[256] = DLIF <- dense(x)
    layer o[10] = DLIF <- dense(h)
    output o
}}
"""
    return NEURON + f"""
network Net {{
    steps = {cfg['T']}
    input x[1, 28, 28] : spikes
    layer c1 = DLIF <- conv2d(x, channels = 12, kernel = 5)
    layer p1 = maxpool2d(c1, 2)
    layer c2 = DLIF <- conv2d(p1, channels = 32, kernel = 5)
    layer p2 = maxpool2d(c2, 2)
    layer f = flatten(p2)
    layer o[10] = DLIF <- dense(f)
    output o
}}
"""


# ------------------------------------------------------------------ implementations
def spikedsl_model(cfg, compile=False, dtype=torch.float32):
    import spikedsl
    from spikedsl.targets.torch import build

    net = spikedsl.loads(spec(cfg)).network("Net").ir
    m = build(net, dtype=dtype, compile=compile)
    return m, (lambda x: m(x)["o"])


def _layers(cfg):
    """(kind, torch layer) in order, for the hand-written models."""
    if cfg["kind"] == "mlp":
        return [("proj", torch.nn.Linear(784, 256)), ("lif", None),
                ("proj", torch.nn.Linear(256, 10)), ("lif", None)]
    return [("proj", torch.nn.Conv2d(1, 12, 5)), ("lif", None), ("pool", None),
            ("proj", torch.nn.Conv2d(12, 32, 5)), ("lif", None), ("pool", None),
            ("flat", None), ("proj", torch.nn.Linear(32 * 4 * 4, 10)), ("lif", None)]


class SnnTorchNet(torch.nn.Module):
    """The network written with snnTorch, as in its tutorials: ``snn.Leaky``
    with Python float parameters, a loop over the steps, the output spikes
    stacked.  ``variant``: "same" (the spec's semantics) or "default"."""

    def __init__(self, cfg, variant="same", spike_grad=None):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        self.kinds, mods = [], []
        for kind, mod in _layers(cfg):
            self.kinds.append(kind)
            if kind == "lif":
                if variant == "same":
                    mod = snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism="zero",
                                    reset_delay=False,
                                    spike_grad=spike_grad or surrogate.fast_sigmoid(slope=25))
                else:
                    mod = snn.Leaky(beta=0.9, reset_mechanism="zero")
            mods.append(mod if isinstance(mod, torch.nn.Module) else torch.nn.Identity())
        self.mods = torch.nn.ModuleList(mods)

    def forward(self, x):
        mems = [m.reset_mem() if k == "lif" else None for k, m in zip(self.kinds, self.mods)]
        out = []
        for t in range(x.shape[0]):
            h = x[t]
            for i, (k, m) in enumerate(zip(self.kinds, self.mods)):
                if k == "proj":
                    h = m(h)
                elif k == "lif":
                    h, mems[i] = m(h, mems[i])
                elif k == "pool":
                    h = torch.nn.functional.max_pool2d(h, 2)
                else:
                    h = h.flatten(1)
            out.append(h)
        return torch.stack(out)


class NorseNet(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        from norse.torch import LIFBoxCell, LIFBoxParameters

        p = LIFBoxParameters(tau_mem_inv=torch.as_tensor(100.0), v_leak=torch.as_tensor(0.0),
                             v_th=torch.as_tensor(1.0), v_reset=torch.as_tensor(0.0),
                             method="super", alpha=torch.as_tensor(25.0))
        self.kinds, mods = [], []
        for kind, mod in _layers(cfg):
            self.kinds.append(kind)
            if kind == "lif":
                mod = LIFBoxCell(p, dt=1e-3)
            mods.append(mod if isinstance(mod, torch.nn.Module) else torch.nn.Identity())
        self.mods = torch.nn.ModuleList(mods)

    def forward(self, x):
        states = [None] * len(self.mods)
        out = []
        for t in range(x.shape[0]):
            h = x[t]
            for i, (k, m) in enumerate(zip(self.kinds, self.mods)):
                if k == "proj":
                    h = m(h)
                elif k == "lif":
                    h, states[i] = m(h, states[i])
                elif k == "pool":
                    h = torch.nn.functional.max_pool2d(h, 2)
                else:
                    h = h.flatten(1)
            out.append(h)
        return torch.stack(out)


def _names(cfg):
    return ["h", "o"] if cfg["kind"] == "mlp" else ["c1", "c2", "o"]


def copy_weights(src, dst_mods, cfg):
    """spikedsl parameters -> the hand-written model (same initial weights)."""
    projs = [m for m in dst_mods if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    with torch.no_grad():
        for name, m in zip(_names(cfg), projs):
            m.weight.copy_(getattr(src, name).weight)
            m.bias.copy_(getattr(src, name).bias)


class GemmFloor(torch.nn.Module):
    """The matrix products of one training step and nothing else: every
    projection's forward and backward (the weight and bias gradients, and the
    gradient of its input where a layer below needs it), with fixed spike
    inputs and fixed output gradients, on the chunks of steps the generated
    module uses (large tensors would add page faults to the floor).
    ``onednn``: the dense products through the generated module's
    ``_linear`` (oneDNN) instead of ``F.linear``."""

    def __init__(self, cfg, base, onednn=False):
        super().__init__()
        from spikedsl.targets.torch.network import STEP_CHUNK_ELEMENTS

        T, B = cfg["T"], cfg["B"]
        g = torch.Generator().manual_seed(2)
        spikes = lambda *shape: (torch.rand(shape, generator=g) < 0.2).float()  # noqa: E731
        self.projs = torch.nn.ModuleList(m for _, m in _layers(cfg)
                                         if isinstance(m, torch.nn.Linear | torch.nn.Conv2d))
        copy_weights(base, list(self.projs), cfg)
        if cfg["kind"] == "mlp":
            widest = 256
            self.srcs = [spikes(T, B, 784), spikes(T, B, 256)]
            self.need_grad = [False, True]
        else:
            widest = 12 * 24 * 24
            self.srcs = [spikes(T, B, 1, 28, 28), spikes(T, B, 12, 12, 12), spikes(T, B, 512)]
            self.need_grad = [False, True, True]
        chunks = -(-T // max(1, min(T, STEP_CHUNK_ELEMENTS // (B * widest))))
        self.bounds = [((k * T + chunks - 1) // chunks, ((k + 1) * T + chunks - 1) // chunks)
                       for k in range(chunks)]  # as the generated module splits the steps
        self.T = T
        linear = type(base)._spikedsl_namespace["_linear"] if onednn else \
            torch.nn.functional.linear

        def apply(p, x):
            if isinstance(p, torch.nn.Conv2d):
                return p(x.flatten(0, 1))
            return linear(x, p.weight, p.bias)

        self.apply_proj = apply
        with torch.no_grad():
            self.grads = [torch.randn(apply(p, s).shape, generator=g) * 1e-3
                          for p, s in zip(self.projs, self.srcs)]

    def step(self):
        for t0, t1 in self.bounds:
            # the input gradient of one chunk (a leaf per chunk: no [T, ...] gradient buffer)
            xs = [s[t0:t1].detach().requires_grad_(need)
                  for s, need in zip(self.srcs, self.need_grad)]
            outs = [self.apply_proj(p, x) for p, x in zip(self.projs, xs)]
            n = (t1 - t0) * self.srcs[0].shape[1]
            grads = [g[t0:t1] if g.shape[0] == self.T else g[t0 * n // (t1 - t0):][:n]
                     for g in self.grads]
            torch.autograd.backward(outs, grads)


def make(impl, cfg):
    """-> (module with the parameters, forward function)"""
    base, _ = spikedsl_model(cfg)
    compiled = impl.endswith("+compile")
    if impl.startswith("spikedsl"):
        m, fwd = spikedsl_model(cfg, compile=compiled)
        m.load_state_dict(base.state_dict())
        return m, fwd
    if impl.startswith("snntorch"):
        m = SnnTorchNet(cfg, variant=impl.split("-")[1].split("+")[0])
        copy_weights(base, m.mods, cfg)
        return m, (torch.compile(m) if compiled else m)
    if impl == "norse":
        m = NorseNet(cfg)
        copy_weights(base, m.mods, cfg)
        return m, m
    raise ValueError(f"unknown implementation {impl!r}")


def data(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (cfg["T"], cfg["B"], 784) if cfg["kind"] == "mlp" else (cfg["T"], cfg["B"], 1, 28, 28)
    x = (torch.rand(shape, generator=g) < 0.2).float()
    y = torch.randint(0, 10, (cfg["B"],), generator=g)
    return x, y


def trainer(impl, cfg):
    if impl.startswith("gemm"):
        base, _ = spikedsl_model(cfg)
        return GemmFloor(cfg, base, onednn=impl == "gemm-onednn").step
    params, fwd = make(impl, cfg)
    opt = torch.optim.Adam(params.parameters(), lr=1e-3)
    x, y = data(cfg)

    def step():
        opt.zero_grad(set_to_none=True)
        out = fwd(x)
        loss = torch.nn.functional.cross_entropy(out.sum(0), y)
        loss.backward()
        opt.step()

    return step


# ------------------------------------------------------------------ numerics
def check_numerics(cfg, B=8, seed=1) -> dict:
    """spikedsl vs snnTorch with the same semantics, float64, same weights:
    output spikes and the gradients of the weights and biases (the largest
    difference relative to the largest gradient of the same tensor)."""
    import snntorch.surrogate as sg

    class FastSigmoid64(sg.FastSigmoid):  # snnTorch's surrogate, spikes kept in float64
        @staticmethod
        def forward(ctx, input_, slope):
            ctx.save_for_backward(input_)
            ctx.slope = slope
            return (input_ > 0).to(input_.dtype)

    torch.manual_seed(seed)
    m, fwd = spikedsl_model(cfg, dtype=torch.float64)
    with torch.no_grad():  # stronger weights: more spikes, a sharper test
        for p in m.parameters():
            p.mul_(4.0)
    ref = SnnTorchNet(cfg, "same", spike_grad=lambda x: FastSigmoid64.apply(x, 25)).double()
    for mod in ref.mods:  # a Python 0.9 became a float32 buffer: the float64 value
        if hasattr(mod, "beta"):
            mod.beta = torch.tensor(0.9, dtype=torch.float64)
    copy_weights(m, ref.mods, cfg)
    shape = (cfg["T"], B, 784) if cfg["kind"] == "mlp" else (cfg["T"], B, 1, 28, 28)
    x = (torch.rand(shape, dtype=torch.float64) < 0.5).double()
    y = torch.randint(0, 10, (B,))
    a, b = fwd(x), ref(x)
    torch.nn.functional.cross_entropy(a.sum(0), y).backward()
    torch.nn.functional.cross_entropy(b.sum(0), y).backward()
    projs = [q for q in ref.mods if isinstance(q, torch.nn.Linear | torch.nn.Conv2d)]
    gmax = 0.0
    for name, q in zip(_names(cfg), projs):
        for attr in ("weight", "bias"):
            g1, g2 = getattr(getattr(m, name), attr).grad, getattr(q, attr).grad
            gmax = max(gmax, float((g1 - g2).abs().max() / g1.abs().max().clamp(min=1e-30)))
    return {"spikes_equal": bool(torch.equal(a, b)), "spikes": int(a.sum()),
            "max_rel_grad_diff": gmax}


# ------------------------------------------------------------------ worker process
def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for ln in fh:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    return 0


def _dynamo_summary() -> dict:
    from torch._dynamo.utils import counters

    return {"frames": dict(counters["frames"]), "graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values()) +
            sum(counters["unimplemented"].values())}


def _say(obj) -> None:
    print(TAG + json.dumps(obj), flush=True)


def worker(impl: str, cname: str, threads: int, clock: str, warmup: int) -> None:
    """One implementation in this process: build, warm up, then one timed
    step per "step" line on stdin."""
    torch.set_num_threads(threads)
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # never a silent eager fallback
    cfg = CONFIGS[cname]
    clk = time.process_time if clock == "cpu" else time.perf_counter
    t0 = time.perf_counter()
    step = trainer(impl, cfg)
    for _ in range(warmup):
        step()
    built = time.perf_counter() - t0
    gc.collect()
    try:  # give freed memory back to the OS so that the peak below is the steps' own
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    rss = _vm("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        pass
    _say({"ready": True, "build_s": built, "threads": torch.get_num_threads()})
    faults = []
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            a = clk()
            step()
            _say({"t": clk() - a})
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        elif cmd == "stats":
            _say({"peak_mib": (_vm("VmHWM") - rss) / 1024, "dynamo": _dynamo_summary(),
                  "faults": statistics.median(faults) if faults else 0})
        elif cmd == "quit":
            return


class Worker:
    def __init__(self, impl, cname, threads, clock, warmup, log):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS=str(threads))
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", INDUCTOR_CACHE)
        self.impl = impl
        self.p = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", impl, cname,
             str(threads), clock, str(warmup)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        self.info = self.read()

    def read(self) -> dict:
        for line in self.p.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        raise RuntimeError(f"worker {self.impl} ended (see the log)")

    def ask(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=60)


# ------------------------------------------------------------------ coordinator
def run_config(cname, impls, mode, rounds, warmup, log) -> dict:
    threads, clock = MODES[mode]
    workers = {}
    try:
        for impl in impls:
            workers[impl] = Worker(impl, cname, threads, clock, warmup, log)
            print(f"   {impl:26s} built and warmed up in {workers[impl].info['build_s']:6.1f} s",
                  flush=True)
        load0 = os.getloadavg()
        times = {k: [] for k in impls}
        for r in range(rounds):
            order = impls[r % len(impls):] + impls[:r % len(impls)]
            for impl in order:
                if clock == "wall":
                    # the OpenMP threads of the worker that stepped last spin-wait for
                    # tens of ms after their last parallel region (libgomp's default):
                    # let them go to sleep before the next worker's step is timed
                    time.sleep(PAUSE)
                times[impl].append(workers[impl].ask("step")["t"])
        load1 = os.getloadavg()
        stats = {k: w.ask("stats") for k, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}

    def ratio(a, b):  # median over rounds of time(b) / time(a): how much faster a is
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

    ours = [k for k in ("spikedsl", "spikedsl+compile") if k in impls]
    return {"mode": mode, "threads": threads, "clock": clock, "rounds": rounds,
            "load_average": [round(load0[0], 2), round(load1[0], 2)],
            "median_ms": med, "min_ms": {k: min(v) * 1e3 for k, v in times.items()},
            "speedup": {o: {k: ratio(o, k) for k in impls} for o in ours},
            "peak_mib": {k: s["peak_mib"] for k, s in stats.items()},
            "page_faults_per_step": {k: s["faults"] for k, s in stats.items()},
            "dynamo": {k: s["dynamo"] for k, s in stats.items() if k.endswith("+compile")},
            "build_s": {k: w.info["build_s"] for k, w in workers.items()}}


def print_table(res: dict, impls: list[str]) -> None:
    ours = list(res["speedup"])
    la = res["load_average"]
    print(f"   mode {res['mode']}: {res['threads']} thread(s), "
          f"{'CPU time' if res['clock'] == 'cpu' else 'wall clock'}, {res['rounds']} rounds, "
          f"load average {la[0]:.1f} -> {la[1]:.1f}")
    head = f"   | {'implementation':26s} | median ms | min ms |"
    for o in ours:
        head += f" {o} is x faster |"
    print(head + " peak MiB | page faults |")
    for k in impls:
        row = f"   | {k:26s} | {res['median_ms'][k]:9.1f} | {res['min_ms'][k]:6.1f} |"
        for o in ours:
            row += f" {res['speedup'][o][k]:{len(o) + 13}.2f} |"
        print(row + f" {res['peak_mib'][k]:8.0f} | {res['page_faults_per_step'][k]:11.0f} |")
    for k, d in res["dynamo"].items():
        print(f"   {k}: {d['graphs']} graph(s), {d['graph_breaks']} graph break(s), "
              f"frames {d['frames']}")


NAMES = {"spikedsl": "spikedsl (eager)", "spikedsl+compile": "spikedsl + compile",
         "snntorch-same": "snnTorch, same semantics", "snntorch-same+compile":
         "snnTorch, same semantics + compile", "snntorch-default": "snnTorch defaults",
         "snntorch-default+compile": "snnTorch defaults + compile", "norse": "Norse",
         "gemm": "matrix products alone (floor)",
         "gemm-onednn": "matrix products alone, dense ones through oneDNN"}


def markdown(results: dict) -> str:
    """The tables of docs/benchmarks.md from the JSON results."""
    out = []
    for cname, entry in results["configs"].items():
        cfg = entry["config"]
        for mode in MODES:
            res = entry.get(mode)
            if res is None:
                continue
            la = res["load_average"]
            out.append(f"**{cname}** ({cfg['kind']}, T = {cfg['T']}, batch {cfg['B']}), "
                       f"{res['threads']} thread(s), "
                       f"{'CPU time' if res['clock'] == 'cpu' else 'wall clock'}, "
                       f"load average {la[0]:.1f} -> {la[1]:.1f}:\n")
            ours = list(res["speedup"])
            out.append("| implementation | median ms | " + " | ".join(
                f"{NAMES[o]} is x faster" for o in ours) + " | peak MiB | page faults / step |")
            out.append("|---|---:|" + "---:|" * len(ours) + "---:|---:|")
            for k, ms in res["median_ms"].items():
                ratios = " | ".join(f"{res['speedup'][o][k]:.2f}" for o in ours)
                out.append(f"| {NAMES.get(k, k)} | {ms:.1f} | {ratios} | "
                           f"{res['peak_mib'][k]:.0f} | "
                           f"{res['page_faults_per_step'][k]:.0f} |")
            out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="mlp25,mlp100,conv25,conv100")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--modes", default="cpu1,wall2")
    ap.add_argument("--rounds", type=int, default=15, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-check", action="store_true", help="skip the float64 comparison")
    ap.add_argument("--log", default=os.devnull, help="the workers' stderr goes here")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", metavar="JSON", help="print the tables of a --json file")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        impl, cname, threads, clock, warmup = args.worker
        worker(impl, cname, int(threads), clock, int(warmup))
        return
    if args.markdown:
        with open(args.markdown) as fh:
            print(markdown(json.load(fh)))
        return
    impls = args.impls.split(",")
    results: dict = {"torch": torch.__version__, "cpus": os.cpu_count(), "configs": {}}
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    with open(args.log, "a") as log:
        for cname in args.configs.split(","):
            cfg = CONFIGS[cname]
            print(f"\n== {cname}: {cfg}", flush=True)
            entry: dict = {"config": cfg}
            if not args.no_check:
                num = check_numerics(cfg)
                entry["numerics"] = num
                print(f"   spikedsl vs snntorch-same (float64, same weights): spikes equal "
                      f"{num['spikes_equal']} ({num['spikes']} spikes), max relative gradient "
                      f"difference {num['max_rel_grad_diff']:.1e}", flush=True)
            for mode in args.modes.split(","):
                res = run_config(cname, impls, mode, args.rounds, args.warmup, log)
                entry[mode] = res
                print_table(res, impls)
            results["configs"][cname] = entry
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
