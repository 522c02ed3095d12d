"""Syntax highlighting for ``.spk`` files.

* :class:`SpkLexer`, a Pygments lexer registered through the
  ``pygments.lexers`` entry point (``pygmentize -l spk model.spk``, Sphinx and
  MkDocs code blocks marked ``spk``);
* :func:`textmate_grammar`, the TextMate grammar of the VS Code extension in
  ``editors/vscode/`` (generated from the same word lists, so the two cannot
  differ);
* :func:`grammar_keywords` / :func:`keyword_drift`, the keywords of the Lark
  grammar, against which the tests check both.

``python -m spikedsl.frontend.highlight --textmate OUT.json`` rewrites the
TextMate grammar; ``--image OUT.png FILE.spk`` renders a file with Pygments'
image formatter (Pillow and a monospace font needed; ``.html`` / ``.svg``
outputs need neither).
"""

from __future__ import annotations

import json
import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
)

from spikedsl.frontend.parse import RESERVED
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.surrogates import SURROGATES

__all__ = ["KEYWORDS", "SpkLexer", "grammar_keywords", "keyword_drift", "textmate_grammar"]

# ------------------------------------------------------------------ word lists
# Every keyword of grammar/spk.lark (tests/test_highlight.py checks the set is equal).
DECLARATIONS = ("neuron", "synapse", "network", "train", "test")
WORD_OPERATORS = ("and", "or", "not")
NAMESPACE = ("import",)
# the statement keywords: the grammar's other reserved words
STATEMENTS = tuple(sorted(RESERVED - {*DECLARATIONS, *WORD_OPERATORS, *NAMESPACE}))
KEYWORDS = frozenset(DECLARATIONS + STATEMENTS + WORD_OPERATORS + NAMESPACE)

# Built-in names that are not reserved (functions, projections, encoders ...):
# the functions and surrogates from their tables, so that a new row needs no edit here.
BUILTINS = tuple(dict.fromkeys((
    *FUNCTIONS,
    # projections, stages, cells, reductions
    "dense", "conv2d", "sparse", "one_to_one", "avgpool2d", "sumpool2d", "maxpool2d",
    "flatten", "batchnorm", "dropout", "slstm", "sconv_lstm", "sum", "mean", "last",
    # encoders
    "direct", "poisson", "latency", "spikes",
    *SURROGATES,
    # integration methods
    "exact", "euler", "rk2", "rk4", "exponential_euler",
    # parameter options, initialisers
    "trainable", "per_neuron", "range", "uniform", "normal", "kaiming", "xavier",
    # test quantities and drives
    "first_spike", "count", "spike_times", "rate", "step", "ramp",
)))
CONSTANTS = ("true", "false", "excitatory", "inhibitory", "all")
_UNIT_WORDS = ("Gohm|Mohm|kohm|ohm|kHz|Hz|mV|uV|V|mA|uA|nA|pA|A|mS|uS|nS|S|uF|nF|pF|F|"
               "ms|us|ns|s")
_UNIT_ONE = rf"(?:{_UNIT_WORDS})(?:\*\*-?[0-9]+)?"
UNIT_RE = rf"{_UNIT_ONE}(?:[*/]{_UNIT_ONE})*(?![A-Za-z0-9_])"
NUMBER_RE = r"(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?"
NAME_RE = r"[A-Za-z_][A-Za-z0-9_]*"


class SpkLexer(RegexLexer):
    """Lexer for spikedsl ``.spk`` specs (neurons, networks, training runs, tests)."""

    name = "spikedsl"
    aliases = ["spk", "spikedsl"]
    filenames = ["*.spk"]
    mimetypes = ["text/x-spk"]
    url = "https://github.com/spikedsl/spikedsl"

    tokens = {
        "root": [
            (r"[ \t\f]+", Whitespace),
            (r"\r?\n", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            # declarations: `neuron LIF {`, `test "name" {`
            (rf"\b({'|'.join(DECLARATIONS[:4])})(\s+)({NAME_RE})",
             bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"\b(test)\b", Keyword.Declaration),
            (r"\b(import)\b", Keyword.Namespace),
            # `layer h[128] = ...`, `input x[64] : ...`, `state v = ...`, `param a = ...`
            (rf"\b(layer|input|state|param)(\s+)({NAME_RE})",
             bygroups(Keyword, Whitespace, Name.Variable)),
            # the derivative of an ODE: dv/dt
            (rf"\b(d{NAME_RE})(\s*/\s*)(dt)\b", bygroups(Name.Variable, Operator, Name.Builtin)),
            (words(STATEMENTS, prefix=r"\b", suffix=r"\b"), Keyword),
            (words(WORD_OPERATORS, prefix=r"\b", suffix=r"\b"), Operator.Word),
            (words(CONSTANTS, prefix=r"\b", suffix=r"\b"), Keyword.Constant),
            (words(BUILTINS, prefix=r"\b", suffix=r"\b(?=\s*\()"), Name.Builtin),
            (words(("exact", "euler", "rk2", "rk4", "exponential_euler", "trainable",
                    "per_neuron", "direct", "spikes", "kaiming", "xavier"),
                   prefix=r"\b", suffix=r"\b"), Name.Builtin),
            # numbers, optionally with a unit: 10 ms, 0.04 / mV, 1e-3
            (rf"({NUMBER_RE})([ \t]*)({UNIT_RE})", bygroups(Number, Whitespace, Keyword.Type)),
            (NUMBER_RE, Number),
            # `/ mV` after a number, `: nA` in an input declaration
            (rf"(/|:)([ \t]*)({UNIT_RE})", bygroups(Operator, Whitespace, Keyword.Type)),
            (NAME_RE, Name),
            (r"<-|->|\+-|\*\*|\+=|-=|>=|<=|==|!=|[<>=+\-*/:]", Operator),
            (r"[{}()\[\],;.]", Punctuation),
            (r"\\\r?\n", Text),
        ],
    }


# ------------------------------------------------------------------ grammar keywords
def grammar_keywords(text: str | None = None) -> set[str]:
    """The reserved words of the Lark grammar (``grammar/spk.lark`` by default):
    every anonymous string terminal that looks like an identifier."""
    from lark import Lark

    if text is None:
        from spikedsl.resources import grammar_path

        text = grammar_path("spk.lark").read_text(encoding="utf-8")
    parser = Lark(text, parser="lalr", lexer="contextual")
    return {t.pattern.value for t in parser.terminals
            if t.pattern.type == "str" and re.fullmatch(NAME_RE, t.pattern.value)}


def keyword_drift(text: str | None = None) -> tuple[set[str], set[str]]:
    """``(missing, extra)``: grammar keywords the highlighters lack, and
    highlighter keywords the grammar does not have."""
    kw = grammar_keywords(text)
    return kw - KEYWORDS, KEYWORDS - kw


# ------------------------------------------------------------------ TextMate
def _alt(ws) -> str:
    return "|".join(sorted(ws, key=lambda w: (-len(w), w)))


def textmate_grammar() -> dict:
    """The TextMate grammar (``source.spk``) of the VS Code extension."""
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/"
                   "tmlanguage.json",
        "name": "spikedsl",
        "scopeName": "source.spk",
        "fileTypes": ["spk"],
        "comment": "Generated by `python -m spikedsl.frontend.highlight --textmate` from the "
                   "word lists of spikedsl/frontend/highlight.py; do not edit by hand.",
        "patterns": [
            {"include": "#comment"},
            {"include": "#string"},
            {"include": "#declaration"},
            {"include": "#derivative"},
            {"include": "#keyword"},
            {"include": "#constant"},
            {"include": "#builtin"},
            {"include": "#quantity"},
            {"include": "#number"},
            {"include": "#operator"},
        ],
        "repository": {
            "comment": {"name": "comment.line.number-sign.spk", "match": "#.*$"},
            "string": {"name": "string.quoted.double.spk", "match": '"[^"\\n]*"'},
            "declaration": {
                "match": rf"\b({_alt(DECLARATIONS[:4])})\s+({NAME_RE})",
                "captures": {"1": {"name": "storage.type.spk"},
                             "2": {"name": "entity.name.type.spk"}},
            },
            "derivative": {
                "match": rf"\b(d{NAME_RE})\s*(/)\s*(dt)\b",
                "captures": {"1": {"name": "variable.other.derivative.spk"},
                             "2": {"name": "keyword.operator.spk"},
                             "3": {"name": "support.variable.spk"}},
            },
            "keyword": {"patterns": [
                {"name": "storage.type.spk", "match": r"\btest\b"},
                {"name": "keyword.control.import.spk", "match": rf"\b({_alt(NAMESPACE)})\b"},
                {"name": "keyword.operator.word.spk", "match": rf"\b({_alt(WORD_OPERATORS)})\b"},
                {"name": "keyword.other.spk", "match": rf"\b({_alt(STATEMENTS)})\b"},
            ]},
            "constant": {"name": "constant.language.spk",
                         "match": rf"\b({_alt(CONSTANTS)})\b"},
            "builtin": {"name": "support.function.builtin.spk",
                        "match": rf"\b({_alt(BUILTINS)})\b(?=\s*\()"},
            "quantity": {
                "match": rf"({NUMBER_RE})\s*({UNIT_RE})",
                "captures": {"1": {"name": "constant.numeric.spk"},
                             "2": {"name": "keyword.other.unit.spk"}},
            },
            "number": {"name": "constant.numeric.spk", "match": rf"\b{NUMBER_RE}"},
            "operator": {"name": "keyword.operator.spk",
                         "match": r"<-|->|\+-|\*\*|\+=|-=|>=|<=|==|!=|[<>=+\-*/:]"},
        },
    }


def textmate_json() -> str:
    return json.dumps(textmate_grammar(), indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ rendering
def render(path: str, out: str, style: str = "default") -> str:
    """Render ``path`` to ``out`` (``.png``/``.gif``/``.jpg`` with Pygments'
    ImageFormatter, ``.svg`` or ``.html``); returns the format used."""
    from pygments import highlight

    with open(path, encoding="utf-8") as fh:
        code = fh.read()
    ext = out.rsplit(".", 1)[-1].lower()
    if ext in ("png", "gif", "jpg", "jpeg", "bmp"):
        from pygments.formatters import ImageFormatter

        fmt = ImageFormatter(style=style, font_name="DejaVu Sans Mono", font_size=15,
                             line_numbers=True, line_number_bg="#f4f4f4",
                             line_number_fg="#999999", image_pad=14, line_pad=3,
                             image_format=ext)
        data = highlight(code, SpkLexer(), fmt)
        with open(out, "wb") as fh:
            fh.write(data)
        return ext
    if ext == "svg":
        from pygments.formatters import SvgFormatter

        fmt = SvgFormatter(style=style, fontfamily="DejaVu Sans Mono, monospace",
                           linenos=True)
    else:
        from pygments.formatters import HtmlFormatter

        fmt = HtmlFormatter(style=style, full=True, linenos="table", title=path)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(highlight(code, SpkLexer(), fmt))
    return ext


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m spikedsl.frontend.highlight")
    p.add_argument("--textmate", metavar="OUT.json",
                   help="write the TextMate grammar ('-' for stdout)")
    p.add_argument("--image", nargs=2, metavar=("OUT", "FILE.spk"),
                   help="render FILE.spk to OUT (.png, .svg or .html)")
    p.add_argument("--style", default="default", help="Pygments style (default: default)")
    a = p.parse_args(argv)
    if a.textmate:
        text = textmate_json()
        if a.textmate == "-":
            print(text, end="")
        else:
            with open(a.textmate, "w", encoding="utf-8") as fh:
                fh.write(text)
    if a.image:
        render(a.image[1], a.image[0], a.style)
    if not (a.textmate or a.image):
        p.print_help()
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
