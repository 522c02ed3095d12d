"""The array modules of the reference interpreter: numpy, or torch tensors on
any device.  The interpreter (:mod:`spikedsl.runtime.interpreter`) and
:func:`spikedsl.runtime.reference.compile_expr` are written once against the
small interface below; :func:`backend` picks the implementation.

    A = backend()                                   # numpy, float64
    A = backend(torch, device="cuda")               # torch, float64 on the GPU
    A = backend(torch, torch.float32)               # torch, float32 on the CPU

Both give the same numbers up to rounding (float64: <= 1e-12 on the test
networks, identical spikes).  Data enters as numpy arrays (encoders and
weight initialisation are numpy, seeded) and leaves as numpy arrays.

Expressions compile through the one array evaluator,
:class:`spikedsl.ir.arrays.ArrayCompiler` (an ``ExprVisitor`` reading the
function table); ``funcs`` here are the same table's rows for the elementwise
functions of stateless layers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from spikedsl.ir.functions import FUNCTIONS

__all__ = ["NumpyArrays", "TorchArrays", "backend", "reduce_steps"]


class NumpyArrays:
    """numpy, one dtype (float64 unless told)."""

    name = "numpy"
    device = None

    def __init__(self, dtype=np.float64):
        self.dtype = np.dtype(dtype).type
        self.np_dtype = self.dtype
        self.funcs = {name: f.np for name, f in FUNCTIONS.items()}

    # ------------------------------------------------------------ expressions
    def num(self, v: float):
        return self.dtype(v)

    def errstate(self):
        """x/0 gives inf/nan without a warning (as torch)."""
        return np.errstate(all="ignore")

    def running(self):
        return contextlib.nullcontext()

    # ------------------------------------------------------------ arrays
    def asarray(self, x) -> np.ndarray:
        return np.asarray(x, dtype=self.dtype)

    def mask(self, m) -> np.ndarray:
        return np.asarray(m, dtype=bool)

    def zeros(self, shape) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype)

    def full(self, v, shape) -> np.ndarray:
        """``v`` broadcast to ``shape``, as a new array."""
        return np.array(np.broadcast_to(np.asarray(v, dtype=self.dtype), shape))

    def where(self, c, a, b) -> np.ndarray:
        return np.where(c, a, b).astype(self.dtype, copy=False)

    def to_float(self, c) -> np.ndarray:
        return np.asarray(c, dtype=self.dtype)

    def any(self, x) -> bool:
        return bool(np.any(x))

    def expand(self, x, shape):
        """A read-only broadcast view."""
        return np.broadcast_to(x, tuple(shape))

    def stack(self, xs) -> np.ndarray:
        return np.stack(xs)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def abs(self, x):
        return np.abs(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def tanh(self, x):
        return np.tanh(x)

    def sigmoid(self, x):
        return self.funcs["sigmoid"](x)

    def chunk4(self, x) -> list:
        return np.split(x, 4, axis=1)

    def diag(self, v) -> np.ndarray:
        return np.diag(v).astype(self.dtype)

    def conv2d(self, x, w, b, stride, padding):
        """``torch.nn.functional.conv2d`` (cross-correlation), x [B, C, H, W]."""
        sh, sw = stride
        ph, pw = padding
        kh, kw = w.shape[2:]
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
        win = win[:, :, ::sh, ::sw]  # [B, C, Ho, Wo, kh, kw]
        y = np.einsum("bchwpq,ocpq->bohw", win, w, optimize=True)
        if b is not None:
            y = y + b[None, :, None, None]
        return y

    def pool2d(self, x, kernel, stride, how: str):
        """``how``: ``"max"``, ``"avg"`` or ``"sum"``."""
        kh, kw = kernel
        sh, sw = stride
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        win = win[:, :, ::sh, ::sw]
        if how == "max":
            return win.max(axis=(4, 5))
        s = win.sum(axis=(4, 5))
        return s / (kh * kw) if how == "avg" else s


class TorchArrays:
    """torch tensors on ``device`` (``"cpu"``, ``"cuda"``, ...), one dtype
    (float64 unless told).  Runs without autograd."""

    name = "torch"

    def __init__(self, dtype=None, device=None):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        if dtype is None:
            dtype = torch.float64
        elif not isinstance(dtype, torch.dtype):  # a numpy dtype
            dtype = {np.float64: torch.float64, np.float32: torch.float32,
                     np.float16: torch.float16}[np.dtype(dtype).type]
        self.dtype = dtype
        self.np_dtype = {torch.float64: np.float64, torch.float32: np.float32,
                         torch.float16: np.float16, torch.bfloat16: np.float32}[dtype]
        self.device = torch.device(device if device is not None else "cpu")
        self.funcs = {name: f.torch_fn(torch) for name, f in FUNCTIONS.items()}

    # ------------------------------------------------------------ expressions
    def num(self, v: float):
        return self.torch.tensor(float(v), dtype=self.dtype, device=self.device)

    def errstate(self):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def running(self):
        """No autograd; on the CPU one thread (tiny tensors: thread start-up
        would dominate)."""
        torch = self.torch
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            with torch.no_grad():
                yield
        finally:
            torch.set_num_threads(threads)

    # ------------------------------------------------------------ arrays
    def asarray(self, x):
        if isinstance(x, self.torch.Tensor):
            return x.detach().to(device=self.device, dtype=self.dtype)
        return self.torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def mask(self, m):
        if isinstance(m, self.torch.Tensor):
            return m.to(device=self.device, dtype=self.torch.bool)
        return self.torch.as_tensor(np.asarray(m, dtype=bool), device=self.device)

    def zeros(self, shape):
        return self.torch.zeros(tuple(shape), dtype=self.dtype, device=self.device)

    def full(self, v, shape):
        if not isinstance(v, self.torch.Tensor):
            v = self.num(v)
        return v.to(self.dtype).expand(tuple(shape)).clone()

    def where(self, c, a, b):
        return self.torch.where(c, a, b)

    def to_float(self, c):
        return c.to(self.dtype)

    def any(self, x) -> bool:
        return bool(x.any())

    def expand(self, x, shape):
        return x.expand(tuple(shape))

    def stack(self, xs):
        return self.torch.stack(list(xs))

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy()

    def abs(self, x):
        return self.torch.abs(x)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def tanh(self, x):
        return self.torch.tanh(x)

    def sigmoid(self, x):
        return self.funcs["sigmoid"](x)

    def chunk4(self, x) -> list:
        return list(self.torch.chunk(x, 4, dim=1))

    def diag(self, v):
        return self.torch.diag(v)

    def conv2d(self, x, w, b, stride, padding):
        return self.F.conv2d(x, w, b, stride=tuple(stride), padding=tuple(padding))

    def pool2d(self, x, kernel, stride, how: str):
        k, s = tuple(kernel), tuple(stride)
        if how == "max":
            return self.F.max_pool2d(x, k, s)
        if how == "sum":
            return self.F.avg_pool2d(x, k, s, divisor_override=1)
        return self.F.avg_pool2d(x, k, s)


def reduce_steps(tr: np.ndarray, how: str | None) -> np.ndarray:
    """An output trace ``[T, ...]`` reduced over the steps (``sum``, ``mean``,
    ``last``; anything else keeps every step)."""
    if how == "sum":
        return tr.sum(axis=0)
    if how == "mean":
        return tr.mean(axis=0)
    if how == "last":
        return tr[-1]
    return tr


def backend(xp: Any = None, dtype=None, device=None) -> NumpyArrays | TorchArrays:
    """``xp``: ``None`` or the numpy module, the torch module, or an existing
    backend (returned as is).  ``dtype``: numpy or torch dtype (float64 when
    None).  ``device``: torch only."""
    if isinstance(xp, NumpyArrays | TorchArrays):
        return xp
    if xp is None or xp is np or getattr(xp, "__name__", "") == "numpy":
        if device not in (None, "cpu"):
            raise ValueError(f"numpy runs on the CPU only (device {device!r})")
        return NumpyArrays(np.float64 if dtype is None else dtype)
    if getattr(xp, "__name__", "") == "torch":
        return TorchArrays(dtype, device)
    raise ValueError(f"unknown array module {xp!r}: numpy or torch")
