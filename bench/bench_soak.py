"""Soak: N concurrent calls that keep ending and starting again, for a long time; is the
server's memory flat, and does every call get exactly one record?

    python bench/bench_soak.py --calls 200 --minutes 30          # the recorded run
    python bench/bench_soak.py --calls 50 --minutes 3            # a quick look

The server is bench/runtime_load.py's (`_serve`: the real runtime, fake instant providers,
the call records in a SQLite file like `flowagent serve`), running bench/flows/soak.yaml, whose
tool calls a small price API served here on 127.0.0.1. The callers (a separate process) behave
like Asterisk and its callers: half the calls are registered with `POST /call` first; the UUID,
then the first audio ~0.5 s later, one 20 ms frame every 20 ms with a short burst of "speech"
every few seconds (so turns happen); each call lasts 10–40 s unless the agent ends it first
(the fake recogniser says "goodbye" every fourth turn); some callers hang up in the middle of
the agent's answer; then a new call takes its place.

Printed and written to bench/results/soak.md: RSS every minute, the growth after warm-up
(the first `--warmup` minutes), the object types that grew most between the end of warm-up
and the end (from `gc.get_objects()`, which pauses the server for a moment at those two
points only), the runtime's collections, and the record check: the store is read after the
server stops, and every UUID the callers sent must have exactly one record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid as uuidlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowagent import audio  # noqa: E402
from flowagent.asterisk.audiosocket import Kind, encode, encode_uuid  # noqa: E402

FLOW = ROOT / "bench" / "flows" / "soak.yaml"
FRAME = 0.02


# ---------------------------------------------------------------------------------------------
# callers (a process of their own)
# ---------------------------------------------------------------------------------------------


async def one_call(port: int, http: int, speech: list[bytes], silence: bytes,
                   stats: dict[str, Any]) -> None:
    call = str(uuidlib.uuid4())
    stats["uuids"].append(call)
    if random.random() < 0.5:
        body = json.dumps({"uuid": call, "metadata": {"did": "+441134960000",
                                                     "caller": "+447700900123"}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{http}/call", data=body, method="POST",
            headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=5).read())
        except OSError:
            stats["register_failed"] += 1
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        stats["connect_failed"] += 1
        return
    got = 0

    async def drain() -> None:
        nonlocal got
        while True:
            data = await reader.read(65536)
            if not data:
                return
            got += len(data)

    reading = asyncio.create_task(drain())
    writer.write(encode_uuid(call))
    await asyncio.sleep(0.5)  # Asterisk's first audio frame comes ~0.5 s after the UUID
    length = random.uniform(10, 40)
    cycle = random.randint(100, 200)  # a burst of speech every 2-4 s
    offset = random.randrange(cycle)
    rude = random.random() < 0.2  # hangs up in the middle of an answer
    t0 = time.monotonic()
    n = 0
    try:
        while time.monotonic() - t0 < length and not reading.done():
            n += 1
            delay = t0 + n * FRAME - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pos = (n + offset) % cycle
            if writer.is_closing():
                break
            try:
                writer.write(speech[pos] if pos < len(speech) else silence)
            except (RuntimeError, ConnectionError):  # the agent hung up between two frames
                break
            if rude and n > 300 and pos == len(speech) + 25:  # 0.5 s into the answer
                break
        if reading.done() or writer.is_closing():
            stats["agent_ended"] += 1
        else:
            stats["caller_ended"] += 1
    finally:
        reading.cancel()
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    stats["calls"] += 1


async def churn(port: int, http: int, calls: int, seconds: float) -> dict[str, Any]:
    tone = audio.tone(300, 300, 8000, amplitude=0.4)
    speech = [encode(Kind.SLIN_8K, tone[i : i + 320]) for i in range(0, len(tone), 320)]
    silence = encode(Kind.SLIN_8K, bytes(320))
    stats: dict[str, Any] = {"uuids": [], "calls": 0, "agent_ended": 0, "caller_ended": 0,
                             "connect_failed": 0, "register_failed": 0}
    end = time.monotonic() + seconds

    async def slot(i: int) -> None:
        await asyncio.sleep(i * 0.05)  # ramp up
        while time.monotonic() < end:
            await one_call(port, http, speech, silence, stats)
            await asyncio.sleep(0.1)

    await asyncio.gather(*(slot(i) for i in range(calls)))
    return stats


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


def _popen(args: list[str], env: dict[str, str], stderr: bool = False) -> subprocess.Popen[str]:
    """A child process (started once per run: the moment of blocking does not matter)."""
    return subprocess.Popen(args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if stderr else None, text=True, cwd=ROOT,
                            env=env)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def get(http: int, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{http}{path}",
                                 headers={"Authorization": "Bearer bench"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


async def price_api() -> tuple[Any, int]:
    from aiohttp import web

    async def price(request: web.Request) -> web.Response:
        return web.json_response({"price": random.choice([450, 600, 725])})

    app = web.Application()
    app.router.add_get("/price", price)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def soak(calls: int, minutes: float, warmup: float) -> dict[str, Any]:
    api, api_port = await price_api()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    db = tmp / "calls.db"
    env = {**os.environ, "BENCH_STORE": str(db), "SOAK_API": f"http://127.0.0.1:{api_port}"}
    server = _popen([sys.executable, str(ROOT / "bench" / "runtime_load.py"), "_serve",
                     str(FLOW)], env)
    assert server.stdout is not None
    line = (await asyncio.to_thread(server.stdout.readline)).split()
    if not line or line[0] != "READY":
        server.kill()
        raise RuntimeError("bench server did not start")
    port, http = int(line[1]), int(line[2])
    try:
        return await _run(server, port, http, db, calls, minutes, warmup, api)
    finally:
        if server.poll() is None:
            server.kill()


async def _run(server: subprocess.Popen[str], port: int, http: int, db: Path, calls: int,
               minutes: float, warmup: float, api: Any) -> dict[str, Any]:
    base_rss, base_fds = rss_kb(server.pid), fds(server.pid)
    seconds = minutes * 60
    # the callers' result goes to a file: 14,000 UUIDs on a pipe nobody reads until the end
    # filled it and stopped the callers for good (the first 30-minute run was lost that way)
    result_file = db.parent / "callers.json"
    callers = _popen([sys.executable, __file__, "_churn", str(port), str(http), str(calls),
                      str(seconds), str(result_file)], dict(os.environ), stderr=True)
    samples: list[dict[str, Any]] = []
    objects: dict[str, Any] = {}
    t0 = time.monotonic()
    next_sample = 0.0
    while callers.poll() is None:
        now = time.monotonic() - t0
        if now >= next_sample:
            samples.append({"t_min": round(now / 60, 2), "rss_mb": rss_kb(server.pid) / 1024,
                            "fds": fds(server.pid)})
            print(f"{now / 60:6.1f} min  RSS {samples[-1]['rss_mb']:7.1f} MB  "
                  f"fds {samples[-1]['fds']}", flush=True)
            next_sample += 60
        if "warm" not in objects and now >= warmup * 60:
            objects["warm"] = await asyncio.to_thread(get, http, "/bench/objects?collect=1")
        if "end" not in objects and now >= seconds - 20:
            objects["end"] = await asyncio.to_thread(get, http, "/bench/objects?collect=1")
        await asyncio.sleep(1)
    _out, err = callers.communicate()
    if callers.returncode != 0:
        raise RuntimeError(err[-2000:])
    result = json.loads(result_file.read_text())
    await asyncio.sleep(3)  # the last records are written
    idle_rss, idle_fds = rss_kb(server.pid) / 1024, fds(server.pid)
    # pooled keep-alive connections to the tool's API close after aiohttp's 15 s idle time
    await asyncio.sleep(17)
    idle_fds_20s = fds(server.pid)
    server.terminate()
    server.wait(30)
    await api.cleanup()
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT lower(uuid), count(*) FROM calls GROUP BY lower(uuid)"))
    ends = dict(con.execute("SELECT status || ' ' || coalesce(json_extract(record,"
                            " '$.end_reason'), ''), count(*) FROM calls GROUP BY 1"))
    con.close()
    uuids = [u.lower() for u in result.pop("uuids")]
    missing = [u for u in uuids if rows.get(u, 0) == 0]
    doubled = [u for u in uuids if rows.get(u, 0) > 1]
    growth: list[tuple[str, int]] = []
    if "warm" in objects and "end" in objects:
        w, e = objects["warm"]["types"], objects["end"]["types"]
        growth = sorted(((k, e.get(k, 0) - w.get(k, 0)) for k in set(w) | set(e)),
                        key=lambda kv: -kv[1])[:15]
    return {"calls": calls, "minutes": minutes, "warmup_min": warmup, "samples": samples,
            "base_rss_mb": base_rss / 1024, "base_fds": base_fds, "idle_rss_mb": idle_rss,
            "idle_fds": idle_fds, "idle_fds_20s": idle_fds_20s, "callers": result,
            "records_missing": len(missing),
            "records_doubled": len(doubled), "uuids": len(uuids), "end_reasons": ends,
            "object_growth": growth,
            "sizes": {k: v.get("sizes") for k, v in objects.items()},
            "gc": objects.get("end", {}).get("gc")}


def report(r: dict[str, Any]) -> str:
    s = r["samples"]
    warm = [x for x in s if x["t_min"] >= r["warmup_min"]]
    lines = [f"# Soak: {r['calls']} calls for {r['minutes']:g} minutes",
             "", f"`python bench/bench_soak.py --calls {r['calls']} --minutes {r['minutes']:g}`",
             "", f"- calls made: {r['callers']['calls']} ({r['callers']['agent_ended']} ended by "
             f"the agent, {r['callers']['caller_ended']} by the caller); UUIDs sent "
             f"{r['uuids']}, **records missing {r['records_missing']}, doubled "
             f"{r['records_doubled']}**; connect failures {r['callers']['connect_failed']}",
             f"- RSS: {r['base_rss_mb']:.1f} MB idle before, "
             + (f"{warm[0]['rss_mb']:.1f} MB after warm-up ({r['warmup_min']:g} min), "
                f"{max(x['rss_mb'] for x in warm):.1f} MB highest after it, "
                f"{warm[-1]['rss_mb']:.1f} MB at the end "
                f"({(warm[-1]['rss_mb'] / warm[0]['rss_mb'] - 1) * 100:+.1f} %)" if warm else "")
             + f"; {r['idle_rss_mb']:.1f} MB idle after",
             f"- open files: {r['base_fds']} before, {r['idle_fds']} 3 s after the last call,"
             f" {r['idle_fds_20s']} 20 s after (pooled keep-alive connections to the tool's API"
             " close after 15 s idle)",
             f"- end reasons: {r['end_reasons']}",
             f"- runtime collections: {r['sizes']}",
             f"- full collections for ended calls (server/call_garbage.py): {r['gc']}",
             "", "| minute | RSS MB | fds |", "|---|---|---|"]
    lines += [f"| {x['t_min']:g} | {x['rss_mb']:.1f} | {x['fds']} |" for x in s]
    lines += ["", "Object types that grew most between the end of warm-up and the end:", "",
              "| type | more objects |", "|---|---|"]
    lines += [f"| `{k}` | {v:+d} |" for k, v in r["object_growth"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_churn":
        port, http, calls, seconds, out = sys.argv[2:7]
        from flowagent.server.runtime import new_event_loop

        with asyncio.Runner(loop_factory=new_event_loop) as r:
            res = r.run(churn(int(port), int(http), int(calls), float(seconds)))
        Path(out).write_text(json.dumps(res))
        return
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--warmup", type=float, default=5, help="minutes before RSS should be flat")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    a = p.parse_args()
    r = asyncio.run(soak(a.calls, a.minutes, min(a.warmup, a.minutes / 2)))
    text = report(r)
    print(text)
    a.out.write_text(text)


if __name__ == "__main__":
    main()
