"""Canonical formatting of .spk files (``spikedsl fmt``).

Statements keep their order, their comments and single blank lines between
them; spacing, separators, parentheses and indentation become canonical.
Within a run of consecutive statements of a block (no blank or comment line
between them), the statement keywords of a network are padded to one width,
the first `` = `` of the statements is aligned, and trailing comments are
aligned, as in the model library.  ``format(format(x)) == format(x)`` and the
output parses to the same IR (locations aside).
"""

from __future__ import annotations

import re

from spikedsl import ir
from spikedsl.ir.exprs import SpkPrinter

INDENT = "    "


class _Printer(SpkPrinter):
    def visit_num(self, e: ir.Num) -> tuple[str, int]:
        return e.text or self.number(e.value), 9


_P = _Printer()


def expr(e: ir.Expr) -> str:
    return _P(e)


def expect_text(e: ir.Expect, p=expr) -> str:
    """An ``expect`` statement, its expressions written by ``p``."""
    text = f"expect {p(e.quantity)}"
    if e.at is not None:
        text += f" at {p(e.at)}"
    text += f" {e.op} {p(e.value)}"
    if e.tol is not None:
        text += f" +- {p(e.tol)}"
    return text


def _comments(text: str) -> dict[int, tuple[str, bool]]:
    """line -> (comment text, whether the line holds only the comment)."""
    out = {}
    for i, line in enumerate(text.split("\n"), start=1):
        m = re.search(r'#[^\n]*$', _strip_strings(line))
        if m:
            out[i] = (line[m.start():].rstrip(), line[:m.start()].strip() == "")
    return out


def _strip_strings(line: str) -> str:
    return re.sub(r'"[^"\n]*"', lambda m: " " * len(m.group(0)), line)


class Formatter:
    def __init__(self, text: str):
        self.comments = _comments(text)
        self.blank = {i for i, ln in enumerate(text.split("\n"), start=1) if not ln.strip()}
        self.used: set[int] = set()
        self.out: list[str] = []
        self.trailing: dict[int, str] = {}  # output index -> trailing comment
        self.last_src = 0  # source line of the last emitted line

    def _at(self, line: int) -> None:
        """Before emitting source line ``line``: keep one blank line where the
        source had one since the last emitted line (not right after ``{``)."""
        if self.last_src and any(b in self.blank for b in range(self.last_src + 1, line)) \
                and self.out and self.out[-1] != "" and not self.out[-1].endswith("{"):
            self.out.append("")
        self.last_src = max(self.last_src, line)

    def flush_before(self, line: int, depth: int) -> None:
        for ln in sorted(self.comments):
            if ln < line and ln not in self.used:
                self.used.add(ln)
                self._at(ln)
                self.out.append(INDENT * depth + self.comments[ln][0])

    def emit(self, text: str, line: int | None, depth: int) -> None:
        if line:
            self.flush_before(line, depth)
            self._at(line)
        if line and line in self.comments and not self.comments[line][1] and \
                line not in self.used:
            self.used.add(line)
            self.trailing[len(self.out)] = self.comments[line][0]
        self.out.append(INDENT * depth + text)

    def block(self, head: str, loc, items: list[tuple[int, int, str]]) -> None:
        self.emit(head + " {", loc.line if loc else None, 0)
        first = len(self.out)
        for line, _col, text in sorted(items, key=lambda t: (t[0], t[1])):
            self.emit(text, line, 1)
        end = loc.end_line if loc and loc.end_line else None
        if end:
            self.flush_before(end + 1, 1)
            self.last_src = max(self.last_src, end)
        _align(self.out, first, len(self.out), self.trailing, network=head.startswith("network"))
        self.out.append("}")

    def text(self) -> str:
        lines = [ln + ("  " + self.trailing[i] if i in self.trailing else "")
                 for i, ln in enumerate(self.out)]
        return "\n".join(lines).rstrip() + "\n"


    # -------------------------------------------------------------- pieces
    @staticmethod
    def _pos(node) -> tuple[int, int]:
        return (node.loc.line, node.loc.col) if node.loc else (0, 0)

    def param(self, p: ir.Param) -> str:
        opts = []
        if p.trainable:
            opts.append("trainable")
        if p.per_neuron:
            opts.append(f"per_neuron({expr(p.init)})" if p.init is not None else "per_neuron")
        if p.range is not None:
            opts.append(f"range({expr(p.range[0])}, {expr(p.range[1])})")
        suffix = f" [{', '.join(opts)}]" if opts else ""
        return f"param {p.name} = {expr(p.value)}{suffix}"

    @staticmethod
    def assign(a: ir.Assign) -> str:
        return f"{a.target} {a.op} {expr(a.value)}"

    def _declarations(self, x: ir.Neuron | ir.Synapse) -> list[tuple[int, int, str]]:
        """The parameters, states and ODEs of a neuron or synapse (the block
        sorts every item by its position)."""
        items = [(*self._pos(p), self.param(p)) for p in x.params]
        items += [(*self._pos(s), f"state {s.name} = {expr(s.init)}") for s in x.states]
        for o in x.odes:
            m = f" method {o.method}" if o.method else ""
            items.append((*self._pos(o), f"d{o.state}/dt = {expr(o.rhs)}{m}"))
        return items

    def neuron(self, n: ir.Neuron, block_loc) -> None:
        items = self._declarations(n)
        for i in n.inputs:
            items.append((*self._pos(i), f"input {i.name}" + (f" : {i.unit}" if i.unit else "")))
        # update statements on one source line stay together
        for line, group in _group(n.updates):
            items.append((line, group[0].loc.col if group[0].loc else 0,
                          "; ".join(("update " if k == 0 else "") + self.assign(a)
                                    for k, a in enumerate(group))))
        for line, group in _group(n.jumps):
            items.append((line, group[0].loc.col if group[0].loc else 0,
                          "; ".join(("jump " if k == 0 else "") + self.assign(a)
                                    for k, a in enumerate(group))))
        for c in n.spikes:
            items.append((*self._pos(c), f"spike {expr(c)}"))
        if n.reset:
            head = "reset detach " if n.reset_detach else "reset "
            for k, (line, group) in enumerate(_group(n.reset)):
                items.append((line, 0, (head if k == 0 else "reset ") +
                               "; ".join(self.assign(a) for a in group)))
        elif n.reset_detach:
            items.append((n.loc.line + 1 if n.loc else 0, 0, "reset detach"))
        if n.refractory is not None:
            clamp = f" [clamp {', '.join(c.id for c in n.clamp)}]" if n.clamp is not None else ""
            items.append((*self._pos(n.refractory), f"refractory {expr(n.refractory)}{clamp}"))
        if n.surrogate is not None:
            args = ", ".join(f"{k.name} = {expr(k.value)}" for k in n.surrogate.args)
            items.append((*self._pos(n.surrogate),
                          f"surrogate {n.surrogate.name}" + (f"({args})" if args else "")))
        self.block(f"neuron {n.name}", block_loc, items)

    def synapse(self, s: ir.Synapse, block_loc) -> None:
        items = self._declarations(s)
        for name, stmts in (("on_pre", s.on_pre), ("on_post", s.on_post)):
            if stmts:
                line = stmts[0].loc.line if stmts[0].loc else 0
                items.append((line, 0, f"{name} {{ " + "; ".join(self.assign(a) for a in stmts)
                              + " }"))
        self.block(f"synapse {s.name}", block_loc, items)

    def network(self, net: ir.Network, block_loc) -> None:
        items: list[tuple[int, int, str]] = []
        for s in net.settings:
            items.append((*self._pos(s), f"{s.name} = {expr(s.value)}"))
        for i in net.inputs:
            items.append((*self._pos(i), f"input {i.name}{_shape(i.shape)} : {expr(i.encoder)}"))
        for la in net.layers:
            text = f"layer {la.name}{_shape(la.shape)} = {expr(la.body)}"
            if la.projections:
                text += " <- " + " + ".join(
                    expr(p.call) + (f" -> {p.target_input}" if p.target_input else "")
                    for p in la.projections)
            items.append((*self._pos(la), text))
        for o in net.outputs:
            items.append((*self._pos(o), f"output {expr(o.expr)}"))
        for p in net.plasticity:
            items.append((*self._pos(p), f"plasticity {expr(p.rule) if p.rule.args or p.rule.kwargs else p.rule.func} on {p.source} -> {p.target}"))
        self.block(f"network {net.name}", block_loc, items)

    def settings_block(self, head: str, settings, block_loc) -> None:
        items = [(*self._pos(s), f"{s.name} = {expr(s.value)}") for s in settings]
        self.block(head, block_loc, items)

    def test(self, t: ir.Test, block_loc) -> None:
        items: list[tuple[int, int, str]] = []
        for s in t.settings:
            items.append((*self._pos(s), f"{s.name} = {expr(s.value)}"))
        for d in t.drives:
            text = f"drive {d.name} = {expr(d.value)}"
            if d.start is not None:
                text += f" from {expr(d.start)} to {expr(d.stop)}"
            items.append((*self._pos(d), text))
        if t.run is not None:
            items.append((*self._pos(t.run), f"run {expr(t.run)}"))
        for e in t.expects:
            items.append((*self._pos(e), expect_text(e, expr)))
        self.block(f'test "{t.name}"', block_loc, items)


def _shape(shape) -> str:
    return "" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _group(stmts) -> list[tuple[int, list[ir.Assign]]]:
    groups: list[tuple[int, list[ir.Assign]]] = []
    for a in stmts:
        line = a.loc.line if a.loc else 0
        if groups and groups[-1][0] == line:
            groups[-1][1].append(a)
        else:
            groups.append((line, [a]))
    return groups


def format_module(mod: ir.Module, text: str, block_locs: dict) -> str:
    f = Formatter(text)
    entries: list[tuple[int, str, object]] = []
    for imp in mod.imports:
        entries.append((imp.loc.line if imp.loc else 0, "import", imp))
    for kind, items in (("neuron", mod.neurons), ("synapse", mod.synapses),
                        ("network", mod.networks), ("train", mod.trains), ("test", mod.tests)):
        for it in items:
            entries.append((block_locs[id(it)].line, kind, it))
    entries.sort(key=lambda e: e[0])
    prev_kind = None
    for _line, kind, it in entries:
        if f.out and f.out[-1] != "" and not (prev_kind == "import" and kind == "import"):
            f.out.append("")
        loc = block_locs.get(id(it))
        if kind == "import":
            f.emit(f'import "{it.path}"', it.loc.line if it.loc else None, 0)
        elif kind == "neuron":
            f.neuron(it, loc)
        elif kind == "synapse":
            f.synapse(it, loc)
        elif kind == "network":
            f.network(it, loc)
        elif kind == "train":
            f.settings_block(f"train {it.name}", it.settings, loc)
        else:
            f.test(it, loc)
        prev_kind = kind
    f.flush_before(10**9, 0)
    return f.text()


def format_text(text: str, file: str = "<string>") -> str:
    """Format spec text; raises SpecError on syntax errors."""
    from lark import Tree

    from spikedsl.errors import Collector
    from spikedsl.frontend.build import build_module
    from spikedsl.frontend.parse import parse_text

    errors = Collector()
    errors.sources[file] = text
    tree = parse_text(text, file, errors)
    errors.raise_if_any()
    mod = build_module(tree, file, errors)
    errors.raise_if_any()
    # block locations (the whole block, from its keyword to its closing brace)
    from spikedsl.errors import Loc

    locs: dict[int, Loc] = {}
    blocks = [c for c in tree.children if isinstance(c, Tree) and c.data != "import_stmt"]
    items = list(mod.neurons) + list(mod.synapses) + list(mod.networks) + list(mod.trains) + \
        list(mod.tests)
    by_name: dict[tuple[str, int], object] = {}
    for it in items:
        by_name[(type(it).__name__, it.loc.line if it.loc else 0)] = it
    kinds = {"neuron": "Neuron", "synapse": "Synapse", "network": "Network", "train": "Train",
             "test": "Test"}
    for b in blocks:
        name_tok = b.children[0]
        it = by_name.get((kinds[b.data], name_tok.line))
        if it is not None:
            locs[id(it)] = Loc(file, b.meta.line, b.meta.column, b.meta.end_line,
                               b.meta.end_column)
    return format_module(mod, text, locs)


_KEYWORDS = ("input", "layer", "output")
ALIGN_WIDTH = 100  # columns are aligned only where the aligned lines stay this short
_EQ = re.compile(r"^(\s*)(.*?\S) = ")


def _align(out: list[str], lo: int, hi: int, trailing: dict[int, str], network: bool) -> None:
    """Align the statements of out[lo:hi] run by run (see the module docstring)."""
    runs, run = [], []
    for i in range(lo, hi):
        s = out[i].strip()
        if not s or s.startswith("#"):
            if run:
                runs.append(run)
            run = []
        else:
            run.append(i)
    if run:
        runs.append(run)
    for run in runs:
        if network:
            kw = {i: out[i].split(None, 1)[0] for i in run}
            used = [k for k in kw.values() if k in _KEYWORDS]
            if len(set(used)) > 1:
                width = max(len(k) for k in used)
                for i in run:
                    if kw[i] in _KEYWORDS:
                        ind, rest = out[i][: len(out[i]) - len(out[i].lstrip())], out[i].lstrip()
                        out[i] = ind + kw[i].ljust(width) + rest[len(kw[i]):]
        for group in _same_kind(out, run):
            eq = {i: m for i in group if (m := _EQ.match(out[i])) and _simple_lhs(m.group(2))}
            if len(eq) > 1:
                width = max(len(m.group(2)) for m in eq.values())
                for i, m in eq.items():
                    out[i] = m.group(1) + m.group(2).ljust(width) + out[i][m.end() - 3:]
            meth = [i for i in group if " method " in out[i] and _ODE.match(out[i].split()[0])]
            width = max((out[i].rindex(" method ") for i in meth), default=0)
            if len(meth) > 1 and width + len(" method rk4") <= ALIGN_WIDTH:
                for i in meth:
                    k = out[i].rindex(" method ")
                    out[i] = out[i][:k].ljust(width) + out[i][k:]
        com = [i for i in run if i in trailing]
        width = max((len(out[i]) for i in com), default=0)
        if len(com) > 1 and width <= ALIGN_WIDTH:
            for i in com:
                out[i] = out[i].ljust(width)


_ALIGNED = ("param", "state", "layer", "drive")
_ODE = re.compile(r"^d\w+/dt$")


def _same_kind(out: list[str], run: list[int]) -> list[list[int]]:
    """Split a run into consecutive statements of one kind: ``param`` lines,
    ``state`` lines, ``layer`` lines, ``drive`` lines, or settings (``dt = …``)."""
    groups: list[list[int]] = []
    prev = None
    for i in run:
        words = out[i].split(None, 2)
        if words[0] in _ALIGNED:
            kind = words[0]
        elif _ODE.match(words[0]):
            kind = "ode"
        elif len(words) > 1 and words[1] == "=":
            kind = "setting"
        else:
            kind = None
        if kind is not None and kind == prev:
            groups[-1].append(i)
        else:
            groups.append([i])
        prev = kind
    return groups


def _simple_lhs(lhs: str) -> bool:
    """A left side worth aligning: no call, brace or operator before the `=`."""
    return bool(_ODE.match(lhs)) or not any(c in lhs for c in "({<+-*/=;:")
