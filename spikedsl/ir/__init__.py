"""The typed intermediate representation (frozen pydantic models).

Two layers live here:

* the *spec IR*: what the user wrote (``Program`` of ``Neuron``, ``Synapse``,
  ``Network``, ``Train``, ``Test``), every node with its source ``loc``;
* the *lowered IR*: what every target reads (``LNeuron`` with one explicit
  discrete step, ``LNetwork`` with concrete shapes, parameter values and a
  topological order).  Targets never look at the spec IR.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from spikedsl.errors import Loc


class Frozen(BaseModel):
    """Every IR node: immutable, no unknown fields, its schema built on first use."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Node(Frozen):
    loc: Loc | None = Field(default=None, repr=False)


# ------------------------------------------------------------------ expressions
class Num(Node):
    kind: Literal["num"] = "num"
    value: float  # in SI base units when ``unit`` is given
    unit: str | None = None
    text: str = ""


class Name(Node):
    kind: Literal["name"] = "name"
    id: str


class Attr(Node):
    kind: Literal["attr"] = "attr"
    obj: str
    attr: str


class Str(Node):
    kind: Literal["str"] = "str"
    value: str


class Binary(Node):
    """``left op right``.  Each subclass narrows ``kind`` and ``op``; a narrowed
    field keeps its place, so every one dumps as kind, op, left, right."""

    kind: str
    op: str
    left: Expr
    right: Expr


class Unary(Node):
    """An operator applied to one expression (``-x``, ``not x``)."""

    kind: str
    operand: Expr


class BinOp(Binary):
    kind: Literal["bin"] = "bin"
    op: Literal["+", "-", "*", "/", "**"]


class Neg(Unary):
    kind: Literal["neg"] = "neg"


class Compare(Binary):
    kind: Literal["cmp"] = "cmp"
    op: Literal[">=", "<=", ">", "<", "==", "!="]


class BoolOp(Binary):
    kind: Literal["bool"] = "bool"
    op: Literal["and", "or"]


class Not(Unary):
    kind: Literal["not"] = "not"


class Binding(Node):
    """A name bound to an expression: a keyword argument, a setting, a parameter,
    a drive of a test."""

    name: str
    value: Expr


class Keyword(Binding):
    pass


class Call(Node):
    kind: Literal["call"] = "call"
    func: str
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()

    def kw(self, name: str) -> Expr | None:
        for k in self.kwargs:
            if k.name == name:
                return k.value
        return None


class ListExpr(Node):
    kind: Literal["list"] = "list"
    items: tuple[Expr, ...] = ()


Expr = Annotated[
    Num | Name | Attr | Str | BinOp | Neg | Compare | BoolOp | Not | Call | ListExpr,
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------ statements
class Assign(Node):
    target: str
    op: Literal["=", "+=", "-="] = "="
    value: Expr


Statements = tuple[Assign, ...]  # a block: update, reset, on_pre, a lowered step ...


class Param(Binding):
    trainable: bool = False
    per_neuron: bool = False
    init: Call | None = None  # per_neuron(uniform(a, b))
    range: tuple[Expr, Expr] | None = None


class State(Node):
    name: str
    init: Expr


class InputDecl(Node):
    name: str
    unit: str | None = None


class ODE(Node):
    state: str
    rhs: Expr
    method: str | None = None
    method_loc: Loc | None = None


class Surrogate(Node):
    name: str
    args: tuple[Keyword, ...] = ()


class Dynamics(Node):
    """What a neuron and a synapse rule both declare first: a name, parameters, states."""

    name: str
    params: tuple[Param, ...] = ()
    states: tuple[State, ...] = ()


class Neuron(Dynamics):
    inputs: tuple[InputDecl, ...] = ()
    odes: tuple[ODE, ...] = ()
    updates: Statements = ()
    jumps: Statements = ()
    spikes: tuple[Expr, ...] = ()
    reset: Statements = ()
    reset_detach: bool = False
    refractory: Expr | None = None
    clamp: tuple[Name, ...] | None = None  # None: the states that reset assigns
    surrogate: Surrogate | None = None


class Synapse(Dynamics):
    odes: tuple[ODE, ...] = ()
    on_pre: Statements = ()
    on_post: Statements = ()


class Setting(Binding):
    pass


class NetInput(Node):
    name: str
    shape: tuple[int, ...]
    encoder: Expr


class Projection(Node):
    call: Call
    target_input: str | None = None


class Layer(Node):
    name: str
    shape: tuple[int, ...] | None = None
    body: Expr
    projections: tuple[Projection, ...] = ()


class Output(Node):
    expr: Expr


class Plasticity(Node):
    rule: Call
    source: str
    target: str


class Block(Node):
    """A named block of settings (``train``, ``test``; a network adds its layers)."""

    name: str
    settings: tuple[Setting, ...] = ()


class Network(Block):
    inputs: tuple[NetInput, ...] = ()
    layers: tuple[Layer, ...] = ()
    outputs: tuple[Output, ...] = ()
    plasticity: tuple[Plasticity, ...] = ()


class Train(Block):
    pass


class Drive(Binding):
    start: Expr | None = None
    stop: Expr | None = None


class Expect(Node):
    quantity: Expr
    at: Expr | None = None
    op: Literal[">=", "<=", ">", "<", "==", "!="]
    value: Expr
    tol: Expr | None = None


class Test(Block):
    drives: tuple[Drive, ...] = ()
    run: Expr | None = None
    expects: tuple[Expect, ...] = ()


class Import(Node):
    path: str


class Module(Node):
    """One parsed file."""

    file: str
    imports: tuple[Import, ...] = ()
    neurons: tuple[Neuron, ...] = ()
    synapses: tuple[Synapse, ...] = ()
    networks: tuple[Network, ...] = ()
    trains: tuple[Train, ...] = ()
    tests: tuple[Test, ...] = ()


# ------------------------------------------------------------------ lowered IR
Number = float
_T = TypeVar("_T", "LParam", "LLayer")


def _named(items: tuple[_T, ...], name: str) -> _T:
    """The item called ``name`` (KeyError if there is none)."""
    for it in items:
        if it.name == name:
            return it
    raise KeyError(name)


class LParam(Frozen):
    name: str
    value: Number  # SI base units (or steps/dimensionless when unitless)
    dim: str = "1"  # canonical dimension string, e.g. "s", "V", "1"
    trainable: bool = False
    per_neuron: bool = False
    init_uniform: tuple[Number, Number] | None = None
    range: tuple[Number, Number] | None = None


class LState(Frozen):
    name: str
    init: Expr  # over params and numbers
    dim: str = "1"


from spikedsl.ir.surrogates import SURROGATES as _SURROGATES  # noqa: E402 (the table)

SurrogateName = Literal[tuple(_SURROGATES)]  # type: ignore[valid-type]


class LSurrogate(Frozen):
    name: SurrogateName
    args: dict[str, Number]


class LDynamics(Frozen):
    """What a lowered neuron and a lowered synapse rule both start with."""

    name: str
    params: tuple[LParam, ...]
    states: tuple[LState, ...]

    def param(self, name: str) -> LParam:
        return _named(self.params, name)

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.states]


class LNeuron(LDynamics):
    """One neuron (after overrides) with its explicit discrete step.

    ``temps`` run in order (each reads states, params, inputs, ``dt`` and
    earlier temps), then every ``update`` is evaluated on the *old* states
    and committed at once.  ``dt`` is a free symbol: the step length in
    seconds when the neuron uses units, else 1.0 (time in steps).
    """

    inputs: tuple[str, ...]
    input_dims: tuple[str, ...] = ()
    method: Literal["exact", "euler", "rk2", "rk4", "exponential_euler", "update", "none"]
    temps: Statements = ()
    updates: Statements
    # instantaneous jumps at the start of the step (``s = expr``, in order, each
    # reading the values the previous ones left), with this step's inputs
    jumps: Statements = ()
    spiking: bool = True
    spike_x: Expr | None = None  # surrogate argument x = lhs - rhs
    spike_op: Literal[">=", ">"] = ">="
    # a compound condition (comparisons joined by and/or); None: spike_x/spike_op
    spike_cond: Expr | None = None
    # states held at their value while refractory (default: the reset targets)
    clamp: tuple[str, ...] = ()
    # the step while refractory when it differs from ``updates`` for the
    # unclamped states (exact/rk solutions of a system coupled to a clamped state)
    refr_temps: Statements = ()
    refr_updates: Statements = ()
    reset: Statements = ()
    reset_detach: bool = False
    refractory: Number = 0.0  # duration in the neuron's time unit (s or steps)
    surrogate: LSurrogate
    uses_units: bool = False
    # Resolved when the neuron is placed in a network (spikedsl.lowering.neuron.place;
    # None for a neuron outside a network): the value of ``dt`` in its step (net.dt in
    # seconds when it uses units, else 1.0) and R (spikedsl.lowering.refractory.steps).
    dt: Number | None = None
    refractory_steps: int | None = None
    linear: bool = False  # the continuous system is linear in its states
    source_line: int = 0
    source_file: str = ""  # the file that defines it (an imported neuron's own file)
    # the neuron as declared, where lowering wrote its refractory period as
    # statements (spikedsl.lowering.refractory.expand); None otherwise
    declared: LNeuron | None = None

    def source(self, file: str = "") -> tuple[str, int]:
        """Where the neuron is defined: its own file, else ``file``, and the line."""
        return (self.source_file or file, self.source_line)


class LSynapse(LDynamics):
    method: str = "exact"
    temps: Statements = ()
    updates: Statements = ()
    on_pre: Statements = ()
    on_post: Statements = ()
    uses_units: bool = False
    dt: Number | None = None  # the value of ``dt`` in the rule (as for a neuron), set by lowering


class LInit(Frozen):
    """The resolved initialisation of one array (drawn by spikedsl.lowering.weights):
    ``uniform`` (args a, b), ``normal`` (args mean, std) or ``constant`` (arg c);
    ``magnitude``: the absolute value of the draw (projections with a ``sign``)."""

    dist: Literal["uniform", "normal", "constant"]
    args: tuple[Number, ...]
    magnitude: bool = False


class LProjection(Frozen):
    kind: Literal["dense", "conv2d", "sparse", "one_to_one"]
    source: str  # layer or input name
    source_state: str | None = None  # None = spikes (or values of an input/stage)
    target_input: str  # neuron input it adds to
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    recurrent: bool = False  # reads the previous step
    delay: int = 0  # extra steps of delay (recurrent already counts one)
    bias: bool = False
    init: str = "default"
    init_args: tuple[Number, ...] = ()
    channels: int = 0
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    p: Number = 0.0
    weight: Number | None = None
    sign: Literal["none", "excitatory", "inhibitory"] = "none"
    seed: int = 0
    param_name: str  # prefix in state_dict / weights file, e.g. "h.0"
    # resolved by lowering (dense / conv2d; 0 and None for the fixed sparse / one_to_one)
    fan_in: int = 0
    fan_out: int = 0
    weight_init: LInit | None = None
    bias_init: LInit | None = None  # None without a bias
    source_line: int = 0


class LLayer(Frozen):
    name: str
    kind: Literal["input", "neuron", "stage", "projection", "cell"]
    shape: tuple[int, ...]
    # input
    encoder: str | None = None
    encoder_args: dict[str, Number] = {}
    # neuron
    neuron: LNeuron | None = None
    projections: tuple[LProjection, ...] = ()
    # stage / cell / stateless projection
    op: str | None = None  # avgpool2d, sumpool2d, maxpool2d, flatten, batchnorm, dropout,
    # slstm, sconv_lstm; for kind=projection the projection lives in projections[0]
    source: str | None = None
    source_state: str | None = None
    args: dict[str, Number | str | bool | tuple[int, ...]] = {}
    func: str | None = None  # elementwise wrapper of a stateless projection
    states: tuple[str, ...] = ()  # recordable traces (neurons: state names; cells: syn, mem)
    source_line: int = 0


class LOutput(Frozen):
    name: str  # "o", "y.v", "sum(o)"
    layer: str
    state: str | None = None  # None: spikes (or values); "v" / "v_pre"
    pre_reset: bool = False
    reduce: Literal["none", "sum", "mean", "last"] = "none"
    shape: tuple[int, ...]


class LPlasticity(Frozen):
    rule: LSynapse
    source: str
    target: str
    projection: str  # param_name of the projection


class LNetwork(Frozen):
    name: str
    dt: Number  # seconds if it had a unit, else 1.0
    dt_unit: str | None = None  # the unit dt was written in ("ms"), None if unitless
    steps: int
    layers: tuple[LLayer, ...]  # topological order, inputs first
    outputs: tuple[LOutput, ...]
    plasticity: tuple[LPlasticity, ...] = ()
    weights: str | None = None  # absolute path of a weights file
    file: str = ""
    source_line: int = 0

    def layer(self, name: str) -> LLayer:
        return _named(self.layers, name)

    @property
    def inputs(self) -> list[LLayer]:
        return [lay for lay in self.layers if lay.kind == "input"]


# Schemas are built on first use (defer_build): importing the IR stays cheap, so
# `spikedsl check` starts fast.
