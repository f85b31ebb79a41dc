"""The control API against hostile bodies and paths: every one gets a 4xx with a sentence,
never a 500 or a stack trace, and nothing is registered by a request that was refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

FLOWS = Path(__file__).parent / "flows"
TOKEN = "test-token"  # tests/runtime/conftest.py
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALL = "3b7e1c2a-9d4f-4e6a-8b1c-2d3e4f5a6b7c"


async def post(h: Any, body: bytes, ctype: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{h.base}/call", data=body, headers={**AUTH, "Content-Type": ctype},
            timeout=aiohttp.ClientTimeout(total=10)) as r:
        text = await r.text()
        return r.status, text


async def test_bodies_the_api_refuses_with_a_sentence(harness: Any) -> None:
    h = await harness()
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    status, text = await post(h, deep, "application/json")
    assert status == 400 and "nested deeper" in json.loads(text)["error"]
    ok_json = json.dumps({"uuid": CALL, "payload": {"did": "6001"}})
    status, text = await post(h, ok_json.encode(), "text/plain")
    assert status == 415 and "Content-Type: application/json" in json.loads(text)["error"]
    status, text = await post(h, ok_json.encode("utf-16"), "application/json")
    assert status == 400 and "UTF-8" in json.loads(text)["error"]
    huge = json.dumps({"uuid": "a" * 250_000}).encode()
    status, text = await post(h, huge, "application/json")
    assert status == 400 and "not a UUID" in json.loads(text)["error"] and len(text) < 200
    assert len(h.rt.pending) == 0  # nothing registered by any of those
    status, text = await post(h, ok_json.encode(), "application/json")
    assert status == 200 and CALL in h.rt.pending


async def test_a_lookup_never_matches_by_pattern(harness: Any) -> None:
    """`%` and `_` are literal characters in a call id, not SQL wildcards."""
    h = await harness()
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    await h.wait_record(c.uuid)
    h.rt.recent.clear()  # from the store, not the in-memory cache
    for path in ("/calls/%25", "/calls/_", "/calls/%5F", "/calls/" + c.uuid[:8] + "%25"):
        status, body = await h.http("GET", path)
        assert status == 404, (path, body)
    status, body = await h.http("GET", f"/calls/{c.uuid}")
    assert status == 200 and body["uuid"] == c.uuid
