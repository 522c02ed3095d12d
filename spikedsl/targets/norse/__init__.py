"""Norse target (docs/norse.md).

    src = convert(net)                    # Python source using Norse cells
    m = build(net, dtype=torch.float64)   # nn.Module: forward(x) -> dict of outputs

A neuron layer runs as a Norse cell (``LIFBoxCell``, ``IAFCell``,
``LIBoxCell``, ``LIFCell``, ``LICell``, or ``LIBoxCell`` -> ``LIFBoxCell``)
only where one step of the cell equals the lowered step of the neuron
(``targets.norse.match.match_norse``, compared symbolically); otherwise the target
refuses and names the term that differs.  The cells' parameters are computed in
``forward()`` from the spikedsl parameters (same names as the torch target's
state_dict), so trainable parameters get the same gradients.  Projections,
stages, delays and outputs follow docs/semantics.md in plain torch.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import linecache
import math
import os

from spikedsl import ir
from spikedsl.errors import Loc, unsupported
from spikedsl.ir.exprs import from_sympy
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.lowering import weights as _weights
from spikedsl.resources import templates_dir
from spikedsl.targets.nir.match import analyse
from spikedsl.targets.norse.match import NorseNeuron, match_norse
from spikedsl.targets.torch.expr import TorchPrinter, function_helpers
from spikedsl.targets.torch.params import draws, register_layer

TARGET = "Norse"
__all__ = ["TARGET", "build", "convert", "plan", "run"]

_CELL_CLASS = {"LIFBox": "LIFBoxCell", "IAF": "IAFCell", "LIBox": "LIBoxCell", "LIF": "LIFCell",
               "LI": "LICell", "SynLIFBox": "LIFBoxCell", "SynLIBox": "LIBoxCell"}
_RESERVED = {"norse", "torch", "F", "math", "numpy", "DT", "STEPS"}
_MODULE_ATTRS: frozenset = frozenset(dir(__import__("types").SimpleNamespace)) | frozenset({
    "forward", "state_dict", "load_state_dict", "parameters", "buffers", "children",
    "modules", "train", "eval", "training", "to", "cpu", "cuda", "double", "float", "half",
    "type", "apply", "zero_grad", "steps", "dt", "inputs", "outputs", "encoders",
    "reset_state", "clamp_parameters", "load_weights", "export_weights", "source", "_cells",
    "_like", "_t", "_inputs", "add_module", "register_buffer", "register_parameter"})


def _num(v: float) -> str:
    v = float(v)
    if math.isinf(v):
        return "math.inf" if v > 0 else "-math.inf"
    return repr(v)


def _tup(shape) -> str:
    shape = tuple(int(s) for s in shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


def _attr(path: str) -> str:
    code = "self"
    for part in path.split("."):
        code = f'getattr({code}, "{part}")' if keyword.iskeyword(part) else f"{code}.{part}"
    return code


class _TorchPrinter(TorchPrinter):
    """The torch target's printer over names of the module (``ren``)."""

    def __init__(self, ren: dict[str, str]):
        super().__init__({}, "self._like")
        self.ren = ren

    def name(self, n: str) -> str:
        return self.ren.get(n, n)


class NorsePlan:
    """Everything the template needs, computed from the lowered network."""

    def __init__(self, net: ir.LNetwork, allow_approx: bool = False,
                 forward_only: bool = False):
        self.net = net
        self.allow_approx = allow_approx
        self.forward_only = forward_only
        self.notes: list[str] = []
        self.neurons: dict[str, NorseNeuron] = {}
        self.init: list[str] = []
        self.clamp: list[str] = []
        self.params: list[str] = []
        self.holders: set[str] = set()
        self.uses_init = False
        self.uses_below = False
        self.resets: set[str] = set()
        self.cells: list[tuple[str, str]] = []

    def loc(self, line: int) -> Loc | None:
        return Loc(self.net.file, line, 1) if line else None

    # ---------------------------------------------------------------- parameters
    def holder(self, path: str) -> None:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in self.holders:
                self.holders.add(sub)
                parent = _attr(".".join(parts[:i - 1])) if i > 1 else "self"
                self.init.append(f'{parent}.add_module("{parts[i - 1]}", torch.nn.Module())')

    def param(self, name: str, code: str, buffer: bool = False) -> None:
        path, _, leaf = name.rpartition(".")
        self.holder(path)
        if buffer:
            self.init.append(f'{_attr(path)}.register_buffer("{leaf}", {code})')
        else:
            self.init.append(f'{_attr(path)}.register_parameter("{leaf}", '
                             f"torch.nn.Parameter({code}))")
        self.params.append(name)

    def register(self) -> None:
        """Parameters with the torch target's names, shapes, order and initialisation
        (spikedsl.lowering.weights, whose drawing code is embedded in the module)."""
        arrays = _weights.arrays(self.net)
        self.uses_init = draws(arrays, self.net)
        for la in self.net.layers:
            for p in la.projections:
                self.register_projection(p)
            self.clamp += register_layer(la, arrays, self.param, _attr, _num)

    def register_projection(self, p: ir.LProjection) -> None:
        """The fixed weights of sparse / one_to_one projections (buffers)."""
        pn = p.param_name
        if p.kind == "sparse":
            n_out, n_in = math.prod(p.out_shape), math.prod(p.in_shape)
            w = _num(p.weight if p.weight is not None else 1.0)
            self.param(f"{pn}.weight", f"_tensor(mask_values({int(p.seed)}, {_num(p.p)}, "
                       f"{n_out * n_in}), ({n_out}, {n_in})) * {w}", buffer=True)
        elif p.kind == "one_to_one":
            w = _num(p.weight if p.weight is not None else 1.0)
            self.param(f"{pn}.weight", f"torch.tensor({w}, dtype=torch.float64)", buffer=True)

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        net = self.net
        if net.plasticity:
            p = net.plasticity[0]
            raise unsupported(TARGET, f"plasticity '{p.rule.name}'",
                              "the Norse target has no learning rules (use the torch target)",
                              self.loc(net.source_line))
        for la in net.layers:
            if la.name in _MODULE_ATTRS or la.name in _RESERVED or la.name.startswith("_"):
                raise unsupported(TARGET, f"layer '{la.name}'",
                                  "the name clashes with an attribute of the generated module",
                                  self.loc(la.source_line))
            if la.kind == "cell":
                raise unsupported(TARGET, f"layer '{la.name}' ({la.op})",
                                  "Norse has no spiking LSTM cell (use the torch target)",
                                  self.loc(la.source_line))
        for o in net.outputs:
            if not all(ch.isalnum() or ch in "_.()" for ch in o.name):
                raise unsupported(TARGET, f"output '{o.name}'", "unexpected characters",
                                  self.loc(net.source_line))

    # ---------------------------------------------------------------- neurons
    def match(self) -> None:
        dt_cell = self.net.dt if self.net.dt_unit else 1.0
        self.dt_cell = dt_cell
        for la in self.net.layers:
            if la.kind != "neuron":
                continue
            n = la.neuron
            params = {p.name: p.value for p in n.params}
            an = analyse(la, params, n.dt, TARGET, self.net.file)
            nn = match_norse(an, dt_cell, self.allow_approx, self.forward_only)
            self.notes.extend(nn.notes)
            self.neurons[la.name] = nn

    def expr(self, la: ir.LLayer, e, need_tensor: bool = False) -> str:
        """A SymPy expression of the neuron's parameters -> torch code."""
        import sympy as sp

        n = la.neuron
        live = {p.name for p in n.params if p.trainable or p.per_neuron}
        const = {sp.Symbol(p.name, real=True): sp.Float(p.value) for p in n.params
                 if p.name not in live}
        e = sp.sympify(e).subs(const)
        if e.is_number:
            v = float(e)
            return f"self._t({_num(v)})" if need_tensor else _num(v)
        ren = {p: _attr(f"{la.name}.{p}") for p in live}
        code = _TorchPrinter(ren)(from_sympy(sp.simplify(e)))
        return code

    # ---------------------------------------------------------------- forward
    def render(self, env) -> str:
        self.validate()
        self.register()
        self.match()
        net = self.net
        layers = {la.name: la for la in net.layers}
        cells = env.get_template("cells.j2").module
        V = {la.name: f"L_{la.name}" for la in net.layers}

        def key_var(layer: str, state: str | None) -> str:
            if state is None:
                return V[layer]
            return f"{V[layer]}__{state}"

        # which traces are read, and how far back
        need: dict[str, int] = {}
        delayed: set = set()

        def want(layer, state, delay):
            k = (layer, state)
            need[k] = max(need.get(k, 0), delay)
            if 0 < delay < 10**9:
                delayed.add(k)

        for la in net.layers:
            for p in la.projections:
                want(p.source, p.source_state, p.delay)
            if la.source is not None:
                want(la.source, la.source_state, 0)
        for o in net.outputs:
            st = None if o.state is None else o.state + ("_pre" if o.pre_reset else "")
            want(o.layer, st, 10**9)  # the whole trace
        hist = {k for k, d in need.items() if d > 0}
        prologue: list[str] = []
        step: list[str] = []
        order = {la.name: i for i, la in enumerate(net.layers)}
        hist_sorted = sorted(hist, key=lambda k: (order[k[0]], k[1] or ""))
        for (layer, st) in hist_sorted:
            lay = layers[layer]
            prologue.append(f"{key_var(layer, st)}_hist = []")
            if (layer, st) in delayed:
                prologue.append(f"{key_var(layer, st)}_zeros = self._like.new_zeros((B,) + "
                                f"{_tup(lay.shape)})")

        def read(layer: str, st: str | None, delay: int) -> str:
            v = key_var(layer, st)
            if delay == 0:
                return v
            return f"_at({v}_hist, t - {delay}, {v}_zeros)"

        def weight(p: ir.LProjection) -> str:
            w = _attr(f"{p.param_name}.weight")
            if p.sign == "excitatory":
                return f"{w}.abs()"
            if p.sign == "inhibitory":
                return f"-{w}.abs()"
            return w

        def proj(p: ir.LProjection) -> str:
            src = read(p.source, p.source_state, p.delay)
            W = weight(p)
            b = f", {_attr(p.param_name + '.bias')}" if p.bias and p.kind in (
                "dense", "conv2d") else ""
            if p.kind in ("dense", "sparse"):
                x = src if len(p.in_shape) == 1 else f"{src}.flatten(1)"
                y = f"F.linear({x}, {W}{b})"
                if len(p.out_shape) > 1:
                    y = f"{y}.unflatten(1, {_tup(p.out_shape)})"
                return y
            if p.kind == "conv2d":
                return (f"F.conv2d({src}, {W}{b}, stride={_tup(p.stride)}, "
                        f"padding={_tup(p.padding)})")
            x = src
            if tuple(p.in_shape) != tuple(p.out_shape):
                x = f"{src}.reshape((B,) + {_tup(p.out_shape)})"
            return f"{W} * {x}"

        for la in net.layers:
            name, v = la.name, V[la.name]
            if la.kind == "input":
                step.append(f"{v} = xs[{name!r}][t]")
            elif la.kind == "stage":
                src = read(la.source, la.source_state, 0)
                a = la.args
                if la.op == "flatten":
                    code = f"{src}.flatten(1)"
                elif la.op in ("avgpool2d", "sumpool2d", "maxpool2d"):
                    k, s = _tup(a["kernel"]), _tup(a["stride"])
                    fn = "F.max_pool2d" if la.op == "maxpool2d" else "F.avg_pool2d"
                    extra = ", divisor_override=1" if la.op == "sumpool2d" else ""
                    code = f"{fn}({src}, {k}, {s}{extra})"
                elif la.op == "dropout":
                    code = f"F.dropout({src}, {_num(float(a['p']))}, self.training)"
                elif la.op == "batchnorm":
                    pre = _attr(name)
                    code = (f"F.batch_norm({src}, {pre}.running_mean, {pre}.running_var, "
                            f"{pre}.weight, {pre}.bias, self.training, "
                            f"{_num(float(a.get('momentum', 0.1)))}, "
                            f"{_num(float(a.get('eps', 1e-5)))})")
                else:
                    raise unsupported(TARGET, f"stage '{la.op}'", "unknown stage",
                                      self.loc(la.source_line))
                step.append(f"# layer {name}: {la.op}  (line {la.source_line})")
                step.append(f"{v} = {code}")
            elif la.kind == "projection":
                code = proj(la.projections[0])
                if la.func:
                    row = FUNCTIONS.get(la.func)
                    code = f"{row.torch_code}({code})" if row is not None and row.arity == 1 \
                        and isinstance(row.torch_code, str) else None
                    if code is None:
                        raise unsupported(TARGET, f"layer '{name}'",
                                          f"unknown function '{la.func}'",
                                          self.loc(la.source_line))
                step.append(f"# layer {name}: {la.projections[0].kind}  (line {la.source_line})")
                step.append(f"{v} = {code}")
            else:
                self.neuron_code(la, v, cells, prologue, step, proj, need)
            for (layer, st) in hist_sorted:
                if layer == name:
                    step.append(f"{key_var(layer, st)}_hist.append({key_var(layer, st)})")
        epilogue = []
        for o in net.outputs:
            st = None if o.state is None else o.state + ("_pre" if o.pre_reset else "")
            y = f"torch.stack({key_var(o.layer, st)}_hist)"
            if o.reduce == "sum":
                y += ".sum(0)"
            elif o.reduce == "mean":
                y += ".mean(0)"
            elif o.reduce == "last":
                y += "[-1]"
            epilogue.append(f"result[{o.name!r}] = {y}")
        src_file = os.path.basename(net.file) if net.file else "<string>"
        inputs = "{" + ", ".join(f"{la.name!r}: {_tup(la.shape)}" for la in net.inputs) + "}"
        outputs = repr(tuple(o.name for o in net.outputs))
        enc = []
        for la in net.inputs:
            args = ", ".join(f"{k!r}: {_num(x)}" for k, x in sorted(la.encoder_args.items()))
            enc.append(f"{la.name!r}: ({(la.encoder or 'direct')!r}, {{{args}}})")
        kinds = sorted({c for _, c in self.cells})
        helpers = function_helpers("\n".join(self.init + prologue + step + epilogue))
        return env.get_template("module.py.j2").render(helpers=helpers,
            net_name=net.name, source=f"{src_file}:{net.source_line}" if net.source_line
            else src_file, source_name=src_file, cells=", ".join(kinds) or "none",
            dt=_num(net.dt), dt_unit=net.dt_unit, steps=int(net.steps),
            init_block=_weights.generated_source() if self.uses_init else "",
            uses_below=self.uses_below,
            resets=sorted(self.resets), cls=class_name(net.name),
            param_names=", ".join(self.params) or "none", inputs=inputs, outputs=outputs,
            encoders="{" + ", ".join(enc) + "}", init=self.init, clamp=self.clamp,
            cell_modules=self.cells, prologue=prologue, step=step, epilogue=epilogue)

    def neuron_code(self, la, v, cells, prologue, step, proj, need) -> None:
        nn = self.neurons[la.name]
        n = la.neuron
        c = f'self._cells["{la.name}"]'
        self.cells.append((la.name, _CELL_CLASS[nn.kind]))
        if nn.kind.startswith("Syn"):
            self.cells.append((f"{la.name}_syn", "LIBoxCell"))
        P = {}
        for k, e in nn.p.items():
            if k in ("scale", "mid_scale"):
                continue
            P[k] = self.expr(la, e, need_tensor=(k == "v_th" and nn.ge))
        spike = {"method": repr(nn.method), "alpha": _num(nn.alpha), "reset": "norse.reset_value"}
        if nn.spiking:
            if nn.ge:
                self.uses_below = True
                P["v_th"] = f"_below({P['v_th']})"
            th = self.expr(la, nn.p["v_th"])
            if nn.reset == "subtract":
                fn = "_subtract_detached" if nn.detach else "_subtract"
                self.resets.add(fn)
                spike["reset"] = f"{fn}({th})"
            elif nn.detach:
                self.resets.add("_reset_value_detached")
                spike["reset"] = "_reset_value_detached"
            else:
                spike["reset"] = "norse.reset_value"
        prologue.append(f"# layer {la.name}: {n.name} -> Norse {_CELL_CLASS[nn.kind]}"
                        f"{' (synapse: LIBoxCell)' if nn.kind.startswith('Syn') else ''}"
                        f"  (line {la.source_line})")
        cs = f'self._cells["{la.name}_syn"]'
        prologue.extend(str(cells.params(nn.kind, v, c, cs, P, spike)).strip().splitlines())
        # the input scale (and the current scale of the composite cells)
        scale = self.expr(la, nn.p["scale"])
        mid = ""
        if "mid_scale" in nn.p:
            m = self.expr(la, nn.p["mid_scale"])
            if m != "1.0":
                prologue.append(f"{v}_mid = {m}")
                mid = f"{v}_mid * "
        if scale != "1.0":
            prologue.append(f"{v}_scale = {scale}")
        # initial states
        from spikedsl.ir.exprs import to_sympy

        shape = _tup(la.shape)
        inits = {s.name: s.init for s in n.states}

        def init_code(state):
            e = to_sympy(inits[state], {})
            return f"self._like.new_zeros((B,) + {shape}) + {self.expr(la, e)}"

        v0 = init_code(nn.v)
        i0 = init_code(nn.syn) if nn.syn else None
        prologue.extend(str(cells.state(nn.kind, v, v0, i0)).strip().splitlines())
        # one step
        terms = [proj(p) for p in la.projections]
        step.append(f"# layer {la.name}[{', '.join(map(str, la.shape))}]: {n.name} -> "
                    f"{_CELL_CLASS[nn.kind]}  (line {la.source_line})")
        if terms:
            step.append(f"{v}_I = " + " + ".join(terms))
            x = f"{v}_scale * {v}_I" if scale != "1.0" else f"{v}_I"
        else:
            x = f"self._like.new_zeros((B,) + {shape})"
        pre = any(st == f"{nn.v}_pre" for (lyr, st) in need if lyr == la.name)
        step.extend(str(cells.step(nn.kind, v, c, cs, x, pre, mid)).strip().splitlines())
        if not nn.spiking:
            step.append(f"{v}_z = torch.zeros_like({v}__v)")
        # spikes and traces under the names the rest of the forward reads
        step.append(f"{v} = {v}_z")
        for (lyr, st) in sorted((k for k in need if k[0] == la.name and k[1]),
                                key=lambda k: k[1]):
            pre_ = st.endswith("_pre")
            base = st[:-4] if pre_ else st
            if base == nn.v:
                generic = "v_pre" if pre_ else "v"
            elif base == nn.syn:
                generic = "syn"  # the current is not reset: pre = post
            else:  # pragma: no cover - states are v and syn only
                continue
            if st != generic:
                step.append(f"{v}__{st} = {v}__{generic}")


def class_name(net_name: str) -> str:
    name = net_name
    if keyword.iskeyword(name) or name in _RESERVED or hasattr(builtins, name):
        name += "_"
    return name


_CACHE: dict[str, str] = {}


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir() / "norse")),
                              keep_trailing_newline=True, trim_blocks=False,
                              lstrip_blocks=False, undefined=jinja2.StrictUndefined)


def plan(net: ir.LNetwork, allow_approx: bool = False) -> NorsePlan:
    """Match every neuron (raises ``Unsupported``); the plan lists the notes."""
    p = NorsePlan(net, allow_approx)
    p.validate()
    p.match()
    return p


def convert(net: ir.LNetwork, *, allow_approx: bool = False, forward_only: bool = False) -> str:
    """Python source of a module built from Norse cells (deterministic).

    ``allow_approx``: a surrogate without a Norse counterpart becomes 'super'
    (noted); ``forward_only``: the same without a note, for modules that are only
    run forward (``run()``), where the surrogate plays no part."""
    key = hashlib.sha256((net.model_dump_json() + f"|{allow_approx}|{forward_only}").encode()
                         ).hexdigest()
    if key not in _CACHE:
        code = NorsePlan(net, allow_approx, forward_only).render(_env())
        lines = [ln.rstrip() for ln in code.splitlines()]
        out, blank = [], 0
        for ln in lines:
            blank = blank + 1 if not ln else 0
            if blank <= 2:
                out.append(ln)
        _CACHE[key] = "\n".join(out).rstrip() + "\n"
    return _CACHE[key]


_CLASSES: dict[str, type] = {}


def _load_class(src: str, net_name: str):
    key = hashlib.sha256(src.encode()).hexdigest()
    if key not in _CLASSES:
        filename = f"<spikedsl-norse {net_name} {key[:10]}>"
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        ns: dict = {"__name__": f"spikedsl_norse_{net_name}"}
        exec(builtins.compile(src, filename, "exec"), ns)
        _CLASSES[key] = ns[class_name(net_name)]
    return _CLASSES[key]


def build(net: ir.LNetwork, *, dtype=None, device="cpu", weights=None, seed: int = 0,
          allow_approx: bool = False, forward_only: bool = False):
    """Execute the generated source and instantiate the module; loads
    ``net.weights`` and then ``weights`` (dict, ``.npz`` or torch checkpoint)."""
    import torch

    dtype = dtype or torch.float32
    src = convert(net, allow_approx=allow_approx, forward_only=forward_only)
    cls = _load_class(src, net.name)
    m = cls(seed=seed, dtype=dtype)
    m.source = src
    m.to(device=device)
    if net.weights:
        m.load_weights(_weights.load_weights(net, net.weights))
    if weights is not None:
        m.load_weights(_weights.load_weights(net, weights))
    return m


def run(net: ir.LNetwork, inputs, *, weights=None, dtype=None, record: list[str] | None = None,
        seed: int = 0) -> dict:
    """One forward pass without gradients; numpy in, numpy out (as the torch
    target's ``run``).  Without gradients the surrogate plays no part, so any
    surrogate is accepted here (``forward_only``)."""
    import numpy as np
    import torch

    if dtype is None:
        dtype = torch.float64
    elif not isinstance(dtype, torch.dtype):
        dtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    outs = list(net.outputs)
    have = {o.name for o in outs}
    for key in record or ():
        if key in have:
            continue
        layer, _, st = key.partition(".")
        lay = net.layer(layer)
        pre = st.endswith("_pre")
        base = st[:-4] if pre else st
        outs.append(ir.LOutput(name=key, layer=layer, state=base or None, pre_reset=pre,
                               shape=lay.shape))
    net2 = net.model_copy(update={"outputs": tuple(outs)})
    m = build(net2, dtype=dtype, weights=weights, seed=seed, forward_only=True)
    m.eval()
    if not isinstance(inputs, dict):
        inputs = {net.inputs[0].name: inputs}
    npdt = np.float32 if dtype == torch.float32 else np.float64
    data = {}
    for lay in net.inputs:
        x = inputs[lay.name]
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=npdt)
        if x.ndim == len(lay.shape) + 1 and lay.encoder != "direct":
            from spikedsl.runtime import reference  # the same encoding as every other target

            x = reference.encode(lay, x, net.steps, dtype=npdt)
        data[lay.name] = torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)
    with torch.no_grad():
        out = m(data)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}
