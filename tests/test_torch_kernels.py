"""The torch target's own kernels: the oneDNN dense product, the 2x2 max
pooling, and the few-kernel printer of the fused backward.  Each must give
torch's numbers (values exactly, gradients exactly or to float32 rounding)."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sp = pytest.importorskip("sympy")

import spikedsl
from spikedsl.targets.torch import build, convert

F64 = torch.float64

POOL_NET = """
neuron N {
    state v = 0
    input I
    update v = 0.5 * v + I
    spike v > 1
    reset v = 0
}
network Net {
    steps = 3
    input x[2, 7, 9] : spikes
    layer c = N <- conv2d(x, channels = 3, kernel = 2)
    layer p = maxpool2d(c, 2)
    layer f = flatten(p)
    layer d[%d] = N <- dense(f)
    output d
}
"""


def helpers(width: int = 4):
    net = spikedsl.loads(POOL_NET % width).network("Net").ir
    m = build(net, dtype=F64)
    return types.SimpleNamespace(**type(m)._spikedsl_namespace), m


# ------------------------------------------------------------------ max pooling
def _pool_cases():
    g = torch.Generator().manual_seed(0)
    yield (torch.rand((5, 3, 8, 10), generator=g) < 0.3).to(F64)  # spikes: ties everywhere
    yield torch.zeros((2, 2, 6, 6), dtype=F64)  # all windows tied
    yield torch.randint(0, 3, (4, 3, 7, 9), generator=g).to(F64)  # odd sizes, many ties
    x = torch.randn((3, 2, 6, 8), generator=g, dtype=F64)
    x[0, 0, :2, :2] = -math.inf
    yield x


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maxpool2_equals_torch_values_and_gradients(case, dtype):
    ns, _ = helpers()
    x = list(_pool_cases())[case].to(dtype)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ya, yb = ns._MaxPool2.apply(a), torch.nn.functional.max_pool2d(b, 2)
    assert torch.equal(ya, yb)
    w = torch.randn(ya.shape, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_maxpool2_is_used_for_2x2_windows_only():
    src = convert(spikedsl.loads(POOL_NET % 4).network("Net").ir)
    assert "_MaxPool2.apply(" in src and "F.max_pool2d(" not in src.split("class Net")[1]
    src3 = convert(spikedsl.loads((POOL_NET % 4).replace("maxpool2d(c, 2)", "maxpool2d(c, 3)"))
                   .network("Net").ir)
    assert "_MaxPool2" not in src3 and "F.max_pool2d" in src3


# ------------------------------------------------------------------ dense products
@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_linear_takes_onednn_for_large_float32_products_only():
    ns, _ = helpers()
    if not ns._ONEDNN:
        pytest.skip("torch without oneDNN")
    g = torch.Generator().manual_seed(0)
    w = torch.randn((64, 300), generator=g).requires_grad_()
    b = torch.randn(64, generator=g).requires_grad_()
    x = torch.randn((8, 70, 300), generator=g).requires_grad_()  # 10.7 M multiply-adds
    y = ns._linear(x, w, b)
    assert y.grad_fn is not None and "LinearDNN" in type(y.grad_fn).__name__
    small = ns._linear(x[:1, :2], w, b)
    assert "LinearDNN" not in type(small.grad_fn).__name__
    y64 = ns._linear(x.double(), w.double(), b.double())
    assert "LinearDNN" not in type(y64.grad_fn).__name__
    with torch.backends.mkldnn.flags(enabled=False):
        assert "LinearDNN" not in type(ns._linear(x, w, b).grad_fn).__name__


@pytest.mark.parametrize("bias", [True, False])
def test_linear_onednn_equals_f_linear_to_float32_rounding(bias):
    ns, _ = helpers()
    if not ns._ONEDNN:
        pytest.skip("torch without oneDNN")
    g = torch.Generator().manual_seed(1)
    w = torch.randn((96, 200), generator=g) * 0.1
    b = torch.randn(96, generator=g) if bias else None
    x = (torch.rand((12, 50, 200), generator=g) < 0.3).float()
    go = torch.randn((12, 50, 96), generator=g)
    outs = []
    for fn in (ns._linear, torch.nn.functional.linear):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        bb = b.clone().requires_grad_() if bias else None
        y = fn(xx, ww, bb)
        y.backward(go)
        outs.append([y, xx.grad, ww.grad] + ([bb.grad] if bias else []))
    for a, r in zip(*outs):
        a, r = a.detach(), r.detach()
        scale = float(r.abs().max())
        assert float((a - r).abs().max()) <= 2e-6 * scale


def test_training_step_float32_against_float64():
    """A whole float32 step (oneDNN products, fused scans, pooling) against the
    same step in float64: the gradients agree to float32 accuracy."""
    _, m32 = helpers(width=96)
    _, m64 = helpers(width=96)
    m32.to(torch.float32)
    x = (torch.rand((3, 40, 2, 7, 9), generator=torch.Generator().manual_seed(2)) < 0.5)
    with torch.no_grad():
        for m in (m32, m64):
            m.c.weight.mul_(6.0)
    grads = []
    for m, dt in ((m32, torch.float32), (m64, F64)):
        out = m(x.to(dt))["d"]
        (out * torch.linspace(0.5, 1.5, out.numel()).to(dt).reshape(out.shape)).sum().backward()
        grads.append({k: p.grad.double() for k, p in m.named_parameters()})
    assert grads[1]["c.weight"].abs().max() > 0
    for k in grads[1]:
        scale = float(grads[1][k].abs().max())
        assert float((grads[0][k] - grads[1][k]).abs().max()) <= 1e-4 * scale, k


# ------------------------------------------------------------------ the few-kernel printer
def _run_lean(exprs: dict, values: dict, big: set):
    """Print ``exprs`` with LeanPrinter and execute the statements."""
    from spikedsl.targets.torch.expr import Namer
    from spikedsl.targets.torch.lean import LeanPrinter
    from spikedsl.targets.torch.sym import SymTorchPrinter

    names = {s: s.name for s in values}
    pr = SymTorchPrinter(names, "ftype", {})
    lean = LeanPrinter(names, set(big), pr, Namer(list(names.values()) + list(exprs)))
    lines: list[str] = []
    codes = lean.cse(list(exprs.items()), lines, "w")
    env = {"torch": torch, "math": math, "ftype": F64}
    env.update({s.name: v for s, v in values.items()})
    exec("\n".join(lines), env)
    return {k: env[c] if c in env else eval(c, env) for k, c in zip(exprs, codes)}, lines


def test_lean_printer_equals_the_expressions():
    a, b, c, p = sp.symbols("a b c p", real=True)
    g = torch.Generator().manual_seed(3)
    vals = {a: torch.rand(5, 4, generator=g, dtype=F64) + 0.5,
            b: torch.randn(5, 4, generator=g, dtype=F64),
            c: (torch.rand(5, 4, generator=g, dtype=F64) < 0.5).to(F64),
            p: torch.rand(4, generator=g, dtype=F64) + 0.5}
    exprs = {
        "e1": sp.Rational(9, 10) * (1 - c - a * b),
        "e2": 1 / (1 + 25 * sp.Abs(a - 1)) ** 2,
        "e3": a * b * c - 3 * a / b + p * c - 2,
        "e4": sp.exp(-a / p) * b + sp.sqrt(a) - 1 / sp.sqrt(a) + a ** 2,
        "e5": (b - a) * (c + 1) * p / a,
        "e6": p * 2 + 1,
    }
    got, lines = _run_lean(exprs, vals, {a, b, c})
    f = sp.lambdify([a, b, c, p], list(exprs.values()), modules=[{"Abs": torch.abs,
                                                                    "exp": torch.exp,
                                                                    "sqrt": torch.sqrt},
                                                                   "math"])
    want = f(*vals.values())
    for (k, _), w in zip(exprs.items(), want):
        torch.testing.assert_close(torch.as_tensor(got[k], dtype=F64).expand_as(
            torch.as_tensor(w)), torch.as_tensor(w, dtype=F64), rtol=1e-13, atol=1e-13, msg=k)
    # e1 is two fused operations after the shared a*b, e2 four
    assert [ln for ln in lines if ln.startswith("e1")] == [
        "e1 = torch.rsub(w0, 0.9, alpha=0.9)", "e1.add_(c, alpha=-0.9)"]
    assert len([ln for ln in lines if ln.startswith("e2")]) == 4


def test_lif_backward_is_a_few_passes_per_chunk():
    """The eager backward of the benchmark LIF: the surrogate, two coefficients
    and the recursion writing the input gradient in place (no other pass)."""
    net = spikedsl.loads("""
neuron DLIF {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
    surrogate fast_sigmoid(slope = 25)
}
network Net {
    steps = 25
    input x[784] : spikes
    layer h[256] = DLIF <- dense(x)
    output h
}""").network("Net").ir
    src = convert(net)
    body = src.split("def _scan0_h_backward")[1].split("\nclass ")[0]
    # the gradient of the final state (carried to the next chunk of the forward)
    # enters once, at the last step
    lines, skip = [], None
    for ln in body.splitlines():
        ind = len(ln) - len(ln.lstrip())
        if skip is not None and ind > skip:
            continue
        skip = ind if "t1 == T:" in ln else None
        lines.append(ln)
    ops = [ln for ln in lines if "torch." in ln or "_(" in ln]
    kernels = [ln for ln in ops if "zeros_like" not in ln and "empty_like" not in ln]
    assert len(kernels) <= 8, "\n".join(kernels)
    assert "out=GQ_v[t]" in body and "GQ_v = g_i_I[t0:t1]" in body
    x = torch.as_tensor(np.random.default_rng(0).random((25, 3, 784)) < 0.3, dtype=F64)
    m = build(net, dtype=F64)
    with torch.no_grad():
        m.h.weight.mul_(8.0)
    xx = x.clone().requires_grad_()
    m(xx)["h"].sum().backward()
    assert xx.grad.abs().max() > 0


@pytest.mark.slow
def test_the_whole_module_compiles():
    """torch.compile(module) traces the generated module (the oneDNN product
    steps aside while torch.compile traces: inductor lowers F.linear itself)."""
    _, m = helpers(width=96)
    m.to(torch.float32)
    x = (torch.rand((3, 40, 2, 7, 9), generator=torch.Generator().manual_seed(2)) < 0.5).float()
    ref = m(x)["d"]
    torch._dynamo.reset()
    out = torch.compile(m)(x)["d"]
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert m.c.weight.grad is not None
