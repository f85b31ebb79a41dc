"""Barge-in as ONE event that every part of a call handles.

Why: an interruption touches everything at once — the audio on the line, the synthesis and LLM
work in flight, a reply being prepared ahead, the turn being listened to, the latency row. A
hand-written list of cancellations in one place is where a part gets forgotten; instead the call
builds one `Interruption` (what was cut and what the caller heard of it) and hands it to each
part's `on_interruption`, and each part knows what it must drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flowagent.dialogue.events import LlmResult


@dataclass(frozen=True, slots=True)
class Interruption:
    #: the utterance that was cut (0: nothing of ours was playing)
    say_id: int
    #: its words the caller actually heard
    heard: str
    #: monotonic time of the interruption
    at: float
    #: bytes of its audio that reached the socket
    played_bytes: int = 0
    #: LLM replies that were being spoken: each completes its request with the words heard
    #: (so the conversation history holds what the caller heard, not what we meant to say)
    replies: tuple[LlmResult, ...] = ()


class Interruptible(Protocol):
    def on_interruption(self, interruption: Interruption) -> None: ...
