"""Cloud path, shipped removals flow, measured at the caller (issue 20): one whole call over real
TCP AudioSocket with the line's timing, Deepgram's fake (energy endpointing, `endpointing_ms`
300 as shipped; interims while the caller speaks), Groq's fake (40 ms per token) and Cartesia's
fake; the flow's own `end_of_turn_ms: 600`. Per caller turn: last speech frame out -> first
agent audio in, and the server's latency rows (first_frame_ms, preemptive hit/miss).

    python bench/bench_cloud_turns.py [--calls 3] [--finalize-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from providers.fakes import FakeCartesia, FakeDeepgram, FakeOpenAIChat  # noqa: E402
from providers.records import wait_record  # noqa: E402
from providers.serving import serve_flow  # noqa: E402

from flowagent import audio  # noqa: E402
from flowagent.asterisk.caller import AudioSocketCaller  # noqa: E402

SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)
TURNS = ["I'd like a quote for a house move please", "LS11 5AB", "M1 1AE", "next Friday",
         "three bedrooms", "yes that's right", "yes please", "Jane Smith", "07911 123456"]


async def one_call(tmp: Path, finalize_s: float = 0.0) -> tuple[list[float], list[dict]]:
    async with (FakeDeepgram(TURNS, turns="energy", finalize_latency_s=finalize_s) as dg,
                FakeCartesia(ms_per_word=15) as ct, FakeOpenAIChat(token_s=0.04) as llm):
        overrides = {
            "asr": {"name": "deepgram", "options": {"api_key": dg.api_key, "url": dg.url,
                                                    "endpointing_ms": 300}},
            "tts": {"name": "cartesia", "options": {"api_key": ct.api_key, "url": ct.url,
                                                    "voice_id": "voice-uk-1"}},
            "llm": {"name": "groq", "options": {"api_key": llm.api_key, "base_url": llm.url}},
            "vad": {"name": "fake"},
        }
        waited: list[float] = []
        async with serve_flow(ROOT / "flows" / "removals.yaml", overrides, tmp) as served:
            c = AudioSocketCaller("127.0.0.1", served.server.address[1])
            await c.connect()
            said = 0.0
            for _ in TURNS:
                if not await c.wait_agent_quiet(0.3, timeout_s=15, after=said):
                    break
                said = time.monotonic()
                await c.say_audio(SPEECH)
                try:
                    first = await c.wait_agent_started(said, timeout_s=10)
                except TimeoutError:
                    break
                waited.append((first - c.last_speech_sent) * 1000)
            await asyncio.wait_for(c.closed.wait(), 20)
            rec = await wait_record(served.store, c.uuid)
            await c.close()
    return waited, rec["latency"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--finalize-ms", type=float, default=0.0,
                    help="how long Deepgram's fake takes to answer Finalize (default 0)")
    args = ap.parse_args()
    waited: list[float] = []
    rows: list[dict] = []
    for _ in range(args.calls):
        with tempfile.TemporaryDirectory() as tmp:
            w, r = await one_call(Path(tmp), args.finalize_ms / 1000)
        waited += w
        rows += r
    hits = sum(1 for r in rows if r.get("preemptive") == "hit")
    misses = sum(1 for r in rows if r.get("preemptive") == "miss")
    frames = [r["first_frame_ms"] for r in rows if r.get("first_frame_ms") is not None]
    print(f"caller turns {len(waited)}, rows {len(rows)}, preemptive hits {hits}, misses {misses}")
    print(f"at the caller: p50 {pct(waited, 50):.0f} ms, p90 {pct(waited, 90):.0f} ms,"
          f" max {max(waited):.0f} ms")
    print(f"rows first_frame_ms: p50 {pct(frames, 50):.0f} ms, p90 {pct(frames, 90):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
