"""Echo rejection, over real TCP AudioSocket: the caller's line sends our own audio back (one
frame late, 12 dB down) — that is not the caller talking, so our audio is neither stopped nor
ducked; a recorded caller line spoken over our audio with that echo present still barges in.

The fake VAD is an energy VAD: the echo alone looks like speech to it, so without echo rejection
(`echo_rejection: false`) the first test is a barge-in."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller

pytestmark = pytest.mark.timeout(60)

FLOWS = Path(__file__).parent / "flows"
ECHO = FLOWS / "echo.yaml"
SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech" / "book_removal.wav"
ECHO_DB = -12.0


class EchoingLine:
    """The caller's side of a line with echo: every frame of ours comes back `ECHO_DB` down on
    the caller's next frame, with the caller's own speech (`talk`) mixed in when given."""

    def __init__(self, c: AudioSocketCaller) -> None:
        self.c = c
        self.levels: list[tuple[float, float]] = []  # (arrival, RMS) of our frames
        self._talk = np.zeros(0, dtype=np.float32)
        c.on_agent_frame.append(self._frame)

    def talk(self, pcm: bytes) -> None:
        self._talk = np.concatenate([self._talk, audio.to_float(pcm)])

    def _frame(self, at: float, pcm: bytes, speech: bool) -> None:
        self.levels.append((at, audio.rms(pcm)))
        x = audio.to_float(pcm) * 10 ** (ECHO_DB / 20)
        if self._talk.size:
            n = min(x.size, self._talk.size)
            x[:n] += self._talk[:n]
            self._talk = self._talk[n:]
        self.c.queue_audio(audio.from_array(np.clip(x, -1, 1)))

    def stopped_after(self, t: float) -> float:
        """When our audio stopped after `t`: a silent frame, or no frame for 100 ms (the line
        is then quiet: keepalive frames only)."""
        prev = t
        for at, r in self.levels:
            if at < t:
                continue
            if at - prev > 0.1:
                return prev + 0.02
            if r <= 0.002:
                return at
            prev = at
        return float("inf")

    def level(self, start: float, end: float) -> float:
        vals = [r for at, r in self.levels if start <= at < end and r > 0.002]
        return statistics.median(vals) if vals else 0.0


async def talking(h: Any) -> tuple[AudioSocketCaller, EchoingLine]:
    c = h.caller()
    line = EchoingLine(c)
    await c.connect()
    await c.wait_agent_started(0, timeout_s=5)
    return c, line


async def test_our_own_echo_does_not_stop_or_duck_us(harness: Any) -> None:
    h = await harness(ECHO)
    c, line = await talking(h)
    start = time.monotonic()
    await asyncio.sleep(2.5)  # 2.5 s of our question, every frame of it echoed
    full = line.level(start, start + 0.3)
    assert full > 0
    # never ducked (-15 dB) nor stopped: every 0.5 s of the question at full volume
    for t in (0.5, 1.0, 1.5, 2.0):
        assert line.level(start + t - 0.5, start + t) > full * 0.8, t
    assert h.rt.metrics.barge_ins_total == 0
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert "caller interrupted" not in [e["text"] for e in rec["transcript"]]


async def test_a_caller_talking_over_us_with_echo_still_barges_in(harness: Any) -> None:
    h = await harness(ECHO)
    c, line = await talking(h)
    await asyncio.sleep(0.8)  # echo only, then the caller speaks over it
    assert h.rt.metrics.barge_ins_total == 0  # the echo alone did not stop us
    pcm, rate = audio.read_wav(SPEECH)
    assert rate == 8000
    onset = time.monotonic()
    line.talk(pcm)
    await asyncio.sleep(1.3)
    assert h.rt.metrics.barge_ins_total == 1
    # the speech starts 0.375 s into the recording: stopped once 250 ms of it were heard
    assert line.stopped_after(onset) - onset < 1.0
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert "caller interrupted" in [e["text"] for e in rec["transcript"]]
