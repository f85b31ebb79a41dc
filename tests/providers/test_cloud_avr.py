"""AVR-compatible ASR/LLM/TTS/STS providers against fakes of AVR's provider services."""

from __future__ import annotations

import asyncio

import pytest

from flowagent.providers.avr import AvrAsr, AvrLlm, AvrSts, AvrTts, JsonStream
from flowagent.providers.base import (
    LlmMessage,
    LlmToolCall,
    ProviderError,
    ProviderTimeout,
    StsEvent,
)
from providers.fakes import FakeAvr

pytestmark = pytest.mark.timeout(30)

FRAME = bytes(320)


# -- ASR ------------------------------------------------------------------------------------


async def test_asr_streams_audio_up_and_transcripts_down() -> None:
    async with FakeAvr(transcripts=["I'd like a quote", "three bedrooms"]) as fake:
        asr = AvrAsr.from_options({"url": fake.asr_url})
        stream = await asr.open_stream(8000, "en")
        got = []
        for _ in range(2):
            for _ in range(25):
                await stream.send_audio(FRAME)
            async with asyncio.timeout(5):
                async for t in stream.transcripts():
                    got.append(t)
                    break
        await stream.close()
        await asr.close()
    assert [t.text for t in got] == ["I'd like a quote", "three bedrooms"]
    assert all(t.is_final and t.end_of_turn for t in got)
    assert fake.asr_bytes == 50 * 320


async def test_asr_16khz_call_is_sent_as_8khz() -> None:
    async with FakeAvr() as fake:
        asr = AvrAsr.from_options({"url": fake.asr_url})
        stream = await asr.open_stream(16000, "en")
        for _ in range(50):
            await stream.send_audio(bytes(640))
        await stream.close()
        await asr.close()
    assert abs(fake.asr_bytes - 50 * 320) <= 400


@pytest.mark.parametrize(("fault", "message"), [
    ("http_500", "server error .HTTP 500.: Error receiving audio stream"),
    ("drop", "failed|ended the stream"),
])
async def test_asr_faults(fault: str, message: str) -> None:
    async with FakeAvr(fault=fault) as fake:
        asr = AvrAsr.from_options({"url": fake.asr_url})
        stream = await asr.open_stream(8000, "en")
        with pytest.raises(ProviderError, match=message):
            for _ in range(60):
                await stream.send_audio(FRAME)
            async with asyncio.timeout(5):
                async for _t in stream.transcripts():
                    pass
        await stream.close()
        await asr.close()


async def test_asr_unreachable() -> None:
    asr = AvrAsr.from_options({"url": "http://127.0.0.1:9/x"})
    stream = await asr.open_stream(8000, "en")
    with pytest.raises(ProviderError, match=r"AVR ASR service failed"):
        async with asyncio.timeout(5):
            async for _t in stream.transcripts():
                pass
    await stream.close()
    await asr.close()


# -- LLM ------------------------------------------------------------------------------------


async def test_llm_prompt_stream_round_trip() -> None:
    msgs = (LlmMessage("system", "be nice"), LlmMessage("user", "hi"),
            LlmMessage("assistant", "", tool_calls=(LlmToolCall("c", "t", {}),)),
            LlmMessage("tool", "{}", tool_call_id="c"))
    async with FakeAvr(replies=["Hello, how can I help?"]) as fake:
        llm = AvrLlm.from_options({"url": fake.llm_url, "uuid": "call-1"})
        chunks = [c async for c in llm.stream(msgs)]
        await llm.close()
    assert "".join(c.text for c in chunks) == "Hello, how can I help?"
    assert chunks[-1].finish_reason == "stop"
    body = fake.requests[0]["body"]
    assert body["uuid"] == "call-1"
    assert body["messages"] == [{"role": "system", "content": "be nice"},
                                {"role": "user", "content": "hi"}]


def test_json_stream_handles_back_to_back_split_and_ndjson() -> None:
    dec = JsonStream()
    assert dec.feed('{"type":"text","content":"a"}{"type":"te') == [
        {"type": "text", "content": "a"}]
    assert dec.feed('xt","content":"b"}\n{"type":"text","content":"c"}') == [
        {"type": "text", "content": "b"}, {"type": "text", "content": "c"}]
    assert dec.feed('data: {"type":"text","content":"d"}\n\n') == [
        {"type": "text", "content": "d"}]
    dec.finish()


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("http_500", ProviderError, "server error .HTTP 500.: Error communicating with OpenAI"),
    ("malformed", ProviderError, "not JSON"),
    ("drop", ProviderError, "dropped|middle of a JSON object"),
    ("stall", ProviderTimeout, "sent no reply for 0.3 s"),
])
async def test_llm_faults(fault: str, exc: type, message: str) -> None:
    async with FakeAvr(fault=fault) as fake:
        llm = AvrLlm.from_options({"url": fake.llm_url, "first_token_timeout_s": 0.3})
        with pytest.raises(exc, match=message):
            async for _ in llm.stream((LlmMessage("user", "hi"),)):
                pass
        await llm.close()


# -- TTS ------------------------------------------------------------------------------------


async def test_tts_streams_8khz_pcm() -> None:
    async with FakeAvr(ms_per_word=200) as fake:
        tts = AvrTts.from_options({"url": fake.tts_url})
        audio = b"".join([p async for p in tts.synthesize("See you on Friday.", 8000)])
        await tts.close()
    assert len(audio) == 4 * 200 * 8 * 2
    assert fake.requests[0]["body"] == {"text": "See you on Friday."}


async def test_tts_stream_is_chunked_into_sentences() -> None:
    async def tokens():  # type: ignore[no-untyped-def]
        for t in ["Thanks for calling. ", "We move ", "homes and offices ", "all over town."]:
            yield t

    async with FakeAvr() as fake:
        tts = AvrTts.from_options({"url": fake.tts_url})
        audio = b"".join([p async for p in tts.synthesize_stream(tokens(), 16000)])
        await tts.close()
    texts = [r["body"]["text"] for r in fake.requests]
    assert " ".join(texts) == "Thanks for calling. We move homes and offices all over town."
    assert abs(len(audio) - 11 * 200 * 16 * 2) <= 200 * len(texts)  # 11 words, upsampled


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("http_500", ProviderError, "Error processing text-to-speech"),
    ("drop", ProviderError, "dropped the connection"),
    ("stall", ProviderTimeout, "sent no audio for 0.3 s"),
])
async def test_tts_faults(fault: str, exc: type, message: str) -> None:
    async with FakeAvr(fault=fault) as fake:
        tts = AvrTts.from_options({"url": fake.tts_url, "first_audio_timeout_s": 0.3})
        with pytest.raises(exc, match=message):
            async for _ in tts.synthesize("one two three four five six seven", 8000):
                pass
        await tts.close()


# -- STS ------------------------------------------------------------------------------------


async def sts_until(session, kind: str) -> list[StsEvent]:  # type: ignore[no-untyped-def]
    out: list[StsEvent] = []
    async with asyncio.timeout(5):
        async for ev in session.events():
            out.append(ev)
            if ev.kind == kind:
                return out
    raise AssertionError(f"no {kind}: {[e.kind for e in out]}")


async def test_sts_init_audio_and_transcripts() -> None:
    async with FakeAvr(transcripts=["hello"], sts_script=["Hi there, how can I help?"]) as fake:
        session = await AvrSts.from_options({"url": fake.sts_url, "uuid": "u-1"}).connect(
            "ignored", (), 8000)
        for _ in range(25):
            await session.send_audio(FRAME)
        events = await sts_until(session, "transcript_agent")
        await session.close()
    assert fake.sts_uuid == "u-1"
    assert fake.sts_received[0] == {"type": "init", "uuid": "u-1"}
    assert events[0].kind == "transcript_user" and events[0].text == "hello"
    audio = b"".join(e.audio for e in events if e.kind == "audio")
    assert len(audio) == 6 * 200 * 8 * 2
    assert events[-1].text == "Hi there, how can I help?"


async def test_sts_interruption_and_tool_invocation() -> None:
    script = ["a very long answer that goes on and on", {"tool": "avr_transfer",
                                                         "parameters": {"to": "sales"}}]
    async with FakeAvr(sts_script=script, chunk_s=0.02) as fake:
        session = await AvrSts.from_options({"url": fake.sts_url}).connect("", (), 8000)
        for _ in range(25):
            await session.send_audio(FRAME)
        await sts_until(session, "audio")
        await session.send_audio(FRAME)  # caller talks over it
        await sts_until(session, "interrupted")
        for _ in range(25):
            await session.send_audio(FRAME)
        events = await sts_until(session, "tool_call")
        await session.send_tool_result(events[-1].tool_call.id, {"ok": True})  # type: ignore[union-attr]
        for _ in range(50):
            if fake.tool_results:
                break
            await asyncio.sleep(0.01)
        await session.close()
    assert events[-1].tool_call == LlmToolCall("inv_1", "avr_transfer", {"to": "sales"})
    assert fake.tool_results == [{"type": "tool_result", "invocationId": "inv_1",
                                  "result": '{"ok": true}'}]


@pytest.mark.parametrize(("fault", "kind_or_error"), [
    ("sts_error", "error"),
    ("drop", "dropped the connection"),
    ("malformed", "not valid JSON"),
])
async def test_sts_faults(fault: str, kind_or_error: str) -> None:
    async with FakeAvr(fault=fault) as fake:
        session = await AvrSts.from_options({"url": fake.sts_url}).connect("", (), 8000)
        for _ in range(25):
            await session.send_audio(FRAME)
        if kind_or_error == "error":
            events = await sts_until(session, "error")
            assert "provider failed" in events[-1].text
        else:
            with pytest.raises(ProviderError, match=kind_or_error):
                await sts_until(session, "transcript_agent")
        await session.close()


async def test_sts_unreachable() -> None:
    with pytest.raises(ProviderError, match=r"Could not reach"):
        await AvrSts.from_options({"url": "ws://127.0.0.1:9"}).connect("", (), 8000)


