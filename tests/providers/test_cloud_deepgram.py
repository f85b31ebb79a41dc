"""Deepgram streaming ASR against a fake that speaks Deepgram's live protocol."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit

import pytest

from flowagent.providers.base import ProviderError, Transcript
from flowagent.providers.cloudutil import ws_connect
from flowagent.providers.deepgram import DeepgramAsr, DeepgramStream
from providers.fakes import FakeDeepgram

pytestmark = pytest.mark.timeout(30)

FRAME = bytes(320)  # 20 ms of 8 kHz silence-ish audio (content is irrelevant to the fake)


def make(dg: FakeDeepgram, **opts: object) -> DeepgramAsr:
    return DeepgramAsr.from_options({"api_key": dg.api_key, "url": dg.url, **opts})


async def feed(stream: DeepgramStream, frames: int) -> None:
    for _ in range(frames):
        await stream.send_audio(FRAME)


def said(turn: list[Transcript]) -> str:
    """What the call session makes of a turn: the finals joined."""
    return " ".join(t.text for t in turn if t.is_final and t.text)


async def collect_turn(stream: DeepgramStream) -> list[Transcript]:
    out: list[Transcript] = []
    async with asyncio.timeout(5):
        async for t in stream.transcripts():
            out.append(t)
            if t.end_of_turn:
                return out
    return out


async def test_a_turn_arrives_as_interim_then_final_with_end_of_turn() -> None:
    async with FakeDeepgram(["I need to move house"]) as dg:
        stream = await make(dg, keywords=["Pickfords:2"], keyterms=["removals"]).open_stream(
            8000, "en-GB")
        await feed(stream, 25)  # 500 ms = one utterance in the fake
        turn = await collect_turn(stream)
        await stream.close()
    # Deepgram finalised the turn in two segments; we hand over one final for the whole turn
    assert [(t.text, t.is_final, t.end_of_turn) for t in turn] == [
        ("I need", False, False), ("I need to move house", True, True)]
    assert turn[-1].confidence > 0.9 and turn[-1].start_s == 0.0
    assert turn[-1].end_s == pytest.approx(0.5)
    params = parse_qs(urlsplit(dg.requests[0][0]).query)
    assert params["encoding"] == ["linear16"] and params["sample_rate"] == ["8000"]
    assert params["channels"] == ["1"] and params["language"] == ["en-GB"]
    assert params["interim_results"] == ["true"] and params["endpointing"] == ["300"]
    assert params["utterance_end_ms"] == ["1000"] and params["vad_events"] == ["true"]
    # Nova-3 (the default model) takes key terms, not keywords: both go out as `keyterm`
    assert "keywords" not in params and params["keyterm"] == ["Pickfords", "removals"]
    assert dg.close_streams == 1  # hang-up sent CloseStream


async def test_utterance_end_closes_a_turn_without_speech_final() -> None:
    async with FakeDeepgram(["two bedroom flat"], fault="utterance_end") as dg:
        stream = await make(dg).open_stream(8000, "en")
        await feed(stream, 25)
        turn = await collect_turn(stream)
        await stream.close()
    assert turn[-1].end_of_turn and turn[-1].text == "two bedroom flat"
    assert [t.is_final for t in turn].count(True) == 1


async def test_two_turns_do_not_run_together() -> None:
    async with FakeDeepgram(["yes please", "next Tuesday"]) as dg:
        stream = await make(dg).open_stream(8000, "en")
        await feed(stream, 25)
        first = await collect_turn(stream)
        await feed(stream, 25)
        second = await collect_turn(stream)
        await stream.close()
    assert said(first) == "yes please"
    assert said(second) == "next Tuesday"
    assert second[-1].start_s == pytest.approx(0.5)


async def test_flush_sends_finalize_and_gets_the_turn() -> None:
    async with FakeDeepgram(["it is a bungalow"]) as dg:
        stream = await make(dg).open_stream(8000, "en")
        await feed(stream, 5)  # less than an utterance: only our VAD knows the turn ended
        await stream.flush()
        turn = await collect_turn(stream)
        await stream.close()
    assert dg.finalizes == 1
    assert turn[-1].text == "it is a bungalow" and turn[-1].end_of_turn


async def test_keepalive_is_sent_while_the_caller_is_silent() -> None:
    async with FakeDeepgram() as dg:
        stream = await make(dg, keepalive_s=0.1).open_stream(8000, "en")
        for _ in range(100):
            if dg.keepalives >= 2:
                break
            await asyncio.sleep(0.05)
        await stream.close()
    assert dg.keepalives >= 2
    assert {"type": "KeepAlive"} in dg.received


async def test_wrong_key_is_a_plain_error() -> None:
    async with FakeDeepgram() as dg:
        asr = DeepgramAsr.from_options({"api_key": "nope", "url": dg.url})
        with pytest.raises(ProviderError, match=r"rejected the API key"):
            await asr.open_stream(8000, "en")


@pytest.mark.parametrize(("fault", "message"), [
    ("http_429", "rate limiting"),
    ("http_500", "server error"),
])
async def test_handshake_failures(fault: str, message: str) -> None:
    async with FakeDeepgram(fault=fault) as dg:
        with pytest.raises(ProviderError, match=message):
            await make(dg).open_stream(8000, "en")


@pytest.mark.parametrize(("fault", "message"), [
    ("drop", "dropped the connection"),
    ("malformed", "not valid JSON"),
    ("data_error", "1008.*could not be decoded"),
    ("net_error", "1011"),
])
async def test_mid_stream_faults_surface_as_provider_errors(fault: str, message: str) -> None:
    async with FakeDeepgram(fault=fault) as dg:
        stream = await make(dg).open_stream(8000, "en")
        with pytest.raises(ProviderError, match=message):
            await feed(stream, 25)
            await collect_turn(stream)
            await feed(stream, 25)  # sending into a closed stream also fails plainly
        await stream.close()


async def test_stall_is_bounded_by_the_consumer_and_close_still_returns() -> None:
    async with FakeDeepgram(fault="stall") as dg:
        stream = await make(dg, close_timeout_s=0.2).open_stream(8000, "en")
        await feed(stream, 25)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await collect_turn(stream)
        async with asyncio.timeout(2):
            await stream.close()


async def test_missing_key_is_explained() -> None:
    with pytest.raises(ProviderError, match=r"needs an api_key"):
        await DeepgramAsr.from_options({}).open_stream(8000, "en")


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"no option endpoint"):
        DeepgramAsr.from_options({"endpoint": 300})


async def test_flush_after_noise_gives_an_empty_end_of_turn() -> None:
    """Our VAD heard 'speech' Deepgram did not: the turn still ends (the session sees noise)."""
    async with FakeDeepgram() as dg:
        stream = await make(dg).open_stream(8000, "en")
        await stream.flush()
        turn = await collect_turn(stream)
        await stream.close()
    assert [(t.text, t.end_of_turn) for t in turn] == [("", True)]


# -- the service's rules (the fake behaves as Deepgram does) --------------------------------


async def test_keywords_on_nova_2_stay_keywords_with_their_boost() -> None:
    async with FakeDeepgram() as dg:
        stream = await make(dg, model="nova-2", keywords=["Pickfords:2"],
                            keyterms=["removals"]).open_stream(8000, "en-GB")
        await stream.close()
    params = parse_qs(urlsplit(dg.requests[0][0]).query)
    assert params["keywords"] == ["Pickfords:2"] and params["keyterm"] == ["removals"]


async def test_the_fake_refuses_keywords_on_nova_3_as_deepgram_does() -> None:
    async with FakeDeepgram() as dg:
        with pytest.raises(ProviderError, match=r"HTTP 400.*Keywords are not supported"):
            await ws_connect(f"{dg.url}?model=nova-3&keywords=Pickfords", provider="Deepgram",
                             headers={"Authorization": f"Token {dg.api_key}"}, timeout_s=2)


async def test_an_idle_stream_is_kept_open_by_keepalives() -> None:
    # no audio for longer than the service's idle limit (10 s, shortened here): KeepAlive
    # messages keep the stream open and it still transcribes afterwards
    async with FakeDeepgram(["still here"], idle_close_s=0.5) as dg:
        stream = await make(dg, keepalive_s=0.2).open_stream(8000, "en")
        await asyncio.sleep(1.3)
        await feed(stream, 25)
        turn = await collect_turn(stream)
        await stream.close()
    assert said(turn) == "still here"
    assert dg.idle_closes == 0 and dg.keepalives >= 2


async def test_finalize_does_not_keep_a_silent_stream_open() -> None:
    # the docs count only audio and KeepAlive; a Finalize every 0.3 s must not stop KeepAlives
    async with FakeDeepgram(["hello"], idle_close_s=0.6) as dg:
        stream = await make(dg, keepalive_s=0.45).open_stream(8000, "en")
        for _ in range(5):
            await stream.flush()
            await asyncio.sleep(0.3)
        await feed(stream, 25)
        turn = await collect_turn(stream)
        while not said(turn):  # the empty answers to the Finalize messages come first
            turn = await collect_turn(stream)
        await stream.close()
    assert dg.idle_closes == 0
    assert said(turn) == "hello"


async def test_a_stream_left_silent_is_closed_with_net_0001_and_said_plainly() -> None:
    async with FakeDeepgram(idle_close_s=0.3) as dg:
        stream = await make(dg, keepalive_s=30).open_stream(8000, "en")
        with pytest.raises(ProviderError, match="received no audio for 10 s"):
            async with asyncio.timeout(5):
                async for _ in stream.transcripts():
                    pass
        await stream.close()
    assert dg.idle_closes == 1


async def test_without_endpointing_the_turn_ends_only_on_our_finalize() -> None:
    # endpointing=false: Deepgram never sends speech_final; our VAD's flush ends the turn
    async with FakeDeepgram(["I need to move house"]) as dg:
        stream = await make(dg, endpointing_ms=0, utterance_end_ms=0).open_stream(8000, "en")
        await feed(stream, 25)
        early: list[Transcript] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for t in stream.transcripts():
                    early.append(t)
        assert not any(t.end_of_turn for t in early)  # finals held: no speech_final came
        await stream.flush()
        turn = await collect_turn(stream)
        await stream.close()
    assert parse_qs(urlsplit(dg.requests[0][0]).query)["endpointing"] == ["false"]
    assert turn[-1].end_of_turn and turn[-1].text == "I need to move house"
    assert dg.finalizes == 1
