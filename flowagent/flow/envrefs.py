"""`${NAME}` and `${NAME:-default}` references to environment variables inside flow data.

Secrets never sit in a flow file: an API key is written `${GROQ_API_KEY}` and read from the
environment when the flow is loaded for running. The validator uses `find_refs` to warn about
variables that are not set (with the exact column of the reference); the runtime uses
`expand_tree` to substitute them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ENV_REF", "EnvRef", "MissingEnvError", "expand", "expand_text", "expand_tree",
           "find_refs",
           "iter_tree_refs", "missing_names"]

#: `${NAME}` or `${NAME:-default}`; NAME is a shell-style variable name.
ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True, slots=True)
class EnvRef:
    """One reference inside a string: the variable, its default (None if none) and where it is
    in that string (0-based character offsets)."""

    name: str
    default: str | None
    start: int
    end: int


class MissingEnvError(KeyError):
    """A referenced variable is not set and has no default."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return (f"The environment variable {self.name} is not set; set it (for example in the "
                "service's environment file) or give a default with ${" + self.name + ":-value}.")


def find_refs(text: str) -> list[EnvRef]:
    """All `${...}` references in a string, in order."""
    if "${" not in text:
        return []
    return [EnvRef(m["name"], m["default"], m.start(), m.end()) for m in ENV_REF.finditer(text)]


def expand_text(text: str, environ: Mapping[str, str] | None = None, *, strict: bool = True
                ) -> str:
    """Replace references in one string. A missing variable without default raises
    MissingEnvError when `strict`, else is left as written."""
    if "${" not in text:
        return text
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        name, default = m["name"], m["default"]
        if name in env:
            return env[name]
        if default is not None:
            return default
        if strict:
            raise MissingEnvError(name)
        return m.group(0)

    return ENV_REF.sub(sub, text)


def expand_tree(data: Any, environ: Mapping[str, str] | None = None, *, strict: bool = True
                ) -> Any:
    """A copy of a dict/list tree with every string's references replaced."""
    if isinstance(data, str):
        return expand_text(data, environ, strict=strict)
    if isinstance(data, dict):
        return {k: expand_tree(v, environ, strict=strict) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_tree(v, environ, strict=strict) for v in data]
    return data


def iter_tree_refs(data: Any, path: tuple[str | int, ...] = ()
                   ) -> Iterator[tuple[tuple[str | int, ...], EnvRef]]:
    """(path, ref) for every reference in a tree; paths match `loader.Positions`."""
    if isinstance(data, str):
        for ref in find_refs(data):
            yield path, ref
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from iter_tree_refs(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from iter_tree_refs(v, (*path, i))


def missing_names(data: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Names referenced without a default that are not set (sorted, unique)."""
    env = os.environ if environ is None else environ
    return sorted({r.name for _, r in iter_tree_refs(data)
                   if r.default is None and r.name not in env})


def expand(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Expand a loaded flow for running: set variables and defaults are substituted; a missing
    variable is left as written, so it only fails when the provider/tool using it is used."""
    return expand_tree(data, environ, strict=False)
