"""PostgreSQL call records (`PostgresStore`, asyncpg): one store shared by several nodes.

Why asyncpg: it is asyncio-native (no thread per query, nothing blocks the event loop), keeps a
pool of connections, and is the most used and fastest PostgreSQL driver for asyncio. Every query
has a deadline (`command_timeout`) and so does taking a connection from the pool; a database
that does not answer raises, and the record writer (`record_writer.py`) queues and retries.

Concurrency between nodes: migrations run under an advisory lock; `mark_lost` and the outbox
claim rows with `FOR UPDATE SKIP LOCKED`, so two nodes sweeping at once never close the same
call twice or both take the same webhook event.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

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
    display_url,
    like_prefix,
    lost_record,
)
from flowagent.server.store_schema import LATEST, MIGRATIONS, VERSIONS_TABLE, too_new

_NOW = "extract(epoch from clock_timestamp())"
#: the advisory lock migrations take (any constant; "flow" in ASCII)
_MIGRATION_LOCK = 0x666C6F77

_UPSERT = """INSERT INTO calls (call_id, uuid, node, status, flow, caller, did, started_at,
    ended_at, duration_s, outcome, turns, record, updated_at)
    VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,""" + _NOW + """)
    ON CONFLICT (call_id) DO UPDATE SET uuid = excluded.uuid, node = excluded.node,
    status = excluded.status, flow = excluded.flow, caller = excluded.caller,
    did = excluded.did, started_at = excluded.started_at, ended_at = excluded.ended_at,
    duration_s = excluded.duration_s, outcome = excluded.outcome, turns = excluded.turns,
    record = excluded.record, updated_at = excluded.updated_at
    WHERE calls.status = 'live' OR excluded.status <> 'live'"""

_OUTBOX_ADD = ("INSERT INTO webhook_outbox (event_key, uuid, type, body, created_at, next_at)"
               f" VALUES ($1,$2,$3,$4,{_NOW},{_NOW}) ON CONFLICT (event_key) DO NOTHING")


class PostgresStore:
    shared = True
    path: str | None = None

    def __init__(self, pool: asyncpg.Pool, where: str, timeout_s: float) -> None:
        self._pool = pool
        self.where = where
        self.timeout_s = timeout_s

    @classmethod
    async def connect(cls, url: str, *, timeout_s: float = 5.0,
                      pool_size: int = 10) -> PostgresStore:
        where = display_url(url)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=max(1, pool_size), timeout=timeout_s,
                command_timeout=timeout_s, max_inactive_connection_lifetime=60.0)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                ValueError) as exc:
            raise StoreUnavailable(
                f"The PostgreSQL database {where} cannot be reached ({_reason(exc)}); check"
                " --store / FLOWAGENT_DATABASE_URL and that the database is running.") from exc
        return cls(pool, where, timeout_s)

    def _acquire(self) -> Any:
        return self._pool.acquire(timeout=self.timeout_s)

    # -- schema ----------------------------------------------------------------------------------

    async def migrate(self) -> int:
        try:
            async with self._acquire() as con, con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await con.execute(VERSIONS_TABLE["postgres"])
                done = {r[0] for r in await con.fetch("SELECT version FROM schema_migrations")}
                if done and max(done) > LATEST:
                    raise StoreUnavailable(too_new(max(done), self.where))
                for m in MIGRATIONS:
                    if m.version in done:
                        continue
                    for sql in m.postgres:
                        await con.execute(sql)
                    await con.execute("INSERT INTO schema_migrations VALUES ($1, $2)",
                                      m.version, time.time())
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"The PostgreSQL database {self.where} cannot be prepared"
                                   f" ({_reason(exc)}).") from exc
        return LATEST

    # -- calls -----------------------------------------------------------------------------------

    async def write_calls(self, rows: CallRows, outbox: OutboxEvents) -> None:
        async with self._acquire() as con, con.transaction():
            if rows:
                await con.executemany(_UPSERT, [r.columns() for r in rows])
            if outbox:
                await con.executemany(_OUTBOX_ADD, [(e.key, e.uuid, e.type, e.body.decode())
                                                    for e in outbox])

    async def get(self, uuid: str) -> dict[str, Any] | None:
        order = "ORDER BY (status = 'live') DESC, started_at DESC NULLS LAST LIMIT 1"
        cols = "record, status, node, call_id"
        async with self._acquire() as con:
            row = await con.fetchrow(f"SELECT {cols} FROM calls WHERE uuid = $1 {order}", uuid)
            if row is None and len(uuid) >= 4:
                row = await con.fetchrow(
                    f"SELECT {cols} FROM calls WHERE uuid LIKE $1 {order}", like_prefix(uuid))
        if row is None:
            return None
        rec: dict[str, Any] = json.loads(row[0])
        rec.setdefault("call_id", row[3])
        if row[2]:
            rec.setdefault("node", row[2])
        if row[1] == LIVE:
            rec["status"] = LIVE
            rec["live"] = True
        return rec

    async def list(self, limit: int = 20, status: str | None = None) -> Records:
        sql = f"SELECT {', '.join(SUMMARY_KEYS)} FROM calls"
        async with self._acquire() as con:
            if status:
                rows = await con.fetch(sql + " WHERE status = $1 ORDER BY started_at DESC"
                                       " NULLS LAST LIMIT $2", status, limit)
            else:
                rows = await con.fetch(sql + " ORDER BY started_at DESC NULLS LAST LIMIT $1",
                                       limit)
        return [dict(r) for r in rows]

    async def count(self) -> int:
        async with self._acquire() as con:
            return int(await con.fetchval("SELECT COUNT(*) FROM calls"))

    # -- POST /call metadata -------------------------------------------------------------------

    async def put_pending(self, uuid: str, metadata: dict[str, Any], ttl_s: float,
                          max_count: int) -> bool:
        # the count is per transaction: nodes registering at the same instant may pass the
        # cap by a few, never by an unbounded number
        async with self._acquire() as con, con.transaction():
            await con.execute(f"DELETE FROM pending_calls WHERE created_at < {_NOW} - $1", ttl_s)
            others = await con.fetchval(
                "SELECT count(*) FROM pending_calls WHERE uuid != $1", uuid)
            if others >= max_count:
                return False
            await con.execute(
                f"INSERT INTO pending_calls VALUES ($1, $2, {_NOW}) ON CONFLICT (uuid) DO"
                " UPDATE SET metadata = excluded.metadata, created_at = excluded.created_at",
                uuid, json.dumps(metadata, default=str))
            return True

    async def take_pending(self, uuid: str) -> dict[str, Any] | None:
        async with self._acquire() as con:
            text = await con.fetchval(
                "DELETE FROM pending_calls WHERE uuid = $1 RETURNING metadata", uuid)
        return None if text is None else dict(json.loads(text))

    # -- nodes -----------------------------------------------------------------------------------

    async def heartbeat(self, n: NodeInfo) -> None:
        async with self._acquire() as con:
            await con.execute(
                "INSERT INTO nodes (node_id, status, audiosocket, http, active_calls, started_at,"
                f" heartbeat_at, info) VALUES ($1,$2,$3,$4,$5,{_NOW},{_NOW},$6) ON CONFLICT"
                " (node_id) DO UPDATE SET status = excluded.status, audiosocket ="
                " excluded.audiosocket, http = excluded.http, active_calls ="
                " excluded.active_calls, heartbeat_at = excluded.heartbeat_at, info ="
                " excluded.info, started_at = CASE WHEN nodes.status IN ('stopped', 'lost')"
                " THEN excluded.started_at ELSE nodes.started_at END",
                n.node_id, n.status, n.audiosocket, n.http, n.active_calls, json.dumps(n.extra))

    async def nodes(self) -> Records:
        async with self._acquire() as con:
            rows = await con.fetch(
                "SELECT node_id, status, audiosocket, http, active_calls, started_at,"
                f" heartbeat_at, {_NOW} - heartbeat_at AS seconds_since_heartbeat FROM nodes"
                " ORDER BY node_id")
        return [dict(r) for r in rows]

    async def mark_lost(self, lost_after_s: float, own_node: str = "",
                        event: Any = None) -> Records:
        out: Records = []
        async with self._acquire() as con, con.transaction():
            lost: dict[str, float | None] = {
                r[0]: r[1] for r in await con.fetch(
                    "SELECT node_id, heartbeat_at FROM nodes WHERE status <> 'stopped' AND"
                    f" heartbeat_at < {_NOW} - $1 FOR UPDATE SKIP LOCKED", lost_after_s)}
            if own_node:  # this node's previous run left these: it cannot be running them
                lost[own_node] = None
            for node, last_seen in lost.items():
                rows = await con.fetch(
                    "SELECT call_id, record, updated_at FROM calls WHERE status = $1 AND"
                    " node = $2 FOR UPDATE SKIP LOCKED", LIVE, node)
                for call_id, text, updated_at in rows:
                    rec = lost_record(json.loads(text), node,
                                      last_seen if last_seen is not None else updated_at,
                                      call_id)
                    row = CallRow(call_id, str(rec.get("uuid", "")), node, NODE_LOST, rec)
                    await con.execute(_UPSERT, *row.columns())
                    e: OutboxEvent | None = event(rec) if event is not None else None
                    if e is not None:
                        await con.execute(_OUTBOX_ADD, e.key, e.uuid, e.type, e.body.decode())
                    out.append(rec)
                if node != own_node:
                    await con.execute("UPDATE nodes SET status = 'lost' WHERE node_id = $1 AND"
                                      " status <> 'stopped'", node)
        return out

    # -- webhook outbox --------------------------------------------------------------------------

    async def outbox_claim(self, node: str, limit: int, lease_s: float) -> OutboxEvents:
        async with self._acquire() as con:
            rows = await con.fetch(
                f"UPDATE webhook_outbox SET claimed_by = $1, claimed_until = {_NOW} + $2"
                " WHERE id IN (SELECT id FROM webhook_outbox WHERE delivered_at IS NULL AND"
                f" failed_at IS NULL AND next_at <= {_NOW} AND (claimed_until IS NULL OR"
                f" claimed_until < {_NOW}) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, event_key, uuid, type, body, attempts", node, lease_s, limit)
        rows = sorted(rows, key=lambda r: r[0])
        return [OutboxEvent(key=r[1], uuid=r[2], type=r[3], body=r[4].encode(), id=r[0],
                            attempts=r[5]) for r in rows]

    async def outbox_delivered(self, ids: Ids) -> None:
        async with self._acquire() as con, con.transaction():
            await con.execute(f"UPDATE webhook_outbox SET delivered_at = {_NOW}, attempts ="
                              " attempts + 1, claimed_until = NULL WHERE id = ANY($1::bigint[])",
                              ids)
            await con.execute(f"DELETE FROM webhook_outbox WHERE delivered_at < {_NOW} - 86400")

    async def outbox_retry(self, event_id: int, delay_s: float, error: str,
                           give_up: bool = False) -> None:
        async with self._acquire() as con:
            await con.execute(
                f"UPDATE webhook_outbox SET attempts = attempts + 1, next_at = {_NOW} + $1,"
                f" claimed_until = NULL, last_error = $2, failed_at = CASE WHEN $3 THEN {_NOW}"
                " ELSE NULL END WHERE id = $4", delay_s, error[:500], give_up, event_id)

    async def outbox_pending(self) -> int:
        async with self._acquire() as con:
            return int(await con.fetchval(
                "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS"
                " NULL"))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), self.timeout_s)
        except Exception:  # a dead database: let the connections go
            self._pool.terminate()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:200]
