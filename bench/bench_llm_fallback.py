"""What the LLM fallback costs: how often deterministic understanding hands a caller's line to
the flow's LLM, how many tokens that sends, and how long the caller waits for it.

Run:  .venv/bin/python bench/bench_llm_fallback.py [--data FILE] [--below 0.85] [--ttft 0.35]

Each case of a understanding set (default: the dev set; the held-out set measures traffic
the tuning never saw) is played through the engine as `bench_understanding_heldout.py` does,
with an OpenAI-compatible LLM configured (`providers: llm: openai`, pointed at the loopback
fake server of tests/providers/fakes, which speaks the documented SSE wire format) and
`settings.llm_fallback` on, `llm_fallback_below` set. The fake answers the engine's function
call (`choose_intent` or `fill_slots`) with "none"/nothing after `--ttft` seconds, so what is
measured is the cost and the wait, not the LLM's judgement. Tokens are estimated as characters
/ 4 of the JSON request body (messages + tool schema), the usual rule of thumb for English.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from flowagent.dialogue.events import CallInfo  # noqa: E402
from flowagent.dialogue.text_driver import Conversation  # noqa: E402
from flowagent.dialogue.tools import CannedTools  # noqa: E402
from flowagent.flow.compiler import load_flow  # noqa: E402
from flowagent.providers.openai_chat import OpenAIChatLlm  # noqa: E402
from tests.providers.fakes.fake_openai_chat import FakeOpenAIChat  # noqa: E402


class DecliningLlmServer(FakeOpenAIChat):
    """Answers whichever function the engine offers, with nothing found."""

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        names = [t["function"]["name"] for t in body.get("tools") or ()]
        if "choose_intent" in names:
            reply: Any = {"tool_calls": [{"name": "choose_intent",
                                          "arguments": {"intent": "none"}}]}
        else:
            reply = {"tool_calls": [{"name": names[0] if names else "fill_slots",
                                     "arguments": {}}]}
        self.replies, self.index = [reply], 0
        return await super().completions(request)


async def run(data: dict[str, Any], below: float, ttft: float) -> dict[str, Any]:
    flows = {}
    for name, spec in data["flows"].items():
        flow = load_flow(ROOT / spec["file"])
        settings = dataclasses.replace(flow.settings, llm_fallback=True,
                                       llm_fallback_below=below)
        flows[name] = (dataclasses.replace(flow, settings=settings),
                       ROOT / spec["tools"] if spec.get("tools") else None)
    waits: list[float] = []
    turns = 0
    async with DecliningLlmServer(first_token_s=ttft) as fake:
        llm = OpenAIChatLlm.from_options({"api_key": fake.api_key, "base_url": fake.url})
        for case in data["cases"]:
            flow, tools = flows[case["flow"]]
            canned = CannedTools.from_file(tools) if tools else CannedTools()
            today = case.get("today", data["today"])
            conv = Conversation(flow, canned, llm, today=today)
            await conv.start(CallInfo(uuid="fallback-bench"))
            for line in case["say"]:
                if conv.ended:
                    break
                before = len(fake.requests)
                t0 = time.perf_counter()
                await conv.say(str(line))
                turns += 1
                if len(fake.requests) > before:
                    waits.append(time.perf_counter() - t0)
        await llm.close()
        bodies = [json.dumps(r["body"]) for r in fake.requests]
    requests = len(bodies)
    tokens = [len(b) / 4 for b in bodies]
    return {
        "cases": len(data["cases"]), "caller turns": turns, "LLM requests": requests,
        "turns sent to the LLM": f"{len(waits)}/{turns} = {len(waits) / max(1, turns):.1%}",
        "prompt tokens (est.) per request": round(statistics.mean(tokens)) if tokens else 0,
        "prompt tokens (est.) in all": round(sum(tokens)),
        "wait per fallback turn p50 ms": round(1000 * statistics.median(waits)) if waits else 0,
        "wait per fallback turn max ms": round(1000 * max(waits)) if waits else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "bench/data/dev_understanding.yaml")
    ap.add_argument("--below", type=float, default=0.85,
                    help="settings.llm_fallback_below (0 = only when nothing matched)")
    ap.add_argument("--ttft", type=float, default=0.35,
                    help="the fake LLM's time to first token, seconds")
    args = ap.parse_args()
    data = yaml.safe_load(args.data.read_text("utf-8"))
    out = asyncio.run(run(data, args.below, args.ttft))
    print(f"LLM fallback cost on {args.data.name}: llm_fallback_below={args.below}, "
          f"fake LLM first token {args.ttft:.2f} s")
    for k, v in out.items():
        print(f"  {k:<36} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
