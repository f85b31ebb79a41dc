"""After a barge-in, the LLM's history holds what the caller heard of its reply, not what it
generated: checked on the next request's body at a fake OpenAI-compatible server (real HTTP on
loopback), over both transports."""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from providers.fakes import FakeOpenAIChat

from flowagent import audio
from flowagent.server.runtime import RuntimeConfig

pytestmark = pytest.mark.timeout(60)

FLOWS = Path(__file__).parent / "flows"
LONG_REPLY = ("We move homes and offices across Yorkshire, we pack everything for you, we store "
              "what does not fit, and we can price your move today if you tell me the postcodes.")


def overrides(llm: FakeOpenAIChat) -> dict[str, Any]:
    return {"llm": {"name": "groq", "options": {"api_key": llm.api_key, "base_url": llm.url}},
            "asr": {"name": "fake", "options": {"transcripts": ["tell me more"]}},
            "tts": {"name": "fake", "options": {"ms_per_word": 60}},
            "vad": {"name": "fake"}}


def assistant_turns(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "assistant"]


async def barge_in_and_wait_for_the_next_request(c: Any, llm: FakeOpenAIChat, rate: int,
                                                 say: Any) -> None:
    await c.wait_agent_started(0, timeout_s=10)
    await asyncio.sleep(1.0)  # the whole reply was generated long ago; ~1 s of it was heard
    say(audio.tone(400, 300, rate, amplitude=0.4))
    deadline = time.monotonic() + 10
    while len(llm.requests) < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - a fake's list
        await asyncio.sleep(0.02)
    assert len(llm.requests) >= 2, "the caller's words must have reached the LLM"


def check_history(llm: FakeOpenAIChat, rec: dict[str, Any]) -> None:
    cut = [e for e in rec["transcript"] if e["who"] == "agent" and e["heard"] is not None]
    assert cut, rec["transcript"]
    heard = cut[0]["heard"]
    assert heard and LONG_REPLY.startswith(heard) and len(heard) < len(LONG_REPLY) * 0.8
    second = llm.requests[1]["body"]
    # the assistant turn is the part the caller heard, followed by what the caller then said
    assert assistant_turns(second) == [heard]
    assert second["messages"][-1] == {"role": "user", "content": "tell me more"}


async def test_history_after_a_barge_in_holds_the_heard_part_over_audiosocket(
        harness: Any) -> None:
    async with FakeOpenAIChat([LONG_REPLY, "Happy to."], token_s=0.002) as llm:
        h = await harness(FLOWS / "llm_talk.yaml",
                          config=RuntimeConfig(provider_overrides=overrides(llm)))
        c = h.caller()
        await c.connect()
        await barge_in_and_wait_for_the_next_request(c, llm, 8000, c.queue_audio)
        await c.hangup()
        rec = await h.wait_record(c.uuid)
    check_history(llm, rec)


async def test_history_after_a_barge_in_holds_the_heard_part_over_chan_websocket(
        harness: Any) -> None:
    async with FakeOpenAIChat([LONG_REPLY, "Happy to."], token_s=0.002) as llm:
        h = await harness(FLOWS / "llm_talk.yaml",
                          config=RuntimeConfig(provider_overrides=overrides(llm)))
        call_id = str(uuidlib.uuid4())
        async with h.ws_caller(params={"uuid": call_id}, media="slin16") as c:
            await barge_in_and_wait_for_the_next_request(c, llm, 16000, c.say)
        rec = await h.wait_record(call_id)
    check_history(llm, rec)
