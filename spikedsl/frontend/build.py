"""Stage 2: Lark parse tree -> spec IR (``ir.Module``), with locations."""

from __future__ import annotations

import math

from lark import Token, Tree

from spikedsl import ir
from spikedsl.errors import Collector, Loc
from spikedsl.ir.units import UnitError, parse_unit

# Deepest expression tree accepted (a sum of n terms is n deep).  Every later
# stage walks expressions recursively; this bound keeps them far from Python's
# recursion limit, so a huge expression is a located error, not a crash.
MAX_EXPR_DEPTH = 200


def tree_depth(t) -> int:
    """Depth of a parse tree, computed without recursion."""
    best, stack = 0, [(t, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if isinstance(node, Tree):
            stack.extend((c, d + 1) for c in node.children if isinstance(c, Tree))
    return best


class Builder:
    def __init__(self, file: str, errors: Collector):
        self.file = file
        self.errors = errors
        self._in_expr = False

    # ------------------------------------------------------------ helpers
    def loc(self, node) -> Loc | None:
        if isinstance(node, Token):
            return Loc(self.file, node.line, node.column, node.end_line or node.line,
                       node.end_column or node.column + len(node.value))
        meta = getattr(node, "meta", None)
        if meta is None or getattr(meta, "empty", True):
            return None
        return Loc(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # ------------------------------------------------------------ module
    def module(self, tree: Tree) -> ir.Module:
        imports, neurons, synapses, networks, trains, tests = [], [], [], [], [], []
        for item in tree.children:
            if not isinstance(item, Tree):
                continue
            kind = item.data
            if kind == "import_stmt":
                tok = item.children[0]
                imports.append(ir.Import(path=tok.value[1:-1], loc=self.loc(tok)))
            elif kind == "neuron":
                neurons.append(self.neuron(item))
            elif kind == "synapse":
                synapses.append(self.synapse(item))
            elif kind == "network":
                networks.append(self.network(item))
            elif kind == "train":
                trains.append(self.train(item))
            elif kind == "test":
                tests.append(self.test(item))
        return ir.Module(file=self.file, imports=tuple(imports), neurons=tuple(neurons),
                         synapses=tuple(synapses), networks=tuple(networks),
                         trains=tuple(trains), tests=tuple(tests), loc=Loc(self.file, 1, 1))

    # ------------------------------------------------------------ neuron
    def param(self, t: Tree) -> ir.Param:
        name, value, options = t.children
        kw = dict(trainable=False, per_neuron=False, init=None, range=None)
        if options is not None:
            for opt in options.children:
                if opt is None:
                    continue
                oname = opt.children[0]
                args = [self.arg(a) for a in opt.children[1:] if a is not None]
                pos = [a for a in args if not isinstance(a, ir.Keyword)]
                if oname == "trainable" and not args:
                    kw["trainable"] = True
                elif oname == "per_neuron":
                    kw["per_neuron"] = True
                    if len(pos) == 1 and isinstance(pos[0], ir.Call) and not [
                        a for a in args if isinstance(a, ir.Keyword)
                    ]:
                        kw["init"] = pos[0]
                    elif args:
                        self.errors.add("bad-argument", self.loc(opt), what="per_neuron",
                                        reason="expected per_neuron or per_neuron(uniform(a, b))")
                elif oname == "range":
                    if len(pos) == 2 and len(args) == 2:
                        kw["range"] = (pos[0], pos[1])
                    else:
                        self.errors.add("wrong-arity", self.loc(opt), name="range",
                                        expected=2, got=len(args))
                else:
                    self.errors.add("unknown-option", self.loc(oname), what="parameter option",
                                    name=str(oname), known="trainable, per_neuron, range")
        return ir.Param(name=str(name), value=self.expr(value), loc=self.loc(name), **kw)

    def state(self, t: Tree) -> ir.State:
        name, value = t.children
        return ir.State(name=str(name), init=self.expr(value), loc=self.loc(name))

    def ode(self, t: Tree) -> ir.ODE | None:
        lhs, dt, rhs, method = t.children
        lhs_s = str(lhs)
        if not (lhs_s.startswith("d") and len(lhs_s) > 1 and str(dt) == "dt"):
            state = lhs_s[1:] if lhs_s.startswith("d") and len(lhs_s) > 1 else lhs_s
            self.errors.add("bad-ode-lhs", self.loc(lhs), lhs=f"{lhs}/{dt}", state=state)
            return None
        return ir.ODE(state=lhs_s[1:], rhs=self.expr(rhs),
                      method=str(method) if method is not None else None,
                      method_loc=self.loc(method) if method is not None else None,
                      loc=self.loc(lhs))

    def assign(self, t: Tree) -> ir.Assign:
        name, op, value = t.children
        return ir.Assign(target=str(name), op=str(op.children[0]), value=self.expr(value),
                         loc=self.loc(name))

    def neuron(self, t: Tree) -> ir.Neuron:
        name = t.children[0]
        params, states, inputs, odes, updates, spikes, reset = [], [], [], [], [], [], []
        jumps = []
        detach, refractory, clamp, surrogate = False, None, None, None
        last_kind, last_line = None, -1
        for item in t.children[1:]:
            if not isinstance(item, Tree):
                continue
            k = item.data
            line = item.meta.line if not item.meta.empty else -1
            if k == "param":
                params.append(self.param(item))
            elif k == "state":
                states.append(self.state(item))
            elif k == "input_decl":
                iname, unit = item.children
                u = None
                if unit is not None:
                    u = str(unit.children[0])
                    if u not in ("1",):
                        try:
                            parse_unit(u)
                        except UnitError:
                            self.errors.add("input-unused-dims", self.loc(unit), name=str(iname),
                                            unit=u)
                inputs.append(ir.InputDecl(name=str(iname), unit=u, loc=self.loc(iname)))
            elif k == "ode":
                o = self.ode(item)
                if o is not None:
                    odes.append(o)
            elif k == "update":
                updates.append(self.assign(item.children[0]))
            elif k == "jump":
                jumps.append(self.assign(item.children[0]))
            elif k == "spike":
                spikes.append(self.expr(item.children[0]))
            elif k in ("reset", "reset_detach"):
                detach = detach or k == "reset_detach"
                if item.children and item.children[-1] is not None:
                    reset.append(self.assign(item.children[-1]))
                k = "reset"
            elif k == "refractory":
                refractory = self.expr(item.children[0])
                if len(item.children) > 1 and item.children[1] is not None:
                    clamp = tuple(ir.Name(id=str(c), loc=self.loc(c))
                                  for c in item.children[1].children)
            elif k == "surrogate":
                sname = item.children[0]
                args = tuple(a for a in (self.arg(c) for c in item.children[1:] if c is not None))
                kws = []
                for a in args:
                    if isinstance(a, ir.Keyword):
                        kws.append(a)
                    else:
                        self.errors.add("bad-argument", a.loc, what=f"surrogate {sname}",
                                        reason="arguments are named, e.g. slope = 25")
                surrogate = ir.Surrogate(name=str(sname), args=tuple(kws), loc=self.loc(sname))
            elif k == "bare_assign":
                a = self.assign(item.children[0])
                if last_kind == "update" and line == last_line:
                    updates.append(a)
                    k = "update"
                elif last_kind == "jump" and line == last_line:
                    jumps.append(a)
                    k = "jump"
                elif last_kind == "reset" and line == last_line:
                    reset.append(a)
                    k = "reset"
                else:
                    self.errors.add("stray-assign", a.loc, name=a.target, op=a.op)
            last_kind, last_line = k, line
        n = ir.Neuron(name=str(name), params=tuple(params), states=tuple(states),
                      inputs=tuple(inputs), odes=tuple(odes), updates=tuple(updates),
                      jumps=tuple(jumps), spikes=tuple(spikes), reset=tuple(reset),
                      reset_detach=detach, refractory=refractory, clamp=clamp,
                      surrogate=surrogate, loc=self.loc(name))
        return units_as_values(n, {p.name for p in params} | {s.name for s in states}
                               | {i.name for i in inputs} | {"dt"})

    # ------------------------------------------------------------ synapse
    def synapse(self, t: Tree) -> ir.Synapse:
        name = t.children[0]
        params, states, odes, pre, post = [], [], [], [], []
        for item in t.children[1:]:
            if not isinstance(item, Tree):
                continue
            if item.data == "param":
                params.append(self.param(item))
            elif item.data == "state":
                states.append(self.state(item))
            elif item.data == "ode":
                o = self.ode(item)
                if o is not None:
                    odes.append(o)
            elif item.data in ("on_pre", "on_post"):
                block = item.children[0]
                stmts = [self.assign(a) for a in block.children if isinstance(a, Tree)]
                (pre if item.data == "on_pre" else post).extend(stmts)
        s = ir.Synapse(name=str(name), params=tuple(params), states=tuple(states),
                       odes=tuple(odes), on_pre=tuple(pre), on_post=tuple(post),
                       loc=self.loc(name))
        return units_as_values(s, {p.name for p in params} | {st.name for st in states}
                               | {"dt", "w"})

    # ------------------------------------------------------------ network
    def shape(self, t: Tree | None) -> tuple[int, ...] | None:
        if t is None:
            return None
        return tuple(int(c) for c in t.children)

    def setting(self, t: Tree) -> ir.Setting:
        name, value = t.children
        return ir.Setting(name=str(name), value=self.expr(value), loc=self.loc(name))

    def _block(self, t: Tree) -> tuple[list[ir.Setting], list[tuple[str, Tree]]]:
        """A block's settings and its other statements (kind, tree), in order."""
        settings, rest = [], []
        for item in t.children[1:]:
            if isinstance(item, Tree):
                if item.data == "setting":
                    settings.append(self.setting(item))
                else:
                    rest.append((item.data, item))
        return settings, rest

    def network(self, t: Tree) -> ir.Network:
        name = t.children[0]
        inputs, layers, outputs, plast = [], [], [], []
        settings, items = self._block(t)
        for k, item in items:
            if k == "net_input":
                iname, shape, enc = item.children
                inputs.append(ir.NetInput(name=str(iname), shape=self.shape(shape),
                                          encoder=self.expr(enc), loc=self.loc(iname)))
            elif k == "layer":
                lname, shape, body, *projs = item.children
                projections = []
                for p in projs:
                    if p is None:
                        continue
                    call_t, target = p.children
                    call = self.expr(call_t)
                    projections.append(ir.Projection(
                        call=call, target_input=str(target) if target is not None else None,
                        loc=self.loc(p)))
                layers.append(ir.Layer(name=str(lname), shape=self.shape(shape),
                                       body=self.expr(body), projections=tuple(projections),
                                       loc=self.loc(lname)))
            elif k == "output":
                outputs.append(ir.Output(expr=self.expr(item.children[0]), loc=self.loc(item)))
            elif k == "plasticity":
                rule, src, dst = item.children
                if isinstance(rule, Token):
                    rule_call = ir.Call(func=str(rule), loc=self.loc(rule))
                else:
                    rule_call = self.expr(rule)
                plast.append(ir.Plasticity(rule=rule_call, source=str(src), target=str(dst),
                                           loc=self.loc(item)))
        return ir.Network(name=str(name), settings=tuple(settings), inputs=tuple(inputs),
                          layers=tuple(layers), outputs=tuple(outputs),
                          plasticity=tuple(plast), loc=self.loc(name))

    def train(self, t: Tree) -> ir.Train:
        name = t.children[0]
        settings, _ = self._block(t)
        return ir.Train(name=str(name), settings=tuple(settings), loc=self.loc(name))

    def test(self, t: Tree) -> ir.Test:
        name = t.children[0]
        drives, expects, run = [], [], None
        settings, items = self._block(t)
        for k, item in items:
            if k == "drive":
                dname, value, start, stop = item.children
                drives.append(ir.Drive(
                    name=str(dname), value=self.expr(value),
                    start=self.expr(start) if start is not None else None,
                    stop=self.expr(stop) if stop is not None else None, loc=self.loc(dname)))
            elif k == "run":
                run = self.expr(item.children[0])
            elif k == "expect":
                q, at, op, value, tol = item.children
                expects.append(ir.Expect(
                    quantity=self.expr(q), at=self.expr(at) if at is not None else None,
                    op=str(op), value=self.expr(value),
                    tol=self.expr(tol) if tol is not None else None, loc=self.loc(item)))
        return ir.Test(name=str(name)[1:-1], settings=tuple(settings), drives=tuple(drives),
                       run=run, expects=tuple(expects), loc=self.loc(name))

    # ------------------------------------------------------------ expressions
    def arg(self, t) -> ir.Expr | ir.Keyword:
        if isinstance(t, Tree) and t.data == "kwarg":
            name, value = t.children
            return ir.Keyword(name=str(name), value=self.expr(value), loc=self.loc(name))
        if isinstance(t, Tree) and t.data == "arg":
            return self.expr(t.children[0])
        return self.expr(t)

    def expr(self, t) -> ir.Expr:
        """The IR of an expression tree; a tree deeper than ``MAX_EXPR_DEPTH`` is
        reported at its location instead of exhausting Python's stack later."""
        if self._in_expr:
            return self._expr(t)
        depth = tree_depth(t)
        if depth > MAX_EXPR_DEPTH:
            self.errors.add("expr-too-deep", self.loc(t), depth=depth, limit=MAX_EXPR_DEPTH)
            return ir.Num(value=0.0, text="0", loc=self.loc(t))
        self._in_expr = True
        try:
            return self._expr(t)
        finally:
            self._in_expr = False

    def number(self, tok, scale: float = 1.0) -> float:
        value = float(tok) * scale
        if not math.isfinite(value):
            self.errors.add("number-range", self.loc(tok), text=str(tok))
            return 0.0
        return value

    def _expr(self, t) -> ir.Expr:
        loc = self.loc(t)
        if isinstance(t, Token):
            if t.type == "NAME":
                return ir.Name(id=str(t), loc=loc)
            if t.type == "NUMBER":
                return ir.Num(value=self.number(t), text=str(t), loc=loc)
            if t.type == "STRING":
                return ir.Str(value=str(t)[1:-1], loc=loc)
            raise AssertionError(t.type)
        k = t.data
        c = t.children
        if k == "quantity":
            num, unit = c
            if unit is None:
                return ir.Num(value=self.number(num), text=str(num), loc=loc)
            try:
                scale, _ = parse_unit(str(unit))
            except UnitError:
                self.errors.add("input-unused-dims", self.loc(unit), name=str(num), unit=str(unit))
                scale = 1.0
            return ir.Num(value=self.number(num, scale), unit=str(unit), text=f"{num} {unit}",
                          loc=loc)
        if k == "name":
            return ir.Name(id=str(c[0]), loc=loc)
        if k == "attr":
            return ir.Attr(obj=str(c[0]), attr=str(c[1]), loc=loc)
        if k == "string":
            return ir.Str(value=str(c[0])[1:-1], loc=loc)
        if k in ("add", "sub", "mul", "div"):
            op = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[k]
            return ir.BinOp(op=op, left=self.expr(c[0]), right=self.expr(c[1]), loc=loc)
        if k == "pow":
            return ir.BinOp(op="**", left=self.expr(c[0]), right=self.expr(c[1]), loc=loc)
        if k == "neg":
            return ir.Neg(operand=self.expr(c[0]), loc=loc)
        if k == "pos":
            return self.expr(c[0])
        if k == "compare":
            return ir.Compare(op=str(c[1]), left=self.expr(c[0]), right=self.expr(c[2]), loc=loc)
        if k in ("and_op", "or_op"):
            return ir.BoolOp(op=k[:-3], left=self.expr(c[0]), right=self.expr(c[1]), loc=loc)
        if k == "not_op":
            return ir.Not(operand=self.expr(c[0]), loc=loc)
        if k == "call":
            name = c[0]
            args, kwargs = [], []
            for a in c[1:]:
                if a is None:
                    continue
                x = self.arg(a)
                (kwargs if isinstance(x, ir.Keyword) else args).append(x)
            return ir.Call(func=str(name), args=tuple(args), kwargs=tuple(kwargs), loc=loc)
        if k == "list":
            return ir.ListExpr(items=tuple(self.expr(x) for x in c if x is not None), loc=loc)
        if k in ("arg",):
            return self.expr(c[0])
        raise AssertionError(f"unhandled tree {k}")


def build_module(tree: Tree, file: str, errors: Collector) -> ir.Module:
    return Builder(file, errors).module(tree)


def units_as_values(block, defined: set[str]):
    """A unit name multiplied or divided into an expression (``0.04 / mV``,
    ``40 * mV``, as in Brian2) is the quantity ``1 mV``, unless the block
    declares that name.  A unit name standing alone stays a name (so a typo is
    still an undefined name)."""

    def unit(e):
        if not isinstance(e, ir.Name) or e.id in defined:
            return None
        try:
            scale, _ = parse_unit(e.id)
        except UnitError:
            return None
        return ir.Num(value=scale, unit=e.id, text=f"1 {e.id}", loc=e.loc)

    def walk(x):
        if isinstance(x, ir.BinOp):
            left, right = walk(x.left), walk(x.right)
            if x.op in ("*", "/"):
                left = unit(left) or left
                right = unit(right) or right
            if left is x.left and right is x.right:
                return x
            return x.model_copy(update={"left": left, "right": right})
        if isinstance(x, ir.Name | ir.Num | ir.Str | ir.Attr) or x is None:
            return x
        if isinstance(x, tuple):
            new = tuple(walk(v) for v in x)
            return x if all(a is b for a, b in zip(new, x)) else new
        if isinstance(x, ir.Node):
            upd = {}
            for f in type(x).model_fields:
                if f in ("loc", "clamp"):
                    continue
                v = getattr(x, f)
                if isinstance(v, ir.Node | tuple):
                    nv = walk(v)
                    if nv is not v:
                        upd[f] = nv
            return x.model_copy(update=upd) if upd else x
        return x

    return walk(block)
