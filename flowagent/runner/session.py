"""A pipeline call: line -> listener -> dialogue engine -> speaker -> line.

The path of one caller turn, part by part:

    Line (line.py)            frames in; the call's rate; DTMF; the paced out stream
      -> Listener (listener.py)  VAD + ASR -> the one turn rule -> the caller's words
      -> PipelineCall.post()     the engine (pure: events in, actions out)
      -> Speaker (speaker.py)    Say -> prompt cache / TTS; LlmRequest -> LLM -> TTS
      -> Line                    our audio out (paced: one 20 ms frame per 20 ms)

This class owns the call's lifecycle around the engine and carries out the engine's actions: it
is each part's hooks (`LineHooks`, `ListenerHooks`, `SpeakerHooks`, `SpeculationHost`), so the
parts never talk to each other directly and each can be tested on its own. Barge-in is one
`Interruption` that the speaker makes and every part handles (`_interrupt`). Replies prepared
ahead of the recogniser's final words are `speculator.Speculator`'s business; per-turn latency
is `latency.LatencyRows`; tasks and timers are the lifecycle's `CallTasks`, all cancelled when
the call ends, after which `CallLifecycle.finish` writes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowagent.dialogue import actions as act
from flowagent.dialogue import events as ev
from flowagent.dialogue.answer_fit import AnswerFit
from flowagent.dialogue.call_record import CallRecord
from flowagent.dialogue.engine import Engine
from flowagent.dialogue.tools import ToolRunner
from flowagent.runner.echo_guard import EchoGuard
from flowagent.runner.latency import LatencyRows
from flowagent.runner.lifecycle import CallLifecycle
from flowagent.runner.listener import Listener
from flowagent.runner.silence_fill import SilenceFill
from flowagent.runner.speaker import Speaker
from flowagent.runner.speculation import Prepared
from flowagent.runner.speculator import Speculator
from flowagent.runner.turn_taking import TurnRules

if TYPE_CHECKING:
    from flowagent.dialogue.events import CallInfo
    from flowagent.runner.served_flow import FlowEntry

log = logging.getLogger(__name__)

#: the engine is synchronous: a turn slower than this blocked every call's pacing; say so
ENGINE_SLOW_S = 0.02
#: after `max_call_s`, if the flow cannot end the call itself, we do this much later
MAX_DURATION_GRACE_S = 30.0


class PipelineCall:
    """One call on the VAD/ASR -> engine -> TTS pipeline. Built by `call_start.run_call`."""

    def __init__(self, life: CallLifecycle) -> None:
        assert life.entry is not None and life.info is not None
        self.life = life
        self.line = life.line
        self.rt = life.services
        self.uuid = life.uuid
        self._entry: FlowEntry = life.entry
        self._info: CallInfo = life.info
        self.tasks = life.tasks
        self.state = ""
        self.record: CallRecord | None = None
        settings = self._entry.compiled.settings
        providers = self._entry.providers
        self.engine = Engine(self._entry.compiled, clock=life.now,
                             llm_available=providers.llm is not None)
        self.tools = ToolRunner()
        timeout = self.rt.config.provider_timeout_s
        vad = providers.vad
        #: echo rejection: our own audio coming back down the line is not a barge-in
        self.echo = (EchoGuard(self.line.sample_rate, self._sent_tail)
                     if settings.barge_in_echo_rejection and settings.barge_in else None)
        self.listener = Listener(
            self, self.tasks, asr=providers.asr, vad=vad,
            rules=TurnRules.for_flow(settings, vad.turn_tuning if vad is not None else None),
            language=self._entry.compiled.language, sample_rate=self.line.sample_rate,
            provider_timeout_s=timeout, echo=self.echo)
        self.speaker = Speaker(self, self.tasks, self.line, self._entry,
                               provider_timeout_s=timeout)
        # a line that stops sending mid-turn (silence suppression, hold) still ends the turn
        self.silence_fill = SilenceFill(self.line, self.listener.on_audio,
                                        lambda: self.listener.in_speech, self.tasks)
        self.speculator = Speculator(self, self.speaker, self.tasks)
        self.latency = LatencyRows(self.rt.metrics, life.t0)
        self._events: deque[ev.Event] = deque()
        self._dispatching = False
        self._pending_no_input: float | None = None
        #: the engine's no-input wait while it waits for an answer: a turn with no words (a
        #: cough) stops the timer, and must start it again — the engine heard nothing to act on
        self._no_input_s: float | None = None
        #: our audio was cut or paused by the caller: nothing of ours counts as audible until
        #: we next speak
        self._cut = False
        #: paused for a possible false barge-in (a cough): resumed if no words come
        self._held = False
        self._resume_after_false = settings.barge_in_resume_after_false
        #: our audio's gain while a possible barge-in is being confirmed (1.0: no ducking)
        self._duck_gain = 10.0 ** (-settings.barge_in_duck_db / 20.0)
        self._barge_in = settings.barge_in
        life.on_task_failure = self._task_failed

    # -- LiveCall -------------------------------------------------------------------------------

    @property
    def entry(self) -> FlowEntry:
        return self._entry

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def transfer_target(self) -> str:
        return self.life.transfer_target

    @property
    def turns(self) -> list[dict[str, Any]]:
        return self.latency.rows

    def live_dict(self) -> dict[str, Any]:
        """A snapshot of the call in progress (`GET /calls/{uuid}`, the live view)."""
        d: dict[str, Any] = (self.record.to_dict() if self.record is not None
                             else {"uuid": self.uuid})
        d["live"] = True
        d["state"] = self.state
        d["latency"] = self.turns
        return d

    def inject_text(self, text: str) -> None:
        """`POST /calls/{uuid}/inject`: as if the caller said `text`."""
        if not self.line.closed:
            self.listener.inject(text)

    def inject_dtmf(self, digit: str) -> None:
        """As if the caller keyed `digit` (a 0x03 frame)."""
        if not self.line.closed:
            self.on_dtmf(digit)

    # -- start and end --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.listener.open()
        self.speaker.start()
        self.rt.webhooks.emit(self.uuid, "call_started", {
            "caller": self._info.caller, "did": self._info.did, "flow": self._entry.name})
        actions = self.engine.start(self._info)
        self.record = self.engine.record  # start() makes the call's record
        self._handle_actions(actions)
        self.line.start(self)  # frames that came during set-up first, then live ones

    def idle(self) -> bool:
        return self.speaker.idle

    async def close(self) -> None:
        """The call is over: the engine hears of the hang-up (its handler may call a tool)."""
        self.speculator.close()
        await self.listener.close()
        if self.life.hangup_by == "error":
            self.engine.record.finish("error", self.life.end_reason)
        if self.engine.ended:
            return
        try:
            for a in self.engine.handle(ev.Hangup(at=self.life.now())):
                if isinstance(a, act.CallTool):  # e.g. log_abandoned: run it, briefly
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.tools.run(a), a.timeout_s + 1)
        except Exception:
            log.exception("call %s: engine failed on hang-up", self.uuid)

    def _task_failed(self, reason: str) -> None:
        self.post(ev.ProviderFailed("runtime", reason))

    # -- the engine -----------------------------------------------------------------------------

    def post(self, event: ev.Event) -> None:
        """Give the engine an event and carry out its actions. Re-entrant calls are queued."""
        if self.line.closed:
            return
        self._events.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._events:
                e = self._events.popleft()
                if self.engine.ended and not isinstance(e, ev.Hangup):
                    continue
                try:
                    t = time.perf_counter()
                    actions = self.engine.handle(e)
                    took = time.perf_counter() - t
                    if took > ENGINE_SLOW_S:
                        log.warning("call %s: the engine took %.0f ms on %s (the event loop"
                                    " was blocked)", self.uuid, took * 1000, type(e).__name__)
                except Exception:
                    log.exception("call %s: engine failed on %s", self.uuid, type(e).__name__)
                    self.rt.metrics.error("engine")
                    self.life.failed("the dialogue engine failed")
                    self.life.hang_up()
                    return
                if isinstance(e, ev.UserUtterance):
                    self.rt.metrics.turns_total += 1
                self.speculator.after_event(e)
                self._handle_actions(actions)
        finally:
            self._dispatching = False

    def _handle_actions(self, actions: list[Any]) -> None:
        for a in self.speculator.apply(actions):
            if isinstance(a, act.Say):
                self._cut = False
                self.speaker.say(a)
            elif isinstance(a, Prepared):
                self._cut = False
                self.speculator.play(a)
            elif isinstance(a, act.LlmRequest):
                if a.speak:
                    self._cut = False
                self.speaker.llm(a)
            elif isinstance(a, act.CallTool):
                self.tasks.spawn(self._tool(a), f"tool-{a.tool}")
            elif isinstance(a, act.StateEntered):
                self.state = a.state
                self._barge_in = self._barge_in_for(a.state)
            elif isinstance(a, act.StartNoInputTimer):
                self._pending_no_input = self._no_input_s = a.seconds
                self._maybe_arm_no_input()
            elif isinstance(a, act.StopNoInputTimer):
                self._pending_no_input = self._no_input_s = None
                self.tasks.cancel_timer("no_input")
            elif isinstance(a, act.StartTimer):
                self._start_timer(a.name, a.seconds)
            elif isinstance(a, act.CancelTimer):
                self.tasks.cancel_timer(f"t:{a.name}")
            elif isinstance(a, act.Transfer):
                self.life.end_after_playback("", transfer_to=a.target, transfer_reason=a.reason)
            elif isinstance(a, act.EndCall):
                self.life.end_after_playback(a.reason)
            elif isinstance(a, act.SendDtmf):
                self.speaker.play_tones(a.digits)
            elif isinstance(a, act.FlowProblem):
                # the engine already took the flow's error path; the operator needs to know
                self.rt.metrics.error("flow_problem")
                log.warning("call %s: %s", self.uuid, a)

    def _start_timer(self, name: str, seconds: float) -> None:
        self.tasks.timer(f"t:{name}", seconds,
                         lambda: self.post(ev.TimerExpired(name, at=self.life.now())))
        if name == "max_duration":
            # if the flow cannot end the call itself, we do, a little later
            self.tasks.timer("max_hard", seconds + MAX_DURATION_GRACE_S, self.life.hang_up)

    def _barge_in_for(self, state: str) -> bool:
        st = self._entry.compiled.states.get(state)
        if st is not None and st.barge_in is not None:
            return st.barge_in
        return self._entry.compiled.settings.barge_in

    async def _tool(self, action: act.CallTool) -> None:
        self.post(await self.tools.run(action))

    # -- no input -------------------------------------------------------------------------------

    def _maybe_arm_no_input(self) -> None:
        if self._pending_no_input is None or not self.speaker.idle or self.listener.in_speech:
            return
        seconds = self._pending_no_input
        self._pending_no_input = None
        self.tasks.timer("no_input", seconds,
                         lambda: self.post(ev.NoInput(at=self.life.now())))

    def _after_playback(self) -> None:
        if not self.line.closed:
            self._maybe_arm_no_input()
            self.life.maybe_finish()

    # -- LineHooks ------------------------------------------------------------------------------

    @property
    def on_audio(self) -> Callable[[bytes], None]:
        return self.listener.on_audio  # every inbound frame: straight to the listener

    def on_dtmf(self, digit: str) -> None:
        self.tasks.cancel_timer("no_input")
        self._pending_no_input = None
        self.rt.webhooks.emit(self.uuid, "dtmf_digit", {"digit": digit, "state": self.state})
        if not self._cut and self._out_playing() and self.may_interrupt():
            self._interrupt()
        self.post(ev.DtmfDigit(digit, at=self.life.now()))

    def on_rate_change(self, sample_rate: int) -> None:
        """The caller's audio changed rate mid-call: the line follows it; we hear again and
        say again what had not been heard in full, at the new rate."""
        if self.echo is not None:
            self.echo.change_rate(sample_rate)
        self.tasks.spawn(self.listener.change_rate(sample_rate), "rate-change")
        for reply in self.speaker.restart_at_new_rate().replies:
            self.post(reply)

    def on_line_ended(self, by: str, reason: str) -> None:
        self.life.ended_by(by, reason)

    def on_first_frame(self, say_id: int, at: float) -> None:
        self.latency.first_frame(at, self.state, self.record, say_id)

    def on_say_done(self, say_id: int) -> None:
        if self.line.closed or say_id < 0:
            self.life.maybe_finish()
            return
        self.speaker.utterance_done(say_id)
        self.post(ev.SpeechFinished(say_id, at=self.life.now()))
        self._after_playback()

    def on_idle(self) -> None:
        self._after_playback()

    def _sent_tail(self) -> list[tuple[float, bytes]]:
        """What we last sent to the caller (the echo check's reference)."""
        out = self.line.out
        return out.sent_tail() if out is not None else []

    def _out_playing(self) -> bool:
        out = self.line.out
        return out is not None and out.playing

    # -- ListenerHooks --------------------------------------------------------------------------

    def agent_audible(self) -> bool:
        out = self.line.out  # read for every VAD result: no helper calls
        return not self._cut and out is not None and out.playing

    def may_interrupt(self) -> bool:
        return self._barge_in and self.speaker.interruptible_now() and not self.life.finishing

    def caller_interrupts(self) -> None:
        if self._resume_after_false:
            # maybe a cough: go quiet now, decide when we know whether words were said
            self._cut = True
            self._held = True
            out = self.line.out
            if out is not None:
                out.pause()
        else:
            self._interrupt()

    def caller_onset(self, suspected: bool) -> None:
        """Duck our audio (frames already queued included) at the first sign of caller speech;
        full volume again if it was a cough, a click or our own echo. Confirmed speech stops
        it (`caller_interrupts`), which also returns the stream to full volume."""
        out = self.line.out
        if out is not None and self._duck_gain < 1.0:
            out.set_gain(self._duck_gain if suspected else 1.0)

    def caller_started(self) -> None:
        self.silence_fill.turn_began()
        self.tasks.cancel_timer("no_input")
        self._pending_no_input = None
        self.speculator.drop("the caller spoke again")

    def caller_stopped(self, at: float, by: str) -> None:
        self.latency.begin(at, self.speaker.last_say_id, self.listener.turn_ended_by(by))
        if by == "vad":
            self.speculator.prepare(self.listener.words_so_far())  # start preparing the answer

    def heard_partial(self, text: str) -> None:
        self.post(ev.UserPartial(text, at=self.life.now()))
        if self.listener.awaiting_final or self.listener.paused:  # new words after the pause
            self.speculator.prepare(self.listener.words_so_far())

    async def judge_words(self, text: str) -> AnswerFit:
        """The engine judges the words heard so far against its question (on a fork; the
        embedding for intent matching is made off the event loop first)."""
        if self.engine.ended or self.engine.listening is None or self.life.finishing:
            return AnswerFit.OPEN
        await self.pre_embed(text)
        return self.engine.judge_answer(text, at=self.life.now())

    def caller_paused(self) -> None:
        self.speculator.prepare(self.listener.words_so_far())  # before the ASR's endpointing

    def caller_resumed(self) -> None:
        self.speculator.drop("the caller spoke again")

    def heard_final(self, text: str, confidence: float) -> None:
        self.latency.mark("asr_final")
        if self._held:
            self._held = False
            self._interrupt()  # words were said: the interruption was real
        self.rt.webhooks.emit(self.uuid, "transcription", {"text": text, "state": self.state})
        utterance = ev.UserUtterance(text, confidence=confidence, at=self.life.now())
        self.speculator.on_final(utterance)
        if self.rt.flows.intent_scorer is not None:
            self.tasks.spawn(self._embed_then_post(utterance), "embed")
            return
        self.post(utterance)

    def heard_nothing(self, timed_out: bool) -> None:
        if not timed_out:
            self.latency.discard()  # no words: no reply, so no row (a later prompt is not one)
        self.speculator.no_words()
        if self._held:  # a pause for a noise the recogniser found no words in
            self._resume_if_held()
            return
        if self._no_input_s is not None and not timed_out:  # still waiting for an answer
            self._pending_no_input = self._no_input_s
            self._maybe_arm_no_input()
        if timed_out:
            self._provider_failed("asr", "the speech recogniser did not answer in time")

    def recogniser_failed(self, message: str) -> None:
        self.speculator.drop("the recogniser failed")
        self._provider_failed("asr", message)

    def detector_failed(self, message: str) -> None:
        self.rt.metrics.error("vad")
        if self.record is not None:
            self.record.errors.append(f"vad: {message}")

    def _provider_failed(self, kind: str, message: str) -> None:
        self.rt.metrics.error(kind)
        if self.record is not None:
            self.record.errors.append(f"{kind}: {message}")
        self.post(ev.ProviderFailed(kind, message, at=self.life.now()))

    async def _embed_then_post(self, utterance: ev.UserUtterance) -> None:
        """The intent scorer embeds the caller's words (20-80 ms of numpy on a busy 2-core
        machine): do it on a thread first, so the engine's synchronous intent match finds the
        embedding cached and the event loop — every call's 20 ms pacing — is not blocked."""
        await self.pre_embed(utterance.text)
        if not self.line.closed:
            self.post(utterance)

    # -- SpeakerHooks ---------------------------------------------------------------------------

    def milestone(self, name: str) -> None:
        self.latency.mark(name)

    def agent_line(self, say_id: int, text: str) -> None:
        """Agent lines are recorded by the engine; LLM-spoken ones get their text here if the
        engine left it empty."""
        entry = self.record.agent_line(say_id) if self.record is not None else None
        if entry is not None and not entry.text:
            entry.text = text

    def speech_queue_idle(self) -> None:
        self.life.maybe_finish()
        self._maybe_arm_no_input()

    def cut_short(self, say_id: int, heard: str) -> None:
        entry = self.record.agent_line(say_id) if self.record is not None else None
        if entry is not None:
            entry.heard = heard

    def fault(self, kind: str, message: str) -> None:
        self.rt.metrics.error(kind)
        if kind == "tts" and self.record is not None:
            self.record.errors.append(f"tts: {message}")

    # -- SpeculationHost ------------------------------------------------------------------------

    def speculation_allowed(self) -> bool:
        listener = self.listener
        return (not self.line.closed and not self.life.finishing
                and ((not listener.in_speech and listener.awaiting_final) or listener.paused)
                and self._entry.compiled.settings.preemptive_generation)

    def fork_engine(self) -> Engine | None:
        if self.engine.ended or self.engine.listening is None:
            return None
        return self.engine.fork()

    async def pre_embed(self, text: str) -> None:
        scorer = self.rt.flows.intent_scorer
        if scorer is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(scorer.embed, text), 2.0)
        except Exception:  # the engine computes it itself if this failed
            log.debug("pre-embedding %r failed", text, exc_info=True)

    def milestone_at(self, name: str, at: float) -> None:
        self.latency.mark(name, at)

    def speculation_outcome(self, hit: bool, why: str) -> None:
        self.latency.speculation(hit, why)

    def now(self) -> float:
        return self.life.now()

    # -- interruption ---------------------------------------------------------------------------

    def _interrupt(self) -> None:
        """The caller cut in: one `Interruption`, handled by every part; then the engine."""
        interruption = self.speaker.stop_audio()
        self._cut = True
        self._held = False
        for part in (self.speculator, self.speaker):
            part.on_interruption(interruption)
        self.rt.metrics.barge_ins_total += 1
        say_id, heard = interruption.say_id, interruption.heard
        entry = self.record.agent_line(say_id) if self.record is not None else None
        if entry is not None:
            entry.heard = heard
        self.rt.webhooks.emit(self.uuid, "interruption",
                              {"say_id": say_id, "heard": heard, "state": self.state})
        if say_id:
            self.post(ev.BargeIn(say_id, heard, at=self.life.now()))
        for reply in interruption.replies:
            self.post(reply)

    def _resume_if_held(self) -> None:
        """A false barge-in (cough, noise): carry on speaking where we paused."""
        out = self.line.out
        if self._held and out is not None:
            self._held = False
            self._cut = False
            out.resume()
            if self.record is not None:
                self.record.add(self.life.now(), "system", "resumed after a noise", self.state)
