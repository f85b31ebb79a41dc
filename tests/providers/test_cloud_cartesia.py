"""Cartesia TTS WebSocket (contexts, continuations, cancel) against a fake of the protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

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


# -- contexts as the service keeps them: flush_done, expiry 1 s after the last audio ------------


async def test_text_after_a_long_pause_is_spoken_on_a_new_context() -> None:
    # an LLM that pauses (a slow tool call) longer than the context's 1 s lifetime after its
    # last audio: the context has expired, so the rest must go on a fresh one, all of it heard
    async with FakeCartesia(ms_per_word=50) as fake:
        tts = make(fake)

        async def text() -> AsyncIterator[str]:
            yield "Hello there. "
            await asyncio.sleep(1.6)
            yield "How can I help you today?"

        audio = b"".join([pcm async for pcm in tts.synthesize_stream(text(), 8000)])
        await tts.close()
    assert len(audio) == 8 * 50 * 8 * 2  # all 8 words
    assert fake.rejected == []
    contexts = list(dict.fromkeys(m["context_id"] for m in fake.received if "transcript" in m))
    assert len(contexts) == 2
    assert fake.flushes[:1] == contexts[:1]  # the pause was flushed, so we knew when it lapsed


async def test_a_short_pause_is_flushed_and_the_context_kept() -> None:
    async with FakeCartesia(ms_per_word=50) as fake:
        tts = make(fake)
        audio = b"".join([pcm async for pcm in tts.synthesize_stream(
            tokens("Hello there. ", "How can I help?", delay=0.35), 8000)])
        await tts.close()
    assert len(audio) == 6 * 50 * 8 * 2
    assert len({m["context_id"] for m in fake.received}) == 1
    assert [m.get("flush", False) for m in fake.received] == [False, True, False, False]
    assert fake.rejected == [] and fake.expired == []


async def _raw(fake: FakeCartesia, *msgs: dict[str, Any], until: str,
               wait_s: float = 0.0) -> list[dict[str, Any]]:
    """Send raw messages on one socket; what came back up to the first `until`-type message."""
    got: list[dict[str, Any]] = []
    headers = {"X-API-Key": fake.api_key, "Cartesia-Version": "2025-04-16"}
    async with connect(fake.url, additional_headers=headers) as ws:
        for m in msgs:
            await ws.send(json.dumps(m))
            await asyncio.sleep(wait_s)
        async with asyncio.timeout(5):
            while True:
                reply = json.loads(await ws.recv())
                got.append(reply)
                if reply["type"] == until:
                    return got


def _gen(text: str, ctx: str = "c1", **extra: Any) -> dict[str, Any]:
    return {"model_id": "sonic-2", "transcript": text, "voice": {"mode": "id", "id": "v"},
            "language": "en", "context_id": ctx, "continue": True,
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
            **extra}


async def test_the_fake_requires_a_transcript() -> None:
    async with FakeCartesia() as fake:
        msg = _gen("x")
        del msg["transcript"]
        got = await _raw(fake, msg, until="error")
    assert got[-1]["status_code"] == 400 and "transcript" in got[-1]["message"]


async def test_the_fake_refuses_a_changed_voice_on_one_context() -> None:
    async with FakeCartesia() as fake:
        got = await _raw(fake, _gen("one "), _gen("two", voice={"mode": "id", "id": "other"}),
                         until="error")
    assert "voice" in got[-1]["message"]


async def test_the_fake_answers_a_flush_once_its_audio_is_out() -> None:
    async with FakeCartesia(ms_per_word=40) as fake:
        got = await _raw(fake, _gen("one two "), _gen("", flush=True), until="flush_done")
    assert [m["type"] for m in got] == ["chunk", "chunk", "flush_done"]
    assert got[-1]["flush_id"] == 1 and all(m["flush_id"] == 1 for m in got[:-1])


async def test_the_fake_expires_a_context_and_refuses_input_on_it() -> None:
    async with FakeCartesia(ms_per_word=40, context_expiry_s=0.2) as fake:
        got = await _raw(fake, _gen("one "), _gen("two"), until="error", wait_s=0.5)
    kinds = [m["type"] for m in got]
    assert kinds == ["chunk", "done", "error"] and "expired" in got[-1]["message"]
