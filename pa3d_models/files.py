"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

Readers never see a partial file; after any error the temporary file is gone and the target is untouched.
Files get the usual permissions (0666 minus the umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write_bytes", "atomic_write_with"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Create ``path`` atomically from ``write(binary_file_handle)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically."""
    raw = data.encode() if isinstance(data, str) else data
    return atomic_write_with(path, lambda fh: fh.write(raw))
