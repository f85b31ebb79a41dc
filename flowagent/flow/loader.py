"""Load a flow file as plain data while remembering where every key and value came from.

PyYAML silently keeps the last of two duplicate keys and forgets line numbers once data is built.
Flow authors need "file:line:column" for every finding, so this loader builds ordinary dicts/lists
and, beside them, a `Positions` map from a JSON-pointer-like path (tuple of keys/indexes) to the
(line, column) of that node — and it records duplicate keys instead of dropping them.
Lines and columns are 1-based, as editors show them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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


class FlowLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: only `true`/`false` are booleans and `12:30` is text.

    YAML 1.1 (PyYAML's default) reads `yes`, `no`, `on`, `off` as booleans, so `intent: no` or
    a choice synonym `[yes, yeah]` would silently become true/false — a trap for authors.
    """

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {  # type: ignore[misc]
        first: [
            (tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


FlowLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
FlowLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


if getattr(yaml, "__with_libyaml__", False):

    class _FastFlowLoader(yaml.CSafeLoader):
        """The same resolvers on LibYAML's C parser (~10x faster on big flows). Its error
        messages differ, so on an error the text is parsed again with FlowLoader to explain."""

        yaml_implicit_resolvers = FlowLoader.yaml_implicit_resolvers

    _FAST_LOADER: type | None = _FastFlowLoader
else:  # pragma: no cover - PyYAML built without LibYAML
    _FAST_LOADER = None


def _compose(text: str) -> yaml.Node | None:
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass  # parse again below for the plain-Python error message and position
    return yaml.compose(text, Loader=FlowLoader)


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed YAML node tree into plain data, recording positions and duplicates."""

    def __init__(self) -> None:
        self.positions = Positions()
        self.duplicates: list[DuplicateKey] = []
        self._scalar = FlowLoader("")  # only used for scalar resolution/construction
        self._budget = 500_000

    def build(self, node: yaml.Node, path: PathT) -> Any:
        self._budget -= 1
        if self._budget < 0:  # aliases can expand a small file into billions of nodes
            raise FlowYamlError("The file expands to too much data (check any `*alias`).", 1, 1)
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
        if node.tag == "tag:yaml.org,2002:str" and isinstance(node, yaml.ScalarNode):
            return node.value  # the common case, without the constructor's bookkeeping
        value = self._scalar.construct_object(node, deep=True)
        if isinstance(value, _dt.date):
            # `min: 2026-01-31` is a date to YAML; flows treat dates as ISO text (JSON-friendly)
            return value.isoformat()
        return value


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big tree of new objects is made.

    Why: parsing allocates one node per YAML value and the collector runs every 700 new
    objects, walking ever more of them: on a 10,000-state flow it took 60 % of the load time
    (0.65 s with, 0.29 s without), and more the bigger the file. The trees built here hold no
    reference cycles, so nothing is lost by collecting once afterwards instead.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def load_text(text: str, path: str = "<string>") -> LoadedFlow:
    """Parse YAML text. Raises FlowYamlError if it is not a single YAML document."""
    with no_cyclic_gc():
        return _load_text(text, path)


def _load_text(text: str, path: str) -> LoadedFlow:
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "quoted scalar" in (exc.context or ""):
            mark = exc.context_mark  # point at the opening quote, not the end of the file
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
        quote = _unclosed_quote(text, line)
        if quote is not None:
            raise FlowYamlError("A quote opened here is never closed; add the closing quote at "
                                "the end of the value.", quote[0], quote[1]) from None
        layout = _layout_problem(text, line, problem)
        if layout is not None:
            raise FlowYamlError(*layout) from None
        message = _plain_yaml_problem(problem, exc.context, _line(text, line))
        if message.startswith("A value that starts with `{{`"):
            col = _line(text, line).find("{{") + 1 or col  # point at the braces themselves
        raise FlowYamlError(message, line, col) from None
    except yaml.YAMLError as exc:  # pragma: no cover - composer errors are marked
        raise FlowYamlError(f"The file is not valid YAML: {exc}.", 1, 1) from None
    except RecursionError:
        raise FlowYamlError("The file nests too deeply to read.", 1, 1) from None
    builder = _Builder()
    try:
        data = None if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:  # e.g. `!!int abc`, unknown `!tag`
        mark = exc.problem_mark or exc.context_mark
        raise FlowYamlError(
            f"YAML cannot read this value: {(exc.problem or 'bad value').strip()}.",
            mark.line + 1 if mark else 1, mark.column + 1 if mark else 1) from None
    except FlowYamlError:
        raise
    except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as exc:
        # `!!int abc`, `!!int` with nothing after it, `!!float x`...
        raise FlowYamlError(f"YAML cannot read a value in this file ({exc}); check any `!!` tags.",
                            1, 1) from None
    except RecursionError:
        raise FlowYamlError("The file nests too deeply (or an alias refers to itself).",
                            1, 1) from None
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


def _plain_yaml_problem(problem: str, context: str | None, line_text: str) -> str:
    """PyYAML's parser messages, said so that someone who is not a programmer can act on them."""
    p = problem.lower()
    after_colon = line_text.split(":", 1)[1].lstrip() if ":" in line_text else line_text.lstrip()
    if after_colon.startswith(("{{", "{%")) or ("{{" in line_text and "expected ','" in p):
        return ("A value that starts with `{{` must be put in quotes, e.g. "
                "`say: \"{{ context.company }} here\"`.")
    if "mapping values are not allowed" in p:
        return ("A `key: value` appears where YAML did not expect one: this line is probably "
                "indented too far, or the value on it contains `: ` and needs quotes.")
    if "could not find expected ':'" in p:
        return ("YAML expected a `key: value` here: check this line's indentation and that the "
                "key ends with a colon.")
    if "expected <block end>" in p or "expected <block mapping start>" in p:
        return ("This line is not lined up with the lines around it: keys at the same level "
                "must start in the same column.")
    if "found unexpected end of stream" in p or "found unexpected end" in p:
        return "A quote or bracket opened here is never closed."
    if "found undefined alias" in p:
        return "This `*name` refers to an anchor (`&name`) that is not defined above it."
    if "while scanning a quoted scalar" in (context or ""):
        return "A quote opened here is never closed."
    if "found character" in p and "cannot start any token" in p:
        return (f"YAML cannot start a value with this character ({problem.split('(')[0].strip()});"
                " put the value in quotes.")
    return (f"The file is not valid YAML here: {problem or 'syntax error'}"
            + (f" ({context.strip()})" if context else "") + ".")


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- +)?(?P<key>[A-Za-z_][\w-]*) *:(?: |$)")
_GLUED = re.compile(r"^(?P<indent> *)(?:- +)?(?P<key>[A-Za-z_][\w-]*):(?P<value>[^\s/:][^:]*)$")
_NO_COLON = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*) +(?P<value>[^:#]+?)\s*$")


def _content_lines_before(text: str, line: int) -> list[tuple[int, str]]:
    """(number, text) of the lines above `line` that hold something, nearest first."""
    lines = text.splitlines()
    out = []
    for n in range(min(line, len(lines) + 1) - 1, 0, -1):
        body = lines[n - 1]
        if body.strip() and not body.lstrip().startswith("#"):
            out.append((n, body))
    return out


def _layout_problem(text: str, line: int, problem: str) -> tuple[str, int, int] | None:
    """A mistake on or just above the line where YAML gave up, said with the key and the column
    to fix (message, line, column), or None.

    YAML notices a missing colon, a colon without a space or a key out of line only on the
    line AFTER the mistake; the author needs the line of the mistake and what to type."""
    p = problem.lower()
    if not any(k in p for k in ("mapping values are not allowed", "could not find expected ':'",
                                "expected <block end>", "expected <block mapping start>")):
        return None
    above = _content_lines_before(text, line)
    here = _line(text, line)
    if above:
        n, prev = above[0]
        glued = _GLUED.match(prev)
        if glued and "'" not in prev and '"' not in prev:
            key, value = glued["key"], glued["value"].strip()
            col = prev.index(":", len(glued["indent"])) + 2
            return (f"`{key}:{value}` needs a space after the colon, or YAML does not read "
                    f"`{key}` as a key: write `{key}: {value}`.", n, col)
        bare = _NO_COLON.match(prev)
        if (bare and not prev.lstrip().startswith("-") and ":" not in prev
                and _KEY_LINE.match(here) and _indent(here) == _indent(prev)):
            key, value = bare["key"], bare["value"]
            col = len(bare["indent"]) + len(key) + 1
            return (f"The line `{prev.strip()}` has no colon after its key `{key}`: write "
                    f"`{key}: {value}`.", n, col)
    key_here = _KEY_LINE.match(here)
    if key_here is None or not above:
        return None
    key = key_here["key"]
    col_here = _indent(here) + 1
    n, prev = above[0]
    prev_key = _KEY_LINE.match(prev)
    if "mapping values are not allowed" in p:
        if prev_key and _indent(here) > _indent(prev) and prev.split(":", 1)[1].strip():
            col_prev = _indent(prev) + 1
            return (f"`{key}` is indented further (column {col_here}) than `{prev_key['key']}` "
                    f"on line {n} (column {col_prev}), so YAML reads it as part of "
                    f"`{prev_key['key']}`'s value: move `{key}` back to column {col_prev}.",
                    line, col_here)
        return None
    # not lined up: the line moves back out of a block, but to a column no block above uses
    block_indent = _indent(prev)
    if _indent(here) >= block_indent or "{{" in here:
        return None
    levels, lowest = {block_indent}, block_indent
    for _m, body in above:
        if _indent(body) < lowest:
            lowest = _indent(body)
            levels.add(lowest)
    if _indent(here) in levels:
        return None
    first = None  # the first key of the block the line above belongs to
    for m, body in above:
        if _indent(body) < block_indent:
            break
        if _indent(body) == block_indent and _KEY_LINE.match(body):
            first = (m, body)
    if first is None:
        return None
    sibling = _KEY_LINE.match(first[1])
    assert sibling is not None
    return (f"`{key}` starts in column {col_here}, but `{sibling['key']}` on line {first[0]}, "
            f"the key above it in the same block, starts in column {block_indent + 1}: keys at "
            f"the same level must start in the same column, so move `{key}` to column "
            f"{block_indent + 1}.", line, col_here)


def _indent(body: str) -> int:
    return len(body) - len(body.lstrip(" "))


def _unclosed_quote(text: str, error_line: int) -> tuple[int, int] | None:
    """A value on a line before the error that opens a quote and never closes it: YAML then reads
    on into the next lines and reports a confusing error further down. (line, column) or None."""
    lines = text.splitlines()
    for n in range(min(error_line, len(lines)), max(error_line - 30, 0), -1):
        body = lines[n - 1]
        m = re.match(r"^\s*(?:-\s+)?[^\s#:][^:#]*:\s+(['\"])", body) or \
            re.match(r"^\s*-\s+(['\"])", body)
        if not m:
            continue
        q = m.group(1)
        rest = body[m.end():]
        closed = rest.replace("\\" + q, "").count(q) if q == '"' else \
            rest.replace("''", "").count("'")
        if closed == 0 and n < error_line:
            return n, m.end()
    return None


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
