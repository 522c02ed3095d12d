"""Code of ``batchnorm(x, per_step = true)`` (BatchNorm-through-time, Kim &
Panda 2021) in the generated module: one row of running mean / variance,
weight and bias per time step (``[steps, C]``); step ``t`` is normalised with
row ``t`` in training (its batch statistics, updating row ``t``'s running
statistics) and in evaluation (row ``t``'s running statistics).  A module
that continues from its state (``stateful``) continues the step count, kept
in ``self.state`` under ``'{layer}@step'``."""

from __future__ import annotations

from spikedsl import ir
from spikedsl.targets.torch.expr import number


def per_step_batchnorm(gen, la: ir.LLayer, src: str, lead: int) -> str:
    """Code of the layer's output from ``src``: all steps (``lead == 2``, a
    ``[T, B, ...]`` trace) or one step inside the loop over ``t``."""
    a, pre = la.args, gen.attr(la.name)
    key = f"{la.name}@step"
    t0 = gen.nm(f"bn_step0:{la.name}", f"{la.name}_t0")
    if all(k != key for k, _ in gen.finals):  # once per layer: the first step of the call
        gen.use.add("bn_steps")
        gen.fwd.append(f"{t0} = _bn_step0(self.state.get({key!r}) if self.stateful else None, "
                       f"T, {pre}.running_mean.shape[0], {la.name!r})")
        gen.finals.append((key, f"torch.tensor({t0} + T)"))
    mom, eps = number(float(a.get("momentum", 0.1))), number(float(a.get("eps", 1e-5)))
    if lead == 2:
        if gen.carry is not None:  # chunks of steps: this chunk starts at step t0 of the call
            t0 = f"{t0} + t0"
        return (f"_bn_steps({src}, {t0}, {pre}.running_mean, {pre}.running_var, {pre}.weight, "
                f"{pre}.bias, self.training, {mom}, {eps})")
    k = f"{t0} + t"
    return (f"F.batch_norm({src}, {pre}.running_mean[{k}], {pre}.running_var[{k}], "
            f"{pre}.weight[{k}], {pre}.bias[{k}], self.training, {mom}, {eps})")
