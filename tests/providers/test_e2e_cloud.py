"""Whole phone calls over AudioSocket with the cloud providers talking to their loopback fakes.

The caller is `AudioSocketCaller` (real TCP, real AudioSocket frames, silence streamed between
turns like Asterisk does); the server is the real `AudioSocketServer`; ASR is Deepgram (the fake
transcribes each stretch of caller speech, endpointing like the real service), TTS is Cartesia
(native 8 kHz), the LLM is Groq (OpenAI-compatible SSE). Nothing is mocked on our side.

The OpenAI Realtime (STS) calls are in test_e2e_sts.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from providers.fakes import FakeCartesia, FakeDeepgram, FakeOpenAIChat
from providers.records import wait_record
from providers.serving import serve_flow

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)  # "the caller talks"

REMOVALS_TURNS = ["I'd like a quote for a house move please", "LS11 5AB", "M1 1AE",
                  "next Friday", "three bedrooms", "yes that's right", "yes please",
                  "Jane Smith", "07911 123456"]


@contextlib.asynccontextmanager
async def serve(flow: Path, overrides: dict[str, Any], tmp: Path) -> AsyncIterator[Any]:
    async with serve_flow(flow, overrides, tmp) as served:
        yield served.server, served.store


def says(rec: dict[str, Any]) -> str:
    return " | ".join(e["text"] for e in rec["transcript"] if e["who"] == "agent")


def cloud(dg: FakeDeepgram, ct: FakeCartesia, llm: FakeOpenAIChat) -> dict[str, Any]:
    return {
        "asr": {"name": "deepgram", "options": {"api_key": dg.api_key, "url": dg.url,
                                                "endpointing_ms": 200}},
        "tts": {"name": "cartesia", "options": {"api_key": ct.api_key, "url": ct.url,
                                                "voice_id": "voice-uk-1"}},
        "llm": {"name": "groq", "options": {"api_key": llm.api_key, "base_url": llm.url}},
        "vad": {"name": "fake"},
    }


async def test_full_removals_call_with_deepgram_groq_and_cartesia(
    pricing_api: list[dict[str, Any]], tmp_path: Path
) -> None:
    async with (FakeDeepgram(REMOVALS_TURNS, turns="energy") as dg,
                FakeCartesia(ms_per_word=15) as ct,
                FakeOpenAIChat() as llm,
                serve(ROOT / "flows" / "removals.yaml", cloud(dg, ct, llm), tmp_path)
                as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        said_at = 0.0
        for _ in REMOVALS_TURNS:
            assert await c.wait_agent_quiet(0.3, timeout_s=15, after=said_at)
            said_at = time.monotonic()
            await c.say_audio(SPEECH)
        await asyncio.wait_for(c.closed.wait(), 20)
        rec = await wait_record(store, c.uuid)
        await c.close()
    print(says(rec))
    assert rec["slots"]["bedrooms"] == 3 and rec["slots"]["from_postcode"] == "LS11 5AB"
    assert "SR-2024" in says(rec)
    assert rec["outcome"] == "completed" and rec["hangup_by"] == "agent"
    assert [t["tool"] for t in rec["tool_calls"]] == ["get_quote", "book_move"]
    assert pricing_api[0]["bedrooms"] == 3
    callers = [e["text"] for e in rec["transcript"] if e["who"] == "caller"]
    assert callers[:2] == REMOVALS_TURNS[:2]
    # the providers really spoke their protocols
    assert dg.params["encoding"] == ["linear16"] and dg.params["sample_rate"] == ["8000"]
    assert dg.close_streams == 1  # hang-up sent CloseStream
    assert {m["output_format"]["sample_rate"] for m in ct.received if "output_format" in m} \
        == {8000}
    assert len(ct.done_contexts) >= len(REMOVALS_TURNS)


async def test_llm_driven_call_streams_groq_tokens_into_cartesia(tmp_path: Path) -> None:
    reply = "We move homes and offices across Yorkshire, and I can price yours today."
    async with (FakeDeepgram(["what do you do"], turns="energy") as dg,
                FakeCartesia(ms_per_word=15) as ct,
                FakeOpenAIChat([reply], token_s=0.005) as llm,
                serve(ROOT / "tests" / "runtime" / "flows" / "llm_talk.yaml",
                      cloud(dg, ct, llm), tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        assert await c.wait_agent_quiet(0.4, timeout_s=15)  # the LLM state's opening reply
        spoke_at = time.monotonic()
        await c.say_audio(SPEECH)
        await c.wait_agent_started(spoke_at, timeout_s=10)
        assert await c.wait_agent_quiet(0.4, timeout_s=15, after=spoke_at)
        await c.hangup()
        rec = await wait_record(store, c.uuid)
    assert len(llm.requests) >= 2, "the flow's LLM state must have called Groq each turn"
    body = llm.requests[-1]["body"]
    assert body["stream"] is True and body["model"] == "llama-3.3-70b-versatile"
    assert any(m["role"] == "user" and "what do you do" in m["content"]
               for m in body["messages"])
    assert reply in says(rec).replace(" | ", " ")
    # the streamed reply reached Cartesia token by token as ONE continued context per reply
    # (`continue: true`, closed by `continue: false`), as 8 kHz PCM
    contexts: dict[str, list[dict]] = {}
    for m in ct.received:
        if "transcript" in m:
            contexts.setdefault(m["context_id"], []).append(m)
    replies = [msgs for msgs in contexts.values() if msgs[0].get("continue") is True]
    assert len(replies) >= 2  # the opening reply and the answer
    for msgs in replies:
        assert len(msgs) > 3 and msgs[-1]["continue"] is False
        assert "".join(m["transcript"] for m in msgs).strip() == reply
    assert {m["output_format"]["encoding"] for m in ct.received if "output_format" in m} \
        == {"pcm_s16le"}
