"""Norse target (docs/norse.md).

    src = convert(net)                    # Python source using Norse cells
    m = build(net, dtype=torch.float64)   # nn.Module: forward(x) -> dict of outputs

The generated module is the torch target's step-path module
(:class:`spikedsl.targets.torch.NetGen`, templates ``targets/torch/``) with
one difference: a neuron layer runs as a Norse cell (``LIFBoxCell``,
``IAFCell``, ``LIBoxCell``, ``LIFCell``, ``LICell``, or ``LIBoxCell`` ->
``LIFBoxCell``) where one step of the cell equals the lowered step of the
neuron (``targets.norse.match.match_norse``, compared symbolically);
otherwise the target refuses and names the term that differs.  The cells'
parameters are computed in ``forward()`` from the spikedsl parameters (same
names, shapes and initialisation as the torch target's state_dict), so
trainable parameters get the same gradients.  Projections, stages, delays,
outputs, inputs and kept state are the torch target's code.
"""

from __future__ import annotations

import hashlib

from spikedsl import ir
from spikedsl.ir.exprs import from_sympy
from spikedsl.resources import templates_dir
from spikedsl.targets import require
from spikedsl.targets.nir.match import analyse
from spikedsl.targets.norse.match import NorseNeuron, match_norse
from spikedsl.targets.torch import NetGen, _key, _load_class, _torch_dtype, _tup, run_module
from spikedsl.targets.torch.expr import TorchPrinter, number, prepare

TARGET = "Norse"
__all__ = ["TARGET", "build", "check", "convert", "plan", "run"]

_CELL_CLASS = {"LIFBox": "LIFBoxCell", "IAF": "IAFCell", "LIBox": "LIBoxCell", "LIF": "LIFCell",
               "LI": "LICell", "SynLIFBox": "LIFBoxCell", "SynLIBox": "LIBoxCell"}


def _env():
    """Norse's templates first; the torch target's under ``torch/`` and as fallback."""
    import jinja2

    torch_dir = jinja2.FileSystemLoader(str(templates_dir() / "torch"))
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(templates_dir() / "norse")),
                                  jinja2.PrefixLoader({"torch": torch_dir}), torch_dir])
    return jinja2.Environment(loader=loader, keep_trailing_newline=True, trim_blocks=False,
                              lstrip_blocks=False, undefined=jinja2.StrictUndefined,
                              autoescape=False)


class NorseGen(NetGen):
    """The torch generator on its step path, with neurons emitted as Norse cells."""

    NAME = "norse"
    TARGET = TARGET

    def __init__(self, net: ir.LNetwork, allow_approx: bool = False,
                 forward_only: bool = False):
        super().__init__(net, fast=False, compiled=False)
        self.env = _env()
        self.nm.reserve("norse")
        self.allow_approx = allow_approx
        self.forward_only = forward_only
        self.notes: list[str] = []
        self.neurons: dict[str, NorseNeuron] = {}
        self.cells: list[tuple[str, str]] = []  # (ModuleDict key, Norse class)
        self.helpers: set[str] = set()
        self.matched = False

    # ---------------------------------------------------------------- neurons
    def match(self) -> None:
        """Match every neuron layer to a Norse cell (raises ``Unsupported``)."""
        dt_cell = self.net.dt if self.net.dt_unit else 1.0
        for la in self.net.layers:
            if la.kind != "neuron":
                continue
            n = la.neuron
            params = {p.name: p.value for p in n.params}
            an = analyse(la, params, n.dt, TARGET, self.net.file)
            nn = match_norse(an, dt_cell, self.allow_approx, self.forward_only)
            self.notes.extend(nn.notes)
            self.neurons[la.name] = nn
        self.matched = True

    def validate(self) -> None:
        super().validate()
        if not self.matched:
            self.match()

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
            return f"self._like.new_tensor({number(v)})" if need_tensor else number(v)
        return TorchPrinter(self.tensor_params(la), "self._like")(from_sympy(sp.simplify(e)))

    def neuron_step(self, la: ir.LLayer, src_at, pre: list[str], lines: list[str],
                    inside: set[str]) -> None:
        nn, n, name = self.neurons[la.name], la.neuron, la.name
        cells = self.env.get_template("cells.j2").module
        shape = f"(B,) + {_tup(la.shape)}"
        c, cs = f'self._cells["{name}"]', f'self._cells["{name}_syn"]'
        self.cells.append((name, _CELL_CLASS[nn.kind]))
        if nn.kind.startswith("Syn"):
            self.cells.append((f"{name}_syn", "LIBoxCell"))
        # the cells' parameters, before the loop
        P = {k: self.expr(la, e, need_tensor=(k == "v_th" and nn.ge))
             for k, e in nn.p.items() if k not in ("scale", "mid_scale")}
        spike = {"method": repr(nn.method), "alpha": number(nn.alpha),
                 "reset": "norse.reset_value"}
        if nn.spiking:
            if nn.ge:
                self.helpers.add("_below")
                P["v_th"] = f"_below({P['v_th']})"
            if nn.reset == "subtract":
                fn = "_subtract_detached" if nn.detach else "_subtract"
                self.helpers.add(fn)
                spike["reset"] = f"{fn}({self.expr(la, nn.p['v_th'])})"
            elif nn.detach:
                self.helpers.add("_reset_value_detached")
                spike["reset"] = "_reset_value_detached"
        syn = " (synapse: LIBoxCell)" if nn.kind.startswith("Syn") else ""
        pre.append(f"# layer {name}: {n.name} -> Norse {_CELL_CLASS[nn.kind]}{syn}"
                   f"  (line {la.source_line})")
        pre.extend(str(cells.params(nn.kind, c, cs, P, spike)).strip().splitlines())
        scale, mid = self.expr(la, nn.p["scale"]), ""
        if "mid_scale" in nn.p:
            m = self.expr(la, nn.p["mid_scale"])
            if m != "1.0":
                mv = self.nm(f"norse:{name}.mid", f"{name}_mid")
                pre.append(f"{mv} = {m}")
                mid = f"{mv} * "
        sv = self.nm(f"norse:{name}.scale", f"{name}_scale")
        if scale != "1.0":
            pre.append(f"{sv} = {scale}")
        # initial states (kept between calls when the module is stateful)
        tparams = self.tensor_params(la)
        consts = {p.name: float(p.value) for p in n.params if p.name not in tparams}
        consts["dt"] = n.dt
        inits = {s.name: prepare(s.init, consts) for s in n.states}
        cur = {s: self.cur(f"{name}.{s}") for s in inits}
        for s in inits:
            pre.append(f"{cur[s]} = self._initial({name + '.' + s!r}, "
                       f"{self.value(inits[s], tparams)}, {shape})")
        s_var = self.nm(f"norse:{name}.s", f"{name}_s")
        ss_var = self.nm(f"norse:{name}.ss", f"{name}_ss")
        pre.extend(str(cells.state(nn.kind, s_var, ss_var, cur[nn.v],
                                   cur[nn.syn] if nn.syn else None)).strip().splitlines())
        # one step
        terms = [self.proj(p, src_at(_key(p.source, p.source_state), p.delay), 1)
                 for p in la.projections]
        if terms:
            iv = self.nm(f"in:{name}", f"{name}_I_t")
            lines.append(f"{iv} = " + " + ".join(terms))
            x = f"{sv} * {iv}" if scale != "1.0" else iv
        else:
            x = f"self._like.new_zeros({shape})"
        v_pre = self.cur(f"{name}.{nn.v}_pre") if self.needed(_key(name, nn.v, True)) else None
        out = {"z": self.cur(name), "v": cur[nn.v], "syn": cur.get(nn.syn),
               "v_pre": v_pre if nn.spiking else None}
        lines.append(f"# Norse {_CELL_CLASS[nn.kind]}{syn}")
        m_var = self.nm(f"norse:{name}.m", f"{name}_m")
        lines.extend(str(cells.step(nn.kind, c, cs, s_var, ss_var, m_var, x, out, mid)
                         ).strip().splitlines())
        if not nn.spiking:
            lines.append(f"{self.cur(name)} = self._like.new_zeros({shape})")
            if v_pre is not None:
                lines.append(f"{v_pre} = {cur[nn.v]}")
        if nn.syn and self.needed(_key(name, nn.syn, True)):  # the current is not reset
            lines.append(f"{self.cur(f'{name}.{nn.syn}_pre')} = {cur[nn.syn]}")

    # ---------------------------------------------------------------- render hooks
    def extra_helpers(self) -> list[str]:
        cells = self.env.get_template("cells.j2").module
        order = ["_below", "_reset_value_detached", "_subtract", "_subtract_detached"]
        return [str(cells.helper(h)).strip() for h in order if h in self.helpers]

    def template_vars(self) -> dict:
        kinds = sorted({cls for _, cls in self.cells})
        return {"cell_kinds": ", ".join(kinds) or "none", "cell_modules": self.cells}


def plan(net: ir.LNetwork, allow_approx: bool = False, forward_only: bool = False) -> NorseGen:
    """Check the network and match every neuron (raises ``Unsupported``); the
    plan lists the notes."""
    g = NorseGen(net, allow_approx, forward_only)
    g.validate()
    return g


def check(net: ir.LNetwork, *, allow_approx: bool = False, forward_only: bool = False,
          **_options) -> None:
    """The Norse part of ``spikedsl.targets.refusal`` (raises ``Unsupported``)."""
    plan(net, allow_approx, forward_only)


_CACHE: dict[str, str] = {}


def convert(net: ir.LNetwork, *, allow_approx: bool = False, forward_only: bool = False) -> str:
    """Python source of a module built from Norse cells (deterministic).

    ``allow_approx``: a surrogate without a Norse counterpart becomes 'super'
    (noted); ``forward_only``: the same without a note, for modules that are only
    run forward (``run()``), where the surrogate plays no part."""
    require("norse", net, allow_approx=allow_approx)
    key = hashlib.sha256((net.model_dump_json() + f"|{allow_approx}|{forward_only}").encode()
                         ).hexdigest()
    if key not in _CACHE:
        _CACHE[key] = NorseGen(net, allow_approx, forward_only).render()
    return _CACHE[key]


def build(net: ir.LNetwork, *, dtype=None, device="cpu", weights=None, seed: int = 0,
          allow_approx: bool = False, forward_only: bool = False):
    """Execute the generated source and instantiate the module; loads
    ``net.weights`` and then ``weights`` (dict, ``.npz`` or torch checkpoint)."""
    import torch

    from spikedsl.lowering.weights import load_weights

    dtype = _torch_dtype(dtype) if dtype is not None else torch.float32
    src = convert(net, allow_approx=allow_approx, forward_only=forward_only)
    m = _load_class(src, net.name, "norse")(seed=seed, dtype=dtype)
    m.source = src
    m.to(device=device)
    for w in (net.weights, weights):
        if w is not None:
            m.load_weights({k: v for k, v in load_weights(net, w).items()
                            if not k.endswith("num_batches_tracked")})
    return m


def run(net: ir.LNetwork, inputs, *, weights=None, dtype=None, record: list[str] | None = None,
        seed: int = 0) -> dict:
    """One forward pass without gradients; numpy in, numpy out (the torch
    target's ``run``).  Without gradients the surrogate plays no part, so any
    surrogate is accepted here (``forward_only``)."""
    return run_module(net, inputs, lambda n, **kw: build(n, forward_only=True, **kw),
                      weights=weights, dtype=dtype, record=record, seed=seed)
