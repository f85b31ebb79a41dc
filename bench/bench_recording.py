"""Per-frame cost of call recording (runner/recording.py), on the event-loop thread.

    /work/venv/bin/python bench/bench_recording.py

Measures `CallRecorder.caller(pcm)` (inbound hook) and the wrapped `write` (outbound hook, with
a no-op socket write) per 20 ms frame at 8 kHz, including the once-a-second hand-off to the
writer thread, and the writer thread's disk throughput for 100 simulated calls.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from flowagent import audio
from flowagent.runner.audio_recording import CallRecorder

FRAMES = 50 * 600  # ten minutes of one call


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flowagent-rec-bench-"))
    pcm = audio.tone(20, 440, 8000)
    frame = b"\x10\x01\x40" + pcm
    clock = Clock()
    rec = CallRecorder(tmp / "one.wav", "one.wav", 8000, clock=clock)
    write = rec.wrap_write(lambda data: None, 8000)
    t_in = t_out = 0.0
    for i in range(FRAMES):
        clock.t += 0.02
        t = time.perf_counter()
        rec.caller(pcm)
        t_in += time.perf_counter() - t
        t = time.perf_counter()
        write(frame)
        t_out += time.perf_counter() - t
        if i % 50 == 0:
            await asyncio.sleep(0)
    await rec.close()
    print(f"inbound hook:  {t_in / FRAMES * 1e6:.2f} us/frame")
    print(f"outbound hook: {t_out / FRAMES * 1e6:.2f} us/frame (wrapper + recorder)")

    # 100 calls x 60 s, interleaved as on a server: wall time of the whole write-out
    clocks = [Clock() for _ in range(100)]
    recs = [CallRecorder(tmp / f"c{i}.wav", "", 8000, clock=c) for i, c in enumerate(clocks)]
    started = time.perf_counter()
    for _ in range(50 * 60):
        for c, r in zip(clocks, recs, strict=True):
            c.t += 0.02
            r.caller(pcm)
    loop_s = time.perf_counter() - started
    await asyncio.gather(*(r.close() for r in recs))
    total_s = time.perf_counter() - started
    mb = _size(tmp) / 1e6
    print(f"100 calls x 60 s: loop side {loop_s:.2f} s, until all files complete {total_s:.2f} s,"
          f" {mb:.0f} MB written")
    _remove(tmp)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def _remove(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


if __name__ == "__main__":
    asyncio.run(main())
