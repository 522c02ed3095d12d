"""The array modules of the reference interpreter (spikedsl/runtime/arrays.py):
numpy and torch agree operation by operation, expressions included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spikedsl
from spikedsl.runtime import reference
from spikedsl.runtime.arrays import NumpyArrays, TorchArrays, backend

N, T = backend(), backend(torch)


def both(f, *arrays):
    """f on the numpy backend and on the torch backend, as numpy arrays."""
    a = f(N, *[N.asarray(x) for x in arrays])
    b = f(T, *[T.asarray(x) for x in arrays])
    return np.asarray(a), T.to_numpy(b)


def test_backend_resolution():
    assert isinstance(backend(), NumpyArrays) and backend().dtype is np.float64
    assert backend(np, np.float32).dtype is np.float32
    t = backend(torch)
    assert isinstance(t, TorchArrays) and t.dtype == torch.float64 and t.device.type == "cpu"
    assert backend(torch, np.float32).dtype == torch.float32
    assert backend(torch, torch.float32).np_dtype is np.float32
    assert backend(t) is t
    z = backend(torch, device=torch.device("cpu")).zeros((2, 3))
    assert z.dtype == torch.float64 and z.device.type == "cpu" and tuple(z.shape) == (2, 3)
    with pytest.raises(ValueError, match="unknown array module"):
        backend("cupy")


def test_conv_and_pools_equal_torch_functional():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 8))
    w = rng.normal(size=(4, 3, 3, 2))
    b = rng.normal(size=4)
    for stride, pad in (((1, 1), (0, 0)), ((2, 1), (1, 2)), ((3, 3), (1, 1))):
        a, t = both(lambda A, x, w, b: A.conv2d(x, w, b, stride, pad), x, w, b)
        want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b),
                                          stride=stride, padding=pad).numpy()
        assert a.shape == want.shape
        np.testing.assert_allclose(a, want, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(t, want)
    for how in ("max", "avg", "sum"):
        for k, s in (((2, 2), (2, 2)), ((3, 2), (1, 2))):
            a, t = both(lambda A, x: A.pool2d(x, k, s, how), x)
            assert a.shape == t.shape
            np.testing.assert_allclose(a, t, rtol=0, atol=1e-12)
    a, t = both(lambda A, x: A.pool2d(x, (2, 2), (2, 2), "sum"), x)
    np.testing.assert_allclose(a[0, 0, 0, 0], x[0, 0, :2, :2].sum(), atol=1e-12)


def test_array_helpers():
    a, t = both(lambda A, x: A.full(x, (2, 3)), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(a, [[1, 2, 3], [1, 2, 3]])
    np.testing.assert_array_equal(t, a)
    g = np.arange(16.0).reshape(2, 8)
    for A in (N, T):
        parts = A.chunk4(A.asarray(g))
        assert len(parts) == 4 and tuple(parts[3].shape) == (2, 2)
        assert float(parts[1][1, 0]) == 10.0
    x = np.array([-800.0, -3.0, 0.0, 3.0, 800.0])
    a, t = both(lambda A, x: A.sigmoid(x), x)
    assert np.all(np.isfinite(a)) and a[0] == 0.0 and a[-1] == 1.0
    np.testing.assert_allclose(a, t, rtol=1e-15, atol=0)


FUNCS = ["exp(x)", "log(x)", "sqrt(x)", "abs(x)", "tanh(x)", "sigmoid(x)", "relu(x)",
         "sin(x)", "cos(x)", "min(x, y)", "max(x, y)", "clip(x, -0.5, y)",
         "where(x > y, x, -y)", "x ** 2", "x ** y", "x / y", "-x + 3 * y - 1",
         "x >= y", "x <= y", "x > y", "x < y", "x == y", "x != y",
         "x > 0 and y > 0", "x > 0 or y > 0", "not (x > 0)", "where(y, 1, 2)"]


@pytest.mark.parametrize("text", FUNCS)
def test_expressions_agree(text):
    """Every operator and builtin function, numpy against torch, inf and nan
    included (x/0, log of a negative number)."""
    e = spikedsl.loads(f"neuron N {{ state v = 0\n input x\n input y\n update v = {text} }}") \
        .neurons["N"].updates[0].value
    x = np.array([-2.0, -0.5, 0.0, 0.0, 0.3, 1.0, 2.5, 40.0])
    y = np.array([1.0, -0.5, 0.0, 2.0, 0.3, -1.0, 0.0, 2.0])
    a = reference.evaluate(e, {"x": N.asarray(x), "y": N.asarray(y)})
    b = reference.evaluate(e, {"x": T.asarray(x), "y": T.asarray(y)}, xp=T)
    a = np.broadcast_to(a, x.shape)
    np.testing.assert_allclose(T.to_numpy(b), a, rtol=1e-15, atol=1e-300, equal_nan=True)
    assert a.dtype == np.float64 and b.dtype == torch.float64


def test_constant_subexpressions_are_folded_once():
    e = spikedsl.loads("neuron N { param tau = 2\n state v = 0\n input I\n"
                       " update v = exp(-1 / tau) * v + I }").neurons["N"].updates[0].value
    for A in (N, T):
        const = {"tau": A.num(2.0)}
        f = reference.compile_expr(e, const=const, xp=A)
        v = f({**const, "v": A.asarray(np.array([1.0, 2.0])), "I": A.num(0.5)})
        np.testing.assert_allclose(np.asarray(A.to_numpy(v) if A is T else v),
                                   np.exp(-0.5) * np.array([1.0, 2.0]) + 0.5, rtol=1e-15)
