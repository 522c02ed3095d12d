"""The NEST target: a network of NEST's built-in models, run with PyNEST
(the ``nest-simulator`` package, ``pip install spikedsl[nest]``;
docs/nest.md).

Entry points (spikedsl.targets registers them):

* ``check(net)``: the NEST part of ``spikedsl.targets.refusal``: every neuron
  layer matched to a NEST model (:mod:`.match`, :mod:`.models`), every
  projection planned (:mod:`.plan`); raises ``Unsupported`` (no NEST import);
* ``schedule(net)``: the network whose reference run NEST reproduces (NEST
  delivers a spike at least one step later than a feed-forward projection
  of spikedsl does; ``spikedsl verify`` compares under this mapping);
* ``run(net, inputs, weights=, record=, threads=)``: numpy in, numpy out, the
  output dict of every target.

Threads: ``threads`` (NEST's ``local_num_threads``); the network has no
randomness of NEST's, so the result does not depend on the number of
threads.  MPI: NEST's own (``mpirun -np N python script.py`` with an MPI
build of NEST); the wheel from the package index is built without it.
"""

from __future__ import annotations

import os

import numpy as np

from spikedsl import ir
from spikedsl.lowering import weights as _weights
from spikedsl.targets.nest.plan import Plan, make_plan
from spikedsl.targets.nest.plan import schedule as _schedule


def plan(net: ir.LNetwork, weights=None) -> Plan:
    """The NEST network of ``net`` (weights: a dict or file for per-neuron parameters)."""
    W = _weights.load_weights(net, weights) if (weights is not None or net.weights) else {}
    return make_plan(net, W)


def check(net: ir.LNetwork, **_options) -> None:
    """The NEST part of ``spikedsl.targets.refusal`` (raises ``Unsupported``)."""
    make_plan(net, _weights.load_weights(net) if net.weights else {})


def schedule(net: ir.LNetwork) -> ir.LNetwork:
    """The network (delays) NEST runs; ``net`` itself when it is the same."""
    return _schedule(net, plan(net))


def mpi_available() -> bool:
    """Whether the installed NEST is built with MPI (asked in a child process, see
    :func:`run`)."""
    return bool(_nest_call(_have_mpi))


def _have_mpi() -> bool:
    from spikedsl.targets.nest.runtime import import_nest

    return bool(import_nest().GetKernelStatus("build_info")["have_mpi"])


def _nest_call(fn, *args):
    """``fn(*args)`` where NEST may be loaded: in a child process. NEST's wheel
    brings its own OpenMP runtime; in a process that also runs torch's compiled
    (OpenMP) kernels the two abort the process. ``SPIKEDSL_NEST_IN_PROCESS=1``
    runs in this process (MPI runs under mpirun need it)."""
    if os.environ.get("SPIKEDSL_NEST_IN_PROCESS") == "1":
        return fn(*args)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _inputs(net: ir.LNetwork, inputs) -> dict[str, np.ndarray]:
    from spikedsl.runtime.reference import encode, input_dict

    ins = net.inputs
    inputs = input_dict(net, inputs if inputs is not None else {})
    out = {}
    for lay in ins:
        if lay.name not in inputs:
            raise ValueError(f"missing input '{lay.name}' of network '{net.name}'")
        x = _weights.to_numpy(inputs[lay.name]).astype(np.float64)
        if x.ndim == len(lay.shape) + 1:
            x = encode(lay, x, net.steps)
        if x.ndim != len(lay.shape) + 2:
            raise ValueError(f"input '{lay.name}' must be [T, B, {', '.join(map(str, lay.shape))}]"
                             f" or [B, ...], got shape {list(x.shape)}")
        x = x.reshape(x.shape[:2] + tuple(lay.shape))
        if lay.encoder == "spikes" and not np.all((x == 0) | (x == 1)):
            raise ValueError("a spike input must hold only 0 and 1 (encode it first)")
        out[lay.name] = x
    return out


def run(net: ir.LNetwork, inputs=None, *, weights=None, dtype=np.float64, record=None,
        seed: int = 0, threads: int = 1, batch: int | None = None,
        timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Run ``net`` in NEST on encoded inputs ``[T, B, ...]`` (or raw ``[B, ...]``);
    returns the outputs and the traces of ``record`` that NEST can record
    (spikes, states after the reset: ``"h"``, ``"h.V_m"``), ``[T, B, ...]``.
    ``threads``: NEST's ``local_num_threads``; ``batch``: the samples of a
    network without inputs; ``timings``: filled with the seconds of the phases."""
    del dtype  # NEST computes in double precision
    W = _weights.init_weights(net, seed)
    W.update(_weights.load_weights(net, weights))
    p = make_plan(net, W)
    X = _inputs(net, inputs)
    T = next(iter(X.values())).shape[0] if X else net.steps
    B = next(iter(X.values())).shape[1] if X else (batch or 1)
    out, times = _nest_call(_simulate, p, X, W, T, B, list(record or ()), threads)
    if timings is not None:
        timings.update(times)
    return out


def _simulate(plan, X, W, T, B, record, threads):
    """One NEST simulation (in this process); returns (outputs, phase timings)."""
    from spikedsl.targets.nest.runtime import simulate

    times: dict[str, float] = {}
    out = simulate(plan, X, W, T, B, record, threads=threads, timings=times)
    return out, times


__all__ = ["check", "mpi_available", "plan", "run", "schedule"]
