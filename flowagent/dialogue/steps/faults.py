"""Named run-time failures of a flow: which state, which template or expression, what error.

A template that fails on a live call (a number formatted as text, a blocked sandbox name) or an
expression that cannot be worked out used to end the call with a generic apology and a bare
exception text in the record. Now the failing piece raises `FlowFault` with everything an author
needs to find it; the engine turns it into a `FlowProblem` action (logged by drivers, printed by
`chat` and `flowagent test`), a line in the record's `errors`, and the flow's own `error` path.
"""

from __future__ import annotations

from flowagent.dialogue.actions import FlowProblem


class FlowFault(Exception):
    """Raised inside the engine; caught once per event in `Engine.handle`.

    `kind`: template | expression | loop; `where`: "state `offer`, say" or "slot `end_date`,
    valid_when"; `source`: the template or expression (or the loop's states); `error`: why."""

    def __init__(self, kind: str, state: str, where: str, source: str, error: str) -> None:
        super().__init__(error)
        self.kind = kind
        self.state = state
        self.where = where
        self.source = source
        self.error = error

    def problem(self) -> FlowProblem:
        return FlowProblem(self.kind, self.state, self.where, self.source, self.error)

    def sentence(self) -> str:
        """One line for the record and the log."""
        if self.kind == "loop":
            return f"loop in {self.where}: {self.error} ({self.source})"
        source = self.source if len(self.source) <= 120 else self.source[:117] + "..."
        return f"{self.kind} error in {self.where}: {self.error} [{source}]"


def short_error(exc: BaseException) -> str:
    """An exception as a plain clause (Jinja's messages are already plain; ours too)."""
    text = str(exc).strip() or type(exc).__name__
    name = type(exc).__name__
    if name in ("SecurityError",):
        return f"blocked for safety: {text}"
    if name in ("UndefinedError", "TypeError", "ValueError", "ZeroDivisionError"):
        return f"{text} ({name})" if name != "UndefinedError" else text
    return text
