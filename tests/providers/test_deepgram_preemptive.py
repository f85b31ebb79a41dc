"""Preemptive replies with the real Deepgram client, whole calls over AudioSocket.

The Deepgram fake streams `is_final: false` Results while the caller's audio arrives (as the
real service does with `interim_results=true`), so when our VAD decides the caller has stopped
the session already knows their words, answers them on a fork of the engine (Groq fake, then
Cartesia fake into a held buffer) and plays that answer once the final transcript — Deepgram's
answer to our `Finalize` — agrees. Our VAD ends the turn (end_of_turn_ms 200) before Deepgram's
own endpointing (300 ms), the usual order on a phone line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.runner.speculation import normalise
from providers.fakes import FakeCartesia, FakeDeepgram, FakeOpenAIChat
from providers.records import wait_record
from providers.test_e2e_cloud import serve

pytestmark = pytest.mark.timeout(60)

SPEECH = audio.tone(300, 400, 8000, amplitude=0.4)  # 300 ms (at 400 Hz) of "the caller talks"
MS_PER_WORD = 40  # Cartesia fake: each word of a reply is 40 ms of tone


def write_flow(tmp_path: Path, end_of_turn_ms: int = 200) -> Path:
    """Ask a question, then hand every answer to the LLM and speak its reply (providers come
    from the overrides, as for flows/removals.yaml)."""
    flow = {
        "flowagent": 1,
        "name": "Deepgram preemptive",
        "start": "greet",
        "settings": {"end_of_turn_ms": end_of_turn_ms, "preemptive_generation": True,
                     "barge_in": {"enabled": True, "min_speech_ms": 60},
                     "no_input": {"timeout_s": 30}},
        "states": {
            "greet": {"ask": "Hello?", "next": [{"go": "chat"}]},
            "chat": {"llm": {"instructions": "Answer.", "max_turns": 5}, "next": "bye"},
            "bye": {"say": "Goodbye.", "end": True},
        },
    }
    path = tmp_path / "deepgram_preemptive.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def providers(dg: FakeDeepgram, ct: FakeCartesia, llm: FakeOpenAIChat) -> dict[str, Any]:
    """The fakes' addresses and keys (as the operator's overrides: never in the flow file)."""
    return {
        "asr": {"name": "deepgram", "options": {"api_key": dg.api_key, "url": dg.url,
                                                "endpointing_ms": 300}},
        "tts": {"name": "cartesia", "options": {"api_key": ct.api_key, "url": ct.url,
                                                "voice_id": "voice-uk-1"}},
        "llm": {"name": "groq", "options": {"api_key": llm.api_key, "base_url": llm.url}},
        "vad": {"name": "fake"},
    }


def last_user(request: dict[str, Any]) -> str:
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "user"][-1]


def heard_speech_ms(c: AudioSocketCaller, after: float) -> int:
    """How much agent speech (non-silent 20 ms frames) the caller received after `after`."""
    return sum(20 for f in c.stats.frames if f.at > after and f.speech)


async def call(tmp_path: Path, dg: FakeDeepgram, ct: FakeCartesia, llm: FakeOpenAIChat,
               turns: int, end_of_turn_ms: int = 200) -> tuple[dict[str, Any], list[int]]:
    """Greeting, then `turns` caller turns each answered before the next; returns the call
    record and the agent speech (ms) heard after each turn."""
    heard: list[int] = []
    async with serve(write_flow(tmp_path, end_of_turn_ms), providers(dg, ct, llm),
                     tmp_path) as (server, store):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=15)  # "Hello?"
        for _ in range(turns):
            said = time.monotonic()
            await c.say_audio(SPEECH)
            await c.wait_agent_started(said, timeout_s=10)
            assert await c.wait_agent_quiet(0.4, timeout_s=15, after=said)
            heard.append(heard_speech_ms(c, said))
        await c.hangup()
        rec = await wait_record(store, c.uuid)
        await c.close()
    return rec, heard


def rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in rec["latency"] if "preemptive" in r]


def agent_lines(rec: dict[str, Any]) -> list[str]:
    return [e["text"] for e in rec["transcript"] if e["who"] == "agent"]


async def test_deepgram_interims_during_speech_make_every_turn_a_hit(tmp_path: Path) -> None:
    finals = ["what does a move cost", "and how long does it take"]
    replies = ["A three bedroom move costs four hundred and fifty pounds.",
               "It usually takes one day."]
    async with (FakeDeepgram(finals, turns="energy") as dg,
                FakeCartesia(ms_per_word=MS_PER_WORD) as ct,
                FakeOpenAIChat(replies, token_s=0.005) as llm):
        rec, heard = await call(tmp_path, dg, ct, llm, turns=2)
    # Deepgram streamed growing interims during the speech, the last one the whole sentence
    assert dg.params["interim_results"] == ["true"]
    first, second = dg.interims.index(finals[0]), dg.interims.index("and how long")
    assert dg.interims[0] == "what does a" and first < second
    assert dg.interims[-1] == finals[1]
    assert dg.finalizes >= 2  # our VAD ended each turn and asked Deepgram to finalise
    # every turn was answered from the prepared reply...
    assert [r["preemptive"] for r in rows(rec)] == ["hit", "hit"]
    # ...asked for once per turn (the prepared request was kept, never asked again)
    assert [last_user(r) for r in llm.requests] == finals
    # the caller heard both replies, each once, and the record keeps the final words
    assert [e["text"] for e in rec["transcript"] if e["who"] == "caller"] == finals
    assert [a for a in agent_lines(rec) if a in replies] == replies
    for ms, reply in zip(heard, replies, strict=True):
        assert abs(ms - len(reply.split()) * MS_PER_WORD) <= 80, (ms, reply)


async def test_an_interim_short_of_the_final_is_a_miss_and_the_final_is_answered(
        tmp_path: Path) -> None:
    final = "what does a move cost"
    prepared = ("Sorry, what does a move involve? We pack, load, drive and unpack everything "
                "for you, from the first box to the last one.")
    real = "About four hundred pounds."
    # one word per 75 ms of speech: after 300 ms the recogniser has only "what does a move"
    async with (FakeDeepgram([final], turns="energy", ms_per_word=75) as dg,
                FakeCartesia(ms_per_word=MS_PER_WORD) as ct,
                FakeOpenAIChat([prepared, real], token_s=0.005) as llm):
        rec, heard = await call(tmp_path, dg, ct, llm, turns=1)
    assert dg.interims[-1] != final and final.startswith(dg.interims[-1])
    [row] = rows(rec)
    assert row["preemptive"] == "miss"
    assert row["preemptive_miss"] == "the final transcript differs"
    # the interim words were asked about ahead, the final words after: the final's answer plays
    assert [last_user(r) for r in llm.requests] == [dg.interims[-1], final]
    assert real in agent_lines(rec)
    assert normalise(prepared) not in [normalise(a) for a in agent_lines(rec)]
    assert [e["text"] for e in rec["transcript"] if e["who"] == "caller"] == [final]
    # what was heard is the short real answer, not the long prepared one
    assert abs(heard[0] - len(real.split()) * MS_PER_WORD) <= 80, heard


async def test_preemptive_replies_engage_when_deepgrams_endpointing_ends_the_turn(
        tmp_path: Path) -> None:
    """The shipped removals settings: our silence rule 600 ms, Deepgram's endpointing 300 ms, so
    Deepgram always ends the turn and our end of turn (where preparing started) never comes.
    The answer is now prepared at 150 ms of silence, before Deepgram's final (was: 0 hits)."""
    finals = ["what does a move cost", "and how long does it take"]
    replies = ["A three bedroom move costs four hundred and fifty pounds.",
               "It usually takes one day."]
    async with (FakeDeepgram(finals, turns="energy") as dg,
                FakeCartesia(ms_per_word=MS_PER_WORD) as ct,
                FakeOpenAIChat(replies, token_s=0.005) as llm):
        rec, heard = await call(tmp_path, dg, ct, llm, turns=2, end_of_turn_ms=600)
    assert all(ms > 0 for ms in heard)
    assert dg.finalizes == 0  # Deepgram's endpointing ended both turns
    assert [r["preemptive"] for r in rows(rec)] == ["hit", "hit"]
    assert len(llm.requests) == 2  # prepared once per turn, never asked again
    assert agent_lines(rec)[1:3] == replies
