"""Actions out of the dialogue engine: what the driver (text or a live call) carries out, in order.

Every action is a frozen dataclass; the engine never performs one itself. See `events.py` for what
goes in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowagent.providers.base import LlmMessage, LlmToolSpec


@dataclass(frozen=True, slots=True)
class Say:
    """Speak `text`. `static` means the text came from a template with no variables, so its audio
    may be cached per flow+voice. `expect_reply` means the caller is expected to answer (the driver
    starts the no-input timer when playback finishes)."""

    say_id: int
    text: str
    static: bool = False
    interruptible: bool = True
    expect_reply: bool = False




@dataclass(frozen=True, slots=True)
class LlmRequest:
    """Ask the LLM. If `speak`, the driver streams its text to TTS as tokens arrive (with
    `say_id`); either way it answers with an `LlmResult` event carrying `request_id`."""

    request_id: int
    messages: tuple[LlmMessage, ...]
    tools: tuple[LlmToolSpec, ...] = ()
    speak: bool = True
    say_id: int = 0
    purpose: str = "reply"  # reply | extract (structured slot/intent extraction)


@dataclass(frozen=True, slots=True)
class CallTool:
    """Run a declared tool. `request` is the fully rendered HTTP request (method, url, headers,
    json) or, for python tools, {"python": "mod:func", "args": {...}}."""

    call_id: int
    tool: str
    request: dict[str, Any]
    timeout_s: float = 5.0
    retries: int = 0
    #: the largest answer read (settings.tool_response_limit_kb); a bigger one fails the tool
    max_response_bytes: int = 1024 * 1024



@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndCall:
    reason: str = ""  # outcome label


@dataclass(frozen=True, slots=True)
class SendDtmf:
    digits: str


@dataclass(frozen=True, slots=True)
class StartNoInputTimer:
    seconds: float


@dataclass(frozen=True, slots=True)
class StopNoInputTimer:
    pass


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Start (or restart) the driver-owned timer `name`; when it runs out the driver sends
    `TimerExpired(name)`. Used for `max_duration` (emitted once at call start with
    `settings.max_call_s`) and `dtmf` (the inter-digit gap: `settings.dtmf.digit_timeout_s`,
    restarted after every digit of a multi-digit keypad entry). Unlike the no-input timer it
    starts counting immediately, not when playback ends."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Cancel the driver-owned timer `name` if it is running (no `TimerExpired` follows)."""

    name: str


@dataclass(frozen=True, slots=True)
class StateEntered:
    """Informational: the engine moved to `state` (for live views, metrics and tests)."""

    state: str


@dataclass(frozen=True, slots=True)
class FlowProblem:
    """Informational: something in the flow went wrong at run time and the engine took the
    flow's fallback path — a template or expression that failed, or a loop it stopped.
    Drivers log it (`chat` and `flowagent test` print it); it is also in the call record's
    `errors`. `kind`: template | expression | loop; `where`: e.g. "state `offer`, say";
    `source`: the template or expression text (or the loop's states); `error`: why."""

    kind: str
    state: str
    where: str
    source: str
    error: str

    def __str__(self) -> str:
        return f"{self.kind} problem in {self.where}: {self.error} [{self.source}]"


Action = (
    Say
    | LlmRequest
    | CallTool
    | Transfer
    | EndCall
    | SendDtmf
    | StartNoInputTimer
    | StopNoInputTimer
    | StartTimer
    | CancelTimer
    | StateEntered
    | FlowProblem
)
