"""Whisper's stock phrases ("Thank you for watching") are dropped as noise, with real Whisper on
real audio: Piper says the phrases (a voice Whisper hears plainly), the recorded test set shows
no real turn is touched, and the option in the flow turns the filter off."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flowagent.providers.local.hallucinations import HallucinationFilter
from flowagent.providers.local.linesim import add_noise
from flowagent.providers.local.whisper import WhisperAsr
from flowagent.providers.registry import get


async def _say(piper: Any, text: str) -> bytes:
    return b"".join([pcm async for pcm in piper.synthesize(text, 8000)])


async def _heard(asr: WhisperAsr, pcm: bytes) -> tuple[str, list[str]]:
    stream = await asr.open_stream(8000, "en")
    await stream.send_audio(pcm)
    await stream.flush()
    result = await stream._out.get()
    await stream.close()
    assert result is not None
    return result.text, stream.dropped


async def test_a_video_outro_is_dropped_as_nobody_speaking(whisper: Any, piper: Any) -> None:
    text, dropped = await _heard(whisper, await _say(piper, "Thank you for watching."))
    assert text == ""
    assert [d.lower().strip(".!") for d in dropped] == ["thank you for watching"]


async def test_a_clear_thank_you_from_the_caller_is_kept(whisper: Any, piper: Any) -> None:
    text, dropped = await _heard(whisper, await _say(piper, "Thank you."))
    assert text.lower().strip(".!") == "thank you" and dropped == []


async def test_real_turns_are_never_dropped(whisper: Any, speech_set: list) -> None:
    for entry in speech_set:
        text, dropped = await _heard(whisper, entry["pcm"])
        assert dropped == [] and text, entry["file"]


async def test_the_filter_can_be_turned_off_in_the_flow(whisper: Any, piper: Any) -> None:
    spec = get("asr", "whisper")
    assert spec is not None and spec.options["hallucination_filter"] == "boolean"
    off = WhisperAsr.from_options({"hallucination_filter": False})
    text, dropped = await _heard(off, await _say(piper, "Thank you for watching."))
    assert text.lower().strip(".!") == "thank you for watching" and dropped == []


async def test_a_thank_you_in_heavy_line_noise_is_still_kept(whisper: Any, piper: Any) -> None:
    # Whisper hears a spoken "thank you" confidently even 3 dB under the noise, so the unsure
    # tier (which drops "thank you" only below 0.6 confidence) leaves a real caller alone
    pcm = await _say(piper, "Thank you.")
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    noisy = add_noise(samples, 8000, -3.0, np.random.default_rng(7))
    text, dropped = await _heard(whisper, np.clip(noisy, -32768, 32767).astype("<i2").tobytes())
    assert text.lower().strip(".!") == "thank you" and dropped == []


@pytest.mark.parametrize(("text", "confidence", "dropped"), [
    ("Thank you for watching!", 0.95, True),
    ("Thanks for watching. Thanks for watching.", 0.9, True),
    ("Subtitles by the Amara.org community", 0.9, True),
    ("[BLANK_AUDIO]", 0.9, True),
    ("you", 0.3, True),
    ("You.", 0.9, False),
    ("Thank you.", 0.4, True),
    ("Thank you.", 0.85, False),
    ("Thank you for calling, I need a quote.", 0.2, False),
    ("Thank you for watching my house while I move", 0.2, False),
    ("", 0.0, False),
])
def test_only_a_whole_transcript_that_is_a_stock_phrase_is_dropped(
        text: str, confidence: float, dropped: bool) -> None:
    assert HallucinationFilter.build().drops(text, confidence) is dropped


def test_the_lists_come_from_the_flow_options() -> None:
    f = HallucinationFilter.build(always=["Goodbye from the robot"], unsure=[],
                                  unsure_below=0.9)
    assert f.drops("Goodbye from the robot.", 0.99)
    assert not f.drops("Thank you for watching", 0.99)  # replaced, not added to
    assert not f.drops("Thank you", 0.1)
