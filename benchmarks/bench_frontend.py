"""Front-end speed: parse + check + lower of a 200-line spec with 5 neurons
(warm, in process) and ``spikedsl check FILE`` as a fresh process.

Run: .venv/bin/python benchmarks/bench_frontend.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

NEURON = """
neuron N{i} {{
    param tau_mem = {tau} ms [trainable, range(1 ms, 100 ms)]
    param tau_syn = 5 ms
    param v_th = 1.0
    param v_reset = 0.0
    param r = 1.0
    state syn = 0.0
    state v = 0.0
    input I
    dsyn/dt = -syn / tau_syn + I / tau_syn
    dv/dt = (v_reset - v + r * syn) / tau_mem
    spike v >= v_th
    reset v = v_reset
    refractory 1 ms
    surrogate atan(alpha = 2)
}}
"""


def make_spec() -> str:
    parts = [NEURON.format(i=i, tau=10 + i) for i in range(5)]
    net = ["network Net {", "    dt = 1 ms", "    steps = 25", "    input x[64] : poisson(max_rate = 0.5)"]
    prev = "x"
    for k in range(40):
        net.append(f"    layer h{k}[32] = N{k % 5}(tau_mem = {10 + k % 7} ms) <- dense({prev})")
        prev = f"h{k}"
    net += [f"    output {prev}", f"    output {prev}.v", "}"]
    tests = []
    for k in range(10):
        tests += [f'test "t{k}" {{', f"    neuron = N{k % 5}", "    dt = 0.1 ms",
                  "    drive I = 2.0", "    run 20 ms", "    expect count(spikes) >= 1", "}"]
    return "\n".join(parts + net + tests) + "\n"


def main() -> None:
    import spikedsl

    text = make_spec()
    lines = text.count("\n")
    spikedsl.loads(text)  # warm: grammar built, SymPy results cached
    times, cpu = [], []
    for _ in range(20):
        t0, c0 = time.perf_counter(), time.process_time()
        spikedsl.loads(text)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    warm = statistics.median(times) * 1000
    warm_cpu = statistics.median(cpu) * 1000
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.spk")
        with open(path, "w") as fh:
            fh.write(text)
        exe = os.path.join(os.path.dirname(sys.executable), "spikedsl")
        cmd = [exe if os.path.exists(exe) else sys.executable, "check", "-q", path]
        if not os.path.exists(exe):
            cmd[1:1] = ["-m", "spikedsl.cli"]
        subprocess.run(cmd, check=True)  # fills the on-disk cache
        import resource

        fresh, fresh_cpu = [], []
        for _ in range(5):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            fresh.append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            fresh_cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    print(f"spec: {lines} lines, 5 neurons, 40 layers, 10 test blocks")
    print(f"parse+check+lower (warm, median of 20): {warm:.1f} ms wall, {warm_cpu:.1f} ms CPU"
          "   (target < 100 ms)")
    print(f"`spikedsl check` fresh process (median of 5): {statistics.median(fresh):.2f} s wall, "
          f"{statistics.median(fresh_cpu):.2f} s CPU   (target < 1 s)")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
