"""Helpers beside these tests importable by plain name (fake_ami, agi_peer), and `live`: the real
runtime (AudioSocket server + control API with the Asterisk routes) on 127.0.0.1 port 0."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flowagent.asterisk.routes import add_routes
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.control_api import create_app, start_api
from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig
from flowagent.server.store_sqlite import SqliteStore

from .live_runtime import FLOW, TOKEN, Live

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

@pytest.fixture
async def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    monkeypatch.setenv("FLOWAGENT_API_TOKEN", TOKEN)
    flows = FlowSet(ProviderPool())
    flows.load(FLOW)
    store = SqliteStore(tmp_path / "calls.db")
    rt = Runtime(flows, store, config=RuntimeConfig())
    server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
    await server.start()
    app = create_app(rt)
    add_routes(app, rt)  # behind the API's own token middleware
    runner, http_port = await start_api(app, "127.0.0.1", 0)
    yield Live(rt, server, http_port)
    with contextlib.suppress(Exception):
        await server.close()
    await runner.cleanup()
    await store.close()
