"""Stage 1: text -> Lark parse tree (LALR, contextual lexer).

Syntax errors become diagnostics with exact line:column.  The parser recovers
at the next statement boundary so that every syntax error of a file is
reported at once.
"""

from __future__ import annotations

import re
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from spikedsl.errors import Collector, Loc
from spikedsl.resources import grammar_path

# the reserved words: every quoted word of the grammar (tests/test_highlight.py
# checks them against the parser's terminals)
RESERVED = frozenset(re.findall(r'"([A-Za-z_]\w*)"', grammar_path("spk.lark").read_text(
    encoding="utf-8")))

_TOKEN_NAMES = {
    "_NL": "end of statement",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "NAME": "a name",
    "NUMBER": "a number",
    "INT": "an integer",
    "STRING": "a string",
    "UNIT": "a unit",
    "COMPARE": "a comparison",
    "EQUAL": "'='",
    "COMMA": "','",
    "COLON": "':'",
    "SLASH": "'/'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "DOT": "'.'",
    "$END": "end of file",
}


class _PostLex:
    """Drops newlines inside () and [] and merges runs of separators."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        last_nl = True  # separators at the very start are dropped too
        for tok in stream:
            if tok.type == "_NL":
                if depth == 0 and not last_nl:
                    last_nl = True
                    yield tok
                continue
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif tok.type in ("LBRACE", "RBRACE"):
                depth = 0
            last_nl = tok.type == "LBRACE"
            yield tok


@lru_cache(maxsize=1)
def parser() -> Lark:
    from spikedsl.cache import key_path

    with open(grammar_path("spk.lark"), encoding="utf-8") as fh:
        text = fh.read()
    kw = dict(parser="lalr", lexer="contextual", postlex=_PostLex(),
              propagate_positions=True, maybe_placeholders=True)
    path = key_path("grammar", text, "lark")
    if path is not None:
        try:
            return Lark(text, cache=path, **kw)
        except Exception:
            pass
    return Lark(text, **kw)


def _describe(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line" if "\n" in tok.value else "';'"
    if tok.type == "$END":
        return "end of file"
    return repr(tok.value)


def _expected(names) -> str:
    names = sorted({_TOKEN_NAMES.get(n, n.lower() if n.isupper() and len(n) > 1 else n)
                    for n in names if not n.startswith("__")})
    names = [n if not n.isupper() else f"'{n.lower()}'" for n in names]
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def parse_text(text: str, file: str, errors: Collector, max_errors: int = 25) -> Tree | None:
    """Parse ``text``; every syntax error goes to ``errors``.

    Recovery: after an error, the offending line is blanked (its braces kept,
    so the block structure survives) and the file is parsed again, so later
    errors are reported with their own exact positions.  An error on a line
    that was already blanked is a consequence of the blanking and is not
    reported (no cascades).
    """
    p = parser()
    lines = text.split("\n")
    blanked: set[int] = set()
    ok = True
    for _ in range(max_errors):
        try:
            tree = p.parse("\n".join(lines))
        except UnexpectedInput as e:
            ok = False
            line = _error_line(e, len(lines))
            if line in blanked:
                break
            _report(e, file, errors)
            if line < 1:
                break
            blanked.add(line)
            lines[line - 1] = "".join(c if c in "{}" else " " for c in lines[line - 1])
            continue
        return tree if ok else None
    return None


def _error_line(e: UnexpectedInput, n: int) -> int:
    if isinstance(e, UnexpectedToken) and e.token.type == "$END":
        return 0  # nothing to blank: an unclosed block
    if isinstance(e, UnexpectedEOF):
        return 0
    line = e.line if isinstance(e.line, int) else 0
    if isinstance(e, UnexpectedToken) and e.token.type == "_NL":
        # the statement is incomplete at its end: blank the line it belongs to
        line = e.token.line
        if "\n" in e.token.value:
            line = e.token.line
    return line if 1 <= line <= n else 0


def _report(e: UnexpectedInput, file: str, errors: Collector) -> None:
    if isinstance(e, UnexpectedCharacters):
        ch = e.char if hasattr(e, "char") else "?"
        errors.add("syntax-char", Loc(file, e.line, e.column, e.line, e.column + 1),
                   found=repr(ch))
        return
    if isinstance(e, UnexpectedEOF):
        errors.add("syntax-eof", Loc(file, max(e.line, 1), max(e.column, 1)),
                   expected=_expected(e.expected))
        return
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            line = getattr(tok, "line", None) or e.line
            col = getattr(tok, "column", None) or e.column
            errors.add("syntax-eof", Loc(file, max(line or 1, 1), max(col or 1, 1)),
                       expected=_expected(e.expected))
            return
        loc = Loc(file, tok.line, tok.column, tok.end_line or tok.line,
                  tok.end_column or tok.column + len(tok.value))
        value = str(tok.value)
        if value in RESERVED and "NAME" in e.expected:
            errors.add("reserved-word", loc, name=value)
            return
        errors.add("syntax", loc, found=_describe(tok), expected=_expected(e.expected))
        return
    errors.add("syntax", Loc(file, e.line or 1, e.column or 1), found="input",
               expected="valid syntax")
