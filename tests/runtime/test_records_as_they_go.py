"""Records written as the call goes, one record per connection, a call that touches two nodes,
and webhooks through the outbox — over real TCP against real servers, on both store backends
(SQLite file; a real PostgreSQL server shared by two in-process nodes where it matters)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from loopback import serve_app

from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.server.runtime import RuntimeConfig
from flowagent.server.webhooks import IDEMPOTENCY_HEADER

pytestmark = pytest.mark.timeout(60)


async def until(check: Any, timeout_s: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


async def say(h: Any, c: AudioSocketCaller, text: str) -> None:
    assert await c.wait_agent_quiet(0.25, timeout_s=15, after=getattr(c, "said_at", 0.0))
    c.said_at = time.monotonic()  # type: ignore[attr-defined]
    await h.inject(c.uuid, text)


async def test_a_call_in_progress_has_its_turns_in_the_store(harness: Any,
                                                             store_url: str) -> None:
    h = await harness(store=store_url)
    c = h.caller()
    await c.connect()
    opened = await until(lambda: h.store.get(c.uuid), 2, "the row written at connect")
    assert opened["live"] is True
    await say(h, c, "yes")
    await say(h, c, "three")  # the flow asks the bedrooms next; now it says goodbye

    async def has_turns() -> Any:
        rec = await h.store.get(c.uuid)
        caller = [e["text"] for e in rec["transcript"] if e["who"] == "caller"]
        return rec if rec.get("live") and caller == ["yes", "three"] else None

    # written while the call still runs (the goodbye is being played)
    live = await until(has_turns, 3, "the turns written as they happen")
    assert live["slots"] == {"bedrooms": 3} and live["node"] == h.rt.node_id
    await asyncio.wait_for(c.closed.wait(), 15)
    final = await h.wait_record(c.uuid)
    assert final["outcome"] == "completed" and final["call_id"] == live["call_id"]
    assert await h.store.count() == 1


async def test_a_duplicate_uuid_is_refused_under_its_own_record(harness: Any,
                                                                store_url: str) -> None:
    h = await harness(store=store_url)
    first = h.caller()
    await first.connect()
    await say(h, first, "yes")
    dup = AudioSocketCaller("127.0.0.1", h.port, call_uuid=first.uuid)
    await dup.connect()
    await asyncio.wait_for(dup.closed.wait(), 5)  # refused at once
    # the refusal has its own record; the live call is still what the API shows
    refused = await until(lambda: h.store.list(10, status="ended"), 5, "the refused record")
    assert [r["outcome"] for r in refused] == ["refused"]
    status, body = await h.http("GET", f"/calls/{first.uuid}")
    assert status == 200 and body["state"] == "details" and body.get("outcome", "") == ""
    await say(h, first, "four")
    await asyncio.wait_for(first.closed.wait(), 15)

    async def both() -> Any:
        rows = await h.store.list(10)
        return rows if len(rows) == 2 and all(r["status"] == "ended" for r in rows) else None

    rows = await until(both, 5, "both records")
    assert sorted(r["outcome"] for r in rows) == ["completed", "refused"]
    assert len({r["call_id"] for r in rows}) == 2 and {r["uuid"] for r in rows} == {first.uuid}
    await first.close()
    await dup.close()


async def test_post_call_on_one_node_and_the_socket_on_another(harness: Any,
                                                               pg_cluster: Any) -> None:
    url = pg_cluster.new_database()
    a = await harness(store=url, node_id="node-a")
    b = await harness(store=url, node_id="node-b")
    c = AudioSocketCaller("127.0.0.1", b.port)
    status, _ = await a.http("POST", "/call", json={"uuid": c.uuid,
                                                   "payload": {"from": "+447700900123"}})
    assert status == 200 and not a.rt.pending  # in the shared store, not in node A's memory
    await c.connect()
    await say(b, c, "yes")
    # any node shows the call in progress on B
    status, body = await a.http("GET", f"/calls/{c.uuid}")
    assert status == 200 and body["live"] is True and body["node"] == "node-b"
    status, listing = await a.http("GET", "/calls")
    assert [(x["uuid"], x["node"]) for x in listing["live"]] == [(c.uuid, "node-b")]
    await c.hangup()
    rec = await b.wait_record(c.uuid)
    assert rec["caller"] == "+447700900123" and rec["node"] == "node-b"
    assert "caller +447700900123" in rec["transcript"][0]["text"]

    # the POST still in flight when the socket arrives: the socket's node waits for it
    late = AudioSocketCaller("127.0.0.1", b.port)
    await late.connect()
    await asyncio.sleep(0.1)
    status, _ = await a.http("POST", "/call", json={"uuid": late.uuid,
                                                   "payload": {"from": "+441110000000"}})
    assert status == 200
    await say(b, late, "yes")
    await late.hangup()
    rec = await b.wait_record(late.uuid)
    assert rec["caller"] == "+441110000000"
    status, nodes = await a.http("GET", "/nodes")
    assert {n["node_id"] for n in nodes["nodes"]} == {"node-a", "node-b"}


async def test_webhooks_go_through_the_outbox_with_idempotency_keys(harness: Any,
                                                                    store_url: str) -> None:
    """A receiver that fails the first delivery of each event gets it again, same key and
    same body; every event is delivered; call_ended carries the record."""
    seen: list[tuple[str, str, bytes]] = []
    failed_once: set[str] = set()

    async def hook(request: web.Request) -> web.Response:
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        body = await request.read()
        seen.append((key, (await request.json())["type"], body))
        if key not in failed_once:
            failed_once.add(key)
            return web.Response(status=503)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_app(app) as url:
        h = await harness(store=store_url, webhook_url=f"{url}/hook",
                          config=RuntimeConfig(call_initiated_timeout_s=0.5))
        c = h.caller()
        await c.connect()
        await say(h, c, "yes")
        await c.hangup()
        await h.wait_record(c.uuid)

        def delivered(kind: str) -> list[str]:
            return [k for k, t, _ in seen if t == kind]

        async def ended_twice() -> bool:
            return len(delivered("call_ended")) == 2

        await until(ended_twice, 15, "call_ended retried once")
        key = delivered("call_ended")[0]
        bodies = {b for k, _t, b in seen if k == key}
        assert len(bodies) == 1  # the retry is byte-identical (same signature)
        assert key.endswith(":call_ended")
        for kind in ("call_started", "transcription"):
            assert len(set(delivered(kind))) >= 1
        assert all(k for k, _t, _b in seen)
        keys = {k for k, t, _ in seen if t != "call_initiated"}
        assert all(sum(1 for k2, _t, _b in seen if k2 == k) == 2 for k in keys)
        assert h.rt.metrics.webhooks_retried >= len(keys)
        assert await until(lambda: _pending_zero(h), 10, "the outbox emptied")


async def _pending_zero(h: Any) -> bool:
    return await h.store.outbox_pending() == 0


async def test_the_web_records_page_lists_every_nodes_calls(store_url: str) -> None:
    """/ui's call list reads the shared store: another node's call in progress is listed
    first, and says where it runs."""
    from flowagent.server.call_store import CallRow
    from flowagent.server.stores import open_store
    from flowagent.web import pages
    from flowagent.web.record_pages import StoreRecords

    store = await open_store(store_url)
    try:
        await store.write_calls([
            CallRow("c1", "u-done", "node-a", "ended", {"uuid": "u-done", "started_at": 2.0,
                                                        "outcome": "completed"}),
            CallRow("c2", "u-live", "node-b", "live", {"uuid": "u-live", "started_at": 1.0}),
        ], [])
        rows = await StoreRecords(store).search()
        assert [r["uuid"] for r in rows] == ["u-live", "u-done"]
        html = pages.records_page("/ui", rows, "", "", "")
        assert "in progress on node-b" in html and "completed" in html
    finally:
        await store.close()


async def test_every_connection_with_a_uuid_gets_exactly_one_record(harness: Any,
                                                                    store_url: str) -> None:
    """Ten connections at once with the same (nil) UUID, then five more one after another:
    fifteen records, none overwritten — the first of the ten ran, the other nine were refused,
    the five later ones ran (the earlier call had ended)."""
    h = await harness(store=store_url)
    nil = "00000000-0000-0000-0000-000000000000"
    first = [AudioSocketCaller("127.0.0.1", h.port, call_uuid=nil) for _ in range(10)]
    for c in first:
        await c.connect()
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    for c in first:
        await c.hangup()

    async def ended() -> bool:
        return not h.rt.claimed

    # the server sees the hang-ups a moment later; a call that came before it did would rightly
    # be refused too (its UUID still in progress)
    await until(ended, 5, "the first call to end")
    for _ in range(5):
        c = AudioSocketCaller("127.0.0.1", h.port, call_uuid=nil)
        await c.connect()
        assert await c.wait_agent_quiet(0.2, timeout_s=10)
        await c.hangup()
        await until(ended, 5, "the call to end")

    async def fifteen() -> Any:
        rows = await h.store.list(50)
        return rows if len(rows) == 15 and all(r["status"] == "ended" for r in rows) else None

    rows = await until(fifteen, 10, "fifteen records")
    outcomes = sorted(r["outcome"] for r in rows)
    assert outcomes.count("refused") == 9 and outcomes.count("hangup_by_caller") == 6
    assert len({r["call_id"] for r in rows}) == 15
