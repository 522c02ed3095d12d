"""Atomic file writes: every file spikedsl writes goes through here.

A file is written to a hidden temporary file in the same directory and moved
into place with ``os.replace``: readers see the old file or the new one, never
a partial one, and a failed write leaves nothing behind.  Errors name the
user's path, not the temporary one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from spikedsl.errors import UserError


class WriteError(UserError, OSError):
    """A file could not be written; the message names the user's path."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; move it into place on success.

    ``suffix`` is appended to the temporary name for writers that insist on an
    extension (``numpy.savez`` adds ``.npz``, matplotlib picks the format from it).
    """
    path = os.fspath(path)
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if isinstance(e, WriteError):
            raise
        err = WriteError(f"cannot write {path}: {e.strerror or e}")
        err.errno = e.errno
        raise err from None
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(tmp)
