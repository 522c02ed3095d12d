"""Step-by-step code of the torch target: recurrent groups (every layer one
step at a time with plain autograd), neuron steps, snnTorch-style cells and
synapse rules (plasticity).  Mixed into :class:`spikedsl.targets.torch.network.NetGen`.
"""

from __future__ import annotations

from spikedsl import ir
from spikedsl.targets.torch.expr import TorchPrinter, number, prepare, spk
from spikedsl.targets.torch.keys import key as _key
from spikedsl.targets.torch.keys import prod as _prod
from spikedsl.targets.torch.keys import split_key as _split_key
from spikedsl.targets.torch.keys import tup as _tup
from spikedsl.targets.torch.neuron import make_plan, step_code

__all__ = ["StepMixin"]

_CELL_SURROGATE = ir.LSurrogate(name="atan", args={"alpha": 2.0})  # snnTorch's default


class StepMixin:
    """Step groups, neuron steps, cells and synapse rules of :class:`NetGen`."""

    # ---------------------------------------------------------------- step groups
    def step_group(self, grp: list[str], L: list[str]) -> None:
        inside = set(grp)
        self.group_on = {}  # the nonzero entries of each source, once per step
        fans: dict[tuple[str, int], list[ir.LProjection]] = {}
        for name in grp:
            la = self.layers[name]
            if la.kind != "neuron":
                continue
            for p in la.projections:
                if f"{p.param_name}.weight" in self.sparse and (
                        not self.fast or p.source in inside):
                    fans.setdefault((_key(p.source, p.source_state), p.delay), []).append(p)
        for members in fans.values():
            if len(members) > 1:
                self.fans.update({p.param_name: members for p in members})
        L.append(f"# ---- step by step: {', '.join(grp)}")
        pre: list[str] = []  # before the loop
        post: list[str] = []  # after the loop
        # keys read with a delay inside the group -> history lists
        hist: dict[str, int] = {}
        for name in grp:
            la = self.layers[name]
            for p in la.projections:
                key = _key(p.source, p.source_state)
                if p.source in inside and p.delay > 0:
                    hist[key] = max(hist.get(key, 0), p.delay)
        # keys produced inside and needed outside the group (or as outputs) -> traces
        export = []
        for key, cs in self.cons.items():
            layer = _split_key(key)[0]
            if layer in inside and any(c == "@output" or c not in inside or
                                       (c in inside and self.fast is False and False)
                                       for c, _ in cs):
                export.append(key)
        # a whole trace is kept only when something reads it over time: a layer
        # outside the group or an output without reduction; otherwise sums and
        # last values are accumulated and delay lines keep their last steps
        outs: dict[str, list[ir.LOutput]] = {}
        for o in self.net.outputs:
            outs.setdefault(_key(o.layer, o.state, o.pre_reset), []).append(o)

        def whole(key: str) -> bool:
            return key in export and (
                any(c != "@output" and c not in inside for c, _ in self.cons[key])
                or any(o.reduce == "none" for o in outs.get(key, ())))

        lists: dict[str, str] = {}  # delay lines: the last `delay` steps
        for key, depth in sorted(hist.items()):
            h = self.nm(f"hist:{key}", key.replace(".", "_") + "_hist")
            past = self.past(key, depth, pre)
            pre.append(f"{h} = list({past}.unbind(0))")
            lists[key] = h
            self.finals = [(k, f"torch.stack({h})" if k == key + "@past" else c)
                           for k, c in self.finals]
        sums: dict[str, str] = {}  # key -> running sum over the steps
        records: dict[str, tuple[str, str]] = {}  # key -> (put, get) of a whole trace
        for key in export:
            layer = self.layers[_split_key(key)[0]]
            if not whole(key):
                if any(o.reduce in ("sum", "mean") for o in outs.get(key, ())):
                    acc = self.nm(f"sum:{key}", key.replace(".", "_") + "_sum")
                    pre.append(f"{acc} = self._like.new_zeros((B,) + {_tup(layer.shape)})")
                    sums[key] = acc
                self.reduced[key] = (sums.get(key), self.cur(key))
            else:
                stem = key.replace(".", "_")
                put, get = self.nm(f"put:{key}", f"{stem}_put"), self.nm(f"get:{key}", f"{stem}_get")
                pre.append(f"{put}, {get} = _trace(T, (B,) + {_tup(layer.shape)}, self._like)")
                records[key] = (put, get)
                self.use.add("trace")

        def src_at(key: str, delay: int) -> str:
            layer = _split_key(key)[0]
            if layer in inside:
                if delay == 0:
                    return self.cur(key)
                return f"{lists[key]}[{hist[key] - delay}]"
            if delay == 0:
                return f"{self.trace(key)}[t]"
            return f"{self.seq_src(key, delay, pre)}[t]"

        body_layers = []
        for name in grp:
            la = self.layers[name]
            lines: list[str] = []
            self.header(la, lines)
            if la.kind == "input":
                lines.append(f"{self.cur(name)} = xs[{name!r}][t]")
            elif la.kind == "stage":
                src = src_at(_key(la.source, la.source_state), 0)
                lines.append(f"{self.cur(name)} = {self.stage(la, src, 1)}")
            elif la.kind == "projection":
                p = la.projections[0]
                code = self.proj(p, src_at(_key(p.source, p.source_state), p.delay), 1)
                if la.func:
                    code = self.func(la.func, code)
                lines.append(f"{self.cur(name)} = {code}")
            elif la.kind == "cell":
                self.cell_step(la, src_at, pre, lines)
            else:
                self.neuron_step(la, src_at, pre, lines, inside)
            body_layers.append(lines)
            # record
            keys = [name] + [f"{name}.{s}" for s in la.states] + [
                f"{name}.{s}_pre" for s in la.states]
            for key in keys:
                if key in lists:
                    lines.append(f"{lists[key]}.append({self.cur(key)})")
                if key in records:
                    lines.append(f"{records[key][0]}(t, {self.cur(key)})")
                if key in sums:
                    lines.append(f"{sums[key]} = {sums[key]} + {self.cur(key)}")
        body_layers.append([f"del {lists[key]}[0]" for key in sorted(lists)])
        L += pre
        L.append("for t in range(T):")
        for lines in body_layers:
            L += ["    " + x for x in lines]
        for key, (_, get) in records.items():
            post.append(f"{self.trace(key)} = {get}()")
        L += post
        for name in grp:
            la = self.layers[name]
            if la.kind in ("neuron", "cell"):
                for s in la.states:
                    self.finals.append((f"{name}.{s}", self.cur(f"{name}.{s}")))

    def neuron_step(self, la: ir.LLayer, src_at, pre: list[str], lines: list[str],
                    inside: set[str]) -> None:
        n = la.neuron
        name = la.name
        tparams = self.tensor_params(la)
        plan = make_plan(n, n.dt, set(tparams), "step")
        env = dict(tparams)
        shape = f"(B,) + {_tup(la.shape)}"
        # inputs: feed-forward parts from outside the group all at once (fast path)
        ext: dict[str, str] = {}
        plastic = [p for p in la.projections if p.param_name in self.plastic]
        if self.fast:
            outside = [p for p in la.projections if p.source not in inside and
                       p.param_name not in self.plastic]
            if outside:
                tmp = la.model_copy(update={"projections": tuple(outside)})
                ext = self.inputs_seq(tmp, pre, ext_only=True)
        rules = {p.param_name: self.rule_setup(p, pre) for p in plastic}
        advance = [x for p in plastic for x in self.rule_advance(p, rules[p.param_name])]
        if advance:  # a rule without dynamics of its own has nothing to advance
            lines.append("with torch.no_grad():  # synapse rules: their own dynamics")
            lines += ["    " + x for x in advance]
        self.on_cache = self.group_on
        for k in n.inputs:
            terms = [f"{ext[k]}[t]"] if k in ext else []
            for p in la.projections:
                if p.target_input != k or (self.fast and p.source not in inside and
                                           p.param_name not in self.plastic):
                    continue
                x = src_at(_key(p.source, p.source_state), p.delay)
                if p.param_name in rules:
                    terms.append(self.rule_transmit(p, rules[p.param_name], x, lines))
                else:
                    terms.append(self.proj(p, x, 1))
            v = self.nm(f"in:{name}.{k}", f"{name}_{k}_t")
            lines += self.on_pending
            self.on_pending = []
            if terms:
                lines.append(f"{v} = {' + '.join(terms)}")
            else:
                lines.append(f"{v} = self._like.new_zeros({shape})")
            env[k] = v
        self.on_cache = None
        P = TorchPrinter(env, "self._like")
        for kind, hname, e in plan.hoisted:
            v = self.nm(f"hoist:{name}.{hname}", f"{name}_{hname.lstrip('%')}")
            pre.append(f"{v} = {P(e)}  # {spk(e)}")
            env[hname] = v
        state_vars = {s: self.cur(f"{name}.{s}") for s in plan.states}
        pre_vars = {s: self.cur(f"{name}.{s}_pre") for s in plan.states}
        for s in plan.states:
            pre.append(f"{state_vars[s]} = self._initial({name + '.' + s!r}, "
                       f"{self.value(plan.inits[s], env)}, {shape})")
        code = step_code(plan, names_=env, state_vars=state_vars, pre_vars=pre_vars,
                         z_var=self.cur(name),
                         spike_fn=lambda op: self.spike_fn(n.surrogate, op), namer=self.nm,
                         ref_tensor="self._like")
        if not plan.spiking:
            code.append(f"{self.cur(name)} = self._like.new_zeros({shape})")
        lines += code
        post = [x for p in plastic for x in self.rule_post(p, rules[p.param_name], self.cur(name))]
        if post:
            lines.append("with torch.no_grad():  # synapse rules: on_post where the neuron spiked")
            lines += ["    " + x for x in post]
        if rules:
            for p in plastic:
                r = rules[p.param_name]
                lines.append("if self.record_plastic:")
                lines.append(f"    {r['list']}.append({r['w']})")

    # ---------------------------------------------------------------- plasticity
    def rule_setup(self, p: ir.LProjection, pre: list[str]) -> dict:
        """Per-sample weights [B, out, in], the synapse mask and the rule states."""
        lp = self.plastic[p.param_name]
        rule = lp.rule
        pn = p.param_name
        n_out, n_in = _prod(p.out_shape), _prod(p.in_shape)
        key = pn.replace(".", "_")
        r = {"w": self.nm(f"rule:{pn}.w", f"{key}_w"),
             "mask": self.nm(f"rule:{pn}.mask", f"{key}_mask"),
             "list": self.nm(f"rule:{pn}.list", f"{key}_w_list"),
             "states": {st.name: self.nm(f"rule:{pn}.{st.name}", f"{key}_{st.name}")
                        for st in rule.states},
             "consts": {q.name: float(q.value) for q in rule.params}}
        r["consts"]["dt"] = float(rule.dt)
        W = self.weight(p)
        if p.kind == "dense":
            pre.append(f"{r['mask']} = torch.ones(({n_out}, {n_in}), dtype=torch.bool, "
                       f"device=self._like.device)")
            w0 = f"{W}.reshape({n_out}, {n_in})"
        elif p.kind == "sparse":
            pre.append(f"{r['mask']} = {self.attr(pn)}._mask")
            w0 = W
        else:
            pre.append(f"{r['mask']} = torch.eye({n_out}, dtype=torch.bool, "
                       f"device=self._like.device)")
            w0 = f"torch.diag(torch.broadcast_to({W}.reshape(-1), ({n_out},)))"
        shape = f"(B, {n_out}, {n_in})"
        pre.append(f"{r['w']} = self._initial({pn + '.weight'!r}, torch.where({r['mask']}, "
                   f"{w0}, 0.0).detach(), {shape})")
        for st in rule.states:
            v = self.value(prepare(st.init, r["consts"]), {})
            pre.append(f"{r['states'][st.name]} = self._initial({pn + ':' + st.name!r}, "
                       f"{r['w']}.new_zeros({shape}).masked_fill({r['mask']}, {v}), {shape})")
        pre.append(f"{r['list']} = []")
        self.finals.append((f"{pn}.weight", r["w"]))
        for st in rule.states:
            self.finals.append((f"{pn}:{st.name}", r["states"][st.name]))
        self.plastic_records.append((f"{pn}.weight", r["list"]))
        return r

    def _rule_env(self, r: dict) -> dict[str, str]:
        env = dict(r["states"])
        env["w"] = r["w"]
        return env

    def rule_advance(self, p: ir.LProjection, r: dict) -> list[str]:
        rule = self.plastic[p.param_name].rule
        out: list[str] = []
        env = self._rule_env(r)
        for t in rule.temps:
            v = self.nm.fresh(f"{p.param_name.replace('.', '_')}_{t.target}")
            out.append(f"{v} = {self.value(prepare(t.value, r['consts']), env)}")
            env[t.target] = v
        new = {}
        for u in rule.updates:
            v = self.nm.fresh(f"{env[u.target]}_new")
            out.append(f"{v} = {self.value(prepare(u.value, r['consts']), env)}")
            new[u.target] = v
        for target, v in new.items():
            out.append(f"{env[target]} = torch.where({r['mask']}, {v}, {env[target]})")
        return out

    def _rule_stmts(self, stmts, r: dict, fired: str) -> list[str]:
        out = []
        env = self._rule_env(r)
        for a in stmts:
            e = prepare(a.value, r["consts"])
            if a.op != "=":
                e = ir.BinOp(op="+" if a.op == "+=" else "-", left=ir.Name(id=a.target), right=e)
            out.append(f"{env[a.target]} = torch.where({fired}, {self.value(e, env)}, "
                       f"{env[a.target]})  # {a.target} {a.op} {spk(a.value)}")
        return out

    def rule_transmit(self, p: ir.LProjection, r: dict, x: str, lines: list[str]) -> str:
        """w . x with this step's weights, then on_pre; returns the input's code."""
        rule = self.plastic[p.param_name].rule
        y = self.nm.fresh(f"{p.param_name.replace('.', '_')}_y")
        b = f" + {self.attr(p.param_name + '.bias')}" if p.bias and p.kind == "dense" else ""
        code = f"torch.matmul({r['w']}, {x}.reshape(B, -1, 1)).squeeze(-1){b}"
        if len(p.out_shape) > 1:
            code = f"({code}).reshape((B,) + {_tup(p.out_shape)})"
        lines.append(f"{y} = {code}")
        if rule.on_pre:
            fired = self.nm.fresh(f"{p.param_name.replace('.', '_')}_pre")
            lines.append("with torch.no_grad():  # on_pre where the presynaptic spike arrives")
            lines.append(f"    {fired} = {r['mask']} & ({x}.reshape(B, 1, -1) != 0)")
            lines += ["    " + s for s in self._rule_stmts(rule.on_pre, r, fired)]
        return y

    def rule_post(self, p: ir.LProjection, r: dict, z: str) -> list[str]:
        rule = self.plastic[p.param_name].rule
        if not rule.on_post:
            return []
        fired = self.nm.fresh(f"{p.param_name.replace('.', '_')}_post")
        return [f"{fired} = {r['mask']} & ({z}.reshape(B, -1, 1) != 0)"] + self._rule_stmts(
            rule.on_post, r, fired)

    def cell_step(self, la: ir.LLayer, src_at, pre: list[str], lines: list[str]) -> None:
        name = la.name
        a = la.args
        syn, mem = self.cur(f"{name}.syn"), self.cur(f"{name}.mem")
        shape = f"(B,) + {_tup(la.shape)}"
        for s, v in (("syn", syn), ("mem", mem)):
            pre.append(f"{v} = self._initial({name + '.' + s!r}, 0.0, {shape})")
        key = _key(la.source, la.source_state)
        fn = self.spike_fn(_CELL_SURROGATE, ">")
        thr = number(float(a.get("threshold", 1.0)))
        P = self.attr(name)
        g = self.nm(f"gates:{name}", f"{name}_gates")
        external = self.fast and key in self.cons and _split_key(key)[0] not in self._group_of(
            name)
        if la.op == "slstm":
            x_in = f"{P}.weight_ih, {P}.bias_ih"
            if external:
                xg = self.nm(f"xg:{name}", f"{name}_x")
                src = self.trace(key)
                flat = src if len(self.layers[_split_key(key)[0]].shape) == 1 else \
                    f"{src}.flatten(2)"
                pre.append(f"{xg} = _linear({flat}, {x_in})")
                xpart = f"{xg}[t]"
            else:
                src = src_at(key, 0)
                xpart = f"_linear({src}.flatten(1), {x_in})"
            self.use.add("linear")
            lines.append(f"{g} = {xpart} + _linear({mem}, {P}.weight_hh, {P}.bias_hh)")
            lines.append(f"{name}_i, {name}_f, {name}_g, {name}_o = {g}.chunk(4, 1)")
            lines.append(f"{syn} = torch.sigmoid({name}_f) * {syn} + torch.sigmoid({name}_i) * "
                         f"torch.tanh({name}_g)")
            lines.append(f"{mem} = torch.sigmoid({name}_o) * torch.tanh({syn})")
        else:
            cin, k = int(a["in_channels"]), int(a["kernel"])
            pad = f"padding={k // 2}"
            wx = self.nm(f"wx:{name}", f"{name}_wx")
            wh = self.nm(f"wh:{name}", f"{name}_wh")
            pre.append(f"{wx} = {P}.weight[:, :{cin}]")
            pre.append(f"{wh} = {P}.weight[:, {cin}:]")
            if external:
                xg = self.nm(f"xg:{name}", f"{name}_x")
                pre.append(f"{xg} = F.conv2d({self.trace(key)}.flatten(0, 1), {wx}, {P}.bias, "
                           f"{pad}).unflatten(0, (T, B))")
                xpart = f"{xg}[t]"
            else:
                xpart = f"F.conv2d({src_at(key, 0)}, {wx}, {P}.bias, {pad})"
            lines.append(f"{g} = {xpart} + F.conv2d({mem}, {wh}, None, {pad})")
            lines.append(f"{name}_i, {name}_f, {name}_o, {name}_g = {g}.chunk(4, 1)")
            lines.append(f"{syn} = torch.sigmoid({name}_f) * {syn} + torch.sigmoid({name}_i) * "
                         f"torch.tanh({name}_g)")
            lines.append(f"{mem} = torch.sigmoid({name}_o) * torch.tanh({syn})")
        lines.append(f"{self.cur(name)} = {fn}.apply({mem} - {thr})  # spike mem > {thr}")
        for s in ("syn", "mem"):
            lines.append(f"{self.cur(f'{name}.{s}_pre')} = {self.cur(f'{name}.{s}')}")

    def _group_of(self, name: str) -> set[str]:
        for g in self.groups():
            if name in g:
                return set(g)
        return {name}
