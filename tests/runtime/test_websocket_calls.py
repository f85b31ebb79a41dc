"""Whole calls over Asterisk's chan_websocket: real WebSocket sessions on loopback between the
real server (the same runtime, flows and call code as AudioSocket) and a fake Asterisk that
speaks the documented protocol in both control formats (tests/asterisk/fake_chan_websocket.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asterisk.fake_chan_websocket import FakeChanWebsocket

from flowagent import audio
from flowagent.server.runtime import RuntimeConfig

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).parent / "flows"
FAST_TTS = {"tts": {"name": "fake", "options": {"ms_per_word": 15}},
            "asr": {"name": "fake"}, "vad": {"name": "fake"}}
FORMATS = ["json", "plain-text"]
LLM_TALK_REPLY = " ".join([
    "Well, there are many things to say about removals, and I will say all of them now,",
    "one by one, slowly, so that you can interrupt me whenever you like."])


def speech(rate: int) -> bytes:
    """'The caller talks' for the fake VAD (an energy rule)."""
    return audio.tone(400, 300, rate, amplitude=0.4)


def says(rec: dict[str, Any]) -> str:
    return " | ".join(e["text"] for e in rec["transcript"] if e["who"] == "agent")


async def turn(h: Any, c: FakeChanWebsocket, uuid: str, text: str) -> None:
    """Wait for the agent to finish speaking, then 'say' text (injected into the fake ASR)."""
    after = getattr(c, "said_at", 0.0)
    assert await c.wait_agent_quiet(0.3, timeout_s=15, after=after)
    c.said_at = time.monotonic()  # type: ignore[attr-defined]
    await h.inject(uuid, text)


def call_params(**extra: str) -> dict[str, str]:
    return {"uuid": str(uuidlib.uuid4()), **extra}


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("control", FORMATS)
async def test_a_whole_removals_call_over_chan_websocket(harness: Any, pricing_api: Any,
                                                         control: str) -> None:
    h = await harness(ROOT / "flows" / "removals.yaml",
                      config=RuntimeConfig(provider_overrides=FAST_TTS))
    params = call_params(caller="07700 900123", did="+441134960000", channel="PJSIP/trunk-01")
    uuid = params["uuid"]
    async with h.ws_caller(control=control, media="slin16", params=params) as c:
        for text in ["I'd like a quote for a house move please", "LS11 5AB", "M1 1AE",
                     "next Friday", "three bedrooms", "yes that's right", "yes please",
                     "Jane Smith", "07911 123456"]:
            await turn(h, c, uuid, text)
        await asyncio.wait_for(c.closed.wait(), 20)
    rec = await h.wait_record(uuid)
    assert "Swift Removals Leeds" in says(rec)  # the DID from the WebSocket URL chose the context
    assert rec["caller"] == "+447700900123" and rec["channel"] == "PJSIP/trunk-01"
    assert rec["slots"]["bedrooms"] == 3 and rec["slots"]["from_postcode"] == "LS11 5AB"
    assert "SR-2024" in says(rec)
    assert rec["outcome"] == "completed" and rec["hangup_by"] == "agent"
    assert [t["tool"] for t in rec["tool_calls"]] == ["get_quote", "book_move"]
    assert all(t["first_frame_ms"] is not None for t in rec["latency"])
    # we ended with HANGUP (the dialplan goes on after Dial(...,g)); Asterisk closed with 1000
    assert [cmd.name for cmd in c.commands if cmd.name == "HANGUP"] == ["HANGUP"]
    assert c.hung_up_by_app and c.close_code == 1000
    assert c.dropped_frames == 0  # whole frames, never more than Asterisk's queue holds
    assert c.queued_at_hangup == 0  # the last words had all played before the HANGUP
    assert not h.rt.sessions


@pytest.mark.parametrize("control", FORMATS)
async def test_barge_in_flushes_asterisks_queue_and_nothing_stale_is_heard(
        harness: Any, control: str) -> None:
    h = await harness(FLOWS / "llm_talk.yaml")
    params = call_params()
    async with h.ws_caller(control=control, media="slin16", params=params) as c:
        started = await c.wait_agent_started(0, timeout_s=5)
        await asyncio.sleep(0.5)  # well into the reply; Asterisk holds ~0.5-1 s of it
        onset = time.monotonic()
        c.say(speech(16000))
        await asyncio.sleep(0.6)
        flushed = c.first("FLUSH_MEDIA")
        # the caller's speech stopped us within a few frames of its onset, by FLUSH_MEDIA,
        # which took back what we had sent ahead
        assert flushed - onset < 0.2
        assert c.flushed_frames >= 10, c.flushed_frames
        # nothing stale afterwards: at most the one 5 ms fade-out frame, then silence
        stale = [at for at, _ in c.speech_after(flushed) if at < flushed + 0.35]
        assert len(stale) <= 1, stale
        before = [at for at, _ in c.play_log if started <= at <= flushed]
    rec = await h.wait_record(params["uuid"])
    cut = [e for e in rec["transcript"] if e["who"] == "agent" and e["heard"] is not None]
    assert cut, rec["transcript"]
    heard = cut[0]["heard"]
    assert heard.startswith("Well, there are many things") and "interrupt me" not in heard
    # what the caller heard, by the wall clock and Asterisk's marks, is what it played:
    # the fake TTS speaks one word per 60 ms
    assert abs(len(heard.split()) - len(before) * 0.02 / 0.06) <= 2.5, (heard, len(before))
    assert any(e["text"] == "caller interrupted" for e in rec["transcript"])


async def test_keypad_digits_fill_a_slot_and_zero_transfers(harness: Any) -> None:
    h = await harness()
    params = call_params()
    async with h.ws_caller(control="plain-text", media="ulaw", params=params) as c:
        await turn(h, c, params["uuid"], "yes")
        assert await c.wait_agent_quiet(0.3, after=c.said_at)  # type: ignore[attr-defined]
        for d in "4#":
            await c.dtmf(d)
        await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(params["uuid"])
    assert rec["slots"]["bedrooms"] == 4 and rec["outcome"] == "completed"

    params2 = call_params()
    async with h.ws_caller(control="json", media="slin16", params=params2) as c2:
        await c2.wait_agent_started(0)
        await c2.dtmf("0")  # the flow's dtmf 0 handler: transfer to a person
        await asyncio.wait_for(c2.closed.wait(), 10)
    rec2 = await h.wait_record(params2["uuid"])
    assert rec2["transfer_target"] == "6001" and rec2["outcome"] == "transferred"
    assert c2.hung_up_by_app  # HANGUP: Dial(...,g) goes on and the dialplan reads the target
    _, body = await h.http("GET", f"/calls/{params2['uuid']}")
    assert body["transfer_target"] == "6001"


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize(("media", "rate"), [("ulaw", 8000), ("alaw", 8000), ("slin16", 16000)])
async def test_the_format_from_media_start_sets_the_call_rate_both_ways(
        harness: Any, media: str, rate: int) -> None:
    asr = {"asr": {"name": "fake", "options": {"transcripts": ["yes", "four"]}}}
    h = await harness(config=RuntimeConfig(provider_overrides=asr))
    params = call_params()
    async with h.ws_caller(media=media, params=params) as c:
        assert await c.wait_agent_quiet(0.3, timeout_s=10)
        greeting = bytes(c.heard)
        for _ in range(2):  # the caller's audio, in the call's format, is heard by the VAD
            c.said_at = time.monotonic()  # type: ignore[attr-defined]
            c.say(speech(rate))
            assert await c.wait_agent_quiet(0.3, timeout_s=10, after=c.said_at)  # type: ignore[attr-defined]
        await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(params["uuid"])
    assert rec["slots"]["bedrooms"] == 4 and rec["outcome"] == "completed"
    # our audio reached Asterisk in its format and rate: the fake voice's 440 Hz tone
    voiced = greeting[: len(greeting) - len(greeting) % 2]
    assert abs(dominant_hz(voiced, rate) - 440) < 10


async def test_asterisk_hangs_up_mid_sentence_and_the_record_is_written(harness: Any) -> None:
    h = await harness()
    params = call_params()
    async with h.ws_caller(params=params) as c:
        await c.wait_agent_started(0)
        await asyncio.sleep(0.2)
        await c.hangup()  # the caller put the phone down: Asterisk closes the WebSocket
    rec = await h.wait_record(params["uuid"])
    assert rec["outcome"] == "hangup_by_caller" and rec["hangup_by"] == "caller"
    assert rec["transcript"][0]["who"] == "agent"
    assert not h.rt.sessions and h.ws.active_calls == 0


async def test_a_broken_connection_ends_the_call_with_its_record(harness: Any) -> None:
    h = await harness()
    params = call_params()
    async with h.ws_caller(params=params, fault="abrupt_close", abort_after_s=0.5) as c:
        await asyncio.wait_for(c.closed.wait(), 5)
    rec = await h.wait_record(params["uuid"])
    assert rec["hangup_by"] == "caller" and rec["outcome"] == "hangup_by_caller"
    assert "broke" in rec["end_reason"]


@pytest.mark.parametrize("control", FORMATS)
async def test_a_malformed_control_message_ends_that_call_alone(harness: Any,
                                                                 control: str) -> None:
    h = await harness()
    good = call_params()
    async with h.ws_caller(control=control, params=good) as healthy:
        await healthy.wait_agent_started(0)
        bad = call_params()
        async with h.ws_caller(control=control, params=bad, fault="malformed_control") as c:
            await asyncio.wait_for(c.closed.wait(), 5)
        rec = await h.wait_record(bad["uuid"])
        assert rec["hangup_by"] == "error" and rec["outcome"] == "error"
        assert rec["errors"] and rec["errors"][0].startswith("protocol error: ")
        assert c.close_code == 1002  # we broke off for a protocol error
        # the other call goes on undisturbed
        assert not healthy.closed.is_set()
        await turn(h, healthy, good["uuid"], "yes")
        assert await healthy.wait_agent_quiet(0.3, after=healthy.said_at)  # type: ignore[attr-defined]
        await healthy.dtmf("3")
        await asyncio.wait_for(healthy.closed.wait(), 10)
    rec_good = await h.wait_record(good["uuid"])
    assert rec_good["slots"]["bedrooms"] == 3 and rec_good["outcome"] == "completed"
    assert h.rt.metrics.errors["protocol"] == 1


async def test_no_media_start_still_writes_the_record_of_the_call_id_in_the_url(
        harness: Any) -> None:
    h = await harness(config=RuntimeConfig(uuid_timeout_s=0.5))
    params = call_params()
    async with h.ws_caller(params=params, fault="no_media_start") as c:
        await asyncio.wait_for(c.closed.wait(), 5)
    rec = await h.wait_record(params["uuid"])
    assert rec["hangup_by"] == "error"
    assert "MEDIA_START" in rec["end_reason"]  # the fake sends media without it


async def test_a_wrong_path_or_call_id_is_refused_at_the_upgrade(harness: Any) -> None:
    from websockets.exceptions import InvalidStatus

    h = await harness()
    wrong = FakeChanWebsocket(h.ws_url.replace("/chan_websocket", "/media"),
                              params=call_params())
    with pytest.raises(InvalidStatus) as info:
        await wrong.__aenter__()
    assert info.value.response.status_code == 404
    assert b"/chan_websocket" in info.value.response.body
    bad = FakeChanWebsocket(h.ws_url, params={"uuid": "not a uuid; drop table"})
    with pytest.raises(InvalidStatus) as info:
        await bad.__aenter__()
    assert info.value.response.status_code == 400
    assert b"call id" in info.value.response.body


async def test_flow_control_is_honoured_and_nothing_is_dropped(harness: Any) -> None:
    h = await harness(FLOWS / "llm_talk.yaml")
    params = call_params()
    # Asterisk's playout stalls for 1.2 s while our clock says it plays: its queue (here: XOFF
    # at 40 frames, XON below 20, full at 60) fills, and only MEDIA_XOFF stops us sending
    # into a full queue, where Asterisk would drop the audio
    async with h.ws_caller(params=params, queue_max=60, xoff=40, xon=20, stall_s=1.2) as c:
        assert await c.wait_agent_quiet(0.4, timeout_s=15)
        assert any("MEDIA_XOFF" in e for e in c.sent_events)
        assert any("MEDIA_XON" in e for e in c.sent_events)
        assert c.dropped_frames == 0
        words = len(LLM_TALK_REPLY.split())
        played_s = len(c.play_log) * 0.02
        assert played_s >= words * 0.06 - 0.02  # every word of the reply was played


async def test_a_cough_pauses_asterisks_playout_and_it_resumes(harness: Any) -> None:
    h = await harness(FLOWS / "cough.yaml")
    params = call_params()
    async with h.ws_caller(params=params) as c:
        await c.wait_agent_started(0)
        await asyncio.sleep(0.3)
        onset = time.monotonic()
        c.say(audio.tone(120, 300, 16000, amplitude=0.4))  # a short noise
        await asyncio.sleep(0.2)
        assert len([at for at, _ in c.speech_after(onset + 0.12)]) <= 1  # quiet at once
        resumed_at = await c.wait_agent_started(onset + 0.3, timeout_s=5)
        assert resumed_at - onset < 2.0
        assert [n for _, n in c.command_times if n in ("PAUSE_MEDIA", "CONTINUE_MEDIA")] == [
            "PAUSE_MEDIA", "CONTINUE_MEDIA"]
        assert c.flushed_frames == 0  # paused, not flushed: the question carries on
    rec = await h.wait_record(params["uuid"])
    texts = [e["text"] for e in rec["transcript"]]
    assert "resumed after a noise" in texts and "caller interrupted" not in texts


async def test_the_printed_asterisk_config_reaches_this_server_and_runs_its_call(
        harness: Any) -> None:
    """`flowagent asterisk config --part websocket` and the listener agree: the URI's path and
    port, the control format, the media format and every v(...) value of the dial string."""
    import re

    from flowagent.asterisk.config import AsteriskSettings, render

    h = await harness()
    settings = AsteriskSettings(host="127.0.0.1", ws_port=h.ws.address[1], flow="basic",
                                did="01632960000")
    uri = re.search(r"^uri = (\S+)$", render("websocket-client", settings), re.M)
    control = re.search(r"^control_message_format = (\S+)$",
                        render("websocket-channel", settings), re.M)
    dial = re.search(r"Dial\(WebSocket/(\w+)/c\((\w+)\)f\(([\w-]+)\)v\((.*)\),,g\)",
                     render("websocket-dialplan", settings))
    assert uri and control and dial
    assert dial.group(1) == "flowagent" and dial.group(3) == control.group(1)
    # what Asterisk puts in the URL for this call (URIENCODE -> percent-encoding)
    example = {"${FLOWAGENT_UUID}": str(uuidlib.uuid4()),
               "${URIENCODE(${CALLERID(num)})}": "07700900123",
               "${URIENCODE(${CALLERID(name)})}": "Jane Smith",
               "${URIENCODE(${EXTEN})}": "01632960000",
               "${URIENCODE(${CHANNEL})}": "PJSIP/trunk-00000001"}
    params = {}
    for pair in dial.group(4).split(","):
        name, _, value = pair.partition("=")
        params[name] = example.get(value, value)
    assert set(params) >= {"uuid", "caller", "did", "channel", "flow"}
    async with FakeChanWebsocket(uri.group(1), control=control.group(1),  # type: ignore[arg-type]
                                 media=dial.group(2), params=params) as c:
        await c.wait_agent_started(0)
        await c.hangup()
    rec = await h.wait_record(params["uuid"])
    assert rec["flow"] == "Runtime Test" and rec["caller"] == "+447700900123"
    assert rec["did"] == "+441632960000" and rec["channel"] == "PJSIP/trunk-00000001"
    assert "caller +447700900123" in rec["transcript"][0]["text"]  # the greeting's template


async def test_a_speech_to_speech_call_runs_over_chan_websocket_and_barge_in_flushes(
        harness: Any) -> None:
    """StsCall on the same line: the provider's faster-than-real-time audio is sent ahead and
    taken back by FLUSH_MEDIA when the caller cuts in."""
    from providers.fakes import FakeOpenAIRealtime

    greeting = "Hello, you're through to Swift Removals. How can I help?"
    long_text = ("We move homes and offices all over Yorkshire and the North West, and we can "
                 "pack everything for you, store it, and take it anywhere in the country.")
    script: list[Any] = [greeting, {"say": long_text, "audio_ms": 5000}, "Sure, go ahead."]
    async with FakeOpenAIRealtime(script, user_transcripts=["what do you do", "sorry, one thing"],
                                  turns="energy") as fake:
        sts = {"sts": {"name": "openai-realtime",
                       "options": {"api_key": fake.api_key, "url": fake.url}}}
        h = await harness(ROOT / "tests" / "providers" / "flows" / "removals_sts.yaml",
                          config=RuntimeConfig(provider_overrides=sts))
        params = call_params()
        async with h.ws_caller(params=params, media="ulaw") as c:
            assert await c.wait_agent_quiet(0.3, timeout_s=10)  # the greeting
            spoke = time.monotonic()
            c.say(speech(8000))
            started = await c.wait_agent_started(spoke + 0.3, timeout_s=10)  # the long answer
            await asyncio.sleep(0.8)
            barge = time.monotonic()
            c.say(speech(8000))
            assert await c.wait_agent_quiet(0.3, timeout_s=10, after=started)
            flushed = c.first("FLUSH_MEDIA")
            assert flushed - barge < 0.5 and c.flushed_frames >= 10
            assert len([at for at, _ in c.speech_after(flushed) if at < flushed + 0.3]) <= 1
            await c.wait_agent_started(barge + 0.5, timeout_s=10)  # the answer to the cut
            assert await c.wait_agent_quiet(0.3, timeout_s=10, after=barge + 0.5)
        rec = await h.wait_record(params["uuid"])
    line = next(e for e in rec["transcript"] if e["who"] == "agent" and e["text"] == long_text)
    assert line["heard"] is not None and len(line["heard"]) < len(long_text) / 2
    assert [e["text"] for e in rec["transcript"] if e["who"] == "agent"][-1] == "Sure, go ahead."
    assert rec["hangup_by"] == "caller"


async def test_the_no_input_timer_starts_when_asterisk_has_played_the_question(
        harness: Any) -> None:
    """Audio goes ahead of real time; the no-input timer must still start when the caller has
    heard the question to its end (basic.yaml: 1 s), not when we sent it."""
    h = await harness()
    params = call_params()
    async with h.ws_caller(params=params) as c:
        assert await c.wait_agent_quiet(0.3, timeout_s=10)  # greeting + "How can we help?"
        heard_end = c.last_agent_speech
        reprompt = await c.wait_agent_started(heard_end + 0.05, timeout_s=5)
        assert 0.9 <= reprompt - heard_end <= 1.3, reprompt - heard_end
        await asyncio.wait_for(c.closed.wait(), 15)  # no input again: the flow transfers
    rec = await h.wait_record(params["uuid"])
    assert rec["transfer_target"] == "6001"
