"""The native media backend: `NativePlayer` / `NativeOutStream` on `flowagent._medialoop`.

Why: at ~1000 calls the per-frame work in pure Python (one `transport.write` per call per 20 ms,
one uvloop read callback + parser per inbound frame) needs ~1.8 cores on the one thread that
runs the event loop. The C extension moves that work to ONE native thread (its own epoll and an
absolute-deadline 20 ms clock) that never holds the GIL; Python keeps everything that decides
*what* to play and what the caller said.

Same API as `player.Player` / `player.PyOutStream`, so sessions need no change beyond passing the
transport to `open()`:
- outbound: Python cuts audio into frames (joins chunks, fades the last partial frame) and pushes
  them into the call's native FIFO; the native clock sends one frame per call per tick with the
  exact keepalive / kick-start / flush / pause rules of `PyOutStream`; first-frame, say-done, idle
  and write-error callbacks arrive as batched events through an eventfd the asyncio loop watches;
- inbound (after the session has read the UUID frame): `start_reading()` hands the socket to the
  native thread, which reads and parses AudioSocket frames (same strict rules as
  `FrameParser`) and delivers them in batches (at most every `batch_ms`, the first at once) to
  the session's per-frame handlers. It polls the sockets every `poll_ms` (1 ms) rather than
  waking for each frame: at 1000 calls a wake-up per frame (50,000 context switches a second)
  cost more CPU than the reads themselves.

The native side writes to and reads from an `os.dup()` of the socket, owned and closed by the
native loop: the asyncio transport closing can never make it touch a reused fd number.

A call whose transport has no real socket (tests with fake transports) or whose outbound frames
must pass through Python (the call recorder wraps `write`) gets a Python `PyOutStream` on the
embedded pure-Python `Player` clock instead; both can run side by side.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from flowagent import audio
from flowagent.asterisk.audiosocket import HEADER, KIND_FOR_RATE
from flowagent.runner.out_stream import OutStream
from flowagent.runner.player import FRAME_MS, Player, PyOutStream

log = logging.getLogger(__name__)

try:
    from flowagent import _medialoop  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the pure-Python path is used
    _medialoop = None

EV_FRAME, EV_FIRST, EV_DONE, EV_IDLE, EV_WERR, EV_EOF, EV_PROTO = range(7)

#: the inbound batch interval: frames reach Python at most this much later than they arrive
#: (the first frame after a quiet period at once); VAD/barge-in pay at most this
BATCH_MS = 2.0


#: SCHED_RR priority asked for the media thread (0 = never ask); see docs/runtime.md
DEFAULT_RT_PRIORITY = 10


def rt_priority() -> int:
    raw = os.environ.get("FLOWAGENT_MEDIA_RT_PRIORITY", "").strip()
    try:
        return max(0, min(99, int(raw))) if raw else DEFAULT_RT_PRIORITY
    except ValueError:
        log.warning("FLOWAGENT_MEDIA_RT_PRIORITY=%r is not a number; using %d", raw,
                    DEFAULT_RT_PRIORITY)
        return DEFAULT_RT_PRIORITY


def available() -> bool:
    return _medialoop is not None


class NativeOutStream:
    """One call's outbound audio (and, after `start_reading`, inbound) on the native loop."""


    def __init__(
        self,
        player: NativePlayer,
        conn: Any,
        sample_rate: int,
        on_done: Callable[[int], None] | None,
        on_error: Callable[[BaseException], None] | None,
        on_first: Callable[[int, float], None] | None,
        keepalive_ms: int,
    ) -> None:
        self._player = player
        self._conn = conn
        self.id: int = conn.id
        self.sample_rate = sample_rate
        self.frame_bytes = audio.frame_bytes(sample_rate, FRAME_MS)
        self.header = HEADER.pack(KIND_FOR_RATE[sample_rate], self.frame_bytes)
        self.keepalive_s = keepalive_ms / 1000.0
        self._partial: dict[int, bytes] = {}
        self.on_done = on_done
        self.on_error = on_error
        self.on_first = on_first
        self.on_idle: Callable[[], None] | None = None
        self._closed = False
        self._final: tuple[int, int] = (0, 0)  # frames_sent, underruns at close
        # inbound (set by start_reading)
        self.in_kind = int(KIND_FOR_RATE[sample_rate])
        self.in_audio: Callable[[bytes], None] | None = None
        self.in_frame: Callable[[int, bytes], None] | None = None
        self.in_eof: Callable[[int, int], None] | None = None
        self.in_error: Callable[[str], None] | None = None
        self.in_fail: Callable[[BaseException], None] | None = None

    # -- producer side (same contract as PyOutStream) --------------------------------------------

    def add(self, say_id: int, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        buf = self._partial.pop(say_id, b"") + pcm
        fb = self.frame_bytes
        whole = len(buf) - len(buf) % fb
        if whole < len(buf):
            self._partial[say_id] = buf[whole:]
        if self._conn.push(say_id, buf[:whole] if whole < len(buf) else buf,
                           bool(self._partial), True):
            self._player._soon()  # a kick-started frame produced events: deliver them now

    def end(self, say_id: int) -> None:
        if self._closed:
            return
        rest = self._partial.pop(say_id, b"")
        if rest:
            rest = audio.fade(rest, self.sample_rate)
        self._conn.end(say_id, rest)
        if self._partial:
            self._conn.set_partial(True)

    def flush(self) -> set[int]:
        cut = set(self._conn.flush())
        cut.update(self._partial)
        self._partial.clear()
        cut.discard(0)
        return cut

    def pause(self) -> None:
        self._conn.pause()

    def resume(self) -> None:
        self._conn.resume()

    def set_gain(self, gain: float) -> None:
        self._conn.set_gain(gain)  # the native loop scales frames as it sends them

    @property
    def paused(self) -> bool:
        return bool(self._conn.state()[3])

    @property
    def busy(self) -> bool:
        return self._conn.queue_len > 0 or bool(self._partial)

    @property
    def playing(self) -> bool:
        # read for every inbound frame by the listener: the cheapest checks first
        return self._conn.current_say > 0 or self._conn.queue_len > 0 or bool(self._partial)

    def queued_say(self) -> int:
        return next((sid for sid in self._conn.queued_sids() if sid > 0), 0)

    def queued_ms(self) -> int:
        return int(self._conn.state()[1]) * FRAME_MS

    def sent_tail(self) -> list[tuple[float, bytes]]:
        return list(self._conn.sent_tail())  # kept by the native loop as it writes

    @property
    def played(self) -> dict[int, int]:
        return dict(self._conn.played())

    @property
    def current_say(self) -> int:
        return int(self._conn.current_say)

    @property
    def frames_sent(self) -> int:
        return self._final[0] if self._closed else int(self._conn.state()[4])

    @property
    def underruns(self) -> int:
        return self._final[1] if self._closed else int(self._conn.state()[5])

    def switch_rate(self, sample_rate: int) -> bool:
        """The caller's rate changed: a fresh stream at the new rate on the same socket."""
        self.sample_rate = sample_rate
        self.frame_bytes = audio.frame_bytes(sample_rate, FRAME_MS)
        kind = int(KIND_FOR_RATE[sample_rate])
        self.header = HEADER.pack(kind, self.frame_bytes)
        self.in_kind = kind
        self._partial.clear()
        self._conn.switch_rate(kind, self.frame_bytes)
        return True

    def send_hangup(self) -> bool:
        """End the call from our side: the native loop writes the 0x00 frame (after any partial
        frame, never inside one) and closes its socket."""
        self._snapshot()
        self._closed = True
        self._conn.close(True)
        return True

    def close(self) -> None:
        if not self._closed:
            self._snapshot()
        self._closed = True
        self._partial.clear()
        self._conn.close(False)

    def _snapshot(self) -> None:
        if not self._closed:
            st = self._conn.state()
            self._final = (int(st[4]), int(st[5]))

    # -- inbound ---------------------------------------------------------------------------------

    def start_reading(
        self,
        leftover: bytes,
        on_audio: Callable[[bytes], None],
        on_frame: Callable[[int, bytes], None],
        on_eof: Callable[[int, int], None],
        on_error: Callable[[str], None],
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> bool:
        """Hand the socket's reading to the native loop (the caller has paused the transport).
        `leftover`: bytes of a partial frame the Python parser held. False = not possible."""
        if self._closed:
            return False
        self.in_audio, self.in_frame, self.in_eof, self.in_error = (
            on_audio, on_frame, on_eof, on_error)
        self.in_fail = on_fail
        ok = bool(self._conn.start_reading(leftover))
        if ok:
            self._player._soon()  # frames completed by `leftover` are waiting
        return ok


class NativePlayer:
    """`Player`-compatible: one native clock for socket-backed calls, the Python `Player` for
    the rest. `tick_log`/`lateness`/counters report the native clock (plus the Python one's)."""

    backend = "native"

    def __init__(self, frame_ms: int = FRAME_MS, batch_ms: float = BATCH_MS) -> None:
        if _medialoop is None:
            raise RuntimeError("flowagent._medialoop is not built")
        self.frame_s = frame_ms / 1000.0
        self._py = Player(frame_ms)
        self._engine = _medialoop.Engine(frame_ms, batch_ms, rt_priority())
        self._rt_logged = False
        self._streams: dict[int, NativeOutStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._evfd = -1
        self._soon_pending = False
        self._tick_log: deque[tuple[float, float]] = deque(maxlen=5000)
        self._lateness: deque[float] = deque(maxlen=5000)

    # -- Player surface --------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._streams) + self._py.active

    @property
    def in_tick(self) -> bool:
        return self._py.in_tick

    def _pull_ticks(self) -> None:
        for start, end, late in self._engine.take_ticks():
            self._tick_log.append((start, end))
            self._lateness.append(late)

    @property
    def tick_log(self) -> deque[tuple[float, float]]:
        """(start, end) monotonic times of recent native ticks: first/last call written."""
        self._pull_ticks()
        return self._tick_log if self._tick_log or not self._py.tick_log else self._py.tick_log

    @property
    def lateness(self) -> deque[float]:
        self._pull_ticks()
        while self._py.lateness:
            self._lateness.append(self._py.lateness.popleft())
        return self._lateness

    @property
    def ticks(self) -> int:
        return int(self._engine.stats()["ticks"]) + self._py.ticks

    @property
    def late_ticks(self) -> int:
        return int(self._engine.stats()["late_ticks"]) + self._py.late_ticks

    @property
    def reanchors(self) -> int:
        return int(self._engine.stats()["reanchors"]) + self._py.reanchors

    @property
    def max_lateness_s(self) -> float:
        return max(float(self._engine.stats()["max_lateness_s"]), self._py.max_lateness_s)

    def open(
        self,
        write: Callable[[bytes], None],
        sample_rate: int = 8000,
        on_done: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_first: Callable[[int, float], None] | None = None,
        keepalive_ms: int = 0,
        transport: asyncio.BaseTransport | None = None,
    ) -> OutStream:
        """`transport` given (and backed by a socket): a native stream on a dup of its socket;
        otherwise a Python `PyOutStream` writing through `write`."""
        sock = transport.get_extra_info("socket") if transport is not None else None
        fileno = sock.fileno() if sock is not None else -1
        if fileno < 0 or sample_rate not in KIND_FOR_RATE:
            return self._py.open(write, sample_rate, on_done, on_error, on_first, keepalive_ms)
        self._ensure_running()
        fd = os.dup(fileno)
        try:
            conn = self._engine.open(fd, int(KIND_FOR_RATE[sample_rate]),
                                     audio.frame_bytes(sample_rate, FRAME_MS), keepalive_ms)
        except BaseException:
            os.close(fd)
            raise
        stream = NativeOutStream(self, conn, sample_rate, on_done, on_error, on_first,
                                 keepalive_ms)
        self._streams[stream.id] = stream
        return stream

    def close_stream(self, stream: OutStream) -> None:
        if isinstance(stream, NativeOutStream):
            stream.close()
            self._streams.pop(stream.id, None)
            if not self._streams:
                self._stop_engine()  # no call left: no thread left (restarts on the next call)
        elif isinstance(stream, PyOutStream):
            self._py.close_stream(stream)

    def poll(self) -> None:
        self._py.poll()

    async def stop(self) -> None:
        await self._py.stop()
        for s in list(self._streams.values()):
            s.close()
        self._streams.clear()
        self._stop_engine()

    # -- the native loop -------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._evfd >= 0 and self._loop is loop:
            return
        if self._evfd >= 0:
            self._stop_engine()
        self._evfd = self._engine.start()
        self._loop = loop
        loop.add_reader(self._evfd, self._drain)
        if not self._rt_logged:
            self._rt_logged = True
            state = int(self._engine.stats()["realtime"])
            if state > 0:
                log.info("media thread: real-time priority (SCHED_RR %d)", rt_priority())
            elif state < 0:
                log.info("media thread: normal priority (real-time refused: %s; allow it with "
                         "CAP_SYS_NICE or LimitRTPRIO=%d in the systemd unit)",
                         os.strerror(-state), rt_priority())

    def _stop_engine(self) -> None:
        if self._evfd >= 0 and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._evfd)
        self._evfd = -1
        self._engine.stop()
        self._pull_ticks()

    def _soon(self) -> None:
        """Deliver waiting events on the next loop iteration (events made on this thread)."""
        if not self._soon_pending and self._loop is not None:
            self._soon_pending = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """The eventfd is readable (or `_soon`): run the callbacks of a batch of events."""
        self._soon_pending = False
        streams = self._streams
        for cid, typ, a, b in self._engine.take_events():
            s = streams.get(cid)
            if s is None:
                continue  # the call closed its stream: what was still queued is moot
            try:
                if typ == EV_FRAME:
                    if a == s.in_kind and s.in_audio is not None:
                        s.in_audio(b)
                    elif s.in_frame is not None:
                        s.in_frame(a, b)
                elif typ == EV_FIRST:
                    if s.on_first is not None:
                        s.on_first(a, b)
                elif typ == EV_DONE:
                    if s.on_done is not None:
                        s.on_done(a)
                elif typ == EV_IDLE:
                    if s.on_idle is not None:
                        s.on_idle()
                elif typ == EV_WERR:
                    err = OSError(a, os.strerror(a))
                    if s.on_error is not None:
                        s.on_error(err)
                    else:
                        log.warning("outbound stream failed: %s", err)
                elif typ == EV_EOF:
                    if s.in_eof is not None:
                        s.in_eof(a, b)
                elif typ == EV_PROTO and s.in_error is not None:
                    s.in_error(b)
            except Exception as exc:  # one call's bug must not stop the others' events
                if s.in_fail is not None and typ == EV_FRAME:
                    s.in_fail(exc)  # like a failure in the Python read path: ends that call
                else:
                    log.exception("media event handler failed")


def backend_name() -> str:
    """What `make_player()` picks: "native" unless FLOWAGENT_MEDIA=python or not built."""
    if os.environ.get("FLOWAGENT_MEDIA", "").strip().lower() == "python":
        return "python"
    return "native" if available() else "python"


def make_player() -> Player | NativePlayer:
    """The runtime's player: the native media loop when available and not switched off."""
    name = backend_name()
    if name == "native":
        log.info("media backend: native (flowagent._medialoop); FLOWAGENT_MEDIA=python for "
                 "the pure-Python path")
        return NativePlayer()
    why = "FLOWAGENT_MEDIA=python" if available() else "flowagent._medialoop is not built"
    log.info("media backend: python (%s)", why)
    return Player()
