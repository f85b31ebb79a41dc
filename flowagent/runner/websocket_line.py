"""A call's line over Asterisk's chan_websocket (`line.Line`): messages in and out of one WebSocket.

Asterisk dials `WebSocket/<client>/c(<format>)f(json)v(uuid=...,caller=...)` and opens a
WebSocket to us; `server/websocket_server.py` accepts it and hands every message to `feed()`.
What this line owns: the call id and metadata (the upgrade URL's `v(...)` values, plus the
channel variables in JSON's MEDIA_START), the media format and rate (MEDIA_START: ulaw/alaw are
decoded with the G.711 tables of `flowagent.audio`, slin* are PCM already), keypad digits
(DTMF_END), flow control and marks (passed to the out stream), and the hang-up both ways (our
HANGUP command or a close; Asterisk's close). Our messages go straight onto the socket, in
order (`WsConnection`). What it does not decide: anything about the conversation; it reports
to its owner through `LineHooks`, exactly as the AudioSocket line does, so the same flows and
call code run.

Control messages are read in whichever format the first one is in (MEDIA_START comes first:
JSON or plain text), and our commands go out in the same. A malformed message, media before
MEDIA_START or a second MEDIA_START is a protocol error: this call ends (its record says why),
nothing else does. An event this version does not know is logged and skipped (Asterisk adds
events over releases).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from flowagent.asterisk.chan_websocket import (
    FORMATS,
    AsteriskError,
    CallParams,
    Command,
    ControlFormat,
    ControlMessageError,
    DtmfEnd,
    MediaFormat,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    UnknownEventError,
    call_id,
    format_command,
    parse_event,
)
from flowagent.runner.audio_recording import CallRecorder
from flowagent.runner.line import LineError, LineHooks, first_of
from flowagent.runner.out_stream import OutStream
from flowagent.runner.websocket_out import WebSocketOutStream

log = logging.getLogger(__name__)

#: what arrives before the call has started is kept (audio, digits), up to this many messages
EARLY_LIMIT = 500
#: WebSocket close codes: normal, and "we broke off for a protocol error"
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002


class WsConnection(Protocol):
    """The accepted WebSocket, written synchronously (`server/websocket_server.py`): a message
    sent is on the socket, in order, when `send` returns — so a FLUSH_MEDIA always follows the
    media it takes back, and nothing needs a writer task."""

    def send(self, message: str | bytes) -> None:
        """A TEXT (str) or BINARY (bytes) message."""

    def close(self, code: int) -> None:
        """The closing handshake (the socket closes after it, bounded)."""


class WebSocketLine:
    """One chan_websocket connection. Created by the server at the upgrade; see the module doc."""

    def __init__(self, conn: WsConnection, params: CallParams) -> None:
        self._params = params
        self.uuid = params.call_id  # (MEDIA_START's channel id when the URL names none)
        self.sample_rate = 8000
        self.frames_in = 0
        self.out: OutStream | None = None
        self.recorder: CallRecorder | None = None
        self.ended = asyncio.Event()
        self.closed = False
        self.protocol_error = ""
        self._stream: WebSocketOutStream | None = None
        self._start: MediaStart | None = None
        self._media: MediaFormat | None = None
        self._format: ControlFormat | None = None
        self._got_start = asyncio.Event()
        self._hooks: LineHooks | None = None
        self._early: deque[tuple[str, bytes | str]] = deque(maxlen=EARLY_LIMIT)
        self._end_by = ""
        self._end_reason = ""
        self._conn = conn
        self._closing = False  # we sent (or asked for) the close

    # -- what happened, for the call's record ---------------------------------------------------

    @property
    def end_by(self) -> str:
        return self._end_by

    @property
    def end_reason(self) -> str:
        return self._end_reason

    @property
    def failed(self) -> bool:
        return bool(self.protocol_error)

    @property
    def media_format(self) -> MediaFormat | None:
        """The format MEDIA_START announced (None before it)."""
        return self._media

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The dialplan's `v(...)` values (but the call id) and, in JSON's MEDIA_START, the
        channel variables (under `channel_variables`)."""
        meta: dict[str, Any] = {k: v for k, v in self._params.params.items() if k != "uuid"}
        if self._start is not None and self._start.channel_variables:
            meta["channel_variables"] = dict(self._start.channel_variables)
        return meta

    # -- call set-up ----------------------------------------------------------------------------

    async def wait_for_uuid(self, timeout_s: float) -> str:
        """The call id: the URL's `uuid`, else MEDIA_START's channel id. MEDIA_START is awaited
        (bounded) either way: it says the format and the channel variables. With an id in the
        URL a call that breaks before MEDIA_START still gets its record."""
        await self._first_of(self._got_start, timeout_s)
        if self._start is None and not self.ended.is_set():
            self.fail(f"Asterisk sent no MEDIA_START within {timeout_s:g} s")
        if self._start is not None:
            self.uuid = call_id(self._params, self._start)
        elif self._params.call_id:
            self.uuid = self._params.call_id
        elif self.failed:
            raise LineError(self.protocol_error)
        return self.uuid

    async def wait_for_rate(self, timeout_s: float) -> int:
        """The rate MEDIA_START's format has (known once `wait_for_uuid` returned)."""
        await self._first_of(self._got_start, timeout_s)
        return self.sample_rate

    async def _first_of(self, event: asyncio.Event, timeout_s: float) -> None:
        await first_of(event, self.ended, timeout_s)

    def open_output(self, recorder: CallRecorder | None = None) -> OutStream:
        """Our audio's way out: sent ahead, played by Asterisk (recorded as it plays)."""
        self.recorder = recorder
        start = self._start
        media = self._media or FORMATS["slin"]
        frame = start.optimal_frame_size if start is not None else media.frame_bytes()
        stream = WebSocketOutStream(
            self, media, frame, on_done=self._say_done, on_first=self._first_frame,
            record=recorder.agent if recorder is not None else None)
        stream.on_idle = self._idle
        if self.closed:
            stream.close()
        self._stream = stream
        self.out = stream
        return stream

    def start(self, hooks: LineHooks) -> None:
        """From now on messages go to `hooks`: first what came early, then live ones."""
        self._hooks = hooks
        early, self._early = self._early, deque(maxlen=EARLY_LIMIT)
        for kind, data in early:
            if self.closed:
                return
            if kind == "audio":
                assert isinstance(data, bytes)
                self._audio(data)
            else:
                assert isinstance(data, str)
                hooks.on_dtmf(data)

    # -- inbound --------------------------------------------------------------------------------

    def feed_media(self, payload: bytes) -> None:
        """A BINARY message from Asterisk: the caller's audio in the channel's format."""
        self._feed(payload)

    def feed_control(self, text: str | bytes) -> None:
        """A TEXT message from Asterisk: a control event (bytes: as it came off the wire)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("A control message from Asterisk is not UTF-8 text.")
                return
        self._feed(text)

    def _feed(self, message: str | bytes) -> None:
        if self.closed:
            return
        try:
            if isinstance(message, bytes):
                self._binary(message)
            else:
                self._text(message)
        except ControlMessageError as exc:
            self.fail(str(exc))
        except Exception as exc:  # a bug here must end this call only
            log.error("call %s: failed handling a message from Asterisk", self.uuid or "?",
                      exc_info=exc)
            self._peer_gone("error", f"internal error: {exc!r}")
            self._shut(send_hangup=False, code=CLOSE_NORMAL)

    def _binary(self, payload: bytes) -> None:
        media = self._media
        if media is None:
            raise ControlMessageError("Asterisk sent media before MEDIA_START.")
        pcm = media.decode(payload)
        if not pcm:
            return
        self.frames_in += 1
        if self._hooks is None:
            self._early.append(("audio", pcm))
        else:
            self._audio(pcm)

    def _audio(self, pcm: bytes) -> None:
        if self.recorder is not None:
            self.recorder.caller(pcm)
        hooks = self._hooks
        if hooks is not None:
            hooks.on_audio(pcm)

    def _text(self, text: str) -> None:
        fmt = self._format
        if fmt is None:  # the first control message says which format Asterisk speaks
            fmt = "json" if text.lstrip().startswith("{") else "plain-text"
        try:
            event = parse_event(text, fmt)
        except UnknownEventError as exc:
            log.info("call %s: %s (skipped)", self.uuid or "?", exc)
            return
        if isinstance(event, MediaStart):
            self._media_started(event, fmt)
            return
        if self._start is None:
            raise ControlMessageError(
                f"Asterisk sent {type(event).__name__} before MEDIA_START.")
        stream = self._stream
        if isinstance(event, DtmfEnd):
            if self._hooks is None:
                self._early.append(("dtmf", event.digit))
            else:
                self._hooks.on_dtmf(event.digit)
        elif isinstance(event, MediaMarkProcessed):
            if stream is not None:
                stream.mark_processed(event.correlation_id)
        elif isinstance(event, MediaXoff):
            if stream is not None:
                stream.xoff()
        elif isinstance(event, MediaXon):
            if stream is not None:
                stream.xon()
        elif isinstance(event, AsteriskError):
            log.warning("call %s: Asterisk could not carry out a command: %s", self.uuid,
                        event.error_text)
        # QUEUE_DRAINED, MEDIA_BUFFERING_COMPLETED, STATUS: we ask for none of them

    def _media_started(self, start: MediaStart, fmt: ControlFormat) -> None:
        if self._start is not None:
            raise ControlMessageError("Asterisk sent a second MEDIA_START on one call.")
        media = start.media
        size = start.optimal_frame_size
        if size <= 0 or size % media.bytes_per_sample:
            raise ControlMessageError(f"MEDIA_START's optimal_frame_size {size} does not fit "
                                      f"the {media.name} format.")
        self._start = start
        self._media = media
        self._format = fmt
        self.sample_rate = media.sample_rate
        self._got_start.set()

    # -- to Asterisk (the out stream's `Outbox`) -------------------------------------------------

    def media(self, payload: bytes) -> None:
        if not self._closing:
            self._conn.send(payload)

    def command(self, command: Command) -> None:
        if not self._closing:
            self._conn.send(format_command(command, self._format or "json"))

    # -- from the out stream --------------------------------------------------------------------

    def _first_frame(self, say_id: int, at: float) -> None:
        if self._hooks is not None:
            self._hooks.on_first_frame(say_id, at)

    def _say_done(self, say_id: int) -> None:
        if self._hooks is not None:
            self._hooks.on_say_done(say_id)

    def _idle(self) -> None:
        if self._hooks is not None and not self.closed:
            self._hooks.on_idle()

    # -- ending ---------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Asterisk broke the protocol: this call ends (its record says why)."""
        if not self.protocol_error:
            self.protocol_error = reason
        log.warning("call %s: %s; ending this call", self.uuid or "?", reason.rstrip("."))
        self._peer_gone("error", f"protocol error: {reason}")
        self._shut(send_hangup=False, code=CLOSE_PROTOCOL_ERROR)

    def connection_lost(self, code: int | None = None) -> None:
        """The WebSocket closed: Asterisk closes it when the caller hangs up (or it broke)."""
        self._closing = True
        if code in (1000, 1001):
            self._peer_gone("caller", "caller hung up")
        else:
            self._peer_gone("caller", f"the WebSocket to Asterisk broke (close code {code})")
        self._close_out()

    def _peer_gone(self, by: str, reason: str) -> None:
        if not self.closed and not self._end_by:
            self._end_by, self._end_reason = by, reason
            if self._hooks is not None:
                self._hooks.on_line_ended(by, reason)
        self.closed = True
        self._close_out()
        self.ended.set()

    def hang_up(self, send_frame: bool = True) -> None:
        """End the call from our side: HANGUP (the dialplan continues after Dial, option g),
        then close. `send_frame=False`: only close (Asterisk already moved the channel)."""
        self._shut(send_hangup=send_frame, code=CLOSE_NORMAL)

    def _shut(self, *, send_hangup: bool, code: int) -> None:
        self.closed = True
        self._close_out()
        if not self._closing:
            if send_hangup and self._start is not None:
                self.command(Command("HANGUP"))
            self._closing = True
            self._conn.close(code)
        self.ended.set()

    def close(self) -> None:
        """The call is over: release the connection."""
        self._shut(send_hangup=False, code=CLOSE_NORMAL)

    def _close_out(self) -> None:
        if self._stream is not None:
            self._stream.close()
