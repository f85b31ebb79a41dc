"""The UI mounted on a live server (what `flowagent serve` runs), without a browser: a real call
over AudioSocket shows up on the UI's WebSocket feed with its states, lines and slots, and the
conversation-test button runs the real test runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp

from flowagent.web.convtests import default_test_runner

from .conftest import LIVE_TOKEN, ROOT, Live

BEARER = {"Authorization": f"Bearer {LIVE_TOKEN}"}


async def _until(ws: aiohttp.ClientWebSocketResponse, check) -> dict:
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        if check(event):
            return event


async def test_a_real_call_streams_to_the_ui_feed(live: Live) -> None:
    from flowagent.asterisk.caller import AudioSocketCaller

    uuid = "0e5c1f1a-9d1b-4f59-8c35-5b3b8c1a2b77"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{live.base}/ui/", headers={"Accept": "text/html"},
                         allow_redirects=False) as r:
            assert r.status == 303  # the UI is public to the API middleware but checks itself
        async with s.ws_connect(f"{live.base}/ui/ws", headers=BEARER) as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["type"] == "hello"
            caller = AudioSocketCaller("127.0.0.1", live.audiosocket_port, call_uuid=uuid)
            await caller.connect()
            try:
                started = await _until(ws, lambda e: e["type"] == "call_started")
                assert started["uuid"] == uuid and started["call"]["flow"] == "Swift Removals"
                greeting = await _until(ws, lambda e: e["type"] == "transcript")
                assert "Swift Removals" in greeting["line"]["text"]
                await _until(ws, lambda e: e["type"] == "state"
                             and e["state"] == "how_can_we_help")
                await live.inject(uuid, "I'd like a quote please")
                heard = await _until(ws, lambda e: e["type"] == "transcript"
                                     and e["line"]["who"] == "caller")
                assert heard["line"]["text"] == "I'd like a quote please"
                await _until(ws, lambda e: e["type"] == "state" and e["state"] == "details")
                latency = await _until(ws, lambda e: e["type"] == "latency")
                assert latency["entry"]["ms"] >= 0
                await live.inject(uuid, "LS11 5AB")
                slot = await _until(ws, lambda e: e["type"] == "slot")
                assert (slot["name"], slot["value"]) == ("from_postcode", "LS11 5AB")
            finally:
                await caller.hangup()
                await caller.close()
            ended = await _until(ws, lambda e: e["type"] == "call_ended")
            assert ended["uuid"] == uuid
        async with s.get(f"{live.base}/ui/flows/removals", headers=BEARER) as r:
            assert r.status == 200 and 'data-state="details"' in await r.text()


async def test_real_conversation_tests_pass_and_fail_per_test(tmp_path: Path) -> None:
    flow = tmp_path / "removals.yaml"
    shutil.copy(ROOT / "flows/removals.yaml", flow)
    tests = tmp_path / "removals.tests.yaml"
    tests.write_text(
        "tests:\n"
        "  - name: greets the caller\n"
        "    turns:\n"
        "      - expect: {say_contains: Swift Removals, state: how_can_we_help}\n"
        "      - caller: I'd like a quote\n"
        "        expect: {state: details}\n"
        "  - name: wrong on purpose\n"
        "    turns:\n"
        "      - expect: {say_contains: Goodbye forever}\n"
    )
    results = await default_test_runner(flow, tests)
    assert [(r["name"], r["passed"]) for r in results] == [
        ("greets the caller", True), ("wrong on purpose", False)]
    assert "Goodbye forever" in results[1]["message"]
