"""Preemptive reply generation, over real TCP against the real server with fake providers.

The fake ASR sends an interim transcript while the caller speaks (`interim_ms`), the fake LLM
echoes what it was asked ("you asked <words>"), and the fake TTS gives every word its own pitch
(`word_tones`), so each test can tell from the audio the caller received which words were
spoken. Order is asserted from the fakes' event logs (process-wide sequence numbers), never from
how long something took.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from aiohttp import web
from loopback import serve_app

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.dialogue import actions as act
from flowagent.dialogue import events as ev
from flowagent.dialogue.engine import Engine
from flowagent.flow.compiler import load_flow
from flowagent.providers.fake import FakeEvent, word_tone_hz
from flowagent.runner.speculation import HeldAudio, normalise, same_plan, speech_plan

pytestmark = pytest.mark.timeout(60)

SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)  # "the caller talks" for the energy VAD
FINAL = "What does a move cost?"
REPLY = "you asked what does a move cost"
SPEC_MISS = "you asked what does a move"  # the reply to the interim when it lacks "cost"


def write_flow(tmp_path: Path, *, asr: dict[str, Any] | None = None,
               llm: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
               states: dict[str, Any] | None = None, tools: dict[str, Any] | None = None,
               context: dict[str, Any] | None = None) -> Path:
    """A flow: ask a question, then hand the answer to an echoing LLM (unless `states`)."""
    flow: dict[str, Any] = {
        "flowagent": 1,
        "name": "Preemptive",
        "start": "greet",
        "providers": {
            "asr": {"name": "fake", "options": {"latency_ms": 150, "interim_ms": 100,
                                                "transcripts": [FINAL], **(asr or {})}},
            "llm": {"name": "fake", "options": {"echo": True, **(llm or {})}},
            "tts": {"name": "fake", "options": {"ms_per_word": 60, "word_tones": True}},
            "vad": {"name": "fake"},
        },
        "settings": {"end_of_turn_ms": 200, "barge_in": {"enabled": True, "min_speech_ms": 60},
                     "no_input": {"timeout_s": 30}, **(settings or {})},
        "states": states or {
            "greet": {"ask": "Hello?", "next": [{"go": "chat"}]},
            "chat": {"llm": {"instructions": "Answer.", "max_turns": 5}, "next": "bye"},
            "bye": {"say": "Goodbye.", "end": True},
        },
    }
    if tools:
        flow["tools"] = tools
    if context:
        flow["context"] = {"data": context}
    path = tmp_path / "preemptive.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def fakes(h: Any) -> tuple[Any, Any, Any]:
    p = h.rt.flows.pick("").providers
    return p.asr, p.llm, p.tts


def only(events: list[FakeEvent], what: str, text: str | None = None) -> list[FakeEvent]:
    return [e for e in events if e.what == what and (text is None or e.text == text)]


def heard_words(c: AudioSocketCaller, after: float, vocabulary: str) -> list[str]:
    """The words the caller heard after monotonic time `after`, decoded from the word pitches
    (each word is 60 ms = 3 frames of one tone; consecutive frames of a word count once)."""
    words = vocabulary.split()
    tones = {word_tone_hz(w): w for w in words}
    assert len(tones) == len({normalise(w) for w in words}), "two test words share a pitch"
    out: list[str] = []
    prev = ""
    offset = 0
    for f in c.stats.frames:
        chunk = c.agent_audio[offset : offset + f.size]
        offset += f.size
        if f.at <= after or not f.speech:
            prev = ""
            continue
        x = np.frombuffer(chunk, dtype="<i2").astype(np.float64)
        peak = float(np.argmax(np.abs(np.fft.rfft(x)))) * 8000 / len(x)
        hz = min(tones, key=lambda t: abs(t - peak))
        if abs(hz - peak) > 25:
            continue  # a fade-out frame
        if tones[hz] != prev:
            out.append(tones[hz])
            prev = tones[hz]
    return out


def turn_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in rec["latency"] if "preemptive" in r]


async def one_turn(h: Any, speech: bytes = SPEECH) -> tuple[AudioSocketCaller, float]:
    """Connect, let the greeting finish, speak; returns the caller and when it started."""
    c = h.caller()
    await c.connect()
    assert await c.wait_agent_quiet(0.3)
    said = time.monotonic()
    await c.say_audio(speech)
    return c, said


# ---------------------------------------------------------------------------------------------


async def test_hit_the_reply_is_asked_for_before_the_final_and_heard_once(
        harness: Any, tmp_path: Path) -> None:
    h = await harness(write_flow(tmp_path))
    c, said = await one_turn(h)
    assert await c.wait_agent_quiet(0.4, after=said)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    asr, llm, _ = fakes(h)
    interim = only(asr.events, "interim")
    final = only(asr.events, "final", FINAL)
    asked = only(llm.events, "llm_request")
    assert [e.text for e in interim] == ["what does a move cost"]  # lower case, no "?"
    assert len(final) == 1 and len(asked) == 1  # one LLM request: the prepared one was kept
    assert interim[0].seq < asked[0].seq < final[0].seq  # asked before the final words came
    assert heard_words(c, said, REPLY) == REPLY.split()
    # the record comes from the final words; the turn is marked as a hit
    assert [e["text"] for e in rec["transcript"] if e["who"] == "caller"] == [FINAL]
    assert REPLY in [e["text"] for e in rec["transcript"] if e["who"] == "agent"]
    rows = turn_rows(rec)
    assert [r["preemptive"] for r in rows] == ["hit"]
    assert rows[0]["first_frame_ms"] >= rows[0]["asr_final_ms"]  # counted from end of speech
    _, metrics = await h.http("GET", "/metrics")
    assert 'flowagent_latency_seconds_count{stage="turn_preemptive_hit"} 1' in metrics


async def test_miss_the_final_words_are_answered_and_the_prepared_reply_never_plays(
        harness: Any, tmp_path: Path) -> None:
    h = await harness(write_flow(tmp_path, asr={"interim_mismatch": 1.0}))
    c, said = await one_turn(h)
    assert await c.wait_agent_quiet(0.4, after=said)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    asr, llm, tts = fakes(h)
    final = only(asr.events, "final", FINAL)[0]
    [prepared] = only(llm.events, "llm_request", "what does a move")
    [real] = only(llm.events, "llm_request", FINAL)
    assert prepared.seq < final.seq < real.seq
    assert only(tts.events, "tts", SPEC_MISS)  # it was prepared...
    assert heard_words(c, said, REPLY) == REPLY.split()  # ...but only the real answer played
    agent = [normalise(e["text"]) for e in rec["transcript"] if e["who"] == "agent"]
    assert REPLY in agent and SPEC_MISS not in agent
    rows = turn_rows(rec)
    assert [r["preemptive"] for r in rows] == ["miss"]
    assert rows[0]["preemptive_miss"] == "the final transcript differs"


async def test_speaking_again_cancels_the_reply_being_prepared(
        harness: Any, tmp_path: Path) -> None:
    # a slow LLM and a slow final: the caller starts again while the reply is being prepared
    h = await harness(write_flow(tmp_path, asr={"latency_ms": 1000},
                                 llm={"first_token_ms": 500}))
    pause = bytes(2 * 8 * 300)  # 300 ms of silence: our end of speech is at 200 ms
    c, said = await one_turn(h, SPEECH + pause + SPEECH)
    assert await c.wait_agent_quiet(0.4, after=said + 1.0, timeout_s=20)
    await c.hangup()
    asr, llm, tts = fakes(h)
    first_final = only(asr.events, "final")[0]
    prepared = only(llm.events, "llm_request")[0]
    cancelled = only(llm.events, "llm_cancelled")
    assert prepared.seq < first_final.seq
    # cancelled as soon as the caller spoke again, before any final words came...
    assert cancelled and prepared.seq < cancelled[0].seq < first_final.seq
    # ...and before any of it was synthesised, so none of it can have played
    assert not [e for e in tts.events if prepared.seq < e.seq < cancelled[0].seq]


async def test_hanging_up_cancels_the_reply_being_prepared(harness: Any, tmp_path: Path) -> None:
    h = await harness(write_flow(tmp_path, asr={"latency_ms": 1000},
                                 llm={"first_token_ms": 5000}))
    c, _ = await one_turn(h)
    asr, llm, _ = fakes(h)
    for _ in range(200):  # until the reply is being prepared (the LLM has been asked)
        if only(llm.events, "llm_request"):
            break
        await asyncio.sleep(0.01)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert rec["outcome"] == "hangup_by_caller"
    assert only(llm.events, "llm_cancelled")  # the preparation was cancelled with the call
    assert not only(asr.events, "final") and not h.rt.sessions


async def test_barge_in_on_a_prepared_reply_cuts_it_and_stops_its_llm(
        harness: Any, tmp_path: Path) -> None:
    story = ("Sure. Moving house has many steps. First we pack your things. Then we load the "
             "van. Then we drive to the new house. Then we unload. And then we unpack.")
    h = await harness(write_flow(tmp_path, llm={"echo": False, "replies": [story],
                                                "token_ms": 80}))
    c, said = await one_turn(h)
    heard_at = await c.wait_agent_started(said + 0.4, timeout_s=10)
    await asyncio.sleep(0.3)  # a few words into the prepared reply
    c.queue_audio(SPEECH)  # the caller talks over it
    assert await c.wait_agent_quiet(0.5, after=heard_at, timeout_s=20)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    asr, llm, _ = fakes(h)
    final = only(asr.events, "final")[0]
    asked = only(llm.events, "llm_request")
    assert asked and asked[0].seq < final.seq  # the reply was a prepared one...
    cancelled = only(llm.events, "llm_cancelled")
    assert cancelled and cancelled[0].seq > final.seq  # ...cut while live: its stream closed
    assert turn_rows(rec)[0]["preemptive"] == "hit"
    assert any(e["text"] == "caller interrupted" for e in rec["transcript"])
    [cut] = [e for e in rec["transcript"] if e["who"] == "agent" and e["heard"] is not None]
    assert cut["heard"] and story.startswith(cut["heard"]) and cut["heard"] != story


@pytest.fixture
async def price_api() -> Any:
    """A pricing API on loopback that notes when each request arrived (monotonic)."""
    seen: list[float] = []

    async def quote(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        await request.read()
        return web.json_response({"price": 450})

    app = web.Application()
    app.add_routes([web.post("/quote", quote)])
    async with serve_app(app) as url:
        yield url, seen


@pytest.mark.parametrize("mismatch", [0.0, 1.0])
async def test_a_tool_call_is_never_made_ahead_of_the_final(
        harness: Any, tmp_path: Path, price_api: Any, mismatch: float) -> None:
    url, seen = price_api
    path = write_flow(
        tmp_path, asr={"transcripts": ["Yes please."], "interim_mismatch": mismatch},
        context={"api": url},
        tools={"get_quote": {"method": "POST", "url": "{{ context.api }}/quote",
                             "body": {"ask": "price"}, "timeout_s": 5,
                             "save": {"price": "response.price"}}},
        states={
            "greet": {"ask": "Shall I check the price?", "next": [{"go": "quote"}]},
            "quote": {"say": "One moment.", "call": "get_quote", "next": "offer"},
            "offer": {"say": "It costs {{ vars.price }} pounds.", "end": True},
        })
    h = await harness(path)
    c, said = await one_turn(h)
    await asyncio.wait_for(c.closed.wait(), 15)
    rec = await h.wait_record(c.uuid)
    asr, _, _ = fakes(h)
    final = only(asr.events, "final")[0]
    assert only(asr.events, "interim")[0].seq < final.seq
    assert len(seen) == 1 and seen[0] > final.at  # exactly one request, after the final
    assert len(rec["tool_calls"]) == 1
    heard = "one moment it costs 450 pounds"
    assert heard_words(c, said, heard) == heard.split()
    assert turn_rows(rec)[0]["preemptive"] == ("hit" if mismatch == 0 else "miss")


async def test_setting_off_means_nothing_is_prepared(harness: Any, tmp_path: Path) -> None:
    h = await harness(write_flow(tmp_path, settings={"preemptive_generation": False}))
    c, said = await one_turn(h)
    assert await c.wait_agent_quiet(0.4, after=said)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    asr, llm, _ = fakes(h)
    assert only(asr.events, "interim")  # the words were known early...
    [asked] = only(llm.events, "llm_request")
    assert asked.seq > only(asr.events, "final")[0].seq  # ...but nothing was asked before
    assert heard_words(c, said, REPLY) == REPLY.split()
    assert turn_rows(rec) == [] and rec["latency"]


# -- the pure pieces ----------------------------------------------------------------------------


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  What does a move COST?! ") == normalise("what does a move cost")
    assert normalise("Yes, please.") == "yes please"
    assert normalise("it's") != normalise("its")


def test_a_fork_answers_without_touching_the_real_call(tmp_path: Path) -> None:
    compiled = load_flow(write_flow(tmp_path))
    engine = Engine(compiled, llm_available=True)
    engine.start(ev.CallInfo(uuid="u1"))
    before = (engine.state, len(engine.record.transcript), engine.listening)
    fork = engine.fork()
    plan = speech_plan(fork.handle(ev.UserUtterance("what does a move cost", at=1.0)))
    assert [type(a) for a in plan] == [act.LlmRequest] and fork.state == "chat"
    assert (engine.state, len(engine.record.transcript), engine.listening) == before
    real = speech_plan(engine.handle(ev.UserUtterance(FINAL, at=1.2)))
    assert same_plan(plan, real)  # same answer, words compared normalised
    assert engine.record.transcript[-1].text == FINAL


def test_speech_plan_stops_at_the_first_side_effect() -> None:
    say = act.Say(1, "One moment.")
    tool = act.CallTool(2, "get_quote", {"url": "x"}, 5.0, 0)
    later = act.Say(3, "More.")
    assert speech_plan([act.StateEntered("q"), say, tool, later]) == [say]
    assert not same_plan([say], [act.Say(1, "One moment!")])


def test_held_audio_is_released_in_order_then_passes_through() -> None:
    class Out:
        def __init__(self) -> None:
            self.got: list[tuple[int, bytes | None]] = []

        def add(self, say_id: int, pcm: bytes) -> None:
            self.got.append((say_id, pcm))

        def end(self, say_id: int) -> None:
            self.got.append((say_id, None))

    held, out = HeldAudio(), Out()
    held.add(1, b"ab")
    held.end(1)
    held.add(2, b"cd")
    assert out.got == [] and held.held_bytes == 4
    held.release(out)
    held.add(2, b"ef")
    assert out.got == [(1, b"ab"), (1, None), (2, b"cd"), (2, b"ef")]
