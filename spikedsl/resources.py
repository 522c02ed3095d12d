"""Where the grammar, templates and model library live (source tree or wheel)."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_DATA = _PKG / "_data"
_ROOT = _PKG.parent


def _find(sub: str) -> Path:
    for base in (_DATA / sub, _ROOT / sub):
        if base.is_dir():
            return base
    raise FileNotFoundError(f"spikedsl installation is incomplete: no '{sub}' directory")


def grammar_path(name: str) -> Path:
    return _find("grammar") / name


def templates_dir() -> Path:
    return _find("targets")


def specs_dir() -> Path:
    return _find("specs")
