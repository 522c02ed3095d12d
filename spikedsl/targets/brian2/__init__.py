"""The Brian2 target (docs/brian2.md): a readable Brian2 script with physical
units, and the in-memory network built from that same script.

* :func:`convert` -> the script (Python source, deterministic);
* :func:`build` -> ``(brian2.Network, handles)`` for given inputs;
* :func:`simulate` / :func:`run` -> ``{output or record key: array [T, B, ...]}``,
  the same dictionary as the torch target's ``run``.

The schedule that reproduces docs/semantics.md exactly is described in
``spikedsl/targets/brian2/plan.py`` and docs/brian2.md.  Brian2 is imported
only when a network is built.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Any

import numpy as np

from spikedsl import ir
from spikedsl.lowering import weights as _weights
from spikedsl.resources import templates_dir
from spikedsl.targets import get as get_target
from spikedsl.targets.brian2.plan import WHEN, Plan, make_plan

DEVICES = get_target("brian2").caps.devices  # runtime, numpy, cython, cpp_standalone
UNITLESS_DT = 1e-3  # seconds of one Brian2 step when the spec has no time unit


# ----------------------------------------------------------------- rendering
def _pyrepr(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple):
        inner = ", ".join(_pyrepr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(_pyrepr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_pyrepr(k)}: {_pyrepr(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v).__name__)


def _code(text: str, indent: int) -> str:
    """A code string as a Python literal (triple-quoted when multi-line)."""
    if "\n" not in text:
        return json.dumps(text)
    pad = " " * (indent + 4)
    body = "\n".join(pad + line for line in text.splitlines())
    return f'"""\n{body}\n{pad}"""'


@lru_cache(maxsize=1)
def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / "brian2")),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["pyrepr"] = _pyrepr
    env.filters["code"] = _code
    return env


@lru_cache(maxsize=1)
def runtime_source() -> str:
    """The helper functions copied into every script (without their imports)."""
    path = os.path.join(os.path.dirname(__file__), "runtime.py")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    text = text.split("# --- begin runtime (copied into generated scripts) ---\n", 1)[1]
    lines = [ln for ln in text.splitlines() if not re.match(r"^(import |from )\S", ln)]
    return "\n".join(lines).strip("\n") + "\n\n\n" + _weights.generated_source()


def _dt_expr(net: ir.LNetwork) -> tuple[str, str]:
    if net.dt_unit is None:
        return f"{UNITLESS_DT!r} * second", "1 ms (one spec time unit)"
    from spikedsl.ir.units import parse_unit

    return f"{net.dt!r} * second", f"{net.dt / parse_unit(net.dt_unit)[0]:g} {net.dt_unit}"


def plan(net: ir.LNetwork) -> Plan:
    return make_plan(net)


def check(net: ir.LNetwork, **_options) -> None:
    """The Brian2 part of ``spikedsl.targets.refusal``: plan the script (no
    brian2 import; raises ``Unsupported``)."""
    make_plan(net)


def convert(net: ir.LNetwork, *, device: str = "runtime", weights=None) -> str:
    """The Brian2 script of ``net`` (deterministic).  ``device`` is the default
    of the script's command line; ``weights`` (a file name; default: the
    network's ``weights = "..."`` file) is the default of its ``--weights``:
    weights are loaded when the script runs, never embedded."""
    if isinstance(weights, str | os.PathLike):
        weights_path = os.path.abspath(os.fspath(weights))
    else:
        weights_path = net.weights
    if weights_path is not None and not weights_path.endswith(".npz"):
        weights_path = None  # the script reads .npz only (no torch needed)
    if device not in DEVICES:
        raise ValueError(f"unknown device '{device}' (known: {', '.join(DEVICES)})")
    p = make_plan(net)
    dt_expr, dt_text = _dt_expr(net)
    units = sorted(p.units | {"second"})
    src = os.path.basename(net.file) if net.file else "<spec>"
    text = _env().get_template("script.py.j2").render(
        net=net, source=f"{src}:{net.source_line}", dt_expr=dt_expr, dt_text=dt_text,
        when=WHEN, units=units, runtime=runtime_source(),
        inputs=_pyrepr({name: shape for name, shape, _ in p.inputs}),
        outputs=_pyrepr([(n, k, r) for n, k, r in p.outputs]),
        records=list(p.records.values()), arrays=init_table(net),
        blocks=p.blocks, late=p.late, script_name=f"{net.name.lower()}_brian2.py",
        weights_path=weights_path, device=device)
    return text


@lru_cache(maxsize=32)
def _compiled(source: str, name: str):
    return compile(source, f"<spikedsl brian2 script {name}>", "exec")


def module(net: ir.LNetwork) -> dict:
    """Execute the generated script; returns its namespace (``build``, ``run``...)."""
    src = convert(net)
    ns: dict = {"__name__": f"spikedsl_brian2_{net.name}"}
    exec(_compiled(src, net.name), ns)
    return ns


# ----------------------------------------------------------------- weights
def init_table(net: ir.LNetwork) -> list[str]:
    """Rows ``(name, shape, dist, args, magnitude)`` of the script's ``ARRAYS``: the
    initialisation of spikedsl.lowering.weights, drawn by the script's own copy."""
    rows = []
    for a in _weights.arrays(net):
        args = tuple(float(x) for x in a.init.args)
        rows.append(f"({a.name!r}, {_pyrepr(a.shape)}, {a.init.dist!r}, {args!r}, "
                    f"{a.init.magnitude})")
    return rows


read_weights = _weights.read_weights_file  # .npz or a torch checkpoint


def load_weights(net: ir.LNetwork, weights=None, seed: int = 0) -> dict[str, np.ndarray]:
    """``weights``: dict, .npz / checkpoint path, or None (the network's own
    ``weights = "..."`` file, else the initialisation of every target for
    ``seed``)."""
    if weights is None and net.weights is None:
        return initial_weights(net, seed)
    return _weights.load_weights(net, weights)


def initial_weights(net: ir.LNetwork, seed: int = 0) -> dict[str, np.ndarray]:
    return _weights.init_weights(net, seed)


# ----------------------------------------------------------------- running
def _inputs(net: ir.LNetwork, inputs) -> dict[str, np.ndarray]:
    ins = net.inputs
    if inputs is None:
        return {lay.name: np.zeros((net.steps, 1) + tuple(lay.shape)) for lay in ins}
    from spikedsl.runtime.reference import encode, input_dict

    inputs = input_dict(net, inputs)
    out = {}
    for lay in ins:
        if lay.name not in inputs:
            raise ValueError(f"no data for input '{lay.name}'")
        x = _weights.to_numpy(inputs[lay.name]).astype(np.float64)
        if x.ndim == len(lay.shape) + 1:  # raw [B, ...]: encode as the torch target does
            x = encode(lay, x, net.steps)
        out[lay.name] = x
    return out


def build(net: ir.LNetwork, *, weights=None, dtype=np.float64, inputs=None, record=None):
    """``(brian2.Network, handles)`` for encoded ``inputs`` (default: one sample
    of zeros).  Run it with ``network.run(handles["duration"], namespace={})``
    and read it with ``handles["collect"]()``."""
    import brian2 as b2

    ns = module(net)
    b2.prefs.core.default_float_dtype = np.dtype(dtype).type
    network, handles = ns["build"](_inputs(net, inputs), load_weights(net, weights),
                                   list(record or ()))
    handles["duration"] = handles["steps"] * ns["DT"]
    handles["collect"] = lambda: ns["collect"](handles)
    return network, handles


def simulate(net: ir.LNetwork, inputs=None, *, weights=None, device: str = "runtime",
             record=None, dtype=np.float64, batch_size: int | None = None,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Run ``net`` in Brian2 on encoded ``inputs`` ``[T, B, ...]``; returns the
    outputs (``LOutput.name`` -> ``[T, B, ...]`` or reduced) and the traces
    named in ``record`` (``"h"``, ``"h.v"``, ``"h.v_pre"``, plastic weights
    ``"h.weight"`` as ``[T, B, out, in]``).  The batch runs as B copies of the
    network, ``batch_size`` samples at a time."""
    if device not in DEVICES:
        raise ValueError(f"unknown device '{device}' (known: {', '.join(DEVICES)})")
    record = list(record or ())
    known = [r.key for r in make_plan(net).records.values()]
    for key in record:  # checked before Brian2 is imported (its excepthook logs any error)
        if key not in known:
            raise KeyError(f"cannot record '{key}' (known: {', '.join(known)})")
    W = load_weights(net, weights, seed)
    X = _inputs(net, inputs)
    import brian2 as b2

    ns = module(net)
    B = next(iter(X.values())).shape[1] if X else 1
    chunk = batch_size or B
    old_dtype = b2.prefs.core.default_float_dtype
    b2.prefs.core.default_float_dtype = np.dtype(dtype).type
    parts = []
    try:
        _quiet(b2)
        for start in range(0, B, chunk):
            xb = {k: v[:, start:start + chunk] for k, v in X.items()}
            parts.append(ns["run"](xb, W, record, device))
    finally:
        b2.prefs.core.default_float_dtype = old_dtype
    if len(parts) == 1:
        return parts[0]
    reduced = {o.name for o in net.outputs if o.reduce != "none"}
    return {k: np.concatenate([p[k] for p in parts], axis=0 if k in reduced else 1)
            for k in parts[0]}


def run(net: ir.LNetwork, inputs, weights=None, dtype=np.float64, record=None,
        device: str = "runtime") -> dict[str, np.ndarray]:
    """Same signature as the torch target's ``run``."""
    if not isinstance(dtype, type) and hasattr(dtype, "is_floating_point"):
        dtype = np.float32 if "32" in str(dtype) else np.float64
    return simulate(net, inputs, weights=weights, record=record, dtype=dtype, device=device)


def _quiet(b2) -> None:
    """Brian2 logs to a file per process and warns about our explicit schedule."""
    b2.BrianLogger.log_level_error()


def spike_times(out: np.ndarray, dt: float) -> list[np.ndarray]:
    """Spike times of a [T, N] train on the clock of docs/semantics.md:
    a spike in step n belongs to t = (n + 1) dt."""
    return [(np.nonzero(out[:, k])[0] + 1) * dt for k in range(out.shape[1])]


__all__ = ["DEVICES", "build", "check", "convert", "load_weights", "module", "read_weights", "run",
           "simulate", "spike_times"]
