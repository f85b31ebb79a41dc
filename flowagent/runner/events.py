"""Events into and actions out of the dialogue engine.

The engine is pure: it never does I/O. Whoever drives it (the text `chat`/`test` driver, or a live
call session) feeds it these events and carries out the actions it returns. Keeping this vocabulary
in one module is what lets the same engine run by text at thousands of turns per second and on a
phone line unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Call metadata
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What we know about a call when it starts (from `POST /call`, AudioSocket, or the CLI)."""

    uuid: str
    caller: str = ""
    did: str = ""
    channel: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    #: context data already resolved for this call (static + by_number + fetched)
    context: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Events (into the engine)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    call: CallInfo
    at: float = 0.0  # monotonic seconds since the driver's epoch (for transcripts)


@dataclass(frozen=True, slots=True)
class UserUtterance:
    """A final transcript of one caller turn."""

    text: str
    confidence: float = 1.0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class UserPartial:
    """An interim transcript; the engine may use it for early intent guesses, never for moves."""

    text: str
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str  # one of 0-9 * # A-D
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class NoInput:
    """The caller said nothing for the no-input timeout after our prompt finished playing."""

    at: float = 0.0


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller spoke over `say_id`; `heard` is the part of its text that was actually played."""

    say_id: int
    heard: str
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class SpeechFinished:
    """Playback of `say_id` reached the caller's ear in full (the no-input timer starts now)."""

    say_id: int
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: int
    tool: str
    ok: bool
    status: int | None = None  # HTTP status where there is one
    data: Any = None  # parsed JSON / python tool return value
    error: str = ""  # plain-English reason on failure
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class LlmToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LlmResult:
    """The complete output of one LLM request (text already streamed to TTS if `speak`)."""

    request_id: int
    text: str = ""
    tool_calls: tuple[LlmToolCall, ...] = ()
    ok: bool = True
    error: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class TimerExpired:
    """A driver-owned timer other than no-input fired, e.g. `max_duration`."""

    name: str
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ProviderError:
    """A speech/LLM provider failed mid-call; the engine answers with the `error` handler."""

    kind: str  # asr | llm | tts | sts | vad
    message: str
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Hangup:
    """The caller hung up (socket closed) — the engine finalises the record, emits no speech."""

    at: float = 0.0


Event = (
    CallStarted
    | UserUtterance
    | UserPartial
    | DtmfDigit
    | NoInput
    | BargeIn
    | SpeechFinished
    | ToolResult
    | LlmResult
    | TimerExpired
    | ProviderError
    | Hangup
)

# ---------------------------------------------------------------------------------------------
# Actions (out of the engine)
# ---------------------------------------------------------------------------------------------


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
class LlmMessage:
    role: str  # system | user | assistant | tool
    content: str
    tool_call_id: str = ""
    tool_calls: tuple[LlmToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class LlmToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments


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


@dataclass(frozen=True, slots=True)
class SetSlot:
    name: str
    value: Any


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


Action = (
    Say
    | LlmRequest
    | CallTool
    | SetSlot
    | Transfer
    | EndCall
    | SendDtmf
    | StartNoInputTimer
    | StopNoInputTimer
    | StartTimer
    | CancelTimer
    | StateEntered
)
