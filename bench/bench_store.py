"""Call-record store cost under load: SQLite file vs PostgreSQL, and the runner latency with each.

    python bench/bench_store.py --calls 500 --duration 20
    python bench/bench_store.py --calls 500 --repeat 3 \
        --backends sqlite-end-only,sqlite,postgresql

The server is bench/runtime_load.py's (the real runtime, fake instant providers,
bench/flows/runtime_turns.yaml: every caller turn gets a spoken answer) with its record store
chosen by BENCH_STORE; the callers are runtime_load's load generator (a turn every `--cycle-s`
per call). Records are written as the call goes (a snapshot when the record changed, at most
every 0.5 s per call, batched into one transaction by the record writer), then the final one.

`sqlite-end-only` writes each record only when its call ends (what the server did before records
were written as the call goes): the cost of writing as it goes is its difference to `sqlite`.

Figures per backend:
- rows per call: call-record rows written per call over the whole run (snapshots + final);
- rows/s and transactions/s in the steady state (between 20 % and 90 % of the run), and rows/s
  per call in progress — the figure that scales to a fleet (docs/scale.md);
- PostgreSQL: WAL bytes per row and per call (what the database must absorb and replicate);
- runner-added latency p50/p99 (end of the caller's turn -> first frame of the answer);
- write failures and the writer's queue at the end (0 = it kept up).

PostgreSQL runs as its own cluster (initdb in a temp dir, Debian's binaries, fsync on: the
defaults), on the same 2 cores as the server and the load generator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import runtime_load as rl  # noqa: E402


def wal_lsn(cluster: Any, db: str) -> int:
    """PostgreSQL's WAL position in bytes."""
    out = cluster.psql("SELECT pg_current_wal_lsn() - '0/0'", db=db).strip()
    return int(float(out))


def run_backend(name: str, url: str, calls: int, duration: float, cycle_s: float,
                cluster: Any = None, db: str = "", end_only: bool = False) -> dict[str, Any]:
    os.environ["BENCH_STORE"] = url
    # end_only: the record written only when the call ends (as before records were written as
    # the call goes): the cost of writing as it goes is the difference
    os.environ["BENCH_CHECKPOINT_S"] = "3600" if end_only else ""
    srv = rl.Server(rl.FLOWS / "runtime_turns.yaml", keepalive_ms=500)
    try:
        st0 = srv.get("/bench/stats")
        wal0 = wal_lsn(cluster, db) if cluster else 0
        ramp = min(5.0, calls * 0.01)
        proc = rl.start_load(srv.port, calls=calls, duration=duration, cycle_s=cycle_s,
                             probes=min(calls, 10), ramp_s=ramp, speak=1)
        time.sleep(ramp + duration * 0.2)
        a = srv.get("/bench/stats")
        time.sleep(duration * 0.7)
        b = srv.get("/bench/stats")
        res = rl.finish_load(proc)
        deadline = time.monotonic() + 60
        while True:  # the calls ended when the load stopped: their final records follow
            st = srv.get("/bench/stats")
            if (st["active"] == 0 and st["store_queue"] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        wal1 = wal_lsn(cluster, db) if cluster else 0
    finally:
        srv.stop()
    span = b["now"] - a["now"]
    rows_steady = b["store_rows"] - a["store_rows"]
    rows_total = st["store_rows"] - st0["store_rows"]
    in_progress = (a["active"] + b["active"]) / 2
    ff = [r["first_frame_ms"] for r in st["turns"] if r.get("first_frame_ms") is not None]
    out = {
        "backend": name, "calls": calls, "connected": res["connected"],
        "turns": len(ff), "turns_per_call_s": round(len(ff) / max(1, calls) / duration, 3),
        "rows_total": rows_total, "rows_per_call": round(rows_total / max(1, calls), 2),
        "rows_per_s": round(rows_steady / span, 1),
        "txn_per_s": round((b["store_writes"] - a["store_writes"]) / span, 1),
        "rows_per_s_per_call": round(rows_steady / span / max(1.0, in_progress), 4),
        "runner_p50_ms": round(rl.pct(ff, 50), 2), "runner_p99_ms": round(rl.pct(ff, 99), 2),
        "jitter_p99_ms": round(rl.tick_jitter(st["ticks"])["jitter_p99_ms"], 2),
        "store_failures": st["store_failures"] - st0["store_failures"],
        "queue_at_end": st["store_queue"], "errors": st["errors"],
        "server_cpu_s": round(st["cpu_s"] - st0["cpu_s"], 1),
    }
    if cluster:
        out["wal_bytes_per_row"] = round((wal1 - wal0) / max(1, rows_total))
        out["wal_kb_per_call"] = round((wal1 - wal0) / 1024 / max(1, calls), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--cycle-s", type=float, default=2.0,
                   help="each caller speaks once every this many seconds")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds (each runs every backend once, interleaved: the machine's load"
                        " changes between runs)")
    a = p.parse_args()
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    cluster = None
    try:
        for round_no, name in ((r, n) for r in range(a.repeat) for n in a.backends.split(",")):
            if name in ("sqlite", "sqlite-end-only"):
                (tmp / "calls.db").unlink(missing_ok=True)
                url = str(tmp / "calls.db")
                results.append(run_backend(name, url, a.calls, a.duration, a.cycle_s,
                                           end_only=name.endswith("end-only")))
            elif name == "memory":
                results.append(run_backend(name, ":memory:", a.calls, a.duration, a.cycle_s))
            elif name == "postgresql":
                import pg_cluster

                if pg_cluster.UNAVAILABLE:
                    print(f"postgresql skipped: {pg_cluster.UNAVAILABLE}", file=sys.stderr)
                    continue
                if cluster is None:
                    cluster = pg_cluster.start_cluster(fsync=True, max_connections=100)
                url = cluster.new_database()
                db = url.rsplit("/", 1)[1]
                results.append(run_backend(name, url, a.calls, a.duration, a.cycle_s,
                                           cluster, db))
            else:
                raise SystemExit(f"unknown backend {name!r}")
            results[-1]["round"] = round_no
            print(json.dumps(results[-1]), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
