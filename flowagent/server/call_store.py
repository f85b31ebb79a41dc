"""The call-record store: what every backend offers, and the rows they keep.

Two backends share one schema (`store_schema.py`, versioned migrations applied at start-up):
SQLite (`store_sqlite.py`), the embedded default — a file beside the server; and PostgreSQL
(`store_postgres.py`, asyncpg), when several `flowagent serve` nodes share one store.

Why rows keyed by the connection and not by the AudioSocket UUID: the UUID comes from outside
(a dialplan, a fuzzer) and may repeat; a repeat must never overwrite another call's record. Each
connection gets its own `call_id`; the UUID is an indexed column, and a lookup by UUID prefers a
live call over finished ones, then the latest.

What lives here besides records, because it must be shared by every node:
- `pending_calls`: `POST /call` metadata waiting for its AudioSocket connection (which may land
  on another node);
- `nodes`: one row per serve process, heart-beating; a node that stops heart-beating has its
  live calls marked `node_lost` by any other node (or by itself when it restarts);
- `webhook_outbox`: every webhook event, written before it is sent, delivered by any node.

All times in these tables are the database's clock (seconds since the epoch), so nodes with
skewed clocks agree on who stopped heart-beating.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

#: row states of a call
LIVE = "live"
ENDED = "ended"
NODE_LOST = "node_lost"

#: the columns of a call summary (listing), in order
SUMMARY_KEYS = ("call_id", "uuid", "node", "status", "flow", "caller", "did", "started_at",
                "ended_at", "duration_s", "outcome", "turns")


class StoreUnavailable(Exception):
    """The store cannot be opened or used; the message is one plain sentence for an operator."""


@dataclass(slots=True)
class CallRow:
    """One connection's record as the store keeps it: a few indexed columns + the JSON."""

    call_id: str
    uuid: str
    node: str
    status: str
    record: dict[str, Any]
    #: the record as JSON, once encoded (the record writer encodes in small slices between
    #: other work, so a large batch never holds the event loop)
    text: str = ""

    def encode(self) -> None:
        if not self.text:
            self.text = json.dumps(self.record, default=str)

    @property
    def turns(self) -> int:
        return sum(1 for e in self.record.get("transcript", []) if e.get("who") == "caller")

    def columns(self) -> tuple[Any, ...]:
        """The values of (call_id, uuid, node, status, flow, caller, did, started_at, ended_at,
        duration_s, outcome, turns, record) in that order."""
        r = self.record
        return (self.call_id, self.uuid, self.node, self.status, str(r.get("flow") or ""),
                str(r.get("caller") or ""), str(r.get("did") or ""), _num(r.get("started_at")),
                _num(r.get("ended_at")), _num(r.get("duration_s")), str(r.get("outcome") or ""),
                self.turns, self.text or json.dumps(r, default=str))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class OutboxEvent:
    """A webhook event as the outbox keeps it. `key` is its idempotency key (unique): a
    receiver that sees the same key twice has seen the same event twice."""

    key: str
    uuid: str
    type: str
    body: bytes
    id: int = 0
    attempts: int = 0


#: (type names: a store class has a method called `list`, which hides the builtin there)
Records = list[dict[str, Any]]
CallRows = list[CallRow]
OutboxEvents = list[OutboxEvent]
Ids = list[int]


@dataclass(slots=True)
class NodeInfo:
    node_id: str
    status: str = "up"  # up | draining | stopped
    audiosocket: str = ""
    http: str = ""
    active_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def lost_record(record: dict[str, Any], node: str, last_seen: float | None,
                call_id: str = "") -> dict[str, Any]:
    """A live call's last written record, closed because its node stopped heart-beating: it
    keeps every turn that was written; the ending says what happened."""
    d = dict(record)
    d.setdefault("node", node)
    if call_id:
        d.setdefault("call_id", call_id)
    d["outcome"] = NODE_LOST
    d["end_reason"] = (f"node {node} stopped heart-beating; the record keeps what was written"
                       " before it was lost")
    d["hangup_by"] = NODE_LOST
    started = _num(d.get("started_at"))
    ended = last_seen if last_seen is not None else started
    d["ended_at"] = ended
    if started is not None and ended is not None:
        d["duration_s"] = max(0.0, ended - started)
    d["status"] = NODE_LOST
    return d


def like_prefix(text: str) -> str:
    r"""A LIKE pattern matching `text` as a literal prefix (`%`, `_` and `\` escaped)."""
    return re.sub(r"([\\%_])", r"\\\1", text) + "%"


class StoreBackend(Protocol):
    """What the server, the CLI and the web UI use of a store. Every method is a coroutine that
    never blocks the event loop and gives up after the backend's timeout (raising
    `StoreUnavailable`, or the driver's error)."""

    #: a SQLite file path (recordings go beside it), else None
    path: str | None
    #: several nodes may share this store (the POST /call wait, node heart-beats matter)
    shared: bool
    #: where it is, fit to print (no password)
    where: str

    async def migrate(self) -> int:
        """Bring the schema up to date; returns the version."""

    async def write_calls(self, rows: CallRows, outbox: OutboxEvents) -> None:
        """Upsert call rows (by call_id) and add outbox events (by key, first write wins), in
        one transaction. A live row never overwrites an ended or node_lost one."""

    async def get(self, uuid: str) -> dict[str, Any] | None:
        """The record of a call by UUID (or a unique prefix of at least 4 characters): a live
        call first, else the latest. Live records carry `"status": "live"` and `"node"`."""

    async def list(self, limit: int = 20, status: str | None = None) -> Records:
        """Call summaries (`SUMMARY_KEYS`), newest first; `status` filters (live, ended...)."""

    async def count(self) -> int: ...

    async def put_pending(self, uuid: str, metadata: dict[str, Any], ttl_s: float,
                          max_count: int) -> bool:
        """`POST /call` metadata; older entries than `ttl_s` are swept. False (nothing stored)
        when `max_count` others are already waiting."""

    async def take_pending(self, uuid: str) -> dict[str, Any] | None:
        """The metadata for this UUID, removed (only one connection takes it)."""

    async def heartbeat(self, node: NodeInfo) -> None: ...

    async def nodes(self) -> Records: ...

    async def mark_lost(self, lost_after_s: float, own_node: str = "",
                        event: Any = None) -> Records:
        """Close the live calls of nodes silent for `lost_after_s` (and, with `own_node`, this
        node's calls left by its previous run) as `node_lost`; returns their records. With
        `event` (record -> OutboxEvent), their `call_ended` webhooks go into the outbox in the
        same transaction."""

    async def outbox_claim(self, node: str, limit: int, lease_s: float) -> OutboxEvents:
        """Events due for delivery, leased to `node` for `lease_s` (others skip them)."""

    async def outbox_delivered(self, ids: Ids) -> None: ...

    async def outbox_retry(self, event_id: int, delay_s: float, error: str,
                           give_up: bool = False) -> None: ...

    async def outbox_pending(self) -> int:
        """Events not yet delivered (and not given up)."""

    async def close(self) -> None: ...


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def display_url(url: str) -> str:
    """A store URL fit to print: the password replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
