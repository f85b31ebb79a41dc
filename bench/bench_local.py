"""The embedded offline stack (Whisper tiny.en + Piper joe + Silero) on this machine.

Measured:
1. turn latency THROUGH THE CALL SESSION: N callers (1, 2, 4, 8) on real AudioSocket TCP
   connections to an in-process server, serving a flow with the default providers and
   `end_of_turn_ms: 500`; every caller stops speaking at the same moment; reported: caller's
   last speech frame sent -> first frame of the reply received (what a caller hears, endpoint
   included), and the session's own split (end of turn detected -> ASR final -> first TTS
   audio -> first frame).
2. the provider chain alone (no session, no endpoint wait): N turns flushed at the same
   instant -> Whisper final -> first Piper chunk of a fixed short reply.
3. ASR word error on tests/data/speech (tiny.en; base too if installed), 10 s vs 30 s window.
4. Silero VAD throughput: CPU per 32 ms window batched vs one at a time -> calls per core.
5. Memory: process RSS before / after loading the stack.

Run:  /work/venv/bin/python bench/bench_local.py [--quick]   (~3 min; the machine should be idle)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from flowagent.audio import read_wav  # noqa: E402
from flowagent.providers.local.linesim import word_errors  # noqa: E402

SPEECH = ROOT / "tests" / "data" / "speech"
REPLY = "Thanks, one moment please."

FLOW = f"""\
flowagent: 1
name: Local Stack Bench
language: en-GB
start: ask
settings:
  end_of_turn_ms: 500
  no_input:
    timeout_s: 30
    reprompts: 1
states:
  ask:
    ask: What can I help you with?
    next:
      - go: reply
  reply:
    say: "{REPLY}"
    end: true
    outcome: completed
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_set() -> list[dict[str, Any]]:
    entries = json.loads((SPEECH / "transcripts.json").read_text("utf-8"))
    for e in entries:
        e["pcm"], _ = read_wav(SPEECH / e["file"])
    return entries


# ---------------------------------------------------------------------------------------------
# 1. through the session
# ---------------------------------------------------------------------------------------------


async def session_round(n: int, entries: list[dict[str, Any]], flow: Path) -> dict[str, Any]:
    from flowagent.asterisk.caller import AudioSocketCaller
    from flowagent.server.audiosocket_server import AudioSocketServer
    from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig
    from flowagent.server.store_sqlite import SqliteStore

    tmp = Path(tempfile.mkdtemp())
    config = RuntimeConfig(provider_timeout_s=10.0)
    flows = FlowSet(ProviderPool(), config.provider_overrides)
    flows.load(flow)
    store = SqliteStore(tmp / "calls.db")
    rt = Runtime(flows, store, config=config)
    server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
    await server.start()
    host, port = server.address
    callers = [AudioSocketCaller(host, port) for _ in range(n)]
    try:
        for c in callers:
            await c.connect()
        for c in callers:  # the greeting / question plays out first
            assert await c.wait_agent_quiet(quiet_s=0.5, timeout_s=30)
        # speech only (cut at its end), front-padded with zeros so all end together
        clips = []
        for i in range(n):
            e = entries[i % len(entries)]
            end = int(e["speech_end_s"] * 8000) * 2
            clips.append(e["pcm"][:end])
        longest = max(len(c) for c in clips)
        clips = [bytes(longest - len(c)) + c for c in clips]
        for c, clip in zip(callers, clips, strict=True):
            c.queue_audio(clip)
        await asyncio.sleep(longest / 16000 + 0.1)
        ends = [c.last_speech_sent for c in callers]
        # the flow says its reply and hangs up: wait for every call to end, then look up
        # when each reply's first speech frame arrived
        await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in callers)), 120)
        heard = []
        for c, end in zip(callers, ends, strict=True):
            first = next(r.at for r in c.stats.frames if r.at > end and r.speech)
            heard.append(round((first - end) * 1000))
        await asyncio.sleep(0.5)
        splits = []
        for c in callers:
            rec = await store.get(c.uuid)
            turns = (rec or {}).get("latency") or []
            if turns:
                splits.append(turns[-1])
        return {"calls": n, "heard_ms": heard, "splits": splits}
    finally:
        for c in callers:
            with contextlib.suppress(Exception):
                await c.close()
        with contextlib.suppress(Exception):
            await server.close()
        await store.close()


def summarize_session(result: dict[str, Any]) -> str:
    heard = result["heard_ms"]
    s = result["splits"]

    def med(key: str) -> str:
        vals = [t[key] for t in s if t.get(key) is not None]
        return f"{statistics.median(vals):.0f}" if vals else "-"

    return (f"| {result['calls']} | {statistics.median(heard):.0f} | {max(heard):.0f} | "
            f"{med('asr_final_ms')} | {med('tts_first_audio_ms')} | {med('first_frame_ms')} |")


# ---------------------------------------------------------------------------------------------
# 2. provider chain alone
# ---------------------------------------------------------------------------------------------


async def chain_round(n: int, entries: list[dict[str, Any]], asr: Any, tts: Any) -> list[float]:
    streams = []
    for i in range(n):
        s = await asr.open_stream(8000, "en")
        await s.send_audio(entries[i % len(entries)]["pcm"])
        streams.append(s)

    async def one(s: Any) -> float:
        await s.flush()
        await anext(aiter(s.transcripts()))
        agen = tts.synthesize(REPLY, 8000)
        await anext(agen)
        t = time.monotonic()
        await agen.aclose()
        return t

    t0 = time.monotonic()
    done = await asyncio.gather(*(one(s) for s in streams))
    for s in streams:
        await s.close()
    return [round((t - t0) * 1000) for t in done]


# ---------------------------------------------------------------------------------------------
# 3. word error
# ---------------------------------------------------------------------------------------------


async def wer(model: str, window_s: float, entries: list[dict[str, Any]]) -> tuple[float, float]:
    from flowagent.providers.local.whisper import WhisperAsr, WhisperOptions

    asr = WhisperAsr(WhisperOptions(model=model, window_s=window_s))
    errors = words = 0
    times = []
    for e in entries:
        t = time.monotonic()
        r = await asr.transcribe(e["pcm"], 8000)
        times.append(time.monotonic() - t)
        err, n = word_errors(e["text"], r.text)
        errors, words = errors + err, words + n
    return errors / words, statistics.median(times) * 1000


# ---------------------------------------------------------------------------------------------
# 4. VAD throughput
# ---------------------------------------------------------------------------------------------


async def vad_throughput(calls: int, seconds: float, batch_ms: float) -> tuple[float, float]:
    """(CPU seconds per window, mean windows per inference) for `calls` streams of audio."""
    from flowagent.providers.local.silero import SileroVad

    vad = SileroVad(batch_ms=batch_ms)
    rng = np.random.default_rng(0)
    pcm = (rng.normal(0, 2000, int(8000 * seconds))).astype("<i2").tobytes()
    frames = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    streams = [vad.open_stream(8000) for _ in range(calls)]
    w0, b0 = vad.model.windows_run, vad.model.batches_run
    cpu0 = time.process_time()

    async def feed(s: Any) -> None:
        for f in frames:
            await s.probability(f)

    await asyncio.gather(*(feed(s) for s in streams))
    cpu = time.process_time() - cpu0
    windows = vad.model.windows_run - w0
    batches = vad.model.batches_run - b0
    vad.close()
    return cpu / windows, windows / batches


# ---------------------------------------------------------------------------------------------


async def main(quick: bool) -> None:
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    entries = load_set()
    rss0 = rss_mb()
    from flowagent.providers.local.stack import load_default_stack

    stack = load_default_stack()
    rss1 = rss_mb()
    out(f"## Offline stack on this machine ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    out()
    out(f"- load + warm-up: {stack.summary().split(': ', 1)[1]}")
    out(f"- memory: RSS {rss0:.0f} MB before loading, {rss1:.0f} MB with the stack loaded "
        f"(+{rss1 - rss0:.0f} MB)")
    out()

    counts = [1, 2, 4] if quick else [1, 2, 4, 8]
    with tempfile.TemporaryDirectory() as d:
        flow = Path(d) / "bench.yaml"
        flow.write_text(FLOW, "utf-8")
        out("### 1. End of speech -> first reply audio, through the call session")
        out()
        out("AudioSocket over TCP loopback, `end_of_turn_ms: 500`, reply: a fixed sentence "
            f"({REPLY!r}), all callers stop talking at the same moment. *heard* = caller's last "
            "speech frame sent -> first reply frame received (endpoint wait included); the "
            "session's split is from its end-of-turn decision.")
        out()
        out("| calls | heard p50 ms | heard max ms | ASR final ms | TTS first audio ms | "
            "first frame ms |")
        out("|---|---|---|---|---|---|")
        for n in counts:
            out(summarize_session(await session_round(n, entries, flow)))
    out()
    out("### 2. Provider chain alone (no endpoint wait): flush -> Whisper final -> first Piper "
        "chunk")
    out()
    out("| concurrent turns | p50 ms | max ms |")
    out("|---|---|---|")
    for n in counts:
        ms = await chain_round(n, entries, stack.asr, stack.tts)
        out(f"| {n} | {statistics.median(ms):.0f} | {max(ms):.0f} |")
    out()
    out(f"### 3. ASR word error, tests/data/speech ({len(entries)} phone-band clips with noise)")
    out()
    out("| model | encoder window | word error | median ms / turn |")
    out("|---|---|---|---|")
    from flowagent.model_files import whisper_available

    models = ["tiny.en"] + (["base"] if whisper_available("base") and not quick else [])
    for model in models:
        for window in (10.0, 0.0):
            w, ms = await wer(model, window, entries)
            label = f"{window:g} s" if window else "30 s (standard)"
            out(f"| {model} | {label} | {w:.1%} | {ms:.0f} |")
    out()
    out("### 4. Silero VAD throughput (one shared session, 1 thread)")
    out()
    out("| calls | batching | windows / inference | CPU µs / 32 ms window | calls per core |")
    out("|---|---|---|---|---|")
    seconds = 2.0 if quick else 4.0
    for calls, batch_ms in ((1, 0.0), (50, 0.0), (50, 4.0), (200, 4.0)):
        cpu, per = await vad_throughput(calls, seconds, batch_ms)
        per_call = cpu * 31.25  # CPU seconds per second of one call's audio
        label = f"{batch_ms:g} ms" if batch_ms else "off"
        out(f"| {calls} | {label} | {per:.1f} | {cpu * 1e6:.0f} | {1 / per_call:.0f} |")
    out()
    out(f"- memory after the benchmark: RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="offline stack benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (1, 2, 4 calls)")
    args = parser.parse_args()
    asyncio.run(main(args.quick))
