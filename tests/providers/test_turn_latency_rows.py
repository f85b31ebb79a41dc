"""Latency rows count what the caller waits (issue 20): from the end of their last speech frame
to our first frame, also when Deepgram's endpointing (300 ms) ends the turn before our silence
rule (600 ms) — before, such rows started at the final's arrival and said `asr_final 0.0`.

Real TCP AudioSocket with the line's timing (`AudioSocketCaller`), the real server, the Deepgram
fake endpointing on the audio's energy, Cartesia's fake; the agent answers every turn with two
prompts, so a row closed by the reply's second prompt would show up as a second row."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from providers.fakes import FakeCartesia, FakeDeepgram
from providers.records import wait_record
from providers.test_e2e_cloud import serve

pytestmark = pytest.mark.timeout(60)

SPEECH = audio.tone(300, 400, 8000, amplitude=0.4)
TURNS = 3


def write_flow(tmp_path: Path, thanks: str = "Thank you.", again: str = "Anything else?",
               expected_answer: bool = False) -> Path:
    """Three caller turns, each answered with two prompts (`thanks`, then `again`). Any words
    answer them, so with `expected_answer` on our end of turn comes after 200 ms of silence;
    off, only after 600 ms (Deepgram's endpointing, 300 ms, comes first)."""
    flow = {
        "flowagent": 1, "name": "Latency rows", "start": "greet",
        "settings": {"end_of_turn_ms": 600, "no_input": {"timeout_s": 30},
                     "expected_answer": {"enabled": expected_answer}},
        "states": {
            "greet": {'ask': 'Hello?', 'next': [{'go': 'thanks1'}]},
            "thanks1": {'say': thanks, 'next': 'again1'},
            "again1": {'ask': again, 'next': [{'go': 'thanks2'}]},
            "thanks2": {'say': thanks, 'next': 'again2'},
            "again2": {'ask': again, 'next': [{'go': 'thanks3'}]},
            "thanks3": {'say': thanks, 'next': 'bye'},
            "bye": {'say': 'Goodbye, and thank you for calling.', 'end': True},
        },
    }
    path = tmp_path / "latency_rows.yaml"
    path.write_text(yaml.safe_dump(flow, sort_keys=False))
    return path


def providers(dg: FakeDeepgram, ct: FakeCartesia) -> dict[str, Any]:
    return {
        "asr": {"name": "deepgram", "options": {"api_key": dg.api_key, "url": dg.url,
                                                "endpointing_ms": 300}},
        "tts": {"name": "cartesia", "options": {"api_key": ct.api_key, "url": ct.url,
                                                "voice_id": "voice-uk-1"}},
        "vad": {"name": "fake"},
    }


async def three_turns(tmp_path: Path, *, expected_answer: bool
                      ) -> tuple[list[float], list[dict[str, Any]], int]:
    """Three "yes please" turns over real TCP: (ms each caller waited from their last speech
    frame out to our first audio in, the call's latency rows, Finalize requests Deepgram got)."""
    waited: list[float] = []
    async with (FakeDeepgram(["yes please"] * TURNS, turns="energy") as dg,
                FakeCartesia(ms_per_word=60) as ct,
                serve(write_flow(tmp_path, expected_answer=expected_answer), providers(dg, ct),
                      tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=15)  # "Hello?"
        for _ in range(TURNS):
            said = time.monotonic()
            await c.say_audio(SPEECH)
            first = await c.wait_agent_started(said, timeout_s=10)
            waited.append((first - c.last_speech_sent) * 1000)
            assert await c.wait_agent_quiet(0.5, timeout_s=15, after=said)
        await c.hangup()
        rec = await wait_record(store, c.uuid)
        await c.close()
    rows = rec["latency"]
    print(waited, [(r["asr_final_ms"], r["first_frame_ms"]) for r in rows])
    return waited, rows, dg.finalizes


async def test_rows_start_at_the_callers_end_of_speech_when_deepgram_ends_the_turn(
        tmp_path: Path) -> None:
    waited, rows, finalizes = await three_turns(tmp_path, expected_answer=False)
    assert finalizes == 0  # Deepgram's endpointing ended every turn, not our silence rule
    assert len(rows) == TURNS  # one row per caller turn, none for the reply's second prompt
    assert {r["turn_end"] for r in rows} == {"recogniser"}
    for row, at_caller in zip(rows, waited, strict=True):
        assert row["asr_final_ms"] >= 250  # the endpointing wait is in the row (was 0.0)
        assert abs(row["first_frame_ms"] - at_caller) <= 40, (row, at_caller)


async def test_an_answer_in_deepgrams_interim_ends_the_turn_before_its_endpointing(
        tmp_path: Path) -> None:
    """`expected_answer` with a streaming recogniser: at a 120 ms pause the interim words
    ("yes please") already answer the question, so our end of turn comes after 200 ms of
    silence and asks Deepgram for the final (`Finalize`) instead of waiting for its 300 ms
    endpointing; the row still counts from the caller's end of speech."""
    waited, rows, finalizes = await three_turns(tmp_path, expected_answer=True)
    assert finalizes == TURNS  # our end of turn, every time
    assert len(rows) == TURNS
    assert {r["turn_end"] for r in rows} == {"answer"}
    for row, at_caller in zip(rows, waited, strict=True):
        assert 150 <= row["asr_final_ms"] < 290, row  # before Deepgram's 300 ms endpointing
        assert abs(row["first_frame_ms"] - at_caller) <= 40, (row, at_caller)


async def test_a_tail_our_vad_hears_after_deepgrams_endpoint_makes_no_phantom_row(
        tmp_path: Path) -> None:
    """The caller's words end (loud), then a quieter tail (a breath, line noise) that our VAD
    takes for speech and Deepgram's endpointer does not: Deepgram ends the turn, our VAD opens
    another one and ends it later (our `Finalize`, answered with no words). That second "turn"
    has no reply, so it has no row, and the reply's second prompt does not close one."""
    tail = audio.tone(700, 400, 8000, amplitude=0.015)  # VAD: speech; Deepgram fake: quiet
    # both prompts are made during the call (templated), 0.8 s to first audio each: the tail
    # after Deepgram's endpoint opens a turn of our VAD's before the agent is heard, and our
    # silence rule ends it in the hole between the two prompts
    flow = write_flow(tmp_path, "Thank you, {{ call.uuid[:4] }}.",
                      "Anything else, {{ call.uuid[:4] }}?")
    async with (FakeDeepgram(["yes please"] * TURNS, turns="energy") as dg,
                FakeCartesia(ms_per_word=100, first_audio_s=0.8) as ct,
                serve(flow, providers(dg, ct), tmp_path) as (server, store)):
        c = AudioSocketCaller("127.0.0.1", server.address[1])
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=15)  # "Hello?"
        for _ in range(TURNS):
            said = time.monotonic()
            await c.say_audio(SPEECH + tail)
            await c.wait_agent_started(said, timeout_s=10)
            assert await c.wait_agent_quiet(1.5, timeout_s=15, after=said)
        await c.hangup()
        rec = await wait_record(store, c.uuid)
        await c.close()
    rows = rec["latency"]
    print(dg.finalizes, [(r["asr_final_ms"], r["first_frame_ms"]) for r in rows])
    assert dg.finalizes >= 1  # our VAD did end a turn of its own after Deepgram's
    assert len(rows) == TURNS
