"""Training runs (SPEC 1.4): ``train`` blocks executed with the torch target.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikedsl import ir
from spikedsl.atomic import atomic_path
from spikedsl.errors import Diagnostic, SpecError, diag
from spikedsl.frontend.program import DATASETS, LOSSES, METRICS, OPTIMIZERS, SCHEDULES, Program
from spikedsl.runtime import losses as L
from spikedsl.runtime.data import DataError, Dataset, batches, load_dataset

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


# ===================================================================== the task
class _Task:
    """What the loss and the metrics read: the readout, targets, spikes."""

    def __init__(self, cfg: TrainConfig, net: ir.LNetwork, data: Dataset, prog: Program,
                 train_loc):
        self.cfg = cfg
        self.net = net
        errs = _Errors(prog)
        s = {st.name: st for st in prog.trains[cfg.name].settings}

        def loc(name):
            return s[name].value.loc if name in s else train_loc

        # ---------------------------------------------------------------- input
        inputs = net.inputs
        if len(inputs) != 1:
            errs.add("bad-setting", loc("network"), name="network",
                     reason=f"training needs a network with exactly one input; "
                            f"'{net.name}' has {len(inputs)}")
            errs.raise_if_any()
        self.input = inputs[0]
        self.spike_input = self.input.encoder == "spikes"
        sample = tuple(data.shape)
        want = tuple(self.input.shape)
        got = sample[1:] if self.spike_input else sample
        if got != want:
            hint = None
            if int(np.prod(got)) == int(np.prod(want)):
                hint = ("the sizes agree: reshape the data, e.g. digits(shape = flat) gives "
                        "[64] and digits(shape = image) gives [1, 8, 8]")
            what = (f"input '{self.input.name}' of network '{net.name}' and the samples of "
                    f"{cfg.describe_data()}")
            if self.spike_input:
                what += " (spike data is [T, ...] per sample)"
            errs.add("shape-mismatch", loc("data"), hint=hint, what=what, left=list(want),
                     right=list(got))
            errs.raise_if_any()

        # ---------------------------------------------------------------- labels
        if data.y_train is not None and data.y_train.dtype.kind in "iu" and data.n_classes:
            self.labels = "class"
        elif data.y_train is not None:
            self.labels = "frame"
        else:
            self.labels = "none"
        self.n_classes = int(data.n_classes) if self.labels == "class" else 0

        # ---------------------------------------------------------------- readout
        outs = {o.name: o for o in net.outputs}
        if cfg.readout is not None:
            if cfg.readout not in outs:
                errs.add("bad-setting", loc("readout"), name="readout",
                         reason=f"'{cfg.readout}' is not an output of network '{net.name}' "
                                f"(outputs: {', '.join(outs)})",
                         hint=f"add 'output {cfg.readout}' to the network")
                errs.raise_if_any()
            self.readout = outs[cfg.readout]
        else:
            self.readout = self._default_readout(cfg.loss)
        ro = self.readout
        self.trace = ro.reduce == "none"
        self.ro_layer = net.layer(ro.layer)
        self.is_spikes = ro.state is None and self.ro_layer.kind == "neuron" and (
            self.ro_layer.neuron is not None and self.ro_layer.neuron.spiking)
        # the readout layer's spike trace (masked_membrane, spike_mse, rate)
        self.spike_out = next((o for o in net.outputs if o.layer == ro.layer and o.state is None
                               and o.reduce == "none" and self.ro_layer.kind == "neuron"), None)
        self.out_features = int(np.prod(ro.shape))

        loss = cfg.loss
        a = cfg.loss_args
        if loss in CLASS_LOSSES or (loss == "mse_membrane" and self.labels == "class"):
            if self.labels != "class":
                errs.add("bad-setting", loc("loss"), name="loss",
                         reason=f"{loss} needs class labels, but {cfg.describe_data()} "
                                "has none")
            elif self.out_features < self.n_classes:
                errs.add("bad-setting", loc("loss"), name="loss",
                         reason=f"the readout '{ro.name}' has {self.out_features} neurons "
                                f"but the data has {self.n_classes} classes")
        if loss in RATE_LOSSES and not self.is_spikes:
            errs.add("bad-setting", loc("loss"), name="loss",
                     reason=f"{loss} needs a spike readout, but '{ro.name}' is not spikes",
                     hint="name one with 'readout = y' or use a membrane loss")
        if loss in ("mse_membrane", "ce_membrane") and ro.state is None and self.is_spikes:
            errs.add("bad-setting", loc("loss"), name="loss",
                     reason=f"{loss} needs a membrane readout, but '{ro.name}' is spikes",
                     hint=f"add 'output {ro.layer}.v' and set 'readout = {ro.layer}.v'")
        self.target_input = None  # name of the input a loss / spike_mse compares with
        tgt = a.get("target")
        if tgt is not None:
            if tgt != self.input.name:
                errs.add("bad-setting", loc("loss"), name=f"{loss} target",
                         reason=f"'{tgt}' is not the input of network '{net.name}' "
                                f"(its input is '{self.input.name}')")
            self.target_input = self.input.name
        self.target_kind = None  # bce / mse / mse_membrane regression targets
        if loss in ("bce", "mse") or (loss == "mse_membrane" and self.labels != "class"):
            if tgt is not None or self.labels == "none":
                self.target_kind = "input"
                self.target_input = self.input.name
            else:
                self.target_kind = "labels" if self.labels == "class" else "frame"
            n_t = {"input": int(np.prod(want)), "frame": int(np.prod(data.y_train.shape[1:]))
                   if self.labels == "frame" else 0, "labels": self.n_classes}[self.target_kind]
            if self.target_kind == "input" and self.spike_input:
                n_t = int(np.prod(want))
            if n_t != self.out_features:
                errs.add("bad-setting", loc("loss"), name="loss",
                         reason=f"{loss}: the readout '{ro.name}' has {self.out_features} "
                                f"values but the target has {n_t}")
        self.theta = None
        if loss == "masked_membrane":
            self.target_input = self.input.name
            if not (ro.pre_reset and self.trace):
                errs.add("bad-setting", loc("loss"), name="loss",
                         reason="masked_membrane reads the pre-reset membrane trace of the "
                                f"output layer, but the readout is '{ro.name}'",
                         hint=f"add 'output {ro.layer}.v_pre' (and 'readout = "
                              f"{ro.layer}.v_pre' if it is not the first output)")
            elif self.out_features != int(np.prod(want)):
                errs.add("bad-setting", loc("loss"), name="loss",
                         reason=f"masked_membrane: the output layer '{ro.layer}' has "
                                f"{self.out_features} neurons but the input "
                                f"'{self.input.name}' has {int(np.prod(want))}")
            self.theta = a.get("theta")
            if self.theta is None:
                self.theta = self._threshold(self.ro_layer)
                if self.theta is None:
                    errs.add("bad-setting", loc("loss"), name="masked_membrane",
                             reason=f"cannot tell the threshold of layer '{ro.layer}'",
                             hint="give it: masked_membrane(target = x, theta = 1.0)")
        self.binary_readout = loss == "bce" and self.ro_layer.func == "sigmoid"
        # classification (class scores vs labels) or reconstruction (maps vs images)
        self.classify = self.labels == "class" and (
            loss in CLASS_LOSSES or self.target_kind == "labels" or loss == "mse_membrane")

        # ---------------------------------------------------------------- metrics
        metrics = list(cfg.metrics) or (["accuracy"] if self.classify else ["mse"])
        self.metrics = ["loss"] + [m for m in metrics if m != "loss"]
        for m in self.metrics:
            if m == "accuracy" and not self.classify:
                why = (f"{cfg.describe_data()} has none" if self.labels != "class" else
                       f"the loss {loss} does not classify")
                errs.add("bad-setting", loc("metrics"), name="metrics",
                         reason=f"accuracy needs class labels and a classification loss; {why}")
            if m in ("spike_mse", "rate") and self.spike_out is None:
                errs.add("bad-setting", loc("metrics"), name="metrics",
                         reason=f"{m} needs the spike trace of the output layer "
                                f"'{ro.layer}'", hint=f"add 'output {ro.layer}'")
            if m == "spike_mse":
                if self.spike_out is not None and int(np.prod(self.spike_out.shape)) != int(
                        np.prod(want)):
                    errs.add("bad-setting", loc("metrics"), name="metrics",
                             reason=f"spike_mse compares the output spikes of '{ro.layer}' "
                                    f"with the input '{self.input.name}', but their sizes "
                                    "differ")
                if self.target_input is None:
                    self.target_input = self.input.name
        errs.raise_if_any()

    def _default_readout(self, loss: str) -> ir.LOutput:
        outs = list(self.net.outputs)

        def spiking(o):
            la = self.net.layer(o.layer)
            return o.state is None and la.kind == "neuron" and la.neuron is not None and \
                la.neuron.spiking

        if loss in RATE_LOSSES:
            pick = [o for o in outs if spiking(o)]
        elif loss == "masked_membrane":
            pick = [o for o in outs if o.pre_reset and o.reduce == "none"]
        elif loss in MEMBRANE_LOSSES:
            pick = [o for o in outs if o.state is not None]
        else:
            pick = []
        return (pick or outs)[0]

    @staticmethod
    def _threshold(layer: ir.LLayer) -> float | None:
        n = layer.neuron
        if n is None:
            return None
        for name in ("v_th", "theta", "threshold", "v_thresh"):
            try:
                return float(n.param(name).value)
            except KeyError:
                pass
        return None

    # -------------------------------------------------------------------- pieces
    def targets(self, xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor | None:
        """The float target of bce / mse / mse_membrane regression."""
        if self.target_kind == "input":
            return xb.float() if not self.spike_input else xb.mean(0)
        if self.target_kind == "frame":
            return yb
        if self.target_kind == "labels":
            return L.one_hot(yb, self.out_features, dtype=xb.dtype)
        return None

    def spikes_of(self, out: dict) -> torch.Tensor | None:
        if self.spike_out is not None:
            return out[self.spike_out.name]
        return None

    def loss(self, out: dict, enc: torch.Tensor, xb: torch.Tensor, yb) -> torch.Tensor:
        cfg = self.cfg
        a = cfg.loss_args
        r = out[self.readout.name]
        name = cfg.loss
        fn = L.LOSS_FUNCTIONS[name]
        if name == "ce_rate":
            return fn(r, yb, trace=self.trace)
        if name == "mse_rate":
            return fn(r, yb, on=a["on"], off=a["off"], trace=self.trace,
                      steps=self.net.steps, reduced_by=self.readout.reduce)
        if name == "ce_membrane":
            return fn(r, yb, reduce=a["reduce"], trace=self.trace)
        if name == "mse_membrane":
            if self.labels == "class":
                return fn(r, yb, on=a["on"], off=a["off"], trace=self.trace)
            return fn(r, None, self.targets(xb, yb), trace=self.trace)
        if name == "bce":
            return fn(r, self.targets(xb, yb), probabilities=self.binary_readout,
                      trace=self.trace)
        if name == "mse":
            return fn(r, self.targets(xb, yb), trace=self.trace)
        if name == "masked_membrane":
            s = self.spikes_of(out)
            if s is None:  # no spike output declared: threshold the pre-reset membrane
                s = (r >= self.theta).to(r.dtype)
            return fn(r, s, enc, theta=self.theta)
        raise ValueError(f"unknown loss {name}")  # pragma: no cover - checked earlier

    def scores(self, r: torch.Tensor) -> torch.Tensor:
        """Class scores: spike counts, or the membrane reduced over time."""
        if not self.trace:
            return r.flatten(1)
        how = self.cfg.loss_args.get("reduce", "sum") if self.cfg.loss == "ce_membrane" \
            else "sum"
        return L.reduce_time(r.flatten(2), how)

    def prediction_map(self, r: torch.Tensor) -> torch.Tensor:
        """A readout as one value per element: rate of a trace, else as it is."""
        return (r.mean(0) if self.trace else r).flatten(1)

    @torch.no_grad()
    def metric_sums(self, out: dict, enc, xb, yb, loss: float) -> dict[str, float]:
        """Per-batch sums (divided by the sample count at the end of an epoch)."""
        b = xb.shape[1] if self.spike_input else xb.shape[0]
        r = out[self.readout.name]
        sums: dict[str, float] = {"n": float(b), "loss": loss * b}
        for m in self.metrics:
            if m == "accuracy":
                pred = self.scores(r)[:, : self.n_classes].argmax(1)
                sums[m] = float((pred == yb).sum())
            elif m == "mse":
                p = self.prediction_map(r).double()
                if self.classify:
                    on = float(self.cfg.loss_args.get("on", 1.0))
                    off = float(self.cfg.loss_args.get("off", 0.0))
                    t = L.one_hot(yb, p.shape[1], on, off, dtype=p.dtype)
                    if not self.is_spikes:  # a membrane: compare its softmax
                        p = torch.softmax(self.scores(r).double(), 1)
                        t = L.one_hot(yb, p.shape[1], dtype=p.dtype)
                    sums[m] = float(((p - t) ** 2).mean(1).sum())
                else:
                    t = self.targets(xb, yb)
                    if t is None:
                        t = xb if not self.spike_input else xb.mean(0)
                    t = t.double().flatten(1)
                    s = self.spikes_of(out) if not self.is_spikes else None
                    if s is not None and int(np.prod(s.shape[2:])) == t.shape[1]:
                        p = s.double().sum(0).flatten(1)  # the output layer's spike map
                    if self.is_spikes or s is not None:
                        # Roy et al.: spike map and image standardised per sample
                        sums[m] = float(L.normalized_mse(p, t).sum())
                    else:
                        sums[m] = float(((p - t) ** 2).mean(1).sum())
            elif m == "spike_mse":
                s = self.spikes_of(out)
                sums[m] = float(L.spike_mse(s.flatten(2), enc.flatten(2)).sum())
            elif m == "rate":
                s = self.spikes_of(out)
                sums[m] = float(s.double().mean(0).flatten(1).mean(1).sum())
        return sums


# ============================================================ files and states
def atomic_save(obj: Any, path: str | os.PathLike, writer: Callable[[Any, Any], None] | None
                = None) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same directory and
    ``os.replace``: readers see the old file or the new one, never a partial one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        (writer or torch.save)(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _write_npz(arrays: dict[str, np.ndarray], fh) -> None:
    np.savez(fh, **arrays)


def _write_text(text: str, fh) -> None:
    fh.write(text.encode("utf-8"))


def _rng_state(model: torch.nn.Module) -> dict[str, Any]:
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "module": {k: g.get_state() for k, g in _generators(model).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(model: torch.nn.Module, st: dict[str, Any],
                   warm_up: Callable[[], None] | None = None) -> None:
    saved = st.get("module", {})
    gens = _generators(model)
    if set(saved) - set(gens) and warm_up is not None:
        warm_up()  # generators made on first use (lazy encoders): make them now
        gens = _generators(model)
    missing = sorted(set(saved) - set(gens))
    if missing:
        raise ValueError(f"the checkpoint holds random generator states {missing} that the "
                         "module does not have; the run cannot be resumed exactly")
    for k, s in saved.items():
        gens[k].set_state(s)
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _generators(model: torch.nn.Module) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` held by the module or its submodules, directly
    or in a dict attribute (e.g. the seeded Poisson encoders of the torch
    target, ``_generators[input]``), so their states go into checkpoints too."""
    out: dict[str, torch.Generator] = {}
    for prefix, mod in model.named_modules():
        for k, v in vars(mod).items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, torch.Generator):
                out[key] = v
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, torch.Generator):
                        out[f"{key}[{k2}]"] = v2
    return out


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors on the CPU).  It holds
    only tensors and plain Python values, so ``weights_only=True`` reads it (no
    code runs while loading)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters of a checkpoint as a weights-file dict (``h.weight`` ...)."""
    ck = load_checkpoint(path)
    return {k: v.detach().cpu().numpy() for k, v in ck["model"].items()}


# ======================================================================= result
@dataclass
class TrainResult:
    """What a run did: status, final metrics, per-epoch history and files."""

    status: str  # "done" | "nan" | "interrupted"
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

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def final(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def weights(self) -> Path:
        return self.run_dir / "weights.npz"

    @property
    def metrics_csv(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def plot(self) -> Path:
        return self.run_dir / "metrics.png"

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
          threads: int | None = None) -> TrainResult:
    """Run the train block ``train_name`` of a spec (or of a loaded program).

    * ``run_dir``: where files go (default ``runs/<run_name or train name>``,
      relative to the current directory);
    * ``resume``: continue from ``run_dir/checkpoint.pt`` (bit-identical to an
      uninterrupted run);
    * ``epochs``, ``device``, ``dtype``: override the block's settings;
    * ``limit``: use only the first ``limit`` training and test samples;
    * ``progress``: a tqdm bar (only when stderr is a terminal) and per-epoch
      lines; ``log`` receives those lines instead of ``print``;
    * ``callback(info)``: called after every optimiser step with
      ``{"epoch", "batch", "loss", "model"}``;
    * ``build(net, **kw)``: the module factory (default: the torch target);
    * ``threads``: torch CPU threads during the run (restored afterwards;
      None keeps the current setting).

    Raises :class:`SpecError` for spec problems and :class:`DataError` when the
    data set cannot be loaded; NaN/Inf losses and Ctrl-C end the run with
    ``status`` ``"nan"`` / ``"interrupted"`` and a message instead.
    """
    if threads is None:
        return _train(prog_or_path, train_name, run_dir=run_dir, run_name=run_name,
                      resume=resume, epochs=epochs, device=device, dtype=dtype,
                      progress=progress, limit=limit, log=log, callback=callback, build=build)
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _train(prog_or_path, train_name, run_dir=run_dir, run_name=run_name,
                      resume=resume, epochs=epochs, device=device, dtype=dtype,
                      progress=progress, limit=limit, log=log, callback=callback, build=build)
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
           progress, limit, log, callback, build) -> TrainResult:
    t_start = time.perf_counter()
    prog = prog_or_path if isinstance(prog_or_path, Program) else _load(prog_or_path)
    cfg = resolve_config(prog, train_name)
    if epochs is not None:
        if int(epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        cfg.epochs = int(epochs)
    if device is not None:
        cfg.device = device
    if dtype is not None:
        cfg.dtype = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
        if cfg.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    say = log if log is not None else (print if progress else (lambda _m: None))
    dev = _select_device(cfg.device)
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
        partial = ck.get("partial")

        def warm_up():
            if hasattr(model, "encode") and not task.spike_input:
                with torch.no_grad():
                    model.encode(torch.zeros((1, *task.input.shape), dtype=tdtype, device=dev))

        _set_rng_state(model, ck["rng"], warm_up)
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
    elif ck_path.exists():
        say(f"note: starting over; the previous run in {rdir} is overwritten "
            "(use --resume to continue it)")

    cols = _columns(task.metrics)
    needs_x = cfg.loss == "masked_membrane" or "spike_mse" in task.metrics
    if needs_x and not task.spike_input and not hasattr(model, "encode"):
        raise RuntimeError(f"{cfg.loss if cfg.loss == 'masked_membrane' else 'spike_mse'} "
                           "needs the encoded input, but the module has no encode()")

    def save_checkpoint(epoch_done: int, batch_done: int = 0, part=None) -> None:
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
        atomic_save(state, ck_path)

    def save_outputs() -> None:
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

    def forward(xt: torch.Tensor):
        if task.spike_input:
            enc = xt
        elif hasattr(model, "encode"):
            enc = model.encode(xt)
            if isinstance(enc, dict):
                enc = enc[task.input.name]
        else:
            enc = None
        out = model(enc if enc is not None else xt)
        return out, enc

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
                    xt, yt = to_tensor(xb), labels_tensor(yb)
                    out, enc = forward(xt)
                    lv = float(task.loss(out, enc, xt, yt))
                    for k, v in task.metric_sums(out, enc, xt, yt, lv).items():
                        sums[k] = sums.get(k, 0.0) + v
        finally:
            for k, g in gens.items():
                g.set_state(saved[k])
            model.train(was)
        n = sums.pop("n", 0.0) or 1.0
        return {k: v / n for k, v in sums.items()}

    def check_finite_params(epoch: int) -> None:
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise _Stop("nan", _nan_message(f"parameter '{name}' became NaN/Inf",
                                                epoch, None, ck_path, history))

    n_batches = math.ceil(len(x_tr) / cfg.batch)
    status, message = "done", ""
    model.train()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    show_bar = bool(progress and tqdm is not None and sys.stderr.isatty())
    epoch = start_epoch
    with _Interrupt() as intr:
        try:
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                sums = dict(partial["sums"]) if partial else {}
                t_prev = float(partial["seconds"]) if partial else 0.0
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
                        out, enc = forward(xt)
                        loss = task.loss(out, enc, xt, yt)
                        lv = float(loss.detach())
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
                        for k, v in task.metric_sums(out, enc, xt, yt, lv).items():
                            sums[k] = sums.get(k, 0.0) + v
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.4f}")
                        if callback is not None:
                            callback({"epoch": epoch, "batch": bi, "loss": lv, "model": model})
                        if intr.requested and bi + 1 < n_batches:
                            check_finite_params(epoch)
                            save_checkpoint(epoch, bi + 1, {
                                "sums": sums,
                                "seconds": t_prev + time.perf_counter() - t0})
                            raise _Stop("interrupted", _interrupt_message(
                                epoch, bi + 1, n_batches, ck_path))
                finally:
                    if bar is not None:
                        bar.close()
                skip, partial = 0, None
                check_finite_params(epoch)
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
                if intr.requested and epoch + 1 < cfg.epochs:
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
                       config=cfg)


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
