"""Stage 4: semantic checks of neurons and synapses, one function per rule.

Every rule appends to the shared :class:`Collector`; no rule raises, and a
rule skips what an earlier rule already reported (no cascades).  Network rules
live in :mod:`spikedsl.lowering.network`, train and test rules in
:class:`spikedsl.frontend.program.Program` (``_check_train``, ``_check_test``).
"""

from __future__ import annotations

from fractions import Fraction

from spikedsl import ir
from spikedsl.errors import Collector
from spikedsl.frontend.parse import RESERVED
from spikedsl.ir.exprs import EvalError, evaluate, names
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.ir.units import ONE, TIME, Dim, ddiv, dim_str, dmul, dpow, parse_unit
from spikedsl.ir.visitor import ExprVisitor
from spikedsl.lowering.neuron import (
    METHODS,
    NonLinear,
    exponential_euler_step,
    is_linear,
    neuron_uses_units,
)

RESERVED_IN_NEURON = {"dt"}


# ------------------------------------------------------------------ expression rules
def check_expr(e: ir.Expr, scope: set[str], errors: Collector, hint_scope: str = "") -> bool:
    """Undefined names, unknown functions, arity, strings.  True if clean."""
    ok = True

    def walk(x):
        nonlocal ok
        if isinstance(x, ir.Name):
            if x.id not in scope:
                ok = False
                errors.add("undefined-name", x.loc, name=x.id, hint=_suggest(x.id, scope))
        elif isinstance(x, ir.Str):
            ok = False
            errors.add("string-in-expression", x.loc)
        elif isinstance(x, ir.Attr | ir.ListExpr):
            ok = False
            errors.add("undefined-name", x.loc, name=_text(x), hint="")
        elif isinstance(x, ir.Call):
            if x.func not in FUNCTIONS:
                ok = False
                errors.add("unknown-function", x.loc, name=x.func,
                           allowed=", ".join(sorted(FUNCTIONS)))
            else:
                if len(x.args) != FUNCTIONS[x.func].arity or x.kwargs:
                    ok = False
                    errors.add("wrong-arity", x.loc, name=x.func,
                               expected=FUNCTIONS[x.func].arity,
                               got=len(x.args) + len(x.kwargs))
            for a in x.args:
                walk(a)
            for k in x.kwargs:
                walk(k.value)
        elif isinstance(x, ir.Binary):
            walk(x.left)
            walk(x.right)
        elif isinstance(x, ir.Unary):
            walk(x.operand)

    walk(e)
    return ok


def _text(x) -> str:
    if isinstance(x, ir.Attr):
        return f"{x.obj}.{x.attr}"
    return "[...]"


def _suggest(name: str, scope: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(scope), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


# ------------------------------------------------------------------ units
class Dims(ExprVisitor["Dim | None"]):
    """Dimension inference with the unit names a person wrote, for messages."""

    def __init__(self, env: dict[str, Dim], shown: dict[str, str], errors: Collector):
        self.env, self.shown, self.errors = env, shown, errors

    def show(self, e: ir.Expr, d: Dim | None) -> str:
        """The unit a person wrote for e (``mV``), else its dimension (``V``)."""
        w = self._written(e)
        if w is not None and (d is None or parse_unit(w)[1] == d):
            return w
        return dim_str(d) if d is not None else "?"

    def _written(self, e: ir.Expr) -> str | None:
        if isinstance(e, ir.Num):
            return e.unit
        if isinstance(e, ir.Name):
            return self.shown.get(e.id)
        if isinstance(e, ir.Neg):
            return self._written(e.operand)
        if isinstance(e, ir.BinOp) and e.op in "+-":
            return self._written(e.left) or self._written(e.right)
        if isinstance(e, ir.Call) and e.args and e.func in FUNCTIONS and \
                FUNCTIONS[e.func].dim == "same":
            return self._written(e.args[0])
        return None

    def __call__(self, e: ir.Expr) -> Dim | None:
        """Dimension of e, or None (already reported / unknown)."""
        return self.visit(e)

    def visit_num(self, e: ir.Num) -> Dim | None:
        return parse_unit(e.unit)[1] if e.unit else ONE

    def visit_name(self, e: ir.Name) -> Dim | None:
        return self.env.get(e.id)

    def visit_neg(self, e: ir.Neg) -> Dim | None:
        return self.visit(e.operand)

    def visit_not(self, e: ir.Not) -> Dim | None:
        self.visit(e.operand)
        return ONE

    def visit_bool(self, e: ir.BoolOp) -> Dim | None:
        self.visit(e.left)
        self.visit(e.right)
        return ONE

    def visit_cmp(self, e: ir.Compare) -> Dim | None:
        a, b = self.visit(e.left), self.visit(e.right)
        if a is None or b is None:
            return None
        if a != b and not _zero(e.left) and not _zero(e.right):
            self.errors.add("dim-compare", e.loc, left=self.show(e.left, a),
                            right=self.show(e.right, b))
            return None
        return ONE

    def visit_bin(self, e: ir.BinOp) -> Dim | None:
        a, b = self.visit(e.left), self.visit(e.right)
        if a is None or b is None:
            return None
        if e.op in "+-":
            if a != b and not _zero(e.left) and not _zero(e.right):
                self.errors.add("dim-mismatch", e.loc, op="add" if e.op == "+" else "subtract",
                                left=self.show(e.left, a), right=self.show(e.right, b))
                return None
            return b if _zero(e.left) else a
        if e.op == "*":
            return dmul(a, b)
        if e.op == "/":
            return ddiv(a, b)
        # power
        if b != ONE:
            self.errors.add("dim-exponent", e.right.loc)
            return None
        if a == ONE:
            return ONE
        try:
            k = evaluate(e.right, {})
        except EvalError:
            self.errors.add("dim-exponent", e.right.loc)
            return None
        return dpow(a, Fraction(k).limit_denominator(64))

    def visit_call(self, e: ir.Call) -> Dim | None:
        """The table's dimension rule of the function."""
        ds = [self.visit(a) for a in e.args]
        if any(d is None for d in ds) or e.func not in FUNCTIONS:
            return None
        f = e.func
        rule = FUNCTIONS[f].dim
        if rule == "dimensionless":
            for a, d in zip(e.args, ds):
                if d != ONE:
                    self.errors.add("dim-function", e.loc, func=f, got=self.show(a, d))
                    return None
            return ONE
        if rule == "sqrt":
            return dpow(ds[0], Fraction(1, 2))
        if rule == "same":
            for a, d in zip(e.args[1:], ds[1:]):
                if d != ds[0] and not _zero(a):
                    self.errors.add("dim-mismatch", e.loc, op=f"take {f} of",
                                    left=self.show(e.args[0], ds[0]), right=self.show(a, d))
                    return None
            return ds[0]
        # choose (where)
        if ds[1] != ds[2] and not _zero(e.args[1]) and not _zero(e.args[2]):
            self.errors.add("dim-mismatch", e.loc, op="choose between",
                            left=self.show(e.args[1], ds[1]), right=self.show(e.args[2], ds[2]))
            return None
        return ds[1] if not _zero(e.args[1]) else ds[2]

    def unknown(self, e: ir.Expr) -> Dim | None:
        return None

    visit_attr = visit_str = visit_list = unknown


def _zero(e: ir.Expr) -> bool:
    return isinstance(e, ir.Num) and e.value == 0 and not e.unit


# ------------------------------------------------------------------ neuron rules
def rule_reserved_names(n: ir.Neuron | ir.Synapse, errors: Collector) -> None:
    decls = list(n.params) + list(n.states) + list(getattr(n, "inputs", ()))
    for d in decls:
        if d.name in RESERVED_IN_NEURON or d.name in RESERVED:
            errors.add("reserved-word", d.loc, name=d.name)


def rule_duplicates(n: ir.Neuron | ir.Synapse, errors: Collector) -> None:
    seen: dict[str, ir.Node] = {}
    for d in list(n.params) + list(n.states) + list(getattr(n, "inputs", ())):
        if d.name in seen:
            first = seen[d.name].loc
            errors.add("duplicate-name", d.loc, name=d.name, first_line=first.line if first else 0)
        else:
            seen[d.name] = d


def rule_param_values(n: ir.Neuron | ir.Synapse, errors: Collector) -> dict[str, float]:
    """Parameters are numeric expressions of earlier parameters."""
    env: dict[str, float] = {}
    pnames = {p.name for p in n.params}
    snames = {s.name for s in n.states}
    for p in n.params:
        used = names(p.value)
        bad = False
        for u in sorted(used):
            if u == p.name:
                errors.add("param-cycle", p.value.loc, name=p.name)
                bad = True
            elif u in snames:
                errors.add("param-uses-state", p.value.loc, name=p.name, other=u)
                bad = True
        if bad:
            continue
        if not check_expr(p.value, set(env) | (pnames - {p.name}), errors):
            continue
        try:
            env[p.name] = evaluate(p.value, env)
        except EvalError:
            later = sorted(used - set(env))
            if later:
                errors.add("undefined-name", p.value.loc, name=later[0],
                           hint="parameters may only use parameters declared before them")
            else:
                errors.add("not-a-number", p.value.loc, what=f"parameter '{p.name}'")
        for part in (p.range or ()):
            check_expr(part, set(env), errors)
        if p.init is not None:
            if p.init.func != "uniform" or len(p.init.args) != 2:
                errors.add("bad-argument", p.init.loc, what="per_neuron",
                           reason="the initialiser must be uniform(a, b)")
    return env


# dimensions whose quantities are physically non-negative (durations, time
# constants, capacitances); zero too is an error where the value divides
_POSITIVE = {TIME: "a duration or time constant", parse_unit("F")[1]: "a capacitance"}


def _divisors(n: ir.Neuron) -> set[str]:
    """Names that appear in a denominator of the neuron's dynamics."""
    out: set[str] = set()
    exprs = [o.rhs for o in n.odes] + [a.value for a in n.updates]

    def walk(e):
        if isinstance(e, ir.BinOp):
            if e.op == "/":
                out.update(names(e.right))
            walk(e.left)
            walk(e.right)
        elif isinstance(e, ir.Unary):
            walk(e.operand)
        elif isinstance(e, ir.Call):
            for a in e.args:
                walk(a)

    for e in exprs:
        walk(e)
    return out


def _written_dim(e: ir.Expr) -> Dim | None:
    """Dimension of a literal as written (``-10 ms`` -> time), else None."""
    if isinstance(e, ir.Neg):
        return _written_dim(e.operand)
    if isinstance(e, ir.Num) and e.unit:
        try:
            return parse_unit(e.unit)[1]
        except Exception:  # noqa: BLE001 - an unknown unit is reported elsewhere
            return None
    return None


def neuron_overrides(n: ir.Neuron, name: str, call: ir.Call, errors: Collector, num,
                     none: str = "") -> tuple[dict[str, float], dict[str, tuple]]:
    """The parameter overrides of a neuron call ``name(tau = 5 ms)``: name ->
    value and name -> (value, node); positional arguments, unknown names and
    values that are not numbers (``num(e)`` is None) are reported."""
    pn = {p.name for p in n.params}
    overrides: dict[str, float] = {}
    nodes: dict[str, tuple] = {}
    for a in call.args:
        errors.add("bad-argument", a.loc, what=f"neuron {name}",
                   reason="overrides are named, e.g. tau_mem = 20 ms")
    for k in call.kwargs:
        if k.name not in pn:
            errors.add("unknown-override", k.loc, neuron=name, name=k.name,
                       params=", ".join(sorted(pn)) or none)
            continue
        x = num(k.value)
        if x is None:
            errors.add("not-a-number", k.value.loc, what=f"override '{k.name}'")
            continue
        overrides[k.name] = x
        nodes[k.name] = (x, k.value)
    return overrides, nodes


def rule_ranges(n: ir.Neuron, env: dict[str, float], errors: Collector,
                overrides: dict[str, tuple[float, ir.Node]] | None = None) -> None:
    """Parameter values inside their ``range`` and physically meaningful
    (durations and capacitances > 0), for declared values and overrides alike."""
    divisors = _divisors(n)
    for p in n.params:
        value, where = env.get(p.name), p.value
        if overrides and p.name in overrides:
            value, where = overrides[p.name]
        what = _POSITIVE.get(_written_dim(where)) or _POSITIVE.get(_written_dim(p.value))
        if what is None or value is None:
            continue
        if value < 0 or (value == 0 and p.name in divisors):
            errors.add("not-positive", where.loc, name=p.name, what=what)
    for p in n.params:
        if p.range is None or p.name not in env:
            continue
        try:
            lo, hi = evaluate(p.range[0], env), evaluate(p.range[1], env)
        except EvalError:
            continue
        if lo > hi:
            errors.add("bad-range", p.range[0].loc, lo=_g(lo), hi=_g(hi))
            continue
        value, where = env[p.name], p.value
        if overrides and p.name in overrides:
            value, where = overrides[p.name]
        if not lo <= value <= hi:
            errors.add("range-violation", where.loc, name=p.name, value=_g(value), lo=_g(lo),
                       hi=_g(hi))


def _g(v: float) -> str:
    return f"{v:g}"


def rule_dynamics(n: ir.Neuron, errors: Collector) -> None:
    snames = {s.name for s in n.states}
    pnames = {p.name for p in n.params}
    seen: dict[str, ir.Node] = {}
    for o in n.odes:
        if o.state not in snames:
            errors.add("ode-not-state", o.loc, name=o.state, neuron=n.name)
        elif o.state in seen:
            errors.add("duplicate-ode", o.loc, name=o.state,
                       first_line=seen[o.state].loc.line if seen[o.state].loc else 0)
        seen[o.state] = o
        if o.method is not None and o.method not in METHODS:
            errors.add("unknown-method", o.method_loc, name=o.method)
    for a in n.updates:
        if a.target in pnames:
            errors.add("assign-param", a.loc, name=a.target)
        elif a.target not in snames:
            errors.add("update-not-state", a.loc, name=a.target, neuron=n.name)
        elif a.target in seen:
            first = seen[a.target].loc
            errors.add("ode-and-update", a.loc, name=a.target, line=first.line if first else 0)
    for a in n.jumps:
        if a.target in pnames:
            errors.add("assign-param", a.loc, name=a.target)
        elif a.target not in snames:
            errors.add("jump-not-state", a.loc, name=a.target, neuron=n.name)
    for c in n.clamp or ():
        if c.id not in snames:
            errors.add("clamp-not-state", c.loc, name=c.id, neuron=n.name)
    methods = sorted({o.method for o in n.odes if o.method})
    if len(methods) > 1:
        errors.add("mixed-methods", n.odes[0].loc, neuron=n.name, methods=", ".join(methods))
    if not n.states:
        errors.add("no-states", n.loc, neuron=n.name)


def rule_expressions(n: ir.Neuron, errors: Collector) -> None:
    pnames = {p.name for p in n.params}
    snames = {s.name for s in n.states}
    inames = {i.name for i in n.inputs}
    dyn = pnames | snames | inames | {"dt"}
    for s in n.states:
        used = names(s.init)
        for u in sorted(used & snames):
            errors.add("state-uses-state", s.init.loc, name=s.name, other=u)
        check_expr(s.init, pnames | (used & snames), errors)
    for o in n.odes:
        if o.state in snames:  # an ODE of a non-state is reported once, by rule_dynamics
            check_expr(o.rhs, dyn, errors)
    for a in list(n.updates) + list(n.jumps):
        check_expr(a.value, dyn, errors)
    for c in n.spikes:
        check_expr(c, pnames | snames | inames, errors)
    for a in n.reset:
        check_expr(a.value, pnames | snames | inames, errors)
    if n.refractory is not None:
        check_expr(n.refractory, pnames, errors)


def rule_spike(n: ir.Neuron, errors: Collector) -> None:
    if len(n.spikes) > 1:
        errors.add("duplicate-spike", n.spikes[1].loc, neuron=n.name)
    for c in n.spikes[:1]:
        if not _spike_condition(c):
            errors.add("spike-not-comparison", c.loc)


def _spike_condition(c: ir.Expr) -> bool:
    """An ordering comparison (``v >= v_th``), or comparisons joined with
    ``and`` / ``or`` of which at least one orders (``==`` / ``!=`` guards such
    as ``rc == 0`` have no surrogate gradient)."""
    leaves: list[ir.Expr] = []

    def walk(e):
        if isinstance(e, ir.BoolOp):
            walk(e.left)
            walk(e.right)
        else:
            leaves.append(e)

    walk(c)
    if not all(isinstance(x, ir.Compare) for x in leaves):
        return False
    return any(x.op not in ("==", "!=") for x in leaves)


def rule_reset(n: ir.Neuron, errors: Collector) -> None:
    snames = {s.name for s in n.states}
    pnames = {p.name for p in n.params}
    for a in n.reset:
        if a.target in pnames:
            errors.add("assign-param", a.loc, name=a.target)
        elif a.target not in snames:
            errors.add("reset-not-state", a.loc, name=a.target, neuron=n.name)


def rule_surrogate(n: ir.Neuron, errors: Collector) -> None:
    s = n.surrogate
    if s is None:
        return
    if s.name not in SURROGATES:
        errors.add("unknown-surrogate", s.loc, name=s.name, known=", ".join(SURROGATES))
        return
    known = SURROGATES[s.name].defaults
    for k in s.args:
        if k.name not in known:
            errors.add("surrogate-arg", k.loc, name=s.name, arg=k.name,
                       known=", ".join(known) or "none")
        else:
            try:
                evaluate(k.value, {})
            except EvalError:
                errors.add("not-a-number", k.value.loc, what=f"surrogate argument '{k.name}'")


def rule_refractory(n: ir.Neuron, env: dict[str, float], errors: Collector) -> None:
    if n.refractory is None:
        return
    try:
        if evaluate(n.refractory, env) < 0:
            errors.add("refractory-negative", n.refractory.loc)
    except EvalError:
        pass


def rule_exact_linear(n: ir.Neuron, errors: Collector) -> None:
    methods = {o.method for o in n.odes if o.method}
    if methods == {"exponential_euler"}:
        try:
            exponential_euler_step([o.state for o in n.odes], [o.rhs for o in n.odes], set())
        except NonLinear as e:
            first = n.odes[0]
            errors.add("expeuler-nonlinear", first.method_loc or first.loc, term=e.term)
        return
    if methods != {"exact"}:
        return
    try:
        term = is_linear([o.state for o in n.odes], [o.rhs for o in n.odes])
        if term is not None:
            raise NonLinear(term)
    except NonLinear as e:
        first = next(o for o in n.odes if o.method == "exact")
        errors.add("exact-nonlinear", first.method_loc or first.loc, term=e.term)
    except Exception:
        first = n.odes[0]
        errors.add("exact-nonlinear", first.method_loc or first.loc, term="(system)")


def neuron_dims(n: ir.Neuron | ir.Synapse, errors: Collector) -> dict[str, str]:
    """Dimension of every param/state/input; reports dimension errors."""
    if not neuron_uses_units(n):
        return {}
    env: dict[str, Dim] = {"dt": TIME}
    shown: dict[str, str] = {"dt": "s"}
    d = Dims(env, shown, errors)
    for p in n.params:
        dim = d(p.value)
        if dim is not None:
            env[p.name] = dim
            if isinstance(p.value, ir.Num) and p.value.unit:
                shown[p.name] = p.value.unit
    for i in getattr(n, "inputs", ()):
        env[i.name] = parse_unit(i.unit)[1] if i.unit else ONE
        if i.unit:
            shown[i.name] = i.unit
    for s in n.states:
        dim = d(s.init)
        if dim is not None:
            env[s.name] = dim
            w = d._written(s.init)
            if w is not None:
                shown[s.name] = w
    if isinstance(n, ir.Synapse):
        env.setdefault("w", ONE)
    for o in n.odes:
        got = d(o.rhs)
        want = env.get(o.state)
        if got is not None and want is not None and got != ddiv(want, TIME) and not _zero(o.rhs):
            errors.add("dim-ode", o.rhs.loc, state=o.state, got=dim_str(got),
                       expected=dim_str(ddiv(want, TIME)))
    stmts = list(getattr(n, "updates", ())) + list(getattr(n, "jumps", ())) + list(
        getattr(n, "reset", ())) + list(
        getattr(n, "on_pre", ())) + list(getattr(n, "on_post", ()))
    for a in stmts:
        got = d(a.value)
        want = env.get(a.target)
        if got is not None and want is not None and got != want and not _zero(a.value):
            errors.add("dim-assign", a.value.loc, got=d.show(a.value, got), name=a.target,
                       expected=d.show(ir.Name(id=a.target), want))
    for c in getattr(n, "spikes", ()):
        d(c)
    refr = getattr(n, "refractory", None)
    if refr is not None:
        got = d(refr)
        if got is not None and got != TIME:
            errors.add("dim-time", refr.loc, what="the refractory period", got=dim_str(got))
    return {k: dim_str(v) for k, v in env.items() if k != "dt"}


def check_neuron(n: ir.Neuron, errors: Collector) -> dict[str, str]:
    """Run every neuron rule; returns the dimension table (empty if unitless)."""
    before = len(errors.diagnostics)
    rule_reserved_names(n, errors)
    rule_duplicates(n, errors)
    env = rule_param_values(n, errors)
    rule_dynamics(n, errors)
    rule_expressions(n, errors)
    rule_spike(n, errors)
    rule_reset(n, errors)
    rule_surrogate(n, errors)
    rule_refractory(n, env, errors)
    rule_ranges(n, env, errors)
    if len(errors.diagnostics) == before:
        rule_exact_linear(n, errors)
    if len(errors.diagnostics) == before:
        return neuron_dims(n, errors)
    return {}


def check_synapse(s: ir.Synapse, errors: Collector) -> dict[str, str]:
    before = len(errors.diagnostics)
    rule_reserved_names(s, errors)
    rule_duplicates(s, errors)
    rule_param_values(s, errors)
    pnames = {p.name for p in s.params}
    snames = {st.name for st in s.states}
    for st in s.states:
        check_expr(st.init, pnames, errors)
    for o in s.odes:
        if o.state not in snames:
            errors.add("ode-not-state", o.loc, name=o.state, neuron=s.name)
        check_expr(o.rhs, pnames | snames | {"dt"}, errors)
    for a in list(s.on_pre) + list(s.on_post):
        if a.target in pnames:
            errors.add("assign-param", a.loc, name=a.target)
        elif a.target not in snames | {"w"}:
            errors.add("reset-not-state", a.loc, name=a.target, neuron=s.name)
        check_expr(a.value, pnames | snames | {"w"}, errors)
    if len(errors.diagnostics) == before:
        return neuron_dims(s, errors)
    return {}
