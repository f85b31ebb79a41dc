"""Per-turn latency for speech-to-speech calls: when did the caller stop speaking?

Why this module: an STS provider hears the caller itself, so the pipeline's end-of-turn
detector (our VAD + ASR) does not run. OpenAI Realtime tells us when its VAD decided the caller
stopped (`input_audio_buffer.speech_stopped`); an AVR STS service tells us nothing. For those,
`LocalEndpointer` is a cheap energy detector on the caller's frames (one RMS per frame, no
model) that only *measures* — it never decides turns, the provider does.

The end of speech it reports is the time of the caller's last loud frame (the true end of their
words). It is known for sure only after `silence_ms` of quiet, or earlier when the provider
starts replying after at least `min_gap_ms` of quiet (a fast service may answer before our
silence window ends) — `claim()` covers that case.
"""

from __future__ import annotations

import time
from typing import Any

from flowagent import audio
from flowagent.dialogue.call_record import CallRecord, TurnLatency
from flowagent.runner.services import CallMetrics

#: RMS (0..1) above which a caller frame counts as speech (about -40 dBFS; line silence is lower)
SPEECH_RMS = 0.01
#: speech needed before a turn counts (a click or a cough is not a turn)
MIN_SPEECH_MS = 120
#: quiet after speech that ends the turn by itself
SILENCE_MS = 500
#: quiet after speech that lets the provider's first reply audio end the turn early
MIN_GAP_MS = 60


class LocalEndpointer:
    """Feed caller frames with `feed(pcm, ms, now)`; returns an end-of-speech time (monotonic
    seconds, the last loud frame) once a turn is over, else None."""

    __slots__ = ("_last_loud", "_quiet_ms", "_speech_ms", "min_gap_ms", "silence_ms")

    def __init__(self, silence_ms: int = SILENCE_MS, min_gap_ms: int = MIN_GAP_MS) -> None:
        self.silence_ms = silence_ms
        self.min_gap_ms = min_gap_ms
        self._speech_ms = 0.0
        self._quiet_ms = 0.0
        self._last_loud = 0.0

    def feed(self, pcm: bytes, ms: float, now: float) -> float | None:
        if audio.rms(pcm) >= SPEECH_RMS:
            self._speech_ms += ms
            self._quiet_ms = 0.0
            self._last_loud = now
            return None
        self._quiet_ms += ms
        if self._speech_ms < MIN_SPEECH_MS:
            if self._quiet_ms >= self.silence_ms:
                self._speech_ms = 0.0  # a blip, not a turn
            return None
        if self._quiet_ms >= self.silence_ms:
            return self._take()
        return None

    def claim(self) -> float | None:
        """The provider began a reply: if the caller has been quiet long enough after a turn,
        that turn is over now (its end of speech), else None."""
        if self._speech_ms >= MIN_SPEECH_MS and self._quiet_ms >= self.min_gap_ms:
            return self._take()
        return None

    def _take(self) -> float:
        self._speech_ms = 0.0
        self._quiet_ms = 0.0
        return self._last_loud


class StsLatencyRows:
    """The latency rows of an STS call: caller end of speech (the provider's `speech_stopped`,
    else our `LocalEndpointer`) -> the provider's first audio of the reply
    (`sts_first_audio_ms`) -> its first frame on the socket (`first_frame_ms`); `runner_ms` is
    our share (first frame - first audio), `caller_transcript_ms` when the caller's transcript
    arrived. Only answered turns get a row (like the pipeline)."""

    def __init__(self, metrics: CallMetrics, t0: float) -> None:
        self.metrics = metrics
        self.t0 = t0
        self.rows: list[dict[str, Any]] = []
        self._turn: dict[str, float] = {}
        self._open = False
        self._by = ""  # "provider" | "local_vad": who said the caller stopped
        self._reply = 0  # say_id answering the open turn (0 = no audio yet)
        self._item = ""  # the provider's id of the caller's speech in the open turn
        #: provider's caller item id -> call time its speech ended (the transcript's time)
        self.eos_at: dict[str, float] = {}
        self._item_row: dict[str, int] = {}  # caller item id -> index of its latency row
        self._row_eos: dict[int, float] = {}  # latency row index -> its end of speech

    @property
    def open(self) -> bool:
        return self._open

    def begin(self, by: str, *, item_id: str = "", at: float | None = None) -> None:
        """The caller stopped speaking (`at`, monotonic; now if None): a new row."""
        if self._open:
            self._close_unanswered()
        eos = time.monotonic() if at is None else at
        self._turn = {"end_of_speech": eos}
        self._open = True
        self._by = by
        self._reply = 0
        self._item = item_id
        if item_id:  # on the transcript's clock (rounded to the ms like every line's time)
            self.eos_at[item_id] = round(eos - self.t0, 3)
            self._item_row[item_id] = len(self.rows)

    def reply_started(self, say_id: int) -> None:
        """First audio of reply `say_id` arrived from the provider."""
        if self._open and not self._reply and say_id > 0:
            self._reply = say_id
            self._turn["sts_first_audio"] = time.monotonic()

    def caller_transcript(self, item_id: str) -> None:
        now = time.monotonic()
        index = self._item_row.pop(item_id, None) if item_id else None
        if index is None:
            return
        if self._open and index == len(self.rows):
            self._turn.setdefault("caller_transcript", now)
        elif 0 <= index < len(self.rows):
            row = self.rows[index]
            eos = self._row_eos.get(index)
            if eos is not None and row.get("caller_transcript_ms") is None:
                row["caller_transcript_ms"] = round((now - eos) * 1000, 2)

    def first_frame(self, say_id: int, at: float, state: str, record: CallRecord | None) -> None:
        if self._open and say_id > 0 and say_id == self._reply:
            self._turn["first_frame"] = at
            self._close(state, record)

    def _close_unanswered(self) -> None:
        """No reply reached the caller (noise, or an interruption before any audio)."""
        self._open = False
        self._item_row.pop(self._item, None)

    def _close(self, state: str, record: CallRecord | None) -> None:
        self._open = False
        t = self._turn
        eos = t["end_of_speech"]

        def ms(k: str) -> float | None:
            return None if k not in t else round((t[k] - eos) * 1000, 2)

        row: dict[str, Any] = {
            "index": len(self.rows),
            "state": state,
            "end_of_speech_s": round(eos - self.t0, 3),
            "end_of_speech_by": self._by,
            "sts_first_audio_ms": ms("sts_first_audio"),
            "first_frame_ms": ms("first_frame"),
            "caller_transcript_ms": ms("caller_transcript"),
        }
        if "sts_first_audio" in t:
            row["runner_ms"] = round((t["first_frame"] - t["sts_first_audio"]) * 1000, 2)
        self.rows.append(row)
        m = self.metrics.latency
        m["turn"].observe(t["first_frame"] - eos)
        if "sts_first_audio" in t:
            m["sts_first_audio"].observe(t["sts_first_audio"] - eos)
        if "runner_ms" in row:
            m["runner"].observe(row["runner_ms"] / 1000)
        if record is not None:
            record.turns.append(TurnLatency(
                index=row["index"], state=state, end_of_speech=eos - self.t0,
                tts_first_audio=(t["sts_first_audio"] - self.t0) if "sts_first_audio" in t
                else None,
                first_frame=t["first_frame"] - self.t0))
        self._row_eos[row["index"]] = eos
