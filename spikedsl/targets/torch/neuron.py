"""Code generation for one neuron layer of the torch target.

Two forms of the lowered step (docs/semantics.md, steps 2b-2f):

* :func:`step_code` - one step with plain autograd (the spike is a
  surrogate ``autograd.Function``); used by the step-by-step path and inside
  recurrent groups;
* :class:`ScanGen` - the whole layer over T steps as one
  ``autograd.Function`` (the fast path): the forward runs the recurrence into
  preallocated buffers, the backward is the analytic BPTT derived with SymPy
  from the same equations (surrogate, reset and refractory included):

      u_{t-1} = M_t u_t + c_t        (adjoint of the post-reset states)

  where ``M_t`` and ``c_t`` are computed for all steps at once, so only the
  small linear recursion runs step by step; the gradients of the inputs and
  parameters are then again computed for all steps at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from spikedsl import ir
from spikedsl.ir.exprs import names
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.visitor import children
from spikedsl.targets.torch.expr import (
    Hoister,
    Namer,
    TorchPrinter,
    add_dels,
    fold,
    number,
    prepare,
    prune,
    spk,
    statement_text,
    surrogate_code,
    surrogate_doc,
)

# ------------------------------------------------------------------ the plan


@dataclass
class Stmt:
    target: str
    op: str
    value: ir.Expr


@dataclass
class NeuronPlan:
    """The neuron's step with constants substituted and subexpressions hoisted."""

    neuron: ir.LNeuron
    R: int
    states: list[str]
    inputs: list[str]
    tensor_params: list[str]  # names of tensor parameters (trainable / per-neuron)
    # (kind step|static, name, expr over inputs/params), in dependency order,
    # only those the step needs (directly or through another hoisted tensor)
    hoisted: list[tuple[str, str, ir.Expr]]
    temps: list[Stmt]  # per-step temporaries
    updates: dict[str, ir.Expr]
    spike: ir.Expr | None
    resets: list[Stmt]
    inits: dict[str, ir.Expr]
    step_names: list[str]  # per-step tensors read by the loop (inputs / hoisted)
    static_names: list[str]  # static tensors read by the loop
    held: set[str] = field(default_factory=set)


def make_plan(neuron: ir.LNeuron, dt: float, R: int, tensor_params: set[str],
              mode: str) -> NeuronPlan:
    """``mode``: ``"scan"`` (inputs are known for all steps: input-only
    subexpressions are hoisted out of the loop) or ``"step"``."""
    consts: dict[str, float] = {"dt": dt}
    for p in neuron.params:
        if p.name not in tensor_params:
            consts[p.name] = float(p.value)
    states = list(neuron.state_names)
    inputs = list(neuron.inputs)
    per_step_inputs = mode == "scan" and R == 0
    dyn = set(states) | (set() if per_step_inputs else set(inputs))
    step = set(inputs) if per_step_inputs else set()
    H = Hoister(dyn, step, set(tensor_params), prefix="%k")
    temps: list[Stmt] = []
    for t in neuron.temps:
        e = prepare(t.value, consts)
        if isinstance(e, ir.Num):
            consts[t.target] = e.value
            continue
        kind = H.kind(e)
        if kind in ("step", "static"):
            H.items.append((kind, t.target, e))
            H.add(t.target, kind)
            continue
        temps.append(Stmt(t.target, "=", H(e)))
        H.dyn.add(t.target)
    def prep(e: ir.Expr) -> ir.Expr:
        return H(prepare(e, consts))

    updates = {u.target: prep(u.value) for u in neuron.updates}
    spike = prep(neuron.spike_x) if neuron.spiking and neuron.spike_x is not None else None
    resets = [Stmt(a.target, a.op, prep(a.value)) for a in neuron.reset] if spike is not None \
        else []
    inits = {s.name: prepare(s.init, consts) for s in neuron.states}
    used: set[str] = set()
    for e in [s.value for s in temps] + list(updates.values()) + [s.value for s in resets] + (
            [spike] if spike is not None else []):
        used |= names(e)
    step_names = [n for n in inputs if n in used]
    step_names += [n for k, n, _ in H.items if k == "step" and n in used]
    static_names = [n for n in sorted(tensor_params) if n in used]
    static_names += [n for k, n, _ in H.items if k == "static" and n in used]
    # the hoisted tensors the loop reads and, transitively, those they read: a
    # hoisted temporary may feed only another hoisted subexpression (items only
    # read earlier items, so one backward pass closes the set)
    needed = set(used)
    for _k, hname, e in reversed(H.items):
        if hname in needed:
            needed |= names(e)
    hoisted = [item for item in H.items if item[1] in needed]
    held = {a.target for a in neuron.reset} if R > 0 else set()
    return NeuronPlan(neuron=neuron, R=R, states=states, inputs=inputs,
                      tensor_params=sorted(tensor_params), hoisted=hoisted, temps=temps,
                      updates=updates, spike=spike, resets=resets, inits=inits,
                      step_names=step_names, static_names=static_names, held=held)


def _size(e: ir.Expr, sizes: dict[str, int]) -> int:
    if isinstance(e, ir.Name):
        return sizes.get(e.id, 1)
    return 1 + sum(_size(a, sizes) for a in children(e))


MAX_ANALYTIC_SIZE = 400
CHUNK_ELEMENTS = 131072  # elements per [chunk, B, ...] temporary of the eager backward


def analytic_size(plan: NeuronPlan) -> int:
    """Size of the step with the temporaries written out (what SymPy would
    differentiate); above MAX_ANALYTIC_SIZE the layer keeps plain autograd."""
    sizes: dict[str, int] = {}
    for t in plan.temps:
        sizes[t.target] = _size(t.value, sizes)
    total = sum(_size(e, sizes) for e in plan.updates.values()) * max(1, len(plan.states))
    if plan.spike is not None:
        total += _size(plan.spike, sizes)
    total += sum(_size(r.value, sizes) for r in plan.resets)
    return total


def split_spike(x: ir.Expr) -> tuple[ir.Expr, ir.Expr]:
    if isinstance(x, ir.BinOp) and x.op == "-":
        return x.left, x.right
    return x, ir.Num(value=0.0)


def reset_order(resets: list[Stmt]) -> dict[int, bool]:
    """index -> whether it is the last reset statement of its state."""
    last = {}
    for i, s in enumerate(resets):
        last[s.target] = i
    return {i: last[s.target] == i for i, s in enumerate(resets)}


# ------------------------------------------------------------------ step code (autograd)


def step_code(plan: NeuronPlan, *, names_: dict[str, str], state_vars: dict[str, str],
              pre_vars: dict[str, str], z_var: str, ref_var: str | None, spike_fn: str,
              namer: Namer, ref_tensor: str, R: int) -> list[str]:
    """One step with autograd.  ``names_`` maps inputs (current step values),
    static tensors and hoisted names to code; ``state_vars`` are the locals
    holding the states (updated in place of the names); ``pre_vars`` receive
    the pre-reset values."""
    n = plan.neuron
    lines: list[str] = []
    env = dict(names_)
    env.update(state_vars)
    if R > 0:
        lines.append(f"{ref_var}_now = {ref_var} > 0")
        for i in plan.inputs:
            if i in env:
                masked = namer.fresh(f"{env[i]}_in")
                lines.append(f"{masked} = {env[i]}.masked_fill({ref_var}_now, 0.0)")
                env[i] = masked
    P = TorchPrinter(env, ref_tensor)
    for t in plan.temps:
        local = namer.fresh(t.target)
        lines.append(f"{local} = {P(t.value)}")
        env[t.target] = local
    new: dict[str, str] = {}
    for s in plan.states:
        if s in plan.updates:
            code = P(plan.updates[s])
            if s in plan.held:
                code = f"torch.where({ref_var}_now, {state_vars[s]}, {code})"
            lines.append(f"{pre_vars[s]} = {code}  # {statement_text(s, '=', n_update(n, s))}")
        else:
            lines.append(f"{pre_vars[s]} = {state_vars[s]}")
        new[s] = pre_vars[s]
    env.update(new)
    if plan.spike is not None:
        lhs, rhs = split_spike(plan.spike)
        x = ir.BinOp(op="-", left=lhs, right=rhs) if not (
            isinstance(rhs, ir.Num) and rhs.value == 0.0) else lhs
        lines.append(f"{z_var} = {spike_fn}.apply({P(fold(x))})  # spike {spk(lhs)} "
                     f"{n.spike_op} {spk(rhs)}")
        if R > 0:
            lines.append(f"{z_var} = {z_var}.masked_fill({ref_var}_now, 0.0)")
        zr = z_var
        if plan.resets and n.reset_detach:
            zr = namer.fresh(f"{z_var}_d")
            lines.append(f"{zr} = {z_var}.detach()")
        cur = dict(new)
        last = reset_order(plan.resets)
        for i, st in enumerate(plan.resets):
            env2 = dict(env)
            env2.update(cur)
            env2["%s"] = cur[st.target]
            env2["%z"] = zr
            P2 = TorchPrinter(env2, ref_tensor)
            S_, Z_ = ir.Name(id="%s"), ir.Name(id="%z")
            if st.op == "=":
                e = ir.BinOp(op="-", left=S_, right=ir.BinOp(op="*", left=Z_, right=ir.BinOp(
                    op="-", left=S_, right=st.value)))
            else:
                e = ir.BinOp(op="+" if st.op == "+=" else "-", left=S_,
                             right=ir.BinOp(op="*", left=Z_, right=st.value))
            code = P2(fold(e))
            target = state_vars[st.target] if last[i] else namer.fresh(f"{st.target}_r")
            lines.append(f"{target} = {code}  # reset {statement_text(st.target, st.op, st.value)}")
            cur[st.target] = target
        for s in plan.states:
            if cur[s] != state_vars[s]:
                lines.append(f"{state_vars[s]} = {cur[s]}")
        if R > 0:
            lines.append(f"{ref_var} = torch.where({z_var} > 0, {float(R)!r}, "
                         f"({ref_var} - 1.0).clamp(min=0.0))")
    else:
        for s in plan.states:
            lines.append(f"{state_vars[s]} = {new[s]}")
    return lines


def n_update(n: ir.LNeuron, s: str) -> ir.Expr:
    for u in n.updates:
        if u.target == s:
            return u.value
    return ir.Name(id=s)


# ------------------------------------------------------------------ scan (fast path)


@dataclass
class ScanCode:
    cls: str
    fname: str  # prefix of the module-level functions
    args: list[str]  # python arg names after ``T`` (step tensors, static tensors, inits, r0)
    arg_kinds: list[str]  # step | static | init | refr
    arg_keys: list[str]  # plan names / state names
    outputs: list[str]  # Z, S_<state>..., Q_<state>..., r
    out_keys: list[str]  # "z", "S:v", "Q:v", "r"
    extra: list[str]  # tensors the forward function returns for backward only
    saved: list[str]  # what the Function saves (outputs, extras and args)
    grads: list[str]  # parameters of the backward function (one per output)
    forward: list[str]
    backward: list[str]
    nondiff: list[str]
    uses_math: bool
    doc: list[str]
    compiled: bool


def _emit_into(P: TorchPrinter, e: ir.Expr, out: str) -> str:
    """``out = e`` with the top-level operation writing into ``out``."""
    if isinstance(e, ir.BinOp) and e.op in "+-*/":
        a, b = e.left, e.right
        fn = {"+": "torch.add", "-": "torch.sub", "*": "torch.mul", "/": "torch.div"}[e.op]
        if isinstance(a, ir.Num) and isinstance(b, ir.Num):
            return f"{out}.fill_({P(e)})"
        if isinstance(a, ir.Num):
            if e.op in "+*":
                a, b = b, a
            else:
                return f"{out}.copy_({P(e)})"
        return f"{fn}({P(a)}, {P(b)}, out={out})"
    if isinstance(e, ir.Call) and len(e.args) == 1 and FUNCTIONS[e.func].torch_out and \
            not isinstance(e.args[0], ir.Num):
        return f"{FUNCTIONS[e.func].torch_code}({P(e.args[0])}, out={out})"
    return f"{out}.copy_({P.tensor(e)})"


class ScanGen:
    """Generates the fused scan of one neuron layer: a forward function (the
    recurrence over T steps), a backward function (analytic BPTT) and the
    ``autograd.Function`` tying them together."""

    def __init__(self, plan: NeuronPlan, cls: str, need_pre: set[str], compiled: bool,
                 need_post: set[str] | None = None):
        self.plan = plan
        self.cls = cls
        self.n = plan.neuron
        self.need_pre = set(need_pre)
        self.need_post = set(plan.states if need_post is None else need_post)
        self.compiled = compiled
        self._uses_math = False

    def generate(self) -> ScanCode:
        plan, n = self.plan, self.n
        R = plan.R
        spiking = plan.spike is not None
        reset_states = [s for s in plan.states if any(r.target == s for r in plan.resets)]
        nm = Namer(["T", "t", "ftype", "DT", "STEPS", "INPUTS", "OUTPUTS", "ENCODERS", "Zb",
                    "Z", "Ref", "r", "ref", "zb", "sg", "sig", "sgn", "nr", "x", "z", "gz", "GX",
                    "acc", "needs", "ctx", "grads"])
        arg_names, kinds, keys = [], [], []
        for k in plan.step_names:
            arg_names.append(nm(f"step:{k}", "i_" + k.lstrip("%")))
            kinds.append("step")
            keys.append(k)
        for k in plan.static_names:
            arg_names.append(nm(f"static:{k}", "p_" + k.lstrip("%")))
            kinds.append("static")
            keys.append(k)
        for s in plan.states:
            arg_names.append(nm(f"init:{s}", f"{s}0"))
            kinds.append("init")
            keys.append(s)
        if R > 0:
            arg_names.append(nm("init:r", "r0"))
            kinds.append("refr")
            keys.append("r")
        A = dict(zip([f"{k}:{key}" for k, key in zip(kinds, keys)], arg_names))
        S = {s: nm(f"S:{s}", f"S_{s}") for s in plan.states}
        Q = {s: nm(f"Q:{s}", f"Q_{s}") for s in reset_states}
        local = {s: nm(f"local:{s}", s) for s in plan.states}
        init0 = A[f"init:{plan.states[0]}"]
        self.nm = nm
        d = derive(self.n, plan)
        # post-reset trajectories nobody reads are kept in a two-slot buffer
        self.rolling = {s for s in plan.states if s not in d.need_S(Q) and
                        s not in self.need_post}
        F = {s: nm(f"F:{s}", f"{s}_T") for s in self.rolling}
        fwd = self._forward(A, S, Q, local, reset_states, init0, F)
        outs = [("Z", "z")] + [(F[s], f"F:{s}") if s in F else (S[s], f"S:{s}")
                               for s in plan.states] + [
            (Q[s], f"Q:{s}") for s in reset_states if s in self.need_pre]
        if R > 0:
            outs.append(("r", "r"))
        bwd = d.code(A, S, Q, outs, self)
        out_names = [o for o, _ in outs]
        saved = list(d.saved_names)
        extra = [v for v in saved if v not in out_names and v not in arg_names]
        fwd.append(f"return {', '.join(out_names + extra)}")
        grads = [d.grad_names[k] for _, k in outs]
        doc = [f"Neuron {n.name}, all T steps in one call (fused scan, analytic backward)."]
        for u in n.updates:
            doc.append(f"    {statement_text(u.target, '=', u.value)}")
        if spiking:
            lhs, rhs = split_spike(n.spike_x)
            doc.append(f"    spike {spk(lhs)} {n.spike_op} {spk(rhs)}, surrogate "
                       f"{surrogate_doc(n.surrogate)}")
        for a in n.reset:
            doc.append(f"    reset{' detach' if n.reset_detach else ''} "
                       f"{statement_text(a.target, a.op, a.value)}")
        if R > 0:
            doc.append(f"    refractory {R} steps")
        fname = "_" + self.cls.lstrip("_").lower()
        return ScanCode(cls=self.cls, fname=fname, args=arg_names, arg_kinds=kinds,
                        arg_keys=keys, outputs=out_names, out_keys=[k for _, k in outs],
                        extra=extra, saved=saved, grads=grads, forward=prune(fwd),
                        backward=add_dels(prune(bwd)),
                        nondiff=["r"] if R > 0 else [],
                        uses_math=self._uses_math, doc=doc, compiled=self.compiled)

    # ---------------------------------------------------------------- forward
    def _forward(self, A, S, Q, local, reset_states, init0, F) -> list[str]:
        """The recurrence.  Eager: writes into preallocated buffers (``out=``),
        one small kernel per operation.  Compiled: plain tensor code that
        ``torch.compile`` fuses."""
        plan, n = self.plan, self.n
        func = self.compiled
        R = plan.R
        L: list[str] = []
        ref_t = init0
        spiking = plan.spike is not None
        lst = {}
        if func:
            for s in plan.states:
                if s in F:
                    continue
                lst[f"S:{s}"] = self.nm.fresh(f"{S[s]}_l")
                L.append(f"{lst[f'S:{s}']} = [{A[f'init:{s}']}]")
            for s in reset_states:
                lst[f"Q:{s}"] = self.nm.fresh(f"{Q[s]}_l")
                L.append(f"{lst[f'Q:{s}']} = []")
            if spiking:
                lst["Z"] = self.nm.fresh("Z_l")
                L.append(f"{lst['Z']} = []")
            if R > 0:
                lst["Ref"] = self.nm.fresh("Ref_l")
                L.append(f"{lst['Ref']} = []")
        else:
            for s in plan.states:
                a = A[f"init:{s}"]
                n_slots = "2" if s in F else "T + 1"
                L.append(f"{S[s]} = {a}.new_empty(({n_slots},) + tuple({a}.shape))")
                L.append(f"{S[s]}[0] = {a}")
            for s in reset_states:
                L.append(f"{Q[s]} = {init0}.new_empty((T,) + tuple({init0}.shape))")
            if spiking:
                L.append(f"Z = {init0}.new_empty((T,) + tuple({init0}.shape))")
            if R > 0:
                L.append(f"Ref = torch.empty((T,) + tuple({init0}.shape), dtype=torch.bool, "
                         f"device={init0}.device)")
        if R > 0:
            L.append(f"r = {A['refr:r']}.clone()")
        for s in plan.states:
            L.append(f"{local[s]} = {A[f'init:{s}']}")

        def slot(s: str) -> str:
            return f"{S[s]}[(t + 1) % 2]" if s in F else f"{S[s]}[t + 1]"

        L.append("for t in range(T):")
        B: list[str] = []
        env: dict[str, str] = {}
        for k in plan.step_names:
            env[k] = f"{A[f'step:{k}']}[t]"
        for k in plan.static_names:
            env[k] = A[f"static:{k}"]
        env.update(local)
        if R > 0:
            if func:
                B.append("ref = r > 0.0")
                B.append(f"{lst['Ref']}.append(ref)")
            else:
                B.append("ref = torch.gt(r, 0.0, out=Ref[t])")
            for i in plan.inputs:
                if i in env:
                    v = self.nm.fresh(f"{i}_in")
                    B.append(f"{v} = {env[i]}.masked_fill(ref, 0.0)")
                    env[i] = v
        P = TorchPrinter(env, ref_t)
        for t in plan.temps:
            v = self.nm.fresh(t.target)
            B.append(f"{v} = {P(t.value)}")
            env[t.target] = v
        penv = dict(env)
        post: dict[str, str] = {}
        for s in plan.states:
            if s not in plan.updates:
                penv[s] = local[s]
                if s not in Q:
                    post[s] = local[s]
                continue
            B.append(f"# {statement_text(s, '=', n_update(n, s))}")
            q = self.nm.fresh(f"q_{s}")
            if func:
                code = P(plan.updates[s])
                if s in plan.held:
                    code = f"torch.where(ref, {local[s]}, {code})"
                B.append(f"{q} = {code}")
                if s in Q:
                    B.append(f"{lst[f'Q:{s}']}.append({q})")
            else:
                tgt = f"{Q[s]}[t]" if s in Q else slot(s)
                if s in plan.held:
                    u = self.nm.fresh(f"{s}_u")
                    B.append(f"{u} = {P(plan.updates[s])}")
                    B.append(f"torch.where(ref, {local[s]}, {u}, out={tgt})")
                else:
                    B.append(_emit_into(P, plan.updates[s], tgt))
                B.append(f"{q} = {tgt}")
            penv[s] = q
            if s not in Q:
                post[s] = q
        P2 = TorchPrinter(penv, ref_t)
        if spiking:
            lhs, rhs = split_spike(plan.spike)
            fn = "torch.ge" if n.spike_op == ">=" else "torch.gt"
            if isinstance(lhs, ir.Num) and not isinstance(rhs, ir.Num):
                fn = "torch.le" if n.spike_op == ">=" else "torch.lt"
                lhs, rhs = rhs, lhs
            B.append(f"# spike {spk(lhs)} {n.spike_op} {spk(rhs)}")
            if func:
                B.append(f"z = {fn}({P2.tensor(lhs)}, {P2(rhs)}).to({init0}.dtype)")
                if R > 0:
                    B.append("z = z.masked_fill(ref, 0.0)")
                B.append(f"{lst['Z']}.append(z)")
            else:
                B.append(f"z = {fn}({P2.tensor(lhs)}, {P2(rhs)}, out=Z[t])")
                if R > 0:
                    B.append("z.masked_fill_(ref, 0.0)")
            # reset, exactly as s - z * (s - e), s + z * e, s - z * e (z is 0 or 1)
            cur = dict(penv)
            last = reset_order(plan.resets)
            for i, st in enumerate(plan.resets):
                P3 = TorchPrinter(dict(cur), ref_t)
                s = cur[st.target]
                P3.names["%s"] = s
                B.append(f"# reset {statement_text(st.target, st.op, st.value)}")
                out = f", out={slot(st.target)}" if last[i] and not func else ""
                if st.op == "=":
                    d = fold(ir.BinOp(op="-", left=ir.Name(id="%s"), right=st.value))
                    dcode = P3.tensor(d)
                    val = f"torch.addcmul({s}, z, {dcode}, value=-1.0{out})"
                elif isinstance(st.value, ir.Num):
                    e = st.value.value if st.op == "+=" else -st.value.value
                    val = f"torch.add({s}, z, alpha={number(e)}{out})"
                else:
                    sign = "" if st.op == "+=" else ", value=-1.0"
                    val = f"torch.addcmul({s}, z, {P3.tensor(st.value)}{sign}{out})"
                if out:
                    B.append(val)
                    cur[st.target] = slot(st.target)
                else:
                    v = self.nm.fresh(f"{st.target}_r")
                    B.append(f"{v} = {val}")
                    cur[st.target] = v
            for s in Q:
                post[s] = cur[s]
            if R > 0:
                B.append(f"r = torch.where(z > 0, {float(R)!r}, (r - 1.0).clamp(min=0.0))")
        for s in plan.states:
            if func:
                B.append(f"{local[s]} = {post[s]}")
                if s not in F:
                    B.append(f"{lst[f'S:{s}']}.append({local[s]})")
            elif s not in plan.updates and s not in Q:
                B.append(f"{slot(s)} = {local[s]}")
            else:
                B.append(f"{local[s]} = {slot(s)}")
        self._uses_math = self._uses_math or P.uses_math or P2.uses_math
        L += ["    " + b for b in B]
        for s in plan.states:
            if s in F:
                L.append(f"{F[s]} = {local[s]}")
        if func:
            for s in plan.states:
                if s not in F:
                    L.append(f"{S[s]} = torch.stack({lst[f'S:{s}']})")
            for s in reset_states:
                L.append(f"{Q[s]} = torch.stack({lst[f'Q:{s}']})")
            if spiking:
                L.append(f"Z = torch.stack({lst['Z']})")
            if R > 0:
                L.append(f"Ref = torch.stack({lst['Ref']})")
        if not spiking:
            L.append(f"Z = {init0}.new_zeros((T,) + tuple({init0}.shape))")
        return L


# ------------------------------------------------------------------ SymPy derivation


class Derivation:
    """Adjoint equations of one step, as SymPy expressions."""

    def __init__(self, neuron: ir.LNeuron, plan: NeuronPlan):
        import sympy as sp

        from spikedsl.targets.torch.sym import SymBuilder

        self.sp = sp
        self.plan = plan
        self.n = neuron
        b = SymBuilder()
        self.b = b
        R = plan.R
        sym = lambda name: sp.Symbol(name, real=True)
        self.s = {s: sym(f"s:{s}") for s in plan.states}
        self.q = {s: sym(f"q:{s}") for s in plan.states}
        self.X = {k: sym(f"X:{k}") for k in plan.step_names}
        self.P = {k: sym(f"P:{k}") for k in plan.static_names}
        self.z = sym("z")
        self.sgn = sym("sgn")
        self.nr = sym("nr")
        self.u = {s: sym(f"u:{s}") for s in plan.states}
        self.gpre = {s: sym(f"gpre:{s}") for s in plan.states}
        self.gz = sym("gz")
        self.GQ = {s: sym(f"GQ:{s}") for s in plan.states}
        self.GX = sym("GX")
        env = {}
        env.update(self.P)
        env.update(self.X)
        if R > 0:
            for i in plan.inputs:
                if i in env:
                    env[i] = self.nr * env[i]
        env.update(self.s)
        for t in plan.temps:
            env[t.target] = b(t.value, env)
        pre = {}
        for s in plan.states:
            if s in plan.updates:
                e = b(plan.updates[s], env)
                if s in plan.held:
                    e = self.nr * e + (1 - self.nr) * self.s[s]
                pre[s] = e
            else:
                pre[s] = self.s[s]
        self.pre = pre
        qenv = dict(env)
        qenv.update(self.q)
        self.x = b(plan.spike, qenv) if plan.spike is not None else sp.S.Zero
        cur = dict(self.q)
        for st in plan.resets:
            e2 = dict(qenv)
            e2.update(cur)
            e = b(st.value, e2)
            v = cur[st.target]
            if st.op == "=":
                cur[st.target] = v - self.z * (v - e)
            elif st.op == "+=":
                cur[st.target] = v + self.z * e
            else:
                cur[st.target] = v - self.z * e
        self.post = cur

    def struct_key(self) -> str:
        """Equal for neurons whose equations differ only in (non-integer) values."""
        return repr((sorted((k, str(v)) for k, v in self.pre.items()), str(self.x),
                     sorted((k, str(v)) for k, v in self.post.items()), self.n.reset_detach,
                     self.plan.spike is not None, self.plan.states))

    def equations(self):
        key = self.struct_key()
        if key not in _EQ_CACHE:
            _EQ_CACHE[key] = self._equations()
        return _EQ_CACHE[key]

    def _equations(self):
        sp = self.sp
        states = self.plan.states
        u = self.u
        detach = self.n.reset_detach
        spiking = self.plan.spike is not None
        if spiking:
            gzt = self.gz + (0 if detach else sum((sp.diff(self.post[l], self.z) * u[l]
                                                  for l in states), sp.S.Zero))
            GX = self.sgn * gzt
        else:
            GX = sp.S.Zero
        GQ = {}
        for i in states:
            e = self.gpre[i] + sum((sp.diff(self.post[l], self.q[i]) * u[l] for l in states),
                                   sp.S.Zero)
            if spiking:
                e += sp.diff(self.x, self.q[i]) * self.GX
            GQ[i] = e
        # adjoint of the old states, fully substituted (for M and c)
        full_GQ = {i: GQ[i].subs(self.GX, GX) for i in states}
        gs = {j: sum((sp.diff(self.pre[i], self.s[j]) * full_GQ[i] for i in states), sp.S.Zero)
              for j in states}
        M = {(j, l): sp.factor_terms(sp.diff(gs[j], u[l])) for j in states for l in states}
        c = {j: sp.factor_terms(gs[j].subs({u[l]: 0 for l in states})) for j in states}

        def grad(v):
            e = sum((sp.diff(self.pre[i], v) * self.GQ[i] for i in states), sp.S.Zero)
            e += sum((sp.diff(self.post[l], v) * u[l] for l in states), sp.S.Zero)
            if spiking:
                e += sp.diff(self.x, v) * self.GX
            return e

        gX = {k: grad(v) for k, v in self.X.items()}
        gP = {k: grad(v) for k, v in self.P.items()}
        return GX, GQ, M, c, gX, gP

    # ---------------------------------------------------------------- code
    def code(self, A, S, Q, outs, gen: ScanGen) -> list[str]:
        """The backward function's body.  Compiled: phases over all steps at
        once (torch.compile fuses them).  Eager: the same phases over chunks of
        steps small enough to stay in cache, from the last chunk to the first
        (phases 1 and 2 are elementwise in time; the recursion carries ``u``
        across chunk boundaries), so the temporaries are chunk-sized."""
        from spikedsl.targets.torch.sym import NumSym, SymTorchPrinter, cse_lines

        plan, n = self.plan, self.n
        states = plan.states
        R = plan.R
        spiking = plan.spike is not None
        chunked = not gen.compiled
        GX, GQ, M, c, gX, gP = self.equations()
        nm = gen.nm
        L: list[str] = []
        grads = {k: nm.fresh(f"g_{o}") for o, k in outs}
        self.grad_names = grads
        used = self._used()
        need_S = self.need_S(Q)
        if Q:
            like = Q[next(s_ for s_ in states if s_ in Q)]
        elif plan.spike is not None:
            like = "Z"
        else:
            like = f"{S[states[0]]}[1:]"
        # gradients of the post-reset trajectories (None: not an output)
        gS = {j: grads.get(f"S:{j}") for j in states}
        saved = self._saved(A, S, Q, used, need_S)
        self.saved_names = [v for _, v in saved]
        L.append(f"ftype = {like}.dtype")
        L.append(f"T = {like}.shape[0]")

        # per-step sources: full tensors, or chunk views [t0:t1]
        def sl(code: str, shift: int = 0) -> str:
            if not chunked:
                return code
            return f"{code}[t0:t1]" if shift == 0 else f"{code}[t0 + {shift}:t1 + {shift}]"

        src_s = {s_: (sl(S[s_]) if chunked else f"{S[s_]}[:-1]") for s_ in states}
        src_q = {}
        for s_ in states:
            if s_ in Q:
                src_q[s_] = sl(Q[s_])
            elif s_ in plan.updates:
                src_q[s_] = sl(S[s_], 1) if chunked else f"{S[s_]}[1:]"
            else:
                src_q[s_] = src_s[s_]
        N: dict = {}
        body: list[str] = []  # the part that runs once per chunk
        views: dict[str, str] = {}

        def view(code: str, hint: str) -> str:
            """Bind a chunk view to a local once."""
            if not chunked:
                return code
            if code not in views:
                views[code] = nm.fresh(hint + "_c")
                body.append(f"{views[code]} = {code}")
            return views[code]

        for s_ in states:
            N[self.s[s_]] = src_s[s_]
            N[self.q[s_]] = src_q[s_]
            N[self.u[s_]] = nm.fresh(f"U_{s_}")
            N[self.GQ[s_]] = nm.fresh(f"GQ_{s_}")
            N[self.gpre[s_]] = nm.fresh(f"gpre_{s_}")
        for k in plan.step_names:
            N[self.X[k]] = sl(A[f"step:{k}"])
        for k in plan.static_names:
            N[self.P[k]] = A[f"static:{k}"]
        N[self.z] = "z"
        N[self.sgn] = "sgn"
        N[self.nr] = "nr"
        N[self.gz] = "gz"
        N[self.GX] = "GX"
        pr = SymTorchPrinter(N, "ftype", self.b.values)
        if chunked:
            # views used by the printed expressions are bound once per chunk
            for sym in list(N):
                if isinstance(N[sym], str) and "[t0" in N[sym]:
                    base = N[sym].split("[", 1)[0]
                    N[sym] = view(N[sym], base)
        ref_c = view(sl("Ref"), "Ref") if R > 0 else None
        if R > 0:
            body.append(f"nr = torch.logical_not({ref_c}).to(ftype)")
        if spiking:
            body.append(f"z = {view(sl('Z'), 'Z')}")
            env = {s_: N[self.q[s_]] for s_ in states}
            for k in plan.step_names:
                env[k] = N[self.X[k]]
                if R > 0 and k in plan.inputs:
                    env[k] = f"{N[self.X[k]]}.masked_fill({ref_c}, 0.0)"
            for k in plan.static_names:
                env[k] = A[f"static:{k}"]
            P = TorchPrinter(env, "z")
            lhs, rhs = split_spike(plan.spike)
            body.append(f"x = {P.tensor(fold(ir.BinOp(op='-', left=lhs, right=rhs)))}")
            sl_lines, se = surrogate_code(n.surrogate, "x", "ftype")
            body += sl_lines
            body.append(f"sgn = {se}" + (" * nr" if R > 0 else "") +
                        f"  # surrogate {surrogate_doc(n.surrogate)}")
            gZ = grads["z"]
            body.append(f"gz = {sl(gZ)} if {gZ} is not None else torch.zeros_like(z)")
            gen._uses_math = gen._uses_math or P.uses_math
        zero = {}
        for s_ in states:
            key = f"Q:{s_}"
            if key in grads:
                body.append(f"{N[self.gpre[s_]]} = {sl(grads[key])} if {grads[key]} is not None "
                            f"else torch.zeros_like({N[self.q[s_]]})")
            else:
                zero[self.gpre[s_]] = 0
        if not spiking:
            zero[self.gz] = 0
        per_step = set(self.s.values()) | set(self.q.values()) | set(self.X.values()) | {
            self.z, self.sgn, self.nr, self.gz, self.GX} | set(self.gpre.values()) | set(
            self.GQ.values()) | set(self.u.values())

        def kind(e) -> str:
            fs = e.free_symbols
            if fs & per_step:
                return "step"
            if all(isinstance(f, NumSym) for f in fs):
                return "number"
            return "static"

        like_c = N[self.q[states[0]]] if chunked else like
        # -------- phase 1: M_t and c_t
        Ms = {k: v.subs(zero) for k, v in M.items()}
        cs = {k: v.subs(zero) for k, v in c.items()}
        keys = [k for k in Ms if Ms[k] != 0]
        ckeys = [j for j in states if cs[j] != 0]
        lines, printed = cse_lines([Ms[k] for k in keys] + [cs[j] for j in ckeys], N, pr, "w",
                                   nm)
        body.append("# adjoint of the post-reset states: u[t-1] = M[t] u[t] + c[t]")
        body += lines
        Mname: dict = {}
        for k, code in zip(keys, printed[:len(keys)]):
            Mname[k] = (nm.fresh(f"M_{k[0]}_{k[1]}"), kind(Ms[k]))
            body.append(f"{Mname[k][0]} = {code}")
        cname = {j: nm.fresh(f"c_{j}") for j in states}
        for j, code in zip(ckeys, printed[len(keys):]):
            if kind(cs[j]) == "step":
                body.append(f"{cname[j]} = {code}")
            else:
                body.append(f"{cname[j]} = {code} + torch.zeros_like({like_c})")
        for j in states:
            if j not in ckeys:
                body.append(f"{cname[j]} = torch.zeros_like({like_c})")
        ul = {j: nm.fresh(f"u_{j}") for j in states}  # the carried adjoint (eager)

        def mterm(j, l, idx):
            mname, kd = Mname[(j, l)]
            return f"{mname}[{idx}]" if kd == "step" else mname

        if chunked:
            # c'[t] = c[t] + dL/dS[t] (the post states of step t-1; S[0] is the initial state)
            for j in states:
                g = gS[j]
                if g is None:
                    continue
                body.append(f"if {g} is not None:")
                body.append(f"    {cname[j]} = {cname[j]} + {g}[t0:t1]")
            for j in states:
                U = N[self.u[j]]
                body.append(f"{U} = torch.empty_like({cname[j]})")
                body.append(f"{U}[-1] = {ul[j]}")
            body.append("for t in range(t1 - t0 - 1, 0, -1):")
            rec_idx = "t"
        else:
            for j in states:
                g = gS[j]
                if g is None:
                    continue
                body.append(f"if {g} is not None:")
                body.append(f"    {cname[j]} = {cname[j]} + torch.nn.functional.pad({g}[1:-1], "
                            f"(0, 0) * ({g}.dim() - 1) + (1, 0))")
            rec_idx = "t"
        if gen.compiled:
            lists = {j: nm.fresh(f"U_{j}_l") for j in states}
            for j in states:
                g = gS[j]
                gF = grads.get(f"F:{j}")
                if g is None and gF is not None:  # only the final state is an output
                    body.append(f"{ul[j]} = {gF} if {gF} is not None else torch.zeros_like("
                                f"{cname[j]}[0])")
                elif g is None:
                    body.append(f"{ul[j]} = torch.zeros_like({cname[j]}[0])")
                else:
                    body.append(f"{ul[j]} = {g}[T] if {g} is not None else torch.zeros_like("
                                f"{cname[j]}[0])")
                body.append(f"{lists[j]} = [{ul[j]}]")
            body.append("for t in range(T - 1, 0, -1):")
            new_u = {j: nm.fresh(f"u_{j}_new") for j in states}
            for j in states:
                terms = [f"{cname[j]}[t]"] + [f"{mterm(j, l, 't')} * {ul[l]}" for l in states
                                              if (j, l) in Mname]
                body.append(f"    {new_u[j]} = {' + '.join(terms)}")
            for j in states:
                body.append(f"    {ul[j]} = {new_u[j]}")
                body.append(f"    {lists[j]}.append({ul[j]})")
            for j in states:
                body.append(f"{N[self.u[j]]} = torch.stack({lists[j]}[::-1])")
        else:
            for j in states:
                acc = f"{cname[j]}[{rec_idx}]"
                terms = [(l, Mname[(j, l)]) for l in states if (j, l) in Mname]
                if not terms:
                    body.append(f"    {N[self.u[j]]}[t - 1] = {acc}")
                    continue
                for i_, (l, (mname, kd)) in enumerate(terms):
                    out = f", out={N[self.u[j]]}[t - 1]" if i_ == len(terms) - 1 else ""
                    u_l = f"{N[self.u[l]]}[t]"
                    if kd == "number":
                        acc = f"torch.add({acc}, {u_l}, alpha={mname}{out})"
                    else:
                        m = f"{mname}[t]" if kd == "step" else mname
                        acc = f"torch.addcmul({acc}, {m}, {u_l}{out})"
                body.append(f"    {acc}")
        # the adjoint one step before the chunk (eager) / of the initial states (compiled)
        new0 = {}
        for j in states:
            terms = [f"{cname[j]}[0]"] + [f"{mterm(j, l, 0)} * {N[self.u[l]]}[0]"
                                         for l in states if (j, l) in Mname]
            new0[j] = " + ".join(terms)
        ginit = {j: nm.fresh(f"g_{j}0") for j in states}
        if chunked:
            tmp = {j: nm.fresh(f"u_{j}_next") for j in states}
            for j in states:
                body.append(f"{tmp[j]} = {new0[j]}")
            for j in states:
                body.append(f"{ul[j]} = {tmp[j]}")
        # -------- phase 2: gradients of the per-step and static tensors
        wanted = [(f"step:{k}", e.subs(zero)) for k, e in gX.items()] + [
            (f"static:{k}", e.subs(zero)) for k, e in gP.items()]
        wanted = [(k, e) for k, e in wanted if e != 0]
        gout: dict[str, str] = {k: nm.fresh("g_" + A[k]) for k, _ in wanted}
        pre_loop: list[str] = []
        if wanted:
            needs = " or ".join(f"needs[{gen_arg_index(A, k)}]" for k, _ in wanted)
            body.append(f"if {needs}:")
            base = ([GX.subs(zero)] if spiking else []) + [GQ[s_].subs(zero) for s_ in states]
            lines2, printed2 = cse_lines(base, N, pr, "y", nm)
            b2 = list(lines2)
            if spiking:
                b2.append(f"GX = {printed2[0]}")
            for s_, code in zip(states, printed2[1 if spiking else 0:]):
                b2.append(f"{N[self.GQ[s_]]} = {code}")
            body += ["    " + b_ for b_ in b2]
            for k, e in wanted:
                gname = gout[k]
                idx = gen_arg_index(A, k)
                lines3, printed3 = cse_lines([e], N, pr, "v", nm)
                if k.startswith("static:"):
                    val = f"_sum_to({printed3[0]}, {A[k]})"
                    pre_loop.append(f"{gname} = None")
                    body.append(f"if needs[{idx}]:")
                    body += ["    " + x for x in lines3]
                    if chunked:
                        body.append(f"    {gname} = {val} if {gname} is None else {gname} + {val}")
                    else:
                        body.append(f"    {gname} = {val}")
                    continue
                val = printed3[0] if kind(e) == "step" else \
                    f"{printed3[0]} + torch.zeros_like({like_c})"
                if chunked:
                    pre_loop.append(f"{gname} = torch.empty_like({like}) if needs[{idx}] else None")
                    body.append(f"if needs[{idx}]:")
                    body += ["    " + x for x in lines3]
                    body.append(f"    {gname}[t0:t1] = {val}")
                else:
                    pre_loop.append(f"{gname} = None")
                    body.append(f"if needs[{idx}]:")
                    body += ["    " + x for x in lines3]
                    body.append(f"    {gname} = {val}")
        # -------- assemble
        if chunked:
            L.append("# chunks of steps that stay in cache, from the last one to the first")
            L.append(f"chunk = max(1, min(T, {CHUNK_ELEMENTS} // max(1, {like}[0].numel())))")
            for j in states:
                g = gS[j]
                gF = grads.get(f"F:{j}")
                if g is None and gF is not None:  # only the final state is an output
                    L.append(f"{ul[j]} = {gF} if {gF} is not None else "
                             f"torch.zeros_like({like}[0])")
                elif g is None:
                    L.append(f"{ul[j]} = torch.zeros_like({like}[0])")
                else:
                    L.append(f"{ul[j]} = {g}[T] if {g} is not None else "
                             f"torch.zeros_like({like}[0])")
            L += pre_loop
            L.append("for t1 in range(T, 0, -chunk):")
            L.append("    t0 = max(t1 - chunk, 0)")
            L += ["    " + b_ for b_ in body]
            for j in states:
                L.append(f"{ginit[j]} = {ul[j]} if needs[{gen_arg_index(A, f'init:{j}')}] "
                         f"else None")
        else:
            L += pre_loop
            L += body
            for j in states:
                g = gS[j]
                L.append(f"{ginit[j]} = None")
                L.append(f"if needs[{gen_arg_index(A, f'init:{j}')}]:")
                L.append(f"    {ginit[j]} = {new0[j]}")
                if g is not None:
                    L.append(f"    if {g} is not None:")
                    L.append(f"        {ginit[j]} = {ginit[j]} + {g}[0]")
        rets = []
        for key in A:
            if key.startswith("init:"):
                rets.append(ginit[key[5:]])
            elif key.startswith("refr:"):
                rets.append("None")
            else:
                rets.append(gout.get(key, "None"))
        L.append(f"return {', '.join(rets)}{',' if len(rets) == 1 else ''}")
        gen._uses_math = gen._uses_math or pr.uses_math
        return L

    def _used(self) -> set[str]:
        """Symbols the backward reads."""
        GX, GQ, M, c, gX, gP = self.equations()
        used = set()
        for e in [GX, *GQ.values(), *M.values(), *c.values(), *gX.values(), *gP.values()]:
            used |= {str(f) for f in e.free_symbols}
        plan = self.plan
        if plan.spike is not None:
            used |= {f"X:{k}" for k in names(plan.spike) if k in self.X}
            used |= {f"P:{k}" for k in names(plan.spike) if k in self.P}
        return used

    def need_S(self, Q) -> set[str]:
        """States whose post-reset trajectory the backward reads."""
        plan = self.plan
        states = plan.states
        used = self._used()
        spike_states = names(plan.spike) & set(states) if plan.spike is not None else set()
        out = {s_ for s_ in states if f"s:{s_}" in used or (
            s_ not in Q and (f"q:{s_}" in used or s_ in spike_states))}
        if not Q and plan.spike is None:
            out.add(states[0])
        return out

    def _saved(self, A, S, Q, used, need_S):
        """Tensors saved for backward: [(key, python name)] (the forward saves
        the same list, in this order)."""
        plan = self.plan
        out = [(f"S:{s}", S[s]) for s in plan.states if s in need_S]
        out += [(f"Q:{s}", Q[s]) for s in plan.states if s in Q]
        if plan.spike is not None:
            out.append(("Z", "Z"))
        if plan.R > 0:
            out.append(("Ref", "Ref"))
        out += [(f"step:{k}", A[f"step:{k}"]) for k in plan.step_names if f"X:{k}" in used]
        out += [(f"static:{k}", A[f"static:{k}"]) for k in plan.static_names
                if f"P:{k}" in used or self._grad_static(k)]
        return out

    def _grad_static(self, k: str) -> bool:
        return True  # static tensors are small; their gradient is reduced to their shape


def gen_arg_index(A: dict[str, str], key: str) -> int:
    """Index of an argument in ``apply(T, *args)`` (``T`` is 0)."""
    return 1 + list(A).index(key)


_DERIVE_CACHE: dict[str, Derivation] = {}
_EQ_CACHE: dict[str, tuple] = {}


def derive(neuron: ir.LNeuron, plan: NeuronPlan) -> Derivation:
    key = json.dumps([neuron.model_dump(mode="json", exclude={"source_line"}), plan.R,
                      plan.step_names, plan.static_names, sorted(plan.held),
                      [[t.target, t.op, t.value.model_dump(mode="json")] for t in plan.temps],
                      {k: v.model_dump(mode="json") for k, v in plan.updates.items()},
                      [[t.target, t.op, t.value.model_dump(mode="json")] for t in plan.resets],
                      plan.spike.model_dump(mode="json") if plan.spike is not None else None],
                     sort_keys=True, default=str)
    if key not in _DERIVE_CACHE:
        _DERIVE_CACHE[key] = Derivation(neuron, plan)
    return _DERIVE_CACHE[key]


