"""The store's schema as numbered migrations, one list for both backends.

Why migrations and not `CREATE TABLE IF NOT EXISTS`: a node upgraded before the others, or a
SQLite file from an older release, must find the schema it expects without anyone running a
tool by hand. Each step has a SQLite and a PostgreSQL form with the same meaning; a store records
the versions applied in `schema_migrations`, applies the missing ones at start-up in one
transaction (PostgreSQL: under an advisory lock, so nodes starting together apply them once),
and refuses a database whose version is newer than this code knows.

Version 1 is the original single-node schema (one row per UUID, written when the call ended);
version 2 keys rows by connection (`call_id`), adds the row's status and node, the nodes'
heart-beats, `POST /call` metadata and the webhook outbox, and carries version 1's records over.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_CALLS_V1 = """CREATE TABLE IF NOT EXISTS calls (
    uuid TEXT PRIMARY KEY,
    flow TEXT NOT NULL DEFAULT '',
    caller TEXT NOT NULL DEFAULT '',
    did TEXT NOT NULL DEFAULT '',
    started_at {real},
    ended_at {real},
    duration_s {real},
    outcome TEXT NOT NULL DEFAULT '',
    turns INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL
)"""

_CALLS_V2 = """CREATE TABLE call_rows (
    call_id TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'ended',
    flow TEXT NOT NULL DEFAULT '',
    caller TEXT NOT NULL DEFAULT '',
    did TEXT NOT NULL DEFAULT '',
    started_at {real},
    ended_at {real},
    duration_s {real},
    outcome TEXT NOT NULL DEFAULT '',
    turns INTEGER NOT NULL DEFAULT 0,
    updated_at {real},
    record TEXT NOT NULL
)"""

_COPY_V1 = """INSERT INTO call_rows (call_id, uuid, node, status, flow, caller, did, started_at,
    ended_at, duration_s, outcome, turns, updated_at, record)
    SELECT 'v1-' || uuid, uuid, '', 'ended', flow, caller, did, started_at, ended_at, duration_s,
           outcome, turns, ended_at, record FROM calls"""

_NODES = """CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'up',
    audiosocket TEXT NOT NULL DEFAULT '',
    http TEXT NOT NULL DEFAULT '',
    active_calls INTEGER NOT NULL DEFAULT 0,
    started_at {real},
    heartbeat_at {real},
    info TEXT NOT NULL DEFAULT '{{}}'
)"""

_PENDING = """CREATE TABLE pending_calls (
    uuid TEXT PRIMARY KEY,
    metadata TEXT NOT NULL,
    created_at {real}
)"""

_OUTBOX = """CREATE TABLE webhook_outbox (
    id {serial},
    event_key TEXT NOT NULL UNIQUE,
    uuid TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at {real},
    next_at {real},
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claimed_until {real},
    delivered_at {real},
    failed_at {real},
    last_error TEXT NOT NULL DEFAULT ''
)"""

_V2_INDEXES = (
    "CREATE INDEX calls_uuid ON calls (uuid, started_at)",
    "CREATE INDEX calls_started ON calls (started_at)",
    "CREATE INDEX calls_live ON calls (node) WHERE status = 'live'",
    "CREATE INDEX outbox_due ON webhook_outbox (next_at) "
    "WHERE delivered_at IS NULL AND failed_at IS NULL",
    "CREATE INDEX outbox_done ON webhook_outbox (delivered_at) WHERE delivered_at IS NOT NULL",
)


def _both(sql: str) -> tuple[str, str]:
    return (sql.format(real="REAL", serial="INTEGER PRIMARY KEY AUTOINCREMENT"),
            sql.format(real="DOUBLE PRECISION", serial="BIGSERIAL PRIMARY KEY"))


def _v2() -> Migration:
    steps = [_CALLS_V2, _COPY_V1, "DROP TABLE calls", "ALTER TABLE call_rows RENAME TO calls",
             _NODES, _PENDING, _OUTBOX, *_V2_INDEXES]
    pairs = [_both(s) for s in steps]
    return Migration(2, "rows per connection; nodes, POST /call metadata, webhook outbox",
                     tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "call records, one row per UUID", (_both(_CALLS_V1)[0],),
              (_both(_CALLS_V1)[1],)),
    _v2(),
)

LATEST = MIGRATIONS[-1].version

VERSIONS_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
              " applied_at REAL)",
    "postgres": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " applied_at DOUBLE PRECISION)",
}


def too_new(found: int, where: str) -> str:
    return (f"The call-record store {where} has schema version {found}, newer than this"
            f" flowagent knows ({LATEST}); upgrade flowagent on this node to the version the"
            " others run.")
