"""The analytic backward of the fused scan (docs/torch.md, "The analytic
backward"): the adjoint equations of one step derived with SymPy from the
plan's equations, and the backward function's code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from spikedsl import ir
from spikedsl.ir.exprs import names
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.targets.torch.expr import TorchPrinter, fold, spk, surrogate_doc
from spikedsl.targets.torch.neuron import NeuronPlan, combine, is_ordering, split_spike

if TYPE_CHECKING:
    from spikedsl.targets.torch.scan import ScanGen

__all__ = ["CHUNK_ELEMENTS", "Derivation", "derive", "gen_arg_index"]

CHUNK_ELEMENTS = 131072  # elements per [chunk, B, ...] temporary of the eager backward


class Derivation:
    """Adjoint equations of one step, as SymPy expressions."""

    def __init__(self, neuron: ir.LNeuron, plan: NeuronPlan):
        import sympy as sp

        from spikedsl.targets.torch.sym import SymBuilder

        self.sp = sp
        self.plan = plan
        self.n = neuron
        # the states with an adjoint: the others only steer the step (their
        # gradient is 0 wherever it would go: spikedsl.lowering.neuron.steering_states)
        self.live = [s for s in plan.states if s not in plan.steering]
        b = SymBuilder()
        self.b = b
        sym = lambda name: sp.Symbol(name, real=True)
        self.s = {s: sym(f"s:{s}") for s in plan.states}
        self.q = {s: sym(f"q:{s}") for s in plan.states}
        self.X = {k: sym(f"X:{k}") for k in plan.step_names}
        self.P = {k: sym(f"P:{k}") for k in plan.static_names}
        self.z = sym("z")
        self.sgn = sym("sgn")
        self.u = {s: sym(f"u:{s}") for s in plan.states}
        self.gpre = {s: sym(f"gpre:{s}") for s in plan.states}
        self.gz = sym("gz")
        self.GQ = {s: sym(f"GQ:{s}") for s in plan.states}
        self.GX = sym("GX")
        env = {}
        env.update(self.P)
        env.update(self.X)
        env.update(self.s)
        # jumps in order, each reading what the previous ones left
        for j in plan.jumps:
            env[j.target] = b(j.value, env)
        for t in plan.temps:
            env[t.target] = b(t.value, env)
        pre = {}
        for s in plan.states:
            if s in plan.updates:
                pre[s] = b(plan.updates[s], env)
            else:
                pre[s] = env[s]
        self.pre = pre
        qenv = dict(env)
        qenv.update(self.q)
        # the spike: z = f(H_k(x_k), guards); dz/dx_k = sgn_k * df/dH_k
        self.xs: list = []  # surrogate arguments x_k (SymPy, over q, X, P)
        self.leaf_ir: list[ir.Expr] = []  # their ordering leaves (IR, for printing)
        self.sgns: list = []  # surrogate derivatives
        self.Hs: list = []  # the 0/1 values H_k(x_k) of the forward
        self.guards: list[tuple[object, ir.Expr]] = []  # (0/1 symbol, IR guard)
        self.GXs: list = []  # dL/dx_k
        self.w: list = []  # df/dH_k
        if plan.spike is not None:
            self.xs, self.sgns, self.GXs, self.w = [b(plan.spike, qenv)], [self.sgn], \
                [self.GX], [sp.S.One]
        elif plan.cond is not None:
            def leaf(i, e):
                if is_ordering(e):
                    k = len(self.xs)
                    self.xs.append(b(e.left, qenv))
                    self.leaf_ir.append(e)
                    self.sgns.append(sym(f"sgn:{k}"))
                    self.Hs.append(sym(f"H:{k}"))
                    self.GXs.append(sym(f"GX:{k}"))
                    return self.Hs[-1]
                if isinstance(e, ir.Num):
                    return sp.Integer(1 if e.value else 0)
                g = sym(f"G:{len(self.guards)}")
                self.guards.append((g, e))
                return g

            f = combine(plan.cond, leaf, lambda a, c: a * c, lambda a, c: a + c - a * c)
            self.w = [sp.diff(f, H) for H in self.Hs]
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
        return repr((sorted((k, str(v)) for k, v in self.pre.items()), [str(x) for x in self.xs],
                     [str(w) for w in self.w],
                     sorted((k, str(v)) for k, v in self.post.items()), self.n.reset_detach,
                     self.plan.spiking, self.plan.states, self.live))

    def equations(self):
        key = self.struct_key()
        if key not in _EQ_CACHE:
            _EQ_CACHE[key] = self._equations()
        return _EQ_CACHE[key]

    def _equations(self):
        """(GX, K, N, Phi, gX, gP).  The adjoint of the pre-reset states is
        ``GQ_t = K_t + N_t u_t`` with ``u_t`` the adjoint of the post-reset
        states, ``u_{t-1} = Phi_t^T GQ_t`` plus the direct gradient of the
        trajectory; gX / gP are in terms of the symbols GQ, u and GX."""
        sp = self.sp
        states = self.live
        u = self.u
        detach = self.n.reset_detach
        spiking = self.plan.spiking
        GX = []  # dL/dx_k, one per surrogate argument
        if spiking:
            gzt = self.gz + (0 if detach else sum((sp.diff(self.post[l], self.z) * u[l]
                                                  for l in states), sp.S.Zero))
            GX = [sg * w * gzt for sg, w in zip(self.sgns, self.w)]
        GQ = {}
        for i in states:
            e = self.gpre[i] + sum((sp.diff(self.post[l], self.q[i]) * u[l] for l in states),
                                   sp.S.Zero)
            for x, g in zip(self.xs, self.GXs):
                e += sp.diff(x, self.q[i]) * g
            GQ[i] = sp.expand(e.subs(dict(zip(self.GXs, GX))))
        K = {i: GQ[i].subs({u[l]: 0 for l in states}) for i in states}
        N = {(i, l): sp.diff(GQ[i], u[l]) for i in states for l in states}
        Phi = {(i, j): sp.diff(self.pre[i], self.s[j]) for i in states for j in states}

        def grad(v):
            e = sum((sp.diff(self.pre[i], v) * self.GQ[i] for i in states), sp.S.Zero)
            e += sum((sp.diff(self.post[l], v) * u[l] for l in states), sp.S.Zero)
            for x, g in zip(self.xs, self.GXs):
                e += sp.diff(x, v) * g
            return e

        gX = {k: grad(v) for k, v in self.X.items()}
        gP = {k: grad(v) for k, v in self.P.items()}
        return GX, K, N, Phi, gX, gP

    def per_step(self) -> set:
        """The symbols that are tensors of one value per step."""
        return set(self.s.values()) | set(self.q.values()) | set(self.X.values()) | {
            self.z, self.sgn, self.gz, self.GX} | set(self.gpre.values()) | set(
            self.GQ.values()) | set(self.u.values()) | set(self.sgns) | set(self.Hs) | set(
            self.GXs) | {g for g, _ in self.guards}

    def form(self) -> str:
        """How the recursion runs.  "gq": it carries GQ itself,
        ``GQ_t = K_t + (N_t Phi^T) GQ_{t+1}`` (one fused operation per state
        pair and step), when Phi is the same at every step and no gradient
        needs u.  "u": per step ``GQ_t = K_t + N_t u_t`` and
        ``u_{t-1} = Phi_t^T GQ_t``."""
        GX, K, N, Phi, gX, gP = self.equations()
        per = self.per_step()
        if any(e.free_symbols & per for e in Phi.values()):
            return "u"
        us = set(self.u.values())
        gx_u = any(g.free_symbols & us for g in GX)
        for e in [*gX.values(), *gP.values()]:
            if e.free_symbols & us or (gx_u and e.free_symbols & set(self.GXs)):
                return "u"
        return "gq"

    # ---------------------------------------------------------------- code
    def code(self, A, S, Q, outs, gen: ScanGen) -> list[str]:
        """The backward function's body.  Eager: from the last chunk of steps
        to the first (chunks small enough for the cache), the recursion's
        coefficients for the chunk's steps at once, the recursion step by step
        (writing GQ), then the gradients of the inputs and parameters for the
        chunk's steps at once.  Compiled: the same with all steps as one chunk,
        the recursion's values collected in lists."""
        from spikedsl.targets.torch.lean import LeanPrinter
        from spikedsl.targets.torch.sym import Ind, SymTorchPrinter

        sp = self.sp
        plan, n = self.plan, self.n
        states = plan.states
        spiking = plan.spiking
        compiled = gen.compiled
        GX, K, Nm, Phi, gX, gP = self.equations()
        form = self.form()
        nm = gen.nm
        L: list[str] = []
        grads = {k: nm.fresh(f"g_{o}") for o, k in outs}
        self.grad_names = grads
        used = self._used()
        need_S = self.need_S(Q)
        if Q:
            like = Q[next(s_ for s_ in states if s_ in Q)]
        elif spiking:
            like = "Z"
        else:
            like = f"{S[states[0]]}[1:]"
        gS = {j: grads.get(f"S:{j}") for j in states}  # None: not an output
        gF = {j: grads.get(f"F:{j}") for j in states}  # None: the final state is not an output
        saved = self._saved(A, S, Q, used, need_S)
        self.saved_names = [v for _, v in saved]
        L.append(f"ftype = {like}.dtype")
        L.append(f"T = {like}.shape[0]")

        def sl(code: str, shift: int = 0) -> str:
            return f"{code}[t0:t1]" if shift == 0 else f"{code}[t0 + {shift}:t1 + {shift}]"

        body: list[str] = []  # runs once per chunk
        views: dict[str, str] = {}

        def view(code: str, hint: str) -> str:
            """Bind a chunk view to a local once."""
            if code not in views:
                views[code] = nm.fresh(hint + "_c")
                body.append(f"{views[code]} = {code}")
            return views[code]

        N: dict = {}
        for s_ in states:
            N[self.s[s_]] = sl(S[s_])
            if s_ in Q:
                N[self.q[s_]] = sl(Q[s_])
            elif s_ in plan.updates or any(j.target == s_ for j in plan.jumps):
                N[self.q[s_]] = sl(S[s_], 1)
            else:
                N[self.q[s_]] = sl(S[s_])
            N[self.GQ[s_]] = nm.fresh(f"GQ_{s_}")
            N[self.gpre[s_]] = nm.fresh(f"gpre_{s_}")
            N[self.u[s_]] = nm.fresh(f"U_{s_}")
        for k in plan.step_names:
            N[self.X[k]] = sl(A[f"step:{k}"])
        for k in plan.static_names:
            N[self.P[k]] = A[f"static:{k}"]
        N[self.z] = "z"
        N[self.gz] = "gz"
        if plan.spike is not None:
            N[self.sgn] = "sgn"
            N[self.GX] = "GX"
        for k, (sg, H, g) in enumerate(zip(self.sgns, self.Hs, self.GXs)):
            N[sg], N[H], N[g] = nm.fresh(f"sgn{k}"), nm.fresh(f"h{k}"), nm.fresh(f"GX{k}")
        for k, (g, _e) in enumerate(self.guards):
            N[g] = nm.fresh(f"guard{k}")
        pr = SymTorchPrinter(N, "ftype", self.b.values)
        for sym in list(N):  # views read by the printed expressions are bound once per chunk
            if isinstance(N[sym], str) and "[t0" in N[sym]:
                N[sym] = view(N[sym], N[sym].split("[", 1)[0])
        per_step = self.per_step()
        # the conditions on the forward's values (0/1), computed once per chunk
        exprs = [*K.values(), *Nm.values(), *Phi.values(), *gX.values(), *gP.values(), *GX]
        conds = sorted({c for e in exprs for c in e.atoms(Ind) if c.free_symbols & per_step
                        and not any(a.atoms(Ind) for a in c.args)}, key=str)
        if conds:
            named = {}
            for k, c in enumerate(conds):
                named[c] = sp.Symbol(f"C:{k}", real=True)
                N[named[c]] = nm.fresh(f"c{k}")
                body.append(f"{N[named[c]]} = {pr(c)}")
            per_step = per_step | set(named.values())
            K, Phi, gX, gP = ({k: e.xreplace(named) for k, e in d.items()}
                              for d in (K, Phi, gX, gP))
            Nm = {k: e.xreplace(named) for k, e in Nm.items()}
            GX = [e.xreplace(named) for e in GX]
        lean = LeanPrinter(N, set(per_step), pr, nm)
        if spiking:
            body.append(f"z = {view(sl('Z'), 'Z')}")
            env = {s_: N[self.q[s_]] for s_ in states}
            for k in plan.step_names:
                env[k] = N[self.X[k]]
            for k in plan.static_names:
                env[k] = A[f"static:{k}"]
            P = TorchPrinter(env, "z", "ftype")
            sur = SURROGATES[n.surrogate.name]
            if plan.spike is not None:
                lhs, rhs = split_spike(plan.spike)
                x_ir = fold(ir.BinOp(op="-", left=lhs, right=rhs))
                d = self.b(sur.dsdx(ir.Name(id="x"), n.surrogate.args),
                           {"x": self.b(x_ir, self._qenv())})
                body.append(f"# surrogate {surrogate_doc(n.surrogate)} at x = {spk(x_ir)}")
                lean.cse([("sgn", d)], body, "s")
            for k, e in enumerate(self.leaf_ir):  # compound: every ordering leaf
                body.append(f"{N[self.Hs[k]]} = ({P.tensor(e.left)} {e.op} 0).to(ftype)"
                            f"  # {spk(e)}")
                d = self.b(sur.dsdx(ir.Name(id="x"), n.surrogate.args),
                           {"x": self.b(e.left, self._qenv())})
                body.append(f"# surrogate {surrogate_doc(n.surrogate)} at x = {spk(e.left)}")
                lean.cse([(N[self.sgns[k]], d)], body, f"s{k}_")
            for g, e in self.guards:
                body.append(f"{N[g]} = {P.boolean(e)}.to(ftype)  # guard {spk(e)}")
            gZ = grads["z"]
            body.append(f"gz = {sl(gZ)} if {gZ} is not None else torch.zeros_like(z)")
            gen._uses_math = gen._uses_math or P.uses_math
        like_c = N[self.q[states[0]]]
        states = self.live  # from here on: the adjoint
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
        Ks = {i: K[i].subs(zero) for i in states}
        if form == "gq":  # the coefficient of GQ_{t+1}: sum_l N_il Phi_ml
            coef = {(i, m): sp.expand(sum((Nm[(i, l)] * Phi[(m, l)] for l in states),
                                          sp.S.Zero)) for i in states for m in states}
        else:
            coef = Nm
        # -------- the recursion's coefficients for the chunk's steps
        body.append("# adjoint of the pre-reset states: GQ[t] = K[t] + N[t] u[t], "
                    "u[t-1] = Phi[t]^T GQ[t]" + (" (N[t] Phi^T GQ[t+1])" if form == "gq"
                                                 else ""))
        items = [(nm.fresh(f"K_{i}"), Ks[i]) for i in states if Ks[i] != 0]
        items += [(nm.fresh(f"N_{i}_{m}"), e) for (i, m), e in coef.items() if e != 0]
        if form == "u":
            items += [(nm.fresh(f"Phi_{i}_{j}"), e) for (i, j), e in Phi.items()
                      if e != 0 and e.free_symbols & per_step]
        codes = lean.cse(items, body, "w")
        coded = {}  # local -> (code, a per-step tensor, a number)
        for (local, e), code in zip(items, codes):
            coded[local] = (code, lean.is_big(e), lean.num(e) is not None)
        key_of = {}
        for i in states:
            if Ks[i] != 0:
                key_of[("K", i)] = next(lo for lo, e in items if e is Ks[i])
        it = iter(lo for lo, _ in items[sum(1 for i in states if Ks[i] != 0):])
        for (i, m), e in coef.items():
            if e != 0:
                key_of[("N", i, m)] = next(it)
        if form == "u":
            for (i, j), e in Phi.items():
                if e != 0 and e.free_symbols & per_step:
                    key_of[("Phi", i, j)] = next(it)

        def term(key, idx):
            """Code of a coefficient at step ``idx`` (None: it is 0)."""
            if key[0] == "Phi" and key not in key_of:
                e = Phi[key[1:]]
                return None if e == 0 else (lean.small_factor(e), False,
                                            lean.num(e) is not None)
            if key not in key_of:
                return None
            code, big, num = coded[key_of[key]]
            return (f"{code}[{idx}]", True, False) if big else (code, False, num)

        def per_step_k(i: str) -> str:
            """K_i as a tensor of one value per step (zeros where not written yet)."""
            if ("K", i) not in key_of:
                k = nm.fresh(f"K_{i}")
                body.append(f"{k} = torch.zeros_like({like_c})")
                key_of[("K", i)] = k
                coded[k] = (k, True, False)
            k, big, _num = coded[key_of[("K", i)]]
            if not big:
                body.append(f"{k} = {k} + torch.zeros_like({like_c})")
                coded[key_of[("K", i)]] = (k, True, False)
            return k

        def carried(grads: dict):
            """(i, l, g, code of N_il, its lines) for every pair of states with
            a gradient g of state l and N_il != 0."""
            for i in states:
                for l in states:
                    g = grads[l]
                    if g is not None and Nm[(i, l)] != 0:
                        sub: list[str] = []
                        yield i, l, g, lean.assign(Nm[(i, l)], sub, f"n_{i}_{l}"), sub

        # the direct gradients of the post-reset trajectories: S[t + 1] is step t's
        if form == "gq":
            for i, l, g, n_il, sub in carried(gS):
                if ("K", i) not in key_of:
                    k_i = nm.fresh(f"K_{i}")
                    sub.append(f"{k_i} = torch.mul({sl(g, 1)}, {n_il})")
                    body.append(f"if {g} is not None:")
                    body += ["    " + x for x in sub]
                    body.append("else:")
                    body.append(f"    {k_i} = torch.zeros_like({like_c})")
                    key_of[("K", i)] = k_i
                    coded[k_i] = (k_i, True, False)
                    continue
                k_i = per_step_k(i)
                if lean.num(Nm[(i, l)]) is not None:
                    sub.append(f"{k_i} = torch.add({k_i}, {sl(g, 1)}, alpha={n_il})")
                else:
                    sub.append(f"{k_i} = torch.addcmul({k_i}, {n_il}, {sl(g, 1)})")
                body.append(f"if {g} is not None:")
                body += ["    " + x for x in sub]
        # the gradients of the final states (carried to the next chunk of steps): u[T-1]
        if form == "gq":
            for i, l, g, n_il, sub in carried(gF):
                n_last = f"{n_il}[-1]" if lean.is_big(Nm[(i, l)]) else n_il
                k_i = per_step_k(i)
                sub.append(f"{k_i} = {k_i}.clone()")  # it may be a view of a gradient
                sub.append(f"{k_i}[-1] += {n_last} * {g}")
                body.append(f"if {g} is not None and t1 == T:")
                body += ["    " + x for x in sub]
        # -------- what is wanted: gradients of the per-step inputs and static tensors
        wanted = [(f"step:{k}", gX[k].subs(zero)) for k in plan.step_names] + [
            (f"static:{k}", gP[k].subs(zero)) for k in plan.static_names]
        wanted = [(k, e) for k, e in wanted if e != 0]
        gout = {k: nm.fresh("g_" + A[k]) for k, _ in wanted}
        alias = {}  # state -> input whose gradient is exactly its GQ (written in place)
        if not compiled:
            for k, e in wanted:
                for i in states:
                    if k.startswith("step:") and e == self.GQ[i] and i not in alias:
                        alias[i] = k
                        break
        need_U = form == "u" and any(
            e.free_symbols & (set(self.u.values()) | set(self.GXs)) for _, e in wanted)
        carry = {i: nm.fresh(f"gq_{i}" if form == "gq" else f"u_{i}") for i in states}
        G = {i: N[self.GQ[i]] for i in states}
        U = {i: N[self.u[i]] for i in states}
        pre_loop: list[str] = []
        for k, _ in wanted:
            if k.startswith("step:") and not compiled:
                pre_loop.append(f"{gout[k]} = torch.empty_like({like}) if "
                                f"needs[{gen_arg_index(A, k)}] else None")
            else:
                pre_loop.append(f"{gout[k]} = None")
        for i in states:
            last = gS[i] and f"{gS[i]}[T]" or gF[i]  # the gradient of the final state
            if form == "gq" or not last:
                pre_loop.append(f"{carry[i]} = torch.zeros_like({like}[0])")
            else:
                pre_loop.append(f"{carry[i]} = {last} if {gS[i] or gF[i]} is not None else "
                                f"torch.zeros_like({like}[0])")

        def chain(base, terms, out):
            """``base + sum(m * v)``: statements writing ``out`` (eager) or one
            expression (compiled, ``out`` None)."""
            terms = [(m, v) for m, v in terms if m is not None]
            if out is None:
                parts = ([base[0]] if base else []) + [f"{m[0]} * {v}" for m, v in terms]
                return [" + ".join(parts) if parts else "0.0"]
            lines = []
            for m, v in terms:
                if not lines:
                    if base is None:
                        lines.append(f"torch.mul({v}, {m[0]}, out={out})")
                    elif m[2]:
                        lines.append(f"torch.add({base[0]}, {v}, alpha={m[0]}, out={out})")
                    else:
                        lines.append(f"torch.addcmul({base[0]}, {m[0]}, {v}, out={out})")
                elif m[2]:
                    lines.append(f"{out}.add_({v}, alpha={m[0]})")
                else:
                    lines.append(f"{out}.addcmul_({m[0]}, {v})")
            if not lines:
                lines.append(f"{out}.copy_({base[0]})" if base else f"{out}.zero_()")
            return lines

        # -------- the recursion
        rec: list[str] = []
        for i in states:
            if i in alias:
                a = gout[alias[i]]
                rec.append(f"{G[i]} = {a}[t0:t1] if {a} is not None else "
                           f"torch.empty_like({like_c})")
            elif not compiled:
                rec.append(f"{G[i]} = torch.empty_like({like_c})")
        if need_U and not compiled:
            for l in states:
                rec.append(f"{U[l]} = torch.empty_like({like_c})")
        new = {i: nm.fresh(f"{carry[i]}_new") for i in states}
        if compiled:
            lists = {i: nm.fresh(f"GQ_{i}_l") for i in states}
            ulists = {i: nm.fresh(f"U_{i}_l") for i in states}
            for i in states:
                rec.append(f"{lists[i]} = []")
                if need_U:
                    rec.append(f"{ulists[i]} = []")
            rec.append("for t in range(T - 1, -1, -1):")
        else:
            rec.append("for t in range(t1 - t0 - 1, -1, -1):")
        if need_U:
            for l in states:
                rec.append(f"    {ulists[l]}.append({carry[l]})" if compiled else
                           f"    {U[l]}[t] = {carry[l]}")
        for i in states:
            terms = [(term(("N", i, m), "t"), carry[m]) for m in states]
            if compiled:
                rec.append(f"    {new[i]} = {chain(term(('K', i), 't'), terms, None)[0]}")
                rec.append(f"    {lists[i]}.append({new[i]})")
            else:
                rec += ["    " + x for x in chain(term(("K", i), "t"), terms, f"{G[i]}[t]")]
        gq_t = {i: new[i] if compiled else f"{G[i]}[t]" for i in states}
        if form == "gq":
            for i in states:
                rec.append(f"    {carry[i]} = {gq_t[i]}")
        else:
            for j in states:
                terms = [(term(("Phi", i, j), "t"), gq_t[i]) for i in states]
                parts = [f"{m[0]} * {v}" for m, v in terms if m is not None] or ["0.0"]
                rec.append(f"    {carry[j]} = {' + '.join(parts)}")
                if gS[j]:
                    rec.append(f"    if {gS[j]} is not None:")
                    rec.append(f"        {carry[j]} = {carry[j]} + {gS[j]}[t0 + t]")
        if compiled:
            for i in states:
                rec.append(f"{G[i]} = torch.stack({lists[i]}[::-1])")
                if need_U:
                    rec.append(f"{U[i]} = torch.stack({ulists[i]}[::-1])")
        body += rec
        # -------- gradients of the inputs and static tensors for the chunk's steps
        if wanted:
            rest = [(k, e) for k, e in wanted if k not in alias.values()]
            gx_need = [(g, e) for g, e in zip(self.GXs, GX)
                       if any(g in w.free_symbols for _, w in rest)]
            if gx_need:
                needs = " or ".join(f"needs[{gen_arg_index(A, k)}]" for k, _ in rest)
                sub = []
                lean.cse([(N[g], e.subs(zero)) for g, e in gx_need], sub, "y")
                body.append(f"if {needs}:")
                body += ["    " + x for x in sub]
            for k, e in rest:
                gname = gout[k]
                sub = []
                if k.startswith("static:"):
                    code = lean.assign(e, sub, "v")
                    val = f"_sum_to({code}, {A[k]})"
                    sub.append(f"{gname} = {val} if {gname} is None else {gname} + {val}")
                elif compiled:
                    code = lean.assign(e, sub, "v")
                    if not lean.is_big(e):
                        code = f"{code} + torch.zeros_like({like_c})"
                    sub.append(f"{gname} = {code}")
                elif lean.is_big(e):
                    lean.assign(e, sub, "v", out=f"{gname}[t0:t1]")
                else:
                    sub.append(f"{gname}[t0:t1] = {lean.assign(e, sub, 'v')}")
                body.append(f"if needs[{gen_arg_index(A, k)}]:")
                body += ["    " + x for x in sub]
        # -------- assemble
        L += pre_loop
        if compiled:
            L.append("t0, t1 = 0, T")
            L += body
        else:
            L.append("# chunks of steps that stay in cache, from the last one to the first")
            L.append(f"chunk = max(1, min(T, {CHUNK_ELEMENTS} // max(1, {like}[0].numel())))")
            L.append("for t1 in range(T, 0, -chunk):")
            L.append("    t0 = max(t1 - chunk, 0)")
            L += ["    " + b_ for b_ in body]
        ginit = {j: nm.fresh(f"g_{j}0") if j in states else "None" for j in plan.states}
        for j in states:
            idx = gen_arg_index(A, f"init:{j}")
            if form == "gq":  # u[-1] = Phi^T GQ[0] + the direct gradient of S[0]
                terms = [f"{lean.small_factor(Phi[(i, j)])} * {carry[i]}" for i in states
                         if Phi[(i, j)] != 0]
                L.append(f"{ginit[j]} = None")
                L.append(f"if needs[{idx}]:")
                L.append(f"    {ginit[j]} = " + (" + ".join(terms) if terms else
                                                 f"torch.zeros_like({like}[0])"))
                if gS[j]:
                    L.append(f"    if {gS[j]} is not None:")
                    L.append(f"        {ginit[j]} = {ginit[j]} + {gS[j]}[0]")
            else:
                L.append(f"{ginit[j]} = {carry[j]} if needs[{idx}] else None")
        rets = []
        for key in A:
            if key.startswith("init:"):
                rets.append(ginit[key[5:]])
            else:
                rets.append(gout.get(key, "None"))
        L.append(f"return {', '.join(rets)}{',' if len(rets) == 1 else ''}")
        gen._uses_math = gen._uses_math or pr.uses_math
        return L

    def _qenv(self) -> dict:
        """Names the spike condition reads -> SymPy (pre-reset states, inputs,
        parameters)."""
        env = {}
        env.update(self.P)
        env.update(self.X)
        env.update(self.q)
        return env

    def _used(self) -> set[str]:
        """Symbols the backward reads."""
        GX, K, N, Phi, gX, gP = self.equations()
        used = set()
        for e in [*GX, *K.values(), *N.values(), *Phi.values(), *gX.values(), *gP.values()]:
            used |= {str(f) for f in e.free_symbols}
        spike = self._spike_names()
        used |= {f"X:{k}" for k in spike if k in self.X}
        used |= {f"P:{k}" for k in spike if k in self.P}
        return used

    def _spike_names(self) -> set[str]:
        """Names the spike condition reads (the backward recomputes it)."""
        plan = self.plan
        return names(plan.spike if plan.spike is not None else plan.cond) if plan.spiking \
            else set()

    def need_S(self, Q) -> set[str]:
        """States whose post-reset trajectory the backward reads."""
        plan = self.plan
        states = plan.states
        used = self._used()
        spike_states = self._spike_names() & set(states)
        out = {s_ for s_ in states if f"s:{s_}" in used or (
            s_ not in Q and (f"q:{s_}" in used or s_ in spike_states))}
        if not Q and not plan.spiking:
            out.add(states[0])
        return out

    def _saved(self, A, S, Q, used, need_S):
        """Tensors saved for backward: [(key, python name)] (the forward saves
        the same list, in this order)."""
        plan = self.plan
        out = [(f"S:{s}", S[s]) for s in plan.states if s in need_S]
        out += [(f"Q:{s}", Q[s]) for s in plan.states if s in Q]
        if plan.spiking:
            out.append(("Z", "Z"))
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
    key = json.dumps([neuron.model_dump(mode="json", exclude={"source_line", "source_file"}),
                      plan.step_names, plan.static_names,
                      [[t.target, t.op, t.value.model_dump(mode="json")] for t in plan.temps],
                      {k: v.model_dump(mode="json") for k, v in plan.updates.items()},
                      [[t.target, t.op, t.value.model_dump(mode="json")] for t in plan.resets],
                      [[t.target, t.value.model_dump(mode="json")] for t in plan.jumps],
                      [x.model_dump(mode="json") if x is not None else None
                       for x in (plan.spike, plan.cond)]],
                     sort_keys=True, default=str)
    if key not in _DERIVE_CACHE:
        _DERIVE_CACHE[key] = Derivation(neuron, plan)
    return _DERIVE_CACHE[key]
