"""The AudioSocket TCP server: one call per connection, reload, graceful drain.

Isolation: each connection runs in its own task whose failures are caught by the session itself
(protocol errors, provider faults, bugs all end that call with its record written); the server's
accept loop never sees them. Reload: flow files are polled for changes (mtime) and re-validated;
a flow that fails keeps the old version serving and the error is logged. Drain (SIGTERM): stop
accepting, let running calls finish (up to a limit), flush records and webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, cast

from flowagent.runner.audiosocket_line import AudioSocketLine
from flowagent.runner.call_start import run_call
from flowagent.server.runtime import Runtime

log = logging.getLogger(__name__)


class _CallProtocol(asyncio.Protocol):
    """Bytes in, straight to the call's line (no stream reader, no task per read): at a
    thousand calls the inbound path is 50,000 frames a second, so every layer counts."""

    __slots__ = ("_poll", "_server", "line")

    def __init__(self, server: AudioSocketServer) -> None:
        self._server = server
        self.line: AudioSocketLine | None = None
        # the pacing clock cuts in between reads when its tick is due (see Player.poll)
        self._poll = server.rt.player.poll

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport (uvloop's is not a subclass of asyncio.Transport, so no isinstance)
        self.line = self._server._open_call(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if self.line is not None:
            self._poll()
            self.line.feed(data)

    def eof_received(self) -> bool:
        return False  # close our side too: Asterisk closing the socket is a hang-up

    def connection_lost(self, exc: Exception | None) -> None:
        if self.line is not None:
            self.line.connection_lost()


class AudioSocketServer:
    def __init__(self, runtime: Runtime, host: str = "127.0.0.1", port: int = 9099,
                 *, reload_interval_s: float = 2.0, prewarm: bool = False,
                 listen: bool = True) -> None:
        self.rt = runtime
        self.host = host
        self.port = port
        self.reload_interval_s = reload_interval_s
        self._server: asyncio.base_events.Server | None = None
        self._calls: set[asyncio.Task[Any]] = set()
        self._reloader: asyncio.Task[None] | None = None
        self._address: tuple[str, int] = (host, port)
        self.prewarm = prewarm
        #: False (`serve --audiosocket off`): no AudioSocket port; reloads and drain still run
        self.listen = listen
        self._reload_lock = asyncio.Lock()
        self._jobs: set[asyncio.Task[Any]] = set()  # SIGHUP reloads
        self._prewarm_task: asyncio.Task[None] | None = None
        self.unwritten = 0

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.listen:
            self._server = await loop.create_server(
                lambda: _CallProtocol(self), self.host, self.port, reuse_address=True,
                backlog=4096,
            )
            self._address = self._server.sockets[0].getsockname()[:2]
        # before the first call: this node's leftovers closed, heart-beat and outbox started
        try:
            await self.rt.start(audiosocket=f"{self._address[0]}:{self._address[1]}"
                                if self.listen else "")
        except BaseException:
            if self._server is not None:
                self._server.close()
            raise
        if self.reload_interval_s > 0:
            self._reloader = loop.create_task(self._reload_loop())
        if self.prewarm:
            self._prewarm_task = loop.create_task(self._prewarm_all())

    async def _prewarm_all(self) -> None:
        """Fill every flow's prompt-audio cache in the background (calls are served meanwhile)."""
        for entry in list(self.rt.flows.by_path.values()):
            try:
                n = await entry.prewarm()
                if n:  # prewarm() itself logs what came from disk and what was synthesised
                    log.info("%s: %d static prompts added in the background", entry.name, n)
            except Exception:
                log.exception("prompt prewarm failed for %s", entry.name)

    def _open_call(self, transport: asyncio.Transport) -> AudioSocketLine | None:
        """A new connection: its line, and a task that runs the call (owned by this server)."""
        if not self.rt.accepting:
            transport.close()
            return None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line = AudioSocketLine(transport, self.rt.player, keepalive_ms=self.rt.config.keepalive_ms)
        task = asyncio.get_running_loop().create_task(self._run_call(line))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return line

    async def _run_call(self, line: AudioSocketLine) -> None:
        try:
            await run_call(line, self.rt)
        except asyncio.CancelledError:
            pass
        except Exception:  # pragma: no cover - run_call catches everything itself
            log.exception("call crashed")
        finally:
            line.transport.close()

    def reload_now(self) -> list[str]:
        messages = self.rt.flows.reload_changed()
        for m in messages:
            failed = m.startswith(("not reloaded", "still not serving"))
            (log.error if failed else log.info)("%s", m)
        return messages

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval_s)
            await self.reload_once()

    async def reload_once(self) -> list[str]:
        """Re-check the flow files now (the poll loop, and SIGHUP via `request_reload`)."""
        async with self._reload_lock:
            try:
                # validation does file I/O and CPU work: keep it off the loop
                messages = await asyncio.to_thread(self.reload_now)
            except Exception:
                log.exception("flow reload failed")
                return []
            if self.prewarm and any(m.startswith(("reloaded", "now serving")) for m in messages):
                await self._prewarm_all()
            return messages

    def request_reload(self) -> None:
        """SIGHUP (`systemctl reload` = `kill -HUP`): reload changed flows now, in a task the
        server owns (cancelled by `close()`)."""
        async def run() -> None:
            messages = await self.reload_once()
            if not messages:
                log.info("reload requested: no flow file has changed")

        log.info("reload requested (SIGHUP): checking flow files")
        task = asyncio.get_running_loop().create_task(run())
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def drain(self, timeout_s: float = 600.0) -> None:
        """Stop accepting; wait for running calls to end (cancel them after `timeout_s`)."""
        self.rt.accepting = False
        if self._server is not None:
            self._server.close()
        if self._reloader is not None:
            self._reloader.cancel()
        calls = list(self._calls)
        if calls:
            log.info("draining: waiting for %d call(s) to finish", len(calls))
            _done, pending = await asyncio.wait(calls, timeout=timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        await self.rt.records.flush(5.0)  # the outbox events are in the store...
        await self.rt.webhooks.drain(5.0)  # ...and what is due goes out now

    async def close(self) -> None:
        """Stop at once: cancel calls (their records are still written), stop the clock."""
        self.rt.accepting = False
        if self._server is not None:
            self._server.close()
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        if self._prewarm_task is not None:
            self._prewarm_task.cancel()
        for job in list(self._jobs):
            job.cancel()
        for t in list(self._calls):
            t.cancel()
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=5)
        await self.rt.player.stop()
        #: call records still unwritten when the server stopped (serve spills and reports them)
        self.unwritten = await self.rt.stop()
        await self.rt.webhooks.close()
        from flowagent.dialogue.tools import close_shared_session

        await close_shared_session()
