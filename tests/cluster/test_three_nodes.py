"""Three `flowagent serve` nodes behind a real HAProxy, one real PostgreSQL: 150 calls through
the balancer, their POST /call metadata sent to a node other than the one the call lands on,
and one node killed with SIGKILL in the middle of the load."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flowagent.server.stores import open_store

from .conftest import Played, play_call

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

CALLS = 150
#: a new call every this many seconds (each lasts ~4 s: about 35 in progress at once)
EVERY_S = 0.12
KILL_AFTER_S = 9.0
#: the killed node's records are written as the call goes, at most this long after a change
CHECKPOINT_S = 0.5


async def test_three_nodes_one_killed_mid_load(pg_cluster: Any, nodes: Any, balancer: Any,
                                               receiver: Any) -> None:
    url = pg_cluster.new_database()
    a, b, c = await nodes(3, url, receiver.url)
    lb = balancer([a, b, c])
    await lb.wait_status({a.node_id: "UP", b.node_id: "UP", c.node_id: "UP"})

    posted: dict[str, tuple[str, str]] = {}  # uuid -> (caller number, node the POST went to)
    results: dict[str, Played] = {}
    killed_at = 0.0
    seen_elsewhere: list[Any] = []

    async def one(i: int) -> None:
        import uuid as uuidlib

        await asyncio.sleep(i * EVERY_S)
        call_uuid = str(uuidlib.uuid4())
        number = f"+4470000{i:05d}"
        post_to = (a, b)[i % 2]  # never the node that dies: its POSTs would die with it
        await post_to.post_call(call_uuid, {"from": number})
        posted[call_uuid] = (number, post_to.node_id)
        results[call_uuid] = await play_call(lb.port, uuid=call_uuid, think_s=1.0)

    async def killer() -> None:
        nonlocal killed_at
        await asyncio.sleep(KILL_AFTER_S)
        # the one view: node A lists calls in progress on the other nodes
        _status, listing = await a.get("/calls")
        seen_elsewhere.extend(x for x in listing["live"] if x["node"] != a.node_id)
        killed_at = time.monotonic()
        c.kill()

    t0 = time.monotonic()
    await asyncio.gather(killer(), *(one(i) for i in range(CALLS)))
    load_s = time.monotonic() - t0
    assert seen_elsewhere, "node A's GET /calls showed no call of another node"

    store = await open_store(url)
    try:
        async def rows() -> dict[str, dict[str, Any]]:
            return {r["uuid"]: r for r in await store.list(1000)}

        # node C's calls are closed as node_lost by A or B within a few seconds
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            by_uuid = await rows()
            if not any(r["status"] == "live" for r in by_uuid.values()):
                break
            await asyncio.sleep(0.25)
        by_uuid = await rows()
        assert not [r for r in by_uuid.values() if r["status"] == "live"]

        completed = [p for p in results.values() if p.completed]
        cut = [p for p in results.values() if not p.completed]
        # every call not on the killed node completed; 0 records missing for completed calls
        assert len(completed) + len(cut) == CALLS
        for p in completed:
            row = by_uuid.get(p.uuid)
            assert row is not None, f"no record for completed call {p.uuid}"
            assert row["outcome"] == "completed" and row["status"] == "ended", row
        assert cut, "the kill cut no call: it was not mid-load"
        for p in cut:
            row = by_uuid.get(p.uuid)
            if row is None:  # cut before its first frame reached the node (never heard it)
                assert not p.heard_agent, f"call {p.uuid} talked to a node but has no record"
                continue
            assert row["node"] == c.node_id and row["status"] == "node_lost", (row, p)
        lost = [by_uuid[p.uuid] for p in cut if p.uuid in by_uuid]
        assert lost and all(r["outcome"] == "node_lost" for r in lost)
        # their turns are kept: a turn answered well before the kill was written
        kept = 0
        for p in cut:
            if p.answered_at and p.answered_at[0] < killed_at - CHECKPOINT_S - 0.3:
                rec = await store.get(p.uuid)
                assert rec is not None
                said = [e["text"] for e in rec["transcript"] if e["who"] == "caller"]
                assert said[:1] == ["yes"], (p.uuid, rec["transcript"])
                kept += 1
        assert kept, "no killed call had a turn to keep"

        # POST /call on one node, the AudioSocket on another: the metadata followed the call
        crossed = 0
        for p in completed:
            number, post_node = posted[p.uuid]
            rec = await store.get(p.uuid)
            assert rec is not None and rec["caller"] == number
            crossed += rec["node"] != post_node
        assert crossed >= 10, f"only {crossed} calls landed on another node than their POST"

        # every call_ended webhook delivered, once per call (by its idempotency key)
        want = {r["call_id"]: r for r in by_uuid.values()}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ended = receiver.ended()
            if all(f"{cid}:call_ended" in ended for cid in want):
                break
            await asyncio.sleep(0.25)
        ended = receiver.ended()
        missing = [cid for cid in want if f"{cid}:call_ended" not in ended]
        assert not missing, f"{len(missing)} call_ended webhook(s) never delivered"
        assert set(ended) == {f"{cid}:call_ended" for cid in want}
        for cid, r in want.items():
            payloads = ended[f"{cid}:call_ended"]
            assert {p["outcome"] for p in payloads} == {r["outcome"]}
        duplicates = sum(len(v) - 1 for v in ended.values())
    finally:
        await store.close()
    print(f"\n3 nodes: {CALLS} calls in {load_s:.1f} s, {len(cut)} cut by the kill"
          f" ({len(lost)} node_lost, {kept} with turns kept), {crossed} crossed nodes,"
          f" {duplicates} duplicate call_ended deliveries")
    for n in (a, b):
        assert await n.stop() == 0, n.log()[-3000:]
        assert "Stopped; all call records written." in n.log()
