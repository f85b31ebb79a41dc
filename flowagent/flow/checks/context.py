"""Shared state for the flow checks: the loaded flow, where things are, and the findings so far.

Every check reads the flow through the type-guarded accessors here, so a structurally broken
file (a state that is a list, `slots` that is a string...) never makes a check crash: the
structure check has already said what is wrong, and the semantic checks just skip that part.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from flowagent.flow.loader import LoadedFlow, Mark, PathT
from flowagent.flow.report import FileReport, Finding, Severity

BUILTIN_INTENTS = ("yes", "no", "human", "repeat", "restart", "goodbye", "cancel")
BUILTIN_TOOLS = ("transfer", "hangup", "send_dtmf")
ACTION_KEYS = ("ask", "collect", "call", "llm", "transfer", "end", "subflow", "return")
LISTENING_ACTIONS = ("ask", "collect", "llm")


def is_typo_of(word: str, candidate: str) -> bool:
    """Could `word` be `candidate` mistyped? Only a slip counts: a few letters out of place
    for its length (one in four), never a different number (`time_1` is not `time_2`) and
    never a different word (`first_time` is not `second_time`, `not_urgent` is not
    `urgent`): a suggestion that means something else would send the call the wrong way."""
    a, b = word.lower().replace(" ", "_"), candidate.lower().replace(" ", "_")
    if a == b:
        return True
    if re.sub(r"\d+", "", a) == re.sub(r"\d+", "", b):
        return False
    short, long_ = sorted((a, b), key=len)
    if long_.startswith(short) and len(long_) - len(short) <= 2 and len(short) >= 2:
        return True  # `goto` for `go`, `nexts` for `next`
    from rapidfuzz.distance import OSA

    distance = OSA.distance(a, b)
    if distance == 2 and min(len(a), len(b)) >= 4 and a[0] == b[0]:
        return True  # `trys` for `tries`
    return distance <= max(1, min(len(a), len(b)) // 4)


def did_you_mean(word: Any, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt name, or None when none is a plausible typo."""
    if not isinstance(word, str):
        return None
    cands = [c for c in candidates if isinstance(c, str)]
    lower = {c.lower(): c for c in cands}
    if word.lower() in lower and lower[word.lower()] != word:
        return lower[word.lower()]
    close = difflib.get_close_matches(word, cands, n=3, cutoff=0.6)
    close += [lower[c] for c in difflib.get_close_matches(word.lower(), list(lower), n=3,
                                                          cutoff=0.6)]
    for cand in close:
        if is_typo_of(word, cand):
            return cand
    return None


def suggestion_for(word: Any, candidates: Iterable[str], fallback: str | None = None
                   ) -> str | None:
    cands = list(candidates)
    best = did_you_mean(word, cands)
    if best is not None:
        return f"Did you mean `{best}`?"
    return fallback


def quote_list(names: Iterable[str], limit: int = 16) -> str:
    items = [f"`{n}`" for n in names]
    if len(items) > limit:
        return ", ".join(items[:limit]) + " and others"
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def describe(path: PathT) -> str:
    """Plain words for where something is: `state \\`greet\\``, `branch 2 of state \\`menu\\``."""
    p = list(path)
    if not p:
        return "the flow"
    head = p[0]
    if head == "states" and len(p) >= 2:
        base = f"state `{p[1]}`"
        rest = p[2:]
        if not rest:
            return base
        if rest[0] == "next" and len(rest) >= 2 and isinstance(rest[1], int):
            return f"branch {rest[1] + 1} of {base}"
        if rest[0] == "handlers" and len(rest) >= 2 and isinstance(rest[1], int):
            return f"handler {rest[1] + 1} of {base}"
        if rest[0] == "llm":
            return f"the `llm` part of {base}"
        return f"`{rest[0]}` in {base}"
    if head == "slots" and len(p) >= 2:
        base = f"slot `{p[1]}`"
        return base if len(p) == 2 else f"`{p[2]}` in {base}"
    if head == "tools" and len(p) >= 2:
        base = f"tool `{p[1]}`"
        if len(p) >= 4 and p[2] == "args":
            return f"argument `{p[3]}` of {base}"
        return base if len(p) == 2 else f"`{p[2]}` in {base}"
    if head == "intents" and len(p) >= 2:
        return f"intent `{p[1]}`" if len(p) == 2 else f"`{p[2]}` in intent `{p[1]}`"
    if head == "handlers" and len(p) >= 2 and isinstance(p[1], int):
        base = f"global handler {p[1] + 1}"
        return base if len(p) == 2 else f"`{p[2]}` in {base}"
    if head == "providers" and len(p) >= 2:
        base = f"the `{p[1]}` provider"
        return base if len(p) == 2 else f"`{'.'.join(map(str, p[2:]))}` of {base}"
    return "`" + ".".join(str(x) if not isinstance(x, int) else f"[{x + 1}]" for x in p) + "`"


class CheckContext:
    """The flow being checked, position lookups, and the findings collected so far."""

    def __init__(self, loaded: LoadedFlow, *, check_env: bool = True,
                 environ: dict[str, str] | None = None,
                 validate_other: Callable[[Path], FileReport] | None = None) -> None:
        self.loaded = loaded
        self.file = loaded.path
        self.text = loaded.text
        self.data: dict[str, Any] = loaded.data if isinstance(loaded.data, dict) else {}
        self.positions = loaded.positions
        self.check_env = check_env
        self.environ = environ
        self.findings: list[Finding] = []
        #: values sub-flows called from this flow give back (filled in by the sub-flow check)
        self.returned_vars: set[str] = set()
        #: validates another flow file (a sub-flow) the way this one is validated; given by
        #: `validate.run_checks`, so the checks need not import the validator
        self.validate_other = validate_other
        self._seen: set[tuple[str, int, int, str]] = set()
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", self.text))]

    # -- findings ------------------------------------------------------------------------------

    def add(self, severity: Severity, code: str, mark: Mark, message: str,
            suggestion: str | None = None) -> None:
        key = (code, mark.line, mark.column, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(severity, code, self.file, mark.line, mark.column, message,
                                     suggestion))

    def error(self, code: str, path: PathT, message: str, suggestion: str | None = None, *,
              key: bool = False, needle: str | None = None) -> None:
        self.add("error", code, self.mark(path, key=key, needle=needle), message, suggestion)

    def warn(self, code: str, path: PathT, message: str, suggestion: str | None = None, *,
             key: bool = False, needle: str | None = None) -> None:
        self.add("warning", code, self.mark(path, key=key, needle=needle), message, suggestion)

    # -- positions -----------------------------------------------------------------------------

    def offset(self, mark: Mark) -> int:
        i = min(max(mark.line - 1, 0), len(self._line_starts) - 1)
        return self._line_starts[i] + mark.column - 1

    def mark_at(self, offset: int) -> Mark:
        i = bisect.bisect_right(self._line_starts, offset) - 1
        return Mark(i + 1, offset - self._line_starts[i] + 1)

    def mark(self, path: PathT, *, key: bool = False, needle: str | None = None) -> Mark:
        """Where to point for `path`: its key (key=True), its value, or — with `needle` — the
        first place that text appears inside the value (e.g. the bad name in a template)."""
        path = tuple(path)
        if key:
            return self.positions.of(path)
        m = self.positions.value_of(path)
        if needle:
            found = self.find_in_value(path, m, needle)
            if found is not None:
                return found
        return m

    def find_in_value(self, path: PathT, m: Mark, needle: str) -> Mark | None:
        value = self.get(path)
        size = len(value) if isinstance(value, str) else 40
        start = self.offset(m)
        end = min(len(self.text), start + 2 * size + 80)
        i = self.text.find(needle, start, end)
        return self.mark_at(i) if i >= 0 else None

    def source_line(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    # -- typed access --------------------------------------------------------------------------

    def get(self, path: PathT) -> Any:
        cur: Any = self.data
        for p in path:
            in_list = isinstance(p, int) and isinstance(cur, list) and 0 <= p < len(cur)
            if in_list or (isinstance(cur, dict) and p in cur):
                cur = cur[p]
            else:
                return None
        return cur

    def mapping(self, *path: str | int) -> dict[str, Any]:
        v = self.get(path)
        return v if isinstance(v, dict) else {}

    def items(self, *path: str | int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, body) for entries of a named map whose body is itself a map."""
        for k, v in self.mapping(*path).items():
            if isinstance(v, dict):
                yield k, v

    def listing(self, *path: str | int) -> list[Any]:
        v = self.get(path)
        return v if isinstance(v, list) else []

    # -- names ---------------------------------------------------------------------------------

    @property
    def state_names(self) -> list[str]:
        return list(self.mapping("states"))

    @property
    def slot_names(self) -> list[str]:
        return list(self.mapping("slots"))

    @property
    def tool_names(self) -> list[str]:
        return list(self.mapping("tools"))

    @property
    def intent_names(self) -> list[str]:
        return list(dict.fromkeys([*self.mapping("intents"), *BUILTIN_INTENTS]))

    @property
    def saved_vars(self) -> set[str]:
        out: set[str] = set()
        for _, tool in self.items("tools"):
            save = tool.get("save")
            if isinstance(save, dict):
                out.update(str(k) for k in save)
        return out
