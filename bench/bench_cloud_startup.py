"""Start-up of `flowagent serve` for a flow that uses only cloud providers (issue 20): seconds to
accept calls and resident memory once accepting, and which offline models it loaded.

Deepgram and Cartesia are the loopback fakes from tests/providers/fakes (so warming the static
prompts costs what it costs against a fast cloud); the VAD is the flow's default (Silero, the
one local model a cloud flow still uses). Each run is a real `serve` process with a fresh
directory, polled on `GET /healthz` every 50 ms, RSS read from /proc when it answers.

    python bench/bench_cloud_startup.py [--runs 3] [--flow flows/removals.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from providers.fakes import FakeCartesia, FakeDeepgram  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(flow: Path, env: dict[str, str], timeout_s: float = 120.0) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        as_port, http_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "flowagent.cli", "serve", str(flow),
               "--audiosocket", f"127.0.0.1:{as_port}", "--http", f"127.0.0.1:{http_port}",
               "--db", str(Path(tmp) / "calls.db"), "--reload-interval", "0"]
        log = Path(tmp) / "serve.log"
        with log.open("wb") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        try:
            while time.monotonic() - t0 < timeout_s:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited {proc.returncode}:\n{log.read_text()}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz",
                                                timeout=1) as r:
                        if r.status == 200:
                            ready = time.monotonic() - t0
                            break
                except OSError:
                    pass
                time.sleep(0.05)
            else:
                raise SystemExit("serve never answered /healthz")
            time.sleep(0.5)  # settle
            rss = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        loaded = [ln for ln in log.read_text(errors="replace").splitlines()
                  if "offline speech stack loaded" in ln]
        stack = loaded[-1].split("offline speech stack loaded:")[-1].strip('" }') if loaded \
            else "none"
    return ready, rss, stack


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flow", type=Path, default=ROOT / "flows" / "removals.yaml")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    async with FakeDeepgram(["hello"]) as dg, FakeCartesia() as ct:
        with tempfile.TemporaryDirectory() as tmp:
            data = yaml.safe_load(args.flow.read_text())
            data["providers"] = {
                "asr": {"name": "deepgram", "options": {"api_key": "${DG_KEY}", "url": dg.url}},
                "tts": {"name": "cartesia", "options": {"api_key": "${CT_KEY}", "url": ct.url,
                                                        "voice_id": "voice-uk-1"}}}
            flow = Path(tmp) / args.flow.name
            flow.write_text(yaml.safe_dump(data, sort_keys=False))
            for extra in args.flow.parent.glob(f"{args.flow.stem}.*.yaml"):
                (Path(tmp) / extra.name).write_text(extra.read_text())
            env = {**os.environ, "FLOWAGENT_API_TOKEN": "bench", "FLOWAGENT_LOG_FORMAT": "json",
                   "PYTHONPATH": str(ROOT), "DG_KEY": dg.api_key, "CT_KEY": ct.api_key}
            results = []
            for i in range(args.runs):
                ready, rss, stack = await asyncio.to_thread(one_run, flow, env)
                results.append((ready, rss))
                print(f"run {i + 1}: accepting after {ready:.2f} s, RSS {rss:.0f} MB,"
                      f" models: {stack}")
    print(f"median: {statistics.median(r[0] for r in results):.2f} s,"
          f" {statistics.median(r[1] for r in results):.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
