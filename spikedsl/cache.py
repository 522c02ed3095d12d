"""A small on-disk cache (grammar tables, SymPy lowering results) so that a
fresh ``spikedsl check`` process stays well under a second.

Location: ``$SPIKEDSL_CACHE`` or ``$XDG_CACHE_HOME/spikedsl`` or
``~/.cache/spikedsl``; ``SPIKEDSL_CACHE=off`` disables it.  Entries are keyed
by a hash of their input and the spikedsl version, written atomically, and
any unreadable entry is ignored (recomputed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

from spikedsl import __version__
from spikedsl.atomic import write_text


def cache_dir() -> str | None:
    env = os.environ.get("SPIKEDSL_CACHE")
    if env == "off":
        return None
    base = env or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "spikedsl")
    try:
        os.makedirs(base, exist_ok=True)
    except OSError:
        return None
    return base if os.access(base, os.W_OK) else None


def key_path(kind: str, key: str, ext: str = "json") -> str | None:
    d = cache_dir()
    if d is None:
        return None
    h = hashlib.sha256(f"{__version__}\0{kind}\0{key}".encode()).hexdigest()[:32]
    return os.path.join(d, f"{kind}-{h}.{ext}")


def get_json(kind: str, key: str):
    path = key_path(kind, key)
    if path is None or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def put_json(kind: str, key: str, value) -> None:
    path = key_path(kind, key)
    if path is None:
        return
    with contextlib.suppress(OSError):
        write_text(path, json.dumps(value))
