"""Fake providers, clause chunking and webhook signatures (the store: test_store.py)."""

from __future__ import annotations

import asyncio

import pytest

from flowagent.providers import registry
from flowagent.providers.base import LlmMessage, ProviderError
from flowagent.providers.chunking import Chunker, chunk_stream
from flowagent.server.webhooks import sign, verify


def test_chunker_cuts_sentences_and_long_clauses_but_not_abbreviations() -> None:
    text = ("Hello Mr. Smith. We can move you on Friday, and the price includes packing, "
            "insurance and the van. Thanks")
    c = Chunker(min_clause_chars=30)
    out: list[str] = []
    for piece in text.split(" "):
        out += c.feed(piece + " ")
    out.append(c.flush())
    assert out[0] == "Hello Mr. Smith."
    assert out[1].endswith(",") and "Friday" in out[1]
    assert out[-1] == "Thanks"
    assert " ".join(out).split() == text.split()


def test_chunker_lets_a_short_first_clause_start_speech_early() -> None:
    c = Chunker()
    out: list[str] = []
    for tok in ["Sure", ",", " a", " two", " bedroom", " move", " costs", " about"]:
        out += c.feed(tok)
    # "Sure," plays for a moment: the next words go to TTS after four words, not at the end of
    # their clause (which left a silent hole after the first word: 120 ms at 200 ms a word,
    # bench/bench_tts_streaming.py --ms-per-word 200)
    assert out == ["Sure,", "a two bedroom move"]
    for tok in [" four", " hundred", " pounds,", " including", " packing."]:
        out += c.feed(tok)
    out += c.feed(" ")
    assert out[2:] == ["costs about four hundred pounds,", "including packing."]  # as before


async def test_chunk_stream_adapts_async_deltas() -> None:
    async def deltas():  # type: ignore[no-untyped-def]
        for d in ["One. ", "Two", " three."]:
            yield d

    assert [c async for c in chunk_stream(deltas())] == ["One.", "Two three."]


async def test_fake_providers_are_selectable_by_name_and_behave() -> None:
    tts = registry.create("tts", "fake", {"ms_per_word": 100})
    pcm = b"".join([c async for c in tts.synthesize("three short words", 8000)])
    assert len(pcm) == 3 * 1600
    llm = registry.create("llm", "fake", {"replies": ["Hello there."]})
    text = "".join([c.text async for c in llm.stream((LlmMessage("user", "hi"),))])
    assert text == "Hello there."
    vad = registry.create("vad", "fake", {}).open_stream(8000)
    from flowagent import audio

    assert vad.probability_now(audio.tone(20, 300)) > 0.9
    assert vad.probability_now(audio.silence(20)) == 0.0

    asr = registry.create("asr", "fake", {"transcripts": ["one", "two"], "fail_after": 2})
    stream = await asr.open_stream(8000, "en-GB")
    got: list[str] = []

    async def read() -> None:
        async for t in stream.transcripts():
            got.append(t.text)

    reader = asyncio.get_running_loop().create_task(read())
    await stream.flush()
    await stream.flush()
    await stream.flush()  # the third end of speech fails
    with pytest.raises(ProviderError):
        await asyncio.wait_for(reader, 2)
    assert got == ["one", "two"]
    await stream.close()


async def test_failing_fake_llm_raises_a_provider_error() -> None:
    llm = registry.create("llm", "fake", {"fail": True})
    with pytest.raises(ProviderError):
        async for _ in llm.stream(()):
            pass


def test_webhook_signature_verifies_only_the_same_body() -> None:
    sig = sign("k", b'{"a":1}')
    assert sig.startswith("sha256=") and verify("k", b'{"a":1}', sig)
    assert not verify("k", b'{"a":2}', sig) and not verify("j", b'{"a":1}', sig)
