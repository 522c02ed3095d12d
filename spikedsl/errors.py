"""Every message spikedsl prints about a spec lives here (one catalogue).

A check reports ``diag(code, loc, **fields)``; the catalogue turns the code
into ``file:line:col: error: message`` plus the source line, a caret and a
hint.  Codes are stable identifiers used by the fixture tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Message(NamedTuple):
    """One entry of the catalogue: the message template and the hint template
    (None: no hint), both formatted with the fields of :func:`diag`."""

    text: str
    hint: str | None = None


# code -> its message, one entry a line where it fits
CATALOGUE: dict[str, Message] = {
    # --- syntax -----------------------------------------------------------
    "syntax": Message("unexpected {found}", "expected {expected}"),
    "syntax-eof": Message("unexpected end of file", "a block is not closed: expected {expected}"),
    "syntax-char": Message("unexpected character {found}"),
    "reserved-word": Message("'{name}' is a reserved word and cannot be used as a name",
                             "rename it, e.g. '{name}_'"),
    "bad-ode-lhs": Message("an equation must read 'dX/dt = ...', not '{lhs}'",
                           "write d{state}/dt for the derivative of state '{state}'"),
    "stray-assign": Message(
        "assignment '{name} {op} ...' outside 'update' or 'reset'",
        "start the statement with 'update' or 'reset', or put it on the same line after one"),
    "expr-too-deep": Message("expression nested too deeply ({depth} levels; the limit is {limit})",
                             "split it into named temporaries or several statements"),
    "number-range": Message("number {text} is out of range (not a finite 64-bit float)"),
    "bad-encoding": Message("the file is not UTF-8 text: byte {byte} at offset {offset}",
                            "save the file as UTF-8"),
    # --- names ------------------------------------------------------------
    "undefined-name": Message("undefined name '{name}'", "{hint}"),
    "duplicate-name": Message("'{name}' is already defined (line {first_line})"),
    "duplicate-block": Message("{kind} '{name}' is already defined at {first}"),
    "unknown-function": Message("unknown function '{name}'", "allowed functions: {allowed}"),
    "wrong-arity": Message("'{name}' takes {expected} argument(s), got {got}"),
    "unknown-neuron": Message("unknown neuron or stage '{name}'", "{hint}"),
    "unknown-override": Message("neuron '{neuron}' has no parameter '{name}'",
                                "its parameters are: {params}"),
    "unknown-option": Message("unknown {what} '{name}'", "known: {known}"),
    "unknown-argument": Message("{what} takes no argument '{name}'", "known: {known}"),
    "missing-argument": Message("{what} needs the argument '{name}'"),
    "bad-argument": Message("{what}: {reason}"),
    "not-a-number": Message("{what} must be a number"),
    "string-in-expression": Message("a string cannot be used in an expression"),
    # --- imports ------------------------------------------------------------
    "import-missing": Message("cannot import '{path}': no such file"),
    "import-cycle": Message("import cycle: {cycle}", "remove one of the imports"),
    # --- neuron rules -----------------------------------------------------
    "ode-and-update": Message("state '{name}' has an ODE (line {line}) and an 'update'",
                              "a state is written by its ODE or by 'update', not both"),
    "jump-not-state": Message("jump target '{name}' is not a state of '{neuron}'",
                              "a jump changes a state, e.g. 'jump g += w_in'"),
    "clamp-not-state": Message("'{name}' in 'clamp' is not a state of '{neuron}'"),
    "ode-not-state": Message("'{name}' is not a state of '{neuron}'",
                             "declare it with 'state {name} = ...'"),
    "update-not-state": Message("'{name}' is not a state of '{neuron}'",
                                "declare it with 'state {name} = ...'"),
    "duplicate-ode": Message("state '{name}' already has an equation (line {first_line})"),
    "spike-not-comparison": Message(
        "the spike condition must be a comparison such as 'v >= v_th', or comparisons joined "
        "with 'and' / 'or'"),
    "spike-missing": Message(
        "neuron '{neuron}' has no 'spike' condition",
        "add e.g. 'spike v >= v_th' (a non-spiking readout uses a neuron without reset)"),
    "duplicate-spike": Message("neuron '{neuron}' has more than one spike condition"),
    "reset-not-state": Message("reset target '{name}' is not a state of '{neuron}'"),
    "assign-param": Message("'{name}' is a parameter; only states can be assigned"),
    "unknown-method": Message("unknown integration method '{name}'",
                              "use exact, euler, rk2 or rk4"),
    "mixed-methods": Message("the equations of '{neuron}' ask for different methods ({methods})",
                             "one method per ODE system"),
    "expeuler-nonlinear": Message(
        "method exponential_euler needs each equation "
        "linear in its own state, but '{term}' is not",
        "use method euler, rk2 or rk4"),
    "exact-nonlinear": Message(
        "method exact needs a linear system, but the term '{term}' is nonlinear in the states",
        "use method euler, rk2 or rk4"),
    "unknown-surrogate": Message("unknown surrogate '{name}'", "known: {known}"),
    "surrogate-arg": Message("surrogate '{name}' takes no argument '{arg}'", "known: {known}"),
    "weight-dim": Message(
        "the weight has dimension {got}, but input '{input}' of '{neuron}' has dimension {want}",
        "give the weight in the input's unit, e.g. weight = 1.5 {example}"),
    "not-positive": Message("parameter '{name}' must be positive: it is {what}"),
    "range-violation": Message("parameter '{name}' = {value} is outside its range [{lo}, {hi}]"),
    "bad-range": Message("range({lo}, {hi}) is empty", "the lower bound must not exceed the upper"),
    "refractory-negative": Message("the refractory period must not be negative"),
    "state-uses-state": Message("initial value of '{name}' uses state '{other}'",
                                "use parameters and numbers only"),
    "param-cycle": Message("parameter '{name}' depends on itself"),
    "param-uses-state": Message("parameter '{name}' uses state '{other}'"),
    "no-states": Message("neuron '{neuron}' has no state", "declare one with 'state v = 0'"),
    "input-unused-dims": Message("input '{name}' has unit '{unit}', which is not a known unit"),
    "duplicate-input": Message("input '{name}' is declared twice"),
    "no-input": Message("neuron '{neuron}' declares no input, but a layer projects into it",
                        "add 'input I'"),
    # --- units ------------------------------------------------------------
    "dim-mismatch": Message("cannot {op} {left} and {right}"),
    "dim-ode": Message(
        "the right side of d{state}/dt has dimension "
        "{got}, expected {expected} ({state} per time)"),
    "dim-assign": Message("cannot assign {got} to '{name}' of dimension {expected}"),
    "dim-function": Message("{func}() needs a dimensionless argument, got {got}"),
    "dim-compare": Message("cannot compare {left} and {right}"),
    "dim-exponent": Message("an exponent must be a dimensionless number"),
    "dim-time": Message("{what} must be a time, got {got}"),
    "exact-singular": Message(
        "the exact step of neuron '{neuron}' divides by zero or oscillates at these parameter "
        "values (equal time constants, complex eigenvalues), and its matrix depends on "
        "'{param}', which is trainable or per neuron",
        "solve it at fixed values (make '{param}' a plain parameter) or write `method rk4`"),
    "dim-dt": Message("neuron '{neuron}' uses units, so dt must carry a time unit",
                      "write e.g. 'dt = 1 ms'"),
    # --- networks ---------------------------------------------------------
    "unknown-encoder": Message("unknown encoder '{name}'", "known: {known}"),
    "unknown-projection": Message("unknown projection '{name}'", "known: {known}"),
    "unknown-source": Message("'{name}' is not an input or layer of network '{network}'"),
    "unknown-source-state": Message("layer '{layer}' has no state '{name}'",
                                    "its states: {states}"),
    "unknown-target-input": Message("neuron '{neuron}' has no input '{name}'",
                                    "its inputs: {inputs}"),
    "shape-mismatch": Message("shape mismatch: {what}: {left} vs {right}"),
    "shape-missing": Message("layer '{name}' needs a shape",
                             "write e.g. 'layer {name}[128] = ...'"),
    "shape-invalid": Message("{what}"),
    "bad-shape": Message("a shape dimension must be positive, got {value}"),
    "missing-setting": Message("{block} '{name}' needs '{setting}'"),
    "unknown-setting": Message("unknown setting '{name}' in {block}", "known: {known}"),
    "duplicate-setting": Message("'{name}' is set twice"),
    "bad-setting": Message("{name}: {reason}"),
    "steps-positive": Message("steps must be a positive integer"),
    "forward-cycle": Message("feed-forward cycle through {cycle}",
                             "a stateless stage cannot read a later layer"),
    "output-unknown": Message("output '{name}' is not a layer or input"),
    "unknown-reduction": Message("unknown output reduction '{name}'", "use sum, mean or last"),
    "no-output": Message("network '{name}' has no output", "add e.g. 'output y'"),
    "no-layers": Message("network '{name}' has no layer"),
    "unknown-rule": Message("unknown synapse rule '{name}'"),
    "unknown-projection-ref": Message("network has no projection from '{src}' into '{dst}'"),
    "stage-recurrent": Message("stateless layer '{name}' cannot read '{src}', which comes later"),
    "weights-missing": Message("weights file '{path}' does not exist"),
    # --- train ------------------------------------------------------------
    "unknown-network": Message("unknown network '{name}'", "{hint}"),
    "unknown-loss": Message("unknown loss '{name}'", "known: {known}"),
    "unknown-data": Message("unknown data set '{name}'", "known: {known}"),
    "unknown-optimizer": Message("unknown optimizer '{name}'", "known: {known}"),
    "unknown-schedule": Message("unknown schedule '{name}'", "known: {known}"),
    "unknown-metric": Message("unknown metric '{name}'", "known: {known}"),
    # --- test -------------------------------------------------------------
    "test-no-subject": Message("test needs 'neuron = ...' or 'network = ...'"),
    "test-no-run": Message("test needs 'run DURATION'"),
    "unknown-quantity": Message("unknown quantity '{name}' in expect", "known: {known}"),
    "unknown-target": Message("unknown target '{name}'", "known: {known}"),
    "unknown-drive": Message("'{name}' is not an input of '{subject}'", "its inputs: {inputs}"),
    "bad-drive": Message("unknown drive '{name}'", "known: {known}"),
    "data-error": Message("{message}"),  # a data set that cannot be loaded (train blocks)
    # --- targets ------------------------------------------------------------
    "unsupported": Message("{target} cannot express {what}: {reason}"),
    # --- neuromorphic platforms (spikedsl/targets/nir/platform_check.py) -------
    "platform-limit": Message(
        "{platform}: layer '{layer}': {what} {value} exceeds the limit {limit} [{source}]",
        "{hint}"),
    "platform-unsupported": Message(
        "{platform}: layer '{layer}': {what} is not supported: {reason} [{source}]",
        "{hint}"),
    # --- weights files and NIR import (spikedsl/lowering/weights.py, targets/nir/importer.py)
    "weights-file": Message("cannot read weights file '{path}': {reason}"),
    "weights-shape": Message("weights entry '{name}' has shape {got}, expected {expected}"),
    "weights-missing-key": Message(
        "the weights have no entry '{name}'",
        "names follow docs/semantics.md: LAYER.weight, LAYER.bias, LAYER.PARAM"),
    "weights-keys-missing": Message(
        "{origin} has no {entries}",
        "a weights file of network '{network}' holds all its {count} arrays (names: "
        "docs/semantics.md, 'Parameter names')"),
    "weights-keys-unknown": Message("{origin} has {entries} that network '{network}' does not have",
                                    "its arrays: {known}"),
    "weights-entry-shape": Message(
        "{origin}: entry '{name}' has shape {got}, network '{network}' expects {expected}"),
    "weights-not-numeric": Message("{origin}: entry '{name}' is not an array of numbers"),
    "weights-not-mapping": Message(
        "weights must be a file name or a dict name -> array, not {got}"),
    "weights-not-finite": Message(
        "{origin}: entry '{name}' holds {count} NaN or infinite value(s)"),
    "weights-range": Message(
        "{origin}: entry '{name}' holds {value}, outside "
        "the range [{lo}, {hi}] of parameter '{param}'"),
    "weights-not-positive": Message(
        "{origin}: entry '{name}' holds {value}, but "
        "parameter '{param}' is {what} and must be positive"),
    # --- the inputs of a run (spikedsl/runtime/validate.py) -------------------
    "input-dict": Message(
        "network '{network}' has {count} inputs ({names}): pass a dict {{input name: array}}"),
    "input-unknown": Message("{names}: not an input of network '{network}'", "its inputs: {known}"),
    "input-missing": Message("missing input '{name}' of network '{network}'",
                             "pass {{'{name}': [T, B, {shape}]}} (encoded) or [B, {shape}] (raw)"),
    "input-not-numeric": Message(
        "input '{name}' of network '{network}' is not an array of numbers"),
    "input-shape": Message(
        "input '{name}' has shape {got}; network '{network}' expects [T, B, {shape}] (encoded) "
        "or [B, {shape}] (raw)"),
    "input-spikes-raw": Message(
        "input '{name}' uses the 'spikes' encoder: give "
        "spike trains [T, B, {shape}], got shape {got}"),
    "input-empty": Message("input '{name}' has no {what} ({axis} = 0, shape {got})",
                           "a run lasts as many steps as its inputs hold"),
    "input-lengths": Message("the inputs differ in their number of {what}: {detail}"),
    "input-not-finite": Message(
        "input '{name}' holds {count} NaN or infinite value(s) (the first at index {first})"),
    "input-not-spikes": Message(
        "input '{name}' uses the 'spikes' encoder, but holds {value} ({count} value(s) other "
        "than 0 and 1)",
        "a spike input holds only 0 and 1; declare the input 'direct' for graded values"),
    "input-latency": Message(
        "input '{name}' uses the 'latency' encoder and needs raw values in [0, 1], got values in "
        "[{lo}, {hi}]"),
    "nir-file": Message("cannot read NIR file '{path}': {reason}"),
    "nir-invalid": Message("invalid NIR graph: {reason}"),
    "nir-node": Message("NIR node '{node}' ({type}): {reason}"),
    "nir-unknown-node": Message("NIR node '{node}' has type '{type}', which spikedsl cannot import",
                                "importable node types: {known}"),
    "nir-cycle": Message(
        "the NIR graph has a cycle without a neuron node: {cycle}",
        "a recurrent loop must pass through a neuron, which holds the state between steps"),
}


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0


@dataclass
class Diagnostic:
    code: str
    message: str
    loc: Loc | None
    hint: str | None = None
    severity: str = "error"

    def render(self, sources: dict[str, str] | None = None) -> str:
        where = f"{self.loc.file}:{self.loc.line}:{self.loc.col}: " if self.loc else ""
        out = [f"{where}{self.severity}: {self.message}"]
        text = None
        if self.loc is not None:
            if sources and self.loc.file in sources:
                text = sources[self.loc.file]
            else:
                try:
                    with open(self.loc.file, encoding="utf-8") as fh:
                        text = fh.read()
                except (OSError, UnicodeDecodeError):
                    text = None
        if text is not None and self.loc is not None:
            lines = text.splitlines()
            if 1 <= self.loc.line <= len(lines):
                src = lines[self.loc.line - 1].replace("\t", " ")
                out.append(f"    {src}")
                width = 1
                if self.loc.end_line == self.loc.line and self.loc.end_col > self.loc.col:
                    width = self.loc.end_col - self.loc.col
                out.append("    " + " " * (self.loc.col - 1) + "^" + "~" * (width - 1))
        if self.hint:
            out.append(f"    hint: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


def name_loc(file: str, line: int, name: str) -> Loc | None:
    """The position of the word ``name`` on line ``line`` of ``file`` (after a
    leading keyword such as ``layer``), for IR nodes that keep only their line;
    column 1 when the file cannot be read or the word is not there."""
    import re

    if not line:
        return None
    col = 1
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read().splitlines()[line - 1].split("#", 1)[0]
        m = re.match(r"\s*[A-Za-z_]\w*\s+", text)  # the statement's keyword
        m = re.compile(rf"\b{re.escape(name)}\b").search(text, m.end() if m else 0)
        if m:
            col = m.start() + 1
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    return Loc(file, line, col, line, col + len(name))


def diag(code: str, loc: Loc | None, **fields) -> Diagnostic:
    entry = CATALOGUE[code]
    msg = entry.text.format(**fields)
    hint = None
    if entry.hint is not None:
        try:
            hint = entry.hint.format(**fields) or None
        except KeyError:
            hint = None
    return Diagnostic(code=code, message=msg, loc=loc, hint=hint)


class SpecError(Exception):
    """Raised for anything wrong with a spec; carries every diagnostic of the file."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = sources or {}
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)

    def __reduce__(self):  # pickled with its diagnostics (errors from a child process)
        return type(self), (self.diagnostics, self.sources)

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diagnostics]


class InvalidData(SpecError, ValueError):
    """Inputs or weights that no target accepts (spikedsl/runtime/validate.py)."""


class Unsupported(SpecError):
    """A target cannot express a construct (sqlglot-style ``unsupported``)."""


def unsupported(target: str, what: str, reason: str, loc: Loc | None = None) -> Unsupported:
    return Unsupported([diag("unsupported", loc, target=target, what=what, reason=reason)])


@dataclass
class Collector:
    """Collects diagnostics of one pass; never raises until asked to."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, code: str, loc: Loc | None, **fields) -> None:
        d = diag(code, loc, **fields)
        key = (d.code, d.message, d.loc)
        if all((x.code, x.message, x.loc) != key for x in self.diagnostics):
            self.diagnostics.append(d)

    def __bool__(self) -> bool:
        return bool(self.diagnostics)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            ds = sorted(
                self.diagnostics,
                key=lambda d: (d.loc.file, d.loc.line, d.loc.col) if d.loc else ("", 0, 0),
            )
            raise SpecError(ds, self.sources)


class UserError(Exception):
    """A request that cannot be met (a file that cannot be written, a device
    this machine lacks): the command line prints the message, exit code 1."""


class UsageError(Exception):
    """A command-line argument that does not fit the spec: exit code 2."""


# the exit code of a command line that stops on an exception: the first class here
# that it is an instance of (spikedsl.cli and the pipeline's own command line; the
# messages are theirs); any other exception is a bug, exit code 1
EXIT_CODES: dict[type[BaseException], int] = {
    SpecError: 1,
    UsageError: 2,
    UserError: 1,
    KeyboardInterrupt: 130,
    BrokenPipeError: 0,  # the reader of stdout went away (`spikedsl ir | head`)
}


def exit_code(e: BaseException) -> int:
    """The exit code of a command line that stopped on ``e`` (:data:`EXIT_CODES`)."""
    return next((code for cls, code in EXIT_CODES.items() if isinstance(e, cls)), 1)
