"""SQLite call records (`CallStore`): the embedded default store.

Why a thread: sqlite3 calls block, and a blocked event loop stalls every call's audio clock. All
database work runs in one worker thread (`asyncio.to_thread` through a lock so a single
connection is used serially); the database is in WAL mode so `flowagent calls` can read while the
server writes. A record is stored as its JSON (`CallRecord.to_dict()`) plus a few indexed columns
for listing.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    uuid TEXT PRIMARY KEY,
    flow TEXT NOT NULL DEFAULT '',
    caller TEXT NOT NULL DEFAULT '',
    did TEXT NOT NULL DEFAULT '',
    started_at REAL,
    ended_at REAL,
    duration_s REAL,
    outcome TEXT NOT NULL DEFAULT '',
    turns INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
"""


class CallStore:
    """`await store.save(record_dict)`, `await store.get(uuid)`, `await store.list(limit)`.

    Synchronous twins (`save_sync`, ...) are for the CLI and for the last-ditch write in a
    `finally:` when the loop is shutting down.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.commit()

    # -- sync --------------------------------------------------------------------------------

    def save_sync(self, record: dict[str, Any]) -> None:
        turns = sum(1 for e in record.get("transcript", []) if e.get("who") == "caller")
        row = (
            record["uuid"],
            record.get("flow", ""),
            record.get("caller", ""),
            record.get("did", ""),
            record.get("started_at"),
            record.get("ended_at"),
            record.get("duration_s"),
            record.get("outcome", ""),
            turns,
            json.dumps(record, default=str),
        )
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO calls (uuid, flow, caller, did, started_at, ended_at,"
                " duration_s, outcome, turns, record) VALUES (?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            self._conn.commit()

    def get_sync(self, uuid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT record FROM calls WHERE uuid = ?", (uuid,)).fetchone()
            if row is None:
                row = self._conn.execute(
                    "SELECT record FROM calls WHERE uuid LIKE ? ORDER BY started_at DESC LIMIT 1",
                    (uuid + "%",),
                ).fetchone()
        return None if row is None else json.loads(row[0])

    def list_sync(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT uuid, flow, caller, did, started_at, ended_at, duration_s, outcome, turns"
                " FROM calls ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = ("uuid", "flow", "caller", "did", "started_at", "ended_at", "duration_s",
                "outcome", "turns")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def count_sync(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- async (never blocks the loop) -------------------------------------------------------

    async def save(self, record: dict[str, Any]) -> None:
        await asyncio.to_thread(self.save_sync, record)

    async def get(self, uuid: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get_sync, uuid)

    async def list(self, limit: int = 20) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.list_sync, limit)
