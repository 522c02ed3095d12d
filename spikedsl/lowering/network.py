"""Resolve and check a ``network`` block, infer shapes, and lower it to
``ir.LNetwork`` (concrete shapes, parameter values, topological order)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from spikedsl import ir
from spikedsl.errors import Collector
from spikedsl.ir.exprs import EvalError, evaluate
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.units import TIME, parse_unit
from spikedsl.lowering.neuron import (
    SingularExact,
    lower_neuron,
    lower_synapse,
    param_values,
    place,
)
from spikedsl.lowering.tables import CELLS, ENCODERS, NET_SETTINGS, PROJECTIONS, REDUCTIONS, STAGES
from spikedsl.lowering.weights import resolve_projection


@dataclass
class Scope:
    neurons: dict[str, ir.Neuron]
    synapses: dict[str, ir.Synapse]
    dims: dict[str, dict[str, str]] = field(default_factory=dict)  # neuron -> dims
    bad_neurons: set[str] = field(default_factory=set)  # neurons with errors (no cascades)


def _num(e: ir.Expr, env=None) -> float | None:
    try:
        return evaluate(e, env or {})
    except EvalError:
        return None


def _kw_table(call: ir.Call, spec: dict, what: str, errors: Collector, positional=()):
    """Validate keyword arguments against ``spec``; returns name -> Expr."""
    out: dict[str, ir.Expr] = {}
    for name, a in zip(positional, call.args[1:]):
        out[name] = a
    if len(call.args) - 1 > len(positional):
        extra = call.args[1 + len(positional)]
        errors.add("bad-argument", extra.loc, what=what,
                   reason="too many positional arguments")
    for k in call.kwargs:
        if k.name not in spec:
            errors.add("unknown-argument", k.loc, what=what, name=k.name,
                       known=", ".join(spec) or "none")
        else:
            out[k.name] = k.value
    return out


def _int(e: ir.Expr, what: str, errors: Collector, positive=True) -> int | None:
    v = _num(e)
    if v is None or v != int(v) or (positive and v <= 0) or v < 0:
        errors.add("bad-argument", e.loc, what=what,
                   reason="expected a positive integer" if positive else "expected an integer")
        return None
    return int(v)


def _bool(e: ir.Expr, what: str, errors: Collector) -> bool | None:
    if isinstance(e, ir.Name) and e.id in ("true", "false"):
        return e.id == "true"
    v = _num(e)
    if v in (0.0, 1.0):
        return bool(v)
    errors.add("bad-argument", e.loc, what=what, reason="expected true or false")
    return None


def _pair(v: int | tuple) -> tuple[int, int]:
    return v if isinstance(v, tuple) else (v, v)


def conv_out(shape, channels, k, s, p) -> tuple[int, ...] | None:
    if len(shape) != 3:
        return None
    _, h, w = shape
    ho = (h + 2 * p[0] - k[0]) // s[0] + 1
    wo = (w + 2 * p[1] - k[1]) // s[1] + 1
    if ho <= 0 or wo <= 0:
        return None
    return (channels, ho, wo)


class NetworkLowering:
    def __init__(self, net: ir.Network, scope: Scope, errors: Collector, base_dir: str):
        self.net, self.scope, self.errors, self.base_dir = net, scope, errors, base_dir
        self.layers: dict[str, ir.LLayer] = {}
        self.order: list[str] = []
        self.decl_index: dict[str, int] = {}
        self.failed: set[str] = set()  # layers whose errors were reported (no cascades)
        self.dt = 1.0
        self.dt_unit: str | None = None

    # -------------------------------------------------------------- settings
    def settings(self) -> tuple[int, str | None]:
        seen: dict[str, ir.Setting] = {}
        steps, weights = 1, None
        for s in self.net.settings:
            if s.name in seen:
                self.errors.add("duplicate-setting", s.loc, name=s.name)
                continue
            seen[s.name] = s
            if s.name == "dt":
                v = _num(s.value)
                if v is None or v <= 0:
                    self.errors.add("bad-setting", s.value.loc, name="dt",
                                    reason="expected a positive duration")
                    if isinstance(s.value, ir.Num) and s.value.unit:
                        self.dt_unit = s.value.unit  # one error: not also "dt needs a unit"
                    continue
                self.dt = v
                if isinstance(s.value, ir.Num) and s.value.unit:
                    if parse_unit(s.value.unit)[1] != TIME:
                        self.errors.add("dim-time", s.value.loc, what="dt", got=s.value.unit)
                    self.dt_unit = s.value.unit
            elif s.name == "steps":
                v = _num(s.value)
                if v is None or v != int(v) or v <= 0:
                    self.errors.add("steps-positive", s.value.loc)
                else:
                    steps = int(v)
            elif s.name == "weights":
                if not isinstance(s.value, ir.Str):
                    self.errors.add("bad-setting", s.value.loc, name="weights",
                                    reason='expected a file name in quotes')
                else:
                    weights = os.path.normpath(os.path.join(self.base_dir, s.value.value))
            elif s.name == "seed":
                pass
            else:
                self.errors.add("unknown-setting", s.loc, name=s.name,
                                block=f"network '{self.net.name}'", known=", ".join(NET_SETTINGS))
        if "steps" not in seen:
            self.errors.add("missing-setting", self.net.loc, block="network", name=self.net.name,
                            setting="steps")
        return steps, weights

    # -------------------------------------------------------------- inputs
    def input(self, inp: ir.NetInput) -> None:
        for d in inp.shape:
            if d <= 0:
                self.errors.add("bad-shape", inp.loc, value=d)
                self.failed.add(inp.name)
                return
        enc = inp.encoder
        name = enc.func if isinstance(enc, ir.Call) else enc.id if isinstance(enc, ir.Name) else None
        if name not in ENCODERS:
            self.errors.add("unknown-encoder", enc.loc, name=name or "?",
                            known=", ".join(ENCODERS))
            self.failed.add(inp.name)
            args = {}
        else:
            args = dict(ENCODERS[name])
            if isinstance(enc, ir.Call):
                if enc.args:
                    self.errors.add("bad-argument", enc.args[0].loc, what=f"encoder {name}",
                                    reason="arguments are named, e.g. max_rate = 1.0")
                for k in enc.kwargs:
                    if k.name not in ENCODERS[name]:
                        self.errors.add("unknown-argument", k.loc, what=f"encoder {name}",
                                        name=k.name, known=", ".join(ENCODERS[name]) or "none")
                        continue
                    v = _num(k.value)
                    if v is None:
                        self.errors.add("not-a-number", k.value.loc, what=k.name)
                        continue
                    if name == "latency" and k.name == "tau" and isinstance(k.value, ir.Num) \
                            and k.value.unit:
                        v = v / self.dt  # a duration: expressed in steps
                    args[k.name] = v
        self.layers[inp.name] = ir.LLayer(name=inp.name, kind="input", shape=inp.shape,
                                          encoder=name, encoder_args=args,
                                          source_line=inp.loc.line if inp.loc else 0)
        self.order.append(inp.name)

    def _fail(self, layer: str, code: str, loc, /, **kw) -> None:
        """Report ``code`` at ``loc`` and mark ``layer`` as failed."""
        self.errors.add(code, loc, **kw)
        self.failed.add(layer)

    # -------------------------------------------------------------- sources
    def source(self, e: ir.Expr, layer_name: str, what: str):
        """-> (name, state, shape, recurrent) or None (reported)."""
        if isinstance(e, ir.Name):
            name, state = e.id, None
        elif isinstance(e, ir.Attr):
            name, state = e.obj, e.attr
        else:
            self.errors.add("bad-argument", e.loc, what=what,
                            reason="the first argument must be a layer or input")
            return None
        if name not in self.decl_index:
            self.errors.add("unknown-source", e.loc, name=name, network=self.net.name)
            return None
        if name in self.failed:
            return None
        recurrent = self.decl_index[name] >= self.decl_index[layer_name]
        if recurrent:
            return name, state, None, True  # shape checked after all layers are known
        src = self.layers[name]
        if state is not None:
            base = state.removesuffix("_pre")
            if base not in src.states:
                self.errors.add("unknown-source-state", e.loc, layer=name, name=state,
                                states=", ".join(src.states) or "none")
                return None
        return name, state, src.shape, False

    # -------------------------------------------------------------- projections
    def weight_dim_ok(self, call: ir.Call, n: ir.Neuron, target: str,
                      dims: dict[str, str]) -> bool:
        """A fixed weight (``sparse``, ``one_to_one``) has the dimension of the
        neuron input it feeds: ``weight = 1.62 mV`` into ``input Ie : mV``."""
        if call.func not in ("sparse", "one_to_one"):
            return True
        from spikedsl.checks.neuron import Dims
        from spikedsl.ir.units import ONE, dim_str, parse_dim

        want = parse_dim(dims[target]) if target in dims else ONE
        w = call.kw("weight")
        got = ONE if w is None else Dims({}, {}, Collector())(w)
        if got is None or got == want:
            return True
        unit = next((i.unit for i in n.inputs if i.name == target), None)
        self.errors.add("weight-dim", (w or call).loc, got=dim_str(got), input=target,
                        neuron=n.name, want=dim_str(want),
                        example=f"{unit}" if unit else "a plain number")
        return False

    def projection(self, call: ir.Call, layer_name: str, out_shape, target_input: str,
                   param_name: str, stateless=False):
        kind = call.func
        what = kind
        if not call.args:
            self.errors.add("missing-argument", call.loc, what=kind, name="source")
            return None
        src = self.source(call.args[0], layer_name, what)
        if src is None:
            return None
        sname, sstate, in_shape, recurrent = src
        if stateless and recurrent:
            self.errors.add("stage-recurrent", call.args[0].loc, name=layer_name, src=sname)
            return None
        kw = _kw_table(call, PROJECTIONS[kind], what, self.errors)
        f: dict = {}
        if "delay" in kw:
            d = _num(kw["delay"])
            if d is None or d < 0:
                self.errors.add("bad-argument", kw["delay"].loc, what=what,
                                reason="delay must be a non-negative number of steps")
                return None
            if isinstance(kw["delay"], ir.Num) and kw["delay"].unit:
                d = math.ceil(d / self.dt - 1e-9)
            f["delay"] = int(d)
        if "bias" in kw:
            b = _bool(kw["bias"], what, self.errors)
            if b is None:
                return None
            f["bias"] = b
        elif kind in ("dense", "conv2d"):
            f["bias"] = True
        if "sign" in kw:
            s = kw["sign"]
            if not (isinstance(s, ir.Name) and s.id in ("excitatory", "inhibitory")):
                self.errors.add("bad-argument", s.loc, what=what,
                                reason="sign is excitatory or inhibitory")
                return None
            f["sign"] = s.id
        if "seed" in kw:
            v = _int(kw["seed"], what, self.errors, positive=False)
            if v is None:
                return None
            f["seed"] = v
        if "init" in kw:
            ini = kw["init"]
            iname = ini.func if isinstance(ini, ir.Call) else getattr(ini, "id", None)
            known = {"kaiming": 0, "xavier": 0, "normal": 1, "uniform": 2, "default": 0,
                     "zeros": 0}
            if iname not in known:
                self.errors.add("unknown-option", ini.loc, what="initialiser", name=iname or "?",
                                known=", ".join(known))
                return None
            args = ini.args if isinstance(ini, ir.Call) else ()
            vals = [_num(a) for a in args]
            if len(vals) != known[iname] or any(v is None for v in vals):
                self.errors.add("wrong-arity", ini.loc, name=iname, expected=known[iname],
                                got=len(vals))
                return None
            f["init"], f["init_args"] = iname, tuple(vals)
        for key in ("p", "weight"):
            if key in kw:
                v = _num(kw[key])
                if v is None:
                    self.errors.add("not-a-number", kw[key].loc, what=key)
                    return None
                f[key] = v
        if kind == "sparse" and not 0 <= f.get("p", 0.1) <= 1:
            self.errors.add("bad-argument", kw["p"].loc, what=what, reason="p must be in [0, 1]")
            return None
        if kind == "conv2d":
            for req in ("channels", "kernel"):
                if req not in kw:
                    self.errors.add("missing-argument", call.loc, what="conv2d", name=req)
                    return None
            ch = _int(kw["channels"], what, self.errors)
            k = self._int_or_pair(kw["kernel"], what)
            st = self._int_or_pair(kw["stride"], what) if "stride" in kw else (1, 1)
            pd = self._int_or_pair(kw["padding"], what, positive=False) if "padding" in kw \
                else (0, 0)
            if None in (ch, k, st, pd):
                return None
            f.update(channels=ch, kernel=k, stride=st, padding=pd)
        return dict(kind=kind, source=sname, source_state=sstate, recurrent=recurrent,
                    in_shape=in_shape, out_shape=out_shape, target_input=target_input,
                    param_name=param_name, loc=call.loc, **f)

    def _int_or_pair(self, e: ir.Expr, what: str, positive=True):
        if isinstance(e, ir.ListExpr):
            vals = [_int(i, what, self.errors, positive) for i in e.items]
            if len(vals) != 2 or None in vals:
                return None
            return (vals[0], vals[1])
        v = _int(e, what, self.errors, positive)
        return None if v is None else (v, v)

    def finish_projection(self, d: dict, layer_shape) -> ir.LProjection | None:
        """Shapes: fill in_shape for recurrent sources, infer/check out_shape."""
        if d["in_shape"] is None:
            src = self.layers.get(d["source"])
            if src is None:
                return None
            if d["source_state"] is not None:
                base = d["source_state"].removesuffix("_pre")
                if base not in src.states:
                    self.errors.add("unknown-source-state", d["loc"], layer=d["source"],
                                    name=d["source_state"], states=", ".join(src.states))
                    return None
            d["in_shape"] = src.shape
        kind, ins = d["kind"], d["in_shape"]
        if kind == "conv2d":
            out = conv_out(ins, d["channels"], d["kernel"], d["stride"], d["padding"])
            if out is None:
                self.errors.add("shape-invalid", d["loc"],
                                what=f"conv2d needs a [C, H, W] source larger than its kernel, "
                                     f"got {list(ins)}")
                return None
            if layer_shape is not None and tuple(layer_shape) != out:
                self.errors.add("shape-mismatch", d["loc"], what="conv2d output vs layer",
                                left=list(out), right=list(layer_shape))
                return None
            d["out_shape"] = out
        elif kind == "one_to_one":
            if layer_shape is not None and math.prod(ins) != math.prod(layer_shape):
                self.errors.add("shape-mismatch", d["loc"], what="one_to_one source vs layer",
                                left=list(ins), right=list(layer_shape))
                return None
            d["out_shape"] = tuple(layer_shape) if layer_shape is not None else tuple(ins)
        else:
            if layer_shape is None:
                return None
            d["out_shape"] = tuple(layer_shape)
        loc = d.pop("loc")
        d["source_line"] = loc.line if loc else 0
        if d["recurrent"]:
            d["delay"] = max(d.get("delay", 0), 1)
        return resolve_projection(ir.LProjection(**d))

    # -------------------------------------------------------------- layers
    def layer(self, lay: ir.Layer) -> None:
        name = lay.name
        shape = lay.shape
        if shape is not None and any(d <= 0 for d in shape):
            return self._fail(name, "bad-shape", lay.loc, value=min(shape))
        body = lay.body
        func = body.func if isinstance(body, ir.Call) else body.id if isinstance(
            body, ir.Name) else None
        line = lay.loc.line if lay.loc else 0
        if func in self.scope.neurons:
            self.neuron_layer(lay, func, body)
            return
        if lay.projections:
            return self._fail(name, "unknown-neuron", body.loc, name=func or "?",
                              hint=self._neuron_hint(func))
        wrapper = None
        if isinstance(body, ir.Call) and body.func in FUNCTIONS and len(body.args) == 1 and \
                isinstance(body.args[0], ir.Call) and body.args[0].func in PROJECTIONS:
            wrapper, body = body.func, body.args[0]
            func = body.func
        if func in PROJECTIONS:
            d = self.projection(body, name, shape, "I", name, stateless=True)
            if d is None:
                self.failed.add(name)
                return
            p = self.finish_projection(d, shape)
            if p is None:
                if shape is None and func not in ("conv2d", "one_to_one"):
                    self.errors.add("shape-missing", lay.loc, name=name)
                self.failed.add(name)
                return
            self.layers[name] = ir.LLayer(name=name, kind="projection", shape=p.out_shape,
                                          projections=(p,), func=wrapper, source_line=line)
            self.order.append(name)
            return
        if func in STAGES or func in CELLS:
            src = self.stateless_source(lay, body)
            if src is not None:
                (self.stage if func in STAGES else self.cell)(lay, body, *src)
            return
        self.errors.add("unknown-neuron", body.loc, name=func or "?", hint=self._neuron_hint(func))
        self.failed.add(name)

    def _neuron_hint(self, func) -> str:
        import difflib

        options = sorted(set(self.scope.neurons) | set(STAGES) | set(CELLS) | set(PROJECTIONS))
        close = difflib.get_close_matches(func or "", options, n=1)
        return f"did you mean '{close[0]}'?" if close else "define it with 'neuron " + (
            func or "Name") + " { ... }'"

    def neuron_layer(self, lay: ir.Layer, nname: str, body: ir.Expr) -> None:
        name = lay.name
        n = self.scope.neurons[nname]
        if nname in self.scope.bad_neurons:
            self.failed.add(name)
            return
        from spikedsl.checks.neuron import neuron_overrides, rule_ranges

        overrides, override_nodes = {}, {}
        if isinstance(body, ir.Call):
            overrides, override_nodes = neuron_overrides(n, nname, body, self.errors, _num,
                                                         none="none")
        # range check of overrides
        try:
            env = param_values(n.params, overrides)
        except EvalError:
            env = {}
        before = len(self.errors.diagnostics)
        rule_ranges(n, env, self.errors, override_nodes)
        if len(self.errors.diagnostics) > before:
            self.failed.add(name)
            return
        if lay.shape is None and not any(
                isinstance(p.call, ir.Call) and p.call.func in ("conv2d",)
                for p in lay.projections):
            return self._fail(name, "shape-missing", lay.loc, name=name)
        dims = self.scope.dims.get(nname, {})
        if any(d != "1" for d in dims.values()) and self.dt_unit is None:
            return self._fail(name, "dim-dt", body.loc, neuron=nname)
        try:
            lowered = lower_neuron(n, overrides, dims)
        except SingularExact as e:
            return self._fail(name, "exact-singular", body.loc, neuron=nname, param=e.param)
        if lay.projections and not n.inputs:
            return self._fail(name, "no-input", lay.projections[0].loc, neuron=nname)
        inputs = {i.name for i in n.inputs}
        projs = []
        multi = len(lay.projections) > 1
        counts: dict[str, int] = {}
        for p in lay.projections:
            call = p.call
            if call.func not in PROJECTIONS:
                self.errors.add("unknown-projection", call.loc, name=call.func,
                                known=", ".join(PROJECTIONS))
                continue
            target = p.target_input or (n.inputs[0].name if n.inputs else "I")
            if target not in inputs:
                self.errors.add("unknown-target-input", p.loc, neuron=nname, name=target,
                                inputs=", ".join(sorted(inputs)))
                continue
            src_name = call.args[0].id if call.args and isinstance(call.args[0], ir.Name) else (
                f"{call.args[0].obj}_{call.args[0].attr}" if call.args and isinstance(
                    call.args[0], ir.Attr) else "src")
            counts[src_name] = counts.get(src_name, 0) + 1
            pname = name if not multi else f"{name}.{src_name}" + (
                f"_{counts[src_name]}" if counts[src_name] > 1 else "")
            if not self.weight_dim_ok(call, n, target, dims):
                continue
            d = self.projection(call, name, lay.shape, target, pname)
            if d is not None:
                projs.append(d)
        self.pending.append((name, projs, lay.shape))
        if len(projs) < len(lay.projections):
            self.failed_projection.add(name)
        self.layers[name] = ir.LLayer(
            name=name, kind="neuron", shape=tuple(lay.shape) if lay.shape else (0,),
            neuron=lowered, states=tuple(lowered.state_names), source_line=lay.loc.line if
            lay.loc else 0)
        # conv-fed neuron layers without a shape: infer now from feed-forward projections
        if lay.shape is None:
            for d in projs:
                if d["kind"] == "conv2d" and d["in_shape"] is not None:
                    out = conv_out(d["in_shape"], d["channels"], d["kernel"], d["stride"],
                                   d["padding"])
                    if out is not None:
                        self.layers[name] = self.layers[name].model_copy(update={"shape": out})
                        self.pending[-1] = (name, projs, out)
                    break
        self.order.append(name)

    def stateless_source(self, lay: ir.Layer, call: ir.Call):
        """The (feed-forward) source of a stage or cell, or None (reported)."""
        name, kind = lay.name, call.func
        if not call.args:
            return self._fail(name, "missing-argument", call.loc, what=kind, name="source")
        src = self.source(call.args[0], name, kind)
        if src is None:
            self.failed.add(name)
            return None
        if src[3]:
            return self._fail(name, "stage-recurrent", call.args[0].loc, name=name, src=src[0])
        return src[:3]

    def _add_stateless(self, lay: ir.Layer, kind: str, out: tuple, **fields) -> None:
        """Add a stage or cell layer of output shape ``out`` (checked against the
        declared shape)."""
        if lay.shape is not None and tuple(lay.shape) != out:
            return self._fail(lay.name, "shape-mismatch", lay.loc,
                              what=f"{fields['op']} output vs declared shape",
                              left=list(out), right=list(lay.shape))
        self.layers[lay.name] = ir.LLayer(name=lay.name, kind=kind, shape=out,
                                          source_line=lay.loc.line if lay.loc else 0, **fields)
        self.order.append(lay.name)

    def stage(self, lay: ir.Layer, call: ir.Call, sname: str, sstate: str | None,
              in_shape: tuple) -> None:
        name, kind = lay.name, call.func
        pos = ("kernel",) if kind.endswith("pool2d") else ("p",) if kind == "dropout" else ()
        kw = _kw_table(call, STAGES[kind], kind, self.errors, positional=pos)
        args: dict = {}
        if kind.endswith("pool2d"):
            if "kernel" not in kw:
                return self._fail(name, "missing-argument", call.loc, what=kind, name="kernel")
            k = self._int_or_pair(kw["kernel"], kind)
            s = self._int_or_pair(kw["stride"], kind) if "stride" in kw else k
            if k is None or s is None:
                self.failed.add(name)
                return
            if len(in_shape) != 3:
                return self._fail(name, "shape-invalid", call.loc,
                                  what=f"{kind} needs a [C, H, W] source, got {list(in_shape)}")
            c, h, w = in_shape
            out = (c, (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)
            if out[1] <= 0 or out[2] <= 0:
                return self._fail(name, "shape-invalid", call.loc,
                                  what=f"{kind} kernel {list(k)} is larger than {list(in_shape)}")
            args = {"kernel": k, "stride": s}
        elif kind == "flatten":
            out = (math.prod(in_shape),)
        else:
            out = tuple(in_shape)
            for key, default in STAGES[kind].items():
                if key == "per_step":  # batchnorm: statistics and affine per time step
                    v = _bool(kw[key], f"{kind} {key}", self.errors) if key in kw else default
                    if v is None:
                        self.failed.add(name)
                        return
                    args[key] = v
                    continue
                v = _num(kw[key]) if key in kw else default
                if v is None:
                    return self._fail(name, "not-a-number", kw[key].loc, what=key)
                args[key] = v
            if kind == "dropout" and not 0 <= args["p"] < 1:
                self.errors.add("bad-argument", kw["p"].loc, what=kind,
                                reason="p must be in [0, 1)")
                self.failed.add(name)
                return
        self._add_stateless(lay, "stage", out, op=kind, source=sname, source_state=sstate,
                            args=args)

    def cell(self, lay: ir.Layer, call: ir.Call, sname: str, sstate: str | None,
             in_shape: tuple) -> None:
        name, kind = lay.name, call.func
        kw = _kw_table(call, CELLS[kind], kind, self.errors)
        need = ("hidden",) if kind == "slstm" else ("channels", "kernel")
        for r in need:
            if r not in kw:
                return self._fail(name, "missing-argument", call.loc, what=kind, name=r)
        args: dict = {}
        for r in need:
            v = _int(kw[r], kind, self.errors)
            if v is None:
                self.failed.add(name)
                return
            args[r] = v
        args["threshold"] = _num(kw["threshold"]) if "threshold" in kw else 1.0
        if kind == "slstm":
            out = (args["hidden"],)
            args["in_features"] = math.prod(in_shape)
        else:
            if len(in_shape) != 3:
                return self._fail(
                    name, "shape-invalid", call.loc,
                    what=f"sconv_lstm needs a [C, H, W] source, got {list(in_shape)}")
            out = (args["channels"], in_shape[1], in_shape[2])
            args["in_channels"] = in_shape[0]
        self._add_stateless(lay, "cell", out, op=kind, source=sname, source_state=sstate,
                            args=args, states=("syn", "mem"))

    # -------------------------------------------------------------- outputs
    def output(self, o: ir.Output) -> ir.LOutput | None:
        e, reduce = o.expr, "none"
        if isinstance(e, ir.Call):
            if e.func not in REDUCTIONS or len(e.args) != 1 or e.kwargs:
                self.errors.add("unknown-reduction", e.loc, name=e.func)
                return None
            reduce, e = e.func, e.args[0]
        if isinstance(e, ir.Name):
            lname, state = e.id, None
        elif isinstance(e, ir.Attr):
            lname, state = e.obj, e.attr
        else:
            self.errors.add("output-unknown", e.loc, name="?")
            return None
        if lname not in self.decl_index:
            self.errors.add("output-unknown", e.loc, name=lname)
            return None
        if lname not in self.layers:
            return None
        lay = self.layers[lname]
        pre = False
        if state is not None:
            base = state
            if state.endswith("_pre"):
                base, pre = state[:-4], True
            if base not in lay.states:
                self.errors.add("unknown-source-state", e.loc, layer=lname, name=state,
                                states=", ".join(lay.states) or "none")
                return None
            state = base
        label = f"{lname}.{state}{'_pre' if pre else ''}" if state else lname
        if reduce != "none":
            label = f"{reduce}({label})"
        return ir.LOutput(name=label, layer=lname, state=state, pre_reset=pre, reduce=reduce,
                          shape=lay.shape)

    # -------------------------------------------------------------- plasticity
    def plasticity(self, p: ir.Plasticity) -> ir.LPlasticity | None:
        rule = p.rule.func
        if rule not in self.scope.synapses:
            self.errors.add("unknown-rule", p.rule.loc, name=rule)
            return None
        lay = self.layers.get(p.target)
        proj = None
        if lay is not None:
            for q in lay.projections:
                if q.source == p.source:
                    proj = q
                    break
        if proj is None:
            if p.target in self.failed or p.source in self.failed:
                return None
            self.errors.add("unknown-projection-ref", p.loc, src=p.source, dst=p.target)
            return None
        syn = self.scope.synapses[rule]
        overrides = {}
        pnames = {q.name for q in syn.params}
        for k in p.rule.kwargs:
            if k.name not in pnames:
                self.errors.add("unknown-override", k.loc, neuron=rule, name=k.name,
                                params=", ".join(sorted(pnames)))
                continue
            v = _num(k.value)
            if v is None:
                self.errors.add("not-a-number", k.value.loc, what=k.name)
                continue
            overrides[k.name] = v
        ls = lower_synapse(syn, overrides, self.scope.dims.get(f"synapse:{rule}", {}))
        return ir.LPlasticity(rule=place(ls, self.dt, self.dt_unit), source=p.source, target=p.target,
                              projection=proj.param_name)

    # -------------------------------------------------------------- driver
    def placed(self, la: ir.LLayer) -> ir.LLayer:
        """A neuron layer with its neuron placed (dt, the refractory period as
        statements): its traces are the placed neuron's states."""
        n = place(la.neuron, self.dt, self.dt_unit)
        return la.model_copy(update={"neuron": n, "states": tuple(n.state_names)})

    def run(self) -> ir.LNetwork | None:
        net = self.net
        before = len(self.errors.diagnostics)
        self.pending: list = []
        self.failed_projection: set[str] = set()
        self.layer_locs = {la.name: la.loc for la in net.layers}
        steps, weights = self.settings()
        seen: dict[str, ir.Node] = {}
        idx = 0
        for item in list(net.inputs) + list(net.layers):
            if item.name in seen:
                first = seen[item.name].loc
                self.errors.add("duplicate-name", item.loc, name=item.name,
                                first_line=first.line if first else 0)
                continue
            seen[item.name] = item
            self.decl_index[item.name] = idx
            idx += 1
        for inp in net.inputs:
            if self.decl_index.get(inp.name) is not None and inp.name not in self.layers:
                self.input(inp)
        done = set()
        for lay in net.layers:
            if lay.name in done or seen.get(lay.name) is not lay:
                continue
            done.add(lay.name)
            self.layer(lay)
        # finish neuron-layer projections (recurrent sources now known)
        for name, projs, shape in self.pending:
            lay = self.layers[name]
            out = []
            for d in projs:
                p = self.finish_projection(dict(d), lay.shape if lay.shape != (0,) else None)
                if p is not None:
                    out.append(p)
            if lay.shape == (0,):
                if name not in self.failed_projection:
                    self.errors.add("shape-missing", self.layer_locs.get(name), name=name)
                continue
            self.layers[name] = lay.model_copy(update={"projections": tuple(out)})
        outputs = [o for o in (self.output(o) for o in net.outputs) if o is not None]
        if not net.outputs:
            self.errors.add("no-output", net.loc, name=net.name)
        if not net.layers:
            self.errors.add("no-layers", net.loc, name=net.name)
        plast = [p for p in (self.plasticity(p) for p in net.plasticity) if p is not None]
        if weights is not None and not os.path.exists(weights):
            ws = next(s for s in net.settings if s.name == "weights")
            self.errors.add("weights-missing", ws.value.loc, path=weights)
        if len(self.errors.diagnostics) > before:
            return None
        # declaration order is a topological order of feed-forward edges
        layers = tuple(self.layers[n] for n in self.order)
        layers = tuple(self.placed(la) if la.neuron is not None else la for la in layers)
        return ir.LNetwork(name=net.name, dt=self.dt, dt_unit=self.dt_unit, steps=steps,
                           layers=layers, outputs=tuple(outputs), plasticity=tuple(plast),
                           weights=weights, file=net.loc.file if net.loc else "",
                           source_line=net.loc.line if net.loc else 0)


def lower_network(net: ir.Network, scope: Scope, errors: Collector,
                  base_dir: str) -> ir.LNetwork | None:
    return NetworkLowering(net, scope, errors, base_dir).run()
