"""The analytic backward of the fused scan (docs/torch.md, "The analytic
backward"): the adjoint equations of one step derived with SymPy from the
plan's equations, and the backward function's code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from spikedsl import ir
from spikedsl.ir.exprs import names
from spikedsl.targets.torch.expr import TorchPrinter, fold, spk, surrogate_code, surrogate_doc
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
        nr = self.nr
        env = {}
        env.update(self.P)
        env.update(self.X)
        env.update(self.s)
        rf = plan.rf
        hold = lambda kept, e: nr * e + (1 - nr) * kept  # noqa: E731
        # jumps in order, each reading what the previous ones left
        for j in plan.jumps:
            env[j.target] = rf.jump(j.target, b(j.value, env), self.s[j.target], hold)
        for t in plan.temps:
            env[t.target] = b(t.value, env)
        alt = {}
        if R > 0 and plan.refr_updates:  # the unclamped states' step while refractory
            renv = dict(env)
            for t in plan.refr_temps:
                renv[t.target] = b(t.value, renv)
            alt = {s: b(e, renv) for s, e in plan.refr_updates.items()}
        pre = {}
        for s in plan.states:
            if s in plan.updates:
                pre[s] = rf.update(s, b(plan.updates[s], env), self.s[s], alt, hold)
            else:
                pre[s] = env[s]
        self.pre = pre
        qenv = dict(env)
        qenv.update(self.q)
        # the spike: z = f(H_k(x_k), guards); dz/dx_k = sgn_k * df/dH_k
        self.xs: list = []  # surrogate arguments x_k (SymPy, over q, X, P)
        self.leaf_ir: list[ir.Expr] = []  # their ordering leaves (IR, for printing)
        self.sgns: list = []  # surrogate derivatives (times "not refractory")
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
                     self.plan.spiking, self.plan.states))

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
            GQ[i] = e
        # adjoint of the old states, fully substituted (for M and c)
        full_GQ = {i: GQ[i].subs(dict(zip(self.GXs, GX))) for i in states}
        gs = {j: sum((sp.diff(self.pre[i], self.s[j]) * full_GQ[i] for i in states), sp.S.Zero)
              for j in states}
        M = {(j, l): sp.factor_terms(sp.diff(gs[j], u[l])) for j in states for l in states}
        c = {j: sp.factor_terms(gs[j].subs({u[l]: 0 for l in states})) for j in states}

        def grad(v):
            e = sum((sp.diff(self.pre[i], v) * self.GQ[i] for i in states), sp.S.Zero)
            e += sum((sp.diff(self.post[l], v) * u[l] for l in states), sp.S.Zero)
            for x, g in zip(self.xs, self.GXs):
                e += sp.diff(x, v) * g
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
        spiking = plan.spiking
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
        elif spiking:
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
            elif s_ in plan.updates or any(j.target == s_ for j in plan.jumps):
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
        N[self.nr] = "nr"
        N[self.gz] = "gz"
        if plan.spike is not None:
            N[self.sgn] = "sgn"
            N[self.GX] = "GX"
        for k, (sg, H, g) in enumerate(zip(self.sgns, self.Hs, self.GXs)):
            N[sg], N[H], N[g] = nm.fresh(f"sgn{k}"), nm.fresh(f"h{k}"), nm.fresh(f"GX{k}")
        for k, (g, _e) in enumerate(self.guards):
            N[g] = nm.fresh(f"guard{k}")
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
            for k in plan.static_names:
                env[k] = A[f"static:{k}"]
            P = TorchPrinter(env, "z", "ftype")
            if plan.spike is not None:
                lhs, rhs = split_spike(plan.spike)
                body.append(f"x = {P.tensor(fold(ir.BinOp(op='-', left=lhs, right=rhs)))}")
                sl_lines, se = surrogate_code(n.surrogate, "x", "ftype")
                body += sl_lines
                body.append(f"sgn = {se}" + (" * nr" if R > 0 else "") +
                            f"  # surrogate {surrogate_doc(n.surrogate)}")
            for k, e in enumerate(self.leaf_ir):  # compound: every ordering leaf
                xk = nm.fresh(f"x{k}")
                body.append(f"{xk} = {P.tensor(e.left)}  # {spk(e)}")
                body.append(f"{N[self.Hs[k]]} = ({xk} {e.op} 0).to(ftype)")
                sl_lines, se = surrogate_code(n.surrogate, xk, "ftype")
                body += sl_lines
                body.append(f"{N[self.sgns[k]]} = {se}" + (" * nr" if R > 0 else "") +
                            f"  # surrogate {surrogate_doc(n.surrogate)}")
            for g, e in self.guards:
                body.append(f"{N[g]} = {P.boolean(e)}.to(ftype)  # guard {spk(e)}")
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
            self.GQ.values()) | set(self.u.values()) | set(self.sgns) | set(self.Hs) | set(
            self.GXs) | {g for g, _ in self.guards}

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
                body.append(_final_adjoint(ul[j], gS[j], grads.get(f"F:{j}"), f"{cname[j]}[0]"))
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
            base = [g.subs(zero) for g in GX] + [GQ[s_].subs(zero) for s_ in states]
            lines2, printed2 = cse_lines(base, N, pr, "y", nm)
            b2 = list(lines2)
            for g, code in zip(self.GXs, printed2):
                b2.append(f"{N[g]} = {code}")
            for s_, code in zip(states, printed2[len(GX):]):
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
                L.append(_final_adjoint(ul[j], gS[j], grads.get(f"F:{j}"), f"{like}[0]"))
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
        for e in [*GX, *GQ.values(), *M.values(), *c.values(), *gX.values(), *gP.values()]:
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
        if plan.R > 0:
            out.append(("Ref", "Ref"))
        out += [(f"step:{k}", A[f"step:{k}"]) for k in plan.step_names if f"X:{k}" in used]
        out += [(f"static:{k}", A[f"static:{k}"]) for k in plan.static_names
                if f"P:{k}" in used or self._grad_static(k)]
        return out

    def _grad_static(self, k: str) -> bool:
        return True  # static tensors are small; their gradient is reduced to their shape


def _final_adjoint(u: str, g: str | None, gF: str | None, like: str) -> str:
    """``u`` after the last step: the gradient of the state's trajectory at T,
    else of its final value (only the final state is an output), else 0."""
    zero = f"torch.zeros_like({like})"
    if g is None and gF is not None:
        return f"{u} = {gF} if {gF} is not None else {zero}"
    if g is None:
        return f"{u} = {zero}"
    return f"{u} = {g}[T] if {g} is not None else {zero}"


def gen_arg_index(A: dict[str, str], key: str) -> int:
    """Index of an argument in ``apply(T, *args)`` (``T`` is 0)."""
    return 1 + list(A).index(key)


_DERIVE_CACHE: dict[str, Derivation] = {}
_EQ_CACHE: dict[str, tuple] = {}


def derive(neuron: ir.LNeuron, plan: NeuronPlan) -> Derivation:
    key = json.dumps([neuron.model_dump(mode="json", exclude={"source_line", "source_file"}), plan.R,
                      plan.step_names, plan.static_names, sorted(plan.held),
                      [[t.target, t.op, t.value.model_dump(mode="json")] for t in plan.temps],
                      {k: v.model_dump(mode="json") for k, v in plan.updates.items()},
                      [[t.target, t.op, t.value.model_dump(mode="json")] for t in plan.resets],
                      [[t.target, t.value.model_dump(mode="json")] for t in
                       plan.jumps + plan.refr_temps],
                      {k: v.model_dump(mode="json") for k, v in plan.refr_updates.items()},
                      [x.model_dump(mode="json") if x is not None else None
                       for x in (plan.spike, plan.cond)]],
                     sort_keys=True, default=str)
    if key not in _DERIVE_CACHE:
        _DERIVE_CACHE[key] = Derivation(neuron, plan)
    return _DERIVE_CACHE[key]
