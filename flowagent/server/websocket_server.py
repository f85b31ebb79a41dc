"""The chan_websocket listener: Asterisk's `Dial(WebSocket/flowagent/...)` opens one WebSocket
per call here (`flowagent serve --websocket HOST:PORT`, path `/chan_websocket`).

Why the `websockets` library, and its Sans-I/O layer: `websockets` is already the project's
WebSocket library (providers, the fake Asterisk in the tests); aiohttp, which serves the control
API, would need a second application on a second port for one route. Its protocol objects do the
whole protocol — the upgrade handshake, frame parsing with C-accelerated unmasking, answering
Asterisk's pings, the closing handshake — while we own the socket, like the AudioSocket server
does: a call's inbound frames are handed to its line straight from `data_received` (no queue and
no task switch per 20 ms frame: measured, that was a third of the server's CPU per frame with
the library's asyncio connection), and our messages are written synchronously, so the line's
FLUSH_MEDIA always follows the media it takes back.

Before a call exists, a wrong path or a malformed call id gets a plain HTTP refusal (Asterisk's
Dial then fails over to the dialplan's fallback). Each call runs in a task this server owns;
`run_call` catches everything of its own; drain stops accepting and lets calls finish. The
AudioSocket server (`audiosocket_server.py`), which always runs beside this one (even with no
AudioSocket port), owns flow reloads and the shared pacing clock. We send no pings:
`websocket_client.conf` (from `flowagent asterisk config`) has Asterisk ping us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from flowagent.asterisk.chan_websocket import (
    DEFAULT_PATH,
    MAX_EVENT_BYTES,
    ControlMessageError,
    parse_upgrade_url,
)
from flowagent.runner.call_start import run_call
from flowagent.runner.websocket_line import WebSocketLine
from flowagent.server.runtime import Runtime

log = logging.getLogger(__name__)

#: chan_websocket may offer this subprotocol (websocket_client.conf `protocols`); we take it
SUBPROTOCOL = "media"
#: the upgrade request must come this soon after the TCP connection
OPEN_TIMEOUT_S = 5.0
#: the closing handshake may take this long before the socket is dropped
CLOSE_TIMEOUT_S = 2.0
#: bytes waiting to be written to one call's socket beyond which Asterisk has stopped reading
#: (we send at most ~1 s ahead: 32 KB of slin16)
WRITE_LIMIT = 1 << 20
#: the largest message we accept (media arrives in 20 ms frames; events are far smaller)
MAX_MESSAGE = MAX_EVENT_BYTES + (1 << 20)


class _Connection(asyncio.Protocol):
    """One TCP connection: the WebSocket protocol in, one call's line out (`WsConnection`)."""

    def __init__(self, server: WebSocketServer) -> None:
        self._server = server
        self._proto = ServerProtocol(select_subprotocol=_select_subprotocol,
                                     max_size=MAX_MESSAGE)
        self._poll = server.rt.player.poll
        self.transport: asyncio.Transport | None = None
        self.line: WebSocketLine | None = None
        self._fragments: list[bytes] = []
        self._fragment_op = Opcode.BINARY
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._deadline = asyncio.get_running_loop().call_later(OPEN_TIMEOUT_S, self._abort)

    def data_received(self, data: bytes) -> None:
        self._poll()  # AudioSocket calls' pacing clock cuts in between reads
        proto = self._proto
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._handshake(event)
        self._write_out()

    def eof_received(self) -> bool:
        self._proto.receive_eof()
        self._write_out()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._proto.receive_eof()
        if self._deadline is not None:
            self._deadline.cancel()
        if self.line is not None:
            self.line.connection_lost(self._proto.close_code or 1006)

    # -- the upgrade -----------------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        refusal = self._server.refusal(request)
        if refusal is not None:
            self._proto.send_response(self._proto.reject(*refusal))
            return
        response = self._proto.accept(request)
        self._proto.send_response(response)
        if response.status_code != 101:
            log.warning("chan_websocket upgrade refused: %s", self._proto.handshake_exc)
            return
        self.line = WebSocketLine(self, parse_upgrade_url(request.path))  # checked by refusal()
        self._server.start_call(self.line)

    # -- messages in -----------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        payload = bytes(frame.data)
        if op is Opcode.CLOSE:  # Asterisk hung up (the protocol answers the close)
            if self.line is not None:
                self.line.connection_lost(Close.parse(payload).code)
            return
        if op is Opcode.CONT:
            self._fragments.append(payload)
            if not frame.fin:
                return
            data, op = b"".join(self._fragments), self._fragment_op
            self._fragments = []
        elif op is Opcode.TEXT or op is Opcode.BINARY:
            if not frame.fin:  # (Asterisk sends whole messages; the protocol allows pieces)
                self._fragments, self._fragment_op = [payload], op
                return
            data = payload
        else:
            return  # ping (answered by the protocol), pong
        line = self.line
        if line is None:
            return
        if op is Opcode.BINARY:
            line.feed_media(data)
        else:
            line.feed_control(data)

    # -- messages out (`websocket_line.WsConnection`) --------------------------------------------

    def send(self, message: str | bytes) -> None:
        if self._proto.state is not State.OPEN:
            return
        if isinstance(message, bytes):
            self._proto.send_binary(message)
        else:
            self._proto.send_text(message.encode())
        self._write_out()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > WRITE_LIMIT:
            log.warning("call %s: Asterisk stopped reading; dropping the connection",
                        self.line.uuid if self.line is not None else "?")
            self._abort()

    def close(self, code: int) -> None:
        if self._proto.state is State.OPEN:
            self._proto.send_close(code)
            self._write_out()
        if self._deadline is None and self.transport is not None:
            self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S,
                                                                   self._abort)

    def _write_out(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self._proto.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the closing handshake is done: half-close
                with contextlib.suppress(Exception):
                    transport.write_eof()
            else:
                transport.close()
        if self._proto.close_expected() and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S,
                                                                   self._abort)

    def _abort(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.transport.abort()


class WebSocketServer:
    def __init__(self, runtime: Runtime, host: str = "127.0.0.1", port: int = 9098, *,
                 path: str = DEFAULT_PATH) -> None:
        self.rt = runtime
        self.host = host
        self.port = port
        self.path = path
        self._server: asyncio.base_events.Server | None = None
        self._calls: set[asyncio.Task[Any]] = set()
        self._address: tuple[str, int] = (host, port)

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host,
                                                self.port, reuse_address=True, backlog=4096)
        self._address = self._server.sockets[0].getsockname()[:2]

    def refusal(self, request: Request) -> tuple[HTTPStatus, str] | None:
        """Why this upgrade cannot become a call (one plain sentence), or None."""
        if urlsplit(request.path).path != self.path:
            return (HTTPStatus.NOT_FOUND,
                    f"flowagent's chan_websocket listener is at {self.path}; check the uri in "
                    "websocket_client.conf.\n")
        if not self.rt.accepting:
            return HTTPStatus.SERVICE_UNAVAILABLE, "flowagent is shutting down.\n"
        try:
            parse_upgrade_url(request.path)
        except ControlMessageError as exc:
            log.warning("chan_websocket connection refused: %s", exc)
            return HTTPStatus.BAD_REQUEST, f"{exc}\n"
        return None

    def start_call(self, line: WebSocketLine) -> None:
        task = asyncio.get_running_loop().create_task(self._run_call(line))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _run_call(self, line: WebSocketLine) -> None:
        try:
            await run_call(line, self.rt)
        except asyncio.CancelledError:
            pass
        except Exception:  # pragma: no cover - run_call catches everything itself
            log.exception("call crashed")
        finally:
            line.close()

    async def drain(self, timeout_s: float = 600.0) -> None:
        """Stop accepting; wait for running calls to end (cancel them after `timeout_s`)."""
        self.rt.accepting = False
        if self._server is not None:
            self._server.close()
        calls = list(self._calls)
        if calls:
            log.info("draining: waiting for %d chan_websocket call(s) to finish", len(calls))
            _done, pending = await asyncio.wait(calls, timeout=timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def close(self) -> None:
        """Stop at once: cancel calls (their records are still written)."""
        self.rt.accepting = False
        if self._server is not None:
            self._server.close()
        for t in list(self._calls):
            t.cancel()
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=5)


def _select_subprotocol(proto: ServerProtocol, offered: Any) -> Any:
    """`media` when Asterisk offers it; otherwise no subprotocol (never a refusal)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None
