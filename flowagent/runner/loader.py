"""Load a flow file as plain data while remembering where every key and value came from.

PyYAML silently keeps the last of two duplicate keys and forgets line numbers once data is built.
Flow authors need "file:line:column" for every finding, so this loader builds ordinary dicts/lists
and, beside them, a `Positions` map from a JSON-pointer-like path (tuple of keys/indexes) to the
(line, column) of that node — and it records duplicate keys instead of dropping them.
Lines and columns are 1-based, as editors show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathT = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Mark:
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    path: PathT  # path of the mapping that holds the key twice
    key: str
    first: Mark
    second: Mark


@dataclass
class Positions:
    """Where each node starts. `key_marks[path]` is where the key naming `path` was written."""

    value_marks: dict[PathT, Mark] = field(default_factory=dict)
    key_marks: dict[PathT, Mark] = field(default_factory=dict)

    def of(self, path: PathT) -> Mark:
        """Best position for a path: its key if written, else its value, else the nearest parent."""
        p = tuple(path)
        while True:
            if p in self.key_marks:
                return self.key_marks[p]
            if p in self.value_marks:
                return self.value_marks[p]
            if not p:
                return Mark(1, 1)
            p = p[:-1]

    def value_of(self, path: PathT) -> Mark:
        p = tuple(path)
        if p in self.value_marks:
            return self.value_marks[p]
        return self.of(p)


@dataclass
class LoadedFlow:
    path: str
    text: str
    data: Any
    positions: Positions
    duplicates: list[DuplicateKey]


class FlowYamlError(Exception):
    """The text is not YAML at all. Carries a position and a plain-English message."""

    def __init__(self, message: str, line: int, column: int, code: str = "yaml-syntax") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.code = code


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed YAML node tree into plain data, recording positions and duplicates."""

    def __init__(self) -> None:
        self.positions = Positions()
        self.duplicates: list[DuplicateKey] = []
        self._scalar = yaml.SafeLoader("")  # only used for scalar resolution/construction

    def build(self, node: yaml.Node, path: PathT) -> Any:
        self.positions.value_marks[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            seen: dict[Any, Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *anchor` — merge keys, without overriding explicit ones
                    merged = self.build(value_node, path)
                    for src in merged if isinstance(merged, list) else [merged]:
                        if isinstance(src, dict):
                            for k, v in src.items():
                                out.setdefault(k, v)
                    continue
                key = self.build(key_node, (*path, "<key>"))
                if isinstance(key, (list, dict)):
                    key = str(key)
                if not isinstance(key, str):
                    key = str(key) if key is not None else "null"
                km = _mark(key_node)
                if key in seen:
                    self.duplicates.append(DuplicateKey(path, key, seen[key], km))
                seen[key] = km
                child = (*path, key)
                self.positions.key_marks[child] = km
                out[key] = self.build(value_node, child)
            self.positions.value_marks.pop((*path, "<key>"), None)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar.construct_object(node, deep=True)


def load_text(text: str, path: str = "<string>") -> LoadedFlow:
    """Parse YAML text. Raises FlowYamlError if it is not a single YAML document."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        problem = (exc.problem or "").strip()
        if "\\t" in problem or "tab" in problem.lower() or "\t" in _line(text, line)[: col + 1]:
            raise FlowYamlError(
                "This line is indented with a tab character; YAML only allows spaces for "
                "indentation.",
                line,
                _tab_column(text, line) or col,
                code="tab-indent",
            ) from None
        raise FlowYamlError(
            f"The file is not valid YAML here: {problem or 'syntax error'}"
            + (f" ({exc.context.strip()})" if exc.context else "")
            + ".",
            line,
            col,
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - composer errors are marked
        raise FlowYamlError(f"The file is not valid YAML: {exc}.", 1, 1) from None
    builder = _Builder()
    data = None if node is None else builder.build(node, ())
    return LoadedFlow(path, text, data, builder.positions, builder.duplicates)


def load_file(path: str | Path) -> LoadedFlow:
    """Read and parse a flow file. OSError propagates (the caller reports "file missing")."""
    p = Path(path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FlowYamlError(
            "The file is not UTF-8 text; save it as UTF-8 in your editor.", 1, exc.start + 1
        ) from None
    return load_text(text, str(path))


def _line(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _tab_column(text: str, line: int) -> int | None:
    for candidate in (line, line - 1, line + 1):
        s = _line(text, candidate)
        stripped = s.lstrip(" ")
        if stripped.startswith("\t"):
            return len(s) - len(stripped) + 1
    return None
