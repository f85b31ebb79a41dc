"""Piper TTS: speech of plausible length at the call's rate, first sentence ready before the
rest, cancellation stops the work, streamed text is spoken sentence by sentence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from localhelpers import to_float

from flowagent.providers.local.linesim import word_errors
from flowagent.providers.local.piper import pop_sentences, speech_chunks


async def test_speech_has_plausible_length_and_level_at_8k(piper: Any) -> None:
    text = "Thanks for calling. What day would you like to move?"
    chunks = [c async for c in piper.synthesize(text, 8000)]
    assert len(chunks) >= 2  # sentence by sentence
    audio = b"".join(chunks)
    seconds = len(audio) / 2 / 8000
    assert 2.0 < seconds < 6.0  # 10 words at a normal speaking rate
    x = to_float(audio)
    assert 0.05 < float(np.sqrt(np.mean(x**2))) < 0.5  # audible, not clipped noise


async def test_rate_follows_the_call(piper: Any) -> None:
    a8 = b"".join([c async for c in piper.synthesize("Hello there.", 8000)])
    before = piper.sentences_made
    a16 = b"".join([c async for c in piper.synthesize("Hello there.", 16000)])
    # the same speech, resampled: equal duration to the sample, and no second synthesis
    assert abs(len(a16) / 2 / 16000 - len(a8) / 2 / 8000) < 2 / 8000
    assert piper.sentences_made == before
    # and really at 16 kHz: energy above 4 kHz that 8 kHz audio cannot carry
    x = to_float(a16)
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    assert spectrum[freqs > 4200].sum() > 0.01 * spectrum.sum()


async def test_cancelling_mid_reply_stops_further_sentences(piper: Any) -> None:
    text = " ".join(f"This is sentence number {w}." for w in
                    ("one", "two", "three", "four", "five", "six", "seven", "eight"))
    before = piper.sentences_made
    got: list[bytes] = []
    first = asyncio.Event()

    async def play() -> None:
        async for chunk in piper.synthesize(text, 8000):
            got.append(chunk)
            first.set()
            await asyncio.sleep(3600)  # the "player" is busy: barge-in cancels us here

    task = asyncio.create_task(play())
    await asyncio.wait_for(first.wait(), 30)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.5)  # anything still queued would have run by now
    made = piper.sentences_made - before
    assert len(got) == 1
    assert made <= 2  # the first, and at most the one already in flight — not all eight


async def test_streamed_text_is_spoken_per_sentence(piper: Any, whisper: Any) -> None:
    async def tokens() -> AsyncIterator[str]:
        for t in ["Thank you for ", "calling", ". We will see", " you on Friday."]:
            yield t

    chunks = [c async for c in piper.synthesize_stream(tokens(), 8000)]
    assert len(chunks) == 2  # "Thank you for calling." as soon as its full stop arrived
    heard = await whisper.transcribe(b"\0" * 4000 + b"".join(chunks) + b"\0" * 4000, 8000)
    err, n = word_errors("Thank you for calling. We will see you on Friday.", heard.text)
    assert err / n <= 0.25, heard.text


def test_sentence_helpers() -> None:
    assert pop_sentences("Hello there. How are") == (["Hello there."], "How are")
    assert speech_chunks("Thanks, I have booked your move for Friday the third. Bye.") == [
        "Thanks,", "I have booked your move for Friday the third.", "Bye."]
    assert speech_chunks("Okay, thanks.") == ["Okay, thanks."]


async def test_same_sentence_for_many_calls_is_made_once(piper: Any) -> None:
    text = "Please hold while I check that for you."
    before = piper.sentences_made

    async def one() -> bytes:
        return b"".join([c async for c in piper.synthesize(text, 8000)])

    first = await asyncio.gather(*(one() for _ in range(4)))  # four calls at the same moment
    again = await one()
    assert piper.sentences_made - before == 1
    assert all(a == first[0] for a in first) and again == first[0]
