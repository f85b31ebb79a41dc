"""A call session for flows with `providers: sts` (speech to speech, e.g. OpenAI Realtime).

The STS provider hears, decides and speaks; flowagent still owns the call. This subclass of
`CallSession` keeps everything about the line — AudioSocket parsing, the UUID and metadata,
flow routing, the shared paced player, hang-up/transfer frames, timers, task ownership and the
always-written record (`CallSession._finish`) — and replaces what sits between caller audio and
our audio:

    caller audio -> provider (send_audio)          provider events -> us
    audio                 -> the paced player (one say_id per model response)
    transcript_user/agent -> the call record (+ `transcription` webhook)
    tool_call             -> the flow's tool via ToolRunner -> send_tool_result; transfer/hangup
                             -> our last words play out, then the 0x00 frame (as CallSession)
    interrupted           -> our player is flushed at once; the record gets what was heard
    error (recoverable)   -> recorded; three in a row count as a failure
    a failure (drop, refused session, stall) -> the flow's `error` handler: its words are spoken
                             by the model if the session still works, else a short tone; then
                             its transfer / end. Never a silent, stuck line.

DTMF: a digit with a `dtmf:` handler in the flow runs it (e.g. "0" -> a person); other digits
are recorded and sent as the `dtmf_digit` webhook, not to the model. `max_call_s` runs the
`max_duration` handler. The flow logic (instructions, tools, handlers) is `sts_flow.StsDialogue`.

Dispatch: `CallSession._start` picks the flow after the UUID frame; for an STS flow it calls
`StsCallSession.take_over(session)`, which turns that session object into this class (same
connection, same state, STS behaviour from then on) — the server creates sessions before it can
know which flow a call will run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from flowagent import audio
from flowagent.asterisk.audiosocket import AUDIO_RATES, Kind
from flowagent.providers.base import ProviderError, StsEvent
from flowagent.runner import events as ev
from flowagent.runner.session import CallSession, _msg
from flowagent.runner.sts_flow import Route, StsDialogue

log = logging.getLogger(__name__)

#: consecutive provider `error` events (with no audio between) that count as a failure
MAX_ERROR_EVENTS = 3
#: longest wait for the model to finish a response we are waiting on (words before a hang-up)
RESPONSE_WAIT_S = 10.0
#: caller audio kept while the provider is slow to accept it (older audio is dropped)
MAX_UPLINK_FRAMES = 250
#: outer guard on connecting (the provider has its own connect/setup timeouts inside this)
CONNECT_GUARD_S = 15.0


class StsCallSession(CallSession):
    dialogue: StsDialogue

    @classmethod
    async def take_over(cls, session: CallSession) -> None:
        """Run `session` (UUID read, flow picked, context resolved) as an STS call."""
        session.__class__ = cls
        assert isinstance(session, StsCallSession)
        session._init_sts()
        await session._start_sts()

    def _init_sts(self) -> None:
        self._sts: Any = None
        self._sts_dead = False
        self._sts_closing = False
        self._sts_rate = self.sample_rate
        self._up_q: deque[bytes] = deque()
        self._up_wake = asyncio.Event()
        self._in_rs: audio.StreamResampler | None = None
        self._out_rs: audio.StreamResampler | None = None
        self._say_seq = 0
        self._resp_say = 0  # say_id of the model response being received (0 = none)
        self._resp_bytes: dict[int, int] = {}  # say_id -> audio bytes received
        self._resp_text: dict[int, list[str]] = {}  # say_id -> transcript so far
        self._resp_final: set[int] = set()
        self._drop_audio = False  # a cut response's late audio is dropped until its `done`
        self._dones = 0  # responses finished so far
        self._done_event = asyncio.Event()  # set (and replaced) at every response `done`
        self._wait_done_after: int | None = None  # finishing waits for a response after this
        self._wait_deadline = 0.0
        self._error_events = 0

    # -------------------------------------------------------------------------------------
    # start
    # -------------------------------------------------------------------------------------

    async def _start_sts(self) -> None:
        rt = self.rt
        assert self.entry is not None and self.info is not None
        flow = self.entry.compiled
        self.dialogue = StsDialogue(flow, self.info, clock=self.now)
        self.engine = self.dialogue  # what CallSession's shared code reads (record, hang-up)
        self.record = self.dialogue.record
        self.state = self.dialogue.state
        rt.sessions[self.uuid] = self
        from flowagent.runner.tools import ToolRunner

        self.tools = ToolRunner()
        self._out = self._open_out()
        rt.webhooks.emit(self.uuid, "call_started",
                         {"caller": self.info.caller, "did": self.info.did, "flow": flow.name})
        self._timer("t:max_duration", flow.settings.max_call_s, self._max_duration)
        self._sts_rate = self.sample_rate
        provider = self.entry.providers.sts
        try:
            self._sts = await asyncio.wait_for(
                provider.connect(self.dialogue.instructions(), self.dialogue.tool_specs(),
                                 self._sts_rate),
                CONNECT_GUARD_S)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._sts_failed(_msg(exc, "the speech-to-speech provider did not answer in time"))
            return
        if self._closed:  # the caller hung up while we connected
            return
        self._spawn(self._events_loop(self._sts), "sts-events")
        self._spawn(self._uplink(), "sts-up")
        opening = self.dialogue.opening
        if opening is not None:
            self._follow_route(opening, speak=True)
        elif self.dialogue.greeting:
            await self._speak(self.dialogue.greeting)

    async def _speak(self, text: str) -> bool:
        """Have the model say `text` word for word (providers with `respond`). False if not."""
        respond = getattr(self._sts, "respond", None)
        if respond is None or self._sts_dead or not text:
            return False
        try:
            await respond("Say exactly the following to the caller, word for word, and "
                          f"nothing else: {text}")
        except (ProviderError, OSError) as exc:
            self._sts_failed(_msg(exc))
            return False
        return True

    # -------------------------------------------------------------------------------------
    # caller -> provider
    # -------------------------------------------------------------------------------------

    def _on_audio(self, pcm: bytes) -> None:
        self.frames_in += 1
        if self._sts is None or self._sts_dead or self._finishing:
            return  # once we are ending the call, the model hears no more
        if self._in_rs is not None:
            pcm = self._in_rs.process(pcm)
        q = self._up_q
        q.append(pcm)
        if len(q) > MAX_UPLINK_FRAMES:
            q.popleft()
        self._up_wake.set()

    async def _uplink(self) -> None:
        """Send caller audio in order; frames that queued up meanwhile go as one message."""
        while True:
            await self._up_wake.wait()
            self._up_wake.clear()
            while self._up_q:
                pcm = b"".join(self._up_q)
                self._up_q.clear()
                sts = self._sts
                if sts is None or self._sts_dead:
                    break
                try:
                    await sts.send_audio(pcm)
                except (ProviderError, OSError) as exc:
                    self._sts_failed(_msg(exc))
                    return

    def _switch_rate(self, kind: Kind) -> None:
        """The caller's rate changed mid-call: re-open our player (CallSession does) and
        resample to/from the rate the provider session was opened at."""
        super()._switch_rate(kind)
        rate = AUDIO_RATES[kind]
        same = rate == self._sts_rate
        self._in_rs = None if same else audio.StreamResampler(rate, self._sts_rate)
        self._out_rs = None if same else audio.StreamResampler(self._sts_rate, rate)

    def _on_dtmf(self, digit: str) -> None:
        self.rt.webhooks.emit(self.uuid, "dtmf_digit", {"digit": digit, "state": self.state})
        if self._finishing or not self.entry.compiled.settings.dtmf_enabled:  # type: ignore[union-attr]
            return
        route = self.dialogue.handler_route("dtmf", digit)
        if route is None:
            self.dialogue.note(f"keypad {digit} (no handler; not sent to the model)")
            return
        self._cut_playback()
        interrupt = getattr(self._sts, "interrupt", None)
        if interrupt is not None and not self._sts_dead:
            self._spawn(interrupt(), "sts-interrupt")
        self._follow_route(route, speak=True)

    def inject_text(self, text: str) -> None:
        """`POST /calls/{uuid}/inject` text: an STS model only hears audio, so it is recorded."""
        self.dialogue.note(f"injected text not sent (speech-to-speech call): {text}")

    # -------------------------------------------------------------------------------------
    # provider -> caller
    # -------------------------------------------------------------------------------------

    async def _events_loop(self, sts: Any) -> None:
        try:
            async for e in sts.events():
                self._on_event(e)
        except (ProviderError, OSError) as exc:
            if not self._sts_closing:
                self._sts_failed(_msg(exc))
            return
        if not self._sts_closing and not self._closed:
            self._sts_failed("the speech-to-speech session ended unexpectedly")

    def _on_event(self, e: StsEvent) -> None:
        kind = e.kind
        if kind == "audio":
            self._on_agent_audio(e.audio)
        elif kind == "transcript_agent":
            self._on_agent_text(e.text, bool(e.data.get("partial", False)))
        elif kind == "transcript_user":
            text = e.text.strip()
            if text:
                self.record.add(self.dialogue.now(), "caller", text, self.state)
                self.rt.metrics.turns_total += 1
                self.rt.webhooks.emit(self.uuid, "transcription",
                                      {"text": text, "state": self.state})
        elif kind == "tool_call" and e.tool_call is not None:
            self._spawn(self._tool_call(e.tool_call, self._dones), f"tool-{e.tool_call.name}")
        elif kind == "interrupted":
            self._on_interrupted(bool(e.data.get("agent_was_speaking", False)))
        elif kind == "error":
            self._on_error_event(e.text)
        elif kind == "done":
            self._on_done()

    def _current_say(self) -> int:
        if self._resp_say == 0:
            self._say_seq += 1
            self._resp_say = self._say_seq
            self._resp_bytes[self._resp_say] = 0
            self._resp_text[self._resp_say] = []
        return self._resp_say

    def _on_agent_audio(self, pcm: bytes) -> None:
        if self._drop_audio or self._out is None or not pcm:
            return
        self._error_events = 0
        if self._out_rs is not None:
            pcm = self._out_rs.process(pcm)
        sid = self._current_say()
        self._resp_bytes[sid] += len(pcm)
        self._out.add(sid, pcm)

    def _on_agent_text(self, text: str, partial: bool) -> None:
        if self._drop_audio:
            return
        sid = self._current_say()
        parts = self._resp_text[sid]
        if partial:
            parts.append(text)
        else:
            parts[:] = [text]
            self._resp_final.add(sid)
        line = " ".join("".join(parts).split())
        entry = self.record.agent_line(sid)
        if entry is None:
            if line:
                self.record.add(self.dialogue.now(), "agent", line, self.state, say_id=sid)
        else:
            entry.text = line

    def _on_done(self) -> None:
        self._dones += 1
        done, self._done_event = self._done_event, asyncio.Event()
        done.set()
        sid, self._resp_say = self._resp_say, 0
        self._drop_audio = False
        if sid and self._out is not None:
            self._out.end(sid)
        self._maybe_finish()

    def _on_interrupted(self, provider_was_speaking: bool) -> None:
        """The caller spoke (provider VAD): stop our audio now. A response still being made
        is cut on the provider's side; its late audio is dropped until it reports `done`."""
        if provider_was_speaking and self._resp_say:
            self._drop_audio = True
        if self._finishing:
            return  # nothing interrupts the last words once the call is ending
        self._cut_playback()

    def _cut_playback(self) -> None:
        out = self._out
        if out is None:
            return
        playing = out.current_say if out.current_say > 0 else next(
            (sid for sid, _ in out._frames if sid > 0), 0)
        if not out.busy and playing <= 0:
            return
        played = out.played.get(playing, 0)
        out.flush()
        self._barged = True
        self.rt.metrics.barge_ins_total += 1
        words = " ".join("".join(self._resp_text.get(playing, [])).split()).split()
        made = max(1, self._resp_bytes.get(playing, 0))
        heard = " ".join(words[: int(len(words) * min(1.0, played / made))])
        entry = self.record.agent_line(playing)
        if entry is not None:
            entry.heard = heard
        self.dialogue.note("caller interrupted")
        self.rt.webhooks.emit(self.uuid, "interruption",
                              {"say_id": playing, "heard": heard, "state": self.state})

    def _on_error_event(self, text: str) -> None:
        self.rt.metrics.error("sts")
        self.record.errors.append(f"sts: {text}")
        self._error_events += 1
        if self._error_events >= MAX_ERROR_EVENTS:
            self._sts_failed(f"{MAX_ERROR_EVENTS} errors in a row, the last: {text}")

    # -------------------------------------------------------------------------------------
    # tools
    # -------------------------------------------------------------------------------------

    async def _tool_call(self, tc: ev.LlmToolCall, dones_before: int) -> None:
        plan = self.dialogue.tool_call(tc)
        if isinstance(plan, Route):
            if plan.action == "dtmf":
                self._send_dtmf_tones(plan.say)
                await self._tool_output(tc.id, {"ok": True}, dones_before)
                return
            # the model has said its words (in the response carrying this call): they play
            # out, then we transfer / hang up
            self._wait_for_response(dones_before)
            self._follow_route(plan, speak=False)
            return
        if isinstance(plan, ev.CallTool):
            result = await self.tools.run(plan)
            output = self.dialogue.tool_result(result)
        else:
            output = plan
        await self._tool_output(tc.id, output, dones_before)

    async def _tool_output(self, call_id: str, output: dict[str, Any], dones_before: int) -> None:
        # a new response may only start once the one that asked has finished
        deadline = time.monotonic() + RESPONSE_WAIT_S
        while self._dones <= dones_before and not self._closed and not self._sts_dead:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done_event.wait(), remaining)
        if self._sts is None or self._sts_dead or self._closed or self._finishing:
            return
        try:
            await self._sts.send_tool_result(call_id, output)
        except (ProviderError, OSError) as exc:
            self._sts_failed(_msg(exc))

    # -------------------------------------------------------------------------------------
    # routes: transfer, end, handlers, failures
    # -------------------------------------------------------------------------------------

    def _follow_route(self, route: Route, *, speak: bool) -> None:
        if speak and route.say:
            n = self._dones
            if self._sts is not None and not self._sts_dead and hasattr(self._sts, "respond"):
                self._wait_for_response(n)
                self._spawn(self._speak(route.say), "sts-say")
                self.dialogue.note(f"asked the model to say: {route.say}")
            elif route.action != "continue" and self._out is not None:
                self._out.add(-2, audio.tone(400, 480, self.sample_rate, 0.15))
                self._out.end(-2)
        if route.action == "continue":
            if self._sts_dead:  # nothing left to continue with
                self._end_call(Route(action="end", outcome="error"))
            return
        self._end_call(route)

    def _end_call(self, route: Route) -> None:
        if self.dialogue.ended:
            return
        self.dialogue.finish(route)
        if route.action == "transfer":
            self.transfer_target = route.target
            self.end_reason = route.reason or f"transferred to {route.target}"
        else:
            self.end_reason = self.end_reason or route.outcome
        self._cancel_timer("t:max_duration")
        self._timer("max_hard", RESPONSE_WAIT_S * 3, self._hangup)
        self._finish_after_playback()

    def _wait_for_response(self, dones_before: int) -> None:
        """Hold a hang-up until the model's response after `dones_before` is done (bounded)."""
        self._wait_done_after = dones_before
        self._wait_deadline = time.monotonic() + RESPONSE_WAIT_S
        self._timer("response_wait", RESPONSE_WAIT_S, self._maybe_finish)

    def _idle(self) -> bool:
        out = self._out
        if out is not None and out.busy:
            return False
        w = self._wait_done_after
        return (w is None or self._sts_dead or self._dones > w
                or time.monotonic() >= self._wait_deadline)

    def _max_duration(self) -> None:
        self._follow_route(self.dialogue.max_duration_route(), speak=True)
        self._timer("max_hard", 30.0, self._hangup)

    def _sts_failed(self, message: str) -> None:
        """The provider session is gone (or unusable): the flow's error handler, once."""
        if self._sts_dead or self._closed:
            return
        self._sts_dead = True
        self._done_event.set()  # nobody waits for a response any more
        self.rt.metrics.error("sts")
        log.warning("call %s: speech-to-speech provider failed: %s", self.uuid, message)
        self._up_q.clear()
        if self._sts is not None:
            self._spawn(self._close_sts(), "sts-close")
        if self._finishing:  # already transferring / ending: just note it
            self.record.errors.append(f"sts: {message}")
            return
        if self._resp_say and self._out is not None:
            self._out.end(self._resp_say)
            self._resp_say = 0
        self._follow_route(self.dialogue.error_route(f"sts: {message}"), speak=True)

    async def _close_sts(self) -> None:
        sts, self._sts = self._sts, None
        self._sts_closing = True
        if sts is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sts.close(), 2.0)

    async def _finish(self) -> None:
        self._sts_closing = True
        sts, self._sts = self._sts, None
        if sts is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sts.close(), 2.0)
        await super()._finish()

    def post(self, event: Any) -> None:
        """CallSession's shared code reports internal task failures here."""
        if isinstance(event, ev.ProviderError) and not self._closed:
            self._sts_failed(event.message)
