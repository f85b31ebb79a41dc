"""Events into the dialogue engine (what happened on the call); `actions.py` holds what comes out.

The engine is pure: it never does I/O. Whoever drives it (the text `chat`/`test` driver, or a live
call session) feeds it these events and carries out the actions it returns. Keeping this vocabulary
small and typed is what lets the same engine run by text at thousands of turns per second and on a
phone line unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowagent.providers.base import LlmToolCall

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
class ProviderFailed:
    """A speech/LLM provider failed mid-call; the engine answers with the `error` handler.
    (The exception a provider raises is `providers.base.ProviderError`.)"""

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
    | ProviderFailed
    | Hangup
)
