"""Several real `flowagent serve` processes, a real HAProxy in front of them and a real
PostgreSQL behind them, all on loopback; and the callers that play Asterisk through them.

HAProxy comes from Debian's package (.ci/run installs it); without it the tests that need it
skip loudly. Nodes heart-beat every 0.5 s and are declared lost after 2 s of silence, so a
killed node's calls are closed within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from loopback import serve_app

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.server.webhooks import IDEMPOTENCY_HEADER

ROOT = Path(__file__).resolve().parents[2]
FLOW = Path(__file__).parent / "flows" / "short.yaml"
NETGUARD = ROOT / "tests" / "e2e" / "netguard"
TOKEN = "cluster-token"
CLI = [sys.executable, "-c", "from flowagent.cli import app; app()"]
SPEECH = audio.tone(300, 300, 8000, amplitude=0.4)  # "the caller talks" for the fake VAD


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    node_id: str
    dir: Path
    as_port: int
    http_port: int
    proc: asyncio.subprocess.Process | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return (self.dir / "serve.log").read_text("utf-8", errors="replace")

    async def start(self, ready_within_s: float = 60) -> None:
        out = (self.dir / "serve.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *CLI, "serve", str(FLOW), "--audiosocket", f"127.0.0.1:{self.as_port}", "--http",
            f"127.0.0.1:{self.http_port}", "--node-id", self.node_id, "--prompt-cache", "off",
            "--reload-interval", "0", *self.args,
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=self.env, cwd=str(self.dir))
        out.close()
        deadline = time.monotonic() + ready_within_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise AssertionError(f"node {self.node_id} exited {self.proc.returncode}:"
                                         f"\n{self.log()}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with s.get(f"{self.http}/healthz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise AssertionError(f"node {self.node_id} did not come up:\n{self.log()}")

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(f"{self.http}{path}", headers={"X-Flowagent-Token": TOKEN}) as r:
            return r.status, await r.json(content_type=None)

    async def post_call(self, uuid: str, payload: dict[str, Any]) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.post(f"{self.http}/call", json={"uuid": uuid, "payload": payload},
                       headers={"X-Flowagent-Token": TOKEN}) as r:
            assert r.status == 200, await r.text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout_s: float = 60) -> int:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0) if self.proc is not None else 0


def node_env(store_url: str, webhook_url: str = "", **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("FLOWAGENT_WEBHOOK_URL", "WEBHOOK_URL", "FLOWAGENT_AMI_HOST", "FLOWAGENT_NODE_ID"):
        env.pop(k, None)
    env.update({
        "HF_HUB_OFFLINE": "1", "ORT_DISABLE_TELEMETRY": "1", "FLOWAGENT_API_TOKEN": TOKEN,
        "FLOWAGENT_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(ROOT)]),
        "FLOWAGENT_HEARTBEAT_S": "0.5", "FLOWAGENT_NODE_LOST_AFTER_S": "2",
    })
    if store_url:
        env["FLOWAGENT_DATABASE_URL"] = store_url
    if webhook_url:
        env["FLOWAGENT_WEBHOOK_URL"] = webhook_url
    env.update(extra)
    return env


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Any]:
    """`await nodes(n, store_url, webhook_url)` -> n started nodes (stopped after the test)."""
    made: list[Node] = []

    async def make(n: int, store_url: str, webhook_url: str = "",
                   names: tuple[str, ...] = ()) -> list[Node]:
        new = []
        for i in range(n):
            name = names[i] if names else f"node-{chr(ord('a') + len(made) + i)}"
            d = tmp_path / name
            d.mkdir()
            new.append(Node(name, d, free_port(), free_port(),
                            env=node_env(store_url, webhook_url)))
        made.extend(new)
        await asyncio.gather(*(n.start() for n in new))
        return new

    yield make
    for n in made:
        if n.proc is not None and n.proc.returncode is None:
            n.proc.kill()
            await n.proc.wait()


@pytest.fixture
async def solo(tmp_path: Path) -> AsyncIterator[Any]:
    """`solo(*args)` -> one node named "solo" (not started) with extra serve args, always
    killed after the test, whatever happened."""
    made: list[Node] = []

    def make(*args: str) -> Node:
        node = Node("solo", tmp_path, free_port(), free_port(), args=args, env=node_env(""))
        made.append(node)
        return node

    yield make
    for n in made:
        if n.proc is not None and n.proc.returncode is None:
            n.proc.kill()
            await n.proc.wait()


# -- HAProxy -------------------------------------------------------------------------------------

@dataclass
class Balancer:
    proc: subprocess.Popen[bytes]
    port: int
    stats: Path
    dir: Path

    def servers(self) -> dict[str, str]:
        """server name -> HAProxy's status of it (UP, DOWN, ...), from the admin socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        out = {}
        for line in data.decode().splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "flowagent_nodes" and cols[1] != "BACKEND":
                out[cols[1]] = cols[17]
        return out

    async def wait_status(self, want: dict[str, str], timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.servers()
            if all(got.get(k, "").startswith(v) for k, v in want.items()):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"HAProxy sees {self.servers()}, not {want}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def balancer() -> Any:
    """`start(nodes)` -> a running HAProxy with the config `flowagent deploy haproxy` prints."""
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(exe):
        reason = "HAProxy is not installed: install Debian's haproxy package (.ci/run does)"
        warnings.warn(f"several-node tests SKIPPED: {reason}", stacklevel=1)
        pytest.skip(reason)
    started: list[Balancer] = []

    def start(nodes: list[Node]) -> Balancer:
        from flowagent.commands.deploy import render

        d = Path(tempfile.mkdtemp(prefix="flowagent-haproxy-"))
        port = free_port()
        stats = d / "admin.sock"
        cfg = render([f"{n.node_id}=127.0.0.1:{n.as_port}:{n.http_port}" for n in nodes],
                     listen=f"127.0.0.1:{port}", check_ms=250, fall=1, rise=1,
                     stats=str(stats), maxconn=2000)
        (d / "haproxy.cfg").write_text(cfg)
        proc = subprocess.Popen([exe, "-db", "-f", str(d / "haproxy.cfg")],
                                stdout=(d / "haproxy.log").open("wb"),
                                stderr=subprocess.STDOUT)
        b = Balancer(proc, port, stats, d)
        started.append(b)
        deadline = time.monotonic() + 10
        while not stats.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("HAProxy did not start:\n"
                                     + (d / "haproxy.log").read_text(errors="replace"))
            time.sleep(0.05)
        return b

    yield start
    for b in started:
        b.stop()


# -- webhooks ------------------------------------------------------------------------------------

@dataclass
class Receiver:
    url: str
    #: (idempotency key, type, uuid, payload) of every delivery, duplicates included
    got: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    def ended(self) -> dict[str, list[dict[str, Any]]]:
        """call_ended deliveries by idempotency key."""
        out: dict[str, list[dict[str, Any]]] = {}
        for key, kind, _uuid, payload in self.got:
            if kind == "call_ended":
                out.setdefault(key, []).append(payload)
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        rec.got.append((request.headers.get(IDEMPOTENCY_HEADER, ""), body["type"],
                        body["uuid"], body["payload"]))
        return web.json_response({})

    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_post("/hook", hook)
    async with serve_app(app) as url:
        rec.url = f"{url}/hook"
        yield rec


# -- callers -------------------------------------------------------------------------------------

@dataclass
class Played:
    uuid: str
    #: the agent hung up after its goodbye (a normal end), vs the connection cut
    completed: bool = False
    heard_agent: bool = False
    #: monotonic time the agent's answer to each caller turn was heard
    answered_at: list[float] = field(default_factory=list)
    error: str = ""


async def play_call(port: int, *, uuid: str | None = None, think_s: float = 0.0,
                    hold_s: float = 0.0, timeout_s: float = 30) -> Played:
    """One caller through AudioSocket: hears the greeting, says two things (by audio), hears
    the goodbye and the agent's hang-up. `think_s` before each turn; `hold_s` more before the
    second (the flow's no-input timeout is 8 s)."""
    c = AudioSocketCaller("127.0.0.1", port, call_uuid=uuid, keep_frames=False)
    played = Played(c.uuid)
    try:
        await c.connect()
        spoke = 0.0
        for turn in range(2):
            if not await c.wait_agent_quiet(0.25, timeout_s=timeout_s, after=spoke):
                played.error = "the agent never finished speaking"
                return played
            if c.closed.is_set():
                return played
            played.heard_agent = True
            if spoke:
                played.answered_at.append(c.last_agent_speech)
            if think_s or (turn and hold_s):
                await asyncio.sleep(think_s + (hold_s if turn else 0.0))
            spoke = time.monotonic()
            await c.say_audio(SPEECH)
        await asyncio.wait_for(c.closed.wait(), timeout_s)
        if c.last_agent_speech > spoke:
            played.answered_at.append(c.last_agent_speech)
        played.completed = c.stats.hangup_frame
    except (OSError, TimeoutError) as exc:
        played.error = f"{exc.__class__.__name__}: {exc}"
    finally:
        await c.close()
    return played
