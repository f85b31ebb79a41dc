"""Per-turn latency rows of a call: from the caller's end of speech to our first frame.

One row per answered caller turn: when the caller stopped, and how long after that the
recogniser's final, the LLM's first token, the first TTS audio and the first frame on the socket
came. `runner_ms` is our own share: the first frame minus the last provider milestone before it.
Rows go to the call record (`latency`), the API, the web view and `/metrics`.

"When the caller stopped" is the end of their last speech frame as our VAD judged it, whoever
ended the turn (our silence rule after `end_of_turn_ms`, or the recogniser's endpointing): what
the caller waits is counted, not what follows our decision. Rows that are not a reply's wait are
not kept: a turn in which no words were heard has no reply (`discard`), and only an utterance
the engine issued after the caller stopped (`say_id` above the row's floor) closes a row, not
the next prompt of a reply already queued before.
"""

from __future__ import annotations

import time
from typing import Any

from flowagent.dialogue.call_record import CallRecord
from flowagent.runner.services import CallMetrics

MILESTONES = ("asr_final", "llm_first_token", "tts_first_audio")


class LatencyRows:
    def __init__(self, metrics: CallMetrics, t0: float) -> None:
        self.metrics = metrics
        self.t0 = t0
        self.rows: list[dict[str, Any]] = []
        self._turn: dict[str, float] = {}
        self._open = False
        self._spec: tuple[bool, str] | None = None  # (hit, why) of this turn's prepared reply
        self._ended_by = ""
        #: utterances with say_id up to this were issued before the open row's turn ended
        self._floor = 0

    @property
    def open(self) -> bool:
        return self._open

    def begin(self, end_of_speech: float, say_floor: int = 0, ended_by: str = "") -> None:
        """The caller stopped speaking at `end_of_speech` (monotonic): a new row starts.
        `say_floor`: the last say_id issued so far (those are not this turn's reply).
        `ended_by`: what ended the turn (see `Listener.turn_ended_by`), kept in the row."""
        self._turn = {"end_of_speech": end_of_speech}
        self._ended_by = ended_by
        self._open = True
        self._spec = None
        self._floor = say_floor

    def discard(self) -> None:
        """The turn held no words (noise, or the empty answer to a `Finalize` after the
        recogniser had already ended the turn): nothing answers it, so it has no row."""
        self._open = False
        self._turn = {}
        self._spec = None

    def mark(self, name: str, at: float | None = None) -> None:
        if self._open and name not in self._turn:
            self._turn[name] = time.monotonic() if at is None else at

    def speculation(self, hit: bool, why: str) -> None:
        self._spec = (hit, why)

    def first_frame(self, at: float, state: str, record: CallRecord | None,
                    say_id: int | None = None) -> None:
        """Our first frame of utterance `say_id` reached the socket: if that utterance answers
        the open row's turn (issued after it ended), the row is complete."""
        if not self._open or (say_id is not None and 0 <= say_id <= self._floor):
            return
        self.mark("first_frame", at)
        self._close(state, record)

    def _close(self, state: str, record: CallRecord | None) -> None:
        self._open = False
        t = self._turn
        eos = t.get("end_of_speech")
        if eos is None:
            return

        def ms(k: str) -> float | None:
            return None if k not in t else round((t[k] - eos) * 1000, 2)

        row: dict[str, Any] = {
            "index": len(self.rows),
            "state": state,
            "end_of_speech_s": round(eos - self.t0, 3),
            "asr_final_ms": ms("asr_final"),
            "llm_first_token_ms": ms("llm_first_token"),
            "tts_first_audio_ms": ms("tts_first_audio"),
            "first_frame_ms": ms("first_frame"),
        }
        if self._ended_by:
            row["turn_end"] = self._ended_by
        marks = [t[k] for k in MILESTONES if k in t]
        if "first_frame" in t and marks:
            row["runner_ms"] = round((t["first_frame"] - max(marks)) * 1000, 2)
        spec, self._spec = self._spec, None
        if spec is not None:  # preemptive generation: was the prepared reply used?
            row["preemptive"] = "hit" if spec[0] else "miss"
            if spec[1]:
                row["preemptive_miss"] = spec[1]
        self.rows.append(row)
        m = self.metrics.latency
        if "first_frame" in t:
            m["turn"].observe(t["first_frame"] - eos)
            if spec is not None:  # stage="turn_preemptive_hit" / "..._miss" on /metrics
                m[f"turn_preemptive_{row['preemptive']}"].observe(t["first_frame"] - eos)
        if "asr_final" in t:
            m["asr"].observe(t["asr_final"] - eos)
        if "runner_ms" in row:
            m["runner"].observe(row["runner_ms"] / 1000)
        if record is not None and record.turns:
            lat = record.turns[-1]
            if lat.first_frame is None:
                lat.end_of_speech = eos - self.t0
                lat.asr_final = _at(t, "asr_final", self.t0)
                lat.llm_first_token = _at(t, "llm_first_token", self.t0)
                lat.tts_first_audio = _at(t, "tts_first_audio", self.t0)
                lat.first_frame = _at(t, "first_frame", self.t0)


def _at(t: dict[str, float], key: str, t0: float) -> float | None:
    return t[key] - t0 if key in t else None
