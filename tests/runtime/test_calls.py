"""Whole calls over real TCP against the real server, with fake providers chosen in test flows."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loopback import serve_app

from flowagent import audio
from flowagent.asterisk.audiosocket import Kind, encode
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.server.runtime import RuntimeConfig
from flowagent.server.webhooks import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).parent / "flows"
SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)  # "the caller talks" for the energy VAD
FAST_TTS = {"tts": {"name": "fake", "options": {"ms_per_word": 15}},
            "asr": {"name": "fake"}, "vad": {"name": "fake"}}


def allowed_kinds_only(c: AudioSocketCaller) -> None:
    assert c.stats.bad_kinds == []
    assert c.stats.zero_length_audio == 0
    assert {f.kind for f in c.stats.frames} <= {int(Kind.SLIN_8K)}


async def turn(h: Any, c: AudioSocketCaller, text: str) -> None:
    """Wait for the agent to finish speaking, then 'say' text (injected into the fake ASR)."""
    assert await c.wait_agent_quiet(0.25, timeout_s=15, after=getattr(c, "said_at", 0.0))
    c.said_at = time.monotonic()  # type: ignore[attr-defined]
    await h.inject(c.uuid, text)


def says(rec: dict[str, Any]) -> str:
    return " | ".join(e["text"] for e in rec["transcript"] if e["who"] == "agent")


# ---------------------------------------------------------------------------------------------


async def test_full_removals_call_by_text_with_post_call_metadata(harness: Any,
                                                                  pricing_api: Any) -> None:
    h = await harness(ROOT / "flows" / "removals.yaml",
                      config=RuntimeConfig(provider_overrides=FAST_TTS))
    c = h.caller()
    status, _ = await h.http("POST", "/call", json={
        "uuid": c.uuid, "payload": {"from": "+447700900123", "to": "+441134960000"}})
    assert status == 200
    await c.connect()
    for text in ["I'd like a quote for a house move please", "LS11 5AB", "M1 1AE",
                 "next Friday", "three bedrooms", "yes that's right", "yes please",
                 "Jane Smith", "07911 123456"]:
        await turn(h, c, text)
    await asyncio.wait_for(c.closed.wait(), 20)
    rec = await h.wait_record(c.uuid)
    assert "Swift Removals Leeds" in says(rec)  # the DID from POST /call chose the context
    assert rec["caller"] == "+447700900123"
    assert rec["slots"]["bedrooms"] == 3 and rec["slots"]["from_postcode"] == "LS11 5AB"
    assert "SR-2024" in says(rec)
    assert rec["outcome"] == "completed" and rec["hangup_by"] == "agent"
    assert [t["tool"] for t in rec["tool_calls"]] == ["get_quote", "book_move"]
    assert pricing_api[0]["bedrooms"] == 3
    assert c.stats.hangup_frame  # we ended with a 0x00 frame so the dialplan continues
    allowed_kinds_only(c)
    assert all(t["first_frame_ms"] is not None for t in rec["latency"])
    status, live = await h.http("GET", f"/calls/{c.uuid}")
    assert status == 200 and live["outcome"] == "completed"
    await c.close()


async def test_barge_in_stops_playback_within_a_few_frames(harness: Any) -> None:
    h = await harness(FLOWS / "llm_talk.yaml")
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0, timeout_s=5)
    await asyncio.sleep(0.5)  # well into the reply
    onset = time.monotonic()
    c.queue_audio(SPEECH)
    await asyncio.sleep(0.6)
    after = [f for f in c.stats.frames if f.at > onset and f.speech]
    # min_speech_ms 60 = 3 frames to decide, + a frame in flight + the fade frame
    assert 0 < len(after) <= 7, len(after)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    cut = [e for e in rec["transcript"] if e["who"] == "agent" and e["heard"] is not None]
    assert cut, rec["transcript"]
    heard = cut[0]["heard"]
    assert heard and "removals" in heard and "interrupt me" not in heard
    assert any(e["text"] == "caller interrupted" for e in rec["transcript"])


async def test_dtmf_digits_fill_a_slot_and_zero_transfers(harness: Any) -> None:
    h = await harness()
    c = h.caller()
    await c.connect()
    await turn(h, c, "yes")
    assert await c.wait_agent_quiet(0.25, after=c.said_at)  # type: ignore[attr-defined]
    for d in "4#":
        c.send_dtmf(d)
    await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(c.uuid)
    assert rec["slots"]["bedrooms"] == 4 and rec["outcome"] == "completed"

    c2 = h.caller()
    await c2.connect()
    await c2.wait_agent_started(0)
    c2.send_dtmf("0")  # the flow's dtmf 0 handler: transfer to a person
    await asyncio.wait_for(c2.closed.wait(), 10)
    rec2 = await h.wait_record(c2.uuid)
    assert rec2["transfer_target"] == "6001" and rec2["outcome"] == "transferred"
    _, body = await h.http("GET", f"/calls/{c2.uuid}")
    assert body["transfer_target"] == "6001"  # what the dialplan reads after AudioSocket()


async def test_caller_hangs_up_mid_sentence_and_the_record_is_written(harness: Any) -> None:
    h = await harness()
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    await asyncio.sleep(0.2)
    await c.hangup()  # Asterisk just closes the socket
    rec = await h.wait_record(c.uuid)
    assert rec["outcome"] == "hangup_by_caller"
    assert rec["hangup_by"] == "caller"
    assert rec["transcript"][0]["who"] == "agent"
    assert not h.rt.sessions


async def test_asr_failure_mid_call_plays_the_fallback_and_goes_on(harness: Any) -> None:
    h = await harness(FLOWS / "asr_fail.yaml")
    c = h.caller()
    await c.connect()
    assert await c.wait_agent_quiet(0.3)
    await c.say_audio(SPEECH)  # -> VAD end of turn -> "yes"
    assert await c.wait_agent_quiet(0.3, after=time.monotonic())
    await c.say_audio(SPEECH)  # -> the ASR fails
    spoke_at = time.monotonic()
    heard_at = await c.wait_agent_started(spoke_at, timeout_s=5)
    assert heard_at - spoke_at < 2.0 + 0.2 + 0.1  # fallback within 2 s of the fault
    await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(c.uuid)
    assert "something went wrong" in says(rec)
    assert rec["transfer_target"] == "6001"
    assert any("asr" in e for e in rec["errors"])


async def test_vad_failure_mid_call_falls_back_to_an_energy_vad_and_goes_on(
        harness: Any) -> None:
    h = await harness(FLOWS / "vad_fail.yaml")
    c = h.caller()
    await c.connect()
    assert await c.wait_agent_quiet(0.3)
    await asyncio.sleep(1.0)  # the VAD has failed by now (40 frames)
    assert h.rt.metrics.errors["vad"] == 1
    await c.say_audio(SPEECH)  # heard by the energy VAD that took over -> "yes"
    assert await c.wait_agent_quiet(0.3, after=time.monotonic())
    await c.say_audio(SPEECH)
    await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(c.uuid)
    assert "And is it a house?" in says(rec) and "Goodbye." in says(rec)
    assert rec["outcome"] == "completed"
    assert [e for e in rec["errors"] if e.startswith("vad:")] == [
        "vad: fake VAD failure (fail_after)"]


async def test_llm_stall_plays_the_fallback_within_two_seconds(harness: Any) -> None:
    h = await harness(FLOWS / "llm_stall.yaml")
    c = h.caller()
    await c.connect()
    t0 = time.monotonic()
    await c.wait_agent_started(0)
    assert await c.wait_agent_quiet(0.2)
    first_quiet = c.last_agent_speech
    heard = await c.wait_agent_started(first_quiet + 0.05, timeout_s=5)
    assert heard - t0 < 2.5
    await turn(h, c, "no thanks")
    await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(c.uuid)
    assert "having a problem" in says(rec) and rec["outcome"] == "completed"


async def test_webhooks_are_signed_and_call_ended_carries_the_record(harness: Any) -> None:
    got: list[dict[str, Any]] = []
    bad_sigs = 0
    ended = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad_sigs
        body = await request.read()
        if not verify("s3cret", body, request.headers.get(SIGNATURE_HEADER, "")):
            bad_sigs += 1
        got.append(json.loads(body))
        if got[-1]["type"] == "call_ended":
            ended.set()
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    async with serve_app(app) as url:
        h = await harness(webhook_url=f"{url}/hook", webhook_secret="s3cret")
        c = h.caller()
        await c.connect()
        await turn(h, c, "yes")
        assert await c.wait_agent_quiet(0.25, after=c.said_at)  # type: ignore[attr-defined]
        c.send_dtmf("2")
        c.send_dtmf("#")
        await asyncio.wait_for(c.closed.wait(), 10)
        await asyncio.wait_for(ended.wait(), 5)
    types = [e["type"] for e in got]
    for t in ("call_initiated", "call_started", "transcription", "dtmf_digit", "call_ended"):
        assert t in types, types
    assert bad_sigs == 0
    last = next(e for e in got if e["type"] == "call_ended")
    assert last["uuid"] == c.uuid and last["payload"]["slots"]["bedrooms"] == 2


async def test_dead_webhook_receiver_never_affects_the_call(harness: Any) -> None:
    h = await harness(webhook_url="http://127.0.0.1:9/nothing-listens-here")
    c = h.caller()
    await c.connect()
    await turn(h, c, "yes")
    await turn(h, c, "five")
    await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(c.uuid)
    assert rec["slots"]["bedrooms"] == 5


async def test_changed_flow_is_reloaded_and_a_broken_one_is_not(harness: Any,
                                                                tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    shutil.copy(FLOWS / "basic.yaml", flow)
    h = await harness(flow)
    text = flow.read_text()
    flow.write_text(text.replace("Hello, you're through to", "Good morning from"))
    t = time.time() + 5
    import os

    os.utime(flow, (t, t))
    assert any("reloaded" in m for m in h.server.reload_now())
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert "Good morning from" in says(rec)

    flow.write_text(text.replace("next: how", "next: nowhere"))
    os.utime(flow, (t + 5, t + 5))
    messages = h.server.reload_now()
    assert messages and "not reloaded" in messages[0] and "nowhere" in messages[0]
    c2 = h.caller()
    await c2.connect()
    await c2.wait_agent_started(0)
    await c2.hangup()
    rec2 = await h.wait_record(c2.uuid)
    assert "Good morning from" in says(rec2)  # the last good version keeps serving


async def test_drain_refuses_new_calls_and_lets_running_calls_finish(harness: Any) -> None:
    h = await harness()
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    drain = asyncio.get_running_loop().create_task(h.server.drain(timeout_s=20))
    await asyncio.sleep(0.1)
    late = h.caller()
    with pytest.raises((ConnectionError, OSError, TimeoutError)):
        await late.connect(timeout_s=1)
        await asyncio.wait_for(late.closed.wait(), 2)
        raise ConnectionError("closed")  # refused or closed at once: either is a refusal
    assert not drain.done()
    await turn(h, c, "yes")
    await turn(h, c, "two")
    await asyncio.wait_for(drain, 15)
    rec = await h.wait_record(c.uuid)
    assert rec["outcome"] == "completed" and rec["slots"]["bedrooms"] == 2


async def test_pacing_one_frame_per_20ms_and_only_allowed_kinds(harness: Any) -> None:
    h = await harness(FLOWS / "llm_talk.yaml",
                      config=RuntimeConfig(keepalive_ms=500))
    c = h.caller()
    await c.connect()
    start = await c.wait_agent_started(0)
    assert await c.wait_agent_quiet(0.3)  # the whole generated reply (~1.9 s)
    end = c.last_agent_speech
    window = [f for f in c.stats.frames if start <= f.at <= end]
    expected = (end - start) / 0.02 + 1
    assert expected > 50
    assert abs(len(window) - expected) <= max(3, expected * 0.03), (len(window), expected)
    assert all(f.speech for f in window[:-1])  # no gaps between the chunks of one reply
    assert all(f.size == 320 for f in window)
    allowed_kinds_only(c)
    await c.hangup()


async def test_16khz_call_is_answered_at_16khz(harness: Any) -> None:
    h = await harness()
    c = h.caller(sample_rate=16000)
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    kinds = {f.kind for f in c.stats.frames if f.speech}
    assert kinds == {int(Kind.SLIN_16K)}
    assert all(f.size == 640 for f in c.stats.frames if f.speech)


async def test_api_needs_the_token_except_health(harness: Any) -> None:
    h = await harness()
    status, _ = await h.http("GET", "/calls", headers={})
    assert status == 401
    status, _ = await h.http("GET", "/calls", headers={"X-Flowagent-Token": "test-token"})
    assert status == 200
    status, body = await h.http("GET", "/healthz", headers={})
    assert status == 200 and body["status"] == "ok"
    status, body = await h.http("POST", "/call", data=b"{not json", headers={
        "Authorization": "Bearer test-token", "Content-Type": "application/json"})
    assert status == 400
    c = h.caller()
    await c.connect()
    await turn(h, c, "yes")
    await c.hangup()
    await h.wait_record(c.uuid)
    status, text = await h.http("GET", "/metrics")
    assert status == 200
    assert "flowagent_calls_total 1" in text
    assert 'flowagent_latency_seconds_bucket{stage="turn",le="+Inf"} 1' in text


async def test_garbage_on_one_call_never_affects_another(harness: Any) -> None:
    h = await harness()
    good = h.caller()
    await good.connect()
    await good.wait_agent_started(0)
    bad = AudioSocketCaller("127.0.0.1", h.port)
    await bad.connect()
    await asyncio.sleep(0.1)
    bad.send_raw(encode(Kind.SLIN_8K, b"\x00" * 320) + bytes([0x42, 0x00, 0x05]) + b"xxxxx")
    await asyncio.wait_for(bad.closed.wait(), 5)  # that call ended...
    await turn(h, good, "yes")  # ...this one carries on
    await turn(h, good, "one")
    await asyncio.wait_for(good.closed.wait(), 10)
    rec = await h.wait_record(good.uuid)
    assert rec["slots"]["bedrooms"] == 1
    bad_rec = await h.wait_record(bad.uuid)
    assert bad_rec["hangup_by"] == "error" and "unknown AudioSocket frame kind 0x42" in (
        bad_rec["end_reason"])


async def test_a_cough_pauses_playback_and_it_resumes(harness: Any) -> None:
    h = await harness(FLOWS / "cough.yaml")
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    await asyncio.sleep(0.3)
    onset = time.monotonic()
    c.queue_audio(audio.tone(120, 300, 8000, amplitude=0.4))  # a short noise
    await asyncio.sleep(0.2)
    quiet = [f for f in c.stats.frames if onset + 0.12 < f.at and f.speech]
    assert len(quiet) <= 2  # we stopped talking over it at once
    resumed_at = await c.wait_agent_started(onset + 0.3, timeout_s=5)
    assert resumed_at - onset < 2.0  # ...and carried on after the end of turn + empty transcript
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    texts = [e["text"] for e in rec["transcript"]]
    assert "resumed after a noise" in texts and "caller interrupted" not in texts


async def test_routes_file_picks_the_flow_by_the_number_dialled(harness: Any) -> None:
    h = await harness(FLOWS / "routes.yaml")
    routed = h.caller()
    await h.http("POST", "/call", json={"uuid": routed.uuid, "metadata": {"did": "+441134960000"}})
    await routed.connect()
    await routed.wait_agent_started(0)
    await routed.hangup()
    other = h.caller()
    await other.connect()
    await other.wait_agent_started(0)
    await other.hangup()
    assert (await h.wait_record(routed.uuid))["flow"] == "Cough"
    assert (await h.wait_record(other.uuid))["flow"] == "Runtime Test"


async def test_static_prompts_are_synthesised_before_the_first_call(harness: Any) -> None:
    h = await harness()
    entry = h.rt.flows.default
    assert "How can we help you today?" in entry.static_prompts()
    assert await entry.prewarm() >= 0
    voice = entry.providers.tts.voice_id
    assert (voice, 8000, "How can we help you today?") in entry.prompt_cache


async def test_call_initiated_answer_can_choose_the_flow(harness: Any) -> None:
    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body["type"] == "call_initiated":
            return web.json_response({"flow": "Cough"})
        return web.json_response({})

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    async with serve_app(app) as url:
        h = await harness(FLOWS / "routes.yaml", webhook_url=f"{url}/hook")
        c = h.caller()
        await c.connect()
        await c.wait_agent_started(0)
        await c.hangup()
        assert (await h.wait_record(c.uuid))["flow"] == "Cough"
