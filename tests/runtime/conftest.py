"""Fixtures: a real AudioSocket server + control API on 127.0.0.1 (port 0) with fake providers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asterisk.fake_chan_websocket import FakeChanWebsocket

from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.asterisk.chan_websocket import DEFAULT_PATH
from flowagent.asterisk.routes import add_routes
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.call_store import StoreBackend
from flowagent.server.control_api import create_app, start_api
from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig
from flowagent.server.stores import open_store
from flowagent.server.webhooks import WebhookConfig, Webhooks
from flowagent.server.websocket_server import WebSocketServer

FLOWS = Path(__file__).parent / "flows"
TOKEN = "test-token"


@dataclass
class Harness:
    rt: Runtime
    server: AudioSocketServer
    http_port: int
    store: StoreBackend
    ws: WebSocketServer

    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def caller(self, **kw: Any) -> AudioSocketCaller:
        return AudioSocketCaller("127.0.0.1", self.port, **kw)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws.address[1]}{DEFAULT_PATH}"

    def ws_caller(self, **kw: Any) -> FakeChanWebsocket:
        """Asterisk's chan_websocket side of one call (connect with `async with`)."""
        return FakeChanWebsocket(self.ws_url, **kw)

    async def http(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", {"Authorization": f"Bearer {TOKEN}"})
        async with aiohttp.ClientSession() as s, s.request(
            method, self.base + path, headers=headers, timeout=aiohttp.ClientTimeout(total=5),
            **kw,
        ) as r:
            ctype = r.headers.get("Content-Type", "")
            body = await (r.json() if "json" in ctype else r.text())
            return r.status, body

    async def inject(self, uuid: str, text: str) -> None:
        status, body = await self.http("POST", f"/calls/{uuid}/inject", json={"text": text})
        assert status == 200, body

    async def record(self, uuid: str) -> dict[str, Any] | None:
        """The call's final record (None while it is in progress: its row is a live
        snapshot until the call ends)."""
        rec = await self.store.get(uuid)
        return None if rec is None or rec.get("live") else rec

    async def wait_record(self, uuid: str, timeout_s: float = 10) -> dict[str, Any]:
        """The call's record, polled (it is written when the session finishes, a moment after
        the socket closes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rec = await self.record(uuid)
            if rec is not None:
                return rec
            await asyncio.sleep(0.05)
        raise AssertionError(f"no record for {uuid}")


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HarnessFactory]:
    """`h = await harness(flow_path, webhook_url=..., config=...)` (torn down after the test)."""
    monkeypatch.setenv("FLOWAGENT_API_TOKEN", TOKEN)
    made: list[tuple[AudioSocketServer, Any, StoreBackend, WebSocketServer]] = []

    async def make(
        flow: Path | str = FLOWS / "basic.yaml",
        *,
        webhook_url: str = "",
        webhook_secret: str = "",
        config: RuntimeConfig | None = None,
        reload_interval_s: float = 0,
        store: str = "",
        node_id: str = "",
    ) -> Harness:
        """`store`: a SQLite path or postgresql:// URL (default: a new SQLite file)."""
        config = config or RuntimeConfig()
        flows = FlowSet(ProviderPool(), config.provider_overrides)
        flows.load(Path(flow))
        records = await open_store(store or tmp_path / f"calls{len(made)}.db")
        hooks = Webhooks(WebhookConfig(url=webhook_url, secret=webhook_secret, timeout_s=2,
                                       retries=1, backoff_s=0.05, poll_s=0.2))
        rt = Runtime(flows, records, config=config, webhooks=hooks, node_id=node_id)
        server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=reload_interval_s)
        await server.start()
        ws = WebSocketServer(rt, "127.0.0.1", 0)  # chan_websocket calls, beside AudioSocket
        await ws.start()
        app = create_app(rt)
        add_routes(app, rt)  # what serve adds: the Asterisk dialplan's routes
        runner, http_port = await start_api(app, "127.0.0.1", 0)
        made.append((server, runner, records, ws))
        return Harness(rt, server, http_port, records, ws)

    yield make
    for server, runner, store, ws in made:
        with contextlib.suppress(Exception):
            await ws.close()
        with contextlib.suppress(Exception):
            await server.close()
        await runner.cleanup()
        await store.close()
