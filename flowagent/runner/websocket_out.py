"""Our audio to Asterisk over chan_websocket: Asterisk plays it, we keep count (an `OutStream`).

Why it is not AudioSocket's paced stream (`player.py`): chan_websocket keeps its own playout
clock and a queue of up to 1000 frames, so nothing needs sending every 20 ms. We send whole
`optimal_frame_size` frames (Asterisk drops a trailing partial frame) a bounded amount ahead of
real time — up to `ahead_s`, topped up when less than `refill_s` is left — so a speaking call
costs a few wake-ups a second instead of fifty, and a busy event loop never starves the line.

What the caller has heard is still ours to know, because the engine and the LLM history must
hold only that. Each frame sent gets the time Asterisk will start playing it (back to back after
what it already holds; at once when its queue is empty), and the wall clock reads the frames
whose time has come as played: `played`, `current_say`, and the first-frame / utterance-done /
idle callbacks the call's latency rows and no-input timers depend on. A MARK_MEDIA follows each
utterance (and each top-up, at most every `mark_every_s`); Asterisk answers
MEDIA_MARK_PROCESSED when its playout really reaches it. That re-anchors the estimate when
Asterisk runs behind or ahead of us, the estimate never runs more than `mark_slack_s` past a
mark Asterisk has not confirmed, and we are not idle (so do not hang up over our last words)
before the last mark is confirmed. A mark that never comes is given up after `mark_timeout_s`.

Barge-in: `flush()` drops our queue, sends FLUSH_MEDIA (Asterisk empties its queue, which holds
everything we sent: our writes reach the socket in order, at once) and one 5 ms fade-out frame
so the cut does not click. `pause()`/`resume()` are PAUSE_MEDIA/CONTINUE_MEDIA (Asterisk keeps
its queue and plays silence meanwhile). MEDIA_XOFF stops our sending until MEDIA_XON.

A recorded call's frames reach the recorder as they start playing, with that time (the stream
then wakes for every frame while it speaks: recording is opt-in and costs per frame anyway), so
the file holds what the caller heard, where they heard it — not the audio sent ahead and then
flushed.

Callbacks never run inside a method the call is in the middle of (reading `played` during a
barge-in must not end an utterance under it): state changes at once, callbacks run from the
stream's own loop callback right after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from flowagent import audio
from flowagent.asterisk.chan_websocket import Command, MediaFormat

log = logging.getLogger(__name__)

#: how far ahead of real time we keep Asterisk's queue filled, and when we top it up
AHEAD_S = 1.0
REFILL_S = 0.5
#: a mark after a top-up at most this often (and always after an utterance)
MARK_EVERY_S = 0.25
#: how far past an unconfirmed mark the wall clock may count audio as heard
MARK_SLACK_S = 0.06
#: a mark Asterisk has not confirmed by then is given up (the estimate carries on alone)
MARK_TIMEOUT_S = 2.0

_FRAME, _END = 0, 1


class Outbox(Protocol):
    """Where the stream's messages go: onto the socket at once, in order (the line)."""

    def media(self, payload: bytes) -> None: ...

    def command(self, command: Command) -> None: ...


@dataclass(slots=True)
class _Sent:
    """A frame (or an utterance's end) handed to Asterisk, and when it starts playing."""

    at: float
    kind: int
    say_id: int
    pcm: bytes = b""


@dataclass(slots=True)
class _Mark:
    at: float
    correlation_id: str


Callback = tuple[Callable[..., None], tuple[object, ...]]


class WebSocketOutStream:
    """One call's outbound audio over chan_websocket. See the module doc."""

    def __init__(
        self,
        outbox: Outbox,
        media: MediaFormat,
        optimal_frame_size: int,
        *,
        on_done: Callable[[int], None] | None = None,
        on_first: Callable[[int, float], None] | None = None,
        record: Callable[[bytes, float], None] | None = None,
        ahead_s: float = AHEAD_S,
        refill_s: float = REFILL_S,
        mark_every_s: float = MARK_EVERY_S,
        mark_slack_s: float = MARK_SLACK_S,
        mark_timeout_s: float = MARK_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._media = media
        self._rate = media.sample_rate
        #: PCM bytes of one of Asterisk's frames (the wire frame may be G.711: 1 byte a sample)
        self._frame = optimal_frame_size // media.bytes_per_sample * 2
        self._frame_s = self._frame / (2 * self._rate)
        self.on_done = on_done
        self.on_first = on_first
        self.on_idle: Callable[[], None] | None = None
        self._record = record
        self._ahead_s = max(ahead_s, 2 * self._frame_s)
        self._refill_s = min(refill_s, self._ahead_s - self._frame_s)
        self._mark_every_s = mark_every_s
        self._mark_slack_s = mark_slack_s
        self._mark_timeout_s = mark_timeout_s
        self._clock = clock
        # ours, not yet sent: whole PCM frames (None: the utterance before it is complete)
        self._queue: deque[tuple[int, bytes | None]] = deque()
        self._partial: dict[int, bytes] = {}
        # sent, not yet played (by the clock); marks not yet confirmed
        self._flight: deque[_Sent] = deque()
        self._marks: deque[_Mark] = deque()
        self._mark_n = 0
        self._last_mark = -1e9
        #: when Asterisk's queue runs dry, as far as we know
        self._free_at = -1e9
        self._last_sent_say = 0
        # what is playing now
        self._cur_say = 0
        self._cur_until = -1e9
        self._played: dict[int, int] = {}
        self.frames_sent = 0
        self.underruns = 0
        self.paused = False
        self._paused_at = 0.0
        self._xoff = False
        self._closed = False
        self._idle_pending = False
        self._callbacks: list[Callback] = []
        self._soon_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # -- OutStream: the producer's side --------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self._rate

    def add(self, say_id: int, pcm: bytes) -> None:
        """Append audio of utterance `say_id`; whole frames are queued, the rest waits."""
        if self._closed or not pcm:
            return
        buf = self._partial.pop(say_id, b"") + pcm
        fb = self._frame
        whole = len(buf) - len(buf) % fb
        for i in range(0, whole, fb):
            self._queue.append((say_id, buf[i:i + fb]))
        if whole < len(buf):
            self._partial[say_id] = buf[whole:]
        if whole:
            self._idle_pending = True
            self._soon()

    def end(self, say_id: int) -> None:
        """The utterance is complete: its last partial frame is faded and padded (Asterisk
        would drop it), then marked."""
        if self._closed:
            return
        rest = self._partial.pop(say_id, b"")
        if rest:
            rest = audio.fade(rest, self._rate)
            self._queue.append((say_id, rest + bytes(self._frame - len(rest))))
        self._queue.append((say_id, None))
        self._idle_pending = True
        self._soon()

    def flush(self) -> set[int]:
        """Barge-in: nothing queued here or at Asterisk plays any more. The say_ids cut."""
        now = self._clock()
        self._advance(now)
        was_paused = self.paused
        cut = {sid for sid, _ in self._queue}
        cut.update(self._partial)
        cut.update(s.say_id for s in self._flight)
        nxt = next((s.pcm for s in self._flight if s.kind == _FRAME and s.pcm), None)
        if nxt is None:
            nxt = next((p for _, p in self._queue if p is not None), None)
        on_line = self._cur_say > 0 and now < self._cur_until and not was_paused
        self._queue.clear()
        self._partial.clear()
        self._flight.clear()
        self._marks.clear()
        self._outbox.command(Command("FLUSH_MEDIA"))
        if was_paused:
            self._outbox.command(Command("CONTINUE_MEDIA"))  # FLUSH keeps Asterisk paused
            self.paused = False
        self._free_at = now
        self._cur_say, self._cur_until = 0, now
        if on_line and nxt is not None:
            # one frame that fades the waveform out, so the cut does not click
            faded = audio.fade(nxt[:audio.frame_bytes(self._rate, audio.FADE_MS)], self._rate)
            self._send([(0, faded + bytes(self._frame - len(faded)))], now)
        self._soon()
        cut.discard(0)
        return cut

    def pause(self) -> None:
        """Silence the line now (PAUSE_MEDIA: Asterisk keeps its queue and plays silence)."""
        if self.paused or self._closed:
            return
        now = self._clock()
        self._advance(now)
        self.paused = True
        self._paused_at = now
        self._outbox.command(Command("PAUSE_MEDIA"))

    def resume(self) -> None:
        if not self.paused or self._closed:
            return
        now = self._clock()
        self.paused = False
        self._shift(now - self._paused_at)
        self._outbox.command(Command("CONTINUE_MEDIA"))
        self._soon()

    def set_gain(self, gain: float) -> None:
        """Ducking is not done on chan_websocket: Asterisk already holds up to `ahead_s` of our
        audio, which we cannot change, so a duck would arrive after the barge-in is decided.
        The caller hears full volume until the interruption (FLUSH_MEDIA) as before."""

    def sent_tail(self) -> list[tuple[float, bytes]]:
        """Not known here: Asterisk plays our audio up to `ahead_s` after we send it, on its own
        clock, so what the caller heard when is not exact enough to cancel its echo."""
        return []

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._partial.clear()
        self._flight.clear()
        self._marks.clear()
        self._callbacks.clear()

    # -- OutStream: what is playing ------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Audio of ours is queued here, playing at Asterisk, or not yet confirmed played."""
        return bool(self._queue or self._partial or self._flight or self._marks)

    @property
    def playing(self) -> bool:
        if self._queue or self._partial or self._flight:
            return True
        # nothing more to count (cheap: asked for every inbound frame while the caller talks)
        return not self.paused and self._cur_say > 0 and self._clock() < self._cur_until

    @property
    def current_say(self) -> int:
        """The utterance the caller hears now (0: silence, or paused)."""
        now = self._clock()
        self._advance(now)
        if self.paused or now >= self._cur_until:
            return 0
        return self._cur_say

    def queued_say(self) -> int:
        s = next((s.say_id for s in self._flight if s.kind == _FRAME and s.say_id > 0), 0)
        return s or next((sid for sid, p in self._queue if sid > 0 and p is not None), 0)

    @property
    def played(self) -> Mapping[int, int]:
        """say_id -> bytes of its audio Asterisk has started playing (by the clock, re-anchored
        by marks)."""
        self._advance(self._clock())
        return self._played

    # capabilities of AudioSocket's streams this transport does not have (out_stream.OutStream)
    def switch_rate(self, sample_rate: int) -> bool:
        return False

    def send_hangup(self) -> bool:
        return False

    def start_reading(self, leftover: bytes, on_audio: Callable[[bytes], None],
                      on_frame: Callable[[int, bytes], None], on_eof: Callable[[int, int], None],
                      on_error: Callable[[str], None],
                      on_fail: Callable[[BaseException], None] | None = None) -> bool:
        return False

    # -- from Asterisk (the line passes these on) ----------------------------------------------

    def mark_processed(self, correlation_id: str) -> None:
        """MEDIA_MARK_PROCESSED: Asterisk's playout has reached this mark."""
        if not any(m.correlation_id == correlation_id for m in self._marks):
            return  # a mark from before a flush
        now = self._clock()
        while self._marks:
            mark = self._marks.popleft()
            if mark.correlation_id == correlation_id:
                break
        self._pop_until(mark.at)  # all of it before the mark has been played
        lag = now - mark.at
        if abs(lag) > self._frame_s:  # Asterisk's clock and ours drifted apart: re-anchor
            self._shift(lag)
        self._soon()

    def xoff(self) -> None:
        """MEDIA_XOFF: Asterisk's queue is nearly full; send nothing until MEDIA_XON."""
        self._xoff = True

    def xon(self) -> None:
        self._xoff = False
        self._soon()

    # -- the clock -----------------------------------------------------------------------------

    def _soon(self) -> None:
        if not self._soon_pending and not self._closed:
            self._soon_pending = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._soon_pending = False
        if self._timer is not None:  # it fired, or this pump does its work: schedule anew
            self._timer.cancel()
            self._timer = None
        if self._closed:
            return
        now = self._clock()
        self._advance(now)
        self._top_up(now)
        self._advance(now)  # an utterance end sent just now may already be due
        if self._idle_pending and not self.busy:
            self._idle_pending = False
            self._callbacks.append((self._idle, ()))
        callbacks, self._callbacks = self._callbacks, []
        for cb, args in callbacks:
            if self._closed:
                return
            try:
                cb(*args)
            except Exception:  # a call's bug must not stop its own audio
                log.exception("playback callback failed")
        self._schedule(self._clock())

    def _idle(self) -> None:
        if self.on_idle is not None:
            self.on_idle()

    def _schedule(self, now: float) -> None:
        """Wake for the next thing to do: a top-up, an utterance's first frame or end (as far
        as an unconfirmed mark lets the clock count: its confirmation wakes us itself), a mark
        that should have been confirmed by now."""
        wake = float("inf")
        if self._queue and not self.paused and not self._xoff:
            wake = self._free_at - self._refill_s
        if not self.paused:
            limit = float("inf")
            if self._marks:
                limit = self._marks[0].at + self._mark_slack_s
                wake = min(wake, self._marks[0].at + self._mark_timeout_s)
            seen = set(self._played)
            for s in self._flight:
                if s.at > limit:
                    break
                # recorded calls: every frame as it plays (the file gets what was heard, where)
                if self._record is not None or s.kind == _END or (
                        s.say_id > 0 and s.say_id not in seen):
                    wake = min(wake, s.at)
                    break
                seen.add(s.say_id)
        if wake == float("inf"):
            return
        when = self._loop.time() + max(wake - now, 0.001)
        timer = self._timer
        if timer is not None:
            if abs(timer.when() - when) < 0.002:
                return  # (a pending timer: `_pump` clears the one that fired)
            timer.cancel()
        self._timer = self._loop.call_at(when, self._pump)

    def _top_up(self, now: float) -> None:
        """Keep Asterisk between `refill_s` and `ahead_s` ahead of real time."""
        q = self._queue
        # utterance ends at the head go out at once (they take no playout time)
        while q and q[0][1] is None:
            self._end_sent(q.popleft()[0], max(self._free_at, now), now)
        if not q or self.paused or self._xoff or self._free_at - now >= self._refill_s:
            return
        budget = int((self._ahead_s - max(0.0, self._free_at - now)) / self._frame_s)
        batch: list[tuple[int, bytes]] = []
        while q and budget > 0:
            sid, pcm = q.popleft()
            if pcm is None:
                self._send(batch, now)
                batch = []
                self._end_sent(sid, max(self._free_at, now), now)
                continue
            batch.append((sid, pcm))
            budget -= 1
        self._send(batch, now)
        while q and q[0][1] is None:
            self._end_sent(q.popleft()[0], max(self._free_at, now), now)
        if self._flight and now - self._last_mark >= self._mark_every_s:
            self._mark(now)

    def _send(self, frames: list[tuple[int, bytes]], now: float) -> None:
        """One BINARY message of whole frames (Asterisk cuts it into its frames)."""
        if not frames:
            return
        at = max(self._free_at, now)
        if self._free_at < now - self._frame_s and frames[0][0] == self._last_sent_say > 0:
            self.underruns += 1  # Asterisk's queue ran dry in the middle of an utterance
        step = self._frame_s
        for sid, pcm in frames:
            self._flight.append(_Sent(at, _FRAME, sid, pcm))
            at += step
        self._free_at = at
        self._last_sent_say = frames[-1][0]
        self.frames_sent += len(frames)
        self._outbox.media(self._media.encode(b"".join(p for _, p in frames)))

    def _end_sent(self, say_id: int, at: float, now: float) -> None:
        self._flight.append(_Sent(at, _END, say_id))
        self._mark(now)

    def _mark(self, now: float) -> None:
        self._mark_n += 1
        cid = f"fa{self._mark_n}"
        self._marks.append(_Mark(max(self._free_at, now), cid))
        self._outbox.command(Command("MARK_MEDIA", cid))
        self._last_mark = now

    def _advance(self, now: float) -> None:
        """Count what has played by `now` (never past an unconfirmed mark's slack)."""
        if self.paused:
            now = min(now, self._paused_at)
        marks = self._marks
        while marks and now > marks[0].at + self._mark_timeout_s:
            log.debug("chan_websocket: mark %s not confirmed in time", marks[0].correlation_id)
            marks.popleft()
        limit = now
        if marks and marks[0].at < now:
            limit = min(now, marks[0].at + self._mark_slack_s)
        self._pop_until(limit)

    def _pop_until(self, limit: float) -> None:
        flight = self._flight
        step = self._frame_s
        while flight and flight[0].at <= limit:
            s = flight.popleft()
            if s.kind == _END:
                if s.say_id > 0:
                    self._callbacks.append((self._done, (s.say_id,)))
                continue
            if s.say_id > 0:
                before = self._played.get(s.say_id)
                self._played[s.say_id] = (before or 0) + len(s.pcm)
                if before is None:
                    self._callbacks.append((self._first, (s.say_id, s.at)))
            self._cur_say, self._cur_until = s.say_id, s.at + step
            if self._record is not None:
                self._record(s.pcm, s.at)
        if self._callbacks and not self._soon_pending:
            self._soon()

    def _shift(self, dt: float) -> None:
        """Asterisk plays everything still queued `dt` seconds later than we thought."""
        for s in self._flight:
            s.at += dt
        for m in self._marks:
            m.at += dt
        self._free_at += dt
        self._cur_until += dt

    def _first(self, say_id: int, at: float) -> None:
        if self.on_first is not None:
            self.on_first(say_id, at)

    def _done(self, say_id: int) -> None:
        if self.on_done is not None:
            self.on_done(say_id)
