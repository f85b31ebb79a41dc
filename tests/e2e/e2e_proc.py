"""Helpers to run `flowagent serve` as a real subprocess on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
NETGUARD = Path(__file__).resolve().parent / "netguard"
TOKEN = "e2e-token"
CLI = [sys.executable, "-c", "from flowagent.cli import app; app()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of our subprocesses: offline, loopback-only (netguard), JSON logs."""
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "ORT_DISABLE_TELEMETRY": "1",
        "FLOWAGENT_API_TOKEN": TOKEN,
        "FLOWAGENT_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(ROOT),
                                       env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    })
    for k in ("FLOWAGENT_WEBHOOK_URL", "WEBHOOK_URL", "FLOWAGENT_AMI_HOST"):
        env.pop(k, None)
    env.update(extra)
    return env


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    audiosocket: str
    http: str
    log_path: Path
    started_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    async def get_json(self, path: str) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(f"http://{self.http}{path}", headers={"X-Flowagent-Token": TOKEN}) as r:
            r.raise_for_status()
            return await r.json()

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return int(self.proc.returncode or 0)


async def start_serve(flow: Path, tmp: Path, *, env: dict[str, str], args: tuple[str, ...] = (),
                      ready_within_s: float = 180.0) -> Served:
    """Start `flowagent serve` and wait until /healthz answers (models loaded and warm)."""
    as_addr = f"127.0.0.1:{free_port()}"
    http = f"127.0.0.1:{free_port()}"
    log_path = tmp / "serve.log"
    out = log_path.open("wb")
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", str(flow), "--audiosocket", as_addr, "--http", http,
        "--db", str(tmp / "calls.db"), *args,
        stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(tmp),
    )
    out.close()
    served = Served(proc, as_addr, http, log_path)
    deadline = time.monotonic() + ready_within_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise AssertionError(f"flowagent serve exited {proc.returncode}:\n{served.log()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with s.get(f"http://{http}/healthz") as r:
                    if r.status == 200:
                        served.started_s = time.monotonic() - t0
                        return served
            await asyncio.sleep(0.5)
    await served.stop()
    raise AssertionError(f"flowagent serve did not come up:\n{served.log()}")


async def run_cli(*args: str, env: dict[str, str], cwd: Path,
                  timeout_s: float = 240.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=str(cwd),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"`flowagent {args[0]}` timed out:\n{err.decode()[-4000:]}")\
            from None
    return int(proc.returncode or 0), out.decode(), err.decode()
