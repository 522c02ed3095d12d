"""Syntax highlighting: the Pygments lexer and the VS Code TextMate grammar
(spikedsl/frontend/highlight.py, editors/vscode/)."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import pytest
from pygments.token import Error, Keyword, Name, Number, Operator

from spikedsl.frontend import highlight as H
from spikedsl.frontend.parse import RESERVED
from spikedsl.resources import grammar_path

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
SPECS = sorted(glob.glob(str(ROOT / "specs" / "**" / "*.spk"), recursive=True)
               + glob.glob(str(ROOT / "examples" / "**" / "*.spk"), recursive=True))


def _tokens(text: str):
    return [(t, v) for t, v in H.SpkLexer().get_tokens(text) if v.strip()]


def test_specs_are_found():
    assert len(SPECS) >= 16


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_every_spec_lexes_without_error_tokens(path):
    text = Path(path).read_text(encoding="utf-8")
    toks = list(H.SpkLexer().get_tokens(text))
    errors = [v for t, v in toks if t in Error]
    assert errors == []
    assert "".join(v for _, v in toks).rstrip("\n") == text.rstrip("\n")


def test_a_stray_character_is_an_error_token():
    toks = _tokens("neuron A { state v = 0 $ }")
    assert (Error, "$") in toks


def test_lexer_keywords_equal_the_grammar_keywords():
    assert H.grammar_keywords() == set(H.KEYWORDS)
    assert H.keyword_drift() == (set(), set())
    assert set(H.KEYWORDS) == set(RESERVED)


def test_a_keyword_added_to_the_grammar_is_reported_missing():
    text = grammar_path("spk.lark").read_text(encoding="utf-8")
    grown = text.replace('reset: "reset" [assign]',
                         'reset: "reset" [assign]\n     | "emit" assign -> emit', 1)
    assert grown != text
    missing, extra = H.keyword_drift(grown)
    assert missing == {"emit"} and extra == set()
    shrunk = text.replace('     | "reset" "detach" [assign] -> reset_detach\n', "", 1)
    assert shrunk != text
    assert H.keyword_drift(shrunk) == (set(), {"detach"})


def test_token_kinds():
    toks = _tokens('import "a.spk"\nneuron LIF {\n param tau = 10 ms [trainable]\n'
                   ' dv/dt = -v / tau method exact\n spike v >= 1 and v > 0\n}\n'
                   'network N { layer h[3] = LIF() <- dense(x) }\n')
    kinds = {}
    for t, v in toks:
        kinds.setdefault(v, t)  # first occurrence
    assert kinds["import"] in Keyword.Namespace
    assert kinds["neuron"] in Keyword.Declaration and kinds["LIF"] in Name.Class
    assert kinds["tau"] in Name.Variable
    assert kinds["10"] in Number and kinds["ms"] in Keyword.Type
    assert kinds["dv"] in Name.Variable and kinds["dt"] in Name.Builtin
    assert kinds["method"] in Keyword and kinds["exact"] in Name.Builtin
    assert kinds["and"] in Operator.Word and kinds["<-"] in Operator
    assert kinds["dense"] in Name.Builtin
    assert kinds["h"] in Name.Variable


def test_pygments_finds_the_lexer_by_name_and_file_name():
    from importlib.metadata import entry_points

    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    if not any(ep.name == "spk" for ep in entry_points(group="pygments.lexers")):
        pytest.skip("the installed spikedsl metadata predates the entry point "
                    "(pip install -e . registers it)")

    assert isinstance(get_lexer_by_name("spk"), H.SpkLexer)
    assert isinstance(get_lexer_for_filename("model.spk"), H.SpkLexer)


def test_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points."pygments.lexers"]' in text
    assert 'spk = "spikedsl.frontend.highlight:SpkLexer"' in text


# ------------------------------------------------------------------ VS Code
def test_textmate_grammar_is_the_generated_one():
    on_disk = (VSCODE / "syntaxes" / "spk.tmLanguage.json").read_text(encoding="utf-8")
    assert on_disk == H.textmate_json(), (
        "regenerate with: python -m spikedsl.frontend.highlight --textmate "
        "editors/vscode/syntaxes/spk.tmLanguage.json")


def _tm_words(grammar: dict) -> set[str]:
    rep = grammar["repository"]
    pats = [rep["declaration"]["match"]] + [p["match"] for p in rep["keyword"]["patterns"]]
    words = set()
    for p in pats:
        for group in re.findall(r"\\b\(?([a-z_|]+)\)?\\b|\\b\(([a-z_|]+)\)", p):
            for g in group:
                words.update(w for w in g.split("|") if w)
    return words


def test_textmate_keywords_equal_the_grammar_keywords():
    g = json.loads((VSCODE / "syntaxes" / "spk.tmLanguage.json").read_text(encoding="utf-8"))
    assert _tm_words(g) == H.grammar_keywords()


def test_textmate_patterns_match_real_specs():
    g = H.textmate_grammar()
    rep = g["repository"]
    text = (ROOT / "specs" / "networks" / "digits_classifier.spk").read_text(encoding="utf-8")
    assert re.search(rep["comment"]["match"], text, re.M)
    text = re.sub(rep["comment"]["match"], "", text, flags=re.M)  # comments match first
    assert re.search(rep["declaration"]["match"], text).group(2) == "DigitsClassifier"
    assert re.search(rep["quantity"]["match"], text).group(0) == "1 ms"
    stmt = rep["keyword"]["patterns"][-1]["match"]
    assert {m.group(0) for m in re.finditer(stmt, text)} >= {"input", "layer", "output"}


def test_vscode_extension_manifest():
    pkg = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    lang = pkg["contributes"]["languages"][0]
    assert lang["extensions"] == [".spk"]
    assert (VSCODE / lang["configuration"]).is_file()
    gram = pkg["contributes"]["grammars"][0]
    assert gram["scopeName"] == "source.spk" and (VSCODE / gram["path"]).is_file()
    conf = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert conf["comments"]["lineComment"] == "#"
    assert ["{", "}"] in conf["brackets"]
    inc = re.compile(conf["indentationRules"]["increaseIndentPattern"])
    assert inc.search("neuron LIF {") and not inc.search("    state v = 0")
    assert re.search(conf["indentationRules"]["decreaseIndentPattern"], "  }")


# ------------------------------------------------------------------ rendering
def test_render_html_and_svg(tmp_path):
    src = ROOT / "specs" / "neurons" / "lif.spk"
    assert H.render(str(src), str(tmp_path / "a.html")) == "html"
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "tau_mem" in html and "<span" in html
    assert H.render(str(src), str(tmp_path / "a.svg")) == "svg"
    assert (tmp_path / "a.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_render_png(tmp_path):
    pytest.importorskip("PIL")
    from pygments.formatters.img import FontNotFound

    out = tmp_path / "a.png"
    try:
        H.render(str(ROOT / "specs" / "neurons" / "if.spk"), str(out))
    except FontNotFound:
        pytest.skip("no monospace font for Pygments' ImageFormatter")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
