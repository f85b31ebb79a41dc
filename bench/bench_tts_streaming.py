"""An LLM reply spoken through TTS: one continuation stream vs clause by clause.

    python bench/bench_tts_streaming.py [--replies 20] [--first-token-ms 40] [--token-ms 40]

What is measured: the speaker (runner/speaker.py) speaks a streamed LLM reply onto a paced line
(the real Python pacing clock, a transport that only counts frames). The LLM is the in-process
fake (`first_token_ms`, then one word every `token_ms`: published cloud figures are 30-50 ms);
the TTS is our real Cartesia client against the loopback Cartesia protocol fake, which answers
each request after `--tts-first-ms` (published: 50-80 ms) and then voices each word as it
arrives. The same client is run both ways: as it declares itself (continuation: every token
goes to one open context) and told it has no continuation API (the reply is cut into clauses
and each clause is a request of its own). Reported per reply:

- first audio ms: LLM request -> the reply's first audio handed to the line;
- silence ms inside the reply: frames the line sent as silence between the reply's first and
  last audible frames (the caller hears a hole);
- end ms: LLM request -> the reply's last audio handed to the line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowagent.dialogue.actions import LlmRequest  # noqa: E402
from flowagent.flow.compiler import load_flow  # noqa: E402
from flowagent.providers.base import LlmMessage  # noqa: E402
from flowagent.providers.cartesia import CartesiaTts  # noqa: E402
from flowagent.providers.fake import FakeLlm  # noqa: E402
from flowagent.runner.audiosocket_line import AudioSocketLine  # noqa: E402
from flowagent.runner.call_tasks import CallTasks  # noqa: E402
from flowagent.runner.player import Player  # noqa: E402
from flowagent.runner.served_flow import FlowEntry, Providers  # noqa: E402
from flowagent.runner.speaker import Speaker  # noqa: E402
from tests.providers.fakes import FakeCartesia  # noqa: E402

REPLY = ("Well, we move homes and offices all over Yorkshire, and I can price yours today "
         "if you tell me where from, where to, and when.")
FLOW = ROOT / "tests" / "runtime" / "flows" / "basic.yaml"


class CountingTransport:
    """Keeps, per frame written, whether it was silence (the line's keep-alive frames)."""

    def __init__(self) -> None:
        self.silent: list[bool] = []

    def write(self, data: bytes) -> None:
        self.silent.append(not any(data[3:]))

    def holes_ms(self) -> float:
        """Silence between the reply's first and last audible frames."""
        audible = [i for i, s in enumerate(self.silent) if not s]
        if not audible:
            return 0.0
        return 20.0 * sum(self.silent[audible[0]:audible[-1]])

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Hooks:
    def __init__(self) -> None:
        self.first_audio: float | None = None
        self.results = 0

    def post(self, event: Any) -> None:
        self.results += 1

    def milestone(self, name: str) -> None:
        if name == "tts_first_audio" and self.first_audio is None:
            self.first_audio = time.monotonic()

    def agent_line(self, say_id: int, text: str) -> None:
        return None

    def speech_queue_idle(self) -> None:
        return None

    def fault(self, kind: str, message: str) -> None:
        raise RuntimeError(f"{kind}: {message}")

    def cut_short(self, say_id: int, heard: str) -> None:
        return None

    def now(self) -> float:
        return 0.0


async def one_reply(tts: CartesiaTts, llm: FakeLlm, say_id: int) -> dict[str, float]:
    transport = CountingTransport()
    line = AudioSocketLine(transport, Player(), keepalive_ms=0)  # type: ignore[arg-type]
    out = line.open_output()
    entry = FlowEntry(path=FLOW, compiled=load_flow(FLOW),
                      providers=Providers(asr=None, tts=tts, vad=None, llm=llm), mtime=0.0)
    hooks = Hooks()
    tasks = CallTasks(lambda: "bench", lambda n, e: None)
    speaker = Speaker(hooks, tasks, line, entry, provider_timeout_s=5.0)
    speaker.start()
    t0 = time.monotonic()
    speaker.llm(LlmRequest(say_id, (LlmMessage("user", "what do you do?"),), say_id=say_id))
    last_add = t0
    while not (hooks.results and speaker.queue_empty):
        await asyncio.sleep(0.005)
        if out.busy:
            last_add = time.monotonic()
    while out.busy:  # noqa: ASYNC110 (the out stream has no "drained" event)
        await asyncio.sleep(0.01)
    await tasks.cancel_all()
    line.hang_up(send_frame=False)
    assert hooks.first_audio is not None
    return {"first_audio_ms": (hooks.first_audio - t0) * 1000,
            "silence_ms": transport.holes_ms(),
            "end_ms": (last_add - t0) * 1000}


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in rows[0]:
        vals = sorted(r[key] for r in rows)
        out[f"{key}_p50"] = round(statistics.median(vals), 1)
        out[f"{key}_max"] = round(vals[-1], 1)
    return out


async def main(args: argparse.Namespace) -> None:
    fake = FakeCartesia(ms_per_word=args.ms_per_word, first_audio_s=args.tts_first_ms / 1000)
    await fake.start()
    try:
        results = {}
        for mode in ("continuation", "clauses"):
            tts = CartesiaTts.from_options({"api_key": fake.api_key, "url": fake.url,
                                            "voice_id": "v"})
            if mode == "clauses":
                tts.capabilities = replace(tts.capabilities, continuation=False)
            llm = FakeLlm(replies=(REPLY,), first_token_ms=args.first_token_ms,
                          token_ms=args.token_ms)
            rows = [await one_reply(tts, llm, i + 1) for i in range(args.replies)]
            results[mode] = summary(rows)
            await tts.close()
        for mode, s in results.items():
            print(f"{mode:13s} {s}")
    finally:
        await fake.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replies", type=int, default=20)
    p.add_argument("--first-token-ms", type=float, default=40.0)
    p.add_argument("--token-ms", type=float, default=40.0)
    p.add_argument("--tts-first-ms", type=float, default=60.0)
    p.add_argument("--ms-per-word", type=float, default=300.0)
    asyncio.run(main(p.parse_args()))
