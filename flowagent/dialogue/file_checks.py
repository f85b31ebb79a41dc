"""Findings for the files that travel with a flow: conversation tests (`*.tests.yaml`) and
canned tool answers (`*.tools.yaml`), so `flowagent validate flows/` checks a whole folder.

Why here and not in `flow/`: these formats belong to the dialogue layer (`conversation_tests`,
`tools`), whose constants they share. Each kind has its own JSON Schema
(`flowagent/schemas/tests.schema.json`, `tools.schema.json`, also for editors), and every
finding carries file:line:column from the same position-keeping loader the flow validator uses,
with the flow validator's codes (`unknown-key`, `wrong-type`, `missing-key`, `bad-value`,
`unknown-state`, `unknown-tool`). Beyond the schema, the files are checked against their flow
when it can be found: a canned answer for a tool the flow does not have, or a test expecting a
state that does not exist, is an error the author would otherwise only meet when the test runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

from flowagent.flow.checks.context import BUILTIN_TOOLS, did_you_mean
from flowagent.flow.loader import FlowYamlError, LoadedFlow, PathT, load_file
from flowagent.flow.report import FileReport, Finding

Kind = Literal["flow", "tests", "tools"]

#: file name endings of the companion files (everything else YAML is a flow)
SUFFIXES: dict[str, Kind] = {".tests.yaml": "tests", ".tests.yml": "tests",
                             ".tools.yaml": "tools", ".tools.yml": "tools"}
_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
_ANSWER_KEYS = ("response", "status", "fail")
_KIND_WORDS = {"tests": "tests file", "tools": "tool answers file"}


def kind_of(path: str | Path) -> Kind:
    """What a file is, from its name: `x.tests.yaml`, `x.tools.yaml`, else a flow."""
    name = Path(path).name.lower()
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return "flow"


def yaml_files(folder: Path) -> list[Path]:
    """Every `.yaml` / `.yml` file under a folder (hidden folders skipped), in name order."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
            out.append(path)
    return out


def flow_beside(path: Path, data: Any = None) -> Path | None:
    """The flow a companion file belongs to: a tests file's `flow:`, else the file of the same
    name without `.tests` / `.tools` (None when there is none)."""
    if isinstance(data, dict) and isinstance(data.get("flow"), str):
        named = path.parent / data["flow"]
        return named if named.is_file() else None
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            candidate = path.with_name(name[: -len(suffix)] + suffix[suffix.rindex("."):])
            return candidate if candidate.is_file() else None
    return None


@cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads((_SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


class _Findings:
    """Collects findings for one file, each at the position of the path it is about."""

    def __init__(self, loaded: LoadedFlow) -> None:
        self.loaded = loaded
        self.items: list[Finding] = []
        self._seen: set[tuple[str, int, int]] = set()

    def add(self, severity: Literal["error", "warning"], code: str, path: PathT, message: str,
            suggestion: str | None = None, *, key: bool = False) -> None:
        pos = self.loaded.positions
        mark = pos.of(path) if key else pos.value_of(path)
        if (code, mark.line, mark.column) in self._seen:
            return
        self._seen.add((code, mark.line, mark.column))
        self.items.append(Finding(severity, code, self.loaded.path, mark.line, mark.column,
                                  message, suggestion))


def validate_companion(path: str | Path, kind: Kind) -> FileReport:
    """Check a tests file or a tool answers file; never raises for any input."""
    name = str(path)
    try:
        loaded = load_file(path)
    except FileNotFoundError:
        return _unusable(name, "file-not-found", f"There is no file called {name}.",
                         "Check the file name and the folder you are running the command in.")
    except OSError as exc:
        return _unusable(name, "file-unreadable", f"{name} cannot be read: {exc.strerror}.")
    except FlowYamlError as exc:
        return _unusable(name, exc.code, exc.message, None, exc.line, exc.column)
    report = FileReport(name, flow=loaded, kind=kind)
    found = _Findings(loaded)
    data = loaded.data
    if kind == "tests" and isinstance(data, list):
        data = {"tests": data}  # a bare list of tests is accepted by `flowagent test`
    if not isinstance(data, dict):
        what = "empty" if data is None else "not a set of `key: value` lines"
        report.findings.append(Finding(
            "error", "wrong-type", name, 1, 1,
            f"This {_KIND_WORDS[kind]} is {what}.",
            "Start from flows/removals.tests.yaml." if kind == "tests"
            else "Write one `tool_name:` per tool with its `response:`."))
        report.unusable = data is None
        return report
    try:
        for error in _validator(kind).iter_errors(data):
            _schema_finding(found, kind, error)
        flow_path = flow_beside(Path(path), data)
        if flow_path is not None:
            _against_flow(found, kind, data, flow_path)
        _misspelt_answer_keys(found, kind, data)
    except Exception as exc:  # the promise: a finding, never a traceback
        found.items.append(Finding(
            "error", "internal-error", name, 1, 1,
            f"flowagent could not finish checking this file ({type(exc).__name__}: {exc}).",
            "Please report this with the file attached."))
    report.findings.extend(found.items)
    report.sort()
    return report


def _unusable(path: str, code: str, message: str, suggestion: str | None = None,
              line: int = 1, column: int = 1) -> FileReport:
    return FileReport(path, [Finding("error", code, path, line, column, message, suggestion)],
                      unusable=True, kind=kind_of(path))


_TYPE_WORDS = {"object": "a set of `key: value` lines", "array": "a list", "string": "text",
               "integer": "a whole number", "number": "a number", "boolean": "true or false"}


def _where(kind: str, path: tuple[Any, ...]) -> str:
    """`tests[2].turns[0].silence` said for people: "`silence` in turn 1 of test 3"."""
    parts = list(path)
    where, used = "the file", 0
    if kind == "tests" and len(parts) >= 2 and parts[0] == "tests" and isinstance(parts[1], int):
        where, used = f"test {parts[1] + 1}", 2
        if len(parts) >= 4 and parts[2] == "turns" and isinstance(parts[3], int):
            where, used = f"turn {parts[3] + 1} of {where}", 4
            if len(parts) >= 5 and parts[4] == "expect":
                where, used = f"the `expect` of {where}", 5
    tools_at = 0 if kind == "tools" else parts.index("tools") + 1 if "tools" in parts else -1
    if tools_at >= 0 and len(parts) > tools_at:
        where, used = f"the canned answer for `{parts[tools_at]}`", tools_at + 1
        if len(parts) > used and isinstance(parts[used], int):
            where, used = f"answer {parts[used] + 1} for `{parts[tools_at]}`", used + 1
    rest = [p for p in parts[used:] if isinstance(p, str)]
    if rest:
        return f"`{rest[-1]}`" if used == 0 else f"`{rest[-1]}` in {where}"
    return where


def _schema_finding(found: _Findings, kind: str, error: Any) -> None:
    path = tuple(error.absolute_path)
    where = _where(kind, path)
    validator, value = error.validator, error.validator_value
    if validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        for extra in extras:
            guess = did_you_mean(extra, allowed)
            found.add("error", "unknown-key", (*path, extra),
                      f"`{extra}` is not something {where} can have.",
                      f"Did you mean `{guess}`?" if guess else
                      "Use one of " + ", ".join(f"`{a}`" for a in allowed) + ".", key=True)
    elif validator == "required":
        missing = next((k for k in value if k not in error.instance), value[0])
        found.add("error", "missing-key", path, f"{where[0].upper()}{where[1:]} is missing "
                  f"`{missing}`.", f"Add `{missing}:`.", key=True)
    elif validator == "type":
        types = value if isinstance(value, list) else [value]
        said = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        found.add("error", "wrong-type", path, f"{where[0].upper()}{where[1:]} should be {said}.",
                  key=False)
    elif validator == "minItems":
        found.add("error", "wrong-type", path,
                  f"{where[0].upper()}{where[1:]} is an empty list; give at least one item.")
    elif validator in ("enum", "const"):
        options = value if isinstance(value, list) else [value]
        found.add("error", "bad-value", path,
                  f"{where[0].upper()}{where[1:]} cannot be {json.dumps(error.instance)}; use "
                  + " or ".join(f"`{json.dumps(o)}`" for o in options) + ".",
                  "Leave the key out instead." if value is True else None)
    elif validator == "pattern" and path and path[-1] == "now":
        found.add("error", "bad-value", path,
                  f"{where[0].upper()}{where[1:]} should be a date and time with its time "
                  f"zone (not {error.instance!r}).",
                  "For example `now: 2026-03-02T10:00 Europe/London`.")
    elif validator == "pattern":
        found.add("error", "bad-value", path,
                  f"{where[0].upper()}{where[1:]} should be a date written YYYY-MM-DD "
                  f"(not {error.instance!r}).", "For example `today: 2026-03-02`.")
    elif validator in ("minimum", "maximum"):
        found.add("error", "bad-value", path,
                  f"{where[0].upper()}{where[1:]} should be an HTTP status from 100 to 599.")
    elif validator in ("anyOf", "allOf"):
        # the alternative that got furthest: the deepest complaint that says what is wrong
        # (a `not` only says which alternative it is not)
        inner = [e for e in _descendants(error) if e.validator not in ("not", "anyOf", "allOf")]
        if inner:
            _schema_finding(found, kind, max(inner, key=lambda e: (
                len(e.absolute_path), e.validator != "type")))


def _descendants(error: Any) -> Iterator[Any]:
    for inner in error.context or ():
        yield inner
        yield from _descendants(inner)


def _against_flow(found: _Findings, kind: str, data: dict[str, Any], flow_path: Path) -> None:
    """Names in the companion file that the flow does not have."""
    try:
        flow = load_file(flow_path).data
    except (OSError, FlowYamlError):
        return  # the flow's own validation reports it
    if not isinstance(flow, dict):
        return
    tools, states = _names(flow, flow_path, "", set())
    for path, tool in _canned_tools(kind, data):
        if tool not in tools and tool not in BUILTIN_TOOLS:
            guess = did_you_mean(tool, tools)
            found.add("error", "unknown-tool", path,
                      f"`{tool}` has a canned answer, but {flow_path.name} has no tool called "
                      f"`{tool}`.", f"Did you mean `{guess}`?" if guess else
                      "Use one of " + ", ".join(f"`{t}`" for t in tools) + "." if tools else
                      f"Remove it, or add `{tool}:` under the flow's `tools:`.", key=True)
    if kind != "tests" or not states:
        return
    _check_clock_and_prefill(found, data, flow, flow_path)
    for path, expect in _expectations(data):
        state = expect.get("state")
        if isinstance(state, str) and state not in states:
            guess = did_you_mean(state, states)
            found.add("error", "unknown-state", (*path, "state"),
                      f"This turn expects the state `{state}`, but {flow_path.name} has no "
                      f"state called `{state}`.",
                      f"Did you mean `{guess}`?" if guess else "Check the state's name.")
        for key in ("tool_called", "tool_not_called"):
            named = expect.get(key)
            names: list[Any] = [named.get("name")] if isinstance(named, dict) else \
                named if isinstance(named, list) else [named]
            for tool in names:
                if isinstance(tool, str) and tools and tool not in tools \
                        and tool not in BUILTIN_TOOLS:
                    guess = did_you_mean(tool, tools)
                    found.add("error", "unknown-tool", (*path, key),
                              f"This turn expects the tool `{tool}`, but {flow_path.name} has "
                              f"no tool called `{tool}`.",
                              f"Did you mean `{guess}`?" if guess else "Check the tool's name.")


def _names(flow: dict[str, Any], path: Path, prefix: str, seen: set[str]
           ) -> tuple[list[str], list[str]]:
    """The tools and states a call of this flow can meet: its own, and its sub-flows' (their
    states named `verify_caller.ask`, as the engine and the record name them)."""
    seen.add(str(path.resolve()))
    tools = [t for t in (flow.get("tools") or {}) if isinstance(t, str)] \
        if isinstance(flow.get("tools"), dict) else []
    raw_states = flow.get("states") if isinstance(flow.get("states"), dict) else {}
    assert isinstance(raw_states, dict)
    states = [prefix + s for s in raw_states if isinstance(s, str)]
    for state in raw_states.values():
        written = state.get("subflow") if isinstance(state, dict) else None
        if not isinstance(written, str):
            continue
        sub_path = path.parent / written
        if str(sub_path.resolve()) in seen or not sub_path.is_file():
            continue
        try:
            sub = load_file(sub_path).data
        except (OSError, FlowYamlError):
            continue
        if isinstance(sub, dict):
            label = Path(written).name.rsplit(".", 1)[0]
            more_tools, more_states = _names(sub, sub_path, f"{prefix}{label}.", seen)
            tools += [t for t in more_tools if t not in tools]
            states += more_states
    return tools, states


def _check_clock_and_prefill(found: _Findings, data: dict[str, Any], flow: dict[str, Any],
                             flow_path: Path) -> None:
    """`now:` must name a real time zone; `slots:`/`vars:` filled before a test must be the
    flow's own (a misspelt slot would silently be asked after all)."""
    from flowagent.dialogue.conversation_tests import parse_moment

    zone = str(flow.get("timezone") or "")
    places: list[tuple[PathT, dict[str, Any]]] = [((), data)]
    places += [(("tests", i), t) for i, t in enumerate(data.get("tests") or [])
               if isinstance(t, dict)]
    slots = list(flow.get("slots") or {}) if isinstance(flow.get("slots"), dict) else []
    known_vars = set(flow.get("vars") or {}) if isinstance(flow.get("vars"), dict) else set()
    for tool in (flow.get("tools") or {}).values() if isinstance(flow.get("tools"), dict) \
            else []:
        if isinstance(tool, dict) and isinstance(tool.get("save"), dict):
            known_vars |= set(tool["save"])
    for base, owner in places:
        now = owner.get("now")
        if isinstance(now, str):
            try:
                parse_moment(now, zone)
            except ValueError as exc:
                found.add("error", "bad-value", (*base, "now"), f"{str(exc).rstrip('.')}.",
                          "Use a zone name like `Europe/London`.")
        for name in owner.get("slots") or {} if isinstance(owner.get("slots"), dict) else {}:
            if name not in slots:
                guess = did_you_mean(str(name), slots)
                found.add("error", "unknown-slot", (*base, "slots", name),
                          f"This test fills the slot `{name}`, but {flow_path.name} has no "
                          f"slot called `{name}`.",
                          f"Did you mean `{guess}`?" if guess else "Check the slot's name.",
                          key=True)
        for name in owner.get("vars") or {} if isinstance(owner.get("vars"), dict) else {}:
            if name not in known_vars:
                guess = did_you_mean(str(name), sorted(known_vars))
                found.add("error", "unknown-var", (*base, "vars", name),
                          f"This test sets the variable `{name}`, but {flow_path.name} "
                          f"declares no variable `{name}`.",
                          f"Did you mean `{guess}`?" if guess else
                          f"Add `{name}:` under the flow's `vars:`.", key=True)


def _canned_tools(kind: str, data: dict[str, Any]) -> Iterator[tuple[PathT, str]]:
    if kind == "tools":
        yield from (((str(t),), str(t)) for t in data)
        return
    if isinstance(data.get("tools"), dict):
        yield from ((("tools", str(t)), str(t)) for t in data["tools"])
    for i, test in enumerate(data.get("tests") or []):
        if isinstance(test, dict) and isinstance(test.get("tools"), dict):
            yield from ((("tests", i, "tools", str(t)), str(t)) for t in test["tools"])


def _expectations(data: dict[str, Any]) -> Iterator[tuple[PathT, dict[str, Any]]]:
    for i, test in enumerate(data.get("tests") or []):
        turns = test.get("turns") if isinstance(test, dict) else None
        for j, turn in enumerate(turns if isinstance(turns, list) else []):
            if isinstance(turn, dict) and isinstance(turn.get("expect"), dict):
                yield ("tests", i, "turns", j, "expect"), turn["expect"]


def _answers(kind: str, data: dict[str, Any]) -> Iterable[tuple[PathT, Any]]:
    sections: list[tuple[PathT, Any]] = [((), data)] if kind == "tools" else \
        [(("tools",), data.get("tools"))] + [
            (("tests", i, "tools"), t.get("tools")) for i, t in
            enumerate(data.get("tests") or []) if isinstance(t, dict)]
    for base, section in sections:
        if not isinstance(section, dict):
            continue
        for tool, spec in section.items():
            items = spec if isinstance(spec, list) else [spec]
            for n, item in enumerate(items):
                yield ((*base, str(tool), n) if isinstance(spec, list) else (*base, str(tool)),
                       item)


_WORD = re.compile(r"^[a-z_]+$")


def _misspelt_answer_keys(found: _Findings, kind: str, data: dict[str, Any]) -> None:
    """`{respnse: {...}}` is read as the JSON answer itself (any mapping is), so a misspelt
    `response`, `status` or `fail` would silently change the test: say so."""
    for path, item in _answers(kind, data):
        if not isinstance(item, dict) or set(item) <= set(_ANSWER_KEYS):
            continue
        for key in item:
            guess = did_you_mean(key, _ANSWER_KEYS) if isinstance(key, str) \
                and _WORD.match(key) else None
            if guess is not None and guess != key and guess not in item:
                found.add("warning", "unknown-key", (*path, key),
                          f"`{key}` looks like a misspelt `{guess}`; as written, the whole "
                          "mapping is taken as the tool's JSON answer.",
                          f"Write `{guess}:`.", key=True)
