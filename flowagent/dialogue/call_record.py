"""The call record: everything worth keeping about one call, built by the engine as it runs.

Why a separate module: the record is the product's memory of a call. The engine appends to it, the
runtime fills in the per-turn latency fields it alone can measure, and the store / control API /
`call_ended` webhook all serialise it with `to_dict()`. Keeping it a plain dataclass with no I/O
means a record exists (and can be written) even when a call ends abnormally.

Secrets never enter a record: tool requests are stored through `redact_request`, which blanks
header values and any field whose name looks like a credential.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

_SECRET_NAME = re.compile(r"(key|token|secret|password|authorization|auth|cookie)", re.I)
REDACTED = "[redacted]"


def redact_request(request: dict[str, Any]) -> dict[str, Any]:
    """A copy of a rendered tool request that is safe to store and log.

    Header values are always blanked (they are where credentials live); body fields whose name
    looks like a credential are blanked too; query strings are dropped from the URL because API
    keys are often passed there.
    """
    out: dict[str, Any] = {}
    for key, value in request.items():
        if key == "headers" and isinstance(value, dict):
            out[key] = {h: REDACTED for h in value}
        elif key == "url" and isinstance(value, str):
            out[key] = value.split("?", 1)[0] + ("?…" if "?" in value else "")
        elif isinstance(value, dict):
            out[key] = _redact_mapping(value)
        else:
            out[key] = value
    return out


def _redact_mapping(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_NAME.search(k) else _redact_mapping(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_mapping(v) for v in value]
    return value


@dataclass(slots=True)
class TranscriptEntry:
    """One line of the conversation. `heard` is set on agent lines the caller interrupted: the
    part of the text that was actually played before the barge-in."""

    at: float
    who: str  # caller | agent | system
    text: str
    state: str
    heard: str | None = None
    say_id: int | None = None


@dataclass(slots=True)
class ToolCallRecord:
    call_id: int
    tool: str
    request: dict[str, Any]  # already redacted
    state: str
    at: float
    status: int | None = None
    ok: bool | None = None  # None while the call is in flight
    error: str = ""
    duration_s: float | None = None


@dataclass(slots=True)
class TurnLatency:
    """Latency of one caller turn, in seconds on the runtime's monotonic clock.

    The engine creates one per caller turn; the runtime (which sees audio) fills the fields.
    `None` means "not measured" (e.g. text chat, or no LLM in that turn).
    """

    index: int
    state: str
    end_of_speech: float | None = None
    asr_final: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_frame: float | None = None


@dataclass(slots=True)
class CallRecord:
    uuid: str
    flow: str
    caller: str = ""
    did: str = ""
    channel: str = ""
    started_at: float = field(default_factory=time.time)  # wall clock, seconds since epoch
    ended_at: float | None = None
    outcome: str = ""  # completed | transferred | hangup_by_caller | error | <end outcome label>
    end_reason: str = ""
    transfer_target: str = ""
    transcript: list[TranscriptEntry] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    turns: list[TurnLatency] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: the call's audio when it was recorded (runner/recording.py): relative path, duration...
    recording: dict[str, Any] | None = None

    # -- helpers used by the engine -----------------------------------------------------------

    def add(self, at: float, who: str, text: str, state: str, **extra: Any) -> TranscriptEntry:
        entry = TranscriptEntry(at=at, who=who, text=text, state=state, **extra)
        self.transcript.append(entry)
        return entry

    def agent_line(self, say_id: int) -> TranscriptEntry | None:
        for entry in reversed(self.transcript):
            if entry.say_id == say_id:
                return entry
        return None

    def tool_call(self, call_id: int) -> ToolCallRecord | None:
        for rec in reversed(self.tool_calls):
            if rec.call_id == call_id:
                return rec
        return None

    def finish(self, outcome: str, reason: str = "") -> None:
        """Mark the call over. The first outcome wins (a hang-up after a transfer stays
        `transferred`)."""
        if self.ended_at is None:
            self.ended_at = time.time()
        if not self.outcome:
            self.outcome = outcome
            self.end_reason = reason

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: what the store writes, `GET /calls/{uuid}` returns and the
        `call_ended` webhook carries."""
        d = asdict(self)
        d["duration_s"] = self.duration_s
        d["slots"] = _jsonable(self.slots)
        d["vars"] = _jsonable(self.vars)
        if d["recording"] is None:
            del d["recording"]  # absent, not null, when the call was not recorded
        return d


def call_ended_key(call_id: str) -> str:
    """The idempotency key of a call's `call_ended` webhook: the same whichever node sends it
    (the call's own node at the end, or another that closed it as `node_lost`)."""
    return f"{call_id}:call_ended"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
