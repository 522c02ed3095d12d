"""The table of builtin functions (spikedsl/ir/functions.py) and the table of
surrogates (spikedsl/ir/surrogates.py).

Every row is run through every implementation and every printer: a row
added without one of them fails here.  Implementations agree to 1e-12 on
random inputs; each derivative is the one torch's autograd computes for
the printed code, and matches finite differences where the function is
smooth; each surrogate's derivative is the closed form of docs/language.md's table.
"""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import sympy as sp
import torch

from spikedsl import ir
from spikedsl.ir import arrays
from spikedsl.ir.exprs import SpkPrinter, evaluate, from_sympy, to_sympy
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.targets.torch.expr import TorchPrinter, function_helpers
from spikedsl.targets.torch.sym import SymBuilder, SymTorchPrinter, function_class

F64 = torch.float64
ROWS = list(FUNCTIONS.values())
IDS = [f.name for f in ROWS]


def _names(f):
    return [f"a{i}" for i in range(f.arity)]


def _call(f, args=None):
    args = args if args is not None else [ir.Name(id=n) for n in _names(f)]
    return ir.Call(func=f.name, args=tuple(args))


def restricted(f) -> bool:
    """The function needs positive arguments (log, sqrt)."""
    with np.errstate(all="ignore"):
        x = np.linspace(-3, 3, 7)
        return not np.all(np.isfinite(f.np(*[x] * f.arity)))


def inputs(f, n=64, seed=0) -> list[np.ndarray]:
    """Random arguments in the function's domain; 0 and +-1e-9 among them
    where the domain allows."""
    rng = np.random.default_rng(seed + sum(map(ord, f.name)))
    lo = 0.1 if restricted(f) else -3.0
    args = [rng.uniform(lo, 3, n) for _ in range(f.arity)]
    if f.dim == "choose":  # a condition: zeros and nonzeros
        args[0] = np.where(rng.uniform(size=n) < 0.5, 0.0, args[0])
    if not restricted(f):
        args[0][:3] = [0.0, 1e-9, -1e-9]
    return args


def torch_code(f, args: list[ir.Expr]) -> tuple[str, dict]:
    """Generated torch code of a call and the namespace it needs."""
    P = TorchPrinter({n: n for n in _names(f)}, "ref")
    code = P(_call(f, args))
    ns = {"torch": torch, "math": math}
    for src in function_helpers(code):
        exec(src, ns)
    return code, ns


# ------------------------------------------------------------------ completeness
@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_every_row_is_complete(f):
    assert f.arity >= 1 and f.dim in ("dimensionless", "same", "sqrt", "choose")
    assert f.doc and callable(f.py) and callable(f.np) and callable(f.sympy)
    assert f.torch is not None or f.torch_helper, "no torch implementation"
    assert isinstance(f.torch_code, str) or callable(f.torch_code)
    template, prec = f.brian2
    assert template and prec in range(1, 10)
    for i in range(f.arity):
        g = f.grad(tuple(ir.Name(id=n) for n in _names(f)), i, (False,) * f.arity)
        assert isinstance(g, ir.Num | ir.Name | ir.BinOp | ir.Neg | ir.Compare | ir.BoolOp | ir.Call)


def test_the_language_has_exactly_the_spec_functions():
    spec = "exp log sqrt abs tanh sigmoid relu min max clip sin cos exprel where".split()
    assert sorted(FUNCTIONS) == sorted(spec)


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_implementations_agree(f):
    """Python floats, numpy, torch (runtime and generated code), SymPy and the
    array interpreter (numpy and torch) give the same values (1e-12)."""
    args = inputs(f)
    want = f.np(*args)
    assert np.all(np.isfinite(want))
    py = np.array([f.py(*[float(a[k]) for a in args]) for k in range(len(args[0]))])
    np.testing.assert_allclose(py, want, rtol=1e-12, atol=1e-12)
    ts = [torch.tensor(a, dtype=F64) for a in args]
    np.testing.assert_allclose(f.torch_fn(torch)(*ts).numpy(), want, rtol=1e-12, atol=1e-12)
    code, ns = torch_code(f, [ir.Name(id=n) for n in _names(f)])
    got = eval(code, {**ns, "ref": ts[0], **dict(zip(_names(f), ts))})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    env = dict(zip(_names(f), args))
    np.testing.assert_allclose(arrays.evaluate(_call(f), env), want, rtol=1e-12, atol=1e-12)
    tenv = dict(zip(_names(f), ts))
    np.testing.assert_allclose(arrays.evaluate(_call(f), tenv, torch.float64, xp=torch).numpy(),
                               want, rtol=1e-12, atol=1e-12)
    xs = sp.symbols(_names(f), real=True)
    expr = f.sympy(*xs)
    for k in range(0, len(args[0]), 4):
        v = expr.subs({x: sp.Float(float(a[k]), 30) for x, a in zip(xs, args)}).evalf(30)
        assert float(v) == pytest.approx(float(want[k]), rel=1e-12, abs=1e-12)
    assert evaluate(_call(f, [ir.Num(value=float(a[5])) for a in args]), {}) == \
        pytest.approx(float(want[5]), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_torch_code_with_numbers_as_arguments(f):
    """The special forms (clamp for a number, where of two numbers) compute
    the same values."""
    args = inputs(f, n=16)
    for k in range(f.arity):
        ir_args = [ir.Num(value=float(a[7])) if j == k else ir.Name(id=f"a{j}")
                   for j, a in enumerate(args)]
        if all(isinstance(a, ir.Num) for a in ir_args):
            continue
        ref = next(torch.tensor(a, dtype=F64) for j, a in enumerate(args) if j != k)
        code, ns = torch_code(f, ir_args)
        env = {f"a{j}": torch.tensor(a, dtype=F64) for j, a in enumerate(args)}
        got = eval(code, {**ns, "ref": ref, **env})
        want = f.np(*[np.full(16, a[7]) if j == k else a for j, a in enumerate(args)])
        np.testing.assert_allclose(np.broadcast_to(got.numpy(), want.shape), want,
                                   rtol=1e-12, atol=1e-12, err_msg=code)


@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_brian2_code_computes_the_same(f):
    from brian2.core.functions import DEFAULT_FUNCTIONS

    from spikedsl.targets.brian2.printer import B2Printer

    args = inputs(f, n=16)
    text, _ = B2Printer({n: n for n in _names(f)}, {}).expr(_call(f))
    ns = {k: v.pyfunc for k, v in DEFAULT_FUNCTIONS.items() if v.pyfunc is not None}
    ns["inf"] = np.inf
    got = eval(text, ns, dict(zip(_names(f), args)))
    np.testing.assert_allclose(got, f.np(*args), rtol=1e-12, atol=1e-12, err_msg=text)


@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_spk_printer_and_sympy_bridges(f):
    assert SpkPrinter()(_call(f)) == f"{f.name}({', '.join(_names(f))})"
    syms: dict = {}
    low = to_sympy(_call(f), syms)
    env = {n: sp.Symbol(n, real=True) for n in _names(f)}
    high = SymBuilder()(_call(f), env)
    if f.native:  # both bridges use SymPy's own function, and lowering converts it back
        assert low == high == f.sympy(*[env[n] for n in _names(f)])
        assert from_sympy(low) == _call(f)
    else:
        assert isinstance(high, function_class(f.name))
        assert from_sympy(low) == _call(f)
    code = SymTorchPrinter({env[n]: n for n in _names(f)}, "ftype")(high)
    args = inputs(f, n=16)
    ts = {n: torch.tensor(a, dtype=F64) for n, a in zip(_names(f), args)}
    ns = {"torch": torch, "math": math, "ftype": F64}
    for src in function_helpers(code):
        exec(src, ns)
    np.testing.assert_allclose(eval(code, ns, ts).numpy(), f.np(*args), rtol=1e-12, atol=1e-12)


def test_sympy_bridges_agree_on_abs():
    """Lowering and the torch target both see SymPy's Abs (the derivative is
    sign, as torch's), and lowering converts it back to abs()."""
    x = sp.Symbol("x", real=True)
    e = ir.Call(func="abs", args=(ir.Name(id="x"),))
    assert to_sympy(e, {"x": x}) == sp.Abs(x) == SymBuilder()(e, {"x": x})
    assert from_sympy(sp.Abs(x)) == e
    assert sp.diff(SymBuilder()(e, {"x": x}), x) == sp.sign(x)


# ------------------------------------------------------------------ derivatives
def _grad_values(f, i, args, const=None):
    holes = tuple(ir.Name(id=n) for n in _names(f))
    g = f.grad(holes, i, const or (False,) * f.arity)
    return np.broadcast_to(arrays.evaluate(g, dict(zip(_names(f), args))), args[0].shape)


@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_derivative_matches_finite_differences(f):
    args = inputs(f, n=200, seed=1)
    h = 1e-6
    for i in range(f.arity):
        up = [a + h if j == i else a for j, a in enumerate(args)]
        dn = [a - h if j == i else a for j, a in enumerate(args)]
        f0, fu, fd = f.np(*args), f.np(*up), f.np(*dn)
        fdiff = (fu - fd) / (2 * h)
        smooth = np.abs((fu - f0) - (f0 - fd)) < 1e-9 * (1 + np.abs(f0))
        assert smooth.sum() > 50
        g = _grad_values(f, i, args)
        np.testing.assert_allclose(g[smooth], fdiff[smooth], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("f", ROWS, ids=IDS)
def test_derivative_is_torch_autograd_of_the_printed_code(f):
    """Including ties and kinks (min(a, a), relu(0), clip at a bound), and with
    numbers as arguments (torch.clamp instead of torch.minimum)."""
    args = inputs(f, n=32, seed=2)
    if f.arity > 1:
        args[1][:8] = args[0][:8]  # ties
    if f.arity > 2:
        args[2][8:12] = args[0][8:12]
    if not restricted(f):
        args[0][12:14] = 0.0
    for k in [None, *range(f.arity)]:
        ir_args = [ir.Num(value=float(args[j][0])) if j == k else ir.Name(id=f"a{j}")
                   for j in range(f.arity)]
        if all(isinstance(a, ir.Num) for a in ir_args):
            continue
        vals = [np.full_like(a, a[0]) if j == k else a for j, a in enumerate(args)]
        ts = [torch.tensor(a, dtype=F64, requires_grad=True) for a in vals]
        code, ns = torch_code(f, ir_args)
        out = eval(code, {**ns, "ref": ts[0], **{f"a{j}": t for j, t in enumerate(ts)}})
        out.sum().backward()
        const = tuple(j == k for j in range(f.arity))
        for i in range(f.arity):
            if i == k:
                continue
            want = _grad_values(f, i, vals, const)
            got = ts[i].grad if ts[i].grad is not None else torch.zeros(len(vals[0]))
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12,
                                       err_msg=f"d{f.name}/da{i} of {code}")


@pytest.mark.parametrize("f", [r for r in ROWS if not r.native], ids=lambda r: r.name)
def test_sympy_derivative_is_the_tables(f):
    """The torch target's analytic backward differentiates with the table's grad."""
    xs = sp.symbols(_names(f), real=True)
    e = function_class(f.name)(*xs)
    args = inputs(f, n=16, seed=3)
    ns = {"torch": torch, "math": math, "ftype": F64}
    for i in range(f.arity):
        d = sp.diff(e, xs[i])
        code = SymTorchPrinter({x: n for x, n in zip(xs, _names(f))}, "ftype")(d)
        for src in function_helpers(code):
            exec(src, ns)
        env = {n: torch.tensor(a, dtype=F64) for n, a in zip(_names(f), args)}
        got = np.broadcast_to(torch.as_tensor(eval(code, ns, env)).numpy(), (16,))
        np.testing.assert_allclose(got, _grad_values(f, i, args), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ surrogates
def _sig(x):
    return 1 / (1 + np.exp(-x))


# dS/dx as docs/language.md's table writes it, and a function S with that derivative
SPEC = {
    "sigmoid": ({"slope": 5.0}, lambda x, a: a["slope"] * _sig(a["slope"] * x)
                * (1 - _sig(a["slope"] * x)),
                lambda x, a: _sig(a["slope"] * x)),
    "fast_sigmoid": ({"slope": 25.0}, lambda x, a: 1 / (1 + a["slope"] * np.abs(x)) ** 2,
                     lambda x, a: x / (1 + a["slope"] * np.abs(x))),
    "atan": ({"alpha": 2.0}, lambda x, a: (a["alpha"] / 2) / (1 + (np.pi / 2 * a["alpha"] * x) ** 2),
             lambda x, a: np.arctan(np.pi / 2 * a["alpha"] * x) / np.pi),
    "rectangular": ({"width": 0.5}, lambda x, a: np.where(
        np.abs(x) < a["width"], a.get("scale") or 1 / (2 * a["width"]), 0.0),
        lambda x, a: np.clip(x, -a["width"], a["width"]) * (a.get("scale") or
                                                            1 / (2 * a["width"]))),
    "triangle": ({"width": 1.0}, lambda x, a: np.maximum(0, 1 - np.abs(x) / a["width"])
                 / a["width"],
                 lambda x, a: np.where(np.abs(x) < a["width"],
                                       x / a["width"] - x * np.abs(x) / (2 * a["width"] ** 2),
                                       np.sign(x) / 2)),
    "ste": ({}, lambda x, a: np.ones_like(x), lambda x, a: x),
}


def test_surrogate_table_is_the_spec_table():
    assert list(SURROGATES) == list(SPEC)
    assert typing.get_args(ir.SurrogateName) == tuple(SURROGATES)
    for name, (defaults, _, _) in SPEC.items():
        got = {k: v for k, v in SURROGATES[name].defaults.items()
               if k not in SURROGATES[name].optional}
        assert got == defaults, name


def _dsdx(name, args, x):
    e = SURROGATES[name].dsdx(ir.Name(id="x"), args)
    return np.broadcast_to(arrays.evaluate(e, {"x": x}), x.shape)


@pytest.mark.parametrize("name", list(SURROGATES))
@pytest.mark.parametrize("args", [{}, {"slope": 3.0, "alpha": 0.7, "width": 0.3},
                                  {"width": 0.25, "scale": 1.0}])
def test_surrogate_derivative_is_the_closed_form_and_the_slope_of_S(name, args):
    row = SURROGATES[name]
    args = row.resolve({k: v for k, v in args.items() if k in row.defaults})
    full = {**row.defaults, **args}
    x = np.linspace(-2, 2, 801)
    got = _dsdx(name, args, x)
    _, closed, prim = SPEC[name]
    np.testing.assert_allclose(got, closed(x, full), rtol=1e-12, atol=1e-15)
    h = 1e-6
    fd = (prim(x + h, full) - prim(x - h, full)) / (2 * h)
    kinks = [0.0, full.get("width", 9), -full.get("width", 9)]
    away = np.all([np.abs(x - k) > 1e-3 for k in kinks], axis=0)
    np.testing.assert_allclose(got[away], fd[away], rtol=1e-6, atol=1e-6)
    # the torch target prints the same derivative
    from spikedsl.targets.torch.neuron import surrogate_code

    lines, expr = surrogate_code(ir.LSurrogate(name=name, args=args), "x", "ftype")
    ns = {"torch": torch, "math": math, "x": torch.tensor(x, dtype=F64), "ftype": F64}
    for ln in lines:
        exec(ln, ns)
    np.testing.assert_allclose(eval(expr, ns).numpy(), got, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", [n for n, r in SURROGATES.items() if r.norse])
def test_norse_equivalents_have_the_same_derivative(name):
    threshold = pytest.importorskip("norse.torch.functional.threshold")
    eq = SURROGATES[name].norse
    x = torch.linspace(-2, 2, 401, dtype=F64).requires_grad_()
    threshold.threshold(x, eq.method, eq.alpha).sum().backward()
    want = _dsdx(name, SURROGATES[name].resolve(eq.when), x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", [n for n, r in SURROGATES.items() if r.snntorch])
def test_snntorch_equivalents_have_the_same_derivative(name):
    surrogate = pytest.importorskip("snntorch.surrogate")
    cls, argnames = SURROGATES[name].snntorch
    args = {"slope": 3.0, "alpha": 1.5}
    args = {k: args[k] for k in argnames}
    x = torch.linspace(-2, 2, 401, dtype=F64).requires_grad_()
    getattr(surrogate, cls).apply(x, *args.values()).sum().backward()
    want = _dsdx(name, SURROGATES[name].resolve(args), x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ exprel end to end
def test_exprel_is_accurate_everywhere():
    """Values and derivatives against 40-digit arithmetic, from 1e-300 to 700,
    across the switch to the series (|x| = 0.1) and at exactly 0."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    f = FUNCTIONS["exprel"]
    mags = np.concatenate([[0.0, 1e-300, 1e-12, 1e-8, 0.0999999, 0.1, 0.1000001],
                           np.geomspace(1e-6, 700, 200)])
    x = np.concatenate([mags, -mags[1:]])
    want = np.array([1.0 if v == 0 else float(mp.expm1(mp.mpf(v)) / mp.mpf(v)) for v in x])
    dwant = np.array([0.5 if v == 0 else float(mp.diff(lambda t: mp.expm1(t) / t, mp.mpf(v)))
                      for v in x])
    np.testing.assert_allclose(f.np(x), want, rtol=4e-16, atol=0)
    t = torch.tensor(x, dtype=F64, requires_grad=True)
    y = f.torch_fn(torch)(t)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=4e-16, atol=0)
    np.testing.assert_allclose(t.grad.numpy(), dwant, rtol=1e-13, atol=0)
    np.testing.assert_allclose(_grad_values(f, 0, [x]), dwant, rtol=1e-13, atol=0)
    assert [f.py(float(v)) for v in x] == pytest.approx(list(want), rel=4e-16)
    t32 = torch.tensor(x[np.abs(x) < 80], dtype=torch.float32, requires_grad=True)
    f.torch_fn(torch)(t32).sum().backward()
    np.testing.assert_allclose(t32.grad.numpy(), dwant[np.abs(x) < 80], rtol=3e-6)


EXPREL_NET = """
neuron RateNeuron {
    param v_rest = -65 mV
    param tau = 5 ms
    param t_unit = 1 ms
    param theta = 0.5
    state v = -40 mV                 # exprel(0) on the first step
    state m = 0.05
    input I : mV
    # Hodgkin-Huxley's alpha_m = x / (1 - exp(-x)) = 1 / exprel(-x), x = (v + 40 mV) / 10 mV
    dv/dt = (v_rest - v + I) / tau
    dm/dt = (1 / exprel(-(v + 40 mV) / (10 mV)) * (1 - m) - 4 * exp(-(v + 65 mV) / (18 mV)) * m) / t_unit
    spike m >= theta
    reset detach m = 0.05
    surrogate fast_sigmoid(slope = 10)
}
network Net {
    dt = 0.1 ms
    steps = 60
    input x[8] : spikes
    layer h[6] = RateNeuron <- dense(x)
    output h
    output h.m
}
network Smooth {
    dt = 0.1 ms
    steps = 30
    input x[8] : spikes
    layer h[6] = RateNeuron(theta = 10) <- dense(x)
    output h.m
    output h.v
}
"""


def _exprel_case(name):
    import spikedsl

    net = spikedsl.loads(EXPREL_NET).network(name).ir
    rng = np.random.default_rng(5)
    W = {"h.weight": rng.uniform(0.0, 0.02, (6, 8)), "h.bias": rng.uniform(0.0, 0.001, 6)}
    X = {"x": (rng.random((net.steps, 2, 8)) < 0.4).astype(np.float64)}
    return net, W, X


def test_exprel_neuron_on_the_reference_torch_and_brian2():
    from spikedsl.ir.surrogates import SURROGATES  # noqa: F401  (same table everywhere)
    from spikedsl.runtime import reference
    from spikedsl.targets import brian2 as b2t
    from spikedsl.targets import torch as torch_target

    net, W, X = _exprel_case("Net")
    assert "exprel" in repr(net.layer("h").neuron.temps)
    rec = ["h", "h.m", "h.v"]
    ref = reference.run(net, X, weights=W, record=rec)
    assert 0 < ref["h"].sum() < ref["h"].size / 2  # spikes, driven by the input
    for fast in (True, False):
        out = torch_target.run(net, X, weights=W, dtype=F64, record=rec, fast=fast)
        assert np.array_equal(out["h"], ref["h"])
        np.testing.assert_allclose(out["h.m"], ref["h.m"], rtol=1e-12, atol=1e-14)
    got = b2t.simulate(net, X, weights=W, record=rec)
    assert np.array_equal(got["h"], ref["h"])
    np.testing.assert_allclose(got["h.m"], ref["h.m"], rtol=1e-9, atol=1e-12)
    script = b2t.convert(net)
    assert "exprel(" in script and "expm1" not in script


@pytest.mark.parametrize("fast", [True, False])
def test_exprel_neuron_gradient_is_the_finite_difference(fast):
    """Without spikes the network is smooth: the torch target's gradient (the
    analytic backward on the fast path, autograd step by step) equals central
    differences of the reference in float64."""
    from spikedsl.runtime import reference
    from spikedsl.targets import torch as torch_target

    net, W, X = _exprel_case("Smooth")
    m = torch_target.build(net, dtype=F64, fast=fast)
    m.load_weights({k: torch.tensor(v) for k, v in W.items()})
    out = m(torch.tensor(X["x"]))
    loss = (out["h.m"] ** 2).sum()
    loss.backward()
    grad = m.h.weight.grad.numpy()
    assert np.abs(grad).max() > 1e-3

    def ref_loss(w):
        r = reference.run(net, X, weights={**W, "h.weight": w})
        return float((r["h.m"] ** 2).sum())

    h = 1e-6
    for i, j in [(0, 0), (2, 5), (5, 7), (3, 1)]:
        up, dn = W["h.weight"].copy(), W["h.weight"].copy()
        up[i, j] += h
        dn[i, j] -= h
        fd = (ref_loss(up) - ref_loss(dn)) / (2 * h)
        assert grad[i, j] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_exprel_torch_code_is_standalone_and_ruff_clean(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    import spikedsl
    from spikedsl.targets import torch as torch_target

    net = spikedsl.loads(EXPREL_NET).network("Net").ir
    files = []
    for fast in (True, False):
        src = torch_target.convert(net, fast=fast)
        assert "class _Exprel(torch.autograd.Function)" in src and "_exprel(" in src
        p = tmp_path / f"exprel_{int(fast)}.py"
        p.write_text(src)
        files.append(str(p))
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    r = subprocess.run([ruff, "check", "--isolated", *files], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_docs_list_every_function():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "language.md").read_text()
    for f in ROWS:
        assert f"`{f.name}(" in text, f"docs/language.md does not describe {f.name}()"


def test_docs_list_every_surrogate():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "language.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| `surrogate NAME(ARGS)`"))
    for name in SURROGATES:
        assert f"`{name}" in line, f"docs/language.md does not list the surrogate {name}"


def test_reference_compile_expr_with_torch():
    """``compile_expr(..., xp=torch)``: the same values as numpy, constants
    folded once, gradients flowing to the tensors of the environment."""
    from spikedsl.runtime.reference import compile_expr

    e = ir.BinOp(op="*", left=ir.Call(func="exprel", args=(ir.BinOp(
        op="/", left=ir.Name(id="v"), right=ir.Name(id="k")),)), right=ir.Call(
        func="where", args=(ir.Compare(op=">", left=ir.Name(id="v"), right=ir.Num(value=0.0)),
                            ir.Name(id="k"), ir.Num(value=5.0))))
    v = np.array([-1.0, 0.0, 0.5, 3.0])
    want = compile_expr(e, const={"k": 2.0})({"v": v, "k": 2.0})
    tv = torch.tensor(v, dtype=F64, requires_grad=True)
    f = compile_expr(e, torch.float64, const={"k": torch.tensor(2.0, dtype=F64)}, xp=torch)
    got = f({"v": tv, "k": 2.0})
    assert got.dtype == F64
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-15)
    got.sum().backward()
    dexprel = _grad_values(FUNCTIONS["exprel"], 0, [v / 2])
    np.testing.assert_allclose(tv.grad.numpy(), dexprel / 2 * np.where(v > 0, 2.0, 5.0),
                               rtol=1e-13)
    assert compile_expr(e, np.float32, xp=torch)({"v": tv.detach().float(), "k": 2.0}).dtype == \
        torch.float32
