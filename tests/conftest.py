"""Suite-wide guard: tests may only reach loopback.

Every test in this project must run with no network beyond 127.0.0.0/8 and ::1 (fake cloud
servers, our own servers). Rather than trusting that, the guard below makes any other connection
fail loudly, so a model download or a forgotten real URL shows up as a test failure.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import settings
from loopback import serve_app

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# Property tests: the same examples on every run by default, so CI is reproducible (a random
# draw once found a real extraction bug in CI and failed an unrelated change). To look for new
# failures, run with HYPOTHESIS_PROFILE=explore (fresh random examples each run) and turn what
# it finds into an `@example` plus a fix.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(OSError):
    pass


def _check(sock: socket.socket, address: object) -> None:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        if host in ("localhost",):
            return
        raise NetworkBlocked(f"test tried to reach {host!r}: only loopback is allowed") from None
    if not ip.is_loopback:
        raise NetworkBlocked(f"test tried to reach {host!r}: only loopback is allowed")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
async def pricing_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[dict[str, Any]]]:
    """The removals firm's pricing/booking API on loopback (flows/removals.yaml reads its URL
    from REMOVALS_API_URL); yields the JSON bodies it received, in order."""
    from aiohttp import web

    seen: list[dict[str, Any]] = []

    async def quote(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"price": 450, "quote_id": "Q-1001"})

    async def book(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"reference": "SR-2024"})

    app = web.Application()
    app.add_routes([web.post("/quote", quote), web.post("/bookings", book)])
    async with serve_app(app) as url:
        monkeypatch.setenv("REMOVALS_API_URL", url)
        yield seen


# -- PostgreSQL: one real cluster for the session, a fresh database per test ----------------------

@pytest.fixture(scope="session")
def pg_cluster() -> Any:
    """A real PostgreSQL server (tests/pg_cluster.py), started once for the test session."""
    import warnings

    import pg_cluster as pg

    if pg.UNAVAILABLE:
        warnings.warn(f"PostgreSQL tests SKIPPED: {pg.UNAVAILABLE}", stacklevel=1)
        pytest.skip(f"PostgreSQL tests cannot run here: {pg.UNAVAILABLE}")
    cluster = pg.start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The call-record store each test of the store suite runs against: a SQLite file, then a
    fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "calls.db")
    return str(request.getfixturevalue("pg_cluster").new_database())
