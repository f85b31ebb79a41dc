"""Conversation tests: YAML scripts of caller turns and what the agent must do (`flowagent test`).

Written by the same non-developers who write flows, so the format is small and reads aloud
(full guide: docs/testing-flows.md)::

    today: 2026-03-02                 # optional: pin "today" so "next Friday" is stable
    now: 2026-03-02T10:00 Europe/London   # optional: fix the clock (`now`, `hours`, today)
    tools:                            # canned tool responses for every test (tools.py format)
      get_quote: {response: {price: 450, quote_id: Q-1}}
    tests:
      - name: happy path
        call: {caller: "+447700900123", did: "+441134960000"}   # optional
        tools: {...}                  # optional: replaces the file's canned responses per tool
        slots: {name: Jane Smith}     # optional: filled before the call starts (also `vars`)
        turns:
          - expect: {say_contains: Swift Removals}               # checks the greeting
          - caller: I'd like a quote
            expect: {state: details, say_contains: postcode}
          - dtmf: "0"
          - silence: true
          - hangup: true

A turn is one caller input — `caller` (text), `dtmf` (digits), `silence: true`, `hangup: true`,
`timer: max_duration` — or none (then `expect` checks what is already there, e.g. the greeting).
Expectations: `say_contains`, `say_not_contains`, `say_matches` (regex), `state`, `slots`, `vars`,
`tool_called` ({name, args} or a name), `tool_not_called`, `transferred` (true or the target),
`ended`, `outcome`. `say_*` look at the agent's lines of that turn. In `slots`/`vars`, `null`
means "not filled": the expectation fails when the slot holds a value.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedError, CannedTools, parse_canned
from flowagent.flow.compiler import CompiledFlow
from flowagent.flow.loader import FlowYamlError, LoadedFlow, load_file

TURN_INPUTS = ("caller", "dtmf", "silence", "hangup", "timer")
EXPECT_KEYS = (
    "say_contains", "say_not_contains", "say_matches", "state", "slots", "vars", "tool_called",
    "tool_not_called", "transferred", "ended", "outcome",
)
TEST_KEYS = ("name", "call", "tools", "turns", "today", "now", "slots", "vars")
FILE_KEYS = ("flow", "today", "now", "tools", "tests")


class TestFileError(ValueError):
    """The tests file itself is wrong: `file:line:column: sentence`."""

    __test__ = False


@dataclass
class TurnSpec:
    index: int
    kind: str | None  # caller | dtmf | silence | hangup | timer | None
    value: Any
    expect: dict[str, Any]
    line: int


@dataclass
class TestSpec:
    __test__ = False
    name: str
    call: CallInfo
    tools: dict[str, Any]
    turns: list[TurnSpec]
    today: _dt.date | None
    line: int
    now: _dt.datetime | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class TestResult:
    __test__ = False
    name: str
    passed: bool
    failure: str = ""  # the failed expectation, one plain sentence
    conversation: list[str] = field(default_factory=list)  # "caller: ..." / "agent: ..." lines
    turn: int | None = None
    duration_s: float = 0.0


def _err(loaded: LoadedFlow, path: tuple[Any, ...], message: str) -> TestFileError:
    m = loaded.positions.of(path)
    return TestFileError(f"{loaded.path}:{m.line}:{m.column}: {message}")


def _date(value: Any) -> _dt.date | None:
    if value is None:
        return None
    if isinstance(value, _dt.date):
        return value
    return _dt.date.fromisoformat(str(value))


_MOMENT = re.compile(r"^(?P<when>\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2})?"
                     r"(?: ?(?:[+-]\d{2}:?\d{2}|Z))?)(?: (?P<zone>\S+))?$")


def parse_moment(value: Any, default_zone: str = "") -> _dt.datetime:
    """`2026-03-02T10:00 Europe/London` -> an aware datetime. Without a zone: the flow's
    `timezone` (else UTC). Raises ValueError with a plain sentence."""
    from flowagent.flow.hours import HoursError, zone

    text = str(value).strip()
    m = _MOMENT.match(text)
    if not m:
        raise ValueError(f"`now` must be a date and time like 2026-03-02T10:00 Europe/London, "
                         f"not {text!r}")
    when = _dt.datetime.fromisoformat(m.group("when").replace(" ", "T", 1)
                                      .replace("Z", "+00:00"))
    if when.tzinfo is not None:
        return when
    try:
        return when.replace(tzinfo=zone(m.group("zone") or default_zone))
    except HoursError as exc:
        raise ValueError(str(exc)) from None


def load_tests(path: str | Path, flow_zone: str = "") -> tuple[list[TestSpec], dict[str, Any]]:
    """Read and check a tests file. Raises TestFileError with file:line:column."""
    try:
        loaded = load_file(path)
    except FlowYamlError as exc:
        raise TestFileError(f"{path}:{exc.line}:{exc.column}: {exc.message}") from None
    data = loaded.data
    if isinstance(data, list):
        data = {"tests": data}
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        raise _err(loaded, (), "A tests file needs a `tests:` list.")
    for k in data:
        if k not in FILE_KEYS:
            raise _err(loaded, (k,), f"Unknown key `{k}`; the top level may have "
                                     f"{', '.join(FILE_KEYS)}.")
    try:
        file_tools = parse_canned(data.get("tools"), "tools")
        file_today = _date(data.get("today"))
    except (CannedError, ValueError) as exc:
        raise _err(loaded, ("tools",), str(exc)) from None
    try:
        file_now = parse_moment(data["now"], flow_zone) if data.get("now") else None
    except ValueError as exc:
        raise _err(loaded, ("now",), str(exc)) from None
    specs: list[TestSpec] = []
    for i, t in enumerate(data["tests"]):
        where: tuple[Any, ...] = ("tests", i)
        if not isinstance(t, dict):
            raise _err(loaded, where, "Each test must be a mapping with `name` and `turns`.")
        for k in t:
            if k not in TEST_KEYS:
                raise _err(loaded, (*where, k),
                           f"Unknown key `{k}` in a test; use {', '.join(TEST_KEYS)}.")
        name = str(t.get("name") or f"test {i + 1}")
        call_raw = t.get("call") or {}
        call = CallInfo(
            uuid=f"test-{i + 1}",
            caller=str(call_raw.get("caller", "+447700900123")),
            did=str(call_raw.get("did", "")),
            metadata=dict(call_raw.get("metadata") or {}),
        )
        try:
            tools = dict(file_tools)
            tools.update(parse_canned(t.get("tools"), f"tests[{i}].tools"))
            today = _date(t.get("today")) or file_today
        except (CannedError, ValueError) as exc:
            raise _err(loaded, (*where, "tools"), str(exc)) from None
        try:
            now = parse_moment(t["now"], flow_zone) if t.get("now") else file_now
        except ValueError as exc:
            raise _err(loaded, (*where, "now"), str(exc)) from None
        prefill: dict[str, dict[str, Any]] = {}
        for key in ("slots", "vars"):
            given = t.get(key) or {}
            if not isinstance(given, dict):
                raise _err(loaded, (*where, key), f"`{key}` must be a mapping, e.g. "
                                                  "`{name: Jane Smith}`.")
            prefill[key] = dict(given)
        turns_raw = t.get("turns")
        if not isinstance(turns_raw, list) or not turns_raw:
            raise _err(loaded, (*where, "turns"), f"Test {name!r} needs a list of `turns`.")
        turns = []
        for j, turn in enumerate(turns_raw):
            tw = (*where, "turns", j)
            if not isinstance(turn, dict):
                raise _err(loaded, tw, "Each turn must be a mapping, e.g. `- caller: hello`.")
            inputs = [k for k in TURN_INPUTS if k in turn]
            unknown = [k for k in turn if k not in (*TURN_INPUTS, "expect")]
            if unknown:
                raise _err(loaded, (*tw, unknown[0]),
                           f"Unknown key `{unknown[0]}` in a turn; use one of "
                           f"{', '.join(TURN_INPUTS)} and `expect`.")
            if len(inputs) > 1:
                raise _err(loaded, tw, f"A turn has one input, not {' and '.join(inputs)}.")
            expect = turn.get("expect") or {}
            if not isinstance(expect, dict):
                raise _err(loaded, (*tw, "expect"), "`expect` must be a mapping.")
            for k in expect:
                if k not in EXPECT_KEYS:
                    raise _err(loaded, (*tw, "expect", k),
                               f"Unknown expectation `{k}`; use one of {', '.join(EXPECT_KEYS)}.")
            kind = inputs[0] if inputs else None
            value = turn.get(kind) if kind else None
            if kind == "caller" and isinstance(value, bool):
                value = "yes" if value else "no"  # YAML reads a bare `yes` as true
            turns.append(TurnSpec(j + 1, kind, value, expect, loaded.positions.of(tw).line))
        specs.append(TestSpec(name, call, tools, turns, today, loaded.positions.of(where).line,
                              now, prefill["slots"], prefill["vars"]))
    return specs, data


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _same(expected: Any, actual: Any) -> bool:
    if expected == actual:
        return True
    if isinstance(expected, _dt.date):
        return expected.isoformat() == str(actual)
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return float(expected) == float(actual)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    return str(expected).strip().lower() == str(actual).strip().lower() and not isinstance(
        actual, (bool, type(None))
    )


def check(expect: Mapping[str, Any], conv: Conversation, lines: list[str],
          tool_start: int) -> str | None:
    """The first expectation that does not hold, as a plain sentence; None if all hold."""
    said = " ".join(lines)
    low = said.lower()
    for key, want in expect.items():
        if key == "say_contains":
            for w in _as_list(want):
                if str(w).lower() not in low:
                    return f"expected the agent to say {str(w)!r}, but it said {said!r}"
        elif key == "say_not_contains":
            for w in _as_list(want):
                if str(w).lower() in low:
                    return f"expected the agent not to say {str(w)!r}, but it said {said!r}"
        elif key == "say_matches":
            for w in _as_list(want):
                if not re.search(str(w), said, re.I):
                    return f"expected the agent's words to match /{w}/, but it said {said!r}"
        elif key == "state":
            if conv.state != str(want):
                return f"expected to be in state {want!r}, but it is in {conv.state!r}"
        elif key in ("slots", "vars"):
            have = conv.slots if key == "slots" else conv.vars
            for name, value in (want or {}).items():
                if name not in have or have[name] is None:
                    if value is None:
                        continue
                    return f"expected {key[:-1]} {name} to be {value!r}, but it is not set"
                if value is None:
                    return (f"expected {key[:-1]} {name} to be empty, but it is "
                            f"{have[name]!r}")
                if not _same(value, have[name]):
                    return f"expected {key[:-1]} {name} to be {value!r}, but it is {have[name]!r}"
        elif key == "tool_called":
            for w in _as_list(want):
                problem = _tool_called(w, conv, tool_start)
                if problem:
                    return problem
        elif key == "tool_not_called":
            called = [e.tool for e in conv.tools.log[tool_start:]]
            for w in _as_list(want):
                if str(w) in called:
                    return f"expected the {w} tool not to be called, but it was"
        elif key == "transferred":
            target = conv.transferred_to
            if want is False and target is not None:
                return f"expected no transfer, but the call was transferred to {target!r}"
            if want is not False and target is None:
                return "expected the call to be transferred, but it was not"
            if want not in (True, False) and str(want) != str(target):
                return f"expected a transfer to {want!r}, but it went to {target!r}"
        elif key == "ended":
            if bool(want) != conv.ended:
                return ("expected the call to have ended, but it is still going" if want
                        else "expected the call to still be going, but it has ended")
        elif key == "outcome":
            outcome = conv.engine.record.outcome
            if str(want) != outcome:
                return f"expected the outcome {want!r}, but it is {outcome or 'not set'!r}"
    return None


def _tool_called(want: Any, conv: Conversation, start: int) -> str | None:
    name = want.get("name") if isinstance(want, dict) else str(want)
    args = want.get("args") if isinstance(want, dict) else None
    calls = [e for e in conv.tools.log[start:] if e.tool == name]
    if not calls:
        made = ", ".join(e.tool for e in conv.tools.log[start:]) or "none"
        return f"expected the {name} tool to be called, but it was not (tools called: {made})"
    if args:
        for entry in calls:
            sent = entry.request.get("json") or entry.request.get("args") or {}
            if isinstance(sent, dict) and _same(args, sent):
                return None
        sent = calls[-1].request.get("json") or calls[-1].request.get("args")
        return f"expected the {name} tool to be called with {args!r}, but it was sent {sent!r}"
    return None


def offline_llm(flow: CompiledFlow) -> Any:
    """The flow's LLM if it is the scripted `fake` provider (deterministic, no network);
    otherwise None — conversation tests never call a real model."""
    spec = flow.providers.get("llm")
    if not spec or spec.get("name") != "fake":
        return None
    from flowagent.providers import registry

    options = {k: v for k, v in dict(spec.get("options") or {}).items()}
    return registry.create("llm", "fake", _thaw(options))


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


async def run_test(flow: CompiledFlow, spec: TestSpec) -> TestResult:
    began = time.perf_counter()
    runner = CannedTools(spec.tools)
    conv = Conversation(flow, runner, offline_llm(flow), today=spec.today, now=spec.now)
    convo: list[str] = []
    try:
        conv.engine.prefill(spec.slots, spec.vars)
    except ValueError as exc:
        return TestResult(spec.name, False, f"the test's `slots` cannot be used: {exc}",
                          convo, None, time.perf_counter() - began)

    def agent(lines: list[str]) -> None:
        convo.extend(f"agent: {line}" for line in lines)

    try:
        lines = await conv.start(spec.call)
        convo.extend(f"problem: {p.kind} in {p.where}: {p.error} [{p.source}]"
                     for p in conv.executor.problems)
        problems_seen = len(conv.executor.problems)
        agent(lines)
        tool_start = 0
        for turn in spec.turns:
            if turn.kind is not None:
                if conv.ended:
                    return TestResult(spec.name, False, "the call had already ended before this "
                                      "turn", convo, turn.index, time.perf_counter() - began)
                tool_start = len(runner.log)
                kind, value = turn.kind, turn.value
                if kind == "caller":
                    convo.append(f"caller: {value}")
                    lines = await conv.say(str(value))
                elif kind == "dtmf":
                    convo.append(f"caller: [keys {value}]")
                    lines = await conv.dtmf(str(value))
                elif kind == "silence":
                    convo.append("caller: [silence]")
                    lines = await conv.silence()
                elif kind == "hangup":
                    convo.append("caller: [hangs up]")
                    lines = await conv.hangup()
                elif kind == "timer":
                    convo.append(f"system: [timer {value}]")
                    lines = await conv.timer(str(value))
                for fault in conv.executor.problems[problems_seen:]:
                    convo.append(f"problem: {fault.kind} in {fault.where}: "
                                 f"{fault.error} [{fault.source}]")
                problems_seen = len(conv.executor.problems)
                agent(lines)
                for e in runner.log[tool_start:]:
                    status = "ok" if e.result.ok else f"failed: {e.result.error}"
                    convo.append(f"tool: {e.tool} ({status})")
            problem = check(turn.expect, conv, lines, tool_start)
            if problem:
                return TestResult(spec.name, False, f"turn {turn.index} (line {turn.line}): "
                                  f"{problem}", convo, turn.index, time.perf_counter() - began)
    except Exception as exc:  # a crash is a failing test with the conversation so far
        return TestResult(spec.name, False, f"the run crashed: {exc!r}", convo, None,
                          time.perf_counter() - began)
    return TestResult(spec.name, True, "", convo, None, time.perf_counter() - began)


def run_tests(flow: CompiledFlow, specs: list[TestSpec],
              name_filter: str | None = None) -> list[TestResult]:
    async def main() -> list[TestResult]:
        out = []
        for spec in specs:
            if name_filter and name_filter.lower() not in spec.name.lower():
                continue
            out.append(await run_test(flow, spec))
        return out

    return asyncio.run(main())


def junit_xml(results: list[TestResult], suite: str) -> str:
    root = ET.Element("testsuite", name=suite, tests=str(len(results)),
                      failures=str(sum(not r.passed for r in results)),
                      time=f"{sum(r.duration_s for r in results):.3f}")
    for r in results:
        case = ET.SubElement(root, "testcase", classname=suite, name=r.name,
                             time=f"{r.duration_s:.3f}")
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=r.failure)
            fail.text = "\n".join(r.conversation)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
