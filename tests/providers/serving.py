"""The real server for provider end-to-end tests: one flow, provider overrides pointing at the
loopback fakes, SQLite in the test's tmp dir, optionally the control API; everything closed
afterwards (server, API, webhooks, store, and the flow's provider clients)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.control_api import create_app, start_api
from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig
from flowagent.server.store_sqlite import SqliteStore
from flowagent.server.webhooks import WebhookConfig, Webhooks


@dataclass
class Served:
    rt: Runtime
    server: AudioSocketServer
    store: SqliteStore
    http_port: int | None = None  # with `api=True`

    def caller(self) -> AudioSocketCaller:
        return AudioSocketCaller("127.0.0.1", self.server.address[1])


@contextlib.asynccontextmanager
async def serve_flow(flow: Path, overrides: dict[str, Any], tmp: Path, *,
                     config: RuntimeConfig | None = None, webhooks: Webhooks | None = None,
                     api: bool = False) -> AsyncIterator[Served]:
    flows = FlowSet(ProviderPool(), overrides)
    flows.load(flow)
    store = SqliteStore(tmp / "calls.db")
    hooks = webhooks or Webhooks(WebhookConfig(url=""))
    rt = Runtime(flows, store, config=config or RuntimeConfig(), webhooks=hooks)
    server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
    await server.start()
    runner = None
    http_port = None
    if api:
        runner, http_port = await start_api(create_app(rt), "127.0.0.1", 0)
    try:
        yield Served(rt, server, store, http_port)
    finally:
        with contextlib.suppress(Exception):
            await server.close()
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(Exception):
            await hooks.close()
        await store.close()
        for kind in ("asr", "tts", "llm"):
            inst = getattr(flows.default.providers, kind, None) if flows.default else None
            if inst is not None and hasattr(inst, "close"):
                await inst.close()


def speech_runs(c: AudioSocketCaller) -> list[list[float]]:
    """Arrival times of each unbroken run of agent speech frames."""
    runs: list[list[float]] = []
    current: list[float] = []
    for r in c.stats.frames:
        if r.speech:
            current.append(r.at)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs
