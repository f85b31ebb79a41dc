"""A real PostgreSQL server for the tests: its own cluster (initdb in a temp dir, a free
loopback port), started from Debian's binaries (/usr/lib/postgresql/*/bin; .ci/run installs the
`postgresql` package) and removed afterwards.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster belongs
to the `postgres` system user the Debian package creates. fsync is off: these tests check
behaviour, not durability on power loss (the benchmark runs with the defaults).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: why the PostgreSQL tests cannot run here, or "" when they can
UNAVAILABLE = ""


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name.split(".")[0]))
    return Path(found[-1]).parent if found else None


def why_unavailable() -> str:
    """'' when a PostgreSQL cluster can be started here, else one sentence saying why not."""
    bins = _bin_dir()
    if bins is None:
        return ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install"
                " Debian's postgresql package (.ci/run does, as root)")
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "the asyncpg driver is not installed (pip install -e '.[test]')"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    opts: tuple[str, ...] = ()
    user: str = "flowagent"
    _dbs: int = 0

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            [str(_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            capture_output=True, text=True, timeout=30, check=True)
        return out.stdout

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        self._dbs += 1
        name = f"t{os.getpid()}_{self._dbs}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop_server(self) -> None:
        """Stop the server, keeping its data (`start_server()` brings it back on the port)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(20)

    def start_server(self) -> None:
        self.proc = _postgres(self.dir, self.port, self.opts)
        _wait_ready(self)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_user() -> dict[str, str]:
    return {"user": "postgres"} if os.geteuid() == 0 else {}  # PostgreSQL never runs as root


def _postgres(root: Path, port: int, opts: tuple[str, ...]) -> subprocess.Popen[bytes]:
    bins = _bin_dir()
    assert bins is not None
    log = open(root / "server.log", "ab")  # noqa: SIM115 - the server writes it until stop
    try:
        return subprocess.Popen([str(bins / "postgres"), "-D", str(root / "data"), "-p",
                                 str(port), *opts], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, **_as_user())  # type: ignore
    finally:
        log.close()


def _wait_ready(cluster: PgCluster) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cluster.proc.poll() is not None:
            text = (cluster.dir / "server.log").read_text(errors="replace")
            raise RuntimeError(f"PostgreSQL did not start:\n{text}")
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            cluster.psql("SELECT 1")
            return
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not accept connections within 30 s")


def start_cluster(*, fsync: bool = False, max_connections: int = 300) -> PgCluster:
    bins = _bin_dir()
    assert bins is not None, why_unavailable()
    root = Path(tempfile.mkdtemp(prefix="flowagent-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run([str(bins / "initdb"), "-D", str(root / "data"), "-U", "flowagent",
                    "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"],
                   check=True, capture_output=True, timeout=120, **_as_user())  # type: ignore
    opts = ("-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
            "-c", f"max_connections={max_connections}", "-c", "shared_buffers=64MB")
    if not fsync:
        opts += ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
                 "full_page_writes=off")
    port = free_port()
    cluster = PgCluster(root, port, _postgres(root, port, opts), opts)
    try:
        _wait_ready(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


UNAVAILABLE = why_unavailable()
