"""Shared scaffolding for the fake provider servers: loopback WebSocket/HTTP servers on port 0.

A fake records what the client did (`requests`, `received`) so tests can assert on the wire
protocol, and has a `fault` attribute the test sets to make it misbehave in a documented way.
Every fake also tracks its own simulated waiting (`simulated_s`) so the benchmark can subtract it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import numpy as np
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


def tone_pcm(ms: float, sample_rate: int, freq: float = 440.0) -> bytes:
    """A quiet sine (what the fake TTS 'says'), s16le mono."""
    n = int(sample_rate * ms / 1000)
    t = np.arange(n) / sample_rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


class FakeWsServer:
    """A websockets server on 127.0.0.1:0 with an auth check and handshake fault modes."""

    path_prefix = ""

    def __init__(self, *, api_key: str = "test-key", fault: str | None = None) -> None:
        self.api_key = api_key
        self.fault = fault
        self.requests: list[tuple[str, Headers]] = []
        self.received: list[Any] = []
        self.connections: list[ServerConnection] = []
        self.simulated_s = 0.0
        self._server: Server | None = None
        self.port = 0

    # subclasses: which header carries the key, and what it must look like
    def auth_ok(self, request: Request) -> bool:
        raise NotImplementedError

    async def handler(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append((request.path, request.headers))
        if self.fault == "http_429":
            resp = connection.respond(429, '{"error": {"message": "Too many requests"}}\n')
            resp.headers["Retry-After"] = "1"
            return resp
        if self.fault == "http_500":
            return connection.respond(500, '{"error": {"message": "Internal error"}}\n')
        if not self.auth_ok(request):
            return connection.respond(401, '{"error": {"message": "Invalid credentials"}}\n')
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            await self.handler(ws)
        except Exception:  # a client that vanished mid-test is not the fake's problem
            pass

    async def sleep(self, seconds: float) -> None:
        """Simulated provider latency (accounted, so benchmarks can subtract it)."""
        if seconds > 0:
            self.simulated_s += seconds
            await asyncio.sleep(seconds)

    @staticmethod
    async def close_and_drain(ws: ServerConnection, code: int, reason: str = "") -> None:
        """Close with `code` while still reading: a client may have frames in flight, and an
        unread queue would stall the closing handshake (the real services drain too)."""
        closer = asyncio.create_task(ws.close(code, reason))
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass
        with contextlib.suppress(Exception):
            await closer

    @staticmethod
    def drop(ws: ServerConnection) -> None:
        """Kill the TCP connection without a close frame (what a network failure looks like)."""
        ws.transport.abort()

    async def start(self) -> FakeWsServer:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._process_request, compression=None,
                                   max_size=16 * 1024 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path_prefix}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class FakeHttpServer:
    """An aiohttp server on 127.0.0.1:0; subclasses add routes in `routes()`."""

    def __init__(self, *, api_key: str = "test-key", fault: str | None = None) -> None:
        self.api_key = api_key
        self.fault = fault
        self.fault_times = 10**9  # how many requests the fault applies to
        self.requests: list[dict[str, Any]] = []
        self.simulated_s = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.open_streams = 0  # responses currently being written (cancellation checks)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def take_fault(self) -> str | None:
        """The fault for this request (counts down `fault_times`)."""
        if self.fault and self.fault_times > 0:
            self.fault_times -= 1
            return self.fault
        return None

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.simulated_s += seconds
            await asyncio.sleep(seconds)

    async def start(self) -> Any:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    def drop(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()
