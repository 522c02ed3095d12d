"""How sinabs, Rockpool and Lava-dl read NIR neurons (``import-nir
--convention sinabs|rockpool|lava``; docs/nir.md, "Conventions").

Each tool runs NIR's neurons with its own per-step update rather than NIR's
equations: :func:`tool_semantics` adjusts a node's parameters for the
tool, :func:`tool_lines` writes the tool's step as ``update`` statements, and
:func:`rockpool_dt` recovers the ``dt`` a Rockpool graph stores in ``r``.
"""

from __future__ import annotations

import math

import numpy as np

# which neuron node types each tool reads
TOOL_KINDS = {"sinabs": ("IF", "LIF", "LI"), "rockpool": ("LIF", "CubaLIF", "LI"),
              "lava": ("LIF", "CubaLIF")}


def tool_semantics(n, kind: str, P: dict, convention: str, dt: float, notes):
    """The per-step readings of graphs written by sinabs, Rockpool and Lava-dl
    (docs/nir.md, "Conventions"); adjusts ``P`` in place.  Returns (disc, op).

    * sinabs (``sinabs.nir.from_nir``): time constants counted in steps; IF is
      ``IAFSqueeze`` (v += I, r ignored, min_v_mem = -v_threshold), LIF is
      ``LIFSqueeze`` (v = exp(-1/tau) v + I, v_leak must be 0), LI is
      ``ExpLeakSqueeze`` (no spikes); spike v >= v_threshold, subtractive reset.
    * rockpool (``rockpool.nn.modules.torch.nir``): time constants in seconds;
      LIF is ``LIFNeuronTorch`` (v = exp(-dt/tau) v + I + v_leak), CubaLIF is
      ``LIFTorch`` (syn = exp(-dt/tau_syn) (syn + I), then v = exp(-dt/tau_mem) v
      + syn + v_leak), LI is ``ExpSynTorch`` (v = exp(-dt/tau) (v + I)); r and
      w_in only carry dt; spike v >= v_threshold, subtractive reset.
    * lava (``lava.lib.dl.netx.nir_lava``, Loihi's CUBA neuron): time constants
      counted in steps (decay = 1/tau); syn = (1 - 1/tau_syn) syn + w_in/tau_syn I,
      then v = (1 - 1/tau_mem) v + r syn (the new current); spike v >= v_threshold,
      reset to v_reset.  LIF: the same without the current.
    """
    from spikedsl.targets.nir.importer import TIME_PARAMS, _node_err

    if kind not in TOOL_KINDS[convention]:
        raise _node_err(n.name, kind, f"{convention} has no {kind} neuron (it reads "
                        f"{', '.join(TOOL_KINDS[convention])})")
    if convention in ("sinabs", "lava"):
        for p in TIME_PARAMS:  # steps -> seconds of the imported network
            if p in P:
                P[p] = P[p] * dt
    if convention == "sinabs" and kind == "LIF" and np.any(P["v_leak"] != 0):
        raise _node_err(n.name, kind, "sinabs reads LIF only with v_leak = 0")
    multi = (f"{convention}'s spike function may emit several spikes in one step; here a "
             "neuron spikes at most once a step and the rest of its charge stays in v")
    if convention in ("sinabs", "rockpool") and kind != "LI" and multi not in notes:
        notes.append(multi)
    return convention, (None if kind == "LI" else ">=")


def rockpool_dt(nodes: dict, notes: list[str]) -> float | None:
    """The dt a Rockpool graph was written with: its ``to_nir`` stores
    r = tau exp(-dt/tau) / dt, solved here for dt (Newton on dt exp(dt/tau) =
    tau / r); None without such a neuron."""
    found = []
    for n in nodes.values():
        tau = n.f.get("tau_mem", n.f.get("tau")) if n.type in ("LIF", "CubaLIF", "LI") else None
        if tau is None or n.f.get("r") is None:
            continue
        t = float(np.asarray(tau, dtype=np.float64).reshape(-1)[0])
        r = float(np.asarray(n.f["r"], dtype=np.float64).reshape(-1)[0])
        if not (t > 0 and r > 0 and math.isfinite(t) and math.isfinite(r)):
            continue
        c, d = t / r, min(t / r, t)
        for _ in range(60):
            f, df = d * math.exp(d / t) - c, math.exp(d / t) * (1 + d / t)
            d -= f / df
        found.append(d)
    if not found:
        return None
    if max(found) - min(found) > 1e-9 * max(found):
        notes.append(f"the neurons' r give different dt ({min(found)!r} .. {max(found)!r} s); "
                     f"took {found[0]!r} s")
    return found[0]


def tool_lines(kind: str, disc: str) -> list[str]:
    """The step of a neuron read with a tool's convention (tool_semantics)."""
    if disc == "sinabs":
        if kind == "IF":
            return ["    update v = max(v + I, -v_threshold)"]
        return ["    update v = exp(-dt / tau) * v + I"]
    if disc == "rockpool":
        if kind == "CubaLIF":
            return ["    update syn = exp(-dt / tau_syn) * (syn + I)",
                    "    update v = exp(-dt / tau_mem) * v + exp(-dt / tau_syn) * (syn + I) "
                    "+ v_leak"]
        if kind == "LI":
            return ["    update v = exp(-dt / tau) * (v + I)"]
        return ["    update v = exp(-dt / tau) * v + I + v_leak"]
    if kind == "CubaLIF":  # lava
        return ["    update syn = (1 - dt / tau_syn) * syn + w_in * dt / tau_syn * I",
                "    update v = (1 - dt / tau_mem) * v + r * ((1 - dt / tau_syn) * syn "
                "+ w_in * dt / tau_syn * I)"]
    return ["    update v = (1 - dt / tau) * v + r * I"]
