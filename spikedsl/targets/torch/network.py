"""The generator of the torch target: one standalone module per network
(layout in ``targets/torch/*.j2``; this module decides what goes where).
Layers outside recurrent loops run all steps at once (fused neuron scans,
:mod:`spikedsl.targets.torch.scan`); recurrent groups, cells and plastic
layers run step by step (:mod:`spikedsl.targets.torch.step`).
"""

from __future__ import annotations

import json
import os
import re

from spikedsl import ir
from spikedsl.errors import name_loc, unsupported
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.lowering import weights as _weights
from spikedsl.resources import templates_dir
from spikedsl.targets.torch.expr import (
    Namer,
    TorchPrinter,
    check_ident,
    function_helpers,
    number,
    prune,
    spk,
)
from spikedsl.targets.torch.keys import key as _key
from spikedsl.targets.torch.keys import prod as _prod
from spikedsl.targets.torch.keys import split_key as _split_key
from spikedsl.targets.torch.keys import tup as _tup
from spikedsl.targets.torch.neuron import (
    MAX_ANALYTIC_SIZE,
    analytic_size,
    make_plan,
    surrogate_code,
    surrogate_doc,
)
from spikedsl.targets.torch.norm import per_step_batchnorm
from spikedsl.targets.torch.params import draws, register_layer
from spikedsl.targets.torch.scan import ScanGen
from spikedsl.targets.torch.step import StepMixin

TARGET = "torch"
STEP_CHUNK_ELEMENTS = 1 << 20  # chunked forward: elements of the widest layer per chunk

# rows x density above which a sparse projection runs as one dense product
# (measured with benchmarks/bench_sparse.py; docs/torch.md, "Sparse projections")
SPARSE_DENSE_ABOVE = 4.0

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
    "carry_grad", "reset_state", "clamp_parameters", "load_weights", "export_weights", "encode",
    "source", "sparse_dense_above",
}
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_.()#\-]+$")




def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / "torch")),
                              keep_trailing_newline=True, trim_blocks=False,
                              lstrip_blocks=False, undefined=jinja2.StrictUndefined,
                              autoescape=False)


class NetGen(StepMixin):
    """Generates the module of one network (the Norse target subclasses it)."""

    NAME = "torch"  # in spikedsl.targets
    TARGET = TARGET  # in messages

    def __init__(self, net: ir.LNetwork, fast: bool, compiled: bool):
        self.net = net
        self.fast = fast
        self.compiled = compiled
        self.layers = {la.name: la for la in net.layers}
        self.index = {la.name: i for i, la in enumerate(net.layers)}
        self.nm = Namer(["xs", "T", "B", "t", "inputs", "out", "g", "result", "n", "t0", "t1",
                         "k", "chunk", "chunks"])
        self.T = "T"  # the number of steps the layer code runs (n: a chunk of steps)
        self.carry: list[str] | None = None  # chunked: the states carried between chunks
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
        self.sparse: dict[str, tuple[int, int]] = {}  # event-driven sparse weights -> (out, in)
        self.sparse_setup: dict[str, tuple[str, str]] = {}  # param name -> (local, code)
        self.on_cache: dict[str, str] | None = None  # source code -> its _active(...) local
        self.group_on: dict[str, str] = {}
        self.on_pending: list[str] = []
        # event-driven projections of one source and delay in a step group, run as one
        self.fans: dict[str, list[ir.LProjection]] = {}  # param name -> the fan's members
        self.fan_out: dict[str, str] = {}  # param name -> its output local
        self.fan_setup: list[str] = []
        self.reduced: dict[str, tuple[str | None, str]] = {}  # key -> (sum local, last value)

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        from spikedsl.targets import require

        net = self.net
        require(self.NAME, net)  # the declared capabilities (spikedsl.targets)
        for la in net.layers:
            check_ident(la.name)
            if la.name in _MODULE_ATTRS or la.name.startswith("_"):
                # the layer's parameters are the attributes LAYER.weight ... of the module
                # (their names are the weights-file names), so the layer cannot be renamed
                raise unsupported(self.TARGET, f"layer name '{la.name}'",
                                  "it clashes with an attribute of torch.nn.Module or of the "
                                  "generated class; rename the layer",
                                  name_loc(net.file, la.source_line, la.name))
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
        if p.kind == "sparse" and pn not in self.plastic:
            # index lists grouped by presynaptic neuron (no (out, in) matrix)
            n_out, n_in = _prod(p.out_shape), _prod(p.in_shape)
            w = number(p.weight if p.weight is not None else 1.0)
            syn = self.nm.fresh(f"{pn.replace('.', '_')}_synapses")
            self.init.append(f"{syn} = _synapses(mask_pairs({int(p.seed)}, {number(p.p)}, "
                             f"{n_out}, {n_in}), {n_out}, {n_in})")
            self.param(f"{pn}.weight", f"torch.full(({syn}[2],), {w}, dtype=torch.float64)",
                       buffer=True)
            holder = self.attr(pn)
            self.init.append(f'{holder}.register_buffer("_post", {syn}[0], persistent=False)')
            self.init.append(f'{holder}.register_buffer("_syn", {syn}[1], persistent=False)')
            self.init.append(f"{holder}.dense_shape = ({n_out}, {n_in})")
            self.sparse[f"{pn}.weight"] = (n_out, n_in)
            self.use.add("sparse")
        elif p.kind == "sparse":
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
            if f"{p.param_name}.weight" in self.sparse:
                y = self.sparse_code(p, x, lead)
            else:
                self.use.add("linear")
                y = f"_linear({x}, {W}{b})"
            if len(p.out_shape) > 1:
                y = f"{y}.unflatten({lead}, {_tup(p.out_shape)})"
            return y
        if p.kind == "conv2d":
            args = f"{W}{b}, stride={_tup(p.stride)}, padding={_tup(p.padding)}"
            if lead == 2:
                return f"F.conv2d({src}.flatten(0, 1), {args}).unflatten(0, ({self.T}, B))"
            return f"F.conv2d({src}, {args})"
        # one_to_one
        x = src
        if tuple(p.in_shape) != tuple(p.out_shape):
            x = f"{src}.reshape({src}.shape[:{lead}] + {_tup(p.out_shape)})"
        return f"{W} * {x}"

    def sparse_code(self, p: ir.LProjection, x: str, lead: int) -> str:
        """``_sparse(...)`` of a sparse projection of ``x``; inside a neuron step the
        nonzero entries of each source are found once (``self.on_cache``)."""
        args = [x, self.sparse_weights(p, lead)]
        if self.on_cache is not None:
            if x not in self.on_cache:
                var = self.nm.fresh(f"{p.source}_on")
                self.on_cache[x] = var
                self.on_pending.append(f"{var} = _active({x})")
            args.append(self.on_cache[x])
        src = self.layers[p.source]
        spikes = p.source_state is None and src.kind == "neuron"  # 0 or 1
        if spikes:
            args += ([] if len(args) == 3 else ["None"]) + ["True"]
        members = self.fans.get(p.param_name) if self.on_cache is not None else None
        if members:  # several projections of this source: one _events for all
            if p.param_name not in self.fan_out:
                ws = [self.sparse_weights(q, 1) for q in members]
                fw = self.nm.fresh(f"{p.source}_fan_w")
                self.fan_setup.append(f"{fw} = _sparse_join({', '.join(ws)})")
                ys = [self.nm.fresh(f"{q.param_name.replace('.', '_')}_y") for q in members]
                self.on_pending.append(f"{', '.join(ys)} = _sparse_fan({x}, {fw}, {args[2]}"
                                       f"{', True' if spikes else ''})")
                self.fan_out.update({q.param_name: y for q, y in zip(members, ys)})
            return self.fan_out[p.param_name]
        return f"_sparse({', '.join(args)})"

    def sparse_weights(self, p: ir.LProjection, lead: int) -> str:
        """The local holding a sparse projection's weights for this call
        (dense or event-driven, chosen once per forward call)."""
        pn = p.param_name
        if pn not in self.sparse_setup:
            var = self.nm(f"sparse:{pn}", f"{pn.replace('.', '_')}_w")
            rows = "B" if lead == 1 else "T * B"
            self.sparse_setup[pn] = (var, f"{var} = _sparse_weights({self.weight(p)}, "
                                          f"{self.attr(pn)}, {rows}, self.sparse_dense_above)")
        return self.sparse_setup[pn][0]

    # ---------------------------------------------------------------- stages
    def stage(self, la: ir.LLayer, src: str, lead: int) -> list[str] | str:
        op, a = la.op, la.args
        if op == "flatten":
            return f"{src}.flatten({lead})"
        if op in ("avgpool2d", "sumpool2d", "maxpool2d"):
            k, s = _tup(a["kernel"]), _tup(a["stride"])
            if op == "maxpool2d" and k == s == "(2, 2)":
                self.use.add("maxpool2")
                if lead == 2:
                    return f"_MaxPool2.apply({src}.flatten(0, 1)).unflatten(0, ({self.T}, B))"
                return f"_MaxPool2.apply({src})"
            fn = "F.max_pool2d" if op == "maxpool2d" else "F.avg_pool2d"
            extra = ", divisor_override=1" if op == "sumpool2d" else ""
            if lead == 2:
                return (f"{fn}({src}.flatten(0, 1), {k}, {s}{extra})"
                        f".unflatten(0, ({self.T}, B))")
            return f"{fn}({src}, {k}, {s}{extra})"
        if op == "dropout":
            return f"F.dropout({src}, {number(float(a['p']))}, self.training)"
        if op == "batchnorm" and a.get("per_step"):
            return per_step_batchnorm(self, la, src, lead)
        if op == "batchnorm":
            pre = self.attr(la.name)
            args = (f"{pre}.running_mean, {pre}.running_var, {pre}.weight, {pre}.bias, "
                    f"self.training, {number(float(a.get('momentum', 0.1)))}, "
                    f"{number(float(a.get('eps', 1e-5)))}")
            if lead == 2:
                return (f"torch.stack([F.batch_norm(v, {args}) for v in {src}]) if self.training"
                        f" else F.batch_norm({src}.flatten(0, 1), {args}).unflatten(0, "
                        f"({self.T}, B))")
            return f"F.batch_norm({src}, {args})"
        raise unsupported(self.TARGET, f"stage '{op}'", "unknown stage")

    # ---------------------------------------------------------------- forward
    def generate_forward(self) -> None:
        cons = self.consumers()
        self.cons = cons
        L = self.fwd
        groups = self.groups()
        if self.chunkable(groups) and not self.sparse:  # event-driven sparse: one pass
            self.chunked_forward(groups, L)
        else:
            for grp in groups:
                la = self.layers[grp[0]]
                if len(grp) == 1 and self.can_seq(la):
                    self.seq_layer(la, L)
                else:
                    self.step_group(grp, L)
        L[0:0] = [code for _, code in self.sparse_setup.values()] + self.fan_setup
        # outputs
        L.append("result = {}")
        for key, lst in self.plastic_records:
            L.append("if self.record_plastic:")
            L.append(f"    result[{key!r}] = torch.stack({lst})")
        for o in self.net.outputs:
            k = _key(o.layer, o.state, o.pre_reset)
            if k in self.reduced:  # accumulated step by step
                acc, last = self.reduced[k]
                code = {"sum": acc, "mean": f"{acc} / T", "last": last}[o.reduce]
                L.append(f"result[{o.name!r}] = {code}")
                continue
            tr = self.trace(k)
            code = {"none": tr, "sum": f"{tr}.sum(0)", "mean": f"{tr}.mean(0)",
                    "last": f"{tr}[-1]"}[o.reduce]
            L.append(f"result[{o.name!r}] = {code}")
        L.append("self.state = {")
        for k, code in self.finals:
            L.append(f"    {k!r}: self._carry({code}),")
        L.append("}")
        L.append("return result")

    def chunkable(self, groups: list[list[str]]) -> bool:
        """A feed-forward network (every layer all steps at once, no delays, no
        plasticity) with at least one fused scan runs chunk by chunk of steps."""
        if not self.fast or self.plastic:
            return False
        if any(len(g) > 1 or not self.can_seq(self.layers[g[0]]) for g in groups):
            return False
        if any(p.delay for la in self.net.layers for p in la.projections):
            return False
        return any(la.kind == "neuron" for la in self.net.layers)

    def chunked_forward(self, groups: list[list[str]], L: list[str]) -> None:
        """The layers run on chunks of steps small enough that no tensor of a
        chunk is large (large tensors cost page faults on every allocation); the
        neuron states are carried from one chunk to the next (with their
        gradients), the outputs are concatenated."""
        widest = max([_prod(la.shape) for la in self.net.layers if la.kind != "input"] or [1])
        self.T = "n"
        self.carry = []
        body: list[str] = []
        for grp in groups:
            self.seq_layer(self.layers[grp[0]], body)
        keys = []
        for o in self.net.outputs:
            key = _key(o.layer, o.state, o.pre_reset)
            if key not in keys:
                keys.append(key)
        parts = {k: self.nm(f"parts:{k}", self.trace(k) + "_parts") for k in keys}
        L += self.carry
        L.append("# the layers run chunk by chunk of steps: the tensors of one chunk stay small")
        L.append(f"chunk = max(1, min(T, {STEP_CHUNK_ELEMENTS} // max(1, B * {widest})))")
        L.append("chunks = -(-T // chunk)")
        for k in keys:
            L.append(f"{parts[k]} = []")
        L.append("t1 = 0")
        L.append("for k in range(chunks):")
        L.append("    # lengths differ by at most 1, longer first: the allocator reuses the blocks")
        L.append("    t0, t1 = t1, ((k + 1) * T + chunks - 1) // chunks")
        L.append("    n = t1 - t0")
        L += ["    " + x for x in body]
        for k in keys:
            L.append(f"    {parts[k]}.append({self.trace(k)})")
        for k in keys:
            p = parts[k]
            L.append(f"{self.trace(k)} = {p}[0] if len({p}) == 1 else torch.cat({p})")

    def can_seq(self, la: ir.LLayer) -> bool:
        if la.kind == "cell":
            return False
        if la.kind == "neuron":
            if any(p.recurrent or p.param_name in self.plastic for p in la.projections) or \
                    not la.neuron.states:
                return False
            n = la.neuron
            plan = make_plan(n, n.dt, set(self.tensor_params(la)), "scan")
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
            L.append(f"{self.trace(name)} = xs[{name!r}]" +
                     ("[t0:t1]" if self.carry is not None else ""))
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
            raise unsupported(self.TARGET, f"layer function '{f}'", "only one-argument functions "
                                                               "can wrap a projection")
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
                L.append(f"{v} = self._like.new_zeros(({self.T}, B) + {_tup(la.shape)})")
            out[k] = v
        return out

    def tensor_params(self, la: ir.LLayer) -> dict[str, str]:
        return {p.name: self.attr(f"{la.name}.{p.name}") for p in la.neuron.params
                if p.trainable or p.per_neuron}

    def seq_neuron(self, la: ir.LLayer, L: list[str]) -> None:
        n = la.neuron
        tparams = self.tensor_params(la)
        plan = make_plan(n, n.dt, set(tparams), "scan")
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
        pre = L if self.carry is None else self.carry  # chunked: before the first chunk
        for s in plan.states:
            v = self.nm(f"init:{la.name}.{s}", f"{la.name}_{s}0")
            pre.append(f"{v} = self._initial({la.name + '.' + s!r}, "
                       f"{self.value(plan.inits[s], env)}, {shape})")
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
        args = [self.T]
        for kind, key in zip(sc.arg_kinds, sc.arg_keys):
            args.append(inits[key] if kind == "init" else env[key])
        outs = []
        for key in sc.out_keys:
            if key == "z":
                outs.append(self.trace(la.name))
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
            if self.carry is not None:  # the next chunk starts from here
                L.append(f"{inits[s]} = {final}")

    def value(self, e: ir.Expr, env: dict[str, str]) -> str:
        if isinstance(e, ir.Num):
            return number(e.value)
        P = TorchPrinter(env, "self._like")
        code = P(e)
        self.uses_math = self.uses_math or P.uses_math
        return code

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
        helpers = [self.env.get_template("helpers.py.j2").render(
            use=self.use, sparse_dense_above=number(SPARSE_DENSE_ABOVE)).strip()]
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
        if self.sparse:
            init.append("self.sparse_dense_above = SPARSE_DENSE_ABOVE")
        code = self.env.get_template("module.py.j2").render(**self.template_vars(),
            title=f"PyTorch module for network {net.name}.",
            source=f"{src_file}:{net.source_line}" if net.source_line else src_file,
            source_name=src_file, fast=self.fast, uses_math=self.uses_math,
            dt=number(net.dt), dt_unit=net.dt_unit, steps=int(net.steps), helpers=helpers,
            classes=self.classes, cls=class_name(net.name), net_name=net.name,
            param_names=", ".join(self.params) or "none", inputs=inputs, outputs=outputs,
            encoders=encoders, init=init, sparse=self.sparse,
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


