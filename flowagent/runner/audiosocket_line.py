"""A call's line over AudioSocket: frames in and out of one TCP connection (`line.Line`).

What it owns: the socket, the frame parser, the frames that arrive before the call is set up,
the call's sample rate (what the first audio frame says, however late it comes), the paced
outbound stream, the recording tap, and the hang-up frame. What it does not decide: anything
about the conversation. It reports to its owner through `LineHooks` — audio, a keypad digit, a
rate change, the far end going away, and the out stream's "first frame / utterance done / idle"
callbacks — so it can be driven in a test by feeding bytes, without TCP.

Why the first audio frame matters: real Asterisk sends it ~0.5 s after the UUID frame, and it is
the only statement of the call's rate (0x10 = 8 kHz, 0x12 = 16 kHz from
`Dial(AudioSocket/.../c(slin16))`, ...). A greeting started before it would go out at the wrong
rate, so `wait_for_rate()` waits for it (bounded by `first_audio_timeout_s`).

Inbound reads: every read of the socket goes to `feed()` until `start()`; then, when the out
stream is the native media loop's, the socket's reading moves to that loop (frames arrive in
batches, parsed off the event loop) and `feed()` is no longer called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flowagent.asterisk.audiosocket import (
    AUDIO_RATES,
    Frame,
    FrameParser,
    Kind,
    ProtocolError,
    encode_hangup,
)
from flowagent.runner.audio_recording import CallRecorder
from flowagent.runner.line import LineError, LineHooks, first_of
from flowagent.runner.out_stream import OutStream, Pacer

log = logging.getLogger(__name__)


class AudioSocketLine:
    """One AudioSocket connection. Created by the server at connect; see the module doc."""

    def __init__(self, transport: asyncio.Transport, pacer: Pacer, *,
                 keepalive_ms: int = 500) -> None:
        self.transport = transport
        self.pacer = pacer
        self.keepalive_ms = keepalive_ms
        self.uuid = ""
        self.sample_rate = 8000
        self.kind = Kind.SLIN_8K
        self.frames_in = 0
        self.out: OutStream | None = None
        self.recorder: CallRecorder | None = None
        #: set when the connection is over (either side)
        self.ended = asyncio.Event()
        self.closed = False
        self.protocol_error: ProtocolError | None = None
        self._hooks: LineHooks | None = None
        self._sink: Callable[[bytes], None] | None = None  # hooks.on_audio, read once
        self._parser = FrameParser()
        self._early: list[Frame] = []  # frames that arrived before `start()`
        self._got_uuid = asyncio.Event()
        self._got_audio = asyncio.Event()
        self._odd = b""  # a trailing byte of an odd-length frame, joined to the next one
        self._end_by = ""
        self._end_reason = ""
        self._out_closed = False

    # -- what happened, for the call's record ---------------------------------------------------

    @property
    def end_by(self) -> str:
        """Who ended the connection from the line's point of view ("" while open or when we
        did)."""
        return self._end_by

    @property
    def end_reason(self) -> str:
        return self._end_reason

    @property
    def metadata(self) -> Mapping[str, Any]:
        """AudioSocket carries only the UUID: metadata comes by `POST /call`."""
        return {}

    # -- call set-up ----------------------------------------------------------------------------

    async def wait_for_uuid(self, timeout_s: float) -> str:
        """The call's UUID from the first frame. Raises `LineError` when the first frame
        is something else or none comes in time; "" when the far end closed first."""
        await self._first_of(self._got_uuid, timeout_s)
        if self.protocol_error is not None and not self._got_uuid.is_set():
            raise LineError(self.protocol_error.reason)
        if not self._got_uuid.is_set():
            if self.ended.is_set():
                return ""
            self.fail("no UUID frame within the time limit")
            raise LineError("no UUID frame within the time limit")
        self.uuid = self._early.pop(0).uuid()
        return self.uuid

    async def wait_for_rate(self, timeout_s: float) -> int:
        """The call's sample rate, from its first audio frame (however late, up to
        `timeout_s`; then 8 kHz is assumed and a later frame of another rate switches)."""
        if not self._got_audio.is_set():
            await self._first_of(self._got_audio, timeout_s)
            if not self._got_audio.is_set() and not self.ended.is_set():
                log.warning("call %s: no audio within %.1f s of the UUID; assuming 8 kHz",
                            self.uuid, timeout_s)
        for f in self._early:
            if f.is_audio:
                self.sample_rate = f.sample_rate
                self.kind = f.kind
                break
        return self.sample_rate

    async def _first_of(self, event: asyncio.Event, timeout_s: float) -> None:
        await first_of(event, self.ended, timeout_s)

    def open_output(self, recorder: CallRecorder | None = None) -> OutStream:
        """The paced outbound stream at the call's rate (recorded when `recorder` is given:
        its frames then pass through Python so the recorder sees exactly what was sent)."""
        self.recorder = recorder
        self.out = self._open_out()
        return self.out

    def _open_out(self) -> OutStream:
        write: Callable[[bytes], None] = self.transport.write
        if self.recorder is not None:
            write = self.recorder.wrap_write(write, self.sample_rate)
        out = self.pacer.open(
            write, self.sample_rate, on_done=self._say_done, on_error=self._write_failed,
            on_first=self._first_frame, keepalive_ms=self.keepalive_ms,
            transport=self.transport if self.recorder is None else None,
        )
        out.on_idle = self._idle
        return out

    def start(self, hooks: LineHooks) -> None:
        """From now on frames go to `hooks`: first those that came early, then live ones."""
        self._hooks = hooks
        self._sink = hooks.on_audio
        early, self._early = self._early, []
        try:
            for f in early:
                if self.closed:
                    return
                self._frame(f)
        except Exception as exc:  # as for a live frame: this call ends, with its reason
            self._inbound_failed(exc)
            return
        self._attach_native_input()

    # -- inbound --------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the socket. Frames are handled synchronously, in order, as they arrive."""
        if self.closed:
            return
        try:
            if self._hooks is not None:
                # one whole frame at the call's rate: almost every read (see `one_audio`)
                pcm = self._parser.one_audio(data, self.kind)
                if pcm is not None:
                    self._audio(pcm)
                    return
            try:
                frames = self._parser.feed(data)
            except ProtocolError as exc:
                self._frames(exc.parsed)  # what came before the bad frame is real
                raise
            self._frames(frames)
        except ProtocolError as exc:
            self._protocol_failed(exc)
        except Exception as exc:  # a bug here must end this call only
            self._inbound_failed(exc)

    def _frames(self, frames: list[Frame]) -> None:
        if self._hooks is None:
            self._early_frames(frames)
            return
        rate = self.sample_rate
        for f in frames:
            if AUDIO_RATES.get(f.kind) == rate:  # the common case first
                self._audio(f.payload)
            else:
                self._frame(f)
                rate = self.sample_rate
            if self.closed:
                return

    def _early_frames(self, frames: list[Frame]) -> None:
        for f in frames:
            if not self._got_uuid.is_set():
                if f.kind is not Kind.UUID:
                    raise ProtocolError(f"the first frame was {f.kind.name}, not the UUID")
                f.uuid()  # validates
                self._got_uuid.set()
            elif f.is_audio:
                self._got_audio.set()
            elif f.kind is Kind.DTMF:
                f.digit()  # validates now, as a live frame would be, not when replayed
            elif f.kind is Kind.UUID:
                raise ProtocolError("a second UUID frame in the same call")
            self._early.append(f)

    def _frame(self, frame: Frame) -> None:
        kind = frame.kind
        hooks = self._hooks
        assert hooks is not None
        if kind in AUDIO_RATES:
            if AUDIO_RATES[kind] != self.sample_rate:
                self._switch_rate(kind)
            self._audio(frame.payload)
        elif kind is Kind.DTMF:
            hooks.on_dtmf(frame.digit())
        elif kind is Kind.HANGUP:
            self._peer_gone("caller", "caller hung up")
        elif kind is Kind.ERROR:
            code = frame.error_code()
            by = "caller" if code == 0x01 else "error"
            self._peer_gone(by, f"Asterisk sent error 0x{code:02x}")
        elif kind is Kind.UUID:
            raise ProtocolError("a second UUID frame in the same call")

    def _audio(self, pcm: bytes) -> None:
        self.frames_in += 1
        if self.recorder is not None:
            self.recorder.caller(pcm)
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            pcm, self._odd = pcm[:-1], pcm[-1:]
            if not pcm:
                return
        sink = self._sink
        if sink is not None:
            sink(pcm)

    def _switch_rate(self, kind: Kind) -> None:
        """The caller's audio kind sets our rate (Dial(AudioSocket/...) may use 16 kHz+)."""
        self.sample_rate = AUDIO_RATES[kind]
        self.kind = kind
        self._odd = b""
        out = self.out
        if out is not None and not self._out_closed and not out.switch_rate(self.sample_rate):
            self.pacer.close_stream(out)
            self.out = self._open_out()
        if self._hooks is not None:
            self._hooks.on_rate_change(self.sample_rate)

    # -- the native media loop reads the socket (native_player.py) ------------------------------

    def _attach_native_input(self) -> None:
        """Hand the socket's reading to the native media loop when the out stream can take it:
        frames then arrive in batches instead of one event-loop callback + parser run per read.
        The Python parser's partial frame goes along."""
        out = self.out
        if out is None or self.closed or self.transport.is_closing():
            return
        held = self._parser.take_pending()
        # nothing else runs on the loop until this returns, so the transport reads nothing
        # between the hand-over and the pause
        if out.start_reading(held, self._audio, self._native_frame, self._native_eof,
                             self._native_failed, self._inbound_failed):
            self.transport.pause_reading()
        else:
            self._parser.feed(held)  # a partial frame only: nothing is handled twice

    def _native_frame(self, kind: int, payload: bytes) -> None:
        """A frame other than audio at the call's rate (DTMF, hang-up, error, rate change)."""
        if self.closed:
            return
        try:
            self._frame(Frame(Kind(kind), payload))
        except Exception as exc:
            self._inbound_failed(exc)

    def _native_eof(self, errno: int, pending: int) -> None:
        if pending:
            log.info("call %s: %d bytes of a truncated frame at hang-up", self.uuid, pending)
        self.connection_lost()

    def _native_failed(self, reason: str) -> None:
        if not self.closed:
            self.fail(reason)

    # -- ending ---------------------------------------------------------------------------------

    def _inbound_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            self._protocol_failed(exc)
            return
        log.error("call %s: failed handling inbound audio", self.uuid or "?", exc_info=exc)
        self._peer_gone("error", f"internal error: {exc!r}")
        self.hang_up(send_frame=False)

    def _protocol_failed(self, exc: ProtocolError) -> None:
        self.fail(exc.reason)

    def fail(self, reason: str) -> None:
        """The peer broke the protocol: this call ends (its record says why)."""
        if self.protocol_error is None:
            self.protocol_error = ProtocolError(reason)
        log.warning("call %s: %s; ending this call", self.uuid or "?", reason)
        self._peer_gone("error", f"protocol error: {reason}")
        self.hang_up(send_frame=False)

    @property
    def failed(self) -> bool:
        return self.protocol_error is not None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()

    def connection_lost(self) -> None:
        """The socket closed (Asterisk closes it when the caller hangs up)."""
        if self._parser.pending:
            log.info("call %s: %d bytes of a truncated frame at hang-up", self.uuid,
                     self._parser.pending)
        self._peer_gone("caller", "caller hung up")

    def _peer_gone(self, by: str, reason: str) -> None:
        if not self.closed and not self._end_by:
            self._end_by, self._end_reason = by, reason
            if self._hooks is not None:
                self._hooks.on_line_ended(by, reason)
        self.closed = True
        self._close_out()
        self.ended.set()

    def _write_failed(self, exc: BaseException) -> None:
        self._peer_gone("caller", "the connection broke while we were speaking")
        self.hang_up(send_frame=False)

    def hang_up(self, send_frame: bool = True) -> None:
        """End the call from our side: the 0x00 frame (the dialplan then continues), close."""
        if self.closed and self.transport.is_closing():
            return
        self.closed = True
        sent = False
        out = self.out
        if out is not None:
            # the native loop owns the socket's writes: it sends the 0x00 frame itself (never
            # inside a partially written audio frame)
            sent = send_frame and out.send_hangup()
            self._close_out()
        self.ended.set()
        transport = self.transport
        if send_frame and not sent and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(encode_hangup())
        with contextlib.suppress(Exception):
            transport.close()

    def _close_out(self) -> None:
        if self.out is not None and not self._out_closed:
            self._out_closed = True
            self.pacer.close_stream(self.out)

    # -- the out stream's callbacks ----------------------------------------------------------

    def _first_frame(self, say_id: int, at: float) -> None:
        if self._hooks is not None:
            self._hooks.on_first_frame(say_id, at)

    def _say_done(self, say_id: int) -> None:
        if self._hooks is not None:
            self._hooks.on_say_done(say_id)

    def _idle(self) -> None:
        if self._hooks is not None and not self.closed:
            self._hooks.on_idle()
