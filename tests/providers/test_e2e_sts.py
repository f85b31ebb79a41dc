"""Whole phone calls over AudioSocket with a speech-to-speech flow on the OpenAI Realtime fake.

The caller is `AudioSocketCaller` (real TCP, real AudioSocket frames, silence streamed between
turns as Asterisk does); the server is the real `AudioSocketServer`; the flow is
`flows/removals_sts.yaml` with `providers: sts: openai-realtime` pointed at
`FakeOpenAIRealtime`, which speaks the Realtime wire protocol (session.update, base64 G.711
audio both ways, server VAD on the caller's energy, transcripts, function calls) and sends its
audio faster than real time, as the real service does — so pacing is ours to prove. The removals
pricing API is a loopback aiohttp server. Nothing on our side is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.server.store_sqlite import SqliteStore
from providers.fakes import FakeOpenAIRealtime
from providers.records import wait_record
from providers.serving import serve_flow, speech_runs

pytestmark = pytest.mark.timeout(60)

FLOW = Path(__file__).resolve().parent / "flows" / "removals_sts.yaml"
SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)  # "the caller talks"
GREETING = "Hello, you're through to Swift Removals. How can I help?"


@contextlib.asynccontextmanager
async def serve(fake: FakeOpenAIRealtime, tmp: Path, flow: Path = FLOW
                ) -> AsyncIterator[tuple[Any, SqliteStore]]:
    overrides = {"sts": {"name": "openai-realtime",
                         "options": {"api_key": fake.api_key, "url": fake.url}}}
    async with serve_flow(flow, overrides, tmp) as served:
        yield served.server, served.store


def lines(rec: dict[str, Any], who: str) -> list[str]:
    return [e["text"] for e in rec["transcript"] if e["who"] == who]


async def talk(c: AudioSocketCaller, after: float) -> float:
    """Wait for the agent to finish its turn, then say something; returns when we spoke."""
    assert await c.wait_agent_quiet(0.3, timeout_s=10, after=after)
    spoke = time.monotonic()
    await c.say_audio(SPEECH)
    return spoke


async def test_full_removals_call_on_openai_realtime(
    pricing_api: list[dict[str, Any]], tmp_path: Path
) -> None:
    script: list[Any] = [
        GREETING,
        "Of course. Where are you moving from and to, on what date, and how many bedrooms?",
        {"tool": "get_quote", "arguments": {"from_postcode": "ls11 5ab", "to_postcode": "M1 1AE",
                                            "move_date": "next Friday", "bedrooms": 3}},
        "The price for your move is four hundred and fifty pounds. Anything else?",
        {"say": "Thanks for calling Swift Removals. Goodbye!", "tool": "hangup"},
    ]
    callers = ["I'd like a quote for a house move please",
               "From LS11 5AB to M1 1AE next Friday, three bedrooms", "No thanks, that's all"]
    async with (FakeOpenAIRealtime(script, user_transcripts=callers, turns="energy") as fake,
                serve(fake, tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        spoke = 0.0
        for _ in callers:
            spoke = await talk(c, spoke)
        await asyncio.wait_for(c.closed.wait(), 15)
        rec = await wait_record(store, c.uuid)
        await c.close()

    # the call as the record tells it
    assert rec["outcome"] == "completed" and rec["hangup_by"] == "agent"
    assert lines(rec, "caller") == callers
    agent = lines(rec, "agent")
    assert agent[0] == GREETING and agent[-1] == "Thanks for calling Swift Removals. Goodbye!"
    assert "four hundred and fifty pounds" in " ".join(agent)
    assert [t["tool"] for t in rec["tool_calls"]] == ["get_quote"]
    call = rec["tool_calls"][0]
    assert call["ok"] is True and call["status"] == 200
    body = call["request"]["json"]
    assert body["from_postcode"] == "LS11 5AB" and body["to_postcode"] == "M1 1AE"
    assert body["bedrooms"] == 3 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["date"])
    assert call["request"]["headers"]["Authorization"] == "[redacted]"
    assert rec["slots"]["bedrooms"] == 3 and rec["vars"]["price"] == 450
    # the firm's API got the slot values, normalised by the slot parsers
    assert pricing_api == [body]
    # the model got the flow: instructions, tools, the greeting, the tool's output
    sess = fake.session
    assert "house-removals firm" in sess["instructions"]
    assert "from_postcode" in sess["instructions"]
    assert {t["name"] for t in sess["tools"]} == {"get_quote", "transfer", "hangup"}
    quote = next(t for t in sess["tools"] if t["name"] == "get_quote")
    assert set(quote["parameters"]["required"]) == {"from_postcode", "to_postcode",
                                                    "bedrooms", "move_date"}
    assert sess["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert GREETING in fake.response_instructions[0]
    assert len(fake.tool_outputs) == 1
    assert json.loads(fake.tool_outputs[0]["output"]) == {"price": 450, "quote_id": "Q-1001"}
    # the line: only 8 kHz audio frames of 20 ms, a hang-up frame at the end, and the model's
    # audio (sent faster than real time) paced out at one frame per 20 ms
    assert c.stats.bad_kinds == [] and c.stats.zero_length_audio == 0 and c.stats.hangup_frame
    assert {(r.kind, r.size) for r in c.stats.frames} == {(0x10, 320)}
    runs = [r for r in speech_runs(c) if len(r) >= 10]
    assert len(runs) >= 4  # greeting, question, price, goodbye
    for run in runs:
        assert run[-1] - run[0] >= (len(run) - 1) * 0.02 * 0.6, "audio was not paced"


async def test_caller_interrupting_flushes_our_playback(tmp_path: Path) -> None:
    long_text = ("We move homes and offices all over Yorkshire and the North West, and we can "
                 "pack everything for you, store it, and take it anywhere in the country.")
    script: list[Any] = [GREETING, {"say": long_text, "audio_ms": 5000}, "Sure, go ahead."]
    async with (FakeOpenAIRealtime(script, user_transcripts=["what do you do", "sorry, one thing"],
                                   turns="energy") as fake,
                serve(fake, tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        spoke = await talk(c, 0.0)
        started = await c.wait_agent_started(spoke, timeout_s=10)  # the 5 s answer begins
        await asyncio.sleep(0.8)
        barge = time.monotonic()
        c.queue_audio(SPEECH)  # the caller talks over it
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=started)
        long_frames = sum(1 for r in c.stats.frames if r.speech and started <= r.at < barge + 0.5)
        await c.wait_agent_started(barge + 0.5, timeout_s=10)  # the answer to the interruption
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=barge + 0.5)
        await c.hangup()
        rec = await wait_record(store, c.uuid)
    # 5 s is 250 frames; the caller cut in after ~0.8 s, and our buffered audio stopped at once
    assert long_frames < 100
    line = next(e for e in rec["transcript"] if e["who"] == "agent" and e["text"] == long_text)
    assert line["heard"] is not None and len(line["heard"]) < len(long_text) / 2
    assert "caller interrupted" in lines(rec, "system")
    assert lines(rec, "agent")[-1] == "Sure, go ahead."
    assert rec["hangup_by"] == "caller" and rec["outcome"] == "hangup_by_caller"
    assert fake.responses == 3


async def test_provider_drop_mid_call_runs_the_error_handler(tmp_path: Path) -> None:
    async with (FakeOpenAIRealtime([GREETING, "Sure, let me see."], turns="energy",
                                   fault="drop", fault_after=1) as fake,
                serve(fake, tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        await talk(c, 0.0)  # the second response drops the connection mid-audio
        await asyncio.wait_for(c.closed.wait(), 10)
        rec = await wait_record(store, c.uuid)
        await c.close()
    assert fake.responses == 2
    # the flow's error handler: `go: to_human` -> a transfer, with the record written
    assert rec["outcome"] == "transferred" and rec["transfer_target"] == "6001"
    assert rec["hangup_by"] == "agent" and c.stats.hangup_frame
    assert any(e.startswith("sts:") for e in rec["errors"])
    assert "handler event error" in lines(rec, "system")
    assert c.stats.bad_kinds == []


async def test_keypad_zero_transfers_with_the_flows_words(tmp_path: Path) -> None:
    async with (FakeOpenAIRealtime([GREETING, "Putting you through to the team."],
                                   turns="energy") as fake,
                serve(fake, tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=10)
        pressed = time.monotonic()
        c.send_dtmf("0")
        await c.wait_agent_started(pressed, timeout_s=10)  # the model says the flow's words
        await asyncio.wait_for(c.closed.wait(), 10)
        rec = await wait_record(store, c.uuid)
        await c.close()
    assert "Putting you through to the team." in fake.response_instructions[-1]
    assert rec["outcome"] == "transferred" and rec["transfer_target"] == "6001"
    assert lines(rec, "agent")[-1] == "Putting you through to the team."
    assert c.stats.hangup_frame


async def test_refused_session_still_answers_with_the_error_handler(tmp_path: Path) -> None:
    async with (FakeOpenAIRealtime(fault="refuse_session") as fake,
                serve(fake, tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        await asyncio.wait_for(c.closed.wait(), 10)
        rec = await wait_record(store, c.uuid)
        await c.close()
    assert rec["outcome"] == "transferred" and rec["transfer_target"] == "6001"
    assert any("refused the session" in e for e in rec["errors"])
    assert c.agent_speech_frames > 0  # a tone, not a dead line, before the transfer
    assert c.stats.hangup_frame


async def test_max_call_length_runs_the_max_duration_handler(tmp_path: Path) -> None:
    short = tmp_path / "short.yaml"
    short.write_text(FLOW.read_text().replace("max_call_s: 300", "max_call_s: 2"))
    async with (FakeOpenAIRealtime([GREETING, "We've run out of time."], turns="energy") as fake,
                serve(fake, tmp_path, short) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        await asyncio.wait_for(c.closed.wait(), 15)
        rec = await wait_record(store, c.uuid)
        await c.close()
    assert rec["outcome"] == "max_duration" and rec["hangup_by"] == "agent"
    assert "run out of time on this call" in fake.response_instructions[-1]
    assert lines(rec, "agent")[-1] == "We've run out of time."
