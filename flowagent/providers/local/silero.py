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

Turn-taking: this provider only gives probabilities. Turn start, end of turn and barge-in are
decided by the call's one rule (`runner/turn_taking.py`), from the flow's settings; this
provider's options `threshold`, `neg_threshold`, `min_speech_ms`, `min_silence_ms`,
`barge_in_threshold` and `barge_in_min_ms`, when a flow gives them, override those numbers
(`turn_tuning`).

Silence gate: a window whose level is below `silence_gate_dbfs` (default -60 dBFS, far below any
speech and below the idle noise of a phone line) is answered 0.0 without running the model. The
model costs ~67 µs per window even batched (~450 calls per core for inference alone); callers
are silent for much of a call, and a mobile uplink with its noise suppression is near digital
silence then, so the gate gives the capacity back where it costs nothing. A noisy line stays
above the gate and gets the model on every window. The call's model state is kept across gated
windows; the 32-sample context always follows the real audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from flowagent.audio import rms_raw
from flowagent.model_files import silero_onnx_path
from flowagent.providers.base import ProviderError, TurnTuning, VadCapabilities, VadStreamBase

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

#: windows quieter than this skip the model (see the module docstring); `off` disables the gate
DEFAULT_GATE_DBFS = -60.0


def _gate_option(value: Any) -> float | None:
    """`silence_gate_dbfs`: a level in dBFS (<= 0), or `off` / false to run every window."""
    if value is None or value is False or (isinstance(value, str) and value.lower() == "off"):
        return None
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise ProviderError(
            f"silero silence_gate_dbfs must be a level in dBFS such as -60, or off; got {value!r}.",
            provider="silero") from None
    if not -120.0 <= level <= 0.0:
        raise ProviderError(
            f"silero silence_gate_dbfs must be between -120 and 0 dBFS; got {level:g}.",
            provider="silero")
    return level


#: inference sessions (threads) by default: two where there are two cores (see SileroModel)
DEFAULT_SESSIONS = 2 if (os.cpu_count() or 1) >= 2 else 1

#: samples per window / context samples, by sample rate (from the model's reference wrapper)
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}


class SileroModel:
    """The ONNX sessions and one synchronous batched step.

    `sessions` independent sessions (one intra-op thread each) let two batches run at once on
    two cores: measured here, two threads in one session are *slower* than one (74 vs 63 µs per
    window at batch 512: the model's ops are too small to split), while two sessions side by
    side give 30 400 windows/s against 15 700. Each session runs one batch at a time."""

    def __init__(self, threads: int = 1, sessions: int = 1) -> None:
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
            self.sessions = [
                ort.InferenceSession(str(self.path), sess_options=options,
                                     providers=["CPUExecutionProvider"])
                for _ in range(max(1, sessions))]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ProviderError(
                f"Could not load the Silero VAD model from {self.path}: {exc}", provider="silero"
            ) from exc
        self.session = self.sessions[0]
        self._locks = [threading.Lock() for _ in self.sessions]
        self._count_lock = threading.Lock()
        #: windows and inferences run, for benchmarks and metrics
        self.windows_run = 0
        self.batches_run = 0
        #: windows answered 0.0 by a stream's silence gate instead of the model
        self.windows_gated = 0
        #: windows answered with the call's latest value because the model was too far behind
        self.windows_shed = 0

    @classmethod
    def shared(cls, threads: int = 1, sessions: int = 1) -> SileroModel:
        """The process-wide model (one for all calls and flows)."""
        model = _MODELS.get((threads, sessions))
        if model is None:
            model = _MODELS[(threads, sessions)] = cls(threads, sessions)
        return model

    def step(
        self, rows: np.ndarray, states: np.ndarray, sample_rate: int, slot: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """rows [B, context+window] float32, states [2, B, 128] -> (probabilities [B], states),
        on session `slot`."""
        with self._locks[slot]:
            out, new_state = self.sessions[slot].run(
                None,
                {
                    "input": rows.astype(np.float32, copy=False),
                    "state": states.astype(np.float32, copy=False),
                    "sr": np.array(sample_rate, dtype=np.int64),
                },
            )
        with self._count_lock:
            self.windows_run += rows.shape[0]
            self.batches_run += 1
        return out[:, 0].astype(np.float64), new_state


_MODELS: dict[tuple[int, int], SileroModel] = {}


def window_counts() -> dict[str, int]:
    """Windows of every call so far: run by the model, answered by the silence gate, shed
    under overload (for `GET /metrics`)."""
    models = list(_MODELS.values())
    return {"model": sum(m.windows_run for m in models),
            "gated": sum(m.windows_gated for m in models),
            "shed": sum(m.windows_shed for m in models)}


class _Frame:
    """One piece of audio fed to a stream, waiting for the probabilities of the windows it
    completed. Delivered (in feeding order) once none is still in the model."""

    __slots__ = ("tag", "values", "waiting")

    def __init__(self, tag: Any) -> None:
        self.tag = tag
        self.values: list[float] = []
        self.waiting = 0


class SileroBatcher:
    """Collects windows from all calls for up to `batch_ms`, runs one inference, fans out.

    One per event loop. Inference runs on the model's sessions, one thread each (never the
    event loop); while batches run, new windows keep collecting for the next one, so under load
    batches grow by themselves and latency stays near one inference time. A call has at most
    one window in the model at a time: its next window needs the state the previous one leaves,
    so it waits for the next batch. That is what lets a call submit windows without waiting.

    Bookkeeping is O(windows): each call keeps its own FIFO of windows, and `_ready` lists the
    calls that have a window waiting and none in the model.
    """

    def __init__(self, model: SileroModel, batch_ms: float = 4.0, max_batch: int = 512) -> None:
        self.model = model
        self.batch_ms = batch_ms
        self.max_batch = max_batch
        self._ready: dict[int, deque[SileroStream]] = {8000: deque(), 16000: deque()}
        self._timer: asyncio.TimerHandle | None = None
        self._free = list(range(len(model.sessions)))  # sessions not running a batch
        self._executor = ThreadPoolExecutor(max_workers=len(model.sessions),
                                            thread_name_prefix="silero")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def submit(self, stream: SileroStream, row: bytes, frame: _Frame, index: int) -> None:
        """Queue one window of `stream` (s16le: context + window); its probability goes to
        `frame.values[index]`."""
        stream._windows_q.append((row, frame, index))
        if stream._in_model or len(stream._windows_q) > 1:
            return  # it is ready already, or will be when its window in the model is done
        ready = self._ready[stream.sample_rate]
        ready.append(stream)
        if self._free and self._timer is None:
            if len(ready) >= self.max_batch or self.batch_ms <= 0:
                self._start_batch()
            else:
                if self._loop is None:
                    self._loop = asyncio.get_running_loop()
                self._timer = self._loop.call_later(self.batch_ms / 1000.0, self._start_batch)

    def _start_batch(self) -> None:
        self._timer = None
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        while self._free and not self._closed:
            rate = 8000 if self._ready[8000] else 16000
            ready = self._ready[rate]
            if not ready:
                return
            limit = self.max_batch
            if len(ready) >= 128 and len(self._free) > 1:  # small batches cost more per window
                limit = min(limit, -(-len(ready) // len(self._free)))
            batch = [ready.popleft() for _ in range(min(limit, len(ready)))]
            # every window each of these calls has queued goes in this job: the thread runs
            # them as layers (first windows of all calls, then the second windows of calls that
            # have one, ...), carrying each call's state from layer to layer, so a call that
            # fell behind catches up in one go instead of one event-loop round trip per window
            rows = [[w[0] for w in st._windows_q] for st in batch]
            for st, r in zip(batch, rows, strict=True):
                st._in_model = len(r)
            states = np.concatenate([st.state for st in batch], axis=1)
            slot = self._free.pop()
            work = self._loop.run_in_executor(self._executor, self._run_layers, rows, states,
                                              rate, slot)
            work.add_done_callback(partial(self._finish, batch, slot))

    def _run_layers(self, rows: list[list[bytes]], states: np.ndarray, rate: int,
                    slot: int) -> tuple[list[list[float]], np.ndarray]:
        """On the inference thread: each call's windows in order, all calls batched per layer.
        Returns (probabilities per call, final states [2, calls, 128])."""
        probs: list[list[float]] = [[] for _ in rows]
        depth = max(len(r) for r in rows)
        width = WINDOW[rate] + CONTEXT[rate]
        for j in range(depth):
            idx = [i for i, r in enumerate(rows) if len(r) > j]
            pcm = b"".join([rows[i][j] for i in idx])
            batch = np.frombuffer(pcm, dtype="<i2").reshape(len(idx), width).astype(np.float32)
            batch *= 1.0 / 32768.0
            if len(idx) == len(rows):
                p, states = self.model.step(batch, states, rate, slot)
            else:
                p, out = self.model.step(batch, states[:, idx, :], rate, slot)
                states[:, idx, :] = out
            for k, i in enumerate(idx):
                probs[i].append(float(p[k]))
        return probs, states

    def _finish(self, batch: list[SileroStream], slot: int, work: asyncio.Future[Any]) -> None:
        self._free.append(slot)
        error: Exception | None = None
        probs: Any = None
        states: Any = None
        if work.cancelled():
            error = ProviderError("Silero VAD inference was cancelled.", provider="silero")
        elif work.exception() is not None:
            error = ProviderError(f"Silero VAD inference failed: {work.exception()}",
                                  provider="silero")
        else:
            probs, states = work.result()
        for i, st in enumerate(batch):
            taken, st._in_model = st._in_model, 0
            if error is not None:
                st._windows_q.clear()
                st._failed(error)
                continue
            st.state = states[:, i : i + 1, :]  # a view: no copy per call
            for p in probs[i][:taken]:
                _, frame, index = st._windows_q.popleft()
                st._window_done(frame, index, p)
            if st._windows_q:
                self._ready[st.sample_rate].append(st)
        if (self._ready[8000] or self._ready[16000]) and self._timer is None:
            # windows that arrived during the inference have waited at least that long already
            self._start_batch()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass(eq=False)
class SileroStream(VadStreamBase):
    """One call's VAD state. Accepts any length of s16le audio at the call's rate; calls at
    rates other than 8/16 kHz (AudioSocket 0x12..0x18) are resampled to 16 kHz with a
    streaming soxr resampler first.

    Ways in. `feed(pcm, tag)`: the frame's probability goes to `listener(probability, tag)`,
    frames strictly in the order fed, synchronously when no window needs the model (the frame
    completed no window, or only windows below the silence gate) and otherwise when its window
    comes out of the model — no coroutine, future, lock or task per frame. `feed_ms(pcm, ms)`
    (what the call session uses) is the same with one result per window. `probability()` /
    `probabilities()` are awaitable forms of `feed`. Audio is kept as s16le bytes; a window
    becomes floats only when it goes to the model.
    """

    capabilities = VadCapabilities(callback=True)
    vad: SileroVad
    call_rate: int
    sample_rate: int = field(init=False)  # the model's rate: 8000 or 16000
    state: np.ndarray = field(init=False)
    last: float = 0.0
    #: receives (probability, tag) of every fed frame, in order
    listener: Callable[[float, Any], None] | None = None
    #: receives the error when the model fails (the stream is then unusable)
    on_error: Callable[[BaseException], None] | None = None

    def __post_init__(self) -> None:
        self.sample_rate = self.call_rate if self.call_rate in WINDOW else 16000
        self.reset()

    def listen(self, listener: Callable[[float, int], None] | None,
               on_error: Callable[[BaseException], None] | None = None) -> None:
        self.listener = listener
        self.on_error = on_error

    def reset(self) -> None:
        self._resampler: Any = None
        if self.call_rate != self.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.call_rate, self.sample_rate, 1,
                                                  dtype="float32")
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self._pcm = bytearray()
        self._context = bytes(2 * CONTEXT[self.sample_rate])
        self._window_bytes = 2 * WINDOW[self.sample_rate]
        #: frames fed and not yet delivered (the first ones wait for the model)
        self._frames: deque[_Frame] = deque()
        self._batcher: SileroBatcher | None = None  # the event loop's, fetched once
        self._held_ms = 0  # `feed_ms`: audio of frames that completed no window yet
        # (s16le row, frame, index) of windows waiting for / in the model; the batcher owns these
        # while `_in_model` (a reset keeps them so the batcher's bookkeeping stays consistent)
        if not hasattr(self, "_windows_q"):
            self._windows_q: deque[tuple[bytes, _Frame, int]] = deque()
            self._in_model = 0  # windows of this call in the running job (0: none)
        self.last = 0.0

    def _take_windows(self, pcm: bytes) -> list[bytes]:
        """Complete windows (s16le at the model's rate) this audio finishes."""
        if self._resampler is not None:
            x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            y = self._resampler.resample_chunk(x)
            pcm = (np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        buf = self._pcm
        buf += pcm
        size = self._window_bytes
        out: list[bytes] = []
        while len(buf) >= size:
            out.append(bytes(buf[:size]))
            del buf[:size]
        return out

    def feed(self, pcm: bytes, tag: Any = None) -> None:
        """Audio in; its probability (the highest of the windows it completed, else the latest
        known value) goes to the listener with `tag`, in feeding order."""
        windows = self._take_windows(pcm)
        if not windows and not self._frames:  # no window completed and none waiting
            if isinstance(tag, asyncio.Future):
                tag.set_result((self.last, []))
            elif self.listener is not None:
                self.listener(self.last, tag)
            return
        self._submit(windows, tag)

    def feed_ms(self, pcm: bytes, ms: int) -> None:
        """What the call session uses: like `feed`, but one result per 32 ms window instead of
        one per frame. A frame that completes no window adds its duration to the next window's
        result (its audio *is* in that window): the listener gets (probability, ms covered).
        ~40 % fewer results to handle than one per 20 ms frame, and no work at all for a frame
        that completes no window."""
        if self._resampler is None:
            buf = self._pcm
            buf += pcm
            if len(buf) < self._window_bytes:
                self._held_ms += ms
                return
            windows = self._take_windows(b"")
        else:
            windows = self._take_windows(pcm)
            if not windows:
                self._held_ms += ms
                return
        ms += self._held_ms
        self._held_ms = 0
        self._submit(windows, ms)

    def _submit(self, windows: list[bytes], tag: Any) -> None:
        gate = self.vad.gate_rms
        if len(windows) == 1 and not self._frames and gate is not None:
            w = windows[0]
            if _rms16(w) < gate:  # the common quiet window: answered here, no bookkeeping
                self.vad.model.windows_gated += 1
                self._context = w[-len(self._context):]
                self.last = 0.0
                if isinstance(tag, asyncio.Future):
                    tag.set_result((0.0, [0.0]))
                elif self.listener is not None:
                    self.listener(0.0, tag)
                return
        frame = _Frame(tag)
        if windows:
            keep = len(self._context)
            frame.values = [0.0] * len(windows)
            for i, w in enumerate(windows):
                if gate is not None and _rms16(w) < gate:
                    self.vad.model.windows_gated += 1
                elif len(self._windows_q) >= self.vad.max_lag_windows:
                    # overloaded: keep up rather than fall further behind
                    self.vad.model.windows_shed += 1
                    frame.values[i] = self.last
                else:
                    # s16le context + window; the inference thread converts a whole batch
                    # to floats in one go (cheaper than an array per window here)
                    frame.waiting += 1
                    batcher = self._batcher
                    if batcher is None or batcher._closed:
                        batcher = self._batcher = self.vad.batcher()
                    batcher.submit(self, self._context + w, frame, i)
                self._context = w[-keep:]
        if frame.waiting or self._frames:
            self._frames.append(frame)
        else:
            self._deliver(frame)

    def _window_done(self, frame: _Frame, index: int, p: float) -> None:
        frame.values[index] = p
        frame.waiting -= 1
        frames = self._frames
        while frames and frames[0].waiting == 0:
            self._deliver(frames.popleft())

    def _deliver(self, frame: _Frame) -> None:
        if frame.values:
            p = max(frame.values)
            self.last = frame.values[-1]
        else:
            p = self.last
        tag = frame.tag
        if isinstance(tag, asyncio.Future):
            if not tag.done():
                tag.set_result((p, frame.values))
        elif self.listener is not None:
            self.listener(p, tag)

    def _failed(self, error: BaseException) -> None:
        frames, self._frames = self._frames, deque()
        for frame in frames:
            if isinstance(frame.tag, asyncio.Future) and not frame.tag.done():
                frame.tag.set_exception(error)
        if self.on_error is not None:
            self.on_error(error)

    def _ask(self, pcm: bytes) -> asyncio.Future[tuple[float, list[float]]]:
        fut: asyncio.Future[tuple[float, list[float]]] = (
            asyncio.get_running_loop().create_future())
        self.feed(pcm, fut)
        return fut

    async def probabilities(self, pcm: bytes) -> list[float]:
        """Probability of every complete 32 ms window this audio completes (may be none)."""
        return (await self._ask(pcm))[1]

    async def probability(self, pcm: bytes) -> float:
        """Speech probability for this audio: the highest of the windows it completed, or the
        latest known value when it completed none (20 ms frames complete a window every 32 ms).
        """
        return (await self._ask(pcm))[0]


def _rms16(pcm: bytes) -> float:
    """RMS of s16le audio in sample units (audioop's C loop where Python still has it)."""
    if rms_raw is not None:
        return float(rms_raw(pcm, 2))
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


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
        sessions: int = DEFAULT_SESSIONS,
        max_lag_ms: int = 640,
        turn_tuning: TurnTuning | None = None,
        model: SileroModel | None = None,
        silence_gate_dbfs: float | None = DEFAULT_GATE_DBFS,
    ) -> None:
        self.threshold = threshold
        #: overload: a call whose windows are this far behind the model gets its latest value
        #: for new windows instead of queueing more (counted in `model.windows_shed`), so a
        #: backlog cannot grow without bound and delay every call's turns
        self.max_lag_windows = max(1, int(max_lag_ms) // 32)
        #: windows below this mean power (linear, full scale = 1.0) skip the model
        self.gate_power = (None if silence_gate_dbfs is None
                           else 10.0 ** (float(silence_gate_dbfs) / 10.0))
        #: the same as an RMS in s16 sample units (what the streams compare)
        self.gate_rms = None if self.gate_power is None else 32768.0 * self.gate_power ** 0.5
        self.batch_ms = batch_ms
        self.max_batch = max_batch
        #: turn-taking numbers this flow's options set explicitly (see the module doc)
        self.turn_tuning = turn_tuning or TurnTuning()
        started = time.monotonic()
        self.model = model or SileroModel.shared(threads, sessions)
        self.load_s = time.monotonic() - started
        self._batcher: SileroBatcher | None = None
        self._batcher_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SileroVad:
        def number(key: str) -> float | None:
            v = options.get(key)
            return None if v is None else float(v)

        def ms(key: str) -> int | None:
            v = options.get(key)
            return None if v is None else int(v)

        tuning = TurnTuning(
            threshold=number("threshold"), neg_threshold=number("neg_threshold"),
            min_speech_ms=ms("min_speech_ms"), min_silence_ms=ms("min_silence_ms"),
            barge_in_threshold=number("barge_in_threshold"),
            barge_in_min_ms=ms("barge_in_min_ms"),
        )
        return cls(
            threshold=float(options.get("threshold", 0.5)),
            batch_ms=float(options.get("batch_ms", 4.0)),
            max_batch=int(options.get("max_batch", 512)),
            sessions=int(options.get("sessions", DEFAULT_SESSIONS)),
            max_lag_ms=int(options.get("max_lag_ms", 640)),
            turn_tuning=tuning,
            silence_gate_dbfs=_gate_option(options.get("silence_gate_dbfs", DEFAULT_GATE_DBFS)),
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
