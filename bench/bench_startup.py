"""Time-to-accept of `flowagent serve`: cold prompt cache vs warm prompt cache.

Each run starts `flowagent serve FLOW` as a real process (the offline stack unless the flow names
other providers), polls `GET /healthz` every 50 ms (the control API starts right after the
AudioSocket listener, so this is when calls are accepted) and stops it with SIGTERM. A cold run
gets a fresh directory (new database, empty `prompt-cache/` beside it); the warm run after it
reuses that directory, as a restart of the same service does.

    python bench/bench_startup.py flows/removals.yaml --runs 3 [--warm background]

Prints one line per run and a Markdown table (for bench/results/startup.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(flow: Path, workdir: Path, extra: list[str], timeout_s: float = 240.0) -> dict:
    as_port, http_port = free_port(), free_port()
    log_path = workdir / f"serve-{time.time_ns()}.log"
    env = {**os.environ, "FLOWAGENT_API_TOKEN": "bench", "FLOWAGENT_LOG_FORMAT": "json",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "flowagent.cli", "serve", str(flow),
           "--audiosocket", f"127.0.0.1:{as_port}", "--http", f"127.0.0.1:{http_port}",
           "--db", str(workdir / "calls.db"), "--reload-interval", "0", *extra]
    with log_path.open("wb") as out:
        t0 = time.monotonic()
        wall0 = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=str(workdir))
    ready = None
    try:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz",
                                            timeout=1) as r:
                    if r.status == 200:
                        ready = time.monotonic() - t0
                        break
            except OSError:
                pass
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text(errors="replace")
    prompts = ""
    stack = ""
    timeline: list[tuple[float, str]] = []  # (seconds after spawn, log message)
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        msg = str(entry.get("msg", ""))
        with_ts = dt.datetime.fromisoformat(str(entry.get("ts", "")).replace("Z", "+00:00"))
        timeline.append((with_ts.timestamp() - wall0, msg))
        if "static prompts ready:" in msg:
            prompts = msg.split("static prompts ready:", 1)[1].strip()
        if msg.startswith("offline speech stack loaded"):
            stack = msg
    if not prompts:
        m = re.search(r"Static prompts: (.*)", text)
        prompts = " ".join(m.group(1).split()) if m else ""
    return {"ready_s": ready, "prompts": prompts, "stack": stack, "timeline": timeline}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flow", type=Path, nargs="?", default=ROOT / "flows" / "removals.yaml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warm", default="before", choices=("before", "background"))
    ap.add_argument("--timeline", action="store_true",
                    help="print every log line of each run with its time after the spawn")
    ap.add_argument("--no-embeddings-run", action="store_true",
                    help="after the warm run, delete prompt-cache/embeddings/ and start again "
                    "(warm prompts, intent examples embedded again: start-up before the "
                    "embedding disk cache)")
    args = ap.parse_args()
    flow = args.flow.resolve()
    extra = ["--warm", args.warm]
    kinds = ["cold", "warm"] + (["warm-no-emb"] if args.no_embeddings_run else [])
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for i in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="bench-startup-"))
        try:
            for kind in kinds:
                if kind == "warm-no-emb":
                    shutil.rmtree(workdir / "prompt-cache" / "embeddings", ignore_errors=True)
                load_before = os.getloadavg()[0]
                r = one_run(flow, workdir, extra)
                results[kind].append(r)
                print(f"run {i + 1} {kind} (load {load_before:.1f}): "
                      f"accepting after {r['ready_s']:.2f} s; "
                      f"prompts: {r['prompts'] or '?'}; {r['stack']}", flush=True)
                if args.timeline:
                    for at, msg in r["timeline"]:
                        print(f"    {at:6.2f} s  {msg[:110]}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| prompt cache | runs (s) | median (s) |")
    print("|---|---|---|")
    for kind in kinds:
        times = [r["ready_s"] for r in results[kind] if r["ready_s"] is not None]
        runs = ", ".join(f"{t:.1f}" for t in times)
        med = statistics.median(times) if times else float("nan")
        print(f"| {kind} | {runs} | {med:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
