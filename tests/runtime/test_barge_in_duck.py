"""Barge-in from onset, over real TCP AudioSocket: our audio ducks at the first speech window
over it, stops when the speech is confirmed (min_speech_ms), and comes back after a cough.

Levels are measured at the caller, frame by frame, as a caller would hear them."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller

pytestmark = pytest.mark.timeout(60)

FLOWS = Path(__file__).parent / "flows"
DUCK = FLOWS / "duck.yaml"
SPEECH = audio.tone(600, 300, 8000, amplitude=0.4)  # "the caller talks" (energy VAD)
COUGH = audio.tone(100, 150, 8000, amplitude=0.4)  # shorter than min_speech_ms (250)


def levels(c: AudioSocketCaller) -> list[tuple[float, float]]:
    """(arrival time, RMS) of every agent frame the caller receives."""
    got: list[tuple[float, float]] = []
    c.on_agent_frame.append(lambda at, pcm, speech: got.append((at, audio.rms(pcm))))
    return got


def level(got: list[tuple[float, float]], start: float, end: float) -> float:
    """The median level of our speech frames that arrived in [start, end) (0: none)."""
    vals = [r for at, r in got if start <= at < end and r > 0.002]
    return statistics.median(vals) if vals else 0.0


async def talking(h: Any) -> tuple[AudioSocketCaller, list[tuple[float, float]], float]:
    c = h.caller()
    got = levels(c)
    await c.connect()
    await c.wait_agent_started(0, timeout_s=5)
    await asyncio.sleep(0.3)  # well into the question (about 1.9 s of audio)
    return c, got, level(got, 0, time.monotonic())


async def test_speech_over_our_audio_ducks_it_at_once_then_stops_it(harness: Any) -> None:
    h = await harness(DUCK)
    c, got, full = await talking(h)
    onset = time.monotonic()
    c.queue_audio(SPEECH)
    await asyncio.sleep(0.7)
    # quieter within 100 ms of the onset: about -15 dB (0.18 of the level), well below -6 dB
    ducked = level(got, onset + 0.1, onset + 0.22)
    assert 0 < ducked < full * 0.3, (ducked, full)
    # ...then stopped once the speech lasted min_speech_ms (250 ms), as before
    assert level(got, onset + 0.45, onset + 0.7) == 0.0
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert any(e["text"] == "caller interrupted" for e in rec["transcript"])


async def test_a_cough_ducks_our_audio_then_it_comes_back_in_full(harness: Any) -> None:
    h = await harness(DUCK)
    c, got, full = await talking(h)
    onset = time.monotonic()
    c.queue_audio(COUGH)
    await asyncio.sleep(0.6)
    assert 0 < level(got, onset + 0.04, onset + 0.1) < full * 0.3  # ducked during the cough
    assert level(got, onset + 0.3, onset + 0.6) > full * 0.8  # full volume again after it
    await c.wait_agent_quiet(0.3, timeout_s=5)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    texts = [e["text"] for e in rec["transcript"]]
    assert "caller interrupted" not in texts
    question = next(e for e in rec["transcript"] if e["who"] == "agent")
    assert question["heard"] is None  # never cut: the caller heard all of it


async def test_duck_db_zero_keeps_full_volume_until_the_barge_in(harness: Any,
                                                                  tmp_path: Path) -> None:
    flow = tmp_path / "noduck.yaml"
    flow.write_text(DUCK.read_text().replace("duck_db: 15", "duck_db: 0"))
    h = await harness(flow)
    c, got, full = await talking(h)
    onset = time.monotonic()
    c.queue_audio(COUGH)
    await asyncio.sleep(0.3)
    assert level(got, onset + 0.04, onset + 0.12) > full * 0.8
    await c.hangup()
