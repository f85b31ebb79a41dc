"""ElevenLabs stream-input WebSocket against a fake of the protocol (ulaw_8000 and pcm_*)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from flowagent.providers.base import ProviderError, ProviderTimeout
from flowagent.providers.cloudutil import pcm_to_ulaw, ulaw_to_pcm
from flowagent.providers.elevenlabs import ElevenLabsTts
from providers.fakes import FakeElevenLabs
from providers.fakes.base import tone_pcm
from providers.fakes.fake_elevenlabs import pcm_to_ulaw_reference

pytestmark = pytest.mark.timeout(30)


def make(fake: FakeElevenLabs, **opts: object) -> ElevenLabsTts:
    return ElevenLabsTts.from_options({"api_key": fake.api_key, "url": fake.url,
                                       "voice_id": "voice-abc", "first_audio_timeout_s": 2,
                                       "idle_timeout_s": 2, **opts})


async def speak(tts: ElevenLabsTts, text: str, rate: int = 8000) -> bytes:
    return b"".join([pcm async for pcm in tts.synthesize(text, rate)])


async def tokens(*parts: str) -> AsyncIterator[str]:
    for p in parts:
        await asyncio.sleep(0.005)
        yield p


def test_ulaw_codec_matches_a_reference_encoder_and_roundtrips() -> None:
    pcm = tone_pcm(100, 8000) + np.arange(-32768, 32767, 97, dtype="<i2").tobytes()
    assert pcm_to_ulaw(pcm) == pcm_to_ulaw_reference(pcm)
    back = np.frombuffer(ulaw_to_pcm(pcm_to_ulaw(pcm)), dtype="<i2").astype(int)
    orig = np.frombuffer(pcm, dtype="<i2").astype(int)
    assert np.all(np.abs(back - orig) <= np.abs(orig) / 16 + 16)  # G.711 step size


async def test_ulaw_8000_is_expanded_to_pcm_at_8khz() -> None:
    async with FakeElevenLabs(ms_per_word=200) as fake:
        audio = await speak(make(fake), "Thanks for calling Swift Removals.")
    assert len(audio) == 5 * 200 * 8 * 2
    level = np.abs(np.frombuffer(audio, dtype="<i2")).max()
    assert 7000 < level < 9000  # the fake's tone amplitude survived the μ-law round trip
    assert fake.params["output_format"] == ["ulaw_8000"]
    assert fake.params["model_id"] == ["eleven_flash_v2_5"]
    init = fake.received[0]
    assert init["text"] == " " and init["voice_settings"]["stability"] == 0.5
    assert fake.received[-1] == {"text": ""}
    assert fake.texts == ["Thanks for calling Swift Removals."]


async def test_pcm_16000_is_resampled_to_the_rate_we_ask_for() -> None:
    async with FakeElevenLabs(ms_per_word=250) as fake:
        audio = await speak(make(fake, output_format="pcm_16000"), "one two", rate=8000)
    assert abs(len(audio) - 2 * 250 * 8 * 2) <= 64  # resampler edge samples


async def test_token_stream_sends_whole_words_ending_with_a_space() -> None:
    async with FakeElevenLabs() as fake:
        tts = make(fake)
        audio = b"".join([pcm async for pcm in tts.synthesize_stream(
            tokens("We can ", "do Tues", "day morn", "ing."), 8000)])
    sent = [m["text"] for m in fake.received[1:]]
    assert sent[:-1] == ["We can ", "do ", "Tuesday ", "morning. "]
    assert all(t.endswith(" ") for t in sent[:-1]) and sent[-1] == ""
    assert fake.received[-2]["flush"] is True
    assert fake.texts == ["We can do Tuesday morning."]
    assert len(audio) == 5 * 200 * 8 * 2


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("quota", ProviderError, "exceeded your quota|1008"),
    ("drop", ProviderError, "dropped the connection"),
    ("malformed", ProviderError, "not valid JSON"),
    ("stall", ProviderTimeout, "sent no audio for 0.3 s"),
    ("http_500", ProviderError, "server error"),
])
async def test_faults(fault: str, exc: type, message: str) -> None:
    async with FakeElevenLabs(fault=fault) as fake:
        with pytest.raises(exc, match=message):
            await speak(make(fake, first_audio_timeout_s=0.3), "hello there")


async def test_wrong_key_is_reported_from_the_error_message() -> None:
    async with FakeElevenLabs() as fake:
        tts = ElevenLabsTts.from_options({"api_key": "bad", "url": fake.url, "voice_id": "v"})
        with pytest.raises(ProviderError, match=r"Invalid API key|1008"):
            await speak(tts, "hi")


async def test_cancel_closes_the_socket() -> None:
    async with FakeElevenLabs(ms_per_word=500, chunk_s=0.02) as fake:
        gen = make(fake).synthesize("a long answer the caller interrupts", 8000)
        async for _ in gen:
            break
        await gen.aclose()
        for _ in range(50):
            if fake.connections[0].state.name == "CLOSED":
                break
            await asyncio.sleep(0.01)
        assert fake.connections[0].state.name == "CLOSED"


def test_bad_output_format_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"output_format"):
        ElevenLabsTts.from_options({"output_format": "mp3_44100_128"})


async def test_a_slow_llm_does_not_let_the_socket_time_out() -> None:
    # ElevenLabs closes after `inactivity_timeout` (20 s; shortened here) without new text;
    # a single space keeps it open while the LLM is busy (a tool call)
    async with FakeElevenLabs(ms_per_word=50, inactivity_s=0.5) as fake:
        tts = make(fake, keepalive_s=0.2)

        async def text() -> AsyncIterator[str]:
            yield "Let me check. "
            await asyncio.sleep(1.2)
            yield "It is 450 pounds."

        audio = b"".join([pcm async for pcm in tts.synthesize_stream(text(), 8000)])
    assert fake.inactivity_closes == 0
    assert " ".join(fake.texts[0].split()) == "Let me check. It is 450 pounds."
    assert len(audio) == 7 * 50 * 8 * 2
    assert sum(1 for m in fake.received if m.get("text") == " ") >= 3  # init + keep-alives


async def test_the_fake_closes_a_socket_left_without_text() -> None:
    async with FakeElevenLabs(inactivity_s=0.3) as fake:
        tts = make(fake, keepalive_s=30)

        async def text() -> AsyncIterator[str]:
            yield "Let me check. "
            await asyncio.sleep(2)
            yield "Done."

        with pytest.raises(ProviderError, match="Have not received new text"):
            async for _ in tts.synthesize_stream(text(), 8000):
                pass
    assert fake.inactivity_closes == 1
