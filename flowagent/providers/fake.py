"""Fake ASR, LLM, TTS and VAD providers, selectable by name (`fake`) in a flow file.

Why: tests and benchmarks must exercise the real call path (socket, VAD, turn taking, engine,
streaming, pacing) without models or the network, and with latencies we choose. Each fake keeps
the exact interface of `providers/base.py`, so anything that works with a fake works with a real
provider. Options (all optional):

- asr `fake`: `latency_ms` (end of speech -> final transcript, default 0), `latency_ms_max`
  (if set, latency is uniform in [latency_ms, latency_ms_max]), `transcripts` (list: the next one
  is returned at each end of speech; cycles), `fail_after` (raise after N transcripts).
  `interim_ms` (default off): like a streaming recogniser (Deepgram's `is_final: false`
  results), emit the upcoming transcript as an *interim* this many ms after the caller's speech
  starts arriving (first frame louder than about -40 dBFS since the last end of speech), in
  lower case without punctuation as streaming interims often are; speech shorter than that
  gets no interim. `interim_mismatch` (0..1, default 0): probability that the final then
  differs from the interim — the interim lacks the transcript's last word ("um" for a one-word
  transcript) — so the preemptive-generation miss path can be driven.
  `FakeAsrStream.inject(text)` is the text-injection path: the text arrives as a final,
  end-of-turn transcript, as if spoken (the control API exposes it as
  `POST /calls/{uuid}/inject`).
- llm `fake`: `replies` (list, cycled) or `tokens` (N words) streamed with `first_token_ms` (and
  `first_token_ms_max`) then `token_ms` per token; `echo: true` replies "you asked <the last
  user message>" instead (tests see which words a reply answered); `fail: true` raises after
  the first token delay (or `fail_after` calls).
- tts `fake`: a tone of `ms_per_word` (default 300) per word, first audio after `first_audio_ms`
  (and `first_audio_ms_max`), at `tone_hz` (default 440); `word_tones: true` gives each word
  its own pitch (`word_tone_hz(word)`), so a test can tell from the audio which words it heard;
  `fail: true` raises.

Every fake notes what it did in `events` (`FakeEvent`: a process-wide sequence number, the
monotonic time, what, and the text), so tests can assert the order in which things happened
across providers (e.g. "the LLM was asked before the final transcript came") without timing.
- vad `fake`: RMS energy detector; `threshold` is the RMS level (0..1) that maps to probability
  0.5 (default 0.01, about -40 dBFS).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flowagent import audio
from flowagent.providers.base import (
    AsrCapabilities,
    AsrStreamBase,
    LlmChunk,
    LlmMessage,
    LlmToolSpec,
    ProviderError,
    Transcript,
    TtsCapabilities,
    TurnTuning,
)
from flowagent.providers.chunking import chunk_stream
from flowagent.providers.energy_vad import EnergyVadStream


class FakeEvent(NamedTuple):
    seq: int  # process-wide order of events across all fakes
    at: float  # time.monotonic()
    #: interim | final | llm_request | llm_first_token | llm_cancelled (the stream was closed
    #: before its end: the consumer was cancelled) | tts
    what: str
    text: str


_SEQ = itertools.count()
#: speech level (RMS, s16 units) at which the fake ASR counts a frame as the caller talking
_SPEECH_RMS = 0.01 * 32768


def _note(events: list[FakeEvent], what: str, text: str) -> None:
    events.append(FakeEvent(next(_SEQ), time.monotonic(), what, text))
    if len(events) > 10_000:  # benchmarks run for a while: keep the newest
        del events[:5_000]


def word_tone_hz(word: str) -> float:
    """The pitch the fake TTS uses for `word` with `word_tones: true` (300..3250 Hz, 50 Hz
    steps; case and punctuation do not change it)."""
    key = "".join(ch for ch in word.lower() if ch.isalnum())
    return 300.0 + 50.0 * (zlib.crc32(key.encode()) % 60)


def _latency(lo: float, hi: float | None) -> float:
    if hi is not None and hi > lo:
        return random.uniform(lo, hi) / 1000.0
    return lo / 1000.0


# ---------------------------------------------------------------------------------------------
# ASR
# ---------------------------------------------------------------------------------------------


class FakeAsrStream(AsrStreamBase):
    capabilities = AsrCapabilities(sync_audio=True, text_injection=True)

    def __init__(self, owner: FakeAsr) -> None:
        self._owner = owner
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._heard_audio = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._index = 0
        self._interim_timer: asyncio.TimerHandle | None = None
        self._interim_sent = False  # for the utterance in progress

    async def send_audio(self, pcm: bytes) -> None:
        self.send_audio_nowait(pcm)

    def send_audio_nowait(self, pcm: bytes) -> None:
        """The synchronous path (declared in `capabilities`: no coroutine per frame)."""
        if pcm:
            self._heard_audio = True
            if (self._owner.interim_ms is not None and self._interim_timer is None
                    and not self._interim_sent and _rms_of(pcm) >= _SPEECH_RMS):
                self._interim_timer = asyncio.get_running_loop().call_later(
                    self._owner.interim_ms / 1000.0, self._send_interim)

    def _send_interim(self) -> None:
        """What a streaming recogniser has heard so far of the utterance in progress."""
        self._interim_timer = None
        o = self._owner
        text = o.transcript_at(self._index)
        if self._closed or not text:
            return
        self._interim_sent = True
        words = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " '").split()
        if o.interim_mismatch > 0 and random.random() < o.interim_mismatch:
            words = words[:-1] if len(words) > 1 else ["um"]
        text = " ".join(words)
        _note(o.events, "interim", text)
        self._out.put_nowait(Transcript(text=text, is_final=False))

    async def flush(self) -> None:
        """End of speech (our VAD decided): the next scripted transcript, after the latency."""
        self._heard_audio = False
        if self._interim_timer is not None:  # the utterance was shorter than `interim_ms`
            self._interim_timer.cancel()
            self._interim_timer = None
        self._interim_sent = False
        text = self._owner.transcript_at(self._index)
        self._index += 1
        self._later(text, end_of_turn=False)

    def inject(self, text: str) -> None:
        """Text injection: `text` arrives as if the caller had said it and finished the turn."""
        self._later(text, end_of_turn=True, count=False)

    def _later(self, text: str | None, *, end_of_turn: bool, count: bool = True) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._emit(text, end_of_turn, count))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, text: str | None, end_of_turn: bool, count: bool) -> None:
        o = self._owner
        await asyncio.sleep(_latency(o.latency_ms, o.latency_ms_max))
        if count:
            o.emitted += 1
            if o.fail_after is not None and o.emitted > o.fail_after:
                err = ProviderError("the fake ASR was told to fail", provider="fake")
                self._out.put_nowait(err)
                return
        if text is None:
            return
        _note(o.events, "final", text)
        self._out.put_nowait(Transcript(text=text, is_final=True, end_of_turn=end_of_turn))

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self._closed = True
        if self._interim_timer is not None:
            self._interim_timer.cancel()
            self._interim_timer = None
        for t in list(self._tasks):
            t.cancel()
        self._out.put_nowait(None)


@dataclass
class FakeAsr:
    latency_ms: float = 0.0
    latency_ms_max: float | None = None
    transcripts: tuple[str, ...] = ()
    fail_after: int | None = None
    interim_ms: float | None = None
    interim_mismatch: float = 0.0
    name: str = "fake"
    endpointing: bool = False
    emitted: int = 0
    events: list[FakeEvent] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FakeAsr:
        return cls(
            latency_ms=float(options.get("latency_ms", 0)),
            latency_ms_max=_opt_float(options, "latency_ms_max"),
            transcripts=tuple(str(t) for t in options.get("transcripts", ()) or ()),
            fail_after=options.get("fail_after"),
            interim_ms=_opt_float(options, "interim_ms"),
            interim_mismatch=min(1.0, max(0.0, float(options.get("interim_mismatch", 0)))),
        )

    def transcript_at(self, index: int) -> str | None:
        """Each call walks the script from the start; each end of speech takes the next line."""
        if not self.transcripts:
            return None
        return self.transcripts[index % len(self.transcripts)]

    async def open_stream(self, sample_rate: int, language: str) -> FakeAsrStream:
        return FakeAsrStream(self)


# ---------------------------------------------------------------------------------------------
# LLM
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeLlm:
    first_token_ms: float = 0.0
    first_token_ms_max: float | None = None
    token_ms: float = 0.0
    tokens: int = 8
    replies: tuple[str, ...] = ()
    fail: bool = False
    echo: bool = False
    name: str = "fake"
    calls: int = 0
    events: list[FakeEvent] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FakeLlm:
        return cls(
            first_token_ms=float(options.get("first_token_ms", 0)),
            first_token_ms_max=_opt_float(options, "first_token_ms_max"),
            token_ms=float(options.get("token_ms", 0)),
            tokens=int(options.get("tokens", 8)),
            replies=tuple(str(r) for r in options.get("replies", ()) or ()),
            fail=bool(options.get("fail", False)),
            echo=bool(options.get("echo", False)),
        )

    async def stream(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...] = ()
    ) -> AsyncIterator[LlmChunk]:
        n = self.calls
        self.calls += 1
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        _note(self.events, "llm_request", last_user or "")
        done = False
        try:
            await asyncio.sleep(_latency(self.first_token_ms, self.first_token_ms_max))
            if self.fail:
                done = True  # a failure, not a cancellation
                raise ProviderError("the fake LLM was told to fail", provider="fake")
            if self.echo:
                words = f"you asked {last_user or 'nothing'}".split(" ")
            elif self.replies:
                words = self.replies[n % len(self.replies)].split(" ")
            else:
                words = [f"word{i}" for i in range(self.tokens)]
                words[-1] += "."
            _note(self.events, "llm_first_token", last_user or "")
            for i, w in enumerate(words):
                if i and self.token_ms:
                    await asyncio.sleep(self.token_ms / 1000.0)
                yield LlmChunk(text=(w if i == 0 else " " + w))
            yield LlmChunk(finish_reason="stop")
            done = True
        finally:
            if not done:
                _note(self.events, "llm_cancelled", last_user or "")


# ---------------------------------------------------------------------------------------------
# TTS
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeTts:
    first_audio_ms: float = 0.0
    first_audio_ms_max: float | None = None
    ms_per_word: float = 300.0
    tone_hz: float = 440.0
    word_tones: bool = False
    fail: bool = False
    #: behave like a TTS with a continuation API: `synthesize_stream` makes each word's audio
    #: as soon as the word arrives (one first-audio latency per reply, not per clause)
    continuation: bool = False
    #: syntheses after this many never answer (a stalled service; tests of the timeouts)
    stall_after: int | None = None
    syntheses: int = 0
    name: str = "fake"
    events: list[FakeEvent] = field(default_factory=list)

    @property
    def capabilities(self) -> TtsCapabilities:
        return TtsCapabilities(continuation=self.continuation)

    @property
    def voice_id(self) -> str:
        words = ":word-tones" if self.word_tones else ""
        return f"fake:{self.tone_hz}:{self.ms_per_word}{words}"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FakeTts:
        return cls(
            first_audio_ms=float(options.get("first_audio_ms", 0)),
            first_audio_ms_max=_opt_float(options, "first_audio_ms_max"),
            ms_per_word=float(options.get("ms_per_word", 300)),
            tone_hz=float(options.get("tone_hz", 440)),
            word_tones=bool(options.get("word_tones", False)),
            fail=bool(options.get("fail", False)),
            continuation=bool(options.get("continuation", False)),
            stall_after=(int(options["stall_after"]) if options.get("stall_after") is not None
                         else None),
        )

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        _note(self.events, "tts", text)
        self.syntheses += 1
        if self.stall_after is not None and self.syntheses > self.stall_after:
            await asyncio.Event().wait()  # never answers; the caller's timeout ends it
        await asyncio.sleep(_latency(self.first_audio_ms, self.first_audio_ms_max))
        if self.fail:
            raise ProviderError("the fake TTS was told to fail", provider="fake")
        word = audio.tone(self.ms_per_word, self.tone_hz, sample_rate)
        for w in text.split():
            yield audio.tone(self.ms_per_word, word_tone_hz(w), sample_rate) \
                if self.word_tones else word
            await asyncio.sleep(0)

    async def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        if not self.continuation:
            async for chunk in chunk_stream(text_chunks):
                async for pcm in self.synthesize(chunk, sample_rate):
                    yield pcm
            return
        # one utterance kept open: the first audio costs one first-audio latency, then every
        # word is voiced as soon as it has arrived whole
        _note(self.events, "tts_stream", "")
        await asyncio.sleep(_latency(self.first_audio_ms, self.first_audio_ms_max))
        if self.fail:
            raise ProviderError("the fake TTS was told to fail", provider="fake")
        pending = ""
        async for chunk in text_chunks:
            pending += chunk
            *done, pending = pending.split(" ")
            for w in done:
                if w:
                    yield self._word(w, sample_rate)
                    await asyncio.sleep(0)
        if pending.strip():
            yield self._word(pending.strip(), sample_rate)

    def _word(self, word: str, sample_rate: int) -> bytes:
        hz = word_tone_hz(word) if self.word_tones else self.tone_hz
        return audio.tone(self.ms_per_word, hz, sample_rate)


# ---------------------------------------------------------------------------------------------
# VAD
# ---------------------------------------------------------------------------------------------


class FakeVadStream(EnergyVadStream):
    """The energy VAD (`energy_vad.py`), which can be told to break (tests of the fallback)."""

    __slots__ = ("_fail_after", "_frames")

    def __init__(self, threshold: float, fail_after: int | None = None) -> None:
        super().__init__(threshold)
        self._fail_after = fail_after  # tests: the VAD breaks after this many frames
        self._frames = 0

    def probability_now(self, pcm: bytes) -> float:
        if self._fail_after is not None:
            self._frames += 1
            if self._frames > self._fail_after:
                raise ProviderError("fake VAD failure (fail_after)", provider="fake")
        return super().probability_now(pcm)


@dataclass
class FakeVad:
    threshold: float = 0.01
    fail_after: int | None = None
    name: str = "fake"
    turn_tuning: TurnTuning = field(default_factory=TurnTuning)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FakeVad:
        fail = options.get("fail_after")
        return cls(threshold=float(options.get("threshold", 0.01)),
                   fail_after=int(fail) if fail is not None else None)

    def open_stream(self, sample_rate: int) -> FakeVadStream:
        return FakeVadStream(self.threshold, self.fail_after)


_rms = audio.rms_raw


def _rms_of(pcm: bytes) -> float:
    """RMS of s16 PCM in raw units (audioop when present, numpy otherwise)."""
    if _rms is not None and not len(pcm) & 1:
        return float(_rms(pcm, 2))
    return audio.rms(pcm) * 32768.0


def _opt_float(options: dict[str, Any], key: str) -> float | None:
    v = options.get(key)
    return None if v is None else float(v)
