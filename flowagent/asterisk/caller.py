"""An AudioSocket client that plays the caller (and Asterisk's side of the socket).

Used by `flowagent call`, by the runtime's end-to-end tests and by the benchmarks. It behaves like
Asterisk's `AudioSocket()` application: sends the UUID first, then one 20 ms audio frame every
20 ms on a monotonic clock for as long as the call lasts (silence when the caller says nothing),
DTMF as 0x03 frames, and hangs up by closing the socket. Everything the agent sends is kept with
its arrival time, so callers of this class can measure latency, pacing and barge-in reaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flowagent import audio
from flowagent.asterisk.audiosocket import (
    AUDIO_RATES,
    KIND_FOR_RATE,
    FrameParser,
    Kind,
    ProtocolError,
    encode,
    encode_dtmf,
    encode_uuid,
)

#: RMS above which an agent frame counts as speech (the server's silence is exact zeros)
AGENT_SPEECH_RMS = 0.002


@dataclass
class Received:
    at: float  # monotonic
    kind: int
    size: int
    speech: bool


@dataclass
class CallerStats:
    frames: list[Received] = field(default_factory=list)
    bad_kinds: list[int] = field(default_factory=list)
    zero_length_audio: int = 0
    hangup_frame: bool = False


class AudioSocketCaller:
    def __init__(self, host: str, port: int, *, call_uuid: str | None = None,
                 sample_rate: int = 8000, keep_frames: bool = True,
                 first_audio_after_s: float = 0.02, send_silence: bool = True) -> None:
        self.host = host
        self.port = port
        self.uuid = call_uuid or str(uuidlib.uuid4())
        self.sample_rate = sample_rate
        self.kind = KIND_FOR_RATE[sample_rate]
        self.frame_bytes = audio.frame_bytes(sample_rate)
        self.keep_frames = keep_frames
        #: real Asterisk sends the first audio frame ~0.5 s after the UUID frame (measured, app
        #: and channel driver alike); the default is one frame time
        self.first_audio_after_s = first_audio_after_s
        #: False: nothing is sent while the caller is quiet (silence suppression, a held line)
        self.send_silence = send_silence
        self.stats = CallerStats()
        self.agent_audio = bytearray()  # everything the agent sent, silence included
        self.closed = asyncio.Event()
        self.hangup_by = ""
        self.last_agent_speech = 0.0  # monotonic time of the last speech frame from the agent
        self.first_agent_speech = 0.0
        self.agent_speech_frames = 0
        self._outq: deque[bytes] = deque()
        self._drained = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._parser = FrameParser()
        self._speech_sent_at: list[float] = []
        self.last_speech_sent = 0.0  # monotonic time our last speech frame went out
        self.on_agent_frame: list[Callable[[float, bytes, bool], None]] = []  # (at, pcm, speech)

    async def connect(self, timeout_s: float = 5.0) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout_s
        )
        self._reader, self._writer = reader, writer
        writer.write(encode_uuid(self.uuid))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_loop()), loop.create_task(self._recv_loop())]

    # -- sending ------------------------------------------------------------------------------

    def queue_audio(self, pcm: bytes) -> float:
        """Queue caller speech; returns how long it will take to play (seconds)."""
        fb = self.frame_bytes
        if len(pcm) % fb:
            pcm += bytes(fb - len(pcm) % fb)
        for i in range(0, len(pcm), fb):
            self._outq.append(pcm[i : i + fb])
        return len(pcm) / (2 * self.sample_rate)

    async def say_audio(self, pcm: bytes) -> None:
        """Play caller speech and wait until its last frame has been sent."""
        self._drained.clear()
        self.queue_audio(pcm)
        closed = asyncio.ensure_future(self.closed.wait())
        drained = asyncio.ensure_future(self._drained.wait())
        await asyncio.wait({closed, drained}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        drained.cancel()

    def switch_rate(self, sample_rate: int) -> None:
        """Send audio at another rate from the next frame on (a codec change mid-call)."""
        self.sample_rate = sample_rate
        self.kind = KIND_FOR_RATE[sample_rate]
        self.frame_bytes = audio.frame_bytes(sample_rate)
        self._outq.clear()

    def send_dtmf(self, digit: str) -> None:
        if self._writer is not None and not self.closed.is_set():
            self._writer.write(encode_dtmf(digit))

    def send_raw(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    async def hangup(self) -> None:
        """Hang up like Asterisk does when the caller puts the phone down: close the socket."""
        if not self.hangup_by:
            self.hangup_by = "caller"
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self.closed.set()

    async def _send_loop(self) -> None:
        assert self._writer is not None
        frame_s = 0.02
        t0 = time.monotonic() + max(0.0, self.first_audio_after_s - frame_s)
        n = 0
        writer = self._writer
        while not self.closed.is_set():
            n += 1
            delay = t0 + n * frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if writer.transport.is_closing():
                return
            if self._outq:
                pcm = self._outq.popleft()
                writer.write(encode(self.kind, pcm))
                if audio.rms(pcm) > AGENT_SPEECH_RMS:
                    self.last_speech_sent = time.monotonic()
                if not self._outq:
                    self._drained.set()
            elif self.send_silence:
                writer.write(encode(self.kind, bytes(self.frame_bytes)))

    async def _recv_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                now = time.monotonic()
                for f in self._parser.feed(data):
                    self._on_frame(now, f.kind, f.payload)
                if self.stats.hangup_frame:
                    break
        except (ConnectionError, ProtocolError):
            pass
        if not self.hangup_by:
            self.hangup_by = "agent"
        self.closed.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()

    def _on_frame(self, now: float, kind: Kind, payload: bytes) -> None:
        if kind == Kind.HANGUP:
            self.stats.hangup_frame = True
            return
        if kind not in AUDIO_RATES:
            self.stats.bad_kinds.append(int(kind))
            return
        if not payload:
            self.stats.zero_length_audio += 1
            return
        speech = audio.rms(payload) > AGENT_SPEECH_RMS
        if speech:
            if not self.first_agent_speech:
                self.first_agent_speech = now
            self.last_agent_speech = now
            self.agent_speech_frames += 1
        if self.keep_frames:
            self.stats.frames.append(Received(now, int(kind), len(payload), speech))
            self.agent_audio += payload
        for cb in self.on_agent_frame:
            cb(now, payload, speech)

    # -- waiting ------------------------------------------------------------------------------

    async def wait_agent_started(self, after: float, timeout_s: float = 10.0) -> float:
        """Wait for agent speech after monotonic time `after`; returns its arrival time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.closed.is_set():
            if self.last_agent_speech > after:
                return self._first_speech_after(after)
            await asyncio.sleep(0.005)
        raise TimeoutError("the agent did not start speaking")

    def _first_speech_after(self, after: float) -> float:
        first = self.last_agent_speech
        for r in reversed(self.stats.frames):
            if r.at <= after:
                break
            if r.speech:
                first = r.at
        return first

    async def wait_agent_quiet(self, quiet_s: float = 0.6, timeout_s: float = 20.0,
                               after: float = 0.0) -> bool:
        """Wait until the agent has spoken (after monotonic time `after`) and then been silent
        for `quiet_s` (its turn is over), or the call ended. Returns False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.closed.is_set():
                return True
            now = time.monotonic()
            if self.last_agent_speech > after and now - self.last_agent_speech >= quiet_s:
                return True
            await asyncio.sleep(0.01)
        return False
