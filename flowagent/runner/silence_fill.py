"""End of turn when the line goes quiet: silence for the listener when no frames come.

Why: the turn rule (`turn_taking.py`) ends the caller's turn after `end_of_turn_ms` of silence
it has *heard* — milliseconds of audio the VAD found no speech in. A line that stops sending
frames when the caller stops talking gives it nothing to count, and the turn never ends: the
caller waits for an answer that never comes. Lines do stop: a trunk or phone with silence
suppression (VAD/CNG) sends no packets in pauses, chan_websocket drops the comfort-noise frames
it gets from the bridge, and a channel on hold sends nothing over AudioSocket either.

So while a caller's turn is open, `SilenceFill` watches the line's frame count (no per-frame
cost: it reads a counter the line keeps anyway) and, once no frame has come for `gap_ms`, gives
the listener the missing time as silence — the frames a live line would have carried — and keeps
doing so in real time until frames come again or the turn ends. Nothing else changes: the same
turn rule, the same end-of-turn silence, the same VAD and recogniser hear it. Outside a caller's
turn it does not run (a quiet line then only matters to the no-input timer, which is wall-clock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from flowagent import audio
from flowagent.runner.call_tasks import CallTasks

#: no frame for this long is a line that stopped, not network jitter (the silence given covers
#: this wait too, so an end-of-turn silence longer than it ends the turn when it would have)
GAP_MS = 200
#: how often the line is looked at while a turn is open
CHECK_MS = 40
FRAME_MS = 20


class QuietLine(Protocol):
    """What the fill reads of the line."""

    #: inbound audio frames so far
    frames_in: int
    sample_rate: int

    @property
    def closed(self) -> bool: ...


class SilenceFill:
    def __init__(self, line: QuietLine, feed: Callable[[bytes], None],
                 in_turn: Callable[[], bool], tasks: CallTasks, *, gap_ms: int = GAP_MS,
                 check_ms: int = CHECK_MS) -> None:
        self._line = line
        self._feed = feed
        self._in_turn = in_turn
        self._tasks = tasks
        self._gap_s = gap_ms / 1000
        self._check_s = check_ms / 1000
        self._task: asyncio.Task[None] | None = None
        #: milliseconds of silence given to the listener in this call (metrics, tests)
        self.filled_ms = 0

    def turn_began(self) -> None:
        """The caller's turn is open: watch the line until it closes."""
        if self._task is None or self._task.done():
            self._task = self._tasks.spawn(self._watch(), "silence-fill")

    async def _watch(self) -> None:
        line = self._line
        frame_s = FRAME_MS / 1000
        seen = line.frames_in
        last = time.monotonic()  # when a frame last came (or the watch began)
        while self._in_turn() and not line.closed:
            await asyncio.sleep(self._check_s)
            now = time.monotonic()
            if line.frames_in != seen:
                seen, last = line.frames_in, now
                continue
            if now - last < self._gap_s:
                continue
            # the frames a live line would have carried since the last one, then on in time
            frames = int((now - last) / frame_s)
            if frames <= 0:
                continue
            silence = bytes(audio.frame_bytes(line.sample_rate, FRAME_MS))
            for _ in range(frames):
                if not self._in_turn() or line.closed:
                    break
                self._feed(silence)
                self.filled_ms += FRAME_MS
            last += frames * frame_s
