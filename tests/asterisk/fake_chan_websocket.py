"""A fake Asterisk chan_websocket channel: Asterisk's side of one call over a real WebSocket.

It behaves like `Dial(WebSocket/<client>/c(<format>)f(<json|plain-text>)v(uuid=...,...))` with a
websocket_client.conf connection: it opens the WebSocket to the app's URL with the `v(...)`
values as the query, sends `MEDIA_START`, then on one monotonic `ptime` clock

- sends the caller's audio as BINARY frames of `optimal_frame_size` (silence between what
  `say()` queued, as a live channel does; `fault="silence_suppression"` sends nothing then),
- plays one queued frame of the app's media per tick into `heard` (decoded PCM: what the caller
  hears), processing `MARK_MEDIA` marks in order (`MEDIA_MARK_PROCESSED`), and reports
  `MEDIA_XOFF` when the queue reaches `xoff` frames and `MEDIA_XON` once it is below `xon`.

Commands are read as Asterisk reads them (chan_websocket.c's handle_command): TEXT messages over
128 bytes are ignored; an unparsable JSON command gets `ERROR "Unable to parse JSON command"`;
unknown commands are ignored; `FLUSH_MEDIA` drops the queue (`flushed_frames` counts it);
`HANGUP` hangs up (close 1000); binary media arriving while the queue is full is dropped, and a
trailing partial frame is dropped unless `START_MEDIA_BUFFERING` is on.

Faults: `malformed_control` (garbage TEXT messages after MEDIA_START), `no_media_start`,
`abrupt_close` (TCP reset after `abort_after_s`), `silence_suppression`; and `stall_s`: the
playout stops for that long from the first media frame (Asterisk falling behind the app).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flowagent.asterisk.chan_websocket import (
    MAX_COMMAND_BYTES,
    QUEUE_MAX_FRAMES,
    QUEUE_XOFF_FRAMES,
    QUEUE_XON_FRAMES,
    AsteriskError,
    Command,
    ControlFormat,
    ControlMessageError,
    DtmfEnd,
    MediaBufferingCompleted,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    QueueDrained,
    Status,
    format_event,
    media_format,
    parse_command,
)

_MARK = object()
#: a played frame with a sample above this is the agent's audio, not silence
SPEECH_PEAK = 200


class FakeChanWebsocket:
    def __init__(self, url: str, *, control: ControlFormat = "json", media: str = "slin16",
                 params: dict[str, str] | None = None,
                 channel_variables: dict[str, str] | None = None, fault: str | None = None,
                 queue_max: int = QUEUE_MAX_FRAMES, xoff: int = QUEUE_XOFF_FRAMES,
                 xon: int = QUEUE_XON_FRAMES, abort_after_s: float = 0.2,
                 stall_s: float = 0.0) -> None:
        self.url = url + ("?" + urlencode(params) if params else "")
        self.control: ControlFormat = control
        self.media = media_format(media)
        self.ptime = 20
        self.frame = self.media.frame_bytes(self.ptime)
        self.channel_id = "1761245643.1"
        self.channel_variables = {"MEDIA_WEBSOCKET_CONNECTION_ID": "flowagent",
                                  "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": str(self.frame),
                                  **(channel_variables or {})}
        self.fault = fault
        self.queue_max, self.xoff, self.xon = queue_max, xoff, xon
        self.abort_after_s = abort_after_s
        #: playout stalls this long from the first media frame (Asterisk falling behind)
        self.stall_s = stall_s
        self._stall_until: float | None = None
        # what happened, for the tests
        self.heard = bytearray()  # PCM the caller heard (the app's media, played out)
        #: (monotonic time, peak sample) of every frame of the app's media played out
        self.play_log: list[tuple[float, int]] = []
        self.last_agent_speech = 0.0  # when a played frame last had speech in it
        self.commands: list[Command] = []
        self.command_times: list[tuple[float, str]] = []  # (monotonic time, command name)
        self.sent_events: list[str] = []
        self.flushed_frames = 0
        self.dropped_frames = 0
        self.hung_up_by_app = False
        self.queued_at_hangup = -1  # media frames still to play when the app sent HANGUP
        self.close_code: int | None = None
        # state
        self._queue: deque[Any] = deque()  # bytes frames and (_MARK, id) entries
        self._frames = 0  # media frames in the queue
        self._queue_full = False
        self._paused = False
        self._bulk = False
        self._leftover = b""
        self._report_drained = False
        self._caller: deque[bytes] = deque()  # caller audio frames still to send
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    # -- life ----------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeChanWebsocket:
        self._ws = await connect(self.url, subprotocols=None, compression=None,
                                 open_timeout=5, close_timeout=2)
        if self.fault != "no_media_start":
            await self.event(MediaStart("flowagent", "WebSocket/flowagent/0x5140001a0040",
                                        self.channel_id, self.media.name, self.frame,
                                        self.ptime, self.channel_variables))
        if self.fault == "malformed_control":
            for junk in ("MEDIA_START connection_id", "{\"event\": 3}", "\xff\xfe??",
                         "DTMF_END digit:Z channel_id:1"):
                await self._ws.send(junk)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._clock())]
        if self.fault == "abrupt_close":
            self._tasks.append(asyncio.create_task(self._abort_later()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hangup()

    async def hangup(self) -> None:
        """Asterisk hangs up (the caller put the phone down): close 1000."""
        if self._ws is not None and not self.closed.is_set():
            with contextlib.suppress(Exception):
                await self._ws.close(1000)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self.closed.set()

    async def _abort_later(self) -> None:
        await asyncio.sleep(self.abort_after_s)
        assert self._ws is not None
        self._ws.transport.abort()
        self.closed.set()

    # -- the caller's side ---------------------------------------------------------------------

    def say(self, pcm: bytes) -> None:
        """Queue caller audio (s16le at the format's rate); sent one frame per tick."""
        data = self.media.encode(pcm)
        for i in range(0, len(data), self.frame):
            chunk = data[i:i + self.frame]
            self._caller.append(chunk + self.media.encode(bytes(2 * (self.frame - len(chunk))
                                                                // self.media.bytes_per_sample)))

    async def dtmf(self, digit: str) -> None:
        await self.event(DtmfEnd(digit, self.channel_id))

    async def event(self, ev: Any) -> None:
        text = format_event(ev, self.control)
        self.sent_events.append(text)
        assert self._ws is not None
        await self._ws.send(text)

    async def send_raw(self, data: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    # -- Asterisk's clock ----------------------------------------------------------------------

    async def _clock(self) -> None:
        assert self._ws is not None
        silence = self.media.encode(bytes(self.frame * 2 // self.media.bytes_per_sample))
        start = time.monotonic()
        tick = 0
        try:
            while True:
                tick += 1
                await asyncio.sleep(max(0.0, start + tick * self.ptime / 1000 - time.monotonic()))
                if self._caller:
                    await self._ws.send(self._caller.popleft())
                elif self.fault != "silence_suppression":
                    await self._ws.send(silence)
                await self._play_one()
        except ConnectionClosed:
            self.closed.set()

    async def _play_one(self) -> None:
        if self._paused or (self._stall_until is not None
                            and time.monotonic() < self._stall_until):
            return
        if self._queue_full and self._frames < self.xon:
            self._queue_full = False
            await self.event(MediaXon(self.channel_id))
        while self._queue and isinstance(self._queue[0], tuple):
            _, cid = self._queue.popleft()
            await self.event(MediaMarkProcessed(cid, self.channel_id))
        if not self._queue:
            if self._report_drained:
                self._report_drained = False
                await self.event(QueueDrained(self.channel_id))
            return
        frame = self._queue.popleft()
        self._frames -= 1
        pcm = self.media.decode(frame)
        self.heard += pcm
        peak = int(np.max(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)))) if pcm else 0
        now = time.monotonic()
        self.play_log.append((now, peak))
        if peak > SPEECH_PEAK:
            self.last_agent_speech = now

    # -- what the caller heard, over time ------------------------------------------------------

    def first(self, command: str) -> float:
        """When the app first sent `command` (monotonic time)."""
        return next(t for t, name in self.command_times if name == command)

    def speech_after(self, t: float) -> list[tuple[float, int]]:
        """Frames played after monotonic time `t` that had speech in them."""
        return [(at, peak) for at, peak in self.play_log if at > t and peak > SPEECH_PEAK]

    async def wait_agent_started(self, after: float = 0.0, timeout_s: float = 10.0) -> float:
        """Wait for agent speech played after `after`; returns when its first frame played."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.closed.is_set():
            if self.last_agent_speech > after:
                return self.speech_after(after)[0][0]
            await asyncio.sleep(0.005)
        raise TimeoutError("the agent did not start speaking")

    async def wait_agent_quiet(self, quiet_s: float = 0.3, timeout_s: float = 20.0,
                               after: float = 0.0) -> bool:
        """Wait until the agent has spoken (after `after`) and then been silent for `quiet_s`,
        or the call ended. False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.closed.is_set():
                return True
            now = time.monotonic()
            if self.last_agent_speech > after and now - self.last_agent_speech >= quiet_s:
                return True
            await asyncio.sleep(0.01)
        return False

    # -- the app's messages --------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    await self._media(msg)
                else:
                    await self._command(msg)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    async def _media(self, data: bytes) -> None:
        if self._stall_until is None and self.stall_s:
            self._stall_until = time.monotonic() + self.stall_s
        if self._frames >= self.queue_max:
            self.dropped_frames += len(data) // self.frame
            return
        if self._bulk and self._leftover:
            data = self._leftover + data
            self._leftover = b""
        whole = len(data) - len(data) % self.frame
        for i in range(0, whole, self.frame):
            self._queue.append(data[i:i + self.frame])
            self._frames += 1
            if not self._queue_full and self._frames >= self.xoff:
                self._queue_full = True
                await self.event(MediaXoff(self.channel_id))
        if self._bulk:
            self._leftover = data[whole:]

    async def _command(self, text: str) -> None:
        if len(text.encode()) > MAX_COMMAND_BYTES:
            return  # Asterisk ignores it (logs a warning)
        try:
            cmd = parse_command(text, self.control)
        except ControlMessageError as exc:
            if self.control == "json" and "JSON" in str(exc):
                await self.event(AsteriskError("Unable to parse JSON command", self.channel_id))
            return  # unknown plain-text command: only logged
        self.commands.append(cmd)
        self.command_times.append((time.monotonic(), cmd.name))
        if cmd.name == "HANGUP":
            self.hung_up_by_app = True
            self.queued_at_hangup = self._frames
            assert self._ws is not None
            await self._ws.close(1000)
        elif cmd.name == "FLUSH_MEDIA":
            self.flushed_frames += self._frames
            self._queue.clear()
            self._frames = 0
            self._bulk = False
            self._leftover = b""
        elif cmd.name == "MARK_MEDIA":
            self._queue.append((_MARK, cmd.correlation_id))
        elif cmd.name == "START_MEDIA_BUFFERING":
            self._bulk = True
        elif cmd.name == "STOP_MEDIA_BUFFERING":
            self._bulk = False
            if self._leftover:
                self._queue.append(self._leftover + bytes(self.frame - len(self._leftover)))
                self._frames += 1
                self._leftover = b""
            await self.event(MediaBufferingCompleted(cmd.correlation_id, self.channel_id))
        elif cmd.name == "REPORT_QUEUE_DRAINED":
            self._report_drained = True
        elif cmd.name == "GET_STATUS":
            await self.event(Status(self.channel_id, self._frames, self.xon, self.xoff,
                                    self._queue_full, self._bulk, self._paused))
        elif cmd.name == "PAUSE_MEDIA":
            self._paused = True
        elif cmd.name == "CONTINUE_MEDIA":
            self._paused = False
