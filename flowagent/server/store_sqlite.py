"""SQLite call records (`SqliteStore`): the embedded default store, for one node.

Why one thread: sqlite3 calls block, and a blocked event loop stalls every call's audio clock.
All database work runs in one worker thread with one connection, so statements never contend
inside the process; the file is in WAL mode so `flowagent calls` can read while the server
writes. A failing write (a full disk) raises to the caller — the record writer
(`record_writer.py`) keeps what it could not write and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from flowagent.server.call_store import (
    LIVE,
    NODE_LOST,
    SUMMARY_KEYS,
    CallRow,
    CallRows,
    Ids,
    NodeInfo,
    OutboxEvent,
    OutboxEvents,
    Records,
    StoreUnavailable,
    like_prefix,
    lost_record,
)
from flowagent.server.store_schema import LATEST, MIGRATIONS, VERSIONS_TABLE, too_new

T = TypeVar("T")

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_UPSERT = """INSERT INTO calls (call_id, uuid, node, status, flow, caller, did, started_at,
    ended_at, duration_s, outcome, turns, record, updated_at)
    VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,""" + _NOW + """)
    ON CONFLICT (call_id) DO UPDATE SET uuid = excluded.uuid, node = excluded.node,
    status = excluded.status, flow = excluded.flow, caller = excluded.caller,
    did = excluded.did, started_at = excluded.started_at, ended_at = excluded.ended_at,
    duration_s = excluded.duration_s, outcome = excluded.outcome, turns = excluded.turns,
    record = excluded.record, updated_at = excluded.updated_at
    WHERE calls.status = 'live' OR excluded.status <> 'live'"""


class SqliteStore:
    """Ready when constructed (the schema is brought up to date then)."""

    shared = False

    def __init__(self, path: str | Path, timeout_s: float = 5.0) -> None:
        self.path: str | None = str(path)
        self.where = str(path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        try:
            if self.path != ":memory:":
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=timeout_s,
                                         isolation_level=None)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()  # before anything else can use the connection (cheap when current)
        except (sqlite3.Error, OSError) as exc:
            self._pool.shutdown(wait=False)
            raise StoreUnavailable(f"The call-record file {self.where} cannot be opened: {exc}."
                                   " Check the path and its permissions (serve --store).") \
                from exc

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- schema ----------------------------------------------------------------------------------

    async def migrate(self) -> int:
        try:
            return int(await self._run(self._migrate))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"The call-record file {self.where} cannot be prepared:"
                                   f" {exc}.") from exc

    def _migrate(self) -> int:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(VERSIONS_TABLE["sqlite"])
            done = {r[0] for r in c.execute("SELECT version FROM schema_migrations")}
            if done and max(done) > LATEST:
                raise StoreUnavailable(too_new(max(done), self.where))
            for m in MIGRATIONS:
                if m.version in done:
                    continue
                for sql in m.sqlite:
                    c.execute(sql)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?)", (m.version, time.time()))
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise
        return LATEST

    # -- calls -----------------------------------------------------------------------------------

    async def write_calls(self, rows: CallRows, outbox: OutboxEvents) -> None:
        await self._run(self._write, [r.columns() for r in rows],
                        [(e.key, e.uuid, e.type, e.body.decode()) for e in outbox])

    def _write(self, rows: Sequence[tuple[Any, ...]], events: Sequence[tuple[str, str, str, str]]
               ) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                c.executemany(_UPSERT, rows)
            if events:
                c.executemany(
                    "INSERT INTO webhook_outbox (event_key, uuid, type, body, created_at,"
                    f" next_at) VALUES (?,?,?,?,{_NOW},{_NOW}) ON CONFLICT (event_key)"
                    " DO NOTHING", events)
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise

    async def get(self, uuid: str) -> dict[str, Any] | None:
        return await self._run(self._get, uuid)  # type: ignore[no-any-return]

    def _get(self, uuid: str) -> dict[str, Any] | None:
        order = "ORDER BY (status = 'live') DESC, started_at DESC LIMIT 1"
        cols = "record, status, node, call_id"
        row = self._conn.execute(f"SELECT {cols} FROM calls WHERE uuid = ? {order}",
                                 (uuid,)).fetchone()
        if row is None and len(uuid) >= 4:
            row = self._conn.execute(
                f"SELECT {cols} FROM calls WHERE uuid LIKE ? ESCAPE '\\' {order}",
                (like_prefix(uuid),)).fetchone()
        return None if row is None else _with_row(row)

    async def list(self, limit: int = 20, status: str | None = None) -> Records:
        return await self._run(self._list, limit, status)  # type: ignore[no-any-return]

    def _list(self, limit: int, status: str | None) -> Records:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._conn.execute(
            f"SELECT {', '.join(SUMMARY_KEYS)} FROM calls {where} ORDER BY started_at DESC"
            " LIMIT ?", (*args, limit)).fetchall()
        return [dict(zip(SUMMARY_KEYS, r, strict=True)) for r in rows]

    async def count(self) -> int:
        return int(await self._run(
            lambda: self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]))

    # -- POST /call metadata -------------------------------------------------------------------

    async def put_pending(self, uuid: str, metadata: dict[str, Any], ttl_s: float,
                          max_count: int) -> bool:
        return bool(await self._run(self._put_pending, uuid,
                                    json.dumps(metadata, default=str), ttl_s, max_count))

    def _put_pending(self, uuid: str, meta: str, ttl_s: float, max_count: int) -> bool:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(f"DELETE FROM pending_calls WHERE created_at < {_NOW} - ?", (ttl_s,))
            (others,) = c.execute("SELECT count(*) FROM pending_calls WHERE uuid != ?",
                                  (uuid,)).fetchone()
            if others >= max_count:
                c.execute("COMMIT")
                return False
            c.execute(f"INSERT INTO pending_calls VALUES (?, ?, {_NOW}) ON CONFLICT (uuid) DO"
                      " UPDATE SET metadata = excluded.metadata, created_at = excluded.created_at",
                      (uuid, meta))
            c.execute("COMMIT")
            return True
        except BaseException:
            _rollback(c)
            raise

    async def take_pending(self, uuid: str) -> dict[str, Any] | None:
        return await self._run(self._take_pending, uuid)  # type: ignore[no-any-return]

    def _take_pending(self, uuid: str) -> dict[str, Any] | None:
        row = self._conn.execute("DELETE FROM pending_calls WHERE uuid = ? RETURNING metadata",
                                 (uuid,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # -- nodes -----------------------------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo) -> None:
        await self._run(self._heartbeat, node)

    def _heartbeat(self, n: NodeInfo) -> None:
        self._conn.execute(
            "INSERT INTO nodes (node_id, status, audiosocket, http, active_calls, started_at,"
            f" heartbeat_at, info) VALUES (?,?,?,?,?,{_NOW},{_NOW},?) ON CONFLICT (node_id) DO"
            " UPDATE SET status = excluded.status, audiosocket = excluded.audiosocket,"
            " http = excluded.http, active_calls = excluded.active_calls,"
            " heartbeat_at = excluded.heartbeat_at, info = excluded.info,"
            " started_at = CASE WHEN nodes.status IN ('stopped', 'lost') THEN"
            " excluded.started_at ELSE nodes.started_at END",
            (n.node_id, n.status, n.audiosocket, n.http, n.active_calls, json.dumps(n.extra)))

    async def nodes(self) -> Records:
        return await self._run(self._nodes)  # type: ignore[no-any-return]

    def _nodes(self) -> Records:
        keys = ("node_id", "status", "audiosocket", "http", "active_calls", "started_at",
                "heartbeat_at", "seconds_since_heartbeat")
        rows = self._conn.execute(
            "SELECT node_id, status, audiosocket, http, active_calls, started_at, heartbeat_at,"
            f" {_NOW} - heartbeat_at FROM nodes ORDER BY node_id").fetchall()
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def mark_lost(self, lost_after_s: float, own_node: str = "",
                        event: Any = None) -> Records:
        return await self._run(self._mark_lost, lost_after_s, own_node, event)  # type: ignore

    def _mark_lost(self, lost_after_s: float, own_node: str, event: Any
                   ) -> Records:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            lost = dict(c.execute(
                f"SELECT node_id, heartbeat_at FROM nodes WHERE status <> 'stopped' AND"
                f" heartbeat_at < {_NOW} - ?", (lost_after_s,)).fetchall())
            if own_node:  # this node's previous run left these: it cannot be running them
                lost[own_node] = None
            out: Records = []
            for node, last_seen in lost.items():
                rows = c.execute("SELECT call_id, record, updated_at FROM calls WHERE status ="
                                 " ? AND node = ?", (LIVE, node)).fetchall()
                for call_id, text, updated_at in rows:
                    rec = lost_record(json.loads(text), node,
                                      last_seen if last_seen is not None else updated_at,
                                      call_id)
                    row = CallRow(call_id, str(rec.get("uuid", "")), node, NODE_LOST, rec)
                    c.execute(_UPSERT, row.columns())
                    e: OutboxEvent | None = event(rec) if event is not None else None
                    if e is not None:
                        c.execute("INSERT INTO webhook_outbox (event_key, uuid, type, body,"
                                  f" created_at, next_at) VALUES (?,?,?,?,{_NOW},{_NOW})"
                                  " ON CONFLICT (event_key) DO NOTHING",
                                  (e.key, e.uuid, e.type, e.body.decode()))
                    out.append(rec)
                if node != own_node:
                    c.execute("UPDATE nodes SET status = 'lost' WHERE node_id = ? AND"
                              " status <> 'stopped'", (node,))
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise
        return out

    # -- webhook outbox --------------------------------------------------------------------------

    async def outbox_claim(self, node: str, limit: int, lease_s: float) -> OutboxEvents:
        return await self._run(self._claim, node, limit, lease_s)  # type: ignore[no-any-return]

    def _claim(self, node: str, limit: int, lease_s: float) -> OutboxEvents:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            rows = c.execute(
                "SELECT id, event_key, uuid, type, body, attempts FROM webhook_outbox WHERE"
                f" delivered_at IS NULL AND failed_at IS NULL AND next_at <= {_NOW} AND"
                f" (claimed_until IS NULL OR claimed_until < {_NOW}) ORDER BY id LIMIT ?",
                (limit,)).fetchall()
            c.executemany(f"UPDATE webhook_outbox SET claimed_by = ?, claimed_until = {_NOW} + ?"
                          " WHERE id = ?", [(node, lease_s, r[0]) for r in rows])
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise
        return [OutboxEvent(key=r[1], uuid=r[2], type=r[3], body=r[4].encode(), id=r[0],
                            attempts=r[5]) for r in rows]

    async def outbox_delivered(self, ids: Ids) -> None:
        await self._run(self._delivered, ids)

    def _delivered(self, ids: Ids) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(f"UPDATE webhook_outbox SET delivered_at = {_NOW}, attempts ="
                          " attempts + 1, claimed_until = NULL WHERE id = ?", [(i,) for i in ids])
            # delivered events are kept a day (their keys stop a late duplicate), then dropped
            c.execute(f"DELETE FROM webhook_outbox WHERE delivered_at < {_NOW} - 86400")
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise

    async def outbox_retry(self, event_id: int, delay_s: float, error: str,
                           give_up: bool = False) -> None:
        await self._run(self._retry, event_id, delay_s, error, give_up)

    def _retry(self, event_id: int, delay_s: float, error: str, give_up: bool) -> None:
        self._conn.execute(
            f"UPDATE webhook_outbox SET attempts = attempts + 1, next_at = {_NOW} + ?,"
            f" claimed_until = NULL, last_error = ?, failed_at = CASE WHEN ? THEN {_NOW}"
            " ELSE NULL END WHERE id = ?", (delay_s, error[:500], give_up, event_id))

    async def outbox_pending(self) -> int:
        return int(await self._run(lambda: self._conn.execute(
            "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS"
            " NULL").fetchone()[0]))

    async def close(self) -> None:
        def shut() -> None:
            self._conn.close()

        try:
            await self._run(shut)
        finally:
            self._pool.shutdown(wait=False)


def _with_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored record with what the row knows and the JSON may not (live, node, call_id)."""
    rec: dict[str, Any] = json.loads(row[0])
    rec.setdefault("call_id", row[3])
    if row[2]:
        rec.setdefault("node", row[2])
    if row[1] == LIVE:
        rec["status"] = LIVE
        rec["live"] = True
    return rec


def _rollback(c: sqlite3.Connection) -> None:
    """Undo a failed transaction, unless SQLite already has (a full disk during COMMIT rolls
    back by itself): the error worth reporting is the first one, not "no transaction"."""
    if c.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            c.execute("ROLLBACK")
