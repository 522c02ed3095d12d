"""Run-time helpers of generated Brian2 scripts.

The Brian2 target copies the source of this module (below the marker) into
every script it writes, followed by the initialisation block of
spikedsl.lowering.weights (``init_values``, ``mask_values``), so a script
needs only numpy and brian2.  Everything
here is plain numpy: connectivity of the expanded projections, weights,
encoded inputs and the conversion of monitors to ``[T, B, ...]`` arrays.

Neuron indices: a layer of shape ``S`` simulated for a batch of ``B`` samples
is one group of ``B * prod(S)`` neurons; sample ``b``, unit ``k`` (C order) is
neuron ``b * prod(S) + k``.
"""

from __future__ import annotations

# --- begin runtime (copied into generated scripts) ---
import math

import numpy as np

from spikedsl.lowering.weights import init_values, mask_values


def as_array(value, name):
    """A float64 numpy array from a numpy array, torch tensor or number."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"weights entry '{name}' is not numeric") from None


def weight(weights, name, shape):
    """The weights entry ``name`` with exactly ``shape``."""
    if name not in weights:
        raise KeyError(f"the weights have no entry '{name}' (shape {list(shape)})")
    w = as_array(weights[name], name)
    if tuple(w.shape) != tuple(shape):
        if w.size == math.prod(shape) and len(shape) == 1:
            return w.reshape(shape)
        raise ValueError(f"weights entry '{name}' has shape {list(w.shape)}, "
                         f"expected {list(shape)}")
    return w


def param(weights, name, default, shape, batch, shared=False):
    """A neuron parameter: the weights entry (shape ``[]`` or ``shape``) or the
    default; per-neuron values are tiled over the batch."""
    if name not in weights:
        return float(default)
    v = as_array(weights[name], name)
    if v.size == 1:
        return float(v.reshape(()))
    if shared or v.size != math.prod(shape):
        raise ValueError(f"weights entry '{name}' has shape {list(v.shape)}, "
                         f"expected [] or {list(shape)}")
    return np.tile(v.reshape(-1), batch)


def per_neuron(values, batch):
    return np.tile(np.asarray(values, dtype=np.float64).reshape(-1), batch)


def signed(w, sign):
    if sign == "excitatory":
        return np.abs(w)
    if sign == "inhibitory":
        return -np.abs(w)
    return w


def replicate(pre, post, n_pre, n_post, batch):
    """Synapses of one sample copied for every sample of the batch."""
    pre = np.asarray(pre, dtype=np.int64)
    post = np.asarray(post, dtype=np.int64)
    off = np.arange(batch, dtype=np.int64)[:, None]
    return (pre[None, :] + off * n_pre).reshape(-1), (post[None, :] + off * n_post).reshape(-1)


def dense_synapses(n_out, n_in):
    """All-to-all: synapse ``k = j * n_in + i`` (W[j, i], W flattened in C order)."""
    post = np.repeat(np.arange(n_out), n_in)
    pre = np.tile(np.arange(n_in), n_out)
    return pre, post


def sparse_mask(n_out, n_in, p, seed):
    """Fixed random connectivity (out, in) of a ``sparse`` projection (``mask_values``)."""
    return np.asarray(mask_values(seed, p, n_out * n_in)).reshape(n_out, n_in) > 0


def sparse_weights(weights, name, post, pre, n_out, n_in, default):
    """Weights of the existing synapses of a ``sparse`` projection: the weights
    entry ``(out, in)`` when given, else the constant ``weight``."""
    if name in weights:
        return weight(weights, name, (n_out, n_in))[post, pre]
    return np.full(len(pre), float(default))


def conv2d_synapses(in_shape, out_shape, kernel, stride, padding):
    """``torch.nn.functional.conv2d`` as explicit synapses with shared weights.
    Returns (pre, post, widx); ``widx`` indexes ``W.reshape(-1)`` with
    ``W: (C_out, C_in, kh, kw)``.  Padded positions have no synapse."""
    ci, h, w = in_shape
    co, ho, wo = out_shape
    kh, kw = kernel
    c_o, c_i, o_y, o_x, k_y, k_x = np.meshgrid(np.arange(co), np.arange(ci), np.arange(ho),
                                               np.arange(wo), np.arange(kh), np.arange(kw),
                                               indexing="ij")
    iy = o_y * stride[0] - padding[0] + k_y
    ix = o_x * stride[1] - padding[1] + k_x
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    pre = (c_i * h + iy) * w + ix
    post = (c_o * ho + o_y) * wo + o_x
    widx = ((c_o * ci + c_i) * kh + k_y) * kw + k_x
    return pre[ok], post[ok], widx[ok]


def pool_synapses(in_shape, out_shape, kernel, stride):
    """One synapse from every input of a pooling window to its output."""
    c, h, w = in_shape
    _, ho, wo = out_shape
    kh, kw = kernel
    c_, o_y, o_x, k_y, k_x = np.meshgrid(np.arange(c), np.arange(ho), np.arange(wo),
                                         np.arange(kh), np.arange(kw), indexing="ij")
    pre = (c_ * h + o_y * stride[0] + k_y) * w + o_x * stride[1] + k_x
    post = (c_ * ho + o_y) * wo + o_x
    return pre.reshape(-1), post.reshape(-1)


def channel_values(values, shape, batch):
    """Per-channel values (batchnorm) spread over a ``[C, H, W]`` or ``[F]`` layer."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    per = math.prod(shape[1:]) if len(shape) == 3 else 1
    return np.tile(np.repeat(v, per), batch)


def step_channel_values(values, shape, batch, steps, name):
    """Per-step, per-channel values (``batchnorm(per_step = true)``, ``[S, C]``)
    as ``[steps, batch * prod(shape)]`` rows of a TimedArray."""
    v = np.asarray(values, dtype=np.float64)
    if steps > len(v):
        raise ValueError(f"batchnorm '{name}' is per step and has statistics for {len(v)} "
                         f"steps; this run has {steps}")
    return np.stack([channel_values(row, shape, batch) for row in v[:steps]])


def init_weights(arrays, seed=0):
    """Initial weights when none are given, the numbers of every spikedsl target
    (``init_values``): ``arrays`` is a list of (name, shape, dist, args, magnitude)."""
    return {name: np.asarray(init_values(name, math.prod(shape), dist, args, magnitude, seed),
                             dtype=np.float64).reshape(shape)
            for name, shape, dist, args, magnitude in arrays}


def input_array(inputs, name, shape, steps):
    """The encoded input ``name`` as ``[T, B, prod(shape)]`` float64.  A run
    lasts the T of its inputs (``steps``, the network's ``steps``, is where
    inputs are generated), at least one step."""
    if not isinstance(inputs, dict):
        inputs = {name: inputs}
    if name not in inputs:
        raise KeyError(f"no data for input '{name}'")
    x = as_array(inputs[name], name)
    n = math.prod(shape)
    if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != tuple(shape):
        raise ValueError(f"input '{name}' must be encoded as [T, B, {', '.join(map(str, shape))}]"
                         f", got {list(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"input '{name}' has no time steps (T = 0; the network's default is "
                         f"{steps} steps)")
    return x.reshape(x.shape[0], x.shape[1], n)


def spike_trains(x, dt):
    """Indices and times of a ``[T, B, N]`` 0/1 array for a SpikeGeneratorGroup."""
    if not np.all((x == 0) | (x == 1)):
        raise ValueError("a spike input must hold only 0 and 1 (encode it first)")
    t, b, k = np.nonzero(x)
    return b * x.shape[2] + k, t * dt


def spikes_to_array(i, t_steps, steps, batch, shape):
    """SpikeMonitor (indices, step numbers) -> ``[T, B, *shape]`` of 0/1."""
    n = math.prod(shape)
    out = np.zeros((steps, batch * n))
    out[np.asarray(t_steps, dtype=np.int64), np.asarray(i, dtype=np.int64)] = 1.0
    return out.reshape((steps, batch) + tuple(shape))


def trace_to_array(values, steps, batch, shape):
    """StateMonitor values ``[N, T]`` -> ``[T, B, *shape]``."""
    v = np.asarray(values, dtype=np.float64)
    return v.T.reshape((steps, batch) + tuple(shape))


def synapse_trace(values, steps, batch, pre, post, n_pre, n_post, shape):
    """StateMonitor of a synaptic variable ``[S, T]`` -> ``[T, B, n_post, n_pre]``
    (missing synapses are 0); ``shape`` is (n_post, n_pre) of one sample."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros((steps, batch, n_post, n_pre))
    b = pre // n_pre
    out[:, b, post % n_post, pre % n_pre] = v.T
    return out.reshape((steps, batch) + tuple(shape))


def reduce_time(y, how):
    if how == "sum":
        return y.sum(0)
    if how == "mean":
        return y.mean(0)
    if how == "last":
        return y[-1]
    return y
