"""Stage 5: lowering.  ODE systems -> one explicit discrete step per neuron.

* ``exact``: linear systems dx/dt = A x + b (A, b constant over a step, the
  input held) are solved in closed form with SymPy (scalar formula, or the
  matrix exponential of the augmented system [[A, b], [0, 0]]).
* ``euler``, ``rk2`` (midpoint, as Brian2's ``rk2``), ``rk4`` (classic) are
  written as temporaries over the IR, so any whitelisted function works.

The result (``ir.LNeuron``) is what every target reads.  SymPy runs once per
(neuron, method) and is cached.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

from spikedsl import ir
from spikedsl.errors import Collector
from spikedsl.ir.exprs import (
    add,
    div,
    evaluate,
    from_sympy,
    mul,
    names,
    num,
    split_reads,
    substitute,
    to_sympy,
)
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.surrogates import DEFAULT as DEFAULT_SURROGATE
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.ir.units import dim_str
from spikedsl.lowering import refractory

METHODS = ("exact", "euler", "rk2", "rk4", "exponential_euler")


class NonLinear(Exception):
    def __init__(self, term: str):
        super().__init__(term)
        self.term = term


# ------------------------------------------------------------------ linear analysis
def _symbolic(e: ir.Expr) -> bool:
    """A call SymPy knows (the table's ``native`` functions): kept symbolic."""
    return isinstance(e, ir.Call) and e.func in FUNCTIONS and FUNCTIONS[e.func].native


def _opaque(e: ir.Expr, states: set[str], table: dict[str, ir.Expr]) -> ir.Expr:
    """Replace state-free calls/comparisons by placeholder names (kept in table)."""
    if isinstance(e, ir.Call | ir.Compare | ir.BoolOp | ir.Not):
        if not (names(e) & states):
            if not _symbolic(e):
                key = f"q_{len(table)}_"
                table[key] = e
                return ir.Name(id=key)
        elif not _symbolic(e):
            return e
    if isinstance(e, ir.BinOp):
        return e.model_copy(update={"left": _opaque(e.left, states, table),
                                    "right": _opaque(e.right, states, table)})
    if isinstance(e, ir.Neg):
        return e.model_copy(update={"operand": _opaque(e.operand, states, table)})
    if isinstance(e, ir.Call):
        return e.model_copy(update={"args": tuple(_opaque(a, states, table) for a in e.args)})
    return e


def _fmt_sym(term) -> str:
    from spikedsl.ir.exprs import SpkPrinter

    try:
        return SpkPrinter()(from_sympy(term))
    except TypeError:
        return str(term)


def _linear_system(states: list[str], rhs: list[ir.Expr]):
    """(SymPy right-hand sides, state symbols, dt, opaque table, A, b) of
    dx/dt = A x + b; raises :class:`NonLinear` naming the first term that is
    not linear in the states."""
    import sympy as sp

    table: dict[str, ir.Expr] = {}
    opaque = [_opaque(_clean(r), set(states), table) for r in rhs]
    syms: dict = {}
    fs = [to_sympy(r, syms) for r in opaque]
    xs = [syms.setdefault(s, sp.Symbol(s, real=True)) for s in states]
    dt = syms.setdefault("dt", sp.Symbol("dt", positive=True))
    # linearity: every additive term's derivative w.r.t. each state is state-free
    for f in fs:
        for term in sp.Add.make_args(sp.expand(f)):
            for x in xs:
                d = sp.diff(term, x)
                if d.free_symbols & set(xs) or (d != 0 and not term.is_polynomial(*xs)):
                    raise NonLinear(_fmt_sym(term))
            if not term.is_polynomial(*xs) and term.free_symbols & set(xs):
                raise NonLinear(_fmt_sym(term))
    n = len(xs)
    A = sp.Matrix(n, n, lambda i, j: sp.diff(fs[i], xs[j]))
    b = sp.Matrix(n, 1, lambda i, _: fs[i].subs({x: 0 for x in xs}))
    return fs, xs, dt, table, A, b


@lru_cache(maxsize=256)
def _exact_cached(key: str) -> tuple[str, str]:
    """key: JSON of (states, rhs-list as IR JSON).  Returns JSON (temps, updates)."""
    import sympy as sp

    data = json.loads(key)
    states: list[str] = data["states"]
    rhs = [_EXPR.validate_python(r) for r in data["rhs"]]
    fs, xs, dt, table, A, b = _linear_system(states, rhs)
    n = len(xs)
    temps: list[ir.Assign] = []
    updates: list[ir.Assign] = []
    if A.is_diagonal():
        for i, x in enumerate(xs):
            a = sp.cancel(A[i, i])
            if a == 0:
                new = x + b[i] * dt
                updates.append(ir.Assign(target=states[i], value=from_sympy(new)))
                continue
            decay = f"decay_{states[i]}"
            temps.append(ir.Assign(target=decay,
                                   value=ir.Call(func="exp", args=(from_sympy(sp.cancel(a * dt)),))))
            # x_new = x_inf + (x - x_inf) * decay, with x_inf = -b / a
            x_inf = sp.cancel(-b[i] / a)
            if x_inf == 0:
                value = mul(ir.Name(id=states[i]), ir.Name(id=decay))
            else:
                xi = from_sympy(x_inf)
                value = add(xi, mul(ir.BinOp(op="-", left=ir.Name(id=states[i]), right=xi),
                                    ir.Name(id=decay)))
            updates.append(ir.Assign(target=states[i], value=value))
    else:
        aug = sp.zeros(n + 1, n + 1)
        aug[:n, :n] = A * dt
        aug[:n, n] = b * dt
        M = aug.exp()
        M = M.applyfunc(lambda e: sp.simplify(e))
        if any(e.has(sp.Piecewise) for e in M):
            M = M.applyfunc(lambda e: e.rewrite(sp.exp) if e.has(sp.Piecewise) else e)
            M = M.applyfunc(lambda e: sp.piecewise_fold(e).args[-1][0]
                            if isinstance(e, sp.Piecewise) else e)
        for i in range(n):
            new = sum((M[i, j] * xs[j] for j in range(n)), sp.Integer(0)) + M[i, n]
            updates.append(ir.Assign(target=states[i], value=from_sympy(new)))
    # put opaque pieces back
    temps = [t.model_copy(update={"value": substitute(t.value, table)}) for t in temps]
    updates = [u.model_copy(update={"value": substitute(u.value, table)}) for u in updates]
    return _dump_assigns(temps), _dump_assigns(updates)


def _dump_assigns(assigns: list[ir.Assign]) -> str:
    """JSON of statements for the caches (infinite and NaN numbers kept, as
    ``Infinity`` / ``NaN``, where pydantic's own JSON would write null)."""
    return json.dumps([a.model_dump(mode="json", exclude_none=True) for a in assigns])


from pydantic import TypeAdapter

_EXPR = TypeAdapter(ir.Expr)
_ASSIGNS = TypeAdapter(list[ir.Assign])


def _strip_locs(e):
    """JSON of an expression without locations (the cache key)."""
    return e.model_dump(mode="json", exclude={"loc"}, exclude_none=True) if hasattr(
        e, "model_dump") else e


def _clean(e: ir.Expr) -> ir.Expr:
    return _EXPR.validate_python(dump_noloc(e))


def dump_noloc(e) -> dict:
    """The JSON dump of an IR node without its locations."""
    d = e.model_dump(mode="json")

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "loc"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(d)


def exact_step(states: list[str], rhs: list[ir.Expr]) -> tuple[list[ir.Assign], list[ir.Assign]]:
    """Closed-form step of a linear system (raises NonLinear).  Cached in
    memory and on disk (spikedsl.cache), so SymPy runs once per system."""
    from spikedsl import cache

    key = json.dumps({"states": states, "rhs": [dump_noloc(r) for r in rhs]}, sort_keys=True)
    if key in _MEMO:
        hit = _MEMO[key]
    else:
        hit = cache.get_json("exact", key)
    if hit is None:
        try:
            t, u = _exact_cached(key)
            hit = {"temps": t, "updates": u}
        except NonLinear as e:
            hit = {"nonlinear": e.term}
        cache.put_json("exact", key, hit)
    if "nonlinear" in hit:
        _MEMO[key] = hit
        raise NonLinear(hit["nonlinear"])
    if "parsed" not in hit:
        hit = dict(hit, parsed=(_ASSIGNS.validate_json(hit["temps"]),
                                _ASSIGNS.validate_json(hit["updates"])))
    _MEMO[key] = hit
    t, u = hit["parsed"]
    return list(t), list(u)


_MEMO: dict[str, dict] = {}


class SingularExact(Exception):
    """The closed form of a linear system is singular or complex at the
    parameters' values (equal time constants, oscillating modes) and its matrix
    depends on a parameter that must stay symbolic (trainable, per neuron)."""

    def __init__(self, param: str):
        super().__init__(param)
        self.param = param


def _real_at(assigns: list[ir.Assign], env: dict[str, float], names_: set[str]) -> bool:
    """Do the step's expressions evaluate to finite real numbers at the
    parameters' values (states, inputs and dt probed at ordinary values)?"""
    probe = dict(env)
    probe.update({k: 1.0 for k in names_})
    probe.setdefault("dt", 1e-4)
    for a in assigns:
        try:
            v = evaluate(a.value, probe)
        except KeyError:  # a name the probe does not know: nothing to say
            return True
        except (ArithmeticError, ValueError):
            return False
        if isinstance(v, complex) or not math.isfinite(v):
            return False
        probe[a.target] = v
    return True


def exact_step_at(states: list[str], rhs: list[ir.Expr], env: dict[str, float],
                  symbolic: set[str]) -> tuple[list[ir.Assign], list[ir.Assign]]:
    """The closed-form step with the parameters' values in the system matrix
    (exact rationals): real and finite where the symbolic solution divides by a
    difference of time constants that is zero here, or takes the square root of
    a negative discriminant (oscillating modes: e^{a dt} cos(b dt) terms).  The
    inputs and the constant terms stay symbolic; ``dt`` too.  Raises
    :class:`SingularExact` when the matrix needs a parameter of ``symbolic``."""
    import sympy as sp

    fs, xs, dt, table, A, b = _linear_system(states, rhs)
    n = len(xs)
    values = {}
    for sym_ in A.free_symbols - {dt}:
        name = str(sym_)
        if name in symbolic:
            raise SingularExact(name)
        v = evaluate(table[name], env) if name in table else env[name]
        values[sym_] = sp.Rational(repr(float(v)))
    A = A.subs(values)
    if not all(e.is_finite for e in A):  # e.g. a time constant of 0
        raise NonFinite()
    aug = sp.zeros(2 * n, 2 * n)  # exp([[A, 1], [0, 0]] dt) = [[Phi, Gamma], [0, 1]]
    aug[:n, :n] = A * dt
    aug[:n, n:] = sp.eye(n) * dt
    E = aug.exp()

    def real(e):  # c·e^{a dt}·cos(b dt) terms with 25-digit coefficients
        return sp.nfloat(sp.expand(sp.expand_complex(e).as_real_imag()[0]), 25)

    phi = E[:n, :n].applyfunc(real)
    gamma = E[:n, n:].applyfunc(real)
    updates = []
    for i in range(n):
        new = sum((phi[i, j] * xs[j] + gamma[i, j] * b[j] for j in range(n)), sp.Integer(0))
        updates.append(ir.Assign(target=states[i], value=substitute(from_sympy(new), table)))
    return [], updates


def exact_step_valued(states: list[str], rhs: list[ir.Expr], env: dict[str, float],
                      symbolic: set[str], names_: set[str]):
    """:func:`_exact_step_valued`, cached in memory and on disk (a warm load
    imports no SymPy)."""
    from spikedsl import cache

    key = json.dumps({"states": states, "rhs": [dump_noloc(r) for r in rhs],
                      "env": {k: repr(float(v)) for k, v in sorted(env.items())},
                      "symbolic": sorted(symbolic), "names": sorted(names_)}, sort_keys=True)
    hit = _MEMO.get(key) or cache.get_json("exact_valued", key)
    if hit is None:
        try:
            t, u = _exact_step_valued(states, rhs, env, symbolic, names_)
            hit = {"temps": _dump_assigns(t), "updates": _dump_assigns(u)}
        except SingularExact as e:
            hit = {"singular": e.param}
        cache.put_json("exact_valued", key, hit)
    _MEMO[key] = hit
    if "singular" in hit:
        raise SingularExact(hit["singular"])
    return (list(_ASSIGNS.validate_json(hit["temps"])),
            list(_ASSIGNS.validate_json(hit["updates"])))


def _exact_step_valued(states: list[str], rhs: list[ir.Expr], env: dict[str, float],
                       symbolic: set[str], names_: set[str]):
    """The exact step of a neuron with parameter values ``env``.  Symbolic in
    the parameters (as the matchers of NIR and NEST read it) where the states
    feed each other without a cycle (decays, a synaptic current into the
    membrane) and the closed form is real and finite at these values; else
    with the values in its matrix (:func:`exact_step_at`: equal time
    constants, oscillating modes, and mutual coupling, whose symbolic solution
    takes SymPy minutes), unless the matrix needs a parameter of ``symbolic``."""
    *_, A, _b = _linear_system(states, rhs)
    needs = {str(x) for x in A.free_symbols} & symbolic
    if needs or _acyclic(A):
        temps, updates = exact_step(states, rhs)
        if _real_at(temps + updates, env, names_):
            return temps, updates
        if needs:
            raise SingularExact(sorted(needs)[0])
    try:
        return exact_step_at(states, rhs, env, symbolic)
    except NonFinite:  # no closed form at these values: the symbolic one says so at run time
        return exact_step(states, rhs)


class NonFinite(Exception):
    """The system matrix is not finite at the parameters' values."""


def _acyclic(A) -> bool:
    """Is the coupling of the states (x_j feeds x_i where A[i, j] != 0) free of
    cycles, i.e. the matrix triangular up to an ordering of the states?"""
    n = A.shape[0]
    feeds = {i: {j for j in range(n) if j != i and A[i, j] != 0} for i in range(n)}
    done: set[int] = set()
    while len(done) < n:
        ready = [i for i in range(n) if i not in done and feeds[i] <= done]
        if not ready:
            return False
        done.update(ready)
    return True


def is_linear(states: list[str], rhs: list[ir.Expr]) -> str | None:
    """None if linear, else the first nonlinear term (as text); cached in
    memory and on disk."""
    from spikedsl import cache

    key = json.dumps({"linear": states, "rhs": [dump_noloc(r) for r in rhs]}, sort_keys=True)
    hit = _MEMO.get(key) or cache.get_json("linear", key)
    if hit is None:
        try:
            _linear_system(states, rhs)
            hit = {"term": None}
        except NonLinear as e:
            hit = {"term": e.term}
        cache.put_json("linear", key, hit)
    _MEMO[key] = hit
    return hit["term"]


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, with ``_`` appended until it is not in ``taken`` (then taken)."""
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def explicit_step(method: str, states: list[str], rhs: list[ir.Expr], taken: set[str]):
    """Euler / midpoint RK2 / classic RK4 as temporaries."""
    dt = ir.Name(id="dt")
    x = [ir.Name(id=s) for s in states]
    rhs = [_clean(r) for r in rhs]
    temps: list[ir.Assign] = []

    def stage(tag: str, at: list[ir.Expr]) -> list[ir.Name]:
        out = []
        mapping = dict(zip(states, at))
        for s, f in zip(states, rhs):
            n = fresh_name(f"{tag}_{s}", taken)
            temps.append(ir.Assign(target=n, value=substitute(f, mapping)))
            out.append(ir.Name(id=n))
        return out

    def shifted(k: list[ir.Name], c: float) -> list[ir.Expr]:
        return [add(xi, mul(mul(num(c), dt), ki)) if c != 1 else add(xi, mul(dt, ki))
                for xi, ki in zip(x, k)]

    if method == "euler":
        k1 = stage("k1", list(x))
        updates = [add(xi, mul(dt, ki)) for xi, ki in zip(x, k1)]
    elif method == "rk2":
        k1 = stage("k1", list(x))
        k2 = stage("k2", shifted(k1, 0.5))
        updates = [add(xi, mul(dt, ki)) for xi, ki in zip(x, k2)]
    else:
        k1 = stage("k1", list(x))
        k2 = stage("k2", shifted(k1, 0.5))
        k3 = stage("k3", shifted(k2, 0.5))
        k4 = stage("k4", shifted(k3, 1.0))
        updates = []
        for xi, a, b_, c, d in zip(x, k1, k2, k3, k4):
            s = add(add(add(a, mul(num(2.0), b_)), mul(num(2.0), c)), d)
            updates.append(add(xi, mul(div(dt, num(6.0)), s)))
    return temps, [ir.Assign(target=s, value=u) for s, u in zip(states, updates)]


# ------------------------------------------------------------------ neuron
def neuron_uses_units(n: ir.Neuron | ir.Synapse) -> bool:
    found = False

    def walk(x):
        nonlocal found
        if isinstance(x, ir.Num) and x.unit and x.unit != "1":
            found = True
        elif isinstance(x, ir.Node):
            for v in x.__dict__.values():
                walk(v)
        elif isinstance(x, tuple | list):
            for v in x:
                walk(v)

    walk(n)
    if isinstance(n, ir.Neuron) and any(i.unit and i.unit != "1" for i in n.inputs):
        found = True
    return found


def param_values(params, overrides: dict[str, float]) -> dict[str, float]:
    env: dict[str, float] = {}
    for p in params:
        if p.name in overrides:
            env[p.name] = overrides[p.name]
        else:
            env[p.name] = evaluate(p.value, env)
    return env


def surrogate_of(n: ir.Neuron) -> ir.LSurrogate:
    if n.surrogate is None:
        return ir.LSurrogate(name=DEFAULT_SURROGATE,
                             args=SURROGATES[DEFAULT_SURROGATE].resolve({}))
    given = {k.name: evaluate(k.value, {}) for k in n.surrogate.args}
    return ir.LSurrogate(name=n.surrogate.name, args=SURROGATES[n.surrogate.name].resolve(given))


def exponential_euler_step(states: list[str], rhs: list[ir.Expr], taken: set[str]):
    """Brian2's ``exponential_euler``: each equation dx/dt = A + B·x, linear in
    its own state with A, B depending on the others (held at their old values),
    is stepped exactly: x' = x + dt·(A + B·x)·exprel(B·dt), which is
    -A/B + (x + A/B)·exp(B·dt), and Euler where B = 0."""
    import sympy as sp

    temps: list[ir.Assign] = []
    updates: list[ir.Assign] = []
    for s, f in zip(states, rhs):
        table: dict[str, ir.Expr] = {}
        opaque = _opaque(_clean(f), {s}, table)
        syms: dict = {}
        fs = to_sympy(opaque, syms)
        x = syms.setdefault(s, sp.Symbol(s, real=True))
        B = sp.simplify(sp.diff(fs, x))
        if x in B.free_symbols:
            raise NonLinear(_fmt_sym(fs))
        A = sp.simplify(fs.subs(x, 0))
        if x in A.free_symbols:
            raise NonLinear(_fmt_sym(fs))
        xs = ir.Name(id=s)
        dt = ir.Name(id="dt")
        if B == 0:
            updates.append(ir.Assign(target=s, value=add(xs, mul(dt, _clean(f)))))
            continue
        b_name = fresh_name(f"B_{s}", taken)
        temps.append(ir.Assign(target=b_name, value=substitute(from_sympy(B), table)))
        b = ir.Name(id=b_name)
        slope = add(substitute(from_sympy(A), table), mul(b, xs))
        step = mul(mul(dt, slope), ir.Call(func="exprel", args=(mul(b, dt),)))
        updates.append(ir.Assign(target=s, value=add(xs, step)))
    return temps, updates


def ode_step(method: str, states: list[str], rhs: list[ir.Expr], taken: set[str],
             valued: tuple[dict[str, float], set[str], set[str]] | None = None):
    """Temporaries and updates of one step of an ODE system with ``method``;
    ``valued``: (parameter values, parameters kept symbolic, state and input
    names) for an exact step that must be real and finite at those values."""
    if method == "exact":
        return exact_step(states, rhs) if valued is None else exact_step_valued(
            states, rhs, *valued)
    if method == "exponential_euler":
        return exponential_euler_step(states, rhs, taken)
    return explicit_step(method, states, rhs, taken)


def _as_set(a: ir.Assign) -> ir.Assign:
    """``s += e`` / ``s -= e`` as ``s = s + e`` / ``s = s - e`` (no location)."""
    v = _clean(a.value)
    if a.op == "+=":
        v = add(ir.Name(id=a.target), v)
    elif a.op == "-=":
        v = ir.BinOp(op="-", left=ir.Name(id=a.target), right=v)
    return ir.Assign(target=a.target, value=v)


def _spike(c: ir.Expr) -> tuple[ir.Expr | None, str]:
    """A comparison as (x, op) with spike where x >= 0 (op ">=") or x > 0 (">");
    None for ``==`` / ``!=`` guards (no surrogate)."""
    if c.op in (">=", ">"):
        return ir.BinOp(op="-", left=_clean(c.left), right=_clean(c.right)), c.op
    if c.op in ("<=", "<"):
        return (ir.BinOp(op="-", left=_clean(c.right), right=_clean(c.left)),
                ">=" if c.op == "<=" else ">")
    return None, c.op


def normal_spike_cond(c: ir.Expr) -> ir.Expr:
    """A compound condition with every ordering comparison as ``x >= 0`` /
    ``x > 0`` (x the surrogate argument); guards kept as written."""
    if isinstance(c, ir.BoolOp):
        return ir.BoolOp(op=c.op, left=normal_spike_cond(c.left),
                         right=normal_spike_cond(c.right))
    x, op = _spike(c)
    if x is None:
        return _clean(c)
    return ir.Compare(op=op, left=x, right=num(0.0))


def _same(a: list[ir.Assign], b: list[ir.Assign]) -> bool:
    return [(x.target, dump_noloc(x.value)) for x in a] == \
        [(x.target, dump_noloc(x.value)) for x in b]


def choose_method(n: ir.Neuron) -> str:
    """The ODE method (``update`` / ``none`` without ODEs)."""
    if not n.odes:
        return "update" if n.updates else "none"
    methods = {o.method for o in n.odes if o.method}
    if methods:
        return methods.pop()
    term = is_linear([o.state for o in n.odes], [o.rhs for o in n.odes])
    return "exact" if term is None else "euler"


_LOWERED: dict = {}


def lower_neuron(n: ir.Neuron, overrides: dict[str, float] | None = None,
                 dims: dict[str, str] | None = None) -> ir.LNeuron:
    """Lower a checked neuron; ``overrides`` replace parameter values.
    Memoised per (neuron, overrides): the IR is frozen."""
    key = (n, tuple(sorted((overrides or {}).items())), tuple(sorted((dims or {}).items())))
    try:
        return _LOWERED[key]
    except (KeyError, TypeError):
        pass
    out = _lower_neuron(n, overrides, dims)
    if len(_LOWERED) > 4096:
        _LOWERED.clear()
    _LOWERED[key] = out
    return out


def _lower_neuron(n: ir.Neuron, overrides: dict[str, float] | None,
                  dims: dict[str, str] | None) -> ir.LNeuron:
    overrides = overrides or {}
    dims = dims or {}
    env = param_values(n.params, overrides)
    params = []
    for p in n.params:
        rng = None
        if p.range is not None:
            rng = (evaluate(p.range[0], env), evaluate(p.range[1], env))
        init = None
        if p.init is not None and p.init.func == "uniform":
            init = (evaluate(p.init.args[0], env), evaluate(p.init.args[1], env))
        params.append(ir.LParam(name=p.name, value=env[p.name], dim=dims.get(p.name, "1"),
                                trainable=p.trainable, per_neuron=p.per_neuron,
                                init_uniform=init, range=rng))
    states = [ir.LState(name=s.name, init=_clean(s.init), dim=dims.get(s.name, "1"))
              for s in n.states]
    method = choose_method(n)
    taken = {p.name for p in n.params} | {s.name for s in n.states} | {
        i.name for i in n.inputs} | {"dt"}
    temps: list[ir.Assign] = []
    updates: list[ir.Assign] = []
    linear = False
    valued = (env, {p.name for p in n.params if p.trainable or p.per_neuron},
              {s.name for s in n.states} | {i.name for i in n.inputs})
    order = [o.state for o in n.odes]
    rhs = [o.rhs for o in n.odes]
    if n.odes:
        linear = is_linear(order, rhs) is None
        temps, updates = ode_step(method, order, rhs, taken, valued)
    if n.updates:
        # ODEs first; `update` statements then read the states as the ODE step
        # left them (named temporaries), the other states as before the step
        after = {}
        for u in updates:
            if any(u.target in names(a.value) for a in n.updates):
                t = fresh_name(f"ode_{u.target}", taken)
                temps.append(ir.Assign(target=t, value=u.value))
                after[u.target] = ir.Name(id=t)
        updates = [ir.Assign(target=u.target, value=after.get(u.target, u.value))
                   for u in updates]
        updates += [ir.Assign(target=a.target, value=substitute(a.value, after))
                    for a in map(_as_set, n.updates)]
    clamp = refractory.clamp_of(n)
    refr_temps, refr_updates = refractory.step_while_refractory(
        n, clamp, order, rhs, updates,
        lambda held: ode_step(method, order, held, set(taken) | {t.target for t in temps},
                              valued), _same)
    spike_x, spike_op, spike_cond, spiking = None, ">=", None, bool(n.spikes)
    if n.spikes:
        c = n.spikes[0]
        if isinstance(c, ir.Compare):
            spike_x, spike_op = _spike(c)
        else:
            spike_cond = normal_spike_cond(c)
    refr = evaluate(n.refractory, env) if n.refractory is not None else 0.0
    uses_units = neuron_uses_units(n)
    return ir.LNeuron(
        name=n.name, params=tuple(params), states=tuple(states),
        inputs=tuple(i.name for i in n.inputs),
        input_dims=tuple(dims.get(i.name, "1") for i in n.inputs),
        method=method, temps=tuple(temps), updates=tuple(updates),
        jumps=tuple(map(_as_set, n.jumps)), spiking=spiking,
        spike_x=spike_x, spike_op=spike_op, spike_cond=spike_cond, clamp=clamp,
        refr_temps=tuple(refr_temps), refr_updates=tuple(refr_updates),
        reset=tuple(a.model_copy(update={"value": _clean(a.value), "loc": None})
                    for a in n.reset),
        reset_detach=n.reset_detach, refractory=refr, surrogate=surrogate_of(n),
        uses_units=uses_units, linear=linear, source_line=n.loc.line if n.loc else 0,
        source_file=n.loc.file if n.loc else "")


def steering_states(n: ir.LNeuron) -> frozenset[str]:
    """The states that only steer the step: read in some condition (a
    comparison, a ``where`` condition, an ``==`` / ``!=`` guard of the spike)
    and, elsewhere, only by their own statements or by other such states.
    Their gradient is 0 wherever it would go, so they carry none
    (docs/semantics.md, "Backward"); the refractory counter is one."""
    temps = {t.target: split_reads(t.value) for t in n.temps}

    def reads(e: ir.Expr) -> tuple[set[str], set[str]]:
        diff, steer = split_reads(e)
        seen: set[str] = set()
        while (diff | steer) & (set(temps) - seen):  # through temporaries
            for t in (diff | steer) & (set(temps) - seen):
                seen.add(t)
                d, st = temps[t]
                (diff if t in diff else steer).update(d)
                steer.update(st)
        return diff, steer

    readers: dict[str, set[str]] = {s: set() for s in n.state_names}
    steered: set[str] = set()

    def add(target: str, e: ir.Expr) -> None:
        diff, steer = reads(e)
        for s in diff & set(readers):
            readers[s].add(target)
        steered.update(steer & set(readers))

    for a in n.updates + n.jumps + n.reset:
        add(a.target, a.value)
    if n.spiking and n.spike_x is not None:
        add("%z", n.spike_x)
    stack = [n.spike_cond] if n.spiking and n.spike_cond is not None else []
    while stack:
        c = stack.pop()
        if isinstance(c, ir.BoolOp):
            stack += [c.left, c.right]
        elif isinstance(c, ir.Compare) and c.op in (">=", ">"):
            add("%z", c.left)
        else:
            steered.update(names(c) & set(readers))
    dead = set(steered)
    while True:
        drop = {s for s in dead if readers[s] - dead - {s}}
        if not drop:
            return frozenset(dead)
        dead -= drop


def place(n: ir.LNeuron | ir.LSynapse, net_dt: float,
          dt_unit: str | None = "s") -> ir.LNeuron | ir.LSynapse:
    """A lowered neuron (or synapse rule) as part of a network whose ``dt`` is
    ``net_dt`` (seconds when ``dt_unit`` is set, else a unitless number):
    resolves ``dt`` of its step and, for a neuron, the number of refractory
    steps R (spikedsl.lowering.refractory.steps).

    A neuron with units steps by ``net_dt`` seconds.  A unitless neuron counts
    time in its own unit: a unitless network ``dt`` (``dt = 0.5``) is the step
    in that unit; with a network ``dt`` that has a unit, its unit is the step
    (``dt`` is 1)."""
    if n.uses_units:
        dt = float(net_dt)
    else:
        dt = float(net_dt) if dt_unit is None else 1.0
    if isinstance(n, ir.LSynapse):
        return n.model_copy(update={"dt": dt})
    return refractory.expand(n.model_copy(update={
        "dt": dt, "refractory_steps": refractory.steps(n.refractory, dt)}))


def lower_synapse(s: ir.Synapse, overrides: dict[str, float] | None = None,
                  dims: dict[str, str] | None = None) -> ir.LSynapse:
    overrides = overrides or {}
    dims = dims or {}
    env = param_values(s.params, overrides)
    params = tuple(ir.LParam(name=p.name, value=env[p.name], dim=dims.get(p.name, "1"))
                   for p in s.params)
    states = tuple(ir.LState(name=st.name, init=_clean(st.init), dim=dims.get(st.name, "1"))
                   for st in s.states)
    temps, updates, method = [], [], "exact"
    if s.odes:
        order = [o.state for o in s.odes]
        rhs = [o.rhs for o in s.odes]
        method = next((o.method for o in s.odes if o.method), None) or (
            "exact" if is_linear(order, rhs) is None else "euler")
        taken = {p.name for p in s.params} | {st.name for st in s.states} | {"dt", "w"}
        temps, updates = ode_step(method, order, rhs, taken)

    def norm(stmts):
        return tuple(a.model_copy(update={"value": _clean(a.value), "loc": None}) for a in stmts)

    return ir.LSynapse(name=s.name, params=params, states=states, method=method,
                       temps=tuple(temps), updates=tuple(updates), on_pre=norm(s.on_pre),
                       on_post=norm(s.on_post), uses_units=neuron_uses_units(s))


__all__ = [
    "METHODS",
    "Collector",
    "NonLinear",
    "SingularExact",
    "dim_str",
    "exact_step",
    "explicit_step",
    "is_linear",
    "lower_neuron",
    "lower_synapse",
    "place",
]
