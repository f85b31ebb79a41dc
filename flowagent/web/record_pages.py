"""Where the web page finds finished calls: a small protocol plus two implementations.

`StoreRecords` wraps the runtime's `CallStore` (SQLite); `MemoryRecords` keeps records in memory
(for a server run without a database, and for tests). Both search by caller, day and outcome, and
find the agent-audio recording of a call when recording is on (`<recordings_dir>/<uuid>.wav`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Protocol

#: how many recent records a search looks through when the store cannot search by itself
SCAN_LIMIT = 2000


class RecordSource(Protocol):
    async def search(
        self, *, caller: str = "", day: str = "", outcome: str = "", limit: int = 50
    ) -> list[dict[str, Any]]: ...

    async def get(self, uuid: str) -> dict[str, Any] | None: ...

    def recording(self, uuid: str) -> Path | None: ...


def matches(record: dict[str, Any], caller: str, day: str, outcome: str) -> bool:
    """Caller: digits contained (so "07700" finds "+447700..."); day: ISO date of the start
    (local time); outcome: exact, case-insensitive."""
    if caller:
        want = "".join(ch for ch in caller if ch.isdigit()) or caller
        have = str(record.get("caller", ""))
        digits = "".join(ch for ch in have if ch.isdigit())
        if want not in have and want not in digits and want.lstrip("0") not in digits:
            return False
    if day:
        started = record.get("started_at")
        if not isinstance(started, (int, float)):
            return False
        if dt.datetime.fromtimestamp(started).date().isoformat() != day:
            return False
    return not (outcome and str(record.get("outcome", "")).lower() != outcome.lower())


class _Recordings:
    def __init__(self, recordings_dir: str | Path | None) -> None:
        self.recordings_dir = Path(recordings_dir) if recordings_dir else None

    def recording(self, uuid: str) -> Path | None:
        if self.recordings_dir is None or not uuid or "/" in uuid or uuid.startswith("."):
            return None
        path = self.recordings_dir / f"{uuid}.wav"
        return path if path.is_file() else None


class MemoryRecords(_Recordings):
    def __init__(self, recordings_dir: str | Path | None = None) -> None:
        super().__init__(recordings_dir)
        self._records: dict[str, dict[str, Any]] = {}

    def add(self, record: dict[str, Any]) -> None:
        self._records[str(record["uuid"])] = record

    async def search(
        self, *, caller: str = "", day: str = "", outcome: str = "", limit: int = 50
    ) -> list[dict[str, Any]]:
        found = [r for r in self._records.values() if matches(r, caller, day, outcome)]
        found.sort(key=lambda r: r.get("started_at") or 0, reverse=True)
        return found[:limit]

    async def get(self, uuid: str) -> dict[str, Any] | None:
        return self._records.get(uuid)


class StoreRecords(_Recordings):
    """Adapter over `server.call_store.CallStore` (async `list(limit)` and `get(uuid)`)."""

    def __init__(self, store: Any, recordings_dir: str | Path | None = None) -> None:
        super().__init__(recordings_dir)
        self.store = store

    def add(self, record: dict[str, Any]) -> None:
        """The runtime saves records itself; nothing to do here."""

    async def search(
        self, *, caller: str = "", day: str = "", outcome: str = "", limit: int = 50
    ) -> list[dict[str, Any]]:
        if hasattr(self.store, "search"):
            return list(
                await self.store.search(caller=caller, day=day, outcome=outcome, limit=limit)
            )
        rows = await self.store.list(SCAN_LIMIT)
        # calls in progress on any node first, then the latest finished ones
        rows.sort(key=lambda r: r.get("status") != "live")
        return [r for r in rows if matches(r, caller, day, outcome)][:limit]

    async def get(self, uuid: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = await self.store.get(uuid)
        return record
