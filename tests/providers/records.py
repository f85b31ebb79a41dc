"""Waiting for a call's record in tests: it is written when the session finishes, a moment
after the socket closes, so a test polls the store (with a deadline) instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from flowagent.server.store_sqlite import SqliteStore


async def wait_record(store: SqliteStore, uuid: str, timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = await store.get(uuid)
        if rec is not None and not rec.get("live"):  # a call in progress has a live snapshot
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record for {uuid}")
