"""`open_store(url)`: the store a URL names — PostgreSQL for `postgresql://...`, else SQLite.

Kept apart from `call_store.py` (what a store is) so that the backends, which import those
definitions, are imported by nothing but this chooser.
"""

from __future__ import annotations

from pathlib import Path

from flowagent.server.call_store import StoreBackend, is_postgres_url


async def open_store(url: str | Path, *, timeout_s: float = 5.0, pool_size: int = 10,
                     migrate: bool = True) -> StoreBackend:
    """The store at `url`: a `postgresql://` URL, else a SQLite file path. Migrations are
    applied (unless `migrate=False`). Raises `StoreUnavailable` with one plain sentence when
    the database cannot be reached or used."""
    text = str(url)
    store: StoreBackend
    if is_postgres_url(text):
        from flowagent.server.store_postgres import PostgresStore

        store = await PostgresStore.connect(text, timeout_s=timeout_s, pool_size=pool_size)
    else:
        from flowagent.server.store_sqlite import SqliteStore

        store = SqliteStore(text, timeout_s=timeout_s)
    if migrate:
        try:
            await store.migrate()
        except BaseException:
            await store.close()
            raise
    return store
