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
    interrupted           -> our player is flushed at once; the record gets what was heard;
                             the provider is told how much of its reply was played (OpenAI:
                             response.cancel + conversation.item.truncate {audio_end_ms})
    speech_stopped        -> the caller's end of speech: opens a latency row (see below)
    error (recoverable)   -> recorded; three in a row count as a failure
    a failure (drop, refused session, stall) -> the flow's `error` handler: its words are spoken
                             by the model if the session still works, else a short tone; then
                             its transfer / end. Never a silent, stuck line.

Per-call provider URL: a `call_initiated` webhook answer with `sts_url` (it lands in the call's
metadata) points this call — only this one — at another endpoint of the same provider
(`provider.with_url`). A URL that fails the check (`providers/sts_url.py`: ws/wss/http/https
with a host; no clear-text API key to another machine) is logged, noted in the record's
`errors`, and the flow's own URL is used.

Per-turn latency (`self.turns`, i.e. the record's `latency` rows, `GET /calls/{uuid}`, SQLite,
the web UI): caller end of speech (the provider's `speech_stopped`, else our `LocalEndpointer`)
-> the provider's first audio of the reply (`sts_first_audio_ms`) -> its first frame written to
the AudioSocket (`first_frame_ms`); `runner_ms` is our share (first frame - first audio),
`caller_transcript_ms` when the caller's transcript arrived. Transcript lines carry the time the
caller stopped speaking / the reply's first audio arrived; the final record is in time order.

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
from flowagent.dialogue import actions as act
from flowagent.dialogue import events as ev
from flowagent.dialogue.call_record import TurnLatency
from flowagent.dialogue.sts_flow import Route, StsDialogue
from flowagent.providers.base import LlmToolCall, ProviderError, StsEvent
from flowagent.runner.session import CallSession, _msg
from flowagent.runner.sts_latency import LocalEndpointer

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
        # barge-in truncation: say_id -> (provider item id, content index) of its audio
        self._resp_item: dict[int, tuple[str, int]] = {}
        self._resp_started: dict[int, float] = {}  # say_id -> call time its first audio came
        # per-turn latency (CallSession's `_turn`/`_turn_open`/`turns` hold the open turn)
        self._turn_by = ""  # "provider" | "local_vad": who said the caller stopped
        self._turn_reply = 0  # say_id answering the open turn (0 = no audio yet)
        self._turn_item = ""  # the provider's id of the caller's speech in the open turn
        self._eos_at: dict[str, float] = {}  # provider's caller item id -> call time of its end
        self._item_turn: dict[str, int] = {}  # caller item id -> index of its latency row
        self._turn_eos_rows: dict[int, float] = {}  # latency row index -> its end of speech
        self._endpointer: LocalEndpointer | None = None  # when the provider reports no end
        #: the URL this call's provider connects to, when the webhook overrode it
        self.sts_url = ""
        self._no_done = False  # the provider never reports `done` (replies split by gaps)
        self._last_audio_at = -1e9

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
        from flowagent.dialogue.tools import ToolRunner

        self.tools = ToolRunner()
        self._out = self._open_out()
        rt.webhooks.emit(self.uuid, "call_started",
                         {"caller": self.info.caller, "did": self.info.did, "flow": flow.name})
        self._timer("t:max_duration", flow.settings.max_call_s, self._max_duration)
        self._sts_rate = self.sample_rate
        provider = self._provider_for_call()
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
        if not getattr(self._sts, "reports_end_of_speech", False):
            self._endpointer = LocalEndpointer()
        self._no_done = not getattr(self._sts, "reports_response_done", False)
        self._spawn(self._events_loop(self._sts), "sts-events")
        self._spawn(self._uplink(), "sts-up")
        opening = self.dialogue.opening
        if opening is not None:
            self._follow_route(opening, speak=True)
        elif self.dialogue.greeting:
            await self._speak(self.dialogue.greeting)

    def _provider_for_call(self) -> Any:
        """The flow's STS provider, or — when the `call_initiated` webhook answered with an
        `sts_url` — the same provider at that URL, for this call only."""
        provider = self.entry.providers.sts  # type: ignore[union-attr]
        wanted = (self.info.metadata or {}).get("sts_url") if self.info is not None else None
        if not wanted:
            return provider
        with_url = getattr(provider, "with_url", None)
        if with_url is None:
            reason = f"the {getattr(provider, 'name', 'sts')} provider has no URL to override"
        else:
            try:
                chosen = with_url(wanted)
            except ValueError as exc:
                reason = str(exc)
            else:
                self.sts_url = str(getattr(chosen, "url", wanted))
                log.info("call %s: speech-to-speech URL for this call: %s", self.uuid,
                         self.sts_url.split("?", 1)[0])
                return chosen
        log.warning("call %s: sts_url from call_initiated ignored (%s); using the flow's own "
                    "URL", self.uuid, reason)
        self.record.errors.append(f"sts_url ignored: {reason}; the flow's own URL was used")
        return provider

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
        if self._rec is not None:  # recording (see recording.py): the agent side is in _open_out
            self._rec.caller(pcm)
        if self._sts is None or self._sts_dead or self._finishing:
            return  # once we are ending the call, the model hears no more
        ep = self._endpointer
        if ep is not None and pcm:
            eos = ep.feed(pcm, len(pcm) * 500 / self.sample_rate, time.monotonic())
            if eos is not None:
                self._open_turn("local_vad", at=eos)
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
        if self._resp_say and not self._no_done:
            self._drop_audio = True  # the reply being made is cancelled: its late audio too
        sid, heard_ms = self._cut_playback()
        self._tell_provider_cut(sid, heard_ms)
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
            self._on_agent_audio(e.audio, e.data)
        elif kind == "transcript_agent":
            self._on_agent_text(e.text, bool(e.data.get("partial", False)))
        elif kind == "speech_stopped":
            self._open_turn("provider", item_id=str(e.data.get("item_id") or ""))
        elif kind == "transcript_user":
            text = e.text.strip()
            item_id = str(e.data.get("item_id") or "")
            self._caller_transcript_arrived(item_id)
            if text:
                at = self._eos_at.pop(item_id, None) if item_id else None
                self.record.add(self.dialogue.now() if at is None else at, "caller", text,
                                self.state)
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

    def _on_agent_audio(self, pcm: bytes, data: dict[str, Any] | None = None) -> None:
        if self._drop_audio or self._out is None or not pcm:
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
                at = self._resp_started.get(sid, self.dialogue.now())
                self.record.add(at, "agent", line, self.state, say_id=sid)
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
        sid, heard_ms = self._cut_playback()
        if sid > 0:
            self._tell_provider_cut(sid, heard_ms)
        if self._no_done:
            self._end_reply()  # the service stopped that reply; what comes next is a new one

    def _end_reply(self) -> None:
        sid, self._resp_say = self._resp_say, 0
        if sid and self._out is not None:
            self._out.end(sid)

    def _cut_playback(self) -> tuple[int, int]:
        """Flush our player. Returns the say_id that was cut (0 = nothing of ours was playing)
        and the milliseconds of it the caller actually heard (frames written to the socket,
        never more than the audio the provider sent)."""
        out = self._out
        if out is None:
            return 0, 0
        playing = out.current_say if out.current_say > 0 else next(
            (sid for sid, _ in out._frames if sid > 0), 0)
        if not out.busy and playing <= 0:
            return 0, 0
        played = out.played.get(playing, 0)
        out.flush()
        self._barged = True
        self.rt.metrics.barge_ins_total += 1
        words = " ".join("".join(self._resp_text.get(playing, [])).split()).split()
        received = self._resp_bytes.get(playing, 0)
        made = max(1, received)
        heard = " ".join(words[: int(len(words) * min(1.0, played / made))])
        bytes_per_ms = out.sample_rate * 2 / 1000
        heard_ms = int(min(played, received) / bytes_per_ms)
        entry = self.record.agent_line(playing)
        if entry is not None:
            entry.heard = heard
        self.dialogue.note("caller interrupted")
        self.rt.webhooks.emit(self.uuid, "interruption",
                              {"say_id": playing, "heard": heard, "heard_ms": heard_ms,
                               "reply_ms": int(received / bytes_per_ms), "state": self.state})
        return playing, heard_ms

    def _tell_provider_cut(self, sid: int, heard_ms: int) -> None:
        """Tell the provider what the caller heard of reply `sid` (OpenAI: cancel a response
        in progress, truncate the item to `heard_ms`); providers without a way to say so (AVR
        STS) only had their reply flushed on our side."""
        sts = self._sts
        if sts is None or self._sts_dead:
            return
        barge_in = getattr(sts, "barge_in", None)
        if barge_in is not None:
            item_id, index = self._resp_item.get(sid, ("", 0)) if sid > 0 else ("", 0)
            coro = barge_in(item_id, index, heard_ms if item_id else None)
        elif getattr(sts, "interrupt", None) is not None:
            coro = sts.interrupt()
        else:
            return
        self._spawn(self._send_cut(coro), "sts-barge-in")

    async def _send_cut(self, coro: Any) -> None:
        try:
            await coro
        except (ProviderError, OSError) as exc:
            self._sts_failed(_msg(exc))

    # -------------------------------------------------------------------------------------
    # per-turn latency
    # -------------------------------------------------------------------------------------

    def _open_turn(self, by: str, *, item_id: str = "", at: float | None = None) -> None:
        """The caller stopped speaking (`at`, monotonic; now if None): a new latency row."""
        if self._turn_open:
            self._close_turn()  # the previous turn got no reply of its own: no row
        eos = time.monotonic() if at is None else at
        self._turn = {"end_of_speech": eos}
        self._turn_open = True
        self._turn_by = by
        self._turn_reply = 0
        self._turn_item = item_id
        if item_id:
            self._eos_at[item_id] = eos - self.t0
            self._item_turn[item_id] = len(self.turns)

    def _reply_started(self, sid: int) -> None:
        """First audio of reply `sid` arrived from the provider."""
        if not self._turn_open and self._endpointer is not None:
            eos = self._endpointer.claim()  # a fast reply before our silence window ended
            if eos is not None:
                self._open_turn("local_vad", at=eos)
        if self._turn_open and not self._turn_reply and sid > 0:
            self._turn_reply = sid
            self._turn["sts_first_audio"] = time.monotonic()

    def _caller_transcript_arrived(self, item_id: str) -> None:
        now = time.monotonic()
        index = self._item_turn.pop(item_id, None) if item_id else None
        if index is None:
            return
        if self._turn_open and index == len(self.turns):
            self._turn.setdefault("caller_transcript", now)
        elif 0 <= index < len(self.turns):
            row = self.turns[index]
            eos = self._turn_eos_rows.get(index)
            if eos is not None and row.get("caller_transcript_ms") is None:
                row["caller_transcript_ms"] = round((now - eos) * 1000, 2)

    def _on_first_frame(self, say_id: int, at: float) -> None:
        if self._turn_open and say_id > 0 and say_id == self._turn_reply:
            self._turn["first_frame"] = at
            self._close_turn()

    def _close_turn(self) -> None:
        self._turn_open = False
        t = self._turn
        eos = t.get("end_of_speech")
        if eos is None:
            return
        if "first_frame" not in t:
            # no reply reached the caller (noise, or an interruption before any audio): like
            # the pipeline, only answered turns get a latency row
            self._item_turn.pop(self._turn_item, None)
            return

        def ms(k: str) -> float | None:
            return None if k not in t else round((t[k] - eos) * 1000, 2)

        row: dict[str, Any] = {
            "index": len(self.turns),
            "state": self.state,
            "end_of_speech_s": round(eos - self.t0, 3),
            "end_of_speech_by": self._turn_by,
            "sts_first_audio_ms": ms("sts_first_audio"),
            "first_frame_ms": ms("first_frame"),
            "caller_transcript_ms": ms("caller_transcript"),
        }
        if "first_frame" in t and "sts_first_audio" in t:
            row["runner_ms"] = round((t["first_frame"] - t["sts_first_audio"]) * 1000, 2)
        self.turns.append(row)
        m = self.rt.metrics.latency
        if "first_frame" in t:
            m["turn"].observe(t["first_frame"] - eos)
        if "sts_first_audio" in t:
            m["sts_first_audio"].observe(t["sts_first_audio"] - eos)
        if "runner_ms" in row:
            m["runner"].observe(row["runner_ms"] / 1000)
        self.record.turns.append(TurnLatency(
            index=row["index"], state=self.state, end_of_speech=eos - self.t0,
            tts_first_audio=(t["sts_first_audio"] - self.t0) if "sts_first_audio" in t else None,
            first_frame=(t["first_frame"] - self.t0) if "first_frame" in t else None))
        self._turn_eos_rows[row["index"]] = eos

    def _on_error_event(self, text: str) -> None:
        self.rt.metrics.error("sts")
        self.record.errors.append(f"sts: {text}")
        self._error_events += 1
        if self._error_events >= MAX_ERROR_EVENTS:
            self._sts_failed(f"{MAX_ERROR_EVENTS} errors in a row, the last: {text}")

    # -------------------------------------------------------------------------------------
    # tools
    # -------------------------------------------------------------------------------------

    async def _tool_call(self, tc: LlmToolCall, dones_before: int) -> None:
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
        if isinstance(plan, act.CallTool):
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
        # caller lines are added when their transcript arrives, often after the reply began;
        # each line carries the time it was spoken, so the stored record reads in time order
        if self.record is not None:
            self.record.transcript.sort(key=lambda e: e.at)
        self._sts_closing = True
        sts, self._sts = self._sts, None
        if sts is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sts.close(), 2.0)
        await super()._finish()

    def post(self, event: Any) -> None:
        """CallSession's shared code reports internal task failures here."""
        if isinstance(event, ev.ProviderFailed) and not self._closed:
            self._sts_failed(event.message)
