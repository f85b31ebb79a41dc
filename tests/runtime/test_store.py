"""The call-record store, every test against both backends: a SQLite file and a real
PostgreSQL server (tests/pg_cluster.py). Records, duplicates, POST /call metadata, node
heart-beats and `node_lost`, the webhook outbox, migrations, and the record writer's queue."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from flowagent.server.call_store import (
    CallRow,
    NodeInfo,
    OutboxEvent,
    StoreUnavailable,
)
from flowagent.server.metrics import Metrics
from flowagent.server.record_writer import RecordWriter
from flowagent.server.stores import open_store


def rec(uuid: str, started: float, **kw: Any) -> dict[str, Any]:
    return {"uuid": uuid, "flow": "F", "started_at": started, "outcome": "completed",
            "transcript": [{"who": "caller", "text": "hi"}], **kw}


async def test_round_trip_and_listing(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        r1 = rec("abc-1", 1.0)
        await store.write_calls([CallRow("c1", "abc-1", "n1", "ended", r1),
                                 CallRow("c2", "abc-2", "n1", "ended", rec("abc-2", 2.0))], [])
        got = await store.get("abc-1")
        assert got is not None and got["transcript"] == r1["transcript"]
        assert got["call_id"] == "c1" and "live" not in got
        rows = await store.list(10)
        assert [r["uuid"] for r in rows] == ["abc-2", "abc-1"] and rows[0]["turns"] == 1
        assert rows[0]["status"] == "ended" and rows[0]["node"] == "n1"
        assert await store.count() == 2
    finally:
        await store.close()


async def test_duplicate_uuids_never_overwrite_and_a_live_call_wins(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        nil = "00000000-0000-0000-0000-000000000000"
        await store.write_calls([CallRow("live1", nil, "n1", "live", rec(nil, 1.0))], [])
        await store.write_calls([CallRow(f"done{i}", nil, "n2", "ended",
                                         rec(nil, 2.0 + i, outcome=f"o{i}")) for i in range(5)],
                                [])
        assert await store.count() == 6  # every connection its own row
        got = await store.get(nil)
        assert got is not None and got["live"] is True and got["call_id"] == "live1"
        # the live call ends: now the latest finished one is shown
        await store.write_calls([CallRow("live1", nil, "n1", "ended",
                                         rec(nil, 1.0, outcome="mine"))], [])
        got = await store.get(nil)
        assert got is not None and got["call_id"] == "done4" and "live" not in got
    finally:
        await store.close()


async def test_a_late_snapshot_never_reopens_a_finished_record(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        await store.write_calls([CallRow("c", "u-1", "n", "ended", rec("u-1", 1.0))], [])
        await store.write_calls([CallRow("c", "u-1", "n", "live",
                                         rec("u-1", 1.0, outcome=""))], [])
        got = await store.get("u-1")
        assert got is not None and got["outcome"] == "completed" and "live" not in got
    finally:
        await store.close()


async def test_lookup_by_prefix_is_literal(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        await store.write_calls([CallRow("c", "1234-abcd", "n", "ended", rec("1234-abcd", 1))],
                                [])
        assert (await store.get("1234-"))["uuid"] == "1234-abcd"  # type: ignore[index]
        for probe in ("%", "_", "%%%%", "____", "12%", "1_34"):
            assert await store.get(probe) is None, probe
    finally:
        await store.close()


async def test_post_call_metadata_is_taken_once(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        await store.put_pending("u-1", {"caller": "+441", "nested": {"a": 1}}, ttl_s=300,
                                max_count=10)
        assert await store.take_pending("u-1") == {"caller": "+441", "nested": {"a": 1}}
        assert await store.take_pending("u-1") is None
        await store.put_pending("old", {"x": 1}, ttl_s=300, max_count=10)
        await asyncio.sleep(0.05)
        # sweeps entries older than 10 ms
        await store.put_pending("new", {"x": 2}, ttl_s=0.01, max_count=10)
        assert await store.take_pending("old") is None
        assert await store.take_pending("new") == {"x": 2}
    finally:
        await store.close()


async def test_the_shared_store_holds_at_most_max_count_registrations(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        for i in range(3):
            assert await store.put_pending(f"u-{i}", {"i": i}, ttl_s=300, max_count=3)
        assert not await store.put_pending("u-3", {"i": 3}, ttl_s=300, max_count=3)
        assert await store.take_pending("u-3") is None  # refused: not stored
        # registering a held UUID again replaces it (not a new one)
        assert await store.put_pending("u-0", {"i": "again"}, ttl_s=300, max_count=3)
        assert await store.take_pending("u-0") == {"i": "again"}
        assert await store.put_pending("u-3", {"i": 3}, ttl_s=300, max_count=3)  # room again
    finally:
        await store.close()


async def test_a_silent_node_has_its_live_calls_closed_as_node_lost(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        await store.heartbeat(NodeInfo("dead", audiosocket="127.0.0.1:1"))
        await store.heartbeat(NodeInfo("alive"))
        turns = [{"at": 1.0, "who": "agent", "text": "Hello", "state": "s"},
                 {"at": 2.0, "who": "caller", "text": "two bedrooms", "state": "s"}]
        await store.write_calls([
            CallRow("d1", "u-dead", "dead", "live", {"uuid": "u-dead", "started_at": 100.0,
                                                    "call_id": "d1", "transcript": turns}),
            CallRow("a1", "u-alive", "alive", "live", {"uuid": "u-alive", "started_at": 1.0}),
        ], [])
        await asyncio.sleep(0.3)
        await store.heartbeat(NodeInfo("alive"))

        def event(r: dict[str, Any]) -> OutboxEvent:
            return OutboxEvent(f"{r['call_id']}:call_ended", r["uuid"], "call_ended",
                               json.dumps(r).encode())

        lost = await store.mark_lost(0.2, event=event)
        assert [r["uuid"] for r in lost] == ["u-dead"]
        got = await store.get("u-dead")
        assert got is not None and got["outcome"] == "node_lost" and "live" not in got
        assert got["transcript"] == turns  # what was written is kept
        assert "dead stopped heart-beating" in got["end_reason"]
        assert (await store.get("u-alive"))["live"] is True  # type: ignore[index]
        assert await store.mark_lost(0.2, event=event) == []  # closed once
        nodes = {n["node_id"]: n["status"] for n in await store.nodes()}
        assert nodes == {"dead": "lost", "alive": "up"}
        claimed = await store.outbox_claim("alive", 10, 30)
        assert [(e.key, e.type) for e in claimed] == [("d1:call_ended", "call_ended")]
        # a restarted node closes its own previous run's calls at once, whatever the time
        lost = await store.mark_lost(3600, own_node="alive")
        assert [r["uuid"] for r in lost] == ["u-alive"]
    finally:
        await store.close()


async def test_outbox_leases_events_to_one_node_at_a_time(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        events = [OutboxEvent(f"k{i}", "u", "transcription", b'{"i": %d}' % i)
                  for i in range(3)]
        await store.write_calls([], events)
        await store.write_calls([], [OutboxEvent("k0", "u", "transcription", b"other")])
        a = await store.outbox_claim("A", 2, lease_s=0.3)
        assert [e.key for e in a] == ["k0", "k1"] and a[0].body == b'{"i": 0}'  # first wins
        b = await store.outbox_claim("B", 10, lease_s=30)
        assert [e.key for e in b] == ["k2"]
        await store.outbox_delivered([a[0].id])
        await store.outbox_retry(a[1].id, 0.0, "HTTP 503")
        await store.outbox_retry(b[0].id, 0.0, "HTTP 400", give_up=True)
        assert await store.outbox_pending() == 1
        await asyncio.sleep(0.35)
        again = await store.outbox_claim("B", 10, lease_s=30)
        assert [(e.key, e.attempts) for e in again] == [("k1", 1)]
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_with_a_plain_sentence(store_url: str) -> None:
    store = await open_store(store_url)
    await store.write_calls([], [])
    await store.close()
    if store_url.startswith("postgresql://"):
        import asyncpg

        con = await asyncpg.connect(store_url)
        await con.execute("INSERT INTO schema_migrations VALUES (99, 0)")
        await con.close()
    else:
        with sqlite3.connect(store_url) as c:
            c.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    with pytest.raises(StoreUnavailable, match="schema version 99, newer than this flowagent"):
        await open_store(store_url)


async def test_an_old_single_node_file_is_migrated_with_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:  # the schema of the first release, and one record in it
        c.execute("CREATE TABLE calls (uuid TEXT PRIMARY KEY, flow TEXT NOT NULL DEFAULT '',"
                  " caller TEXT NOT NULL DEFAULT '', did TEXT NOT NULL DEFAULT '', started_at"
                  " REAL, ended_at REAL, duration_s REAL, outcome TEXT NOT NULL DEFAULT '',"
                  " turns INTEGER NOT NULL DEFAULT 0, record TEXT NOT NULL)")
        c.execute("INSERT INTO calls VALUES ('old-1', 'F', '+44', '', 5.0, 6.0, 1.0,"
                  " 'completed', 1, ?)", (json.dumps(rec("old-1", 5.0)),))
    store = await open_store(path)
    try:
        got = await store.get("old-1")
        assert got is not None and got["transcript"][0]["text"] == "hi"
        assert got["call_id"] == "v1-old-1"
        await store.write_calls([CallRow("new", "old-1", "n", "ended", rec("old-1", 7.0))], [])
        assert await store.count() == 2
    finally:
        await store.close()
    with sqlite3.connect(path) as c:
        assert [r[0] for r in c.execute("SELECT version FROM schema_migrations")] == [1, 2]


async def test_an_unreachable_database_is_one_sentence_not_a_hang() -> None:
    import pg_cluster

    port = pg_cluster.free_port()  # nothing listens there
    t = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        await open_store(f"postgresql://flowagent:secret@127.0.0.1:{port}/calls", timeout_s=2)
    assert time.monotonic() - t < 5
    msg = str(err.value)
    assert "cannot be reached" in msg and "FLOWAGENT_DATABASE_URL" in msg
    assert "secret" not in msg and "***" in msg


async def test_calls_command_lists_every_node_and_shows_one(
        store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from flowagent.commands import calls

    store = await open_store(store_url)
    await store.write_calls([
        CallRow("c1", "1234-abcd", "node-a", "ended", {
            "uuid": "1234-abcd", "flow": "F", "started_at": 1.0, "duration_s": 2.0,
            "outcome": "completed", "transcript": [
                {"at": 0.0, "who": "agent", "text": "Hello", "state": "s", "heard": "He"}]}),
        CallRow("c2", "9999-live", "node-b", "live", {"uuid": "9999-live", "flow": "F",
                                                      "started_at": 0.5}),
    ], [])
    await store.heartbeat(NodeInfo("node-a"))
    await store.close()
    args = {"store": store_url, "limit": 5}
    assert await asyncio.to_thread(calls.run, uuid=None, json_out=True, **args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["uuid"], r["status"], r["node"]) for r in rows] == [
        ("9999-live", "live", "node-b"), ("1234-abcd", "ended", "node-a")]
    assert await asyncio.to_thread(calls.run, uuid="1234", json_out=False, **args) == 0
    out = capsys.readouterr().out
    assert "Hello" in out and "heard: He" in out
    assert await asyncio.to_thread(calls.run, uuid="nope", json_out=False, **args) == 1
    assert await asyncio.to_thread(calls.run, uuid=None, json_out=False, nodes=True,
                                   **args) == 0
    assert "node-a" in capsys.readouterr().out


async def test_writer_coalesces_a_calls_snapshots_and_keeps_the_final(store_url: str) -> None:
    store = await open_store(store_url)
    metrics = Metrics()
    writer = RecordWriter(store, "n1", metrics)
    try:
        for i in range(50):
            writer.write("c1", {"uuid": "u-1", "started_at": 1.0, "transcript": [{}] * i},
                         live=True)
        writer.write("c1", rec("u-1", 1.0), live=False)
        writer.write("c1", {"uuid": "u-1", "started_at": 1.0}, live=True)  # too late: ignored
        assert await writer.flush(10) == 0
        got = await store.get("u-1")
        assert got is not None and got["outcome"] == "completed" and "live" not in got
        assert metrics.store_rows <= 2 and metrics.store_queue == 0
    finally:
        await writer.close()
        await store.close()


async def test_writer_queues_while_the_database_is_away_and_retries(tmp_path: Path) -> None:
    """PostgreSQL stops mid-run: records are queued (a metric says how many), retried, and
    written when it is back; nothing waits on it meanwhile."""
    import pg_cluster

    if pg_cluster.UNAVAILABLE:
        pytest.skip(f"PostgreSQL tests cannot run here: {pg_cluster.UNAVAILABLE}")
    cluster = pg_cluster.start_cluster()
    try:
        url = cluster.new_database()
        store = await open_store(url, timeout_s=1)
        metrics = Metrics()
        writer = RecordWriter(store, "n1", metrics)
        writer.write("c0", rec("u-0", 1.0), live=False)
        assert await writer.flush(5) == 0
        cluster.stop_server()
        t = time.monotonic()
        for i in range(1, 6):
            writer.write(f"c{i}", rec(f"u-{i}", float(i)), live=False)
        assert time.monotonic() - t < 0.05  # handing records over never waits
        await asyncio.sleep(2)
        assert metrics.store_queue == 5 and metrics.store_write_failures >= 1
        text = metrics.render()
        assert "flowagent_store_queue 5" in text
        cluster.start_server()
        assert await writer.flush(20) == 0
        assert {r["uuid"] for r in await store.list(10)} == {f"u-{i}" for i in range(6)}
        await writer.close()
        await store.close()
    finally:
        cluster.stop()


async def test_writer_spills_what_it_could_not_write_and_the_next_start_writes_it(
        tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    writer = RecordWriter(store, "n1")
    writer.write("c1", rec("u-1", 1.0), live=False)
    writer.write("c2", {"uuid": "u-2", "started_at": 2.0, "transcript": [
        {"who": "caller", "text": "hello"}]}, live=True)
    spill = tmp_path / "unwritten.jsonl"
    assert writer.spill(spill) == 2  # (as at a shutdown whose store did not answer)
    await writer.close()
    await store.close()
    store = await open_store(tmp_path / "a.db")
    writer = RecordWriter(store, "n1")
    assert writer.load_spill(spill) == 2
    assert await writer.flush(5) == 0
    assert (await store.get("u-1"))["outcome"] == "completed"  # type: ignore[index]
    lost = await store.get("u-2")
    assert lost is not None and lost["outcome"] == "node_lost"
    assert lost["transcript"][0]["text"] == "hello"
    assert not spill.exists()
    await writer.close()
    await store.close()
