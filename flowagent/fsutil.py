"""Atomic file writes for the on-disk caches (prompt audio, intent embeddings).

Why: several server processes may share one cache directory and any of them may die mid-write;
a reader must see either the old entry or the complete new one, never a truncated file. So:
a temporary file in the same directory, fsync, then `os.replace` (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, tmp_prefix: str) -> None:
    """Create `path` with what `write(file)` writes, all or nothing. Raises OSError (the
    temporary file is removed first); the caller decides whether that matters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
