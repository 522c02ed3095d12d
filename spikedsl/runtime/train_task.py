"""One training task: the model's outputs turned into the loss and the
metrics of a train block (losses from :mod:`spikedsl.runtime.losses`)."""

from __future__ import annotations

import numpy as np
import torch

from spikedsl import ir
from spikedsl.frontend.program import Program
from spikedsl.runtime import losses as L
from spikedsl.runtime.data import Dataset
from spikedsl.runtime.train_config import (
    CLASS_LOSSES,
    MEMBRANE_LOSSES,
    RATE_LOSSES,
    TrainConfig,
    _Errors,
)


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


