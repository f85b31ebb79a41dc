"""A call on a speech-to-speech provider (`providers: sts`, e.g. OpenAI Realtime).

The STS provider hears, decides and speaks; flowagent still owns the call. `StsCall` composes
the same line (`line.Line`: audio, the call's rate, the out stream, hang-up/transfer) and
the same speaker (one `Utterance` per model reply, so an interruption knows what the caller
heard) as a pipeline call, and replaces what sits between the caller's audio and ours:

    caller audio -> provider (send_audio)          provider events -> us
    audio                 -> the speaker's line (one say_id per model response)
    transcript_user/agent -> the call record (+ `transcription` webhook)
    tool_call             -> the flow's tool via ToolRunner -> send_tool_result; transfer/hangup
                             -> our last words play out, then the 0x00 frame (the lifecycle)
    interrupted           -> our audio is flushed at once; the record gets what was heard;
                             the provider is told how much of its reply was played (OpenAI:
                             response.cancel + conversation.item.truncate {audio_end_ms})
    speech_stopped        -> the caller's end of speech: opens a latency row
    error (recoverable)   -> recorded; three in a row count as a failure
    a failure (drop, refused session, stall) -> the flow's `error` handler: its words are spoken
                             by the model if the session still works, else a short tone; then
                             its transfer / end. Never a silent, stuck line.

Per-call provider URL: a `call_initiated` webhook answer with `sts_url` (it lands in the call's
metadata) points this call — only this one — at another endpoint of the same provider
(`provider.with_url`). A URL that fails the check (`providers/sts_url.py`) is logged, noted in
the record's `errors`, and the flow's own URL is used.

DTMF: a digit with a `dtmf:` handler in the flow runs it (e.g. "0" -> a person); other digits
are recorded and sent as the `dtmf_digit` webhook, not to the model. `max_call_s` runs the
`max_duration` handler. The flow logic (instructions, tools, handlers) is
`dialogue.sts_flow.StsDialogue`; latency rows are `sts_latency.StsLatencyRows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowagent import audio
from flowagent.dialogue import actions as act
from flowagent.dialogue.call_record import CallRecord
from flowagent.dialogue.sts_flow import Route, StsDialogue
from flowagent.dialogue.tools import ToolRunner
from flowagent.providers.base import (
    LlmToolCall,
    ProviderError,
    StsEvent,
    StsProvider,
    StsSession,
    describe_fault,
)
from flowagent.runner.lifecycle import CallLifecycle
from flowagent.runner.speaker import Speaker
from flowagent.runner.sts_latency import LocalEndpointer, StsLatencyRows

if TYPE_CHECKING:
    from flowagent.dialogue.events import CallInfo, Event
    from flowagent.runner.served_flow import FlowEntry

log = logging.getLogger(__name__)

#: consecutive provider `error` events (with no audio between) that count as a failure
MAX_ERROR_EVENTS = 3
#: longest wait for the model to finish a response we are waiting on (words before a hang-up)
RESPONSE_WAIT_S = 10.0
#: caller audio kept while the provider is slow to accept it (older audio is dropped)
MAX_UPLINK_FRAMES = 250
#: outer guard on connecting (the provider has its own connect/setup timeouts inside this)
CONNECT_GUARD_S = 15.0
#: providers that never say a reply is `done` (AVR STS): audio after this much quiet from the
#: provider starts a new reply (its own say_id, transcript line and latency mark)
REPLY_GAP_S = 0.25
#: say_id of the tone played when the model cannot speak the flow's words
TONE_SAY_ID = -2


class StsCall:
    """One call on a speech-to-speech provider. Built by `call_start.run_call`."""

    def __init__(self, life: CallLifecycle) -> None:
        assert life.entry is not None and life.info is not None
        self.life = life
        self.line = life.line
        self.rt = life.services
        self.uuid = life.uuid
        self._entry: FlowEntry = life.entry
        self._info: CallInfo = life.info
        self.tasks = life.tasks
        self.dialogue = StsDialogue(self._entry.compiled, self._info, clock=life.now)
        self.record: CallRecord | None = self.dialogue.record
        self.state = self.dialogue.state
        self.tools = ToolRunner()
        self.speaker = Speaker(self, self.tasks, self.line, self._entry,
                               provider_timeout_s=self.rt.config.provider_timeout_s)
        self.latency = StsLatencyRows(self.rt.metrics, life.t0)
        self._sts: StsSession | None = None
        self._dead = False  # the provider session failed: nothing more goes to it
        self._closing = False
        self._sts_rate = self.line.sample_rate
        self._up_q: deque[bytes] = deque()
        self._up_wake = asyncio.Event()
        self._in_rs: audio.StreamResampler | None = None
        self._out_rs: audio.StreamResampler | None = None
        self._say_seq = 0
        self._resp_say = 0  # say_id of the model response being received (0 = none)
        self._resp_bytes: dict[int, int] = {}  # say_id -> audio bytes received
        self._resp_text: dict[int, list[str]] = {}  # say_id -> transcript so far
        self._drop_audio = False  # a cut response's late audio is dropped until its `done`
        self._dones = 0  # responses finished so far
        self._done_event = asyncio.Event()  # set (and replaced) at every response `done`
        self._wait_done_after: int | None = None  # finishing waits for a response after this
        self._wait_deadline = 0.0
        self._error_events = 0
        # barge-in truncation: say_id -> (provider item id, content index) of its audio
        self._resp_item: dict[int, tuple[str, int]] = {}
        self._resp_started: dict[int, float] = {}  # say_id -> call time its first audio came
        self._endpointer: LocalEndpointer | None = None  # when the provider reports no end
        #: the URL this call's provider connects to, when the webhook overrode it
        self.sts_url = ""
        self._no_done = False  # the provider never reports `done` (replies split by gaps)
        self._last_audio_at = -1e9
        life.on_task_failure = self._sts_failed

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
        d: dict[str, Any] = (self.record.to_dict() if self.record is not None
                             else {"uuid": self.uuid})
        d["live"] = True
        d["state"] = self.state
        d["latency"] = self.turns
        return d

    def inject_text(self, text: str) -> None:
        """`POST /calls/{uuid}/inject` text: an STS model only hears audio, so it is recorded."""
        self.dialogue.note(f"injected text not sent (speech-to-speech call): {text}")

    def inject_dtmf(self, digit: str) -> None:
        if not self.line.closed:
            self.on_dtmf(digit)

    # -- start ----------------------------------------------------------------------------------

    async def start(self) -> None:
        flow = self._entry.compiled
        self.rt.webhooks.emit(self.uuid, "call_started", {
            "caller": self._info.caller, "did": self._info.did, "flow": flow.name})
        self.tasks.timer("t:max_duration", flow.settings.max_call_s, self._max_duration)
        self.line.start(self)
        provider = self._provider_for_call()
        try:
            self._sts = await asyncio.wait_for(
                provider.connect(self.dialogue.instructions(), self.dialogue.tool_specs(),
                                 self._sts_rate),
                CONNECT_GUARD_S)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._sts_failed(describe_fault(
                exc, "the speech-to-speech provider did not answer in time"))
            return
        if self.line.closed:  # the caller hung up while we connected
            return
        caps = self._sts.capabilities
        if not caps.reports_end_of_speech:
            self._endpointer = LocalEndpointer()
        self._no_done = not caps.reports_response_done
        self.tasks.spawn(self._events_loop(self._sts), "sts-events")
        self.tasks.spawn(self._uplink(), "sts-up")
        opening = self.dialogue.opening
        if opening is not None:
            self._follow_route(opening, speak=True)
        elif self.dialogue.greeting:
            await self._speak(self.dialogue.greeting)

    def _provider_for_call(self) -> StsProvider:
        """The flow's STS provider, or — when the `call_initiated` webhook answered with an
        `sts_url` — the same provider at that URL, for this call only."""
        provider = self._entry.providers.sts
        assert provider is not None
        wanted = (self._info.metadata or {}).get("sts_url")
        if not wanted:
            return provider
        try:
            chosen = provider.with_url(str(wanted))
        except ValueError as exc:
            reason = str(exc)
        else:
            self.sts_url = str(wanted)
            log.info("call %s: speech-to-speech URL for this call: %s", self.uuid,
                     self.sts_url.split("?", 1)[0])
            return chosen
        log.warning("call %s: sts_url from call_initiated ignored (%s); using the flow's own "
                    "URL", self.uuid, reason)
        if self.record is not None:
            self.record.errors.append(
                f"sts_url ignored: {reason}; the flow's own URL was used")
        return provider

    async def _speak(self, text: str) -> bool:
        """Have the model say `text` word for word (providers that can be asked to speak)."""
        sts = self._sts
        if sts is None or self._dead or not text or not sts.capabilities.respond:
            return False
        try:
            await sts.respond("Say exactly the following to the caller, word for word, and "
                              f"nothing else: {text}")
        except (ProviderError, OSError) as exc:
            self._sts_failed(describe_fault(exc))
            return False
        return True

    # -- caller -> provider (LineHooks) ---------------------------------------------------------

    @property
    def on_audio(self) -> Callable[[bytes], None]:
        return self._caller_audio

    def _caller_audio(self, pcm: bytes) -> None:
        if self._sts is None or self._dead or self.life.finishing:
            return  # once we are ending the call, the model hears no more
        ep = self._endpointer
        if ep is not None and pcm:
            eos = ep.feed(pcm, len(pcm) * 500 / self.line.sample_rate, time.monotonic())
            if eos is not None:
                self.latency.begin("local_vad", at=eos)
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
                if sts is None or self._dead:
                    break
                try:
                    await sts.send_audio(pcm)
                except (ProviderError, OSError) as exc:
                    self._sts_failed(describe_fault(exc))
                    return

    def on_rate_change(self, sample_rate: int) -> None:
        """The caller's rate changed mid-call: resample to/from the rate the provider session
        was opened at (the line already follows the new rate)."""
        same = sample_rate == self._sts_rate
        self._in_rs = None if same else audio.StreamResampler(sample_rate, self._sts_rate)
        self._out_rs = None if same else audio.StreamResampler(self._sts_rate, sample_rate)

    def on_dtmf(self, digit: str) -> None:
        self.rt.webhooks.emit(self.uuid, "dtmf_digit", {"digit": digit, "state": self.state})
        if self.life.finishing or not self._entry.compiled.settings.dtmf_enabled:
            return
        route = self.dialogue.handler_route("dtmf", digit)
        if route is None:
            self.dialogue.note(f"keypad {digit} (no handler; not sent to the model)")
            return
        if self._resp_say and not self._no_done:
            self._drop_audio = True  # the reply being made is cancelled: its late audio too
        sid, heard_ms = self._cut_playback()
        self._tell_provider_cut(sid, heard_ms)
        self._follow_route(route, speak=True)

    def on_line_ended(self, by: str, reason: str) -> None:
        self.life.ended_by(by, reason)

    def on_first_frame(self, say_id: int, at: float) -> None:
        self.latency.first_frame(say_id, at, self.state, self.record)

    def on_say_done(self, say_id: int) -> None:
        self.speaker.utterance_done(say_id)
        self.life.maybe_finish()

    def on_idle(self) -> None:
        self.life.maybe_finish()

    # -- provider -> caller ---------------------------------------------------------------------

    async def _events_loop(self, sts: StsSession) -> None:
        try:
            async for e in sts.events():
                self._on_event(e)
        except (ProviderError, OSError) as exc:
            if not self._closing:
                self._sts_failed(describe_fault(exc))
            return
        if not self._closing and not self.line.closed:
            self._sts_failed("the speech-to-speech session ended unexpectedly")

    def _on_event(self, e: StsEvent) -> None:
        kind = e.kind
        if kind == "audio":
            self._on_agent_audio(e.audio, e.data)
        elif kind == "transcript_agent":
            self._on_agent_text(e.text, bool(e.data.get("partial", False)))
        elif kind == "speech_stopped":
            self.latency.begin("provider", item_id=str(e.data.get("item_id") or ""))
        elif kind == "transcript_user":
            self._on_caller_text(e.text.strip(), str(e.data.get("item_id") or ""))
        elif kind == "tool_call" and e.tool_call is not None:
            self.tasks.spawn(self._tool_call(e.tool_call, self._dones),
                             f"tool-{e.tool_call.name}")
        elif kind == "interrupted":
            self._on_interrupted(bool(e.data.get("agent_was_speaking", False)))
        elif kind == "error":
            self._on_error_event(e.text)
        elif kind == "done":
            self._on_done()

    def _on_caller_text(self, text: str, item_id: str) -> None:
        self.latency.caller_transcript(item_id)
        if not text or self.record is None:
            return
        at = self.latency.eos_at.pop(item_id, None) if item_id else None
        self.record.add(self.dialogue.now() if at is None else at, "caller", text, self.state)
        self.rt.metrics.turns_total += 1
        self.rt.webhooks.emit(self.uuid, "transcription", {"text": text, "state": self.state})

    def _current_say(self) -> int:
        if self._resp_say == 0:
            self._say_seq += 1
            self._resp_say = self._say_seq
            self._resp_bytes[self._resp_say] = 0
            self._resp_text[self._resp_say] = []
        return self._resp_say

    def _on_agent_audio(self, pcm: bytes, data: dict[str, Any] | None = None) -> None:
        if self._drop_audio or self.line.out is None or not pcm:
            return
        self._error_events = 0
        if self._out_rs is not None:
            pcm = self._out_rs.process(pcm)
        now = time.monotonic()
        if self._no_done and self._resp_say and now - self._last_audio_at > REPLY_GAP_S:
            self._end_reply()  # a provider without `done`: the quiet gap ended the last reply
        self._last_audio_at = now
        sid = self._current_say()
        if data and data.get("item_id"):
            self._resp_item[sid] = (str(data["item_id"]), int(data.get("content_index") or 0))
        if sid not in self._resp_started:
            self._resp_started[sid] = self.dialogue.now()
            self._reply_started(sid)
        self._resp_bytes[sid] += len(pcm)
        self.speaker.relay_audio(sid, pcm)

    def _reply_started(self, sid: int) -> None:
        """First audio of reply `sid` arrived from the provider."""
        if not self.latency.open and self._endpointer is not None:
            eos = self._endpointer.claim()  # a fast reply before our silence window ended
            if eos is not None:
                self.latency.begin("local_vad", at=eos)
        self.latency.reply_started(sid)

    def _on_agent_text(self, text: str, partial: bool) -> None:
        if self._drop_audio or self.record is None:
            return
        sid = self._current_say()
        parts = self._resp_text[sid]
        if partial:
            parts.append(text)
        else:
            parts[:] = [text]
        line = " ".join("".join(parts).split())
        self.speaker.relay_text(sid, line)
        entry = self.record.agent_line(sid)
        if entry is None:
            if line:
                at = self._resp_started.get(sid, self.dialogue.now())
                self.record.add(at, "agent", line, self.state, say_id=sid)
        else:
            entry.text = line

    def _on_done(self) -> None:
        self._dones += 1
        done, self._done_event = self._done_event, asyncio.Event()
        done.set()
        self._drop_audio = False
        self._end_reply()
        self.life.maybe_finish()

    def _on_interrupted(self, provider_was_speaking: bool) -> None:
        """The caller spoke (provider VAD): stop our audio now. A response still being made
        is cut on the provider's side; its late audio is dropped until it reports `done`."""
        if provider_was_speaking and self._resp_say:
            self._drop_audio = True
        if self.life.finishing:
            return  # nothing interrupts the last words once the call is ending
        sid, heard_ms = self._cut_playback()
        if sid > 0:
            self._tell_provider_cut(sid, heard_ms)
        if self._no_done:
            self._end_reply()  # the service stopped that reply; what comes next is a new one

    def _end_reply(self) -> None:
        sid, self._resp_say = self._resp_say, 0
        if sid and self.line.out is not None:
            self.speaker.end_relay(sid)

    def _cut_playback(self) -> tuple[int, int]:
        """Flush our audio. Returns the say_id that was cut (0 = nothing of ours was playing)
        and the milliseconds of it the caller actually heard (frames written to the socket,
        never more than the audio the provider sent)."""
        out = self.line.out
        if out is None or not out.playing:
            return 0, 0
        interruption = self.speaker.stop_audio()
        self.speaker.on_interruption(interruption)
        playing = interruption.say_id
        self.rt.metrics.barge_ins_total += 1
        received = self._resp_bytes.get(playing, 0)
        bytes_per_ms = out.sample_rate * 2 / 1000
        heard_ms = int(min(interruption.played_bytes, received) / bytes_per_ms)
        entry = self.record.agent_line(playing) if self.record is not None else None
        if entry is not None:
            entry.heard = interruption.heard
        self.dialogue.note("caller interrupted")
        self.rt.webhooks.emit(self.uuid, "interruption", {
            "say_id": playing, "heard": interruption.heard, "heard_ms": heard_ms,
            "reply_ms": int(received / bytes_per_ms), "state": self.state})
        return playing, heard_ms

    def _tell_provider_cut(self, sid: int, heard_ms: int) -> None:
        """Tell the provider what the caller heard of reply `sid` (OpenAI: cancel a response
        in progress, truncate the item to `heard_ms`); providers without a way to say so (AVR
        STS) only had their reply flushed on our side."""
        sts = self._sts
        if sts is None or self._dead:
            return
        if sts.capabilities.truncate:
            item_id, index = self._resp_item.get(sid, ("", 0)) if sid > 0 else ("", 0)
            coro = sts.barge_in(item_id, index, heard_ms if item_id else None)
        elif sts.capabilities.interrupt:
            coro = sts.interrupt()
        else:
            return
        self.tasks.spawn(self._send_cut(coro), "sts-barge-in")

    async def _send_cut(self, coro: Any) -> None:
        try:
            await coro
        except (ProviderError, OSError) as exc:
            self._sts_failed(describe_fault(exc))

    def _on_error_event(self, text: str) -> None:
        self.rt.metrics.error("sts")
        if self.record is not None:
            self.record.errors.append(f"sts: {text}")
        self._error_events += 1
        if self._error_events >= MAX_ERROR_EVENTS:
            self._sts_failed(f"{MAX_ERROR_EVENTS} errors in a row, the last: {text}")

    # -- tools ----------------------------------------------------------------------------------

    async def _tool_call(self, tc: LlmToolCall, dones_before: int) -> None:
        plan = self.dialogue.tool_call(tc)
        if isinstance(plan, Route):
            if plan.action == "dtmf":
                self.speaker.play_tones(plan.say)
                await self._tool_output(tc.id, {"ok": True}, dones_before)
                return
            # the model has said its words (in the response carrying this call): they play
            # out, then we transfer / hang up
            self._wait_for_response(dones_before)
            self._follow_route(plan, speak=False)
            return
        if isinstance(plan, act.CallTool):
            result = await self.tools.run(plan)
            output = self.dialogue.tool_result(result)
        else:
            output = plan
        await self._tool_output(tc.id, output, dones_before)

    async def _tool_output(self, call_id: str, output: dict[str, Any], dones_before: int) -> None:
        # a new response may only start once the one that asked has finished
        deadline = time.monotonic() + RESPONSE_WAIT_S
        while self._dones <= dones_before and not self.line.closed and not self._dead:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done_event.wait(), remaining)
        sts = self._sts
        if sts is None or self._dead or self.line.closed or self.life.finishing:
            return
        try:
            await sts.send_tool_result(call_id, output)
        except (ProviderError, OSError) as exc:
            self._sts_failed(describe_fault(exc))

    # -- routes: transfer, end, handlers, failures ----------------------------------------------

    def _follow_route(self, route: Route, *, speak: bool) -> None:
        if speak and route.say:
            n = self._dones
            sts = self._sts
            if sts is not None and not self._dead and sts.capabilities.respond:
                self._wait_for_response(n)
                self.tasks.spawn(self._speak(route.say), "sts-say")
                self.dialogue.note(f"asked the model to say: {route.say}")
            elif route.action != "continue" and self.line.out is not None:
                self.line.out.add(TONE_SAY_ID, audio.tone(400, 480, self.line.sample_rate, 0.15))
                self.line.out.end(TONE_SAY_ID)
        if route.action == "continue":
            if self._dead:  # nothing left to continue with
                self._end_call(Route(action="end", outcome="error"))
            return
        self._end_call(route)

    def _end_call(self, route: Route) -> None:
        if self.dialogue.ended:
            return
        self.dialogue.finish(route)
        self.tasks.cancel_timer("t:max_duration")
        self.tasks.timer("max_hard", RESPONSE_WAIT_S * 3, self.life.hang_up)
        if route.action == "transfer":
            self.life.end_after_playback("", transfer_to=route.target,
                                         transfer_reason=route.reason)
        else:
            self.life.end_after_playback(route.outcome)

    def _wait_for_response(self, dones_before: int) -> None:
        """Hold a hang-up until the model's response after `dones_before` is done (bounded)."""
        self._wait_done_after = dones_before
        self._wait_deadline = time.monotonic() + RESPONSE_WAIT_S
        self.tasks.timer("response_wait", RESPONSE_WAIT_S, self.life.maybe_finish)

    def idle(self) -> bool:
        out = self.line.out
        if out is not None and out.busy:
            return False
        w = self._wait_done_after
        return (w is None or self._dead or self._dones > w
                or time.monotonic() >= self._wait_deadline)

    def _max_duration(self) -> None:
        self._follow_route(self.dialogue.max_duration_route(), speak=True)
        self.tasks.timer("max_hard", 30.0, self.life.hang_up)

    def _sts_failed(self, message: str) -> None:
        """The provider session is gone (or unusable): the flow's error handler, once."""
        if self._dead or self.line.closed:
            return
        self._dead = True
        self._done_event.set()  # nobody waits for a response any more
        self.rt.metrics.error("sts")
        log.warning("call %s: speech-to-speech provider failed: %s", self.uuid, message)
        self._up_q.clear()
        if self._sts is not None:
            self.tasks.spawn(self._close_sts(), "sts-close")
        if self.life.finishing:  # already transferring / ending: just note it
            if self.record is not None:
                self.record.errors.append(f"sts: {message}")
            return
        if self._resp_say and self.line.out is not None:
            self.speaker.end_relay(self._resp_say)
            self._resp_say = 0
        self._follow_route(self.dialogue.error_route(f"sts: {message}"), speak=True)

    async def _close_sts(self) -> None:
        sts, self._sts = self._sts, None
        self._closing = True
        if sts is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sts.close(), 2.0)

    async def close(self) -> None:
        # caller lines are added when their transcript arrives, often after the reply began;
        # each line carries the time it was spoken, so the stored record reads in time order
        if self.record is not None:
            # (a caller line is timed at its end of speech, which a reply can only follow: at
            # an equal time the caller's words come first)
            self.record.transcript.sort(key=lambda e: (e.at, e.who != "caller"))
        await self._close_sts()

    # -- SpeakerHooks (the speaker only relays the provider's audio here) ------------------------

    def post(self, event: Event) -> None:
        return None  # no dialogue engine events: the provider decides

    def milestone(self, name: str) -> None:
        return None

    def agent_line(self, say_id: int, text: str) -> None:
        return None

    def speech_queue_idle(self) -> None:
        return None

    def fault(self, kind: str, message: str) -> None:
        return None

    def cut_short(self, say_id: int, heard: str) -> None:
        return None

    def now(self) -> float:
        return self.life.now()
