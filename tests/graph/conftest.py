"""Fixtures for the web UI tests: a real aiohttp server on 127.0.0.1 (port 0) with the UI app."""

from __future__ import annotations

import contextlib
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from flowagent.web import LiveHub, MemoryRecords, create_ui_app

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"


def write_wav(path: Path, seconds: float = 0.2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * int(8000 * seconds))


def sample_record(uuid: str, caller: str, outcome: str, started_at: float) -> dict[str, Any]:
    return {
        "uuid": uuid, "flow": "Swift Removals", "caller": caller, "did": "+441134960000",
        "started_at": started_at, "ended_at": started_at + 42, "duration_s": 42.0,
        "outcome": outcome,
        "transcript": [
            {"at": 0.0, "who": "agent", "text": "Hello, you're through to Swift Removals.",
             "state": "greet"},
            {"at": 1.0, "who": "caller", "text": "I'd like a quote <please>", "state": "ask"},
        ],
        "slots": {"bedrooms": 3}, "tool_calls": [], "turns": [
            {"index": 1, "state": "how_can_we_help", "end_of_speech": 1.0, "first_frame": 1.25}
        ],
    }


@pytest.fixture
def broken_flow(tmp_path: Path) -> Path:
    p = tmp_path / "broken.yaml"
    p.write_text("flowagent: 1\nname: Broken\nstart: a\nstates: [not, a, mapping\n")
    return p


@pytest.fixture
def records(tmp_path: Path) -> MemoryRecords:
    rec_dir = tmp_path / "recordings"
    rec_dir.mkdir()
    store = MemoryRecords(recordings_dir=rec_dir)
    day = time.mktime((2026, 3, 14, 10, 0, 0, 0, 0, -1))
    store.add(sample_record("rec-1", "+447700900123", "completed", day))
    store.add(sample_record("rec-2", "+447700900999", "transferred", day + 86400))
    write_wav(rec_dir / "rec-1.wav")
    return store


async def fake_tests(flow: Path, tests: Path) -> list[dict[str, Any]]:
    """Stand-in for the engine's runner in routing tests (the real one is tested when present)."""
    return [
        {"name": "quote happy path", "passed": True, "message": ""},
        {"name": "books <a> move", "passed": False, "message": "expected state booked, got offer"},
    ]


@pytest.fixture
async def ui(
    records: MemoryRecords, broken_flow: Path, tmp_path: Path
) -> AsyncIterator[tuple[TestClient, LiveHub]]:
    flow = tmp_path / "removals.yaml"
    flow.write_text((ROOT / "flows/removals.yaml").read_text())
    (tmp_path / "removals.tests.yaml").write_text("tests: []\n")
    hub = LiveHub(records)
    app = create_ui_app(flows=[flow, broken_flow], hub=hub, records=records, token=TOKEN,
                        prefix="", test_runner=fake_tests)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield client, hub
    finally:
        hub.close()
        await client.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """Keep each phase's report on the item so fixtures can screenshot a failed browser test."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


LIVE_TOKEN = "live-ui-token"
FAKE_PROVIDERS = """
providers:
  asr: {name: fake, options: {latency_ms: 0}}
  tts: {name: fake, options: {ms_per_word: 5}}
  vad: {name: fake, options: {threshold: 0.01}}
"""


@dataclass
class Live:
    base: str
    audiosocket_port: int
    runtime: Any

    async def inject(self, uuid: str, text: str) -> None:
        async with aiohttp.ClientSession() as s, s.post(
            f"{self.base}/calls/{uuid}/inject", json={"text": text},
            headers={"Authorization": f"Bearer {LIVE_TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as r:
            assert r.status == 200, await r.text()


@pytest.fixture
async def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    from flowagent.server.audiosocket_server import AudioSocketServer
    from flowagent.server.control_api import create_app, start_api
    from flowagent.server.runtime import FlowSet, ProviderPool, Runtime
    from flowagent.server.store_sqlite import SqliteStore
    from flowagent.web.mount import ui_for_runtime

    monkeypatch.setenv("FLOWAGENT_API_TOKEN", LIVE_TOKEN)
    flow = tmp_path / "removals.yaml"
    text = (ROOT / "flows/removals.yaml").read_text()
    flow.write_text(text.replace("\nstart: greet\n", "\nstart: greet\n" + FAKE_PROVIDERS, 1))
    flows = FlowSet(ProviderPool())
    flows.load(flow)
    store = SqliteStore(tmp_path / "calls.db")
    rt = Runtime(flows, store)
    server = AudioSocketServer(rt, "127.0.0.1", 0)
    await server.start()
    app = create_app(rt, subapps={"/ui": ui_for_runtime(rt)}, public_prefixes=("/ui",))
    runner, http_port = await start_api(app, "127.0.0.1", 0)
    try:
        yield Live(f"http://127.0.0.1:{http_port}", server.address[1], rt)
    finally:
        with contextlib.suppress(Exception):
            await server.close()
        await runner.cleanup()
        await store.close()
