"""OpenAI Realtime STS against a fake of the Realtime WebSocket protocol."""

from __future__ import annotations

import asyncio

import pytest

from flowagent.providers.base import (
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
    StsEvent,
)
from flowagent.providers.openai_realtime import OpenAIRealtimeSession, OpenAIRealtimeSts
from providers.fakes import FakeOpenAIRealtime

pytestmark = pytest.mark.timeout(30)

QUOTE = LlmToolSpec("get_quote", "Price a move",
                    {"type": "object", "properties": {"bedrooms": {"type": "integer"}}})
FRAME = bytes(320)  # 20 ms at 8 kHz


def make(fake: FakeOpenAIRealtime, **opts: object) -> OpenAIRealtimeSts:
    return OpenAIRealtimeSts.from_options({"api_key": fake.api_key, "url": fake.url, **opts})


async def until(session: OpenAIRealtimeSession, kind: str) -> list[StsEvent]:
    """Events up to and including the first of `kind`."""
    out: list[StsEvent] = []
    async with asyncio.timeout(5):
        async for ev in session.events():
            out.append(ev)
            if ev.kind == kind:
                return out
    raise AssertionError(f"stream ended before {kind}: {[e.kind for e in out]}")


async def talk(session: OpenAIRealtimeSession, frames: int) -> None:
    for _ in range(frames):
        await session.send_audio(FRAME)


async def test_session_is_configured_for_telephone_audio_and_tools() -> None:
    async with FakeOpenAIRealtime() as fake:
        session = await make(fake, voice="verse").connect("You book removals.", (QUOTE,), 8000)
        await session.close()
    sess = fake.session
    assert sess["type"] == "realtime" and sess["instructions"] == "You book removals."
    assert sess["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert sess["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "verse"}
    assert sess["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert sess["tools"] == [{"type": "function", "name": "get_quote",
                              "description": "Price a move", "parameters": QUOTE.parameters}]
    assert "model=gpt-realtime" in fake.requests[0][0]


async def test_a_spoken_turn_yields_transcripts_and_8khz_audio() -> None:
    async with FakeOpenAIRealtime(["We can move you on Friday."], user_transcripts=["Friday?"],
                                  audio_ms=400) as fake:
        session = await make(fake).connect("Be brief.", (), 8000)
        await talk(session, 13)  # 260 ms of μ-law = 2080 bytes; the fake's turn is 4000 bytes
        await talk(session, 13)
        events = await until(session, "done")
        await session.close()
    kinds = [e.kind for e in events]
    assert kinds[0] == "interrupted"  # speech_started always reported
    assert "transcript_user" in kinds
    assert next(e.text for e in events if e.kind == "transcript_user") == "Friday?"
    audio = b"".join(e.audio for e in events if e.kind == "audio")
    assert abs(len(audio) - 400 * 8 * 2) <= 64
    final = [e for e in events if e.kind == "transcript_agent" and not e.data["partial"]]
    assert final[0].text == "We can move you on Friday."
    assert fake.audio_in == 26 * 160  # μ-law: one byte per sample at 8 kHz, no resampling


async def test_24khz_pcm_format_is_resampled_both_ways() -> None:
    async with FakeOpenAIRealtime(audio_ms=300, bytes_per_turn=40000) as fake:
        session = await make(fake, audio_format="pcm").connect("", (), 8000)
        await talk(session, 50)  # 1 s at 8 kHz -> 48000 bytes at 24 kHz
        events = await until(session, "done")
        await session.close()
    assert fake.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert abs(fake.audio_in - 48000) <= 2048  # minus the stream resampler's ~20 ms delay
    audio = b"".join(e.audio for e in events if e.kind == "audio")
    assert abs(len(audio) - 300 * 8 * 2) <= 64


async def test_function_call_round_trip() -> None:
    script = [{"tool": "get_quote", "arguments": {"bedrooms": 3}}, "That is 600 pounds."]
    async with FakeOpenAIRealtime(script) as fake:
        session = await make(fake).connect("", (QUOTE,), 8000)
        await talk(session, 30)
        events = await until(session, "tool_call")
        call = events[-1].tool_call
        assert call == LlmToolCall("call_1", "get_quote", {"bedrooms": 3})
        await session.send_tool_result(call.id, {"price": 600})
        events = await until(session, "transcript_agent")
        more = await until(session, "done")
        await session.close()
    assert fake.tool_outputs == [{"type": "function_call_output", "call_id": "call_1",
                                  "output": '{"price": 600}'}]
    assert any(e.kind == "audio" for e in events + more)
    assert [m["type"] for m in fake.received].count("response.create") == 1


async def test_our_own_vad_commits_and_asks_for_a_response() -> None:
    async with FakeOpenAIRealtime(["Sure."]) as fake:
        session = await make(fake, turn_detection="none").connect("", (), 8000)
        await talk(session, 5)
        await session.commit_turn()
        events = await until(session, "done")
        await session.close()
    assert fake.session["audio"]["input"]["turn_detection"] is None
    assert [m["type"] for m in fake.received][-2:] == ["input_audio_buffer.commit",
                                                       "response.create"]
    assert any(e.kind == "audio" for e in events)


async def test_barge_in_interrupts_the_response() -> None:
    async with FakeOpenAIRealtime(["a long answer"], audio_ms=2000, chunk_s=0.02) as fake:
        session = await make(fake).connect("", (), 8000)
        await talk(session, 30)
        await until(session, "audio")
        await talk(session, 30)  # caller talks over the agent
        events = await until(session, "done")
        await session.close()
    interrupted = [e for e in events if e.kind == "interrupted"]
    assert interrupted and interrupted[0].data["agent_was_speaking"] is True
    assert events[-1].data["status"] == "cancelled"
    assert fake.cancelled_responses == 1


async def test_interrupt_without_an_active_response_is_harmless() -> None:
    async with FakeOpenAIRealtime() as fake:
        session = await make(fake, turn_detection="none").connect("", (), 8000)
        session._response_active = True  # a cancel racing the end of a response
        await session.interrupt()
        await talk(session, 2)
        await session.commit_turn()
        events = await until(session, "done")
        await session.close()
    assert not [e for e in events if e.kind == "error"]


async def test_error_events_are_reported_but_the_session_continues() -> None:
    async with FakeOpenAIRealtime(["one", "two"], fault="error_event") as fake:
        session = await make(fake).connect("", (), 8000)
        await talk(session, 30)
        events = await until(session, "error")
        assert "server had an error" in events[-1].text
        await talk(session, 30)
        await until(session, "done")
        await session.close()


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("http_429", ProviderError, "rate limiting"),
    ("http_500", ProviderError, "server error"),
    ("stall", ProviderTimeout, "did not set up the session within 0.3 s"),
    ("refuse_session", ProviderError, "refused the session: This key may not use realtime"),
])
async def test_setup_faults(fault: str, exc: type, message: str) -> None:
    async with FakeOpenAIRealtime(fault=fault) as fake:
        with pytest.raises(exc, match=message):
            await make(fake, setup_timeout_s=0.3).connect("", (), 8000)


@pytest.mark.parametrize(("fault", "message"), [
    ("drop", "dropped the connection"),
    ("malformed", "not valid JSON"),
])
async def test_mid_session_faults(fault: str, message: str) -> None:
    async with FakeOpenAIRealtime(fault=fault) as fake:
        session = await make(fake).connect("", (), 8000)
        await talk(session, 30)
        with pytest.raises(ProviderError, match=message):
            await until(session, "done")
        await session.close()


async def test_wrong_key() -> None:
    async with FakeOpenAIRealtime() as fake:
        sts = OpenAIRealtimeSts.from_options({"api_key": "bad", "url": fake.url})
        with pytest.raises(ProviderError, match=r"rejected the API key"):
            await sts.connect("", (), 8000)
