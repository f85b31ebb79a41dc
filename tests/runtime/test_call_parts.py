"""Each part of a call on its own, through its hooks, without TCP: the turn rule, the line, the
listener and the speaker. (Whole calls over real sockets are in test_calls.py and friends.)"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from flowagent import audio
from flowagent.asterisk.audiosocket import Kind, encode, encode_dtmf, encode_uuid
from flowagent.dialogue.actions import LlmRequest, Say
from flowagent.dialogue.events import LlmResult, ProviderFailed
from flowagent.flow.compiler import Settings, load_flow
from flowagent.providers.base import (
    LlmMessage,
    ProviderError,
    TurnTuning,
    VadCapabilities,
    VadStreamBase,
)
from flowagent.providers.fake import FakeAsr, FakeLlm, FakeTts
from flowagent.runner.audiosocket_line import AudioSocketLine
from flowagent.runner.call_tasks import CallTasks
from flowagent.runner.listener import Listener
from flowagent.runner.player import Player
from flowagent.runner.served_flow import FlowEntry, Providers
from flowagent.runner.speaker import Speaker
from flowagent.runner.turn_taking import TurnRules, TurnSignal, TurnTaker

SILENCE = audio.silence(20)
SPEECH = audio.tone(20, 300, amplitude=0.4)


# ---------------------------------------------------------------------------------------------
# the turn rule
# ---------------------------------------------------------------------------------------------


def run_rule(rules: TurnRules, probs: list[float], playing: bool = False) -> list[str]:
    taker = TurnTaker(rules)
    out = []
    for i, p in enumerate(probs):
        s = taker.update(p, 20, playing)
        if s is None:
            continue
        out.append(f"{s.value}@{(i + 1) * 20}")
        if s is TurnSignal.END_OF_TURN:
            taker.end()
        else:
            taker.begin()
            playing = False
    return out


def test_turn_rule_opens_and_ends_turns_from_the_flow_settings() -> None:
    rules = TurnRules.for_flow(Settings(end_of_turn_ms=400))
    probs = [0.0] * 5 + [0.9] * 10 + [0.1] * 30
    assert run_rule(rules, probs) == ["speech_start@200", "end_of_turn@700"]
    # a click (one frame) never opens a turn; 60 ms of quiet forgets it
    assert run_rule(rules, [0.9, 0.0, 0.0, 0.0, 0.9, 0.0] * 10) == []


def test_turn_rule_is_stricter_while_we_play() -> None:
    rules = TurnRules.for_flow(Settings(barge_in_min_speech_ms=200, barge_in_sensitivity=0.5))
    assert rules.barge_in_threshold == 0.75
    # p = 0.6 is speech when we are quiet, not while we play (our own echo)
    assert run_rule(rules, [0.6] * 20, playing=True) == []
    assert run_rule(rules, [0.6] * 20)[:1] == ["speech_start@100"]
    assert run_rule(rules, [0.9] * 20, playing=True)[:1] == ["barge_in@200"]


def test_vad_options_override_the_flow_settings_where_given() -> None:
    rules = TurnRules.for_flow(Settings(end_of_turn_ms=600),
                               TurnTuning(min_silence_ms=300, neg_threshold=0.3))
    assert rules.end_of_turn_ms == 300 and rules.neg_threshold == 0.3
    # hysteresis: 0.4 is neither speech nor silence, so the turn does not end on it
    probs = [0.9] * 10 + [0.4] * 40
    assert run_rule(rules, probs) == ["speech_start@100"]


# ---------------------------------------------------------------------------------------------
# the line
# ---------------------------------------------------------------------------------------------


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class LineRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_audio(self, pcm: bytes) -> None:
        self.events.append(("audio", len(pcm)))

    def on_dtmf(self, digit: str) -> None:
        self.events.append(("dtmf", digit))

    def on_rate_change(self, sample_rate: int) -> None:
        self.events.append(("rate", sample_rate))

    def on_line_ended(self, by: str, reason: str) -> None:
        self.events.append(("ended", by))

    def on_first_frame(self, say_id: int, at: float) -> None:
        self.events.append(("first_frame", say_id))

    def on_say_done(self, say_id: int) -> None:
        self.events.append(("done", say_id))

    def on_idle(self) -> None:
        self.events.append(("idle", None))


async def test_line_learns_the_rate_from_a_late_first_audio_frame() -> None:
    """Real Asterisk sends the first audio ~0.5 s after the UUID: the rate is what that frame
    says, and nothing is decided before it."""
    t = Transport()
    line = AudioSocketLine(t, Player(), keepalive_ms=0)
    call = str(uuidlib.uuid4())
    line.feed(encode_uuid(call))
    assert await line.wait_for_uuid(1.0) == call

    async def later() -> None:
        await asyncio.sleep(0.5)
        line.feed(encode(Kind.SLIN_16K, bytes(640)))

    task = asyncio.create_task(later())
    assert await line.wait_for_rate(3.0) == 16000
    await task
    out = line.open_output()
    hooks = LineRecorder()
    line.start(hooks)
    assert ("audio", 640) in hooks.events and out.sample_rate == 16000
    line.feed(encode(Kind.SLIN_8K, bytes(320)) + encode_dtmf("5"))  # a rate change mid-call
    assert ("rate", 8000) in hooks.events and ("dtmf", "5") in hooks.events
    assert line.out is not None and line.out.sample_rate == 8000
    line.hang_up()
    assert t.sent[-1] == b"\x00\x00\x00" and t.closing


async def test_a_bad_frame_in_the_uuids_read_still_gives_the_call_its_uuid() -> None:
    """The UUID and a malformed frame in ONE TCP read: the call is still known (its record
    says why it ended) instead of vanishing."""
    line = AudioSocketLine(Transport(), Player(), keepalive_ms=0)
    call = str(uuidlib.uuid4())
    line.feed(encode_uuid(call) + b"\x04\x00\x00")
    assert await line.wait_for_uuid(1.0) == call
    assert line.closed and line.end_by == "error"
    assert "unknown AudioSocket frame kind 0x04" in line.end_reason


# ---------------------------------------------------------------------------------------------
# the listener
# ---------------------------------------------------------------------------------------------


class ScriptedVadStream(VadStreamBase):
    """A VAD whose probability is whatever the test says for the next frames."""

    capabilities = VadCapabilities(synchronous=True)

    def __init__(self, owner: ScriptedVad) -> None:
        self.owner = owner

    async def probability(self, pcm: bytes) -> float:
        return self.probability_now(pcm)

    def probability_now(self, pcm: bytes) -> float:
        if self.owner.broken:
            raise ProviderError("the model fell over", provider="scripted")
        return 1.0 if audio.rms(pcm) > 0.05 else 0.0

    def reset(self) -> None:
        return None


class ScriptedVad:
    name = "scripted"

    def __init__(self) -> None:
        self.turn_tuning = TurnTuning()
        self.broken = False

    def open_stream(self, sample_rate: int) -> ScriptedVadStream:
        return ScriptedVadStream(self)


class ListenerRecorder:
    def __init__(self, audible: bool = False, may: bool = True) -> None:
        self.events: list[tuple[str, Any]] = []
        self.audible = audible
        self.may = may
        self.onsets: list[bool] = []  # caller_onset calls (ducking), apart from the turn

    def agent_audible(self) -> bool:
        return self.audible

    def caller_onset(self, suspected: bool) -> None:
        self.onsets.append(suspected)

    def may_interrupt(self) -> bool:
        return self.may

    def caller_interrupts(self) -> None:
        self.events.append(("interrupts", None))
        self.audible = False

    def caller_started(self) -> None:
        self.events.append(("started", None))

    def caller_stopped(self, at: float, by: str) -> None:
        self.events.append(("stopped", by))

    def heard_partial(self, text: str) -> None:
        self.events.append(("partial", text))

    def caller_paused(self) -> None:
        self.events.append(("paused", None))

    def caller_resumed(self) -> None:
        self.events.append(("resumed", None))

    def heard_final(self, text: str, confidence: float) -> None:
        self.events.append(("final", text))

    def heard_nothing(self, timed_out: bool) -> None:
        self.events.append(("nothing", timed_out))

    def recogniser_failed(self, message: str) -> None:
        self.events.append(("asr_failed", message))

    def detector_failed(self, message: str) -> None:
        self.events.append(("vad_failed", message))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def on_failure(name: str, exc: BaseException) -> None:
    raise AssertionError(f"task {name} failed: {exc!r}")


async def listener_for(hooks: ListenerRecorder, asr: FakeAsr, vad: ScriptedVad,
                       ) -> tuple[Listener, CallTasks]:
    tasks = CallTasks(lambda: "test", on_failure)
    listener = Listener(hooks, tasks, asr=asr, vad=vad,
                        rules=TurnRules.for_flow(Settings(end_of_turn_ms=200)),
                        language="en-GB", sample_rate=8000, provider_timeout_s=1.0)
    await listener.open()
    return listener, tasks


async def speak(listener: Listener, speech_frames: int, silence_frames: int) -> None:
    for _ in range(speech_frames):
        listener.on_audio(SPEECH)
    for _ in range(silence_frames):
        listener.on_audio(SILENCE)
    await asyncio.sleep(0.05)


async def test_listener_hears_a_turn_and_its_words() -> None:
    hooks = ListenerRecorder()
    listener, tasks = await listener_for(hooks, FakeAsr(transcripts=("next friday",)),
                                         ScriptedVad())
    await speak(listener, 10, 15)
    assert hooks.kinds() == ["started", "stopped", "final"]
    assert hooks.events[-1] == ("final", "next friday") and ("stopped", "vad") in hooks.events
    await listener.close()
    await tasks.cancel_all()


async def test_listener_ducks_at_the_first_speech_window_and_restores_after_a_noise() -> None:
    hooks = ListenerRecorder(audible=True)
    listener, tasks = await listener_for(hooks, FakeAsr(transcripts=("stop",)), ScriptedVad())
    listener.on_audio(SPEECH)
    assert hooks.onsets == [True]  # the first window: duck now, not after min_speech_ms
    await speak(listener, 3, 10)  # 80 ms in all: a cough, less than the 250 ms to interrupt
    assert hooks.onsets == [True, False] and "interrupts" not in hooks.kinds()
    await speak(listener, 20, 0)  # real speech: ducked, then the interruption
    assert hooks.onsets[2] is True and hooks.kinds()[:2] == ["interrupts", "started"]
    hooks.onsets.clear()
    hooks.audible, hooks.may = True, False  # no interruption allowed: nothing to duck for
    listener.turns.end()
    await speak(listener, 5, 10)
    assert hooks.onsets == []
    await listener.close()
    await tasks.cancel_all()


async def test_listener_interrupts_only_when_allowed() -> None:
    hooks = ListenerRecorder(audible=True, may=False)
    listener, tasks = await listener_for(hooks, FakeAsr(transcripts=("stop",)), ScriptedVad())
    await speak(listener, 20, 0)
    assert "interrupts" not in hooks.kinds()  # e.g. the utterance is not interruptible
    hooks.may = True
    await speak(listener, 20, 15)
    assert hooks.kinds()[:2] == ["interrupts", "started"] and ("final", "stop") in hooks.events
    await listener.close()
    await tasks.cancel_all()


async def test_listener_survives_a_broken_vad_and_a_broken_recogniser() -> None:
    hooks = ListenerRecorder()
    vad = ScriptedVad()
    asr = FakeAsr(transcripts=("one", "two", "three"), fail_after=1)
    listener, tasks = await listener_for(hooks, asr, vad)
    vad.broken = True  # the energy VAD takes over and still hears the caller
    await speak(listener, 10, 15)
    assert hooks.kinds()[0] == "vad_failed" and ("final", "one") in hooks.events
    await speak(listener, 10, 15)  # the recogniser fails now: reported, and reopened ...
    await asyncio.sleep(0.1)
    assert hooks.kinds().count("asr_failed") == 1
    await speak(listener, 10, 15)  # ... so the next turn reaches a new stream (failing too)
    await asyncio.sleep(0.1)
    assert hooks.kinds().count("asr_failed") == 2
    await listener.close()
    await tasks.cancel_all()


# ---------------------------------------------------------------------------------------------
# the speaker
# ---------------------------------------------------------------------------------------------


class SpeakerRecorder:
    def __init__(self) -> None:
        self.posted: list[Any] = []
        self.milestones: list[str] = []
        self.lines: dict[int, str] = {}
        self.faults: list[str] = []

    def post(self, event: Any) -> None:
        self.posted.append(event)

    def milestone(self, name: str) -> None:
        self.milestones.append(name)

    def agent_line(self, say_id: int, text: str) -> None:
        self.lines[say_id] = text

    def speech_queue_idle(self) -> None:
        return None

    def fault(self, kind: str, message: str) -> None:
        self.faults.append(kind)

    def cut_short(self, say_id: int, heard: str) -> None:
        return None

    def now(self) -> float:
        return 0.0


FLOWS_DIR = Path(__file__).parent / "flows"
FLOW = FLOWS_DIR / "basic.yaml"


def speaker_for(tts: FakeTts, llm: FakeLlm | None = None
                ) -> tuple[Speaker, SpeakerRecorder, AudioSocketLine, CallTasks, Transport]:
    t = Transport()
    line = AudioSocketLine(t, Player(), keepalive_ms=0)
    line.open_output()
    entry = FlowEntry(path=FLOW, compiled=load_flow(FLOW),
                      providers=Providers(asr=None, tts=tts, vad=None, llm=llm), mtime=0.0)
    hooks = SpeakerRecorder()
    tasks = CallTasks(lambda: "test", on_failure)
    speaker = Speaker(hooks, tasks, line, entry, provider_timeout_s=1.0)
    speaker.start()
    return speaker, hooks, line, tasks, t


async def until(predicate: Any, timeout_s: float = 5.0) -> None:
    """Poll what the parts expose (they have no event for these states)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_speaker_caches_static_prompts_and_plays_them_at_once() -> None:
    tts = FakeTts(ms_per_word=40)
    speaker, _, line, tasks, _ = speaker_for(tts)
    speaker.say(Say(1, "Good morning there.", static=True))
    await until(lambda: speaker.idle)
    assert [e.what for e in tts.events] == ["tts"]
    speaker.say(Say(2, "Good morning there.", static=True))  # from the cache: no TTS
    assert line.out is not None and line.out.busy  # queued on the line at once
    await until(lambda: speaker.idle)
    assert [e.what for e in tts.events] == ["tts"]
    await tasks.cancel_all()


@pytest.mark.parametrize("continuation", [False, True])
async def test_speaker_streams_an_llm_reply_and_knows_what_was_heard(
        continuation: bool) -> None:
    tts = FakeTts(ms_per_word=60, continuation=continuation)
    reply = ("We move homes, offices and pianos across the whole county, and we can price "
             "yours today if you tell me where you are moving from and to, and when.")
    llm = FakeLlm(replies=(reply,), token_ms=40.0)
    speaker, _, line, tasks, _ = speaker_for(tts, llm)
    speaker.llm(LlmRequest(7, (LlmMessage("user", "what do you do"),), say_id=3))
    await until(lambda: line.out is not None and line.out.played.get(3, 0) >= 2 * 960)
    cut = speaker.stop_audio()
    speaker.on_interruption(cut)
    assert cut.say_id == 3
    heard = cut.heard.split()
    assert 1 <= len(heard) < 10 and reply.startswith(" ".join(heard))
    # the LLM request still streaming is completed with what the caller heard
    assert [r.text for r in cut.replies] == [cut.heard]
    kinds = {e.what for e in tts.events}
    assert kinds == ({"tts_stream"} if continuation else {"tts"})
    await tasks.cancel_all()


async def test_speaker_tone_and_error_event_when_tts_fails() -> None:
    speaker, hooks, line, tasks, _ = speaker_for(FakeTts(fail=True))
    speaker.say(Say(1, "This will not be heard."))
    await until(lambda: bool(hooks.posted))
    assert isinstance(hooks.posted[0], ProviderFailed) and hooks.faults == ["tts"]
    assert line.out is not None and line.out.busy  # the short tone, so the line is not dead
    speaker.say(Say(2, "Nor this."))  # a second fault moments later: only the tone
    await until(lambda: hooks.faults == ["tts", "tts"])
    assert len(hooks.posted) == 1
    await tasks.cancel_all()


async def test_speaker_without_an_llm_answers_the_request_with_a_failure() -> None:
    speaker, hooks, _, tasks, _ = speaker_for(FakeTts())
    speaker.llm(LlmRequest(9, (LlmMessage("user", "hi"),), say_id=4))
    await until(lambda: bool(hooks.posted))
    result = hooks.posted[0]
    assert isinstance(result, LlmResult) and not result.ok and result.request_id == 9
    await tasks.cancel_all()


# ---------------------------------------------------------------------------------------------
# a TTS that stalls while an LLM reply is spoken (over real TCP)
# ---------------------------------------------------------------------------------------------


def _reply_line(rec: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in rec["transcript"] if (t["who"] == "agent" and "move" in t["text"])
                or (t["who"] == "agent" and t["text"].startswith("Sure")))


async def test_a_reply_nobody_heard_takes_the_error_path(harness: Any, tmp_path: Path) -> None:
    """The TTS stalls on the reply's first words: the reply does not count as said (the engine
    would otherwise move on to its goodbye and end the call "completed" in silence); the
    flow's error handler runs (here: a transfer) and the record says nothing was heard."""
    flow = tmp_path / "stall.yaml"
    flow.write_text((FLOWS_DIR / "tts_stall.yaml").read_text().replace(
        "stall_after: 2", "stall_after: 1"))
    h = await harness(flow)
    c = h.caller()
    await c.connect()
    await asyncio.wait_for(c.closed.wait(), 15)
    rec = await h.wait_record(c.uuid)
    assert rec["outcome"] == "transferred" and rec["transfer_target"] == "6001"
    assert not any(t["who"] == "agent" and "move" in t["text"] for t in rec["transcript"])
    assert any("TTS provider failed while speaking the reply" in e for e in rec["errors"])


async def test_a_reply_cut_by_a_tts_stall_is_recorded_as_heard_in_part(harness: Any) -> None:
    h = await harness(FLOWS_DIR / "tts_stall.yaml")
    c = h.caller()
    await c.connect()
    await asyncio.wait_for(c.closed.wait(), 15)
    rec = await h.wait_record(c.uuid)
    line = _reply_line(rec)
    assert line["text"].startswith("Sure, we move homes") and line["heard"] == "Sure,"
    assert any(e.startswith("tts:") for e in rec["errors"])
