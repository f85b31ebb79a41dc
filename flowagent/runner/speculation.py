"""Preemptive (speculative) reply generation: the pieces the call session uses.

Why: with cloud providers a turn costs ASR final (150-200 ms after the caller stops) + LLM first
token (30-50 ms) + TTS first audio (50-80 ms), one after another. A streaming recogniser usually
knows the caller's words (its interim transcript) by the time our VAD decides the caller has
stopped, so the session asks "what would we answer to that?" at once — on a *fork* of the
dialogue engine (`Engine.fork()`: the real engine is not touched) — and runs the side-effect-free
part of the answer ahead: TTS of `Say`s and the streamed LLM reply with its TTS, into a
`HeldAudio` buffer, not the player. When the final transcript arrives:

* it matches (after `normalise`: case, punctuation, whitespace) — the real engine handles the
  final as usual (so the transcript, slots, `transcription` webhook and call record come from
  the final words) and, if its answer begins with the same speech (`same_plan`), the held audio
  goes to the player at once and the prepared work carries on live (a *hit*);
* otherwise (different words, a different answer, the caller spoke again, barge-in, hang-up, a
  provider fault while preparing) the prepared work is cancelled and thrown away unheard (a
  *miss*); the final is handled exactly as without speculation.

Nothing with side effects runs speculatively: `speech_plan` stops at the first action that is
not speech (tool call, transfer, hang-up, DTMF, silent LLM extraction); those only ever come from
the real engine, after the final transcript.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from flowagent.dialogue import actions as act
from flowagent.dialogue.events import LlmResult
from flowagent.runner.out_stream import AudioSink
from flowagent.runner.utterance import Utterance

_PUNCT = re.compile(r"[^\w\s']+|(?<!\w)'|'(?!\w)")


def normalise(text: str) -> str:
    """Words only: lower case, punctuation dropped, whitespace collapsed ("Yes, please." ==
    "yes please"). Apostrophes inside words are kept ("it's" != "its")."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


#: actions that only shape what the session does itself (timers, state name): they never stop
#: a plan, and they are not run speculatively either (the real engine emits them again)
_NEUTRAL = (act.StateEntered, act.StartNoInputTimer, act.StopNoInputTimer, act.StartTimer,
            act.CancelTimer)


def speech_plan(actions: list[Any]) -> list[act.Say | act.LlmRequest]:
    """The speech at the head of an answer: `Say`s and speaking `LlmRequest`s up to the first
    action with an effect outside the call's audio (tool call, transfer, end, DTMF, silent LLM
    extraction)."""
    plan: list[act.Say | act.LlmRequest] = []
    for a in actions:
        if isinstance(a, act.Say) or (isinstance(a, act.LlmRequest) and a.speak):
            plan.append(a)
        elif not isinstance(a, _NEUTRAL):
            break
    return plan


def same_plan(prepared: list[act.Say | act.LlmRequest], real: list[act.Say | act.LlmRequest]
              ) -> bool:
    """Whether the real answer starts with exactly the speech that was prepared. `Say`s must be
    identical (same id, words, flags); LLM requests must have the same id, tools and history,
    the messages compared after `normalise` (the reply was generated from the interim words)."""
    if len(prepared) != len(real) or not prepared:
        return False
    for a, b in zip(prepared, real, strict=True):
        if type(a) is not type(b):
            return False
        if isinstance(a, act.Say):
            if a != b:
                return False
            continue
        assert isinstance(b, act.LlmRequest)
        if (a.request_id, a.say_id, a.speak, a.purpose, a.tools) != (
                b.request_id, b.say_id, b.speak, b.purpose, b.tools):
            return False
        if len(a.messages) != len(b.messages):
            return False
        for m, n in zip(a.messages, b.messages, strict=True):
            if m.role != n.role or m.tool_call_id != n.tool_call_id \
                    or m.tool_calls != n.tool_calls:
                return False
            if m.content != n.content and normalise(m.content) != normalise(n.content):
                return False
    return True


class HeldAudio:
    """Audio made ahead of time, held back from the player until `release(out)`; from then on
    everything written goes straight to `out`."""

    __slots__ = ("_items", "_out", "held_bytes")

    def __init__(self) -> None:
        self._items: list[tuple[int, bytes | None]] = []  # (say_id, pcm | None = end)
        self._out: AudioSink | None = None
        self.held_bytes = 0

    def add(self, say_id: int, pcm: bytes) -> None:
        if self._out is not None:
            self._out.add(say_id, pcm)
            return
        self._items.append((say_id, pcm))
        self.held_bytes += len(pcm)

    def end(self, say_id: int) -> None:
        if self._out is not None:
            self._out.end(say_id)
            return
        self._items.append((say_id, None))

    def release(self, out: AudioSink) -> None:
        items, self._items = self._items, []
        self._out = out
        for say_id, pcm in items:
            if pcm is None:
                out.end(say_id)
            else:
                out.add(say_id, pcm)

    def discard(self) -> None:
        self._items = []
        self.held_bytes = 0


@dataclass(eq=False)
class Speculation:
    """One reply being prepared for the words `text` heard at the end of the caller's speech."""

    text: str
    norm: str
    started: float = field(default_factory=time.monotonic)
    #: the speech being prepared (None until the fork has answered)
    plan: list[act.Say | act.LlmRequest] | None = None
    sink: HeldAudio = field(default_factory=HeldAudio)
    #: per say_id: the utterance handles (text segments, bytes made) for barge-in accounting
    says: dict[int, Utterance] = field(default_factory=dict)
    #: speaking LLM requests in flight: request_id -> (say_id, text parts) (moved to the session)
    llm_open: dict[int, tuple[int, list[str]]] = field(default_factory=dict)
    #: latency milestones reached while preparing: name -> monotonic time
    marks: dict[str, float] = field(default_factory=dict)
    #: engine events held back until the call adopts the reply
    results: list[LlmResult] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    task: asyncio.Task[Any] | None = None
    live: bool = False  # adopted: writes go to the player, events to the engine
    failed: bool = False  # a provider fault while preparing: never adopt

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.monotonic())

    def cancel(self) -> None:
        """Stop all preparation (the tasks are also owned by the session: hang-up cancels them
        anyway) and forget the held audio."""
        if self.task is not None:
            self.task.cancel()
        for t in list(self.tasks):
            t.cancel()
        if not self.live:
            self.sink.discard()
            self.results.clear()


@dataclass(frozen=True, slots=True)
class Prepared:
    """Stands, in the engine's answer to the final words, for the prepared speech of a hit."""

    spec: Speculation
