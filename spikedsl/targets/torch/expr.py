"""Expressions for the torch target.

* :func:`prepare` substitutes constants, folds numbers and drops trivial
  operations (``x * 1``, ``x + 0``) without changing the rounding of what
  remains (the IR's evaluation order is kept, so the generated step matches
  the reference interpreter operation for operation);
* :class:`Hoister` lifts subexpressions that do not depend on the states out
  of the time loop (computed once, or for all steps at once);
* :class:`TorchPrinter` prints an expression as torch code (boolean and
  arithmetic contexts, numbers kept exact with ``repr``);
* :class:`Namer` hands out Python identifiers that never collide with
  keywords or with the generated code's own locals;
* :func:`surrogate_code` prints a surrogate's derivative (from the table,
  spikedsl/ir/surrogates.py).

Only validated identifiers (looked up in the printer's table) and numbers
(``repr(float)``) reach the code.
"""

from __future__ import annotations

import keyword
import math
import re

from spikedsl import ir
from spikedsl.ir.exprs import EvalError, Printer, evaluate, names, substitute
from spikedsl.ir.functions import FUNCTIONS, CodeArg, num, unparen
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.ir.visitor import ExprTransformer, ExprVisitor, children

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_ident(name: str) -> str:
    if not _IDENT.match(name or ""):
        raise ValueError(f"not an identifier: {name!r}")
    return name


def number(v: float) -> str:
    """Exact Python literal of a float (``math.inf`` for infinities)."""
    v = float(v)
    if math.isnan(v):
        return "math.nan"
    if math.isinf(v):
        return "math.inf" if v > 0 else "-math.inf"
    return repr(v)


class Namer:
    """Unique Python identifiers; ``reserve`` the generated code's own locals first."""

    BASE = set(keyword.kwlist) | set(keyword.softkwlist) | {
        "torch", "math", "F", "self", "ctx", "None", "True", "False", "int", "float", "range",
        "len", "tuple", "list", "dict", "isinstance", "super", "abs", "min", "max", "sum",
    } | {f.torch_code for f in FUNCTIONS.values() if f.torch_helper}

    def __init__(self, reserved=()):
        self.taken: set[str] = set(self.BASE) | set(reserved)
        self.table: dict[str, str] = {}

    def reserve(self, *names: str) -> None:
        self.taken.update(names)

    def __call__(self, key: str, preferred: str | None = None) -> str:
        if key in self.table:
            return self.table[key]
        cand = re.sub(r"[^A-Za-z0-9_]", "_", preferred or key) or "v"
        if cand[0].isdigit():
            cand = "_" + cand
        while cand in self.taken:
            cand += "_"
        self.taken.add(cand)
        self.table[key] = cand
        return cand

    def fresh(self, preferred: str) -> str:
        cand = preferred
        while cand in self.taken:
            cand += "_"
        self.taken.add(cand)
        return cand


# ------------------------------------------------------------------ folding
def _is_num(e, v: float | None = None) -> bool:
    return isinstance(e, ir.Num) and (v is None or e.value == v)


class _Fold(ExprVisitor[ir.Expr]):
    """Fresh nodes (no locations), numeric subtrees folded."""

    def visit_bin(self, e: ir.BinOp) -> ir.Expr:
        a, b = self.visit(e.left), self.visit(e.right)
        if _is_num(a) and _is_num(b):
            try:
                v = evaluate(ir.BinOp(op=e.op, left=a, right=b), {})
                if math.isfinite(v):
                    return num(v)
            except (EvalError, ZeroDivisionError, OverflowError):
                pass
        if e.op == "*":
            if _is_num(b, 1.0):
                return a
            if _is_num(a, 1.0):
                return b
        elif e.op == "+":
            if _is_num(b, 0.0):
                return a
            if _is_num(a, 0.0):
                return b
        elif (e.op == "-" and _is_num(b, 0.0)) or (e.op in ("/", "**") and _is_num(b, 1.0)):
            return a
        return ir.BinOp(op=e.op, left=a, right=b)

    def visit_neg(self, e: ir.Neg) -> ir.Expr:
        a = self.visit(e.operand)
        if _is_num(a):
            return num(-a.value)
        if isinstance(a, ir.Neg):
            return a.operand
        return ir.Neg(operand=a)

    def visit_cmp(self, e) -> ir.Expr:
        a, b = self.visit(e.left), self.visit(e.right)
        if _is_num(a) and _is_num(b):
            return num(evaluate(e.model_copy(update={"left": a, "right": b}), {}))
        return e.model_copy(update={"left": a, "right": b, "loc": None})

    visit_bool = visit_cmp

    def visit_not(self, e: ir.Not) -> ir.Expr:
        a = self.visit(e.operand)
        if _is_num(a):
            return num(0.0 if a.value else 1.0)
        return ir.Not(operand=a)

    def visit_call(self, e: ir.Call) -> ir.Expr:
        args = tuple(self.visit(a) for a in e.args)
        if e.func == "where" and len(args) == 3 and _is_num(args[0]):
            return args[1] if args[0].value != 0 else args[2]
        if all(_is_num(a) for a in args):
            try:
                v = evaluate(ir.Call(func=e.func, args=args), {})
                if math.isfinite(v):
                    return num(v)
            except (EvalError, ValueError, OverflowError, ZeroDivisionError):
                pass
        return ir.Call(func=e.func, args=args)

    def visit_num(self, e: ir.Num) -> ir.Expr:
        return num(e.value)

    def visit_name(self, e: ir.Name) -> ir.Expr:
        return ir.Name(id=e.id)

    def leaf(self, e: ir.Expr) -> ir.Expr:
        return e

    visit_attr = visit_str = visit_list = leaf


def fold(e: ir.Expr) -> ir.Expr:
    """Fold numeric subtrees and drop operations that do not change a value
    (``x*1``, ``1*x``, ``x+0``, ``0+x``, ``x-0``, ``x/1``, ``x**1``, ``--x``)."""
    return _Fold().visit(e)


def prepare(e: ir.Expr, consts: dict[str, float]) -> ir.Expr:
    return fold(substitute(e, {k: num(v) for k, v in consts.items()}))


class _Key(ExprVisitor[str]):
    def visit_num(self, e: ir.Num) -> str:
        return repr(e.value)

    def visit_name(self, e: ir.Name) -> str:
        return e.id

    def visit_bin(self, e) -> str:
        return f"({self.visit(e.left)}{e.op}{self.visit(e.right)})"

    visit_cmp = visit_bool = visit_bin

    def visit_neg(self, e: ir.Neg) -> str:
        return f"(-{self.visit(e.operand)})"

    def visit_not(self, e: ir.Not) -> str:
        return f"(!{self.visit(e.operand)})"

    def visit_call(self, e: ir.Call) -> str:
        return f"{e.func}({','.join(self.visit(a) for a in e.args)})"


def key_of(e: ir.Expr) -> str:
    """A structural key (no locations) for de-duplication."""
    return _Key().visit(e)


# ------------------------------------------------------------------ hoisting
class Hoister(ExprTransformer):
    """Replace maximal subtrees free of ``dyn`` names by named tensors.

    A subtree that reads a per-step tensor (``step``) becomes a new per-step
    tensor computed for all steps at once; one that reads only static tensors
    becomes a static tensor computed once.  Bare names are left alone.
    """

    def __init__(self, dyn: set[str], step: set[str], static: set[str], prefix: str = "k"):
        self.dyn, self.step, self.static = set(dyn), set(step), set(static)
        self.items: list[tuple[str, str, ir.Expr]] = []  # (kind, name, expr)
        self._seen: dict[str, str] = {}
        self.prefix = prefix

    def kind(self, e: ir.Expr) -> str:
        ns = names(e)
        if ns & self.dyn:
            return "dyn"
        if ns & self.step:
            return "step"
        if ns & self.static:
            return "static"
        return "num"

    def add(self, name: str, kind: str) -> None:
        (self.step if kind == "step" else self.static if kind == "static" else self.dyn).add(name)

    def __call__(self, e: ir.Expr) -> ir.Expr:
        return self.visit(e)

    def visit(self, e: ir.Expr, *args) -> ir.Expr:
        k = self.kind(e)
        if k in ("step", "static"):
            if isinstance(e, ir.Name):
                return e
            key = key_of(e)
            if key not in self._seen:
                name = f"{self.prefix}{len(self._seen)}"
                self._seen[key] = name
                self.items.append((k, name, e))
                self.add(name, k)
            return ir.Name(id=self._seen[key])
        if k == "num":
            return e
        return super().visit(e)


# ------------------------------------------------------------------ printing
class TorchPrinter(Printer):
    """Prints an expression over tensors as torch code.

    ``names`` maps every identifier to its code; ``ref`` is code for a
    tensor of the right dtype/device (used where a bare number must become a
    tensor); ``dtype`` code of the float dtype (default ``ref.dtype``).  Functions print as the
    table says (``FUNCTIONS[f].torch_code``).
    """

    def __init__(self, names: dict[str, str], ref: str, dtype: str | None = None):
        super().__init__()
        self.names = names
        self.ref = ref
        self.dtype = dtype or f"{ref}.dtype"  # code of the float dtype
        self.uses_math = False

    def number(self, v: float) -> str:
        s = number(v)
        if "math." in s:
            self.uses_math = True
        return s

    def name(self, n: str) -> str:
        return self.names[n]

    def tensor(self, e: ir.Expr) -> str:
        """Code that is a tensor even when ``e`` is a bare number."""
        if isinstance(e, ir.Num):
            return f"{self.ref}.new_tensor({self.number(e.value)})"
        return self.p(e)[0]

    def boolean(self, e: ir.Expr) -> str:
        """Code for a bool tensor (the value of a condition)."""
        if isinstance(e, ir.Compare):
            pr = self._PREC["cmp"]
            a = self.wrap(*self.p(e.left), pr + 1)
            b = self.wrap(*self.p(e.right), pr + 1)
            if isinstance(e.left, ir.Num):  # keep a tensor on the left
                flip = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "==": "==", "!=": "!="}
                return f"({b} {flip[e.op]} {a})"
            return f"({a} {e.op} {b})"
        if isinstance(e, ir.BoolOp):
            fn = "torch.logical_and" if e.op == "and" else "torch.logical_or"
            return f"{fn}({self.boolean(e.left)}, {self.boolean(e.right)})"
        if isinstance(e, ir.Not):
            return f"torch.logical_not({unparen(self.boolean(e.operand))})"
        return f"({self.tensor(e)} != 0)"

    def visit_cmp(self, e: ir.Expr) -> tuple[str, int]:
        return f"{self.boolean(e)}.to({self.dtype})", 9

    visit_bool = visit_not = visit_cmp

    def arg(self, e: ir.Expr) -> CodeArg:
        return CodeArg(e.value if isinstance(e, ir.Num) else None,
                       text=lambda: self.p(e)[0], tensor=lambda: self.tensor(e),
                       cond=lambda: self.boolean(e))

    def visit_call(self, e: ir.Call) -> tuple[str, int]:
        row = FUNCTIONS.get(e.func)
        if row is None:
            raise TypeError(f"unknown function {e.func!r}")
        if callable(row.torch_code):
            return row.torch_code([self.arg(a) for a in e.args], self.dtype), 9
        return f"{row.torch_code}({', '.join(self.tensor(a) for a in e.args)})", 9


def function_helpers(code: str) -> list[str]:
    """The sources of the function helpers that ``code`` calls."""
    return [f.torch_helper.strip() for f in FUNCTIONS.values()
            if f.torch_helper and re.search(rf"(?<![\w.]){f.torch_code}\(", code)]


# ------------------------------------------------------------------ surrogates


def surrogate_code(s: ir.LSurrogate, x: str, dt: str) -> tuple[list[str], str]:
    """Lines computing dS/dx of surrogate ``s`` at the tensor ``x`` (the
    table's derivative, printed); returns (lines, expression).  ``dt``: code
    of the float dtype."""
    e = SURROGATES[s.name].dsdx(ir.Name(id="x"), s.args)
    if isinstance(e, ir.Num):
        return [], f"torch.ones_like({x})" if e.value == 1.0 else \
            f"torch.full_like({x}, {number(e.value)})"
    P = TorchPrinter({"x": x}, x, dt)
    lines: list[str] = []
    while True:  # a call used twice is computed once (sig = torch.sigmoid(k * x))
        seen: dict[str, int] = {}
        for c in _calls(e):
            seen[key_of(c)] = seen.get(key_of(c), 0) + 1
        twice = next((c for c in _calls(e) if seen[key_of(c)] > 1), None)
        if twice is None:
            return lines, P(e)
        local = "sig" if not lines else f"sig{len(lines)}"
        lines.append(f"{local} = {P(twice)}")
        P.names[local] = local
        e = _Replace(key_of(twice), ir.Name(id=local)).visit(e)


def _calls(e: ir.Expr) -> list[ir.Call]:
    """The calls of ``e``, outermost first."""
    out = [e] if isinstance(e, ir.Call) else []
    for c in children(e):
        out += _calls(c)
    return out


class _Replace(ExprTransformer):
    def __init__(self, key: str, by: ir.Expr):
        self.key, self.by = key, by

    def visit(self, e: ir.Expr, *args) -> ir.Expr:
        return self.by if key_of(e) == self.key else super().visit(e)


def surrogate_doc(s: ir.LSurrogate) -> str:
    args = ", ".join(f"{k}={number(v)}" for k, v in sorted(s.args.items()))
    return f"{s.name}({args})"


def statement_text(target: str, op: str, value: ir.Expr) -> str:
    """The .spk text of a statement (for comments in the generated code)."""
    from spikedsl.ir.exprs import SpkPrinter

    return f"{target} {op} {SpkPrinter()(value)}"


def spk(e: ir.Expr) -> str:
    from spikedsl.ir.exprs import SpkPrinter

    return SpkPrinter()(e)


# ------------------------------------------------------------------ tidying generated code
_ASSIGN = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*) = (.*)$")
_UNPACK = re.compile(r"^(\s*)((?:[A-Za-z_][A-Za-z0-9_]*, )+(?:[A-Za-z_][A-Za-z0-9_]*,?)?) = (.*)$")
_SIDE_EFFECT = ("out=", "_(", ".append(", ".apply(", "ctx.", "self.")


_STRING = re.compile(r"'[^'\\]*'|\"[^\"\\]*\"")
_NAME = re.compile(r"(?<![.\w])[A-Za-z_][A-Za-z0-9_]*")


def _names_in(ln: str) -> list[str]:
    """Identifiers of a line of code (no attributes, strings or comments)."""
    code = _STRING.sub("''", ln.split("#", 1)[0] if "'" not in ln and '"' not in ln else ln)
    code = code.split("#", 1)[0]
    return _NAME.findall(code)


def prune(lines: list[str]) -> list[str]:
    """Drop assignments to locals that are never read and rename unused
    names of tuple unpacking to ``_`` (the generated code stays lint-clean
    whatever the neuron)."""
    lines = list(lines)
    changed = True
    while changed:
        changed = False
        text_uses: dict[str, int] = {}
        for ln in lines:
            for w in _names_in(ln):
                text_uses[w] = text_uses.get(w, 0) + 1
        targets: dict[str, int] = {}
        for ln in lines:
            m = _ASSIGN.match(ln)
            if m:
                targets[m.group(2)] = targets.get(m.group(2), 0) + 1
        out = []
        for ln in lines:
            m = _ASSIGN.match(ln)
            if m and m.group(2) != "_":
                name = m.group(2)
                reads = text_uses.get(name, 0) - targets.get(name, 0)
                if reads <= 0:
                    changed = True
                    if any(s in m.group(3) for s in _SIDE_EFFECT):
                        out.append(f"{m.group(1)}{m.group(3)}")  # keep the call, drop the name
                    continue
            m = _UNPACK.match(ln)
            if m:
                parts = [p.strip() for p in m.group(2).split(",") if p.strip()]
                new = [p if text_uses.get(p, 0) > 1 or p == "_" else "_" for p in parts]
                if new != parts:
                    ln = f"{m.group(1)}{', '.join(new)}, = {m.group(3)}"
                    changed = True
            out.append(ln)
        # blocks left empty
        final = []
        for i, ln in enumerate(out):
            st = ln.strip()
            if st.endswith(":") and st.split()[0] in ("if", "for", "else:", "with"):
                ind = len(ln) - len(ln.lstrip())
                nxt = next((x for x in out[i + 1:] if x.strip()), "")
                if len(nxt) - len(nxt.lstrip()) <= ind:
                    changed = True
                    continue
            final.append(ln)
        lines = final
    return lines


def add_dels(lines: list[str], keep: set[str] = frozenset()) -> list[str]:
    """Insert ``del name`` after the last use of every local assigned at the
    top level of a function body (large temporaries are freed early, which
    lowers the peak memory of the backward pass)."""
    def words(ln: str) -> set[str]:
        return set(_names_in(ln))

    top = [i for i, ln in enumerate(lines) if ln and not ln[0].isspace()]
    assigned: dict[str, int] = {}
    for i in top:
        m = _ASSIGN.match(lines[i])
        if m and not m.group(1):
            assigned.setdefault(m.group(2), i)
    last: dict[str, int] = {}
    uses = [words(ln) for ln in lines]
    for name, first in assigned.items():
        idx = max((i for i, w in enumerate(uses) if name in w), default=first)
        # the end of the top-level statement (block) holding that use
        end = max(i for i in top if i <= idx)
        nxt = [i for i in top if i > end]
        last[name] = (nxt[0] - 1) if nxt else len(lines) - 1
    if lines and lines[-1].startswith("return"):
        ret = uses[-1]
    else:
        ret = set()
    after: dict[int, list[str]] = {}
    for name, pos in last.items():
        if name in ret or name in keep or pos >= len(lines) - 1:
            continue
        after.setdefault(pos, []).append(name)
    out = []
    for i, ln in enumerate(lines):
        out.append(ln)
        if i in after:
            out.append(f"del {', '.join(sorted(after[i]))}")
    return out
