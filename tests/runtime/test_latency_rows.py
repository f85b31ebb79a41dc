"""Latency rows count what the caller waits: from their end of speech, not from our end-of-turn
rule's decision (which comes `end_of_turn_ms` later), and a turn with no words (a cough) makes
no row — it used to run on to our next prompt, seconds later, as a phantom slow turn."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flowagent import audio

pytestmark = pytest.mark.timeout(60)
FLOWS = Path(__file__).parent / "flows"
SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)  # "the caller talks" for the energy VAD


async def test_a_row_starts_at_the_callers_end_of_speech(harness: Any) -> None:
    h = await harness(FLOWS / "honest_latency.yaml")
    c = h.caller()
    await c.connect()
    assert await c.wait_agent_quiet(0.3)
    await c.say_audio(SPEECH)  # a cough: the recogniser hears nothing ("")
    assert await c.wait_agent_quiet(0.3, after=time.monotonic(), timeout_s=6)  # reprompt
    await c.say_audio(SPEECH)  # "yes"
    stopped = time.monotonic()  # the last frame of the caller's speech has gone
    heard = await c.wait_agent_started(stopped, timeout_s=5)
    waited_ms = (heard - stopped) * 1000
    await c.wait_agent_quiet(0.3, after=heard)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    rows = rec["latency"]
    assert len(rows) == 1, rows  # the cough made no row
    row = rows[0]
    assert waited_ms > 400  # the end-of-turn silence is part of the wait...
    # ...and of the row (the caller's clock and ours differ by a frame or two of transit)
    assert abs(row["first_frame_ms"] - waited_ms) < 80, (row, waited_ms)
