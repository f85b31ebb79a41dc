"""Silero VAD on onnxruntime: one shared session, per-call state, frames of many calls batched.

Why this shape: Silero's ONNX model is stateless apart from a small recurrent state tensor
(`state`, shape [2, batch, 128]) and a 32-sample context carried from the previous window. So
one `InferenceSession` (one thread) can serve every call: each call keeps its own state and
context, and windows that several calls have ready at about the same moment go through the
model as ONE batched inference. A session + thread per call is what does not scale on 2 cores;
measured figures are in `bench/results/local.md`.

Model facts (read from `silero_vad.onnx`'s inputs, `input[batch, seq]`, `state[2, batch, 128]`,
`sr` scalar int64, and the reference wrapper): at 8 kHz the model takes 256-sample windows
(32 ms) preceded by the previous 32 samples of context, i.e. 288 samples per row; at 16 kHz,
512 + 64. We never import the `silero_vad` Python package (it imports torch): only its packaged
`.onnx` file is used.

Barge-in while we play: no VAD can tell the agent's own echo (line echo, acoustic echo on a
speakerphone) from the caller. So the session should use a stricter rule while our audio is
playing — higher probability, sustained for longer — than for an ordinary turn start. The
numbers live in `VadRules` (`flowagent/providers/local_turns.py`) and are set from this
provider's options `barge_in_threshold` / `barge_in_min_ms`; `TurnDetector` applies them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowagent.providers.base import ProviderError
from flowagent.providers.local_models import silero_onnx_path
from flowagent.providers.local_turns import VadRules

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

#: samples per window / context samples, by sample rate (from the model's reference wrapper)
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}


class SileroModel:
    """The ONNX session and one synchronous batched step. Thread-safe by running one at a time."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort  # after ORT_DISABLE_TELEMETRY is set (flowagent/__init__)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the model has unused initialisers: ORT warns at load
        # no busy-waiting threads: on 2 shared cores a spinning pool starves Whisper and the
        # event loop
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.path = silero_onnx_path()
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ProviderError(
                f"Could not load the Silero VAD model from {self.path}: {exc}", provider="silero"
            ) from exc
        self._lock = threading.Lock()
        #: windows and inferences run, for benchmarks and metrics
        self.windows_run = 0
        self.batches_run = 0

    @classmethod
    def shared(cls, threads: int = 1) -> SileroModel:
        """The process-wide session (one for all calls and flows)."""
        model = _MODELS.get(threads)
        if model is None:
            model = _MODELS[threads] = cls(threads)
        return model

    def step(
        self, rows: np.ndarray, states: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """rows [B, context+window] float32, states [2, B, 128] -> (probabilities [B], states)."""
        with self._lock:
            out, new_state = self.session.run(
                None,
                {
                    "input": rows.astype(np.float32, copy=False),
                    "state": states.astype(np.float32, copy=False),
                    "sr": np.array(sample_rate, dtype=np.int64),
                },
            )
            self.windows_run += rows.shape[0]
            self.batches_run += 1
        return out[:, 0].astype(np.float64), new_state


_MODELS: dict[int, SileroModel] = {}


@dataclass(slots=True)
class _Pending:
    stream: SileroStream
    row: np.ndarray
    future: asyncio.Future[float]


class SileroBatcher:
    """Collects windows from all calls for up to `batch_ms`, runs one inference, fans out.

    One per event loop. Inference runs on a single dedicated thread (never the event loop);
    while a batch runs, new windows keep collecting for the next one, so under load batches
    grow by themselves and latency stays near one inference time.
    """

    def __init__(self, model: SileroModel, batch_ms: float = 4.0, max_batch: int = 512) -> None:
        self.model = model
        self.batch_ms = batch_ms
        self.max_batch = max_batch
        self._pending: dict[int, list[_Pending]] = {8000: [], 16000: []}
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero")
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, stream: SileroStream, row: np.ndarray) -> asyncio.Future[float]:
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[float] = loop.create_future()
        queue = self._pending[stream.sample_rate]
        queue.append(_Pending(stream, row, fut))
        if not self._running:
            if len(queue) >= self.max_batch or self.batch_ms <= 0:
                self._start_batch()
            elif self._timer is None:
                self._timer = loop.call_later(self.batch_ms / 1000.0, self._start_batch)
        return fut

    def _start_batch(self) -> None:
        self._timer = None
        if self._running:
            return
        rate = 8000 if self._pending[8000] else 16000
        batch = self._pending[rate][: self.max_batch]
        del self._pending[rate][: len(batch)]
        batch = [p for p in batch if not p.future.cancelled()]
        if not batch:
            self._maybe_next()
            return
        self._running = True
        rows = np.stack([p.row for p in batch])
        states = np.concatenate([p.stream.state for p in batch], axis=1)
        assert self._loop is not None
        work = self._loop.run_in_executor(self._executor, self.model.step, rows, states, rate)
        work.add_done_callback(lambda f: self._finish(batch, f))

    def _finish(self, batch: list[_Pending], work: asyncio.Future[Any]) -> None:
        self._running = False
        try:
            probs, states = work.result()
        except Exception as exc:
            err = ProviderError(f"Silero VAD inference failed: {exc}", provider="silero")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
        else:
            for i, p in enumerate(batch):
                p.stream.state = states[:, i : i + 1, :].copy()
                if not p.future.done():
                    p.future.set_result(float(probs[i]))
        self._maybe_next()

    def _maybe_next(self) -> None:
        if (self._pending[8000] or self._pending[16000]) and self._timer is None:
            # windows that arrived during the inference have waited at least that long already
            self._start_batch()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class SileroStream:
    """One call's VAD state. `probability(pcm)` accepts any length of s16le audio at the call's
    rate; calls at rates other than 8/16 kHz (AudioSocket 0x12..0x18) are resampled to 16 kHz
    with a streaming soxr resampler first."""

    vad: SileroVad
    call_rate: int
    sample_rate: int = field(init=False)  # the model's rate: 8000 or 16000
    state: np.ndarray = field(init=False)
    _context: np.ndarray = field(init=False)
    _buffer: np.ndarray = field(init=False)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    last: float = 0.0

    def __post_init__(self) -> None:
        self.sample_rate = self.call_rate if self.call_rate in WINDOW else 16000
        self.reset()

    def reset(self) -> None:
        self._resampler: Any = None
        if self.call_rate != self.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.call_rate, self.sample_rate, 1,
                                                  dtype="float32")
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT[self.sample_rate], dtype=np.float32)
        self._buffer = np.zeros(0, dtype=np.float32)
        self.last = 0.0

    def _windows(self, pcm: bytes) -> list[np.ndarray]:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        size = WINDOW[self.sample_rate]
        rows = []
        while self._buffer.size >= size:
            window, self._buffer = self._buffer[:size], self._buffer[size:]
            rows.append(np.concatenate([self._context, window]))
            self._context = window[-CONTEXT[self.sample_rate] :]
        return rows

    async def probabilities(self, pcm: bytes) -> list[float]:
        """Probability of every complete 32 ms window this audio completes (may be none)."""
        async with self._lock:  # a call's windows go through the model in order
            out = []
            for row in self._windows(pcm):
                out.append(await self.vad.batcher().submit(self, row))
            if out:
                self.last = out[-1]
            return out

    async def probability(self, pcm: bytes) -> float:
        """Speech probability for this audio: the highest of the windows it completed, or the
        latest known value when it completed none (20 ms frames complete a window every 32 ms).
        """
        probs = await self.probabilities(pcm)
        return max(probs) if probs else self.last


class SileroVad:
    """The `silero` VAD provider: one model for the process, one batcher per event loop."""

    name = "silero"

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        batch_ms: float = 4.0,
        max_batch: int = 512,
        threads: int = 1,
        rules: VadRules | None = None,
        model: SileroModel | None = None,
    ) -> None:
        self.threshold = threshold
        self.batch_ms = batch_ms
        self.max_batch = max_batch
        self.rules = rules or VadRules(threshold=threshold)
        started = time.monotonic()
        self.model = model or SileroModel.shared(threads)
        self.load_s = time.monotonic() - started
        self._batcher: SileroBatcher | None = None
        self._batcher_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SileroVad:
        threshold = float(options.get("threshold", 0.5))
        rules = VadRules.from_options(options, threshold=threshold)
        return cls(
            threshold=threshold,
            batch_ms=float(options.get("batch_ms", 4.0)),
            max_batch=int(options.get("max_batch", 512)),
            rules=rules,
        )

    def batcher(self) -> SileroBatcher:
        """The batcher of the running event loop (a server has one loop; tests make several)."""
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher_loop is not loop:
            if self._batcher is not None:
                self._batcher.close()
            self._batcher = SileroBatcher(self.model, self.batch_ms, self.max_batch)
            self._batcher_loop = loop
        return self._batcher

    def open_stream(self, sample_rate: int) -> SileroStream:
        if not 8000 <= sample_rate <= 192000:
            raise ProviderError(f"Silero VAD cannot use audio at {sample_rate} Hz.",
                                provider="silero")
        return SileroStream(self, sample_rate)

    def warm_up(self) -> None:
        """One inference so the first call does not pay onnxruntime's lazy initialisation."""
        rows = np.zeros((1, WINDOW[8000] + CONTEXT[8000]), dtype=np.float32)
        self.model.step(rows, np.zeros((2, 1, 128), dtype=np.float32), 8000)

    def close(self) -> None:
        if self._batcher is not None:
            with contextlib.suppress(Exception):
                self._batcher.close()
        self._batcher = None
        self._batcher_loop = None
