"""The paced player: ONE 20 ms clock for every outbound audio stream in the process.

Why one clock: Asterisk does no pacing of what we send (frames are forwarded the instant they
arrive; too fast is lost, too slow is choppy), so we must send exactly one 20 ms frame per 20 ms
per call. A timer task per call would mean a thousand timers drifting independently and a
thousand wake-ups per tick; one task on absolute deadlines (`t0 + n * 20 ms` on
`time.monotonic`) wakes once per tick, writes one frame to every call, and can never accumulate
error over a 30-minute call. If the loop is late by a frame or two we catch up (the missed frames
go out back to back); after a longer stall we re-anchor the schedule instead of bursting.

Per call a `PyOutStream` holds a queue of whole frames tagged with the `say_id` they belong to.
Chunks of one utterance are joined before framing (no gaps between TTS chunks), the last partial
frame is faded and padded with silence (no click), `flush()` empties the queue instantly for
barge-in (the next frame is a 5 ms fade-out, then silence), and when there is nothing to play a
silence frame keeps the line alive (AudioSocket gives up after 2 s without traffic).
Per `say_id` the stream counts how many bytes were actually sent, so the session can tell the
engine what the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from flowagent import audio
from flowagent.asterisk.audiosocket import HEADER, KIND_FOR_RATE
from flowagent.runner.out_stream import OutStream

log = logging.getLogger(__name__)

FRAME_MS = 20
#: frames of what we sent kept per call for the echo check (640 ms: longer than line echo)
SENT_FRAMES = 32
#: behind by more than this many frames -> re-anchor the clock instead of bursting
MAX_CATCH_UP = 3

_END = object()  # queue marker: the utterance before it is complete


class PyOutStream:
    """One call's outbound audio. All methods are synchronous and cheap (called from the loop)."""

    __slots__ = (
        "_closed",
        "_frame_s",
        "_frames",
        "_gain",
        "_gain_prev",
        "_kicked_at",
        "_partial",
        "_player",
        "_sent",
        "_silence",
        "_write",
        "current_say",
        "frame_bytes",
        "frames_sent",
        "header",
        "keepalive_s",
        "last_sent",
        "on_done",
        "on_error",
        "on_first",
        "on_idle",
        "paused",
        "played",
        "sample_rate",
        "underruns",
    )

    def __init__(
        self,
        write: Callable[[bytes], None],
        sample_rate: int = 8000,
        on_done: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_first: Callable[[int, float], None] | None = None,
        keepalive_ms: int = 0,
    ) -> None:
        self._write = write
        self.sample_rate = sample_rate
        self.frame_bytes = audio.frame_bytes(sample_rate, FRAME_MS)
        self.header = HEADER.pack(KIND_FOR_RATE[sample_rate], self.frame_bytes)
        self._silence = self.header + bytes(self.frame_bytes)
        self._frames: deque[tuple[int, bytes | object]] = deque()
        self._partial: dict[int, bytes] = {}
        self.played: dict[int, int] = {}  # say_id -> bytes of its audio actually sent
        self.current_say = 0  # say_id of the frame last sent (0 = silence)
        self.frames_sent = 0
        self.underruns = 0
        self.on_done = on_done
        self.on_error = on_error
        self.on_first = on_first
        #: called when the last queued frame has gone out (the line is ours to end or listen)
        self.on_idle: Callable[[], None] | None = None
        #: 0 = a silence frame every tick when idle; else one silence frame per this interval
        self.keepalive_s = keepalive_ms / 1000.0
        self._frame_s = FRAME_MS / 1000.0
        self.last_sent = -1e9
        self._kicked_at = -1e9
        self._closed = False
        self._player: Player | None = None  # set by Player.open: callbacks wait for tick end
        #: paused: audio keeps queueing but the line gets silence (a possible false barge-in)
        self.paused = False
        #: ducking: the gain for our frames not yet sent, and the one the last frame ended at
        self._gain = 1.0
        self._gain_prev = 1.0
        #: the frames last written (time, payload): the echo check's reference (`sent_tail`)
        self._sent: deque[tuple[float, bytes]] = deque(maxlen=SENT_FRAMES)

    # -- producer side -------------------------------------------------------------------------

    def add(self, say_id: int, pcm: bytes) -> None:
        """Append audio of utterance `say_id`; whole frames are queued, the rest waits."""
        if self._closed or not pcm:
            return
        buf = self._partial.pop(say_id, b"") + pcm
        fb = self.frame_bytes
        whole = len(buf) - len(buf) % fb
        frames = self._frames
        for i in range(0, whole, fb):
            frames.append((say_id, buf[i : i + fb]))
        if whole < len(buf):
            self._partial[say_id] = buf[whole:]
        if whole and self.keepalive_s and not self.paused:
            now = time.monotonic()
            gap = now - self.last_sent
            # idle line: start now. Right after a keepalive silence frame (current_say == 0)
            # too: silence followed back to back by our speech is harmless, while waiting for
            # 10 ms of spacing added up to 20 ms (the next tick) to mouth-to-ear.
            if gap >= self._frame_s or self.current_say == 0:
                # the line is idle: the first frame goes out now instead of at the next tick
                # (up to 20 ms sooner); the clock takes over from the following frame
                self._kicked_at = now
                self._send(now)

    def end(self, say_id: int) -> None:
        """The utterance is complete: pad its last partial frame (after a fade) and mark it."""
        if self._closed:
            return
        rest = self._partial.pop(say_id, b"")
        if rest:
            rest = audio.fade(rest, self.sample_rate)
            self._frames.append((say_id, rest + bytes(self.frame_bytes - len(rest))))
        self._frames.append((say_id, _END))

    def flush(self) -> set[int]:
        """Barge-in: drop everything queued. Returns the say_ids that were cut short."""
        was_paused, self.paused = self.paused, False
        self._gain = self._gain_prev = 1.0  # the next utterance starts as made
        cut = {sid for sid, _ in self._frames}
        cut.update(self._partial)
        nxt = next((f for _, f in self._frames if f is not _END), None)
        self._frames.clear()
        self._partial.clear()
        if isinstance(nxt, bytes) and self.current_say and not was_paused:
            # one frame that fades the waveform out, so the cut does not click
            n = audio.frame_bytes(self.sample_rate, audio.FADE_MS)
            faded = audio.fade(nxt[:n], self.sample_rate)
            self._frames.append((0, faded + bytes(self.frame_bytes - len(faded))))
        cut.discard(0)
        return cut

    def pause(self) -> None:
        """Stop sending our audio now (one fade-out frame) but keep the queue for `resume()`."""
        if self.paused:
            return
        self.paused = True
        nxt = next((f for _, f in self._frames if f is not _END), None)
        if isinstance(nxt, bytes) and self.current_say:
            n = audio.frame_bytes(self.sample_rate, audio.FADE_MS)
            faded = audio.fade(nxt[:n], self.sample_rate)
            self._frames.appendleft((0, faded + bytes(self.frame_bytes - len(faded))))

    def resume(self) -> None:
        self.paused = False

    def set_gain(self, gain: float) -> None:
        """Scale our audio from the next frame sent (queued frames included): 1.0 = as made."""
        self._gain = min(1.0, max(0.0, gain))

    @property
    def busy(self) -> bool:
        """True while any of our audio is queued or waiting to be framed."""
        return bool(self._frames) or bool(self._partial)

    @property
    def playing(self) -> bool:
        return self.current_say > 0 or bool(self._frames) or bool(self._partial)

    def queued_say(self) -> int:
        return next((sid for sid, _ in self._frames if sid > 0), 0)

    # capabilities the native stream has and this one does not (see out_stream.OutStream)
    def switch_rate(self, sample_rate: int) -> bool:
        return False

    def send_hangup(self) -> bool:
        return False

    def start_reading(self, leftover: bytes, on_audio: Callable[[bytes], None],
                      on_frame: Callable[[int, bytes], None], on_eof: Callable[[int, int], None],
                      on_error: Callable[[str], None],
                      on_fail: Callable[[BaseException], None] | None = None) -> bool:
        return False

    def sent_tail(self) -> list[tuple[float, bytes]]:
        return list(self._sent)

    def queued_ms(self) -> int:
        return sum(1 for _, f in self._frames if f is not _END) * FRAME_MS

    def close(self) -> None:
        self._closed = True
        self._frames.clear()
        self._partial.clear()

    # -- clock side ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Send at most one frame (audio, or silence to keep the line alive). Clock only."""
        if now - self._kicked_at < self._frame_s / 2:
            return  # a kick-started frame just went out; keep >= 10 ms before the next
        if self.paused:
            if self._frames and self._frames[0][0] == 0:  # the fade-out frame of pause()
                self._send(now)
                self.paused = True
            elif not self.keepalive_s or now - self.last_sent >= self.keepalive_s:
                self.current_say = 0
                self.last_sent = now
                self.frames_sent += 1
                self._write(self._silence)
            else:
                self.current_say = 0
            return
        if not self._frames and self.keepalive_s and now - self.last_sent < self.keepalive_s:
            if self._partial:
                self.underruns += 1
            self.current_say = 0  # nothing of ours is on the line now
            return
        self._send(now)

    def _emit(self, cb: Callable[..., None] | None, *args: object) -> None:
        """Run a session callback — after the tick's writes if we are inside a tick, so one
        call's engine work never delays the frames of the calls after it."""
        if cb is None:
            return
        p = self._player
        if p is not None and p.in_tick:
            p.deferred.append((cb, args))
        else:
            cb(*args)

    def _send(self, now: float) -> None:
        frames = self._frames
        on_done = self.on_done
        while frames and frames[0][1] is _END:
            sid, _ = frames.popleft()
            self._emit(on_done, sid)
        if frames:
            sid, pcm = frames.popleft()
            if sid > 0 and (self._gain != 1.0 or self._gain_prev != 1.0):  # ducked: rare
                pcm = audio.ramp_gain(pcm, self._gain_prev, self._gain)  # type: ignore[arg-type]
                self._gain_prev = self._gain
            data = self.header + pcm  # type: ignore[operator]
            if sid > 0:
                before = self.played.get(sid)
                self.played[sid] = (before or 0) + len(pcm)  # type: ignore[arg-type]
                if before is None:
                    self._emit(self.on_first, sid, now)
            self.current_say = sid
            self.last_sent = now
            self.frames_sent += 1
            self._sent.append((now, pcm))  # type: ignore[arg-type]
            self._write(data)
            # an utterance that ends on this frame is reported now (it has reached the line)
            while frames and frames[0][1] is _END:
                done, _ = frames.popleft()
                self._emit(on_done, done)
            if not frames and not self._partial:
                self._emit(self.on_idle)
            return
        if self._partial:
            self.underruns += 1  # audio is coming but the producer is behind real time
        self.current_say = 0
        self.last_sent = now
        self.frames_sent += 1
        self._sent.append((now, b""))
        self._write(self._silence)


class Player:
    """The shared pacing clock. `open(write, rate)` -> `PyOutStream`; `close_stream(s)` removes."""

    def __init__(self, frame_ms: int = FRAME_MS) -> None:
        self.frame_s = frame_ms / 1000.0
        self._streams: set[PyOutStream] = set()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.late_ticks = 0  # ticks that woke more than one frame late
        self.reanchors = 0
        self.max_lateness_s = 0.0
        self.lateness: deque[float] = deque(maxlen=5000)  # recent wake-up lateness, seconds
        #: (start, end) monotonic times of recent ticks: the first stream is written at `start`,
        #: the last at `end`, so frame spacing of any stream lies between those two series
        self.tick_log: deque[tuple[float, float]] = deque(maxlen=5000)
        self.in_tick = False
        self.deferred: list[tuple[Callable[..., None], tuple[object, ...]]] = []
        #: the schedule: tick n is due at t0 + n * frame; `_next` is the next one not yet run
        #: (infinity while the clock task is not running, so `poll()` never ticks then)
        self._t0 = 0.0
        self._n = 0
        self._next = float("inf")
        self._ticking = False  # a tick (with its deferred callbacks) is running: no re-entry
        self._last_end = -1e9  # monotonic time the last tick finished writing

    @property
    def active(self) -> int:
        return len(self._streams)

    def open(
        self,
        write: Callable[[bytes], None],
        sample_rate: int = 8000,
        on_done: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_first: Callable[[int, float], None] | None = None,
        keepalive_ms: int = 0,
        transport: asyncio.BaseTransport | None = None,
    ) -> PyOutStream:
        # `transport` is for the native backend (native_player.NativePlayer); unused here
        stream = PyOutStream(write, sample_rate, on_done, on_error, on_first, keepalive_ms)
        stream._player = self
        self._streams.add(stream)
        self._ensure_running()
        return stream

    def close_stream(self, stream: OutStream) -> None:
        stream.close()
        if isinstance(stream, PyOutStream):
            self._streams.discard(stream)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="player-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        clock = time.monotonic
        self._t0 = clock()
        self._n = 1
        self._next = self._t0 + self.frame_s
        try:
            while True:
                delay = self._next - clock()
                if delay > 0:
                    n = self._n
                    await asyncio.sleep(delay)
                    if self._n != n:
                        continue  # `poll()` ran this tick while we slept: sleep to the next
                self._due(clock())
        finally:
            self._next = float("inf")

    def poll(self) -> None:
        """Run the tick now if its deadline has passed. Called by the server before it handles
        each socket read.

        Why: the clock task can only wake up between event-loop callbacks. When many calls'
        frames arrive together (one read callback per call, ~15-25 us each with the syscall),
        a tick that falls due during that burst would wait for the whole burst — milliseconds
        of lateness on every stream at once, the largest part of the measured frame jitter.
        Checking the deadline (one clock read) before each read lets the tick cut in within
        one callback of its deadline. The task stays the owner: it runs any tick no read came
        in time for, and it is what `stop()` cancels.
        """
        now = time.monotonic()
        late = now - self._next
        # only a tick that is just due, and never back to back: when the loop is overloaded
        # (a frame or more behind) the clock task's catch-up/re-anchor logic alone decides,
        # so reads are never starved by ticks run from inside them
        if 0.0 <= late < self.frame_s and not self._ticking and (
            now - self._last_end >= self.frame_s / 2
        ):
            self._due(now)

    def _due(self, now: float) -> None:
        """The tick for deadline `self._next` (plus catch-up for missed ones), at `now`."""
        if self._ticking:
            return
        self._ticking = True
        try:
            frame = self.frame_s
            deadline = self._next
            late = now - deadline
            self.lateness.append(late)
            if late > self.max_lateness_s:
                self.max_lateness_s = late
            # one frame for this tick, plus catch-up for frames missed while the loop was busy
            due = 1
            if late >= frame:
                self.late_ticks += 1
                missed = int(late / frame)
                if missed > MAX_CATCH_UP:
                    self.reanchors += 1
                    # re-anchor: the next deadline is one frame from now
                    self._t0 = now - self._n * frame
                else:
                    due += missed
                    self._n += missed
            self._n += 1
            self._next = self._t0 + self._n * frame
            clock = time.monotonic
            for _ in range(due):
                self.ticks += 1
                started = clock()
                self.in_tick = True
                for stream in list(self._streams):
                    try:
                        stream.tick(now)
                    except Exception as exc:  # a broken socket must not stop other calls
                        self._streams.discard(stream)
                        stream.close()
                        if stream.on_error is not None:
                            stream.on_error(exc)
                        else:
                            log.warning("outbound stream failed: %s", exc)
                self.in_tick = False
                self._last_end = clock()
                self.tick_log.append((started, self._last_end))
                self._run_deferred()
        finally:
            self.in_tick = False
            self._ticking = False

    def _run_deferred(self) -> None:
        deferred, self.deferred = self.deferred, []
        for cb, args in deferred:
            try:
                cb(*args)
            except Exception:  # a session bug must not stop the clock for everyone
                log.exception("playback callback failed")
