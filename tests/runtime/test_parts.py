"""Fake providers, clause chunking, the SQLite store and webhook signatures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flowagent.providers import registry
from flowagent.providers.base import LlmMessage, ProviderError
from flowagent.providers.chunking import Chunker, chunk_stream
from flowagent.server.call_store import CallStore
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
    assert out == ["Sure,"]


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


async def test_call_store_round_trip(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    rec = {"uuid": "abc-1", "flow": "F", "started_at": 1.0, "outcome": "completed",
           "transcript": [{"who": "caller", "text": "hi"}]}
    await store.save(rec)
    await store.save({**rec, "uuid": "abc-2", "started_at": 2.0})
    assert (await store.get("abc-1")) == rec
    assert (await store.get("abc-2"))["uuid"] == "abc-2"
    rows = await store.list(10)
    assert [r["uuid"] for r in rows] == ["abc-2", "abc-1"] and rows[0]["turns"] == 1
    store.close()


def test_webhook_signature_verifies_only_the_same_body() -> None:
    sig = sign("k", b'{"a":1}')
    assert sig.startswith("sha256=") and verify("k", b'{"a":1}', sig)
    assert not verify("k", b'{"a":2}', sig) and not verify("j", b'{"a":1}', sig)


def test_calls_command_lists_and_shows_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    import json

    from flowagent.commands import calls

    store = CallStore(tmp_path / "c.db")
    store.save_sync({"uuid": "1234-abcd", "flow": "F", "started_at": 1.0, "duration_s": 2.0,
                     "outcome": "completed", "transcript": [
                         {"at": 0.0, "who": "agent", "text": "Hello", "state": "s",
                          "heard": "He"}]})
    store.close()
    assert calls.run(uuid=None, db=tmp_path / "c.db", limit=5, json_out=True) == 0
    assert json.loads(capsys.readouterr().out)[0]["uuid"] == "1234-abcd"
    assert calls.run(uuid="1234", db=tmp_path / "c.db", limit=5, json_out=False) == 0
    out = capsys.readouterr().out
    assert "Hello" in out and "heard: He" in out
    assert calls.run(uuid="nope", db=tmp_path / "c.db", limit=5, json_out=False) == 1
