"""The one path from calls to the store: queued, batched, retried, counted, never in the way.

Why a writer between calls and the database: a call must never wait on a disk or a network
(its audio clock does not stop), and a record must never be lost because the database was
briefly away or the disk was full. So a call hands its record over (`write()`, never blocks,
never raises) and one task writes what is queued in one transaction per batch:
- a call's snapshots replace each other while queued (the queue holds at most one row per call,
  so it is bounded by the calls in progress plus those not yet written — never by events);
- a failed write keeps everything queued and is tried again with a growing pause (0.5 s to
  15 s); the queue's size, writes and failures are metrics (`flowagent_store_queue`...), the
  first failure and the recovery are logged;
- webhook events for the outbox go in the same transactions (see `webhooks.py`);
- at shutdown `flush()` says how many records are still unwritten; `spill()` puts them in a
  JSON-lines file that the next start (`load_spill()`) queues again — the exit message can say
  exactly what happened to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowagent.server.call_store import ENDED, LIVE, CallRow, OutboxEvent, StoreBackend

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0
#: rows per transaction (a backlog after an outage goes out in several)
BATCH = 500
#: records encoded between two turns of the event loop
ENCODE_SLICE = 8
#: while failing, say so in the log at most this often
LOG_EVERY_S = 30.0


class RecordWriter:
    def __init__(self, store: StoreBackend, node: str = "", metrics: Any = None,
                 on_events_written: Callable[[], None] | None = None) -> None:
        self.store = store
        self.node = node
        self.metrics = metrics
        self.on_events_written = on_events_written
        #: call_id -> (version, row): the latest snapshot of each call not yet written
        self._calls: dict[str, tuple[int, CallRow]] = {}
        self._events: list[OutboxEvent] = []
        self._version = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0
        self.last_error = ""
        self._failing_since: float | None = None
        self._last_log = 0.0
        self._spill_files: list[Path] = []

    # -- handing records over (never blocks, never raises) ---------------------------------------

    def write(self, call_id: str, record: dict[str, Any], *, live: bool) -> None:
        """Queue a call's record (`live`: a snapshot of a call in progress; else its final
        record, which no later snapshot replaces)."""
        try:
            queued = self._calls.get(call_id)
            if live and queued is not None and queued[1].status != LIVE:
                return
            self._version += 1
            row = CallRow(call_id, str(record.get("uuid", "")), self.node,
                          LIVE if live else str(record.get("status") or ENDED), record)
            self._calls[call_id] = (self._version, row)
            self._kick()
        except Exception:  # a record that cannot even be queued is a bug, logged, not raised
            log.exception("call record %s could not be queued", call_id)

    def add_event(self, event: OutboxEvent) -> None:
        self._events.append(event)
        self._kick()

    @property
    def pending(self) -> int:
        """Call records queued and not yet written."""
        return len(self._calls)

    @property
    def pending_finished(self) -> int:
        return sum(1 for _v, row in self._calls.values() if row.status != LIVE)

    def _kick(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._idle = asyncio.Event()
            self._task = loop.create_task(self._run(), name="record-writer")
        assert self._wake is not None and self._idle is not None
        self._idle.clear()
        self._wake.set()
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.store_queue = len(self._calls)
            self.metrics.store_events_queue = len(self._events)

    # -- the writing task ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        pause = RETRY_FIRST_S
        while True:
            if not self._calls and not self._events:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._calls.items())[:BATCH]
            events = self._events[:BATCH]
            for i, (_cid, (_v, row)) in enumerate(batch):
                row.encode()  # JSON of a whole record: ~0.1 ms each, so a slice at a time
                if i % ENCODE_SLICE == ENCODE_SLICE - 1:
                    await asyncio.sleep(0)
            try:
                await self.store.write_calls([row for _cid, (_v, row) in batch], events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, len(batch))
                with contextlib.suppress(TimeoutError):
                    # a new record does not end the pause: the database is what we wait for
                    await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            pause = RETRY_FIRST_S
            for cid, (version, _row) in batch:
                if self._calls.get(cid, (None,))[0] == version:
                    del self._calls[cid]
            del self._events[:len(events)]
            self.written += len(batch)
            if self.metrics is not None:
                self.metrics.store_writes += 1
                self.metrics.store_rows += len(batch)
            self._recovered()
            self._gauge()
            if events and self.on_events_written is not None:
                self.on_events_written()
            if not self._calls and self._spill_files:
                for done in self._spill_files:
                    with contextlib.suppress(OSError):
                        done.unlink()
                    log.info("records left by the last run (%s) are written", done)
                self._spill_files = []

    def _failed(self, exc: BaseException, rows: int) -> None:
        self.failures += 1
        self.last_error = (str(exc).strip() or exc.__class__.__name__).splitlines()[0][:300]
        if self.metrics is not None:
            self.metrics.store_write_failures += 1
            self.metrics.error("store")
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._last_log = now
            log.warning("call records could not be written (%s); %d queued, retrying",
                        self.last_error, len(self._calls))
        elif now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning("call records still not written after %.0f s (%s); %d queued",
                        now - self._failing_since, self.last_error, len(self._calls))

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning("call records are written again after %.1f s of failures",
                        time.monotonic() - self._failing_since)
            self._failing_since = None

    # -- shutdown --------------------------------------------------------------------------------

    async def flush(self, timeout_s: float = 10.0) -> int:
        """Wait until everything queued is written (at most `timeout_s`); returns how many call
        records are still unwritten."""
        if self._task is not None and self._idle is not None and (self._calls or self._events):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return len(self._calls)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def spill(self, path: Path) -> int:
        """Append what is still queued to `path` (JSON lines) for the next start; returns how
        many call records went there. Raises OSError when the file cannot be written."""
        if not self._calls and not self._events:
            return 0
        lines = [json.dumps({"call": row.record, "call_id": cid, "live": row.status == LIVE},
                            default=str)
                 for cid, (_v, row) in self._calls.items()]
        lines += [json.dumps({"event": {"key": e.key, "uuid": e.uuid, "type": e.type,
                                        "body": e.body.decode()}}) for e in self._events]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = ("\n".join(lines) + "\n").encode()
        try:
            with path.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # never leave half a spill behind
                if path.stat().st_size == 0:
                    path.unlink()
            raise
        return len(self._calls)

    def load_spill(self, path: Path) -> int:
        """Queue what a previous run spilled to `path` (the file is removed once written)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        n = 0
        for line in text.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut by the crash that interrupted the spill
            if "call" in item:
                rec = item["call"]
                if item.get("live"):  # its node is gone: what was written is what there is
                    from flowagent.server.call_store import lost_record

                    rec = lost_record(rec, self.node, rec.get("started_at"))
                self.write(str(item["call_id"]), rec, live=False)
                n += 1
            elif "event" in item:
                e = item["event"]
                self.add_event(OutboxEvent(e["key"], e["uuid"], e["type"], e["body"].encode()))
        self._spill_files.append(path)
        return n
