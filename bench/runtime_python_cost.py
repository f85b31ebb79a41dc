"""Python cost per call-frame of the call runner, without sockets.

    python bench/runtime_python_cost.py --calls 300 --seconds 8

Why: on the shared 2-core machine the capacity benchmark (bench/runtime_load.py) mixes our
Python with kernel socket costs, the load generator and other people's jobs, so its CPU figures
move by ±50% run to run. This runs N real calls (`AudioSocketLine` + `run_call`) and the real
`Player` in one process with fake transports (a write is a counter increment) and feeds each
call one 20 ms frame every 20 ms — silence with 300 ms of tone every 3 s, so the VAD runs on
every frame and every call takes a turn every 3 s, as in the capacity run — and reports the
process CPU time per call-frame (one frame in, one out). That is the part of the cost our code
controls.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowagent import audio  # noqa: E402
from flowagent.asterisk.audiosocket import Kind, encode, encode_uuid  # noqa: E402


class FakeTransport:
    """Just enough of asyncio.Transport for a session: counts writes."""

    def __init__(self) -> None:
        self.writes = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def run(calls: int, seconds: float) -> dict[str, Any]:
    from flowagent.runner.audiosocket_line import AudioSocketLine
    from flowagent.runner.call_start import run_call
    from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig, tune_gc
    from flowagent.server.store_sqlite import SqliteStore

    flows = FlowSet(ProviderPool())
    flows.load(ROOT / "bench" / "flows" / "runtime_turns.yaml")
    rt = Runtime(flows, SqliteStore(":memory:"), config=RuntimeConfig(keepalive_ms=0))
    tune_gc()
    silence = encode(Kind.SLIN_8K, bytes(320))
    tone = audio.tone(300, 300, 8000, amplitude=0.4)
    speech = [encode(Kind.SLIN_8K, tone[i : i + 320]) for i in range(0, len(tone), 320)]
    cycle = 150  # 3 s
    loop = asyncio.get_running_loop()
    sessions: list[tuple[AudioSocketLine, int, FakeTransport]] = []
    tasks = []
    for _ in range(calls):
        t = FakeTransport()
        s = AudioSocketLine(t, rt.player, keepalive_ms=0)  # type: ignore[arg-type]
        tasks.append(loop.create_task(run_call(s, rt)))
        s.feed(encode_uuid(str(uuid.uuid4())) + silence)
        sessions.append((s, random.randrange(cycle), t))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    n = frames = 0
    cpu0 = wall0 = 0.0
    f0 = w0 = 0
    while time.monotonic() - t0 < seconds:
        n += 1
        delay = t0 + n * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if n == 50:  # skip the first second (greetings)
            cpu0, wall0 = time.process_time(), time.monotonic()
            f0, w0 = frames, sum(t.writes for _, _, t in sessions)
        for s, offset, _ in sessions:
            pos = (n + offset) % cycle
            s.feed(speech[pos] if pos < len(speech) else silence)
            frames += 1
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    writes = sum(t.writes for _, _, t in sessions) - w0
    out = {
        "calls": calls,
        "python_us_per_call_frame": round(cpu * 1e6 / max(1, frames - f0), 2),
        "cores": round(cpu / wall, 3),
        "writes_per_inbound_frame": round(writes / max(1, frames - f0), 2),
        "alive": sum(1 for s, _, _ in sessions if not s.closed),
    }
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await rt.player.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--seconds", type=float, default=8.0)
    a = p.parse_args()
    from flowagent.server.runtime import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as r:
        print(r.run(run(a.calls, a.seconds)))


if __name__ == "__main__":
    main()
