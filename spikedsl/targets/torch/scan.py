"""The fused scan of one neuron layer (the torch target's fast path).

The whole layer over T steps is one ``autograd.Function``: the forward runs
the recurrence into preallocated buffers (eager) or as plain tensor code for
``torch.compile``; the backward is the analytic BPTT of
:mod:`spikedsl.targets.torch.adjoint`:

    u_{t-1} = M_t u_t + c_t        (adjoint of the post-reset states)

where ``M_t`` and ``c_t`` are computed for all steps at once, so only the
small linear recursion runs step by step; the gradients of the inputs and
parameters are then again computed for all steps at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikedsl import ir
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.targets.torch.adjoint import derive
from spikedsl.targets.torch.expr import (
    Namer,
    TorchPrinter,
    add_dels,
    prune,
    spk,
    statement_text,
    surrogate_doc,
)
from spikedsl.targets.torch.neuron import (
    NeuronPlan,
    full_like,
    n_update,
    reset_call,
    reset_order,
    split_spike,
)

__all__ = ["ScanCode", "ScanGen"]


@dataclass
class ScanCode:
    cls: str
    fname: str  # prefix of the module-level functions
    args: list[str]  # python arg names after ``T`` (step tensors, static tensors, inits, r0)
    arg_kinds: list[str]  # step | static | init
    arg_keys: list[str]  # plan names / state names
    outputs: list[str]  # Z, S_<state>..., Q_<state>...
    out_keys: list[str]  # "z", "S:v", "Q:v"
    extra: list[str]  # tensors the forward function returns for backward only
    nondiff: list[str]  # outputs without gradient (states that only steer the step)
    saved: list[str]  # what the Function saves (outputs, extras and args)
    grads: list[str]  # parameters of the backward function (one per output)
    forward: list[str]
    backward: list[str]
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
    code = P.tensor(e)
    if code.startswith(("torch.where(", "torch.clamp(")) and _one_call(code):
        return f"{code[:-1]}, out={out})"
    return f"{out}.copy_({code})"


def _one_call(code: str) -> bool:
    """Is ``code`` one call ``f(...)`` (its first parenthesis closes last)?"""
    depth = 0
    for i, ch in enumerate(code):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch == ")":
            return i == len(code) - 1
    return False


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
        spiking = plan.spiking
        reset_states = [s for s in plan.states if any(r.target == s for r in plan.resets)]
        nm = Namer(["T", "t", "ftype", "DT", "STEPS", "INPUTS", "OUTPUTS", "ENCODERS", "Zb",
                    "Z", "zb", "sg", "sig", "sgn", "x", "z", "gz", "GX",
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
        bwd = d.code(A, S, Q, outs, self)
        out_names = [o for o, _ in outs]
        saved = list(d.saved_names)
        extra = [v for v in saved if v not in out_names and v not in arg_names]
        fwd.append(f"return {', '.join(out_names + extra)}")
        grads = [d.grad_names[k] for _, k in outs]
        doc = [f"Neuron {n.name}, all T steps in one call (fused scan, analytic backward)."]
        for j in n.jumps:
            doc.append(f"    jump {statement_text(j.target, '=', j.value)}")
        for u in n.updates:
            doc.append(f"    {statement_text(u.target, '=', u.value)}")
        if spiking:
            if n.spike_cond is not None:
                text = spk(n.spike_cond)
            else:
                lhs, rhs = split_spike(n.spike_x)
                text = f"{spk(lhs)} {n.spike_op} {spk(rhs)}"
            doc.append(f"    spike {text}, surrogate {surrogate_doc(n.surrogate)}")
        for a in n.reset:
            doc.append(f"    reset{' detach' if n.reset_detach else ''} "
                       f"{statement_text(a.target, a.op, a.value)}")
        fname = "_" + self.cls.lstrip("_").lower()
        return ScanCode(cls=self.cls, fname=fname, args=arg_names, arg_kinds=kinds,
                        arg_keys=keys, outputs=out_names, out_keys=[k for _, k in outs],
                        nondiff=[o for o, k in outs if k[2:] in plan.steering],
                        extra=extra, saved=saved, grads=grads, forward=prune(fwd),
                        backward=add_dels(prune(bwd)),
                        uses_math=self._uses_math, doc=doc, compiled=self.compiled)

    # ---------------------------------------------------------------- forward
    def _forward(self, A, S, Q, local, reset_states, init0, F) -> list[str]:
        """The recurrence.  Eager: writes into preallocated buffers (``out=``),
        one small kernel per operation.  Compiled: plain tensor code that
        ``torch.compile`` fuses."""
        plan, n = self.plan, self.n
        func = self.compiled
        L: list[str] = []
        ref_t = init0
        spiking = plan.spiking
        lst = {}
        # compiled: per-step lists stacked after the loop (key -> tensor name)
        stacked = {f"S:{s}": S[s] for s in plan.states if s not in F}
        stacked.update({f"Q:{s}": Q[s] for s in reset_states})
        if spiking:
            stacked["Z"] = "Z"
        if func:
            for key, name in stacked.items():
                lst[key] = self.nm.fresh(f"{name}_l")
                first = A[f"init:{key[2:]}"] if key.startswith("S:") else ""
                L.append(f"{lst[key]} = [{first}]")
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
        dyn = set(plan.states) | set(plan.step_names) | {t.target for t in plan.temps}
        P = TorchPrinter(env, ref_t)

        # jumps in order, each reading what the previous ones left
        for j in plan.jumps:
            v = self.nm.fresh(f"{j.target}_j")
            code = full_like(P(j.value), j.value, env[j.target], dyn)
            B.append(f"{v} = {code}  # jump {statement_text(j.target, '=', j.value)}")
            env[j.target] = v
        for t in plan.temps:
            v = self.nm.fresh(t.target)
            B.append(f"{v} = {P(t.value)}")
            env[t.target] = v
        penv = dict(env)
        post: dict[str, str] = {}
        for s in plan.states:
            if s not in plan.updates:
                penv[s] = env[s]  # the state, or its value after the jumps
                if s not in Q:
                    post[s] = env[s]
                continue
            B.append(f"# {statement_text(s, '=', n_update(n, s))}")
            q = self.nm.fresh(f"q_{s}")
            if func:
                code = full_like(P(plan.updates[s]), plan.updates[s], local[s], dyn)
                B.append(f"{q} = {code}")
                if s in Q:
                    B.append(f"{lst[f'Q:{s}']}.append({q})")
            else:
                tgt = f"{Q[s]}[t]" if s in Q else slot(s)
                B.append(_emit_into(P, plan.updates[s], tgt))
                B.append(f"{q} = {tgt}")
            penv[s] = q
            if s not in Q:
                post[s] = q
        P2 = TorchPrinter(penv, ref_t)
        if spiking:
            if plan.spike is not None:
                lhs, rhs = split_spike(plan.spike)
                fn = "torch.ge" if n.spike_op == ">=" else "torch.gt"
                if isinstance(lhs, ir.Num) and not isinstance(rhs, ir.Num):
                    fn = "torch.le" if n.spike_op == ">=" else "torch.lt"
                    lhs, rhs = rhs, lhs
                B.append(f"# spike {spk(lhs)} {n.spike_op} {spk(rhs)}")
                if func:
                    B.append(f"z = {fn}({P2.tensor(lhs)}, {P2(rhs)}).to({init0}.dtype)")
                else:
                    B.append(f"z = {fn}({P2.tensor(lhs)}, {P2(rhs)}, out=Z[t])")
            else:
                B.append(f"# spike {spk(n.spike_cond)}")
                if func:
                    B.append(f"z = {P2.boolean(plan.cond)}.to({init0}.dtype)")
                else:
                    B.append("z = Z[t]")
                    B.append(f"z.copy_({P2.boolean(plan.cond)})")
            if func:
                B.append(f"{lst['Z']}.append(z)")
            # reset, exactly as s - z * (s - e), s + z * e, s - z * e (z is 0 or 1)
            cur = dict(penv)
            last = reset_order(plan.resets)
            for i, st in enumerate(plan.resets):
                B.append(f"# reset {statement_text(st.target, st.op, st.value)}")
                out = f", out={slot(st.target)}" if last[i] and not func else ""
                val = reset_call(st, cur[st.target], "z", TorchPrinter(dict(cur), ref_t), out)
                if out:
                    B.append(val)
                    cur[st.target] = slot(st.target)
                else:
                    v = self.nm.fresh(f"{st.target}_r")
                    B.append(f"{v} = {val}")
                    cur[st.target] = v
            for s in Q:
                post[s] = cur[s]
        for s in plan.states:
            if func:
                B.append(f"{local[s]} = {post[s]}")
                if s not in F:
                    B.append(f"{lst[f'S:{s}']}.append({local[s]})")
            elif s not in plan.updates and s not in Q:
                B.append(f"{slot(s)} = {post[s]}")
                if post[s] != local[s]:
                    B.append(f"{local[s]} = {slot(s)}")
            else:
                B.append(f"{local[s]} = {slot(s)}")
        self._uses_math = self._uses_math or P.uses_math or P2.uses_math
        L += ["    " + b for b in B]
        for s in plan.states:
            if s in F:
                L.append(f"{F[s]} = {local[s]}")
        if func:
            for key, name in stacked.items():
                L.append(f"{name} = torch.stack({lst[key]})")
        if not spiking:
            L.append(f"Z = {init0}.new_zeros((T,) + tuple({init0}.shape))")
        return L
