"""Train blocks resolved into a :class:`TrainConfig`: every setting checked
and located (docs/training.md lists them)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from spikedsl import ir
from spikedsl.errors import Diagnostic, SpecError, diag
from spikedsl.frontend.program import DATASETS, LOSSES, METRICS, OPTIMIZERS, SCHEDULES, Program
from spikedsl.runtime import losses as L

CHECKPOINT_FORMAT = 1

# optimiser -> (positional argument order, defaults)
OPTIMIZER_ARGS: dict[str, dict[str, Any]] = {
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
             "amsgrad": False},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01,
              "amsgrad": False},
    "sgd": {"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False,
            "dampening": 0.0},
}
SCHEDULE_ARGS: dict[str, dict[str, Any]] = {
    "none": {},
    "cosine": {"eta_min": 0.0, "t_max": None},
    "step": {"size": None, "gamma": 0.1},
}
assert set(OPTIMIZER_ARGS) == set(OPTIMIZERS) and set(SCHEDULE_ARGS) == set(SCHEDULES)

DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "loss": "ce_rate",
    "optimizer": "adam",
    "schedule": "none",
    "batch": 128,
    "epochs": 10,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
    "compile": False,
    "grad_clip": None,
    "readout": None,
    "checkpoint_every": None,
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
CLASS_LOSSES = ("ce_rate", "mse_rate", "ce_membrane")
RATE_LOSSES = ("ce_rate", "mse_rate")
MEMBRANE_LOSSES = ("mse_membrane", "ce_membrane", "masked_membrane")



# =============================================================== configuration
@dataclass
class TrainConfig:
    """The resolved settings of a ``train`` block (all defaults filled in)."""

    name: str
    network: str
    data: str = "digits"
    data_args: dict[Any, Any] = field(default_factory=dict)
    loss: str = "ce_rate"
    loss_args: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    schedule: str = "none"
    schedule_args: dict[str, Any] = field(default_factory=dict)
    batch: int = 128
    epochs: int = 10
    seed: int = 0
    metrics: list[str] = field(default_factory=list)
    dtype: str = "float32"
    device: str = "cpu"
    compile: bool = False
    grad_clip: float | None = None
    readout: str | None = None
    checkpoint_every: int | None = None
    base_dir: str = "."
    file: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items()}

    def describe_data(self) -> str:
        if not self.data_args:
            return self.data
        parts = [repr(v) if isinstance(v, str) else str(v)
                 for k, v in self.data_args.items() if isinstance(k, int)]
        parts += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                  for k, v in self.data_args.items() if not isinstance(k, int)]
        return f"{self.data}({', '.join(parts)})"


class _Errors:
    def __init__(self, prog: Program | None):
        self.prog = prog
        self.items: list[Diagnostic] = []

    def add(self, code: str, loc, hint: str | None = None, **fields) -> None:
        d = diag(code, loc, **fields)
        if hint:
            d.hint = hint
        self.items.append(d)

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items, self.prog.sources if self.prog else {})


def _value(e: ir.Expr) -> Any:
    """A setting value as plain Python (numbers, strings, names, lists)."""
    if isinstance(e, ir.Num):
        return e.value
    if isinstance(e, ir.Neg) and isinstance(e.operand, ir.Num):
        return -e.operand.value
    if isinstance(e, ir.Str):
        return e.value
    if isinstance(e, ir.Name):
        return {"true": True, "false": False}.get(e.id, e.id)
    if isinstance(e, ir.Attr):
        return f"{e.obj}.{e.attr}"
    if isinstance(e, ir.ListExpr):
        return tuple(_value(i) for i in e.items)
    if isinstance(e, ir.Call):
        inner = ", ".join(str(_value(a)) for a in e.args)
        return f"{e.func}({inner})"
    raise ValueError("not a constant")


def _head(e: ir.Expr) -> str | None:
    return e.func if isinstance(e, ir.Call) else e.id if isinstance(e, ir.Name) else None


def _call_args(e: ir.Expr, table: Mapping[str, Any], what: str, errs: _Errors
               ) -> dict[str, Any]:
    """Arguments of ``name(a, k = v)`` checked against ``table`` (name -> default)."""
    out: dict[str, Any] = {}
    if not isinstance(e, ir.Call):
        return out
    order = list(table)
    for i, a in enumerate(e.args):
        if i >= len(order):
            errs.add("bad-argument", a.loc, what=what,
                     reason=f"too many positional arguments (takes {', '.join(order) or 'none'})")
            break
        try:
            out[order[i]] = _value(a)
        except ValueError:
            errs.add("bad-argument", a.loc, what=what, reason="expected a constant")
    for k in e.kwargs:
        if k.name not in table:
            errs.add("unknown-argument", k.loc, what=what, name=k.name,
                     known=", ".join(table) or "none")
            continue
        if k.name in out:
            errs.add("bad-argument", k.loc, what=what, reason=f"'{k.name}' is given twice")
            continue
        try:
            out[k.name] = _value(k.value)
        except ValueError:
            errs.add("bad-argument", k.value.loc, what=what, reason="expected a constant")
    return out


def _number(v: Any, name: str, loc, errs: _Errors, *, integer=False, lo=None, hi=None,
            strict_lo=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer()
    if ok and lo is not None:
        ok = v > lo if strict_lo else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        rng = ""
        if lo is not None:
            rng = f" {'>' if strict_lo else '>='} {lo:g}"
        if hi is not None:
            rng += f" and <= {hi:g}"
        errs.add("bad-setting", loc, name=name, reason=f"expected {kind}{rng}, got {v!r}")
        return None
    return int(v) if integer else float(v)


def _flag(v: Any, name: str, loc, errs: _Errors) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, float) and v in (0.0, 1.0):
        return bool(v)
    errs.add("bad-setting", loc, name=name, reason=f"expected true or false, got {v!r}")
    return False


def resolve_config(prog: Program, train_name: str | None = None) -> TrainConfig:
    """Resolve a train block's settings (defaults filled in); raises SpecError."""
    if train_name is None:
        if len(prog.trains) != 1:
            have = ", ".join(prog.trains) or "none"
            raise ValueError(f"{prog.file} has train blocks: {have}; name one "
                             "(spikedsl train FILE --train NAME)")
        train_name = next(iter(prog.trains))
    if train_name not in prog.trains:
        raise ValueError(f"no train block '{train_name}' in {prog.file} "
                         f"(it has: {', '.join(prog.trains) or 'none'})")
    t = prog.trains[train_name]
    errs = _Errors(prog)
    s = {st.name: st for st in t.settings}
    file = t.loc.file if t.loc else prog.file
    cfg = TrainConfig(name=t.name, network="", base_dir=os.path.dirname(file) or ".",
                      file=file)
    net_v = s["network"].value
    cfg.network = net_v.id if isinstance(net_v, ir.Name) else str(_value(net_v))
    if cfg.network not in prog.lowered:
        raise SpecError([diag("unknown-network", net_v.loc, name=cfg.network, hint="")],
                        prog.sources)

    def loc(name):
        return s[name].value.loc if name in s else t.loc

    # data
    if "data" in s:
        e = s["data"].value
        cfg.data = _head(e) or "?"
        if cfg.data in DATASETS and isinstance(e, ir.Call):
            for i, a in enumerate(e.args):
                try:
                    cfg.data_args[i] = _value(a)
                except ValueError:
                    errs.add("bad-argument", a.loc, what=cfg.data, reason="expected a constant")
            for k in e.kwargs:
                try:
                    cfg.data_args[k.name] = _value(k.value)
                except ValueError:
                    errs.add("bad-argument", k.value.loc, what=cfg.data,
                             reason="expected a constant")
    # loss / optimiser / schedule (names were checked by the front end)
    for key, table in (("loss", LOSSES), ("optimizer", OPTIMIZER_ARGS),
                       ("schedule", SCHEDULE_ARGS)):
        if key in s:
            e = s[key].value
            name = _head(e) or "?"
            setattr(cfg, key, name)
            if name in table:
                args = dict(table[name])
                args.update(_call_args(e, table[name], name, errs))
                setattr(cfg, f"{key}_args", args)
        else:
            setattr(cfg, f"{key}_args", dict(table[getattr(cfg, key)]))
    for k in ("on", "off"):
        if k in cfg.loss_args:
            cfg.loss_args[k] = _number(cfg.loss_args[k], f"{cfg.loss} {k}", loc("loss"), errs)
    if cfg.loss == "ce_membrane":
        red = cfg.loss_args.get("reduce")
        if red not in L.TIME_REDUCTIONS:
            errs.add("bad-setting", loc("loss"), name="ce_membrane reduce",
                     reason=f"expected one of {', '.join(L.TIME_REDUCTIONS)}, got {red!r}")
    if cfg.loss_args.get("theta") is not None:
        cfg.loss_args["theta"] = _number(cfg.loss_args["theta"], "masked_membrane theta",
                                         loc("loss"), errs)
    for k, v in list(cfg.optimizer_args.items()):
        if k in ("amsgrad", "nesterov"):
            cfg.optimizer_args[k] = _flag(v, f"{cfg.optimizer} {k}", loc("optimizer"), errs)
        else:
            cfg.optimizer_args[k] = _number(v, f"{cfg.optimizer} {k}", loc("optimizer"), errs,
                                            lo=0.0, strict_lo=(k == "lr"))
    if cfg.schedule == "step":
        if cfg.schedule_args.get("size") is None:
            errs.add("missing-argument", loc("schedule"), what="schedule step", name="size")
        else:
            cfg.schedule_args["size"] = _number(cfg.schedule_args["size"], "step size",
                                                loc("schedule"), errs, integer=True, lo=1)
        cfg.schedule_args["gamma"] = _number(cfg.schedule_args["gamma"], "step gamma",
                                             loc("schedule"), errs, lo=0.0)
    if cfg.schedule == "cosine":
        cfg.schedule_args["eta_min"] = _number(cfg.schedule_args["eta_min"], "cosine eta_min",
                                               loc("schedule"), errs, lo=0.0)
        if cfg.schedule_args.get("t_max") is not None:
            cfg.schedule_args["t_max"] = _number(cfg.schedule_args["t_max"], "cosine t_max",
                                                 loc("schedule"), errs, integer=True, lo=1)
    # scalars
    for key, integer, lo in (("batch", True, 1), ("epochs", True, 0), ("seed", True, 0)):
        if key in s:
            try:
                v = _value(s[key].value)
            except ValueError:
                v = None
            r = _number(v, key, loc(key), errs, integer=integer, lo=lo)
            if r is not None:
                setattr(cfg, key, r)
    if "grad_clip" in s:
        try:
            v = _value(s["grad_clip"].value)
        except ValueError:
            v = None
        cfg.grad_clip = _number(v, "grad_clip", loc("grad_clip"), errs, lo=0.0, strict_lo=True)
    if "checkpoint_every" in s:
        try:
            v = _value(s["checkpoint_every"].value)
        except ValueError:
            v = None
        cfg.checkpoint_every = _number(v, "checkpoint_every", loc("checkpoint_every"), errs,
                                       integer=True, lo=1)
    if "compile" in s:
        cfg.compile = _flag(_value(s["compile"].value), "compile", loc("compile"), errs)
    if "dtype" in s:
        v = _value(s["dtype"].value)
        if v not in DTYPES:
            errs.add("bad-setting", loc("dtype"), name="dtype",
                     reason=f"expected one of {', '.join(DTYPES)}, got {v!r}")
        else:
            cfg.dtype = v
    if "device" in s:
        v = _value(s["device"].value)
        if not isinstance(v, str) or v.split(":")[0] not in ("cpu", "cuda", "mps"):
            errs.add("bad-setting", loc("device"), name="device",
                     reason=f"expected cpu or cuda, got {v!r}")
        else:
            cfg.device = v
    if "readout" in s:
        e = s["readout"].value
        if isinstance(e, ir.Name | ir.Attr) or (isinstance(e, ir.Call) and len(e.args) == 1):
            cfg.readout = _value(e)
        else:
            errs.add("bad-setting", e.loc, name="readout",
                     reason="expected an output name such as y, y.v or sum(y)")
    if "metrics" in s:
        v = s["metrics"].value
        items = v.items if isinstance(v, ir.ListExpr) else (v,)
        cfg.metrics = [m for m in (_head(i) for i in items) if m in METRICS]
    errs.raise_if_any()
    return cfg


