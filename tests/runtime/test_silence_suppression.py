"""A line that stops sending audio when the caller stops talking (silence suppression on a trunk,
a held channel) still ends the caller's turn: over chan_websocket and over AudioSocket."""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from typing import Any

import pytest

from flowagent import audio
from flowagent.server.runtime import RuntimeConfig

pytestmark = pytest.mark.timeout(60)

ASR = {"asr": {"name": "fake", "options": {"transcripts": ["yes", "four"]}}}
#: basic.yaml's end of turn is 200 ms; the line is declared stopped after 200 ms without frames
ANSWER_WITHIN_S = 1.5


def speech(rate: int) -> bytes:
    return audio.tone(400, 300, rate, amplitude=0.4)


async def test_chan_websocket_with_silence_suppression_still_ends_the_callers_turn(
        harness: Any) -> None:
    h = await harness(config=RuntimeConfig(provider_overrides=ASR))
    call_id = str(uuidlib.uuid4())
    async with h.ws_caller(params={"uuid": call_id}, fault="silence_suppression") as c:
        assert await c.wait_agent_quiet(0.3, timeout_s=10)  # the greeting and the question
        for _ in range(2):  # "yes" -> the bedrooms question; "four" -> goodbye
            spoke = time.monotonic()
            c.say(speech(16000))  # then Asterisk sends nothing at all
            answered = await c.wait_agent_started(spoke + 0.3, timeout_s=5)
            assert answered - (spoke + 0.3) < ANSWER_WITHIN_S
            assert await c.wait_agent_quiet(0.3, timeout_s=10, after=answered)
        await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(call_id)
    assert rec["slots"]["bedrooms"] == 4 and rec["outcome"] == "completed"


async def test_audiosocket_line_that_goes_quiet_still_ends_the_callers_turn(harness: Any) -> None:
    h = await harness(config=RuntimeConfig(provider_overrides=ASR))
    c = h.caller(send_silence=False)
    c.queue_audio(bytes(320))  # one frame says the rate; then only speech is ever sent
    await c.connect()
    assert await c.wait_agent_quiet(0.3, timeout_s=10)
    for _ in range(2):
        spoke = time.monotonic()
        await c.say_audio(speech(8000))
        answered = await c.wait_agent_started(time.monotonic(), timeout_s=5)
        assert answered - (spoke + 0.3) < ANSWER_WITHIN_S
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=answered)
    await asyncio.wait_for(c.closed.wait(), 10)
    rec = await h.wait_record(c.uuid)
    assert rec["slots"]["bedrooms"] == 4 and rec["outcome"] == "completed"
    await c.close()
