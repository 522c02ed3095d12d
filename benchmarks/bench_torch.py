"""Training-step time of the torch target against hand-written snnTorch and Norse.

One training step = forward + backward + Adam, CPU, float32, inputs already
encoded ([T, B, ...] Poisson spikes), loss cross-entropy on output spike
counts.  Implementations of the same network:

* ``spikedsl``          the generated module (fast path, eager)
* ``spikedsl+compile``  the same with ``compile=True`` (torch.compile of the scans)
* ``snntorch``          snn.Leaky(reset_mechanism="zero", reset_delay=False) in a loop
* ``snntorch+compile``  the same module under torch.compile
* ``norse``             norse LIFBoxCell in a loop (its own LIF discretisation:
                        same cost, not the same numbers)

The timings are interleaved (one step of every implementation per round) so
that load changes on a shared machine hit all of them alike; the median of
the rounds is reported.  Before timing, spikedsl and snnTorch are checked to
give the same spikes and gradients in float64 on the same weights.

    .venv/bin/python benchmarks/bench_torch.py                 # all configurations
    .venv/bin/python benchmarks/bench_torch.py --configs mlp25 --rounds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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
}


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
    return [("proj", torch.nn.Conv2d(1, 12, 5)), ("lif", None), ("pool", 2),
            ("proj", torch.nn.Conv2d(12, 32, 5)), ("lif", None), ("pool", 2),
            ("flat", None), ("proj", torch.nn.Linear(32 * 4 * 4, 10)), ("lif", None)]


class SnnTorchNet(torch.nn.Module):
    def __init__(self, cfg, spike_grad=None):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        spike_grad = spike_grad or surrogate.fast_sigmoid(25)
        self.kinds, mods = [], []
        for kind, mod in _layers(cfg):
            self.kinds.append(kind)
            if kind == "lif":
                # beta as a float64 tensor: a Python 0.9 would become a float32 buffer
                mod = snn.Leaky(beta=torch.tensor(0.9, dtype=torch.float64), threshold=1.0,
                                reset_mechanism="zero", reset_delay=False, spike_grad=spike_grad)
            mods.append(mod if isinstance(mod, torch.nn.Module) else torch.nn.Identity())
        self.mods = torch.nn.ModuleList(mods)
        self.pools = [mod for kind, mod in _layers(cfg)]

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
                    h = h.to(x.dtype)
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


def copy_weights(src, dst_mods, cfg):
    """spikedsl parameters -> the hand-written model (same initial weights)."""
    projs = [m for m in dst_mods if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    names = ["h", "o"] if cfg["kind"] == "mlp" else ["c1", "c2", "o"]
    with torch.no_grad():
        for name, m in zip(names, projs):
            m.weight.copy_(getattr(src, name).weight)
            m.bias.copy_(getattr(src, name).bias)


def make(impl, cfg):
    """-> (parameters, forward function)"""
    base, _ = spikedsl_model(cfg)
    if impl.startswith("spikedsl"):
        m, fwd = spikedsl_model(cfg, compile=impl.endswith("compile"))
        m.load_state_dict(base.state_dict())
        return m, fwd
    if impl.startswith("snntorch"):
        m = SnnTorchNet(cfg)
        copy_weights(base, m.mods, cfg)
        f = torch.compile(m) if impl.endswith("compile") else m
        return m, f
    m = NorseNet(cfg)
    copy_weights(base, m.mods, cfg)
    return m, m


def check_numerics(cfg, B=8, seed=1) -> dict:
    """spikedsl vs snnTorch in float64 on the same weights: outputs and gradients."""
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
    ref = SnnTorchNet(cfg, spike_grad=lambda x: FastSigmoid64.apply(x, 25)).double()
    copy_weights(m, ref.mods, cfg)
    shape = (cfg["T"], B, 784) if cfg["kind"] == "mlp" else (cfg["T"], B, 1, 28, 28)
    x = (torch.rand(shape, dtype=torch.float64) < 0.5).double()
    y = torch.randint(0, 10, (B,))
    a, b = fwd(x), ref(x)
    torch.nn.functional.cross_entropy(a.sum(0), y).backward()
    torch.nn.functional.cross_entropy(b.sum(0), y).backward()
    projs = [q for q in ref.mods if isinstance(q, torch.nn.Linear | torch.nn.Conv2d)]
    names = ["h", "o"] if cfg["kind"] == "mlp" else ["c1", "c2", "o"]
    gmax = 0.0
    for name, q in zip(names, projs):
        g1 = getattr(m, name).weight.grad
        gmax = max(gmax, float((g1 - q.weight.grad).abs().max() / g1.abs().max().clamp(min=1e-30)))
    return {"spikes_equal": bool(torch.equal(a, b)), "spikes": int(a.sum()),
            "max_rel_grad_diff": gmax}


def data(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (cfg["T"], cfg["B"], 784) if cfg["kind"] == "mlp" else (cfg["T"], cfg["B"], 1, 28, 28)
    x = (torch.rand(shape, generator=g) < 0.2).float()
    y = torch.randint(0, 10, (cfg["B"],), generator=g)
    return x, y


def trainer(impl, cfg):
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


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for ln in fh:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    return 0


def memory_child(impl, cname) -> None:
    """Peak resident memory added by training steps (after warm-up), in MiB."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    cfg = CONFIGS[cname]
    step = trainer(impl, cfg)
    for _ in range(2):
        step()
    import ctypes
    import gc

    gc.collect()
    try:  # give freed memory back to the OS so that the peak below is the step's own
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    rss = _vm("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        pass
    for _ in range(3):
        step()
    print(json.dumps({"peak_mib": (_vm("VmHWM") - rss) / 1024}))


def measure_memory(impl, cname) -> float | None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", impl,
                        cname], capture_output=True, text=True, env=env, timeout=3600, check=False)
    for ln in r.stdout.splitlines()[::-1]:
        if ln.startswith("{"):
            return json.loads(ln)["peak_mib"]
    print(r.stderr[-2000:], file=sys.stderr)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="mlp25,mlp100,conv25")
    ap.add_argument("--impls", default="spikedsl,spikedsl+compile,snntorch,snntorch+compile,norse")
    ap.add_argument("--rounds", type=int, default=20, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time steps by the process's CPU time instead of the wall clock "
                         "(robust on a shared machine; use with --threads 1)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    torch.set_num_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    impls = args.impls.split(",")
    results = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}, "
          f"{'CPU time' if args.cpu_time else 'wall clock'}")
    for cname in args.configs.split(","):
        cfg = CONFIGS[cname]
        torch._dynamo.reset()  # every configuration compiles afresh
        print(f"\n== {cname}: {cfg}")
        num = check_numerics(cfg)
        print(f"   spikedsl vs snnTorch (float64, same weights): spikes equal "
              f"{num['spikes_equal']} ({num['spikes']} spikes), max relative gradient "
              f"difference {num['max_rel_grad_diff']:.1e}")
        steps = {}
        for impl in impls:
            t0 = time.perf_counter()
            steps[impl] = trainer(impl, cfg)
            for _ in range(args.warmup):
                steps[impl]()
            print(f"   {impl:18s} built and warmed up in {time.perf_counter() - t0:6.1f} s",
                  flush=True)
        times = {k: [] for k in impls}
        clock = time.process_time if args.cpu_time else time.perf_counter
        for _ in range(args.rounds):
            for impl in impls:
                t0 = clock()
                steps[impl]()
                times[impl].append(clock() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        # per-round ratios: the implementations of one round ran back to back, so a
        # load change between rounds cancels out
        base = "snntorch+compile" if "snntorch+compile" in impls else impls[-1]
        ratio = {k: statistics.median(b / a for a, b in zip(times[k], times[base]))
                 for k in impls}
        mem = {}
        if not args.no_memory:
            for impl in impls:
                mem[impl] = measure_memory(impl, cname)
        print(f"   {'implementation':18s} {'median ms':>10s} {'min ms':>8s} "
              f"{'speed-up vs ' + base:>28s} {'peak MiB':>9s}")
        for impl in impls:
            pm = f"{mem[impl]:.0f}" if mem.get(impl) is not None else "-"
            print(f"   {impl:18s} {med[impl]:10.1f} {min(times[impl]) * 1e3:8.1f} "
                  f"{ratio[impl]:27.2f}x {pm:>9s}")
        results[cname] = {"config": cfg, "numerics": num, "median_ms": med,
                          "min_ms": {k: min(v) * 1e3 for k, v in times.items()},
                          "speedup_median_of_rounds": ratio, "baseline": base,
                          "peak_mib": mem, "load_average": os.getloadavg()[0]}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
