"""The listener: the caller's audio -> VAD + ASR -> turn start, end of turn, barge-in, words.

Everything about hearing the caller lives here, behind `ListenerHooks` (the model: LiveKit's
`AudioRecognition` with its `RecognitionHooks`): the per-call VAD stream (and the energy VAD
that takes over if it fails), the ASR stream (reopened if it breaks or the call's rate changes),
the one turn-taking rule (`turn_taking.TurnTaker`), and assembling the recogniser's finals into
the caller's words for the turn. What to DO when the caller starts, stops or talks over us is the
owner's business (`hooks`), so this part runs in a test with a script of probabilities and
transcripts and no socket.

Per-frame cost matters (every inbound frame of every call passes `on_audio`): the VAD's cheapest
declared way in is chosen once (synchronous, callback, or awaited in order by one task), and the
ASR's synchronous path is used when it declares one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Protocol

from flowagent.dialogue.answer_fit import AnswerFit
from flowagent.providers.base import (
    AsrProvider,
    AsrStream,
    ProviderError,
    Transcript,
    VadProvider,
    VadStream,
    describe_fault,
)
from flowagent.providers.energy_vad import EnergyVadStream
from flowagent.runner.call_tasks import CallTasks
from flowagent.runner.echo_guard import EchoGuard
from flowagent.runner.turn_taking import TurnRules, TurnSignal, TurnTaker

log = logging.getLogger(__name__)

#: level (fraction of full scale, RMS) above which the energy VAD that replaces a failed VAD
#: hears speech
FALLBACK_VAD_THRESHOLD = 0.01
#: how many times a broken recogniser is reopened in one call before we give up on it
MAX_ASR_REOPENS = 3


#: how long before the recogniser's endpointing fires the answer starts being prepared: enough
#: for a cloud LLM's first token and TTS's first audio (30-50 + 50-80 ms published)
PREPARE_LEAD_MS = 150
#: never prepare on a pause shorter than this (a breath between words)
PREPARE_MIN_MS = 100


#: with a recogniser that transcribes on request (Whisper): the pause after which the words so
#: far are transcribed and judged against the question (a breath between words is shorter)
CHECK_AFTER_MS = 120


def prepare_after_ms(end_of_turn_ms: int, endpointing_ms: int) -> int:
    """Silence after which a preemptive answer is prepared while the turn is still open: only
    when the recogniser's endpointing ends turns before our own rule (then our end of turn,
    where preparing normally starts, never comes), `PREPARE_LEAD_MS` before it. 0 = not."""
    if endpointing_ms <= 0 or endpointing_ms >= end_of_turn_ms:
        return 0
    return max(PREPARE_MIN_MS, endpointing_ms - PREPARE_LEAD_MS)


class ListenerHooks(Protocol):
    def agent_audible(self) -> bool:
        """Our audio is reaching the caller now (the stricter barge-in rule applies)."""

    def may_interrupt(self) -> bool:
        """Whether caller speech over our audio may stop it right now."""

    def caller_interrupts(self) -> None:
        """The caller is talking over our audio (a turn begins)."""

    def caller_onset(self, suspected: bool) -> None:
        """`True`: the first sign of caller speech over our audio (duck it: maybe a barge-in);
        `False`: it came to nothing, or our audio stopped (full volume again). Only while an
        interruption is allowed; confirmed speech then arrives as `caller_interrupts`."""

    def caller_started(self) -> None:
        """The caller began speaking while we were quiet (or after an interruption)."""

    def caller_stopped(self, at: float, by: str) -> None:
        """The caller's turn ended; `at` (monotonic) is when their speech ended (our VAD's last
        speech frame), not when it was decided. `by`: "vad" (our silence rule: the words
        follow), "answer" (our silence rule, the words already transcribed at the pause: they
        follow at once), "recogniser" (its endpointing, with the words) or "injected"."""

    def heard_partial(self, text: str) -> None:
        """An interim transcript of the turn in progress."""

    async def judge_words(self, text: str) -> AnswerFit:
        """Do the words so far answer what the call is waiting for? (The end of the turn
        waits a short, the usual, or a long silence on it.)"""

    def caller_paused(self) -> None:
        """The caller has been silent long enough that the recogniser's endpointing may end the
        turn soon (before our silence rule): time to prepare the answer to their words."""

    def caller_resumed(self) -> None:
        """The caller spoke again after `caller_paused`: what was prepared is stale."""

    def heard_final(self, text: str, confidence: float) -> None:
        """The caller's words for the turn (never empty)."""

    def heard_nothing(self, timed_out: bool) -> None:
        """The turn had no words (noise) — or, `timed_out`, the recogniser never answered."""

    def recogniser_failed(self, message: str) -> None:
        """The ASR stream broke (it is being reopened) or could not be opened."""

    def detector_failed(self, message: str) -> None:
        """The VAD broke; an energy VAD carries on."""


class Listener:
    def __init__(self, hooks: ListenerHooks, tasks: CallTasks, *, asr: AsrProvider | None,
                 vad: VadProvider | None, rules: TurnRules, language: str, sample_rate: int,
                 provider_timeout_s: float, echo: EchoGuard | None = None) -> None:
        self.hooks = hooks
        #: echo rejection (echo_guard.py): speech over our audio that our own echo explains
        #: is not the caller (None: off)
        self.echo = echo
        self.tasks = tasks
        self.asr_provider = asr
        self.vad_provider = vad
        self.turns = TurnTaker(rules)
        self.language = language
        self.sample_rate = sample_rate
        self.provider_timeout_s = provider_timeout_s
        self.closed = False
        # VAD
        self._vad: VadStream | None = None
        self._vad_sync = False
        # the caller's end of speech on the monotonic clock, whoever ends the turn: audio is
        # counted in ms as it arrives (`_heard_ms`, the last at `_heard_at`) and as the VAD
        # judges it (`_judged_ms`); `_speech_end_ms` is where the VAD's last speech frame ended
        self._heard_ms = 0
        self._heard_at = 0.0
        self._judged_ms = 0
        self._speech_end_ms = -1
        #: silence after which the answer is prepared while the turn is still open (0: only at
        #: our end of turn): set when the recogniser ends turns itself, see `prepare_after_ms`
        self._prepare_ms = 0
        self.paused = False  # caller_paused was said for the silence in progress
        self._vad_q: deque[bytes] = deque()  # awaited VADs: fed in order by one task
        self._vad_wake = asyncio.Event()
        self._vad_task: asyncio.Task[None] | None = None
        self._vad_fallback = False
        #: our audio is ducked under a possible barge-in (`hooks.caller_onset(True)` was said)
        self._ducked = False
        # ASR
        self._asr: AsrStream | None = None
        self._asr_sync = False
        self._asr_q: deque[bytes] = deque()
        self._asr_wake = asyncio.Event()
        self._asr_feeder: asyncio.Task[None] | None = None
        self._asr_reader: asyncio.Task[None] | None = None
        self._asr_reopens = 0
        # the turn's words
        self.awaiting_final = False
        self._final_parts: list[str] = []
        self._interim = ""
        # the words so far, judged at a pause: transcribed then (a recogniser with
        # `partial_on_demand`: Whisper) or the streaming recogniser's interim words. The check
        # in progress, the speech mark last judged, and a transcription's result (mark, text,
        # confidence), valid while no speech has come since (then it is the turn's final)
        self._check: asyncio.Task[None] | None = None
        self._judged = -1
        self._partial: tuple[int, str, float] | None = None
        self._check_after_ms = 0  # 0: no check (set when the stream opens)
        self._transcribes = False  # the stream transcribes on request

    # -- opening and closing --------------------------------------------------------------------

    async def open(self) -> None:
        self._open_vad()
        await self._open_asr()

    def _open_vad(self) -> None:
        if self.vad_provider is None:
            return
        self._attach_vad(self.vad_provider.open_stream(self.sample_rate))

    def _attach_vad(self, stream: VadStream) -> None:
        """Pick the stream's cheapest declared way in: synchronous, callback, or awaited."""
        self._vad = stream
        caps = stream.capabilities
        self._vad_sync = caps.synchronous
        self._vad_q.clear()
        if caps.synchronous:
            return
        if caps.callback:
            stream.listen(self._vad_result, self._vad_broke)
            return
        if self._vad_task is None or self._vad_task.done():
            self._vad_task = self.tasks.spawn(self._vad_feeder(), "vad")

    def _detach_vad(self) -> None:
        old, self._vad = self._vad, None
        self._vad_q.clear()
        if old is not None and old.capabilities.callback:
            old.listen(None)  # its late results (a window still in the model) go nowhere

    async def _open_asr(self) -> None:
        provider = self.asr_provider
        if provider is None or self.closed:
            return
        try:
            stream = await asyncio.wait_for(
                provider.open_stream(self.sample_rate, self.language),
                self.provider_timeout_s * 2,
            )
        except (ProviderError, TimeoutError, OSError) as exc:
            self._asr = None
            self.hooks.recogniser_failed(
                describe_fault(exc, "the speech recogniser did not answer in time"))
            return
        if self.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), 1.0)
            return
        self._asr = stream
        self._asr_sync = stream.capabilities.sync_audio
        self._prepare_ms = prepare_after_ms(self.turns.rules.end_of_turn_ms,
                                            stream.capabilities.endpointing_ms)
        rules = self.turns.rules
        self._transcribes = stream.capabilities.partial_on_demand
        # a transcribing recogniser is asked even with the judging off: its words at the pause
        # are then the final (no second decode) and an interim to prepare the answer on
        self._check_after_ms = (min(CHECK_AFTER_MS, rules.answer_end_ms or CHECK_AFTER_MS)
                                if self._transcribes or rules.answer_end_ms else 0)
        self._asr_reader = self.tasks.spawn(self._read_transcripts(stream), "asr")
        if not self._asr_sync and (self._asr_feeder is None or self._asr_feeder.done()):
            self._asr_feeder = self.tasks.spawn(self._feed_asr(), "asr-feed")

    async def change_rate(self, sample_rate: int) -> None:
        """The call's rate changed: VAD and ASR start again at the new rate (the turn in
        progress, if any, is heard again from here)."""
        if sample_rate == self.sample_rate:
            return
        self.sample_rate = sample_rate
        self._words_stale()  # words transcribed at the old rate's stream are not the final
        self._detach_vad()
        if self._vad_fallback:
            self._attach_vad(EnergyVadStream(FALLBACK_VAD_THRESHOLD))
        else:
            self._open_vad()
        old, self._asr = self._asr, None
        self._asr_q.clear()
        if old is not None:
            if self._asr_reader is not None:
                self._asr_reader.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 1.0)
            await self._open_asr()

    async def close(self) -> None:
        self.closed = True
        self._detach_vad()
        asr, self._asr = self._asr, None
        if asr is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asr.close(), 1.0)

    # -- audio in (every frame) -----------------------------------------------------------------

    def on_audio(self, pcm: bytes) -> None:
        self._heard_ms += len(pcm) * 500 // self.sample_rate
        self._heard_at = time.monotonic()
        if self.echo is not None:
            self.echo.heard(pcm)
        asr = self._asr
        if asr is not None:
            if self._asr_sync:
                try:
                    asr.send_audio_nowait(pcm)
                except (ProviderError, OSError) as exc:
                    self.tasks.spawn(self._asr_broken(asr, describe_fault(exc)), "asr-broken")
            else:
                self._asr_q.append(pcm)
                self._asr_wake.set()
        vad = self._vad
        if vad is None:
            return
        ms = len(pcm) * 500 // self.sample_rate
        try:
            if self._vad_sync:
                self._on_vad(vad.probability_now(pcm), ms)
            elif vad.capabilities.callback:
                vad.feed_ms(pcm, ms)  # -> _vad_result(p, ms) per window, in order
            else:
                self._vad_q.append(pcm)
                self._vad_wake.set()
        except Exception as exc:
            self._vad_broke(exc)

    async def _feed_asr(self) -> None:
        """For ASR streams without a synchronous path: queued audio, in order."""
        while True:
            await self._asr_wake.wait()
            self._asr_wake.clear()
            while self._asr_q:
                pcm = self._asr_q.popleft()
                asr = self._asr
                if asr is None:
                    self._asr_q.clear()
                    break
                try:
                    await asr.send_audio(pcm)
                except (ProviderError, OSError) as exc:
                    await self._asr_broken(asr, describe_fault(exc))

    async def _vad_feeder(self) -> None:
        """For VAD streams that are only awaitable: in order, one at a time."""
        while True:
            await self._vad_wake.wait()
            self._vad_wake.clear()
            while self._vad_q:
                pcm = self._vad_q.popleft()
                vad = self._vad
                if vad is None:
                    self._vad_q.clear()
                    break
                try:
                    p = await vad.probability(pcm)
                except Exception as exc:
                    self._vad_broke(exc)
                    break
                self._on_vad(p, len(pcm) * 500 // self.sample_rate)

    def _vad_result(self, p: float, ms: int) -> None:
        if self._vad is not None and not self.closed:
            self._on_vad(p, ms)

    def _vad_broke(self, exc: BaseException) -> None:
        """The VAD broke mid-call (a model error, a provider bug): carry on with an energy VAD
        (no model, cannot fail) so the caller's turns are still heard — a call without any VAD
        would only ever reach its no-input timeouts."""
        self.hooks.detector_failed(describe_fault(exc))
        self._detach_vad()
        if self._vad_fallback:
            log.warning("the fallback VAD failed too (%s); no VAD for the rest of the call", exc)
            return
        log.warning("VAD failed (%s); using an energy VAD for the rest of the call", exc)
        self._vad_fallback = True
        self._attach_vad(EnergyVadStream(FALLBACK_VAD_THRESHOLD))

    # -- the turn rule --------------------------------------------------------------------------

    def _on_vad(self, p: float, ms: int) -> None:
        hooks = self.hooks
        audible = hooks.agent_audible()
        turns = self.turns
        if audible and self.echo is not None and p >= turns.rules.threshold:
            p = self._unless_echo(p, ms)
        signal = turns.update(p, ms, audible)
        # duck at the first speech window over our audio, restore when it comes to nothing
        # (two attribute reads per result; the hook runs only when the state flips)
        if (audible and turns.onset) is not self._ducked:
            self._onset_changed(not self._ducked)
        self._judged_ms += ms
        if turns.silence_ms == 0 and turns.speech_ms:
            self._speech_end_ms = self._judged_ms
            if self._judged >= 0 or self._check is not None:
                self._words_stale()
            if self.paused:
                self.paused = False
                hooks.caller_resumed()
        elif signal is None:
            if self._check_after_ms and self._judged != self._speech_end_ms:
                self._maybe_check()
            if (self._prepare_ms and not self.paused and turns.in_speech
                    and turns.silence_ms >= self._prepare_ms):
                self.paused = True
                hooks.caller_paused()
        if signal is None:
            return
        if signal is TurnSignal.BARGE_IN:
            if hooks.may_interrupt():
                hooks.caller_interrupts()
                self._begin_turn()
        elif signal is TurnSignal.SPEECH_START:
            self._begin_turn()
        else:
            self._end_of_speech()

    def _unless_echo(self, p: float, ms: int) -> float:
        """A window that looks like speech over our audio: 0 if our own echo explains it (it
        neither ducks nor stops us), else `p`. The window is the `ms` after `_judged_ms`."""
        echo = self.echo
        back = self._heard_ms - self._judged_ms - ms  # ms heard after the window's end
        return 0.0 if echo is not None and echo.explains(self._heard_at, back, ms) else p

    def _onset_changed(self, suspected: bool) -> None:
        if suspected and not self.hooks.may_interrupt():
            return  # no interruption allowed now (e.g. legal text): nothing to duck for
        self._ducked = suspected
        self.hooks.caller_onset(suspected)

    def _begin_turn(self) -> None:
        if self.turns.in_speech:
            return
        self.turns.begin()
        asr = self._asr
        if asr is not None and asr.capabilities.speech_onset:
            # Whisper keeps audio from before the VAD's onset (pre-roll): how much was heard
            try:
                asr.speech_started(int(self.turns.speech_ms))
            except Exception:
                log.debug("speech_started failed", exc_info=True)
        self.hooks.caller_started()

    def last_speech_at(self) -> float:
        """When the caller's last speech frame (as our VAD judged it) ended, on the monotonic
        clock: what every latency row counts from, whether our silence rule or the
        recogniser's endpointing ends the turn. The audio clock maps to the wall clock at the
        latest frame's arrival, so a VAD that judges in batches does not shift it. Before any
        speech was heard: now."""
        if self._speech_end_ms < 0:
            return time.monotonic()
        return self._heard_at - (self._heard_ms - self._speech_end_ms) / 1000

    # -- the words so far, at a pause ----------------------------------------------------------

    def _maybe_check(self) -> bool:
        """In a pause of `_check_after_ms` inside a turn, with no check running: judge the
        words so far (see `_check_words`). True if a check started."""
        turns, asr = self.turns, self._asr
        if (asr is None or self._check is not None or not turns.in_speech
                or turns.silence_ms < self._check_after_ms):
            return False
        if not self._transcribes and not self.words_so_far():
            return False  # no interim words (yet) to judge
        self._judged = self._speech_end_ms
        self._check = self.tasks.spawn(self._check_words(asr, self._speech_end_ms),
                                       "words-check")
        return True

    async def _check_words(self, asr: AsrStream, mark: int) -> None:
        """At a pause: the words of the turn so far (transcribed now, or the streaming
        recogniser's interim) are judged by the owner; the turn then ends after a short silence
        (an answer), a long one (half an answer) or the usual one. A transcription that leaves
        the turn open is offered as an interim (the answer to it is prepared meanwhile).
        Speech resuming cancels this (`_words_stale`)."""
        if self._transcribes:
            try:
                result = await asyncio.wait_for(asr.partial(), self.provider_timeout_s)
            except (ProviderError, OSError, TimeoutError):
                result = None  # the final will tell; the usual silence ends the turn
        else:
            result = (self.words_so_far(), 1.0)
        if result is None or not self._still_pausing(asr, mark):
            self._check = None
            return
        text, confidence = result
        fit = AnswerFit.OPEN
        if text and self.turns.rules.answer_end_ms:
            try:
                fit = await self.hooks.judge_words(text)
            except Exception:  # a judging bug must not take the turn down: the usual silence
                log.warning("could not judge the words so far (%r)", text, exc_info=True)
            if not self._still_pausing(asr, mark):
                self._check = None
                return
        self._check = None
        if self._transcribes:
            self._partial = (mark, text, confidence)
        rules = self.turns.rules
        if fit is AnswerFit.COMPLETE:
            ms = rules.answer_end_ms
        elif fit is AnswerFit.INCOMPLETE:
            ms = max(rules.half_answer_end_ms, rules.end_of_turn_ms)
        else:
            ms = rules.end_of_turn_ms
        if self.turns.end_after(ms):
            self._end_of_speech()
        elif text and self._transcribes:
            self._interim = text
            self.paused = True  # the answer may be prepared now (speculation)
            self.hooks.heard_partial(text)

    def _still_pausing(self, asr: AsrStream, mark: int) -> bool:
        return (asr is self._asr and mark == self._speech_end_ms and self.turns.in_speech
                and not self.closed)

    def _words_stale(self) -> None:
        """The caller spoke again: the words judged at the pause are not the turn's."""
        check, self._check = self._check, None
        if check is not None:
            check.cancel()
        self._judged = -1
        if self._transcribes:
            self._partial = None
            self._interim = ""  # ours; a streaming recogniser's interims are its own
        self.turns.end_after(self.turns.rules.end_of_turn_ms)

    def _end_of_speech(self) -> None:
        self.turns.end()
        self.paused = False
        self._judged = -1
        partial, self._partial = self._partial, None
        check, self._check = self._check, None
        if check is not None:
            check.cancel()
        asr = self._asr
        if (asr is not None and partial is not None and partial[0] == self._speech_end_ms
                and asr.capabilities.partial_on_demand):
            # only silence since the words were transcribed: they are the final
            self.awaiting_final = True
            self.tasks.timer("asr_final", self.provider_timeout_s, self._asr_timed_out)
            self.hooks.caller_stopped(self.last_speech_at(), "answer")
            asr.end_turn_with(partial[1], partial[2])
            return
        if self._asr is None:
            self.hooks.caller_stopped(self.last_speech_at(), "vad")
            self.hooks.heard_nothing(timed_out=False)  # nothing can tell us words were said
            return
        self.awaiting_final = True
        self.tasks.spawn(self._flush_asr(self._asr), "asr-flush")
        self.tasks.timer("asr_final", self.provider_timeout_s, self._asr_timed_out)
        self.hooks.caller_stopped(self.last_speech_at(), "vad")

    def turn_ended_by(self, by: str) -> str:
        """What ended the turn that just ended, for its latency row: "answer" (its words
        answered the question: the short silence), "half_answer" (they did not: the long one),
        "silence" (`end_of_turn_ms`), "recogniser" (its endpointing) or "injected"."""
        if by not in ("vad", "answer"):
            return by
        end_ms, usual = self.turns.end_ms, self.turns.rules.end_of_turn_ms
        return "answer" if end_ms < usual else "half_answer" if end_ms > usual else "silence"

    @property
    def in_speech(self) -> bool:
        return self.turns.in_speech

    def words_so_far(self) -> str:
        """Everything heard in the turn in progress (finals so far + the latest interim)."""
        return " ".join([*self._final_parts, self._interim]).strip()

    # -- the recogniser -------------------------------------------------------------------------

    async def _flush_asr(self, asr: AsrStream) -> None:
        try:
            await asr.flush()
        except (ProviderError, OSError) as exc:
            await self._asr_broken(asr, describe_fault(exc))

    def _asr_timed_out(self) -> None:
        if not self.awaiting_final:
            return
        self.awaiting_final = False
        if self._final_parts:
            self._emit(1.0)
            return
        self.hooks.heard_nothing(timed_out=True)

    async def _read_transcripts(self, stream: AsrStream) -> None:
        try:
            async for t in stream.transcripts():
                if stream is self._asr:
                    self._on_transcript(t)
        except (ProviderError, OSError) as exc:
            await self._asr_broken(stream, describe_fault(exc))

    async def _asr_broken(self, stream: AsrStream, message: str) -> None:
        """The ASR stream died: tell the owner (the flow's fallback is spoken) and reopen it."""
        if self.closed or stream is not self._asr:
            return  # already replaced (a second report of the same fault, or a rate change)
        self.awaiting_final = False
        self.tasks.cancel_timer("asr_final")
        old, self._asr = self._asr, None
        self.hooks.recogniser_failed(message)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), 1.0)
        self._asr_reopens += 1
        if self._asr_reopens <= MAX_ASR_REOPENS and not self.closed:
            await self._open_asr()

    def _on_transcript(self, t: Transcript) -> None:
        if not t.is_final:
            if t.text:
                self._interim = t.text  # what the recogniser thinks it heard so far
                self.hooks.heard_partial(t.text)
                if self._check_after_ms and self._judged >= 0:
                    self._judged = -1  # new words in the pause: judge again
                    self._maybe_check()
            return
        if t.text.strip():
            self._final_parts.append(t.text.strip())
        self._interim = ""  # a final covers the interims before it
        if self.awaiting_final or t.end_of_turn:
            if t.end_of_turn and not self.awaiting_final:
                if not self._final_parts and not self.turns.in_speech:
                    # an empty end of turn with no turn open (the answer to our Finalize after
                    # the provider's own endpointing had ended the turn): nothing to end — it
                    # used to open a phantom turn whose latency row ran to our next prompt
                    return
                # the provider's endpointing ended the turn before our silence rule did
                self.turns.end()
                self.paused = False
                self.hooks.caller_stopped(self.last_speech_at(), "recogniser")
            self.awaiting_final = False
            self.tasks.cancel_timer("asr_final")
            self._emit(t.confidence)

    def _emit(self, confidence: float) -> None:
        text = " ".join(self._final_parts).strip()
        self._final_parts = []
        self._interim = ""
        if text:
            self.hooks.heard_final(text, confidence)
        else:
            self.hooks.heard_nothing(timed_out=False)

    def inject(self, text: str) -> None:
        """As if the caller said `text` (tests, `POST /calls/{uuid}/inject`): through the ASR
        stream when it takes injected text, so the whole turn path runs."""
        asr = self._asr
        if asr is not None and asr.capabilities.text_injection:
            asr.inject(text)
            return
        self._final_parts.append(text)
        self.hooks.caller_stopped(time.monotonic(), "injected")
        self._emit(1.0)
