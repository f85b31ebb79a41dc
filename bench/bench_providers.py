"""Client overhead of each cloud provider per turn, against its loopback fake.

What is measured: for each provider, a "turn" (ASR: 0.5 s of caller audio in -> the end-of-turn
transcript out; LLM: request -> a 20-token streamed reply; TTS: a 10-word sentence -> all its
audio; STS: 0.5 s of audio in -> the whole spoken reply) against the provider's fake, which
simulates a fixed service latency (`--latency-ms`, default 50 ms, charged once per turn).
The fakes run in a *separate process* so their CPU time is not ours. Reported per turn:

- overhead ms = wall time of the turn - the fake's simulated latency (our client + loopback I/O
  + the fake's own work, so it is an upper bound on our overhead);
- cpu ms = CPU time our process spent in the turn (client only: parsing, base64, μ-law,
  resampling, JSON, asyncio).

Run:  /work/venv/bin/python bench/bench_providers.py [--turns 50] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

FRAME = bytes(320)  # 20 ms of 8 kHz PCM
SENTENCE = "Your removal is booked for Friday morning between eight and ten."  # 11 words
REPLY = " ".join(f"word{i}" for i in range(20))


# ---------------------------------------------------------------------------------------------
# fake side (child process)
# ---------------------------------------------------------------------------------------------


async def serve(latency_s: float) -> None:
    from tests.providers.fakes import (
        FakeAnthropic,
        FakeAvr,
        FakeCartesia,
        FakeDeepgram,
        FakeElevenLabs,
        FakeOpenAIChat,
        FakeOpenAIRealtime,
    )

    fakes = {
        "deepgram": FakeDeepgram(["I would like a quote please"], latency_s=latency_s),
        "openai_chat": FakeOpenAIChat([REPLY], first_token_s=latency_s),
        "anthropic": FakeAnthropic([REPLY], first_token_s=latency_s),
        "cartesia": FakeCartesia(ms_per_word=200, first_audio_s=latency_s),
        "elevenlabs": FakeElevenLabs(ms_per_word=200, first_audio_s=latency_s),
        "openai_realtime": FakeOpenAIRealtime(["Sure, I can help with that."], audio_ms=2000,
                                              bytes_per_turn=4000, first_audio_s=latency_s),
        "avr": FakeAvr(transcripts=["a quote please"], replies=[REPLY],
                       sts_script=["Sure, I can help with that today."], first_token_s=latency_s,
                       first_audio_s=latency_s),
    }
    urls: dict[str, Any] = {}
    for name, fake in fakes.items():
        await fake.start()
        urls[name] = {"url": getattr(fake, "url", ""), "key": fake.api_key}
    avr = fakes["avr"]
    urls["avr"].update(asr=avr.asr_url, llm=avr.llm_url, tts=avr.tts_url, sts=avr.sts_url)
    print(json.dumps(urls), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until parent exits


# ---------------------------------------------------------------------------------------------
# client side (this process)
# ---------------------------------------------------------------------------------------------


async def measure(turns: int, latency_s: float, turn: Callable[[], Awaitable[None]]
                  ) -> dict[str, float]:
    await turn()  # warm-up (connections, first-use imports)
    walls, cpus = [], []
    for _ in range(turns):
        w0, c0 = time.perf_counter(), time.process_time()
        await turn()
        walls.append((time.perf_counter() - w0 - latency_s) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    walls.sort()
    cpus.sort()
    return {"overhead_p50": statistics.median(walls), "overhead_p95": walls[int(len(walls) * .95)
                                                                            - 1],
            "cpu_p50": statistics.median(cpus), "cpu_mean": statistics.fmean(cpus)}


async def run_client(urls: dict[str, Any], turns: int, latency_s: float) -> dict[str, Any]:
    from flowagent.providers.anthropic import AnthropicLlm
    from flowagent.providers.avr import AvrAsr, AvrLlm, AvrSts, AvrTts
    from flowagent.providers.base import LlmMessage
    from flowagent.providers.cartesia import CartesiaTts
    from flowagent.providers.deepgram import DeepgramAsr
    from flowagent.providers.elevenlabs import ElevenLabsTts
    from flowagent.providers.openai_chat import OpenAIChatLlm
    from flowagent.providers.openai_realtime import OpenAIRealtimeSts

    results: dict[str, Any] = {}
    msgs = (LlmMessage("system", "Be brief."), LlmMessage("user", "How much for a move?"))

    # ASR: Deepgram (one stream per call; a turn = 25 frames in, one end-of-turn final out)
    u = urls["deepgram"]
    dg = await DeepgramAsr.from_options({"api_key": u["key"], "url": u["url"]}).open_stream(
        8000, "en")
    dg_it = dg.transcripts().__aiter__()

    async def dg_turn() -> None:
        for _ in range(25):
            await dg.send_audio(FRAME)
        while not (await dg_it.__anext__()).end_of_turn:
            pass

    results["deepgram (asr)"] = await measure(turns, latency_s, dg_turn)
    await dg.close()

    for label, llm in (
        ("openai-compatible / groq (llm)", OpenAIChatLlm.from_options(
            {"api_key": urls["openai_chat"]["key"], "base_url": urls["openai_chat"]["url"]})),
        ("anthropic (llm)", AnthropicLlm.from_options(
            {"api_key": urls["anthropic"]["key"], "base_url": urls["anthropic"]["url"]})),
        ("avr (llm)", AvrLlm.from_options({"url": urls["avr"]["llm"]})),
    ):
        async def llm_turn(llm: Any = llm) -> None:
            async for _ in llm.stream(msgs):
                pass

        results[label] = await measure(turns, latency_s, llm_turn)
        await llm.close()

    cart = CartesiaTts.from_options({"api_key": urls["cartesia"]["key"],
                                     "url": urls["cartesia"]["url"], "voice_id": "v"})
    eleven = ElevenLabsTts.from_options({"api_key": urls["elevenlabs"]["key"],
                                         "url": urls["elevenlabs"]["url"], "voice_id": "v"})
    eleven16 = ElevenLabsTts.from_options({"api_key": urls["elevenlabs"]["key"],
                                           "url": urls["elevenlabs"]["url"], "voice_id": "v",
                                           "output_format": "pcm_16000"})
    avr_tts = AvrTts.from_options({"url": urls["avr"]["tts"]})
    for label, tts in (("cartesia (tts, native 8 kHz)", cart),
                       ("elevenlabs (tts, ulaw_8000)", eleven),
                       ("elevenlabs (tts, pcm_16000 -> 8 kHz)", eleven16),
                       ("avr (tts)", avr_tts)):
        async def tts_turn(tts: Any = tts) -> None:
            async for _ in tts.synthesize(SENTENCE, 8000):
                pass

        results[label] = await measure(turns, latency_s, tts_turn)
    await cart.close()
    await avr_tts.close()

    # STS: OpenAI Realtime (one session; a turn = 0.5 s of audio in, the whole reply out)
    u = urls["openai_realtime"]
    rt = await OpenAIRealtimeSts.from_options({"api_key": u["key"], "url": u["url"]}).connect(
        "Be brief.", (), 8000)
    rt_it = rt.events().__aiter__()

    async def rt_turn() -> None:
        for _ in range(25):
            await rt.send_audio(FRAME)
        while (await rt_it.__anext__()).kind != "done":
            pass

    results["openai realtime (sts, g711 u-law)"] = await measure(turns, latency_s, rt_turn)
    await rt.close()

    avr_asr = AvrAsr.from_options({"url": urls["avr"]["asr"]})
    asr_stream = await avr_asr.open_stream(8000, "en")
    asr_it = asr_stream.transcripts().__aiter__()

    async def avr_asr_turn() -> None:
        for _ in range(25):
            await asr_stream.send_audio(FRAME)
        await asr_it.__anext__()

    results["avr (asr)"] = await measure(turns, 0.0, avr_asr_turn)
    await asr_stream.close()
    await avr_asr.close()

    sts = await AvrSts.from_options({"url": urls["avr"]["sts"]}).connect("", (), 8000)
    sts_it = sts.events().__aiter__()

    async def avr_sts_turn() -> None:
        for _ in range(25):
            await sts.send_audio(FRAME)
        while (await sts_it.__anext__()).kind != "transcript_agent":
            pass

    results["avr (sts)"] = await measure(turns, 0.0, avr_sts_turn)
    await sts.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    latency_s = args.latency_ms / 1000
    if args.serve:
        asyncio.run(serve(latency_s))
        return 0
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--latency-ms",
                              str(args.latency_ms)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        results = asyncio.run(run_client(urls, args.turns, latency_s))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print(f"turns per provider: {args.turns}; simulated service latency: {args.latency_ms:g} ms"
          " per turn (subtracted)")
    print("| provider | overhead p50 ms | overhead p95 ms | client CPU p50 ms |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['overhead_p50']:.1f} | {r['overhead_p95']:.1f} | "
              f"{r['cpu_p50']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
