"""Cartesia TTS WebSocket (contexts, continuations, cancel) against a fake of the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from flowagent.providers.base import ProviderError, ProviderTimeout
from flowagent.providers.cartesia import CartesiaTts
from providers.fakes import FakeCartesia

pytestmark = pytest.mark.timeout(30)


def make(fake: FakeCartesia, **opts: object) -> CartesiaTts:
    return CartesiaTts.from_options({"api_key": fake.api_key, "url": fake.url,
                                     "voice_id": "voice-123", "first_audio_timeout_s": 2,
                                     "idle_timeout_s": 2, **opts})


async def speak(tts: CartesiaTts, text: str, rate: int = 8000) -> bytes:
    return b"".join([pcm async for pcm in tts.synthesize(text, rate)])


async def tokens(*parts: str, delay: float = 0.0) -> AsyncIterator[str]:
    for p in parts:
        await asyncio.sleep(delay)
        yield p


async def test_whole_text_comes_back_as_native_8khz_pcm() -> None:
    async with FakeCartesia(ms_per_word=200) as fake:
        tts = make(fake)
        audio = await speak(tts, "Your move is booked for Tuesday.")
        await tts.close()
    assert len(audio) == 6 * 200 * 8 * 2  # 6 words x 200 ms at 8 kHz, s16
    req = fake.received[0]
    assert req["output_format"] == {"container": "raw", "encoding": "pcm_s16le",
                                    "sample_rate": 8000}
    assert req["voice"] == {"mode": "id", "id": "voice-123"}
    assert req["continue"] is False and req["transcript"] == "Your move is booked for Tuesday."
    headers = fake.requests[0][1]
    assert headers["Cartesia-Version"] and headers["X-API-Key"] == fake.api_key


async def test_token_stream_uses_one_context_with_continuations() -> None:
    async with FakeCartesia(ms_per_word=100) as fake:
        tts = make(fake)
        audio = b"".join([pcm async for pcm in tts.synthesize_stream(
            tokens("Hello ", "there, ", "how can ", "I help?", delay=0.01), 16000)])
        await tts.close()
    msgs = fake.received
    assert len({m["context_id"] for m in msgs}) == 1
    assert [m["continue"] for m in msgs] == [True, True, True, True, False]
    assert msgs[-1]["transcript"] == ""
    assert len(audio) == 6 * 100 * 16 * 2  # 6 words, 16 kHz asked for and given
    assert fake.done_contexts == [msgs[0]["context_id"]]


async def test_one_socket_serves_many_utterances_and_overlapping_ones() -> None:
    async with FakeCartesia(ms_per_word=100, chunk_s=0.005) as fake:
        tts = make(fake)
        a, b = await asyncio.gather(speak(tts, "one two three"), speak(tts, "four five"))
        c = await speak(tts, "six")
        await tts.close()
    assert (len(a), len(b), len(c)) == (3 * 1600, 2 * 1600, 1600)
    assert len(fake.requests) == 1  # one WebSocket handshake for all three


async def test_barge_in_sends_cancel_for_the_context() -> None:
    async with FakeCartesia(ms_per_word=400, chunk_s=0.02) as fake:
        tts = make(fake)
        got = 0
        gen = tts.synthesize("a long sentence that the caller will interrupt", 8000)
        async for _pcm in gen:
            got += 1
            if got == 2:
                break
        await gen.aclose()
        ctx = fake.received[0]["context_id"]
        for _ in range(50):
            if ctx in fake.cancelled:
                break
            await asyncio.sleep(0.01)
        await tts.close()
    assert fake.received[-1] == {"context_id": ctx, "cancel": True}
    assert ctx in fake.cancelled and ctx not in fake.done_contexts


async def test_cancelling_the_consumer_task_cancels_generation() -> None:
    async with FakeCartesia(ms_per_word=400, chunk_s=0.02) as fake:
        tts = make(fake)
        task = asyncio.create_task(speak(tts, "please hold while I check that for you"))
        for _ in range(500):
            if fake.received:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ctx = fake.received[0]["context_id"]
        for _ in range(50):
            if ctx in fake.cancelled:
                break
            await asyncio.sleep(0.01)
        await tts.close()
    assert ctx in fake.cancelled


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("error", ProviderError, "Invalid voice: The voice id is not valid"),
    ("drop", ProviderError, "dropped the connection"),
    ("malformed", ProviderError, "not valid JSON"),
    ("bad_audio", ProviderError, "not valid base64"),
    ("stall", ProviderTimeout, "sent no audio for 0.3 s"),
    ("http_429", ProviderError, "rate limiting"),
    ("http_500", ProviderError, "server error"),
])
async def test_faults(fault: str, exc: type, message: str) -> None:
    async with FakeCartesia(fault=fault) as fake:
        tts = make(fake, first_audio_timeout_s=0.3)
        with pytest.raises(exc, match=message):
            await speak(tts, "hello there")
        await tts.close()


async def test_a_dropped_socket_is_replaced_for_the_next_utterance() -> None:
    async with FakeCartesia(fault="drop") as fake:
        tts = make(fake)
        with pytest.raises(ProviderError):
            await speak(tts, "hello there")
        fake.fault = None
        assert len(await speak(tts, "hello")) == 200 * 8 * 2
        await tts.close()
    assert len(fake.requests) == 2


async def test_wrong_key_and_unsupported_rate() -> None:
    async with FakeCartesia() as fake:
        bad = CartesiaTts.from_options({"api_key": "nope", "url": fake.url, "voice_id": "v"})
        with pytest.raises(ProviderError, match=r"rejected the API key"):
            await speak(bad, "hi")
        with pytest.raises(ProviderError, match=r"cannot produce 11025 Hz"):
            await speak(make(fake), "hi", rate=11025)


async def test_llm_failure_mid_stream_ends_the_utterance_with_that_error() -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Hello "
        raise ProviderError("the LLM fell over")

    async with FakeCartesia() as fake:
        tts = make(fake)
        with pytest.raises(ProviderError, match=r"the LLM fell over"):
            async for _ in tts.synthesize_stream(broken(), 8000):
                pass
        await tts.close()
