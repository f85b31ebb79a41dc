"""Hostile callers for minutes on end: does every call that sent a UUID keep exactly one record,
is nothing logged as our error, and do the server's files and memory come back?

    python bench/bench_fuzz.py --minutes 3                    # the recorded run
    python bench/bench_fuzz.py --minutes 0.5 --batch 200      # a quick look

The server is bench/runtime_load.py's (`_serve`: the real runtime, fake instant providers,
records in a SQLite file, tune_gc as in `serve`), running tests/runtime/flows/basic.yaml. The
attacks are tests/runtime/hostile_callers.py's (the suite runs a bounded batch of the same):
batches of `--batch` connections, `--concurrency` at a time, a new seed per batch. Printed and
written to bench/results/fuzz.md: connections by attack, UUIDs sent, records missing or doubled,
ERROR lines in the server's log, open files and RSS before, during and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from hostile_callers import attack_batch, record_problems  # noqa: E402

FLOW = ROOT / "tests" / "runtime" / "flows" / "basic.yaml"


def _start(args: list[str], err: Any, env: dict[str, str]) -> subprocess.Popen[str]:
    """The server process (started once per run: the moment of blocking does not matter)."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                            env=env)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def run(minutes: float, batch: int, concurrency: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    db, log = tmp / "calls.db", tmp / "server.log"
    env = {**os.environ, "BENCH_STORE": str(db), "BENCH_UUID_TIMEOUT_S": "1",
           "FLOWAGENT_LOG_FORMAT": "json"}
    with log.open("wb") as err:
        server = _start([sys.executable, str(ROOT / "bench" / "runtime_load.py"), "_serve",
                         str(FLOW)], err, env)
    assert server.stdout is not None
    try:
        line = (await asyncio.to_thread(server.stdout.readline)).split()
        if not line or line[0] != "READY":
            raise RuntimeError("bench server did not start")
        port = int(line[1])
        await asyncio.sleep(1)
        base = (rss_mb(server.pid), fds(server.pid))
        sent: Counter[str] = Counter()
        by_attack: Counter[str] = Counter()
        samples = []
        failed = 0
        t0 = time.monotonic()
        seed = 0
        while time.monotonic() - t0 < minutes * 60:
            seed += 1
            res = await attack_batch("127.0.0.1", port, batch, seed=seed,
                                     concurrency=concurrency, idle_s=2)
            sent += res.uuids
            by_attack += res.connections
            failed += res.failed_to_connect
            samples.append((round((time.monotonic() - t0) / 60, 2), rss_mb(server.pid),
                            fds(server.pid)))
            print(f"{samples[-1][0]:5.2f} min  {sum(by_attack.values()):6d} connections  "
                  f"RSS {samples[-1][1]:6.1f} MB  fds {samples[-1][2]}", flush=True)
        await asyncio.sleep(5)  # the last records are written, idle connections closed
        idle = (rss_mb(server.pid), fds(server.pid))
    finally:
        server.terminate()
        server.wait(30)
    con = sqlite3.connect(db)
    stored = Counter({u: n for u, n in con.execute(
        "SELECT uuid, count(*) FROM calls GROUP BY uuid")})
    ends = Counter({r: n for r, n in con.execute(
        "SELECT coalesce(json_extract(record, '$.outcome'), '?'), count(*) FROM calls"
        " GROUP BY 1")})
    con.close()
    errors = [json.loads(x) for x in log.read_text().splitlines()
              if x.startswith("{") and '"level": "error"' in x]
    problems = record_problems(sent, stored)
    return {"minutes": minutes, "batch": batch, "concurrency": concurrency,
            "connections": dict(by_attack), "uuids_sent": sum(sent.values()),
            "records": sum(stored.values()), "record_problems": problems[:20],
            "record_problem_count": len(problems), "failed_to_connect": failed,
            "error_lines": [e.get("msg", "") for e in errors[:20]],
            "error_count": len(errors), "outcomes": dict(ends), "base": base, "idle": idle,
            "samples": samples}


def report(r: dict[str, Any]) -> str:
    lines = [f"# Hostile callers for {r['minutes']:g} minutes", "",
             f"`python bench/bench_fuzz.py --minutes {r['minutes']:g} --batch {r['batch']}"
             f" --concurrency {r['concurrency']}`", "",
             f"- connections: {sum(r['connections'].values())} ({r['failed_to_connect']} "
             "could not connect)",
             f"- UUIDs sent whole: {r['uuids_sent']}; records: {r['records']}; **records missing"
             f" or doubled: {r['record_problem_count']}** {r['record_problems'][:3]}",
             f"- **ERROR lines in the server's log: {r['error_count']}** {r['error_lines'][:3]}",
             f"- server before: RSS {r['base'][0]:.1f} MB, {r['base'][1]} open files; idle after:"
             f" RSS {r['idle'][0]:.1f} MB, {r['idle'][1]} open files",
             f"- outcomes: {r['outcomes']}", "", "| attack | connections |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["connections"].items())]
    lines += ["", "| minute | RSS MB | open files |", "|---|---|---|"]
    lines += [f"| {t:g} | {m:.1f} | {f} |" for t, m, f in r["samples"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=3)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.md")
    a = p.parse_args()
    r = asyncio.run(run(a.minutes, a.batch, a.concurrency))
    text = report(r)
    print(text)
    a.out.write_text(text)


if __name__ == "__main__":
    main()
