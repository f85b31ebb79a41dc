"""Where a `subflow:` path points (its own tiny module: the validator needs it without
importing the compiler and everything the compiler needs)."""

from __future__ import annotations

from pathlib import Path


def subflow_file(written: str, calling_path: str | Path) -> Path:
    """A `subflow:` path, relative to the file of the flow that names it."""
    p = Path(written)
    if p.is_absolute():
        return p
    return Path(calling_path).parent / p
