"""torch target: a readable, standalone PyTorch module generated from the
lowered IR (docs/semantics.md is the contract, docs/torch.md the manual).

    src = convert(net)                 # Python source (imports only torch, math)
    m = build(net, dtype=torch.float64)  # nn.Module, executed from that source
    out = m(x)                         # dict output name -> [T, B, ...]
    out = run(net, {"x": x}, record=["h", "h.v"])   # numpy in, numpy out

Layout lives in ``targets/torch/*.j2``; this module decides what goes where.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import linecache
import math
import os
import re
from collections.abc import Mapping

from spikedsl import ir
from spikedsl.errors import SpecError, unsupported
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.lowering import weights as _weights
from spikedsl.resources import templates_dir
from spikedsl.targets import require
from spikedsl.targets.torch.expr import (
    Namer,
    TorchPrinter,
    check_ident,
    function_helpers,
    number,
    prepare,
    prune,
    spk,
)
from spikedsl.targets.torch.neuron import (
    MAX_ANALYTIC_SIZE,
    ScanGen,
    analytic_size,
    make_plan,
    step_code,
    surrogate_code,
    surrogate_doc,
)
from spikedsl.targets.torch.params import draws, register_layer

__all__ = ["TARGET", "build", "check", "convert", "run"]

TARGET = "torch"

# attributes of torch.nn.Module and of the generated class: no layer may take these names
_MODULE_ATTRS = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule",
    "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad", "steps", "dt", "inputs", "outputs", "encoders", "stateful", "state",
    "carry_grad", "reset_state", "clamp_parameters", "load_weights", "export_weights", "encode", "source",
}
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_.()#\-]+$")
_CELL_SURROGATE = ir.LSurrogate(name="atan", args={"alpha": 2.0})  # snnTorch's default


def _prod(shape) -> int:
    return math.prod(shape) if shape else 1


def _tup(shape) -> str:
    shape = tuple(int(s) for s in shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


def _key(layer: str, state: str | None = None, pre: bool = False) -> str:
    return layer if state is None else f"{layer}.{state}{'_pre' if pre else ''}"


def _split_key(key: str) -> tuple[str, str | None, bool]:
    layer, _, st = key.partition(".")
    if not st:
        return layer, None, False
    if st.endswith("_pre"):
        return layer, st[:-4], True
    return layer, st, False


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / "torch")),
                              keep_trailing_newline=True, trim_blocks=False,
                              lstrip_blocks=False, undefined=jinja2.StrictUndefined,
                              autoescape=False)


class NetGen:
    """Generates the module of one network (the Norse target subclasses it)."""

    NAME = "torch"  # in spikedsl.targets
    TARGET = TARGET  # in messages

    def __init__(self, net: ir.LNetwork, fast: bool, compiled: bool):
        self.net = net
        self.fast = fast
        self.compiled = compiled
        self.layers = {la.name: la for la in net.layers}
        self.index = {la.name: i for i, la in enumerate(net.layers)}
        self.nm = Namer(["xs", "T", "B", "t", "inputs", "out", "g", "result"])
        self.use: set[str] = set()
        self.classes: list[str] = []
        self.spike_fns: dict[str, str] = {}
        self.init: list[str] = []
        self.clamp: list[str] = []
        self.params: list[str] = []
        self.fwd: list[str] = []
        self.uses_math = False
        self.holders: set[str] = set()
        self.env = _env()
        self.finals: list[tuple[str, str]] = []  # (state key, code) kept in self.state
        self.scan_count = 0
        self.plastic = {lp.projection: lp for lp in net.plasticity}
        self.plastic_records: list[tuple[str, str]] = []  # (trace name, list local)

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        net = self.net
        require(self.NAME, net)  # the declared capabilities (spikedsl.targets)
        for la in net.layers:
            check_ident(la.name)
            if la.name in _MODULE_ATTRS or la.name.startswith("_"):
                raise unsupported(self.TARGET, f"layer name '{la.name}'",
                                  "it clashes with an attribute of torch.nn.Module or of the "
                                  "generated class; rename the layer")
            if la.kind == "cell" and la.op == "sconv_lstm" and int(la.args["kernel"]) % 2 == 0:
                raise unsupported(self.TARGET, f"sconv_lstm '{la.name}' with kernel "
                                  f"{int(la.args['kernel'])}", "snnTorch's SConv2dLSTM pads by "
                                  "kernel // 2, which keeps the size only for odd kernels")
            for p in la.projections:
                for part in p.param_name.split("."):
                    check_ident(part)
        for o in net.outputs:
            if not _OUTPUT_NAME.match(o.name):
                raise ValueError(f"bad output name {o.name!r}")
        names: dict[str, str] = {}
        for la in net.layers:
            for n in self.layer_params(la):
                if n in names:
                    raise unsupported(self.TARGET, f"parameter '{n}'",
                                      f"two parameters of layer '{la.name}' get the same name")
                names[n] = la.name

    def layer_params(self, la: ir.LLayer) -> list[str]:
        out = []
        for p in la.projections:
            out.append(f"{p.param_name}.weight")
            if p.bias and p.kind in ("dense", "conv2d"):
                out.append(f"{p.param_name}.bias")
        if la.kind == "neuron":
            for prm in la.neuron.params:
                if prm.trainable or prm.per_neuron:
                    out.append(f"{la.name}.{prm.name}")
        if la.kind == "stage" and la.op == "batchnorm":
            out += [f"{la.name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        if la.kind == "cell":
            if la.op == "slstm":
                out += [f"{la.name}.{k}" for k in ("weight_ih", "weight_hh", "bias_ih",
                                                   "bias_hh")]
            else:
                out += [f"{la.name}.weight", f"{la.name}.bias"]
        return out

    # ---------------------------------------------------------------- attribute paths
    @staticmethod
    def attr(path: str) -> str:
        code = "self"
        for part in path.split("."):
            code = f'getattr({code}, "{part}")' if part in _KEYWORDS else f"{code}.{part}"
        return code

    def holder(self, path: str) -> None:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in self.holders:
                self.holders.add(sub)
                parent = self.attr(".".join(parts[:i - 1])) if i > 1 else "self"
                self.init.append(f'{parent}.add_module("{parts[i - 1]}", torch.nn.Module())')

    def param(self, name: str, code: str, buffer: bool = False) -> None:
        path, _, leaf = name.rpartition(".")
        self.holder(path)
        if buffer:
            self.init.append(f'{self.attr(path)}.register_buffer("{leaf}", {code})')
        else:
            self.init.append(f'{self.attr(path)}.register_parameter("{leaf}", '
                             f"torch.nn.Parameter({code}))")
        self.params.append(name)

    # ---------------------------------------------------------------- parameters
    def register(self) -> None:
        """Parameters and buffers with the initialisation of spikedsl.lowering.weights
        (its drawing code is embedded in the module)."""
        arrays = _weights.arrays(self.net)
        if draws(arrays, self.net):
            self.use.add("init")
        for la in self.net.layers:
            for p in la.projections:
                self.register_projection(p)
            self.clamp += register_layer(la, arrays, self.param, self.attr, number)

    def register_projection(self, p: ir.LProjection) -> None:
        """The fixed weights of sparse / one_to_one projections (buffers)."""
        pn = p.param_name
        if p.kind == "sparse":
            n_out, n_in = _prod(p.out_shape), _prod(p.in_shape)
            w = number(p.weight if p.weight is not None else 1.0)
            mask = f"_tensor(mask_values({int(p.seed)}, {number(p.p)}, {n_out * n_in}), " \
                   f"({n_out}, {n_in}))"
            if pn in self.plastic:
                mvar = self.nm.fresh(f"{pn.replace('.', '_')}_mask")
                self.init.append(f"{mvar} = {mask}")
                mask = mvar
            self.param(f"{pn}.weight", f"{mask} * {w}", buffer=True)
            if pn in self.plastic:
                self.init.append(f'{self.attr(pn)}.register_buffer("_mask", {mask} > 0, '
                                 f"persistent=False)")
        elif p.kind == "one_to_one":
            w = number(p.weight if p.weight is not None else 1.0)
            self.param(f"{pn}.weight", f"torch.tensor({w}, dtype=torch.float64)", buffer=True)

    # ---------------------------------------------------------------- analysis
    def consumers(self) -> dict[str, list[tuple[str, int]]]:
        """source key -> [(consumer layer or '@output', delay)]."""
        out: dict[str, list[tuple[str, int]]] = {}
        for la in self.net.layers:
            for p in la.projections:
                key = p.source if p.source_state is None else f"{p.source}.{p.source_state}"
                out.setdefault(key, []).append((la.name, p.delay))
            if la.kind in ("stage", "cell"):
                key = la.source if la.source_state is None else f"{la.source}.{la.source_state}"
                out.setdefault(key, []).append((la.name, 0))
        for o in self.net.outputs:
            out.setdefault(_key(o.layer, o.state, o.pre_reset), []).append(("@output", 0))
        return out

    def groups(self) -> list[list[str]]:
        """Layers in order, grouped: a group of several layers (or a single layer
        that needs it) runs step by step; every other layer runs all steps at once."""
        names_ = [la.name for la in self.net.layers]
        if not self.fast:
            return [names_]
        ranges = []
        for la in self.net.layers:
            for p in la.projections:
                if p.recurrent:
                    lo, hi = sorted((self.index[la.name], self.index[p.source]))
                    ranges.append([lo, hi])
        ranges.sort()
        merged: list[list[int]] = []
        for r in ranges:
            if merged and r[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], r[1])
            else:
                merged.append(list(r))
        out: list[list[str]] = []
        i = 0
        for lo, hi in merged + [[len(names_), len(names_)]]:
            while i < lo:
                out.append([names_[i]])
                i += 1
            if lo < len(names_):
                out.append(names_[lo:hi + 1])
                i = hi + 1
        return out

    # ---------------------------------------------------------------- naming
    def trace(self, key: str) -> str:
        return self.nm(f"trace:{key}", key.replace(".", "_"))

    def cur(self, key: str) -> str:
        return self.nm(f"cur:{key}", key.replace(".", "_") + "_t")

    def spike_fn(self, s: ir.LSurrogate, op: str) -> str:
        key = json.dumps([s.name, sorted(s.args.items()), op])
        if key not in self.spike_fns:
            cls = f"_Spike{len(self.spike_fns)}"
            self.spike_fns[key] = cls
            lines, expr = surrogate_code(s, "x", "ftype")
            self.classes.append(self.env.get_template("spike.py.j2").render(
                cls=cls, op=op, doc=surrogate_doc(s), lines=lines, expr=expr).rstrip())
        return self.spike_fns[key]

    # ---------------------------------------------------------------- projections
    def weight(self, p: ir.LProjection) -> str:
        w = self.attr(f"{p.param_name}.weight")
        if p.sign == "excitatory":
            return f"{w}.abs()"
        if p.sign == "inhibitory":
            return f"-{w}.abs()"
        return w

    def proj(self, p: ir.LProjection, src: str, lead: int) -> str:
        """Code of one projection applied to ``src`` ([T, B, ...] if lead == 2)."""
        W = self.weight(p)
        b = f", {self.attr(p.param_name + '.bias')}" if p.bias and p.kind in (
            "dense", "conv2d") else ""
        if p.kind in ("dense", "sparse"):
            x = src if len(p.in_shape) == 1 else f"{src}.flatten({lead})"
            y = f"F.linear({x}, {W}{b})"
            if len(p.out_shape) > 1:
                y = f"{y}.unflatten({lead}, {_tup(p.out_shape)})"
            return y
        if p.kind == "conv2d":
            args = f"{W}{b}, stride={_tup(p.stride)}, padding={_tup(p.padding)}"
            if lead == 2:
                return f"F.conv2d({src}.flatten(0, 1), {args}).unflatten(0, (T, B))"
            return f"F.conv2d({src}, {args})"
        # one_to_one
        x = src
        if tuple(p.in_shape) != tuple(p.out_shape):
            x = f"{src}.reshape({src}.shape[:{lead}] + {_tup(p.out_shape)})"
        return f"{W} * {x}"

    # ---------------------------------------------------------------- stages
    def stage(self, la: ir.LLayer, src: str, lead: int) -> list[str] | str:
        op, a = la.op, la.args
        if op == "flatten":
            return f"{src}.flatten({lead})"
        if op in ("avgpool2d", "sumpool2d", "maxpool2d"):
            k, s = _tup(a["kernel"]), _tup(a["stride"])
            fn = "F.max_pool2d" if op == "maxpool2d" else "F.avg_pool2d"
            extra = ", divisor_override=1" if op == "sumpool2d" else ""
            if lead == 2:
                return f"{fn}({src}.flatten(0, 1), {k}, {s}{extra}).unflatten(0, (T, B))"
            return f"{fn}({src}, {k}, {s}{extra})"
        if op == "dropout":
            return f"F.dropout({src}, {number(float(a['p']))}, self.training)"
        if op == "batchnorm":
            pre = self.attr(la.name)
            args = (f"{pre}.running_mean, {pre}.running_var, {pre}.weight, {pre}.bias, "
                    f"self.training, {number(float(a.get('momentum', 0.1)))}, "
                    f"{number(float(a.get('eps', 1e-5)))}")
            if lead == 2:
                return (f"torch.stack([F.batch_norm(v, {args}) for v in {src}]) if self.training"
                        f" else F.batch_norm({src}.flatten(0, 1), {args}).unflatten(0, (T, B))")
            return f"F.batch_norm({src}, {args})"
        raise unsupported(self.TARGET, f"stage '{op}'", "unknown stage")

    # ---------------------------------------------------------------- forward
    def generate_forward(self) -> None:
        cons = self.consumers()
        self.cons = cons
        L = self.fwd
        for grp in self.groups():
            la = self.layers[grp[0]]
            if len(grp) == 1 and self.can_seq(la):
                self.seq_layer(la, L)
            else:
                self.step_group(grp, L)
        # outputs
        L.append("result = {}")
        for key, lst in self.plastic_records:
            L.append("if self.record_plastic:")
            L.append(f"    result[{key!r}] = torch.stack({lst})")
        for o in self.net.outputs:
            tr = self.trace(_key(o.layer, o.state, o.pre_reset))
            code = {"none": tr, "sum": f"{tr}.sum(0)", "mean": f"{tr}.mean(0)",
                    "last": f"{tr}[-1]"}[o.reduce]
            L.append(f"result[{o.name!r}] = {code}")
        L.append("self.state = {")
        for k, code in self.finals:
            L.append(f"    {k!r}: self._carry({code}),")
        L.append("}")
        L.append("return result")

    def can_seq(self, la: ir.LLayer) -> bool:
        if la.kind == "cell":
            return False
        if la.kind == "neuron":
            if any(p.recurrent or p.param_name in self.plastic for p in la.projections) or \
                    not la.neuron.states:
                return False
            n = la.neuron
            plan = make_plan(n, n.dt, n.refractory_steps,
                             set(self.tensor_params(la)), "scan")
            return analytic_size(plan) <= MAX_ANALYTIC_SIZE
        return True

    def needed(self, key: str) -> bool:
        return key in self.cons

    def header(self, la: ir.LLayer, L: list[str]) -> None:
        where = f"  (line {la.source_line})" if la.source_line else ""
        if la.kind == "neuron":
            srcs = " + ".join(f"{p.kind}({p.source}{'.' + p.source_state if p.source_state else ''}"
                              f"{', delay=' + str(p.delay) if p.delay else ''}) -> "
                              f"{p.target_input}" for p in la.projections)
            L.append(f"# layer {la.name}{list(la.shape)}: {la.neuron.name} <- {srcs or 'nothing'}"
                     f"{where}")
        elif la.kind == "input":
            L.append(f"# input {la.name}{list(la.shape)}: {la.encoder}{where}")
        elif la.kind == "projection":
            p = la.projections[0]
            f = f"{la.func}(...) of " if la.func else ""
            L.append(f"# layer {la.name}{list(la.shape)}: {f}{p.kind}({p.source}){where}")
        else:
            L.append(f"# layer {la.name}{list(la.shape)}: {la.op}({la.source}){where}")

    def seq_src(self, key: str, delay: int, L: list[str]) -> str:
        """Code of the full trace of ``key`` delayed by ``delay`` steps."""
        tr = self.trace(key)
        if delay == 0:
            return tr
        depth = max(d for _, d in self.cons[key])
        past = self.past(key, depth, L)
        self.use.add("shift")
        return f"_shift({tr}, {delay}, {past})"

    def past(self, key: str, depth: int, L: list[str], shape_of: str | None = None) -> str:
        name = self.nm(f"past:{key}", key.replace(".", "_") + "_past")
        if not hasattr(self, "_pasts"):
            self._pasts = {}
        if key not in self._pasts:
            layer = self.layers[_split_key(key)[0]]
            L.append(f"{name} = self._past({key + '@past'!r}, {depth}, (B,) + "
                     f"{_tup(layer.shape)})")
            self._pasts[key] = name
            self.use.add("shift")
            self.finals.append((key + "@past", f"_tail({self.trace(key)}, {depth}, {name})"))
        return name

    def seq_layer(self, la: ir.LLayer, L: list[str]) -> None:
        self.header(la, L)
        name = la.name
        if la.kind == "input":
            L.append(f"{self.trace(name)} = xs[{name!r}]")
            return
        if la.kind == "stage":
            src = self.seq_src(_key(la.source, la.source_state), 0, L)
            L.append(f"{self.trace(name)} = {self.stage(la, src, 2)}")
            return
        if la.kind == "projection":
            p = la.projections[0]
            src = self.seq_src(_key(p.source, p.source_state), p.delay, L)
            code = self.proj(p, src, 2)
            if la.func:
                code = self.func(la.func, code)
            L.append(f"{self.trace(name)} = {code}")
            return
        self.seq_neuron(la, L)

    def func(self, f: str, code: str) -> str:
        row = FUNCTIONS.get(f)
        if row is None or row.arity != 1 or not isinstance(row.torch_code, str):
            raise unsupported(self.TARGET, f"layer function '{f}'",
                              "only one-argument functions can wrap a projection")
        return f"{row.torch_code}({code})"

    def inputs_seq(self, la: ir.LLayer, L: list[str], ext_only: bool = False) -> dict[str, str]:
        """Sum of the projections into each neuron input, all steps at once."""
        n = la.neuron
        out = {}
        for k in n.inputs:
            terms = []
            for p in la.projections:
                if p.target_input != k or (ext_only and p.recurrent):
                    continue
                src = self.seq_src(_key(p.source, p.source_state), p.delay, L)
                terms.append(self.proj(p, src, 2))
            v = self.nm(f"input:{la.name}.{k}", f"{la.name}_{k}")
            if ext_only and not terms:
                continue
            if terms:
                L.append(f"{v} = {' + '.join(terms)}")
            else:
                L.append(f"{v} = self._like.new_zeros((T, B) + {_tup(la.shape)})")
            out[k] = v
        return out

    def tensor_params(self, la: ir.LLayer) -> dict[str, str]:
        return {p.name: self.attr(f"{la.name}.{p.name}") for p in la.neuron.params
                if p.trainable or p.per_neuron}

    def seq_neuron(self, la: ir.LLayer, L: list[str]) -> None:
        n = la.neuron
        R = n.refractory_steps
        tparams = self.tensor_params(la)
        plan = make_plan(n, n.dt, R, set(tparams), "scan")
        inputs = self.inputs_seq(la, L)
        env = dict(tparams)
        env.update(inputs)
        # hoisted: computed once / for all steps at once, with autograd
        P = TorchPrinter(env, "self._like")
        for kind, hname, e in plan.hoisted:
            v = self.nm(f"hoist:{la.name}.{hname}", f"{la.name}_{hname.lstrip('%')}")
            L.append(f"{v} = {P(e)}  # {spk(e)}")
            env[hname] = v
        shape = f"(B,) + {_tup(la.shape)}"
        inits = {}
        for s in plan.states:
            v = self.nm(f"init:{la.name}.{s}", f"{la.name}_{s}0")
            L.append(f"{v} = self._initial({la.name + '.' + s!r}, {self.value(plan.inits[s], env)}"
                     f", {shape})")
            inits[s] = v
        need_pre, need_post = set(), set()
        reset_targets = {a.target for a in plan.resets}
        for s in plan.states:
            if self.needed(_key(la.name, s, True)):
                need_pre.add(s)
                if s not in reset_targets:
                    need_post.add(s)  # its pre-reset trace is the post-reset one
            if self.needed(_key(la.name, s)):
                need_post.add(s)
        cls = f"_Scan{self.scan_count}_{la.name}"
        self.scan_count += 1
        sc = ScanGen(plan, cls, need_pre, self.compiled, need_post).generate()
        self.uses_math = self.uses_math or sc.uses_math
        self.use.add("sum_to")
        self.classes.append(self.env.get_template("scan.py.j2").render(s=sc).rstrip())
        args = ["T"]
        for kind, key in zip(sc.arg_kinds, sc.arg_keys):
            if kind in ("step", "static"):
                args.append(env[key])
            elif kind == "init":
                args.append(inits[key])
            else:
                rv = self.nm(f"init:{la.name}:r", f"{la.name}_r0")
                L.append(f"{rv} = self._initial({la.name + ':refractory'!r}, 0.0, {shape})")
                args.append(rv)
        outs = []
        for key in sc.out_keys:
            if key == "z":
                outs.append(self.trace(la.name))
            elif key == "r":
                outs.append(self.nm(f"final:{la.name}:r", f"{la.name}_r"))
            else:
                outs.append(self.nm(f"traj:{la.name}.{key}", f"{la.name}_{key.replace(':', '_')}"))
        L.append(f"{', '.join(outs)} = {cls}.apply({', '.join(args)})")
        traj = dict(zip(sc.out_keys, outs))
        for s in plan.states:
            S = traj.get(f"S:{s}")  # None: only the final state was kept
            if self.needed(_key(la.name, s)):
                L.append(f"{self.trace(_key(la.name, s))} = {S}[1:]")
            if self.needed(_key(la.name, s, True)):
                q = traj.get(f"Q:{s}")
                src = q if q is not None else (f"{S}[1:]" if s in plan.updates else f"{S}[:-1]")
                L.append(f"{self.trace(_key(la.name, s, True))} = {src}")
            final = traj[f"F:{s}"] if S is None else f"{S}[-1]"
            self.finals.append((f"{la.name}.{s}", final))
        if R > 0:
            self.finals.append((f"{la.name}:refractory", traj["r"]))

    def value(self, e: ir.Expr, env: dict[str, str]) -> str:
        if isinstance(e, ir.Num):
            return number(e.value)
        P = TorchPrinter(env, "self._like")
        code = P(e)
        self.uses_math = self.uses_math or P.uses_math
        return code

    # ---------------------------------------------------------------- step groups
    def step_group(self, grp: list[str], L: list[str]) -> None:
        inside = set(grp)
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
        lists: dict[str, str] = {}
        for key, depth in sorted(hist.items()):
            h = self.nm(f"hist:{key}", key.replace(".", "_") + "_hist")
            past = self.past(key, depth, pre)
            pre.append(f"{h} = list({past}.unbind(0))")
            lists[key] = h
        for key in export:
            if key not in lists:
                lst = self.nm(f"list:{key}", key.replace(".", "_") + "_list")
                pre.append(f"{lst} = []")
                lists[key] = lst

        def src_at(key: str, delay: int) -> str:
            layer = _split_key(key)[0]
            if layer in inside:
                if delay == 0:
                    return self.cur(key)
                off = hist[key] - delay
                return f"{lists[key]}[t + {off}]" if off else f"{lists[key]}[t]"
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
        L += pre
        L.append("for t in range(T):")
        for lines in body_layers:
            L += ["    " + x for x in lines]
        for key in export:
            lst = lists[key]
            skip = hist.get(key, 0)
            stacked = f"torch.stack({lst}[{skip}:])" if skip else f"torch.stack({lst})"
            post.append(f"{self.trace(key)} = {stacked}")
        for key in sorted(hist):
            if key not in export:
                post.append(f"{self.trace(key)} = torch.stack({lists[key]}[{hist[key]}:])")
        L += post
        for name in grp:
            la = self.layers[name]
            if la.kind in ("neuron", "cell"):
                for s in la.states:
                    self.finals.append((f"{name}.{s}", self.cur(f"{name}.{s}")))
            if la.kind == "neuron" and la.neuron.refractory_steps > 0:
                self.finals.append((f"{name}:refractory", self.nm(f"refr:{name}", f"{name}_r")))

    def neuron_step(self, la: ir.LLayer, src_at, pre: list[str], lines: list[str],
                    inside: set[str]) -> None:
        n = la.neuron
        name = la.name
        R = n.refractory_steps
        tparams = self.tensor_params(la)
        plan = make_plan(n, n.dt, R, set(tparams), "step")
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
            if terms:
                lines.append(f"{v} = {' + '.join(terms)}")
            else:
                lines.append(f"{v} = self._like.new_zeros({shape})")
            env[k] = v
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
        ref_var = None
        if R > 0:
            ref_var = self.nm(f"refr:{name}", f"{name}_r")
            pre.append(f"{ref_var} = self._initial({name + ':refractory'!r}, 0.0, {shape})")
        fn = self.spike_fn(n.surrogate, n.spike_op) if plan.spike is not None else ""
        code = step_code(plan, names_=env, state_vars=state_vars, pre_vars=pre_vars,
                         z_var=self.cur(name), ref_var=ref_var, spike_fn=fn, namer=self.nm,
                         ref_tensor="self._like", R=R)
        if plan.spike is None:
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
                pre.append(f"{xg} = F.linear({flat}, {x_in})")
                xpart = f"{xg}[t]"
            else:
                src = src_at(key, 0)
                xpart = f"F.linear({src}.flatten(1), {x_in})"
            lines.append(f"{g} = {xpart} + F.linear({mem}, {P}.weight_hh, {P}.bias_hh)")
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

    # ---------------------------------------------------------------- render
    def render(self) -> str:
        self.validate()
        self.register()
        self.generate_forward()
        net = self.net
        inputs = "{" + ", ".join(f"{la.name!r}: {_tup(la.shape)}" for la in net.inputs) + "}"
        outputs = repr(tuple(o.name for o in net.outputs))
        uses_f = any("F." in x for x in self.fwd) or any("F." in c for c in self.classes)
        enc = []
        for la in net.inputs:
            args = ", ".join(f"{k!r}: {number(v)}" for k, v in sorted(la.encoder_args.items()))
            enc.append(f"{la.name!r}: ({(la.encoder or 'direct')!r}, {{{args}}})")
        encoders = "{" + ", ".join(enc) + "}"
        kinds = {la.encoder for la in net.inputs}
        if "poisson" in kinds:
            self.use.add("poisson")
        if "latency" in kinds:
            self.use.add("latency")
        helpers = [self.env.get_template("helpers.py.j2").render(use=self.use).strip()]
        if "init" in self.use:
            helpers.append(_weights.generated_source())
            self.uses_math = True
        helpers = [h for h in helpers if h]
        extra = self.extra_helpers()
        helpers += extra
        self.fwd = prune(self.fwd)
        helpers += function_helpers("\n".join(self.classes + self.fwd + self.init))
        src_file = os.path.basename(net.file) if net.file else "<string>"
        self.uses_math = self.uses_math or any("math." in c for c in self.classes + extra) or any(
            "math." in x for x in self.fwd + self.init)
        init = list(self.init)
        code = self.env.get_template("module.py.j2").render(**self.template_vars(),
            title=f"PyTorch module for network {net.name}.",
            source=f"{src_file}:{net.source_line}" if net.source_line else src_file,
            source_name=src_file, fast=self.fast, uses_math=self.uses_math,
            dt=number(net.dt), dt_unit=net.dt_unit, steps=int(net.steps), helpers=helpers,
            classes=self.classes, cls=class_name(net.name), net_name=net.name,
            param_names=", ".join(self.params) or "none", inputs=inputs, outputs=outputs,
            encoders=encoders, init=init,
            clamp=self.clamp, forward=self.fwd, encoder_kinds=kinds, uses_f=uses_f)
        return _tidy(code)

    # ---------------------------------------------------------------- subclass hooks
    def extra_helpers(self) -> list[str]:
        """Module-level helper functions beyond helpers.py.j2."""
        return []

    def template_vars(self) -> dict:
        """Variables of module.py.j2 beyond the torch target's."""
        return {}


_KEYWORDS = set(__import__("keyword").kwlist) | {"match", "case", "_"}


def _tidy(code: str) -> str:
    lines = [ln.rstrip() for ln in code.splitlines()]
    out: list[str] = []
    blank = 0
    for ln in lines:
        if not ln:
            blank += 1
            if blank > 2:
                continue
        else:
            blank = 0
        out.append(ln)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def class_name(net_name: str) -> str:
    check_ident(net_name)
    name = net_name[0].upper() + net_name[1:]
    return name if name not in _KEYWORDS else name + "_"


# ------------------------------------------------------------------ public API
_CACHE: dict[str, str] = {}


def _generator_version() -> str:
    """Hash of this generator's sources and templates (keys the disk cache)."""
    global _GEN_VERSION
    if _GEN_VERSION is None:
        h = hashlib.sha256()
        here = os.path.dirname(os.path.abspath(__file__))
        files = [os.path.join(here, f) for f in sorted(os.listdir(here))
                 if f.endswith(".py")]
        tdir = templates_dir() / "torch"
        files += [str(tdir / f) for f in sorted(os.listdir(tdir))]
        files.append(_weights.__file__)  # the embedded initialisation
        for f in files:
            with open(f, "rb") as fh:
                h.update(fh.read())
        _GEN_VERSION = h.hexdigest()
    return _GEN_VERSION


_GEN_VERSION: str | None = None


def convert(net: ir.LNetwork, *, fast: bool = True, compile: bool = False) -> str:
    """Python source of a standalone torch module for ``net`` (deterministic:
    the same network gives byte-identical code).  Results are cached in memory
    and on disk (spikedsl.cache), so SymPy runs once per neuron."""
    from spikedsl import cache

    require(TARGET, net)
    text = net.model_dump_json(exclude={"weights"}) + f"|{fast}|{compile}|{net.weights}"
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _CACHE:
        dkey = f"{_generator_version()}|{key}"
        hit = cache.get_json("torch-src", dkey)
        if isinstance(hit, str):
            _CACHE[key] = hit
        else:
            _CACHE[key] = NetGen(net, fast=fast, compiled=compile).render()
            cache.put_json("torch-src", dkey, _CACHE[key])
    return _CACHE[key]


class _WeightsMixin:
    """Added by :func:`build`: weights files (.npz) and numpy export."""

    def load_weights(self, weights):
        if isinstance(weights, str | os.PathLike):
            import numpy as np

            path = os.fspath(weights)
            try:
                with np.load(path) as z:
                    weights = {k: np.asarray(z[k]) for k in z.files}
            except (OSError, ValueError) as e:
                raise SpecError([_diag("weights-file", path=path, reason=str(e))]) from None
        return super().load_weights(weights)


def _diag(code: str, **fields):
    from spikedsl.errors import diag

    return diag(code, None, **fields)


def build(net: ir.LNetwork, *, dtype=None, device="cpu", fast: bool = True,
          compile: bool = False, weights=None, seed: int = 0):
    """Execute the generated source and instantiate the module.

    ``weights``: a dict name -> array or a ``.npz`` path (after ``net.weights``,
    which is loaded first when set).  ``compile=True`` wraps the forward and
    backward scans with ``torch.compile``.
    """
    import torch

    dtype = _torch_dtype(dtype) if dtype is not None else torch.float32
    src = convert(net, fast=fast, compile=compile)
    cls = _load_class(src, net.name)
    Built = type(cls.__name__, (_WeightsMixin, cls), {"source": src})
    m = Built(seed=seed, dtype=dtype)
    m.to(device=device)
    if net.weights:
        m.load_weights(net.weights)
    if weights is not None:
        m.load_weights(weights)
    if compile:
        _compile_scans(m)
    return m


_CLASSES: dict[str, type] = {}


def _load_class(src: str, net_name: str, label: str = "torch"):
    key = hashlib.sha256(src.encode()).hexdigest()
    if key not in _CLASSES:
        filename = f"<spikedsl-{label} {net_name} {key[:10]}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        ns: dict = {"__name__": f"spikedsl_generated_{net_name}"}
        exec(builtins.compile(src, filename, "exec"), ns)
        _CLASSES[key] = ns[class_name(net_name)]
        _CLASSES[key]._spikedsl_namespace = ns
    return _CLASSES[key]


def _compile_scans(m) -> None:
    """torch.compile the layer scans' forward and backward (fused kernels)."""
    ns = type(m)._spikedsl_namespace
    for k, v in list(ns.items()):
        if k.startswith("_Scan") and not getattr(v, "_spikedsl_compiled", False):
            import torch

            fwd = torch.compile(v.forward.__func__ if hasattr(v.forward, "__func__") else
                                v.forward, dynamic=False)
            v._spikedsl_compiled = True
            del fwd


def _torch_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    import numpy as np

    return {np.dtype("float64"): torch.float64, np.dtype("float32"): torch.float32,
            np.dtype("float16"): torch.float16}[np.dtype(dtype)]


def _record_net(net: ir.LNetwork, record) -> ir.LNetwork:
    outs = list(net.outputs)
    have = {o.name for o in outs if o.reduce == "none"}
    for key in record or ():
        if key in have:
            continue
        layer, state, pre = _split_key(key)
        if layer not in {la.name for la in net.layers}:
            raise KeyError(f"network '{net.name}' has no layer '{layer}'")
        lay = net.layer(layer)
        if state is not None and state not in lay.states:
            raise KeyError(f"layer '{layer}' has no state '{state}' "
                           f"(states: {', '.join(lay.states) or 'none'})")
        outs.append(ir.LOutput(name=key, layer=layer, state=state, pre_reset=pre,
                               shape=lay.shape))
        have.add(key)
    return net.model_copy(update={"outputs": tuple(outs)})


def check(net: ir.LNetwork, *, fast: bool = True, compile: bool = False, **_options) -> None:
    """The torch part of ``spikedsl.targets.refusal`` (raises ``Unsupported``)."""
    NetGen(net, fast=fast, compiled=compile).validate()


def run(net: ir.LNetwork, inputs, *, weights=None, dtype=None, record: list[str] | None = None,
        fast: bool = True, seed: int = 0, device=None) -> dict:
    """One forward pass without gradients; numpy in, numpy out.

    ``inputs``: a dict input name -> array (or one array for a single input),
    ``[T, B, ...]`` (already encoded) or ``[B, ...]`` (encoded here like
    :func:`spikedsl.runtime.reference.encode` does, so every target sees the same
    spikes).  ``record``: traces to return besides the outputs (``"h"``,
    ``"h.v"``, ``"h.v_pre"``), each ``[T, B, ...]``.
    """
    return run_module(net, inputs, lambda n, **kw: build(n, fast=fast, **kw), weights=weights,
                      dtype=dtype, record=record, seed=seed, device=device)


def run_module(net: ir.LNetwork, inputs, make, *, weights=None, dtype=None,
               record: list[str] | None = None, seed: int = 0, device=None) -> dict:
    """:func:`run` with the module built by ``make(net, dtype=, weights=, seed=,
    device=)`` (the Norse target's ``run`` passes its own ``build``)."""
    import numpy as np
    import torch

    tdtype = _torch_dtype(dtype) if dtype is not None else torch.float64
    plastic = {f"{lp.projection}.weight" for lp in net.plasticity}
    net2 = _record_net(net, [k for k in record or () if k not in plastic])
    m = make(net2, dtype=tdtype, weights=weights, seed=seed,
             device="cpu" if device is None else str(device))
    m.eval()
    m.record_plastic = any(k in plastic for k in record or ())
    if not isinstance(inputs, Mapping):
        if len(net.inputs) != 1:
            raise ValueError(f"network '{net.name}' has {len(net.inputs)} inputs; pass a dict")
        inputs = {net.inputs[0].name: inputs}
    data = {}
    npdt = np.float64 if tdtype == torch.float64 else np.float32
    for lay in net.inputs:
        if lay.name not in inputs:
            raise ValueError(f"missing input '{lay.name}'")
        x = inputs[lay.name]
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=npdt)
        if x.ndim == len(lay.shape) + 1 and lay.encoder != "direct":
            try:
                from spikedsl.runtime import reference

                x = reference.encode(lay, x, net.steps, dtype=npdt)
            except ImportError:  # pragma: no cover - the reference ships with spikedsl
                pass
        data[lay.name] = torch.as_tensor(np.ascontiguousarray(x), device=device)
    with torch.no_grad():
        out = m(data)
    keep = {o.name for o in net2.outputs} | (set(record or ()) & plastic)
    return {k: v.detach().cpu().numpy() for k, v in out.items() if k in keep}
