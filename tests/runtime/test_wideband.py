"""The call's rate over real TCP, as real Asterisk sends it: the first audio frame comes ~0.5 s
(or, on a slow box, 2 s) after the UUID, 16 kHz calls send kind 0x12 in 640-byte frames, and a
rate may change mid-call. The agent must speak at the caller's rate from its first word, hear
at that rate, and after a change say again at the new rate what had not been heard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from flowagent import audio
from flowagent.asterisk.audiosocket import KIND_FOR_RATE
from flowagent.server.runtime import RuntimeConfig

FLOWS = Path(__file__).parent / "flows"

RATES = [8000, 16000, 48000]


def agent_kinds(c: Any) -> set[int]:
    return {f.kind for f in c.stats.frames}


def speech_ms(c: Any) -> float:
    return sum(20 for f in c.stats.frames if f.speech)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("delay_s", [0.5, 2.0])
async def test_greeting_at_the_callers_rate_however_late_the_first_frame(
        harness: Any, rate: int, delay_s: float) -> None:
    hears = {"asr": {"name": "fake", "options": {"transcripts": ["yes"]}}}
    h = await harness(FLOWS / "basic.yaml", config=RuntimeConfig(provider_overrides=hears))
    c = h.caller(sample_rate=rate, first_audio_after_s=delay_s)
    t0 = time.monotonic()
    await c.connect()
    started = await c.wait_agent_started(0, timeout_s=10)
    # nothing was spoken before the caller's rate was known ...
    assert started - t0 >= delay_s - 0.05
    assert await c.wait_agent_quiet(0.4, timeout_s=10)
    # ... and everything at that rate, in 20 ms frames of that rate, nothing dropped: the
    # greeting (10 words at 100 ms) and the question (5 words) are heard whole
    assert agent_kinds(c) == {int(KIND_FOR_RATE[rate])}
    assert {f.size for f in c.stats.frames} == {audio.frame_bytes(rate)}
    assert speech_ms(c) >= 1400
    # the caller is heard at that rate too: their answer moves the flow on
    await c.say_audio(audio.tone(300, 300, rate, amplitude=0.4))
    await asyncio.sleep(0.5)
    live = h.rt.sessions[c.uuid]
    assert live.state == "details"
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert rec["outcome"] == "hangup_by_caller" and rec["end_reason"] == "caller hung up"


async def test_a_rate_change_mid_greeting_says_it_again_at_the_new_rate(harness: Any) -> None:
    h = await harness(FLOWS / "basic.yaml")
    c = h.caller(sample_rate=8000)
    await c.connect()
    await c.wait_agent_started(0, timeout_s=10)
    await asyncio.sleep(0.3)  # the greeting is under way at 8 kHz ...
    switched = time.monotonic()
    c.switch_rate(16000)  # ... when the caller's leg moves to 16 kHz
    assert await c.wait_agent_quiet(0.4, timeout_s=10, after=switched)
    after = [f for f in c.stats.frames if f.at > switched + 0.1]
    assert after and {f.kind for f in after} == {int(KIND_FOR_RATE[16000])}
    # the greeting was said again whole at 16 kHz, then the question: the flow carries on, and
    # the no-input timer (1 s) starts after it: its reprompt follows the question
    assert sum(20 for f in after if f.speech) >= 1200
    rec_live = h.rt.sessions[c.uuid].live_dict()
    agent = [t["text"] for t in rec_live["transcript"] if t["who"] == "agent"]
    assert agent[:2] == ["Hello, you're through to Test Removals, caller .",
                         "How can we help you today?"]
    await c.hangup()


async def test_the_record_lasts_from_socket_open_to_socket_closed(harness: Any) -> None:
    """The flow ends with its goodbye; the record's duration includes the goodbye's playback
    and the hang-up, not only the time to the flow's last event."""
    h = await harness(FLOWS / "basic.yaml")
    c = h.caller()
    t0 = time.monotonic()
    await c.connect()
    await c.wait_agent_quiet(0.3, timeout_s=10)
    await h.inject(c.uuid, "I'm moving house")
    await asyncio.sleep(0.3)
    c.send_dtmf("4")  # bedrooms by keypad: the flow says its goodbye and ends
    await asyncio.sleep(0.05)
    c.send_dtmf("#")
    await asyncio.wait_for(c.closed.wait(), 10)
    lasted = time.monotonic() - t0
    rec = await h.wait_record(c.uuid)
    assert rec["outcome"] == "completed"
    assert abs(rec["duration_s"] - lasted) < 0.3, (rec["duration_s"], lasted)
