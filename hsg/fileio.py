"""Writing result files so that a failure leaves either the old file or the new one.

A full disk or an unwritable folder discovered after minutes of work, or half-way through
a write, used to leave a traceback and a 0-byte targets.json. Commands now check their
output location before the work (`ensure_writable`) and write through a temporary file in
the same folder that is renamed over the target only when complete (`atomic_write_*`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(OSError):
    """An output location that cannot be written; the message names it and says why."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def ensure_writable(path: str | Path, *, directory: bool = False) -> Path:
    """Create ``path`` (a folder) or its parent (a file) and prove a file can be written
    there, by writing and removing a probe; raises `OutputError` naming the location."""
    path = Path(path)
    folder = path if directory else path.parent
    if not directory and path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hsg-probe-", dir=folder)
        try:
            os.write(fd, b"hsg")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {_reason(exc)}") from exc
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
