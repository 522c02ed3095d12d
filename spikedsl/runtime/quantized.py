"""The accuracy cost of quantised weights: the same network, inputs and
reference interpreter with float weights and with weights rounded to a chip's
integer width (``spikedsl verify --quantize BITS`` / ``--platform P``).

    from spikedsl.runtime.quantized import compare_quantized
    rep = compare_quantized(net, bits=8, weights="runs/digits_ce/weights.npz",
                            data=("digits", "specs/networks"))
    print(rep.render())

Without data the inputs are ``verify``'s seeded random inputs; with a data set
(``data = (spec, base_dir)``) its test split is run and the report adds the
accuracy of both runs (class = argmax over classes of the first output summed
over time, as ``ce_rate`` reads it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl.runtime import reference as ref

__all__ = ["QuantReport", "compare_quantized"]


@dataclass
class QuantReport:
    network: str
    bits: int
    qmax: int
    steps: int
    samples: int
    inputs: str
    weights_from: str
    projections: dict[str, dict]
    spikes: dict[str, tuple[int, int]]  # layer -> (equal entries, total)
    counts: dict[str, float]  # layer -> mean |spike count difference| per neuron
    output: str
    class_agreement: float | None
    accuracy_float: float | None = None
    accuracy_quantized: float | None = None
    seconds: float = 0.0
    platform: str | None = None
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        on = f" ({self.platform})" if self.platform else ""
        out = [f"quantized vs float {self.network}: {self.bits}-bit weights{on} "
               f"(|w| <= {self.qmax} quanta, one scale per projection), reference "
               f"interpreter, {self.steps} steps, {self.samples} samples",
               f"weights: {self.weights_from}; inputs: {self.inputs}"]
        for k, q in self.projections.items():
            out.append(f"  {k:<12} scale {q['scale']:.4g}, {q['levels']:>4} levels, "
                       f"max |error| {q['max_abs_error']:.3g} "
                       f"({100 * q['rel_rms_error']:.2f} % rms)")
        for k, (eq, tot) in self.spikes.items():
            out.append(f"  spikes {k:<8} {100 * eq / max(tot, 1):8.3f} % equal "
                       f"({tot - eq} of {tot} differ), mean |count difference| "
                       f"{self.counts[k]:.3f} per neuron")
        if self.class_agreement is not None:
            out.append(f"  output '{self.output}': the predicted class agrees on "
                       f"{100 * self.class_agreement:.2f} % of the samples")
        if self.accuracy_float is not None:
            d = self.accuracy_quantized - self.accuracy_float
            out.append(f"  accuracy: float {100 * self.accuracy_float:.2f} %, quantized "
                       f"{100 * self.accuracy_quantized:.2f} % ({100 * d:+.2f} points)")
        out += [f"  note: {n}" for n in self.notes]
        out.append(f"  ({self.seconds:.1f} s)")
        return "\n".join(out)


def _readout(out: np.ndarray) -> np.ndarray:
    """Class scores: the output summed over time ([T, B, C] -> [B, C])."""
    a = np.asarray(out, dtype=np.float64)
    if a.ndim >= 3:
        a = a.sum(0)
    return a.reshape(a.shape[0], -1)


def compare_quantized(net: ir.LNetwork, bits: int = 8, *, weight_max: int | None = None,
                      weights=None, data: tuple[str, str] | None = None,
                      limit: int | None = None, batch: int = 8, seed: int = 0,
                      steps: int | None = None, platform: str | None = None) -> QuantReport:
    """Run ``net`` with float and with quantised weights on the same inputs."""
    from spikedsl.runtime.verify import make_inputs, make_weights, traces_of
    from spikedsl.targets.nir.platform_check import quantize_weights

    t0 = time.perf_counter()
    if steps is not None:
        net = net.model_copy(update={"steps": int(steps)})
    if weights is None:
        W, how = make_weights(net, seed)
    elif isinstance(weights, dict):
        W, how = dict(weights), "given"
    else:
        W, how = ref.load_weights(str(weights)), str(weights)
    Wq, info = quantize_weights(net, W, bits=bits, weight_max=weight_max)
    labels = None
    if data is not None:
        from spikedsl.runtime.data import load_dataset

        spec, base = data
        ds = load_dataset(spec, {}, base, seed)
        x, labels = ds.x_test, ds.y_test
        if limit is not None:
            x = x[:limit]
            labels = None if labels is None else labels[:limit]
        if len(net.inputs) != 1:
            raise ValueError(f"network '{net.name}' has {len(net.inputs)} inputs; a data set "
                             "feeds one")
        lay = net.inputs[0]
        if lay.encoder == "spikes":  # [N, T, ...] -> [T, N, ...]
            inputs = {lay.name: np.swapaxes(np.asarray(x, np.float64), 0, 1)}
        else:
            inputs = {lay.name: ref.encode(lay, np.asarray(x, np.float64), net.steps,
                                           seed=seed)}
        what = f"the test split of {spec} ({len(x)} samples)"
    else:
        inputs = make_inputs(net, net.steps, batch, seed)
        what = f"seeded random inputs (batch {batch}, seed {seed})"
    record = [t for t in traces_of(net) if "." not in t]
    a = ref.run(net, inputs, weights=W, record=record)
    b = ref.run(net, inputs, weights=Wq, record=record)
    spikes, counts = {}, {}
    for la in net.layers:
        if la.kind == "neuron" and la.neuron is not None and la.neuron.spiking:
            x1, x2 = np.asarray(a[la.name]) != 0, np.asarray(b[la.name]) != 0
            spikes[la.name] = (int((x1 == x2).sum()), int(x1.size))
            counts[la.name] = float(np.mean(np.abs(x1.sum(0).astype(np.int64)
                                                   - x2.sum(0).astype(np.int64))))
    o = net.outputs[0]
    sa, sb = _readout(a[o.name]), _readout(b[o.name])
    n = sa.shape[0]
    agree = float(np.mean(sa.argmax(1) == sb.argmax(1))) if sa.shape[1] > 1 else None
    rep = QuantReport(network=net.name, bits=int(bits),
                      qmax=int(weight_max or 2 ** (int(bits) - 1) - 1), steps=net.steps,
                      samples=n, inputs=what, weights_from=how, projections=info,
                      spikes=spikes, counts=counts, output=o.name, class_agreement=agree,
                      platform=platform)
    if labels is not None and sa.shape[1] > 1:
        rep.accuracy_float = float(np.mean(sa.argmax(1) == labels))
        rep.accuracy_quantized = float(np.mean(sb.argmax(1) == labels))
    if not info:
        rep.notes.append("the network has no dense or conv2d weights to quantise")
    rep.seconds = time.perf_counter() - t0
    return rep
