"""One phone call: AudioSocket <-> VAD/ASR <-> engine <-> LLM/tools <-> TTS <-> paced player.

Data path: inbound frames are parsed, fed to the call's VAD stream (a per-call view of a shared
VAD model) and ASR stream; VAD silence of `end_of_turn_ms` (or the ASR provider's own
endpointing) ends the caller's turn, and the final transcript goes to the engine as a
`UserUtterance`. The engine answers with actions: `Say` (TTS -> player; static prompts come from
a per-flow audio cache so they start at once), `LlmRequest` (LLM tokens -> clause chunking -> TTS
-> player as they arrive), `CallTool` (ToolRunner), `Transfer`/`EndCall` (let our last words play
out, then a 0x00 frame and close, so the dialplan continues). Caller speech during playback
(stricter VAD threshold while we play, at least `min_speech_ms`) is a barge-in: the player is
flushed within a frame, TTS and LLM work is cancelled, and the engine is told what was heard.
With a streaming ASR the answer to its interim words is prepared at end of speech on a fork of
the engine and held back until the final transcript confirms it (runner/preemptive.py).

Ownership: every task the session starts is in `self._tasks` and is cancelled when the call
ends; timers are loop `call_later` handles, cancelled the same way. Whatever happens — a socket
reset, a provider raising, a protocol error, a bug — `run()` ends in `finally:` which writes the
call record. Provider faults become engine events (`ProviderError`, `LlmResult(ok=False)`) so the
flow's fallback plays; none can leave a call silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from flowagent import audio
from flowagent import logging as flog
from flowagent.asterisk.audiosocket import (
    AUDIO_RATES,
    Frame,
    FrameParser,
    Kind,
    ProtocolError,
    encode_hangup,
)
from flowagent.dialogue import actions as act
from flowagent.dialogue import events as ev
from flowagent.providers.base import LlmToolCall, ProviderError, Transcript
from flowagent.providers.chunking import Chunker
from flowagent.runner import audio_recording as recording
from flowagent.runner.player import FRAME_MS, OutStream
from flowagent.runner.speculation import (
    AudioOut,
    Prepared,
    Speculation,
    normalise,
    same_plan,
    speech_plan,
)

if TYPE_CHECKING:
    from flowagent.server.runtime import FlowEntry, Runtime

log = logging.getLogger(__name__)

#: speech probability above which a frame counts as speech when we are not playing
SPEECH_THRESHOLD = 0.5
#: speech needed to open a caller turn (shorter than barge-in: nothing to protect)
TURN_START_MS = 100


@dataclass
class _SayInfo:
    """What we know about one utterance: its text pieces and where their audio starts/ends."""

    say_id: int
    text: str = ""
    interruptible: bool = True
    expect_reply: bool = False
    segments: list[list[Any]] = field(default_factory=list)  # [text, start_byte, end_byte|None]
    produced: int = 0  # bytes of audio made so far

    def heard(self, played: int) -> str:
        """The words the caller heard, given `played` bytes of this utterance went out."""
        words: list[str] = []
        for text, start, end in self.segments:
            if played <= start:
                break
            seg_words = text.split()
            stop = self.produced if end is None else end
            if end is not None and played >= end:
                words += seg_words
                continue
            frac = (played - start) / max(1, stop - start)
            words += seg_words[: int(len(seg_words) * frac)]
            break
        return " ".join(words)


class CallSession:
    """Runs one AudioSocket connection from UUID to hang-up. `await CallSession(...).run()`."""

    def __init__(
        self,
        runtime: Runtime,
        transport: asyncio.Transport,
    ) -> None:
        self.rt = runtime
        self.transport = transport
        self.uuid = ""
        self.entry: FlowEntry | None = None
        self.engine: Any = None
        self.record: Any = None
        self.info: ev.CallInfo | None = None
        self.sample_rate = 8000
        self.kind = Kind.SLIN_8K
        self.state = ""
        self.hangup_by = ""  # caller | agent | error
        self.end_reason = ""
        self.transfer_target = ""
        self.t0 = time.monotonic()

        self._parser = FrameParser()
        self._early: list[Frame] = []  # frames that arrived before the call was set up
        self._ready = False
        self._got_uuid = asyncio.Event()
        self._got_audio = asyncio.Event()
        self._ended = asyncio.Event()  # the connection is over (either side)
        self._asr_q: deque[bytes] = deque()
        self._asr_nowait: Callable[[bytes], None] | None = None
        self.frames_in = 0
        self._asr_wake = asyncio.Event()
        self._vad_q: deque[bytes] = deque()
        #: VAD streams that call back with results (`feed_ms(pcm, ms)` + `listener`, e.g. the
        #: batched Silero): no task or coroutine per frame
        self._vad_feed: Callable[[bytes, Any], None] | None = None
        self._vad_fallback = False  # the VAD failed and the energy VAD took over
        self._vad_wake = asyncio.Event()
        self._out: OutStream | None = None
        self._rec: Any = None  # recording.CallRecorder when this call is recorded, else None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._events: deque[Any] = deque()
        self._dispatching = False
        self._closed = False
        self._protocol_error: ProtocolError | None = None
        self._finishing = False  # EndCall/Transfer seen: hang up once playback is done
        self._transfer_reason = ""
        self._transferring = False  # the Transferer is handling the end of this call
        self._log_ctx: Any = None  # flowagent.logging.call_context(uuid), entered in _start
        self._done = asyncio.Event()

        # speech out
        self._says: dict[int, _SayInfo] = {}
        self._speech_jobs: deque[Any] = deque()
        self._speech_wake = asyncio.Event()
        self._speaking: asyncio.Task[Any] | None = None
        self._speech_busy = False
        self._pending_no_input: float | None = None
        self._llm_tasks: dict[int, asyncio.Task[Any]] = {}
        #: speaking LLM requests whose LlmResult is not sent yet: request_id -> (say_id, text)
        self._llm_open: dict[int, tuple[int, list[str]]] = {}
        self._tts_failures_at: float = -1e9

        # speech in
        self._vad: Any = None
        self._vad_now: Callable[[bytes], float] | None = None
        self._asr: Any = None
        self._asr_failures = 0
        self._in_speech = False
        self._barged = False  # our speech was cut; nothing of ours plays until the next say
        self._held = False  # playback paused by a possible false barge-in (resume_after_false)
        self._resume_after_false = False
        self._barge: tuple[bool, int, float] = (True, 250, 0.5)  # per state, see _barge_settings
        self._eot_ms = 600
        self._speech_ms = 0
        self._silence_ms = 0
        self._awaiting_final = False
        self._final_parts: list[str] = []
        self._interim = ""  # the latest interim transcript of the current turn
        self._odd = b""

        # preemptive generation (see runner/preemptive.py)
        self._spec: Speculation | None = None  # being prepared for the turn in progress
        #: (the final's UserUtterance, its speculation): decided when the engine answers it
        self._spec_pending: tuple[ev.UserUtterance, Speculation] | None = None
        self._adopting: Speculation | None = None
        self._live_specs: set[Speculation] = set()  # adopted and still producing
        self._turn_spec: tuple[str, str] | None = None  # ("hit" | "miss", why) of this turn

        # latency of the current turn (monotonic seconds)
        self._turn: dict[str, float] = {}
        self._turn_open = False
        self.turns: list[dict[str, Any]] = []

    # -------------------------------------------------------------------------------------
    # lifecycle
    # -------------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the call connected (transcript timestamps)."""
        return time.monotonic() - self.t0

    async def run(self) -> None:
        rt = self.rt
        rt.metrics.active_calls += 1
        rt.metrics.calls_total += 1
        try:
            await self._start()
            if self.engine is not None:
                early, self._early = self._early, []
                self._ready = True
                for f in early:
                    if self._closed:
                        break
                    self._on_frame(f)
                self._attach_native_input()
                await self._ended.wait()
        except ProtocolError as exc:
            self.hangup_by = self.hangup_by or "error"
            self.end_reason = f"protocol error: {exc.reason}"
            rt.metrics.error("protocol")
            log.warning("call %s: %s; ending this call", self.uuid or "?", exc.reason)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.hangup_by = self.hangup_by or "caller"
            self.end_reason = self.end_reason or f"connection lost: {exc.__class__.__name__}"
        except asyncio.CancelledError:
            self.end_reason = self.end_reason or "server shutting down"
            raise
        except Exception as exc:  # a bug must end this call only, with its record written
            self.hangup_by = self.hangup_by or "error"
            self.end_reason = f"internal error: {exc!r}"
            rt.metrics.error("internal")
            log.exception("call %s failed", self.uuid or "?")
        finally:
            try:
                await self._finish()
            finally:
                rt.metrics.active_calls -= 1
                if self._log_ctx is not None:
                    self._log_ctx.__exit__(None, None, None)
                    self._log_ctx = None

    async def _start(self) -> None:
        rt = self.rt
        first = await self._read_first_frame()
        if first is None:
            self.end_reason = "connection closed before the UUID frame"
            return
        self.uuid = first.uuid()
        # every log line of this call (and of the tasks it starts) carries the call UUID
        self._log_ctx = flog.call_context(self.uuid)
        self._log_ctx.__enter__()
        metadata = rt.take_pending(self.uuid) or {}
        caller = _pick(metadata, "caller", "from", "callerid", "caller_id", "ani")
        did = _pick(metadata, "did", "to", "dnid", "exten", "called", "dialed_number")
        channel = _pick(metadata, "channel")

        override: dict[str, Any] = {}
        if rt.webhooks.enabled:
            try:
                override = await asyncio.wait_for(
                    rt.webhooks.call_initiated(
                        self.uuid, {"caller": caller, "did": did, "metadata": metadata}
                    ),
                    rt.config.call_initiated_timeout_s,
                )
            except TimeoutError:
                rt.metrics.error("webhook")
        # flow choice: call_initiated webhook, else the `flow` metadata key (POST /call, the
        # AGI script's FLOWAGENT_FLOW), else the DID route, else the default flow
        wanted = str(override.get("flow", "") or "") or _pick(metadata, "flow", "FLOWAGENT_FLOW")
        entry = rt.flows.pick(did, wanted)
        self.entry = entry
        self._rec = recording.start(rt, entry, self.uuid, self.sample_rate)  # None = not recorded
        if override.get("sts_url"):
            metadata = {**metadata, "sts_url": override["sts_url"]}

        from flowagent.dialogue.engine import Engine

        context = await self._resolve_context(entry, caller, did, channel, metadata)
        self.info = ev.CallInfo(
            uuid=self.uuid, caller=caller, did=did, channel=channel, metadata=metadata,
            context=context,
        )
        if getattr(entry.providers, "sts", None) is not None:
            from flowagent.runner.sts_call import StsCallSession

            await StsCallSession.take_over(self)  # speech-to-speech flow: see sts_session.py
            return
        self.engine = Engine(entry.compiled, clock=self.now,
                             llm_available=entry.providers.llm is not None)
        self.record = self.engine.record
        rt.sessions[self.uuid] = self

        from flowagent.dialogue.tools import ToolRunner

        self.tools = ToolRunner()
        self._out = self._open_out()
        self._eot_ms = entry.compiled.settings.end_of_turn_ms
        self._resume_after_false = entry.compiled.settings.barge_in_resume_after_false
        self._barge = self._barge_settings()
        await self._open_inputs()
        self._spawn(self._speech_loop(), "speech")
        rt.webhooks.emit(self.uuid, "call_started",
                         {"caller": caller, "did": did, "flow": entry.name})
        actions = self.engine.start(self.info)
        self.record = self.engine.record  # start() makes the call's record
        self._handle_actions(actions)

    async def _read_first_frame(self) -> Frame | None:
        """The first frame must be the UUID (Asterisk always sends it first)."""
        uuid_wait = asyncio.ensure_future(self._got_uuid.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({uuid_wait, ended}, timeout=self.rt.config.uuid_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            uuid_wait.cancel()
            ended.cancel()
        if self._protocol_error is not None:
            raise self._protocol_error
        if not self._got_uuid.is_set():
            if self._ended.is_set():
                return None
            raise ProtocolError("no UUID frame within the time limit")
        first = self._early.pop(0)
        # the caller's first audio frame (20 ms behind the UUID) tells us the sample rate;
        # wait briefly for it so the greeting goes out at the right rate
        if not self._got_audio.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._got_audio.wait(), 0.1)
        for f in self._early:
            if f.is_audio:
                self.sample_rate = f.sample_rate
                self.kind = f.kind
                break
        return first

    # -- the connection (called by the server's protocol) -----------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the socket. Frames are handled synchronously, in order, as they arrive."""
        if self._closed:
            return
        try:
            if self._ready:
                # one whole frame at the call's rate: almost every read (see `one_audio`)
                pcm = self._parser.one_audio(data, self.kind)
                if pcm is not None:
                    self._on_audio(pcm)
                    return
            frames = self._parser.feed(data)
            if not self._ready:
                for f in frames:
                    if not self._got_uuid.is_set():
                        if f.kind is not Kind.UUID:
                            raise ProtocolError(f"the first frame was {f.kind.name}, not the UUID")
                        f.uuid()  # validates
                        self._got_uuid.set()
                    elif f.is_audio:
                        self._got_audio.set()
                self._early += frames
                return
            rate = self.sample_rate
            for f in frames:
                # the common case first: audio at the call's rate
                if AUDIO_RATES.get(f.kind) == rate:
                    self._on_audio(f.payload)
                else:
                    self._on_frame(f)
                    rate = self.sample_rate
                if self._closed:
                    return
        except ProtocolError as exc:
            self._protocol_failed(exc)
        except Exception as exc:  # a bug here must end this call only
            self._inbound_failed(exc)

    def _inbound_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            self._protocol_failed(exc)
            return
        log.error("call %s: failed handling inbound audio", self.uuid or "?", exc_info=exc)
        self.rt.metrics.error("internal")
        self.hangup_by = self.hangup_by or "error"
        self.end_reason = self.end_reason or f"internal error: {exc!r}"
        self._hangup(send_frame=False)

    # -- the native media loop reads the socket (native_player.py) ------------------------------

    def _attach_native_input(self) -> None:
        """Hand the socket's reading to the native media loop, if our stream is native: from
        here on frames arrive in batches through `_native_frame`/`_on_audio` instead of one
        uvloop callback + parser run per read. The Python parser's partial frame goes along."""
        start = getattr(self._out, "start_reading", None)
        if start is None or self._closed or self.transport.is_closing():
            return
        self.transport.pause_reading()
        held = self._parser.take_pending()
        if not start(held, self._on_audio, self._native_frame, self._native_eof,
                     self._native_failed, self._inbound_failed):
            self._parser.feed(held)  # a partial frame only: nothing is handled twice
            self.transport.resume_reading()

    def _native_frame(self, kind: int, payload: bytes) -> None:
        """A frame other than audio at the call's rate (DTMF, hang-up, error, rate change)."""
        if self._closed:
            return
        try:
            self._on_frame(Frame(Kind(kind), payload))
        except Exception as exc:
            self._inbound_failed(exc)

    def _native_eof(self, errno: int, pending: int) -> None:
        if pending:
            log.info("call %s: %d bytes of a truncated frame at hang-up", self.uuid, pending)
        self.connection_lost()

    def _native_failed(self, reason: str) -> None:
        if not self._closed:
            self._protocol_failed(ProtocolError(reason))

    def _protocol_failed(self, exc: ProtocolError) -> None:
        self._protocol_error = exc
        self.hangup_by = self.hangup_by or "error"
        self.end_reason = f"protocol error: {exc.reason}"
        self.rt.metrics.error("protocol")
        log.warning("call %s: %s; ending this call", self.uuid or "?", exc.reason)
        self._hangup(send_frame=False)

    def connection_lost(self) -> None:
        """The socket closed (Asterisk closes it when the caller hangs up)."""
        if self._parser.pending:
            log.info("call %s: %d bytes of a truncated frame at hang-up", self.uuid,
                     self._parser.pending)
        if not self._closed:
            self.hangup_by = self.hangup_by or "caller"
            self.end_reason = self.end_reason or "caller hung up"
        self._closed = True
        if self._out is not None:
            self.rt.player.close_stream(self._out)
        self._ended.set()

    async def _resolve_context(
        self, entry: FlowEntry, caller: str, did: str, channel: str, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        compiled = entry.compiled
        ctx = compiled.context_for(did)
        fetch = compiled.context_fetch
        if fetch is None:
            return ctx
        tctx = {
            "call": {"uuid": self.uuid, "caller": caller, "did": did, "channel": channel,
                     "metadata": metadata},
            "context": ctx,
        }
        try:
            url = fetch.url.render(tctx)
            headers = {k: t.render(tctx) for k, t in fetch.headers}
            async with aiohttp.ClientSession() as http, http.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=fetch.timeout_s)
            ) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            if isinstance(data, dict):
                ctx.update(data)
        except Exception as exc:  # a context API fault must not stop the call
            self.rt.metrics.error("context_fetch")
            log.warning("call %s: context fetch failed (%s); using static context", self.uuid,
                        exc.__class__.__name__)
        return ctx

    async def _open_inputs(self) -> None:
        assert self.entry is not None
        prov = self.entry.providers
        if prov.vad is not None:
            self._vad = prov.vad.open_stream(self.sample_rate)
            self._attach_vad()
            if self._vad_now is None and self._vad_feed is None:
                self._spawn(self._vad_feeder(), "vad")
        await self._open_asr()
        if self._asr is not None and not hasattr(self._asr, "send_audio_nowait"):
            self._spawn(self._asr_feeder(), "asr-feed")

    async def _open_asr(self) -> None:
        assert self.entry is not None
        asr = self.entry.providers.asr
        if asr is None:
            return
        try:
            self._asr = await asyncio.wait_for(
                asr.open_stream(self.sample_rate, self.entry.compiled.language),
                self.rt.config.provider_timeout_s * 2,
            )
        except (ProviderError, TimeoutError, OSError) as exc:
            self._asr = None
            self._asr_nowait = None
            self._provider_failed("asr", _msg(exc))
            return
        self._asr_nowait = getattr(self._asr, "send_audio_nowait", None)
        self._spawn(self._asr_loop(self._asr), "asr")

    def _provider_failed(self, kind: str, message: str) -> None:
        self.rt.metrics.error(kind)
        if self.record is not None:
            self.record.errors.append(f"{kind}: {message}")
        self.post(ev.ProviderFailed(kind, message, at=self.now()))

    async def _finish(self) -> None:
        """Always runs: stop everything, tell the engine, write the record, send call_ended."""
        rt = self.rt
        self._closed = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        if self._out is not None:
            rt.player.close_stream(self._out)
            rt.metrics.frames_sent += self._out.frames_sent
            rt.metrics.frames_received += self.frames_in
            rt.metrics.underruns += self._out.underruns
        if self._rec is not None:
            await self._rec.close()  # the audio ends now; the WAV is complete before the record
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._asr is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._asr.close(), 1.0)
        if self.hangup_by == "error" and self.engine is not None:
            self.engine.record.finish("error", self.end_reason)
        if self.engine is not None and not getattr(self.engine, "ended", False):
            try:
                actions = self.engine.handle(ev.Hangup(at=self.now()))
                # a hang-up handler may call a tool (e.g. log_abandoned): run it, briefly
                for a in actions:
                    if isinstance(a, act.CallTool):
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(self.tools.run(a), a.timeout_s + 1)
            except Exception:
                log.exception("call %s: engine failed on hang-up", self.uuid)
        with contextlib.suppress(Exception):
            self.transport.close()
        record = self._record_dict()
        if record is not None:
            try:
                await rt.store.save(record)
            except Exception:
                log.exception("call %s: record could not be written", self.uuid)
                rt.metrics.error("store")
            rt.remember(record)
            rt.metrics.outcomes[record.get("outcome") or "unknown"] += 1
            rt.webhooks.emit(self.uuid, "call_ended", record)
        if rt.sessions.get(self.uuid) is self:
            del rt.sessions[self.uuid]
        self._done.set()

    def _record_dict(self) -> dict[str, Any] | None:
        if not self.uuid:
            return None
        if self.engine is not None:
            self.record = self.engine.record
        if self.record is None:
            from flowagent.dialogue.call_record import CallRecord

            self.record = CallRecord(uuid=self.uuid, flow=self.entry.name if self.entry else "")
        rec = self.record
        if self._rec is not None:
            rec.recording = self._rec.info()
        if self.info is not None:
            rec.caller = rec.caller or self.info.caller
            rec.did = rec.did or self.info.did
            rec.channel = rec.channel or self.info.channel
        if self.transfer_target and not rec.transfer_target:
            rec.transfer_target = self.transfer_target
        if self.end_reason and self.hangup_by == "error":
            rec.errors.append(self.end_reason)
        outcome = {"caller": "hangup_by_caller", "error": "error"}.get(self.hangup_by, "completed")
        rec.finish(outcome, self.end_reason)
        d = rec.to_dict()
        d["hangup_by"] = self.hangup_by or "caller"
        d["latency"] = self.turns
        return d

    def live_dict(self) -> dict[str, Any]:
        """A snapshot of a call in progress (for `GET /calls/{uuid}` and the live view)."""
        d = self.record.to_dict() if self.record is not None else {"uuid": self.uuid}
        d["live"] = True
        d["state"] = self.state
        d["latency"] = self.turns
        return d

    # -------------------------------------------------------------------------------------
    # tasks and timers
    # -------------------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.uuid[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._closed:
            log.error("call %s: task %s failed: %r", self.uuid, task.get_name(), exc)
            self.rt.metrics.error("internal")
            self.post(ev.ProviderFailed("runtime", f"internal error: {exc!r}"))

    def _timer(self, name: str, seconds: float, fn: Callable[[], None]) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if self._closed:
            return

        def fire() -> None:
            self._timers.pop(name, None)
            if not self._closed:
                fn()

        self._timers[name] = asyncio.get_running_loop().call_later(seconds, fire)

    def _cancel_timer(self, name: str) -> None:
        t = self._timers.pop(name, None)
        if t is not None:
            t.cancel()

    # -------------------------------------------------------------------------------------
    # the engine
    # -------------------------------------------------------------------------------------

    def post(self, event: Any) -> None:
        """Give the engine an event and carry out its actions. Re-entrant calls are queued."""
        if self.engine is None or self._closed:
            return
        self._events.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._events:
                e = self._events.popleft()
                if getattr(self.engine, "ended", False) and not isinstance(e, ev.Hangup):
                    continue
                try:
                    t = time.perf_counter()
                    actions = self.engine.handle(e)
                    took = time.perf_counter() - t
                    if took > 0.02:
                        log.warning("call %s: the engine took %.0f ms on %s (the event loop"
                                    " was blocked)", self.uuid, took * 1000, type(e).__name__)
                except Exception:
                    log.exception("call %s: engine failed on %s", self.uuid, type(e).__name__)
                    self.rt.metrics.error("engine")
                    self.hangup_by = "error"
                    self.end_reason = "the dialogue engine failed"
                    self._hangup()
                    return
                self._after_event(e)
                self._handle_actions(actions)
        finally:
            self._dispatching = False

    def _after_event(self, e: Any) -> None:
        if isinstance(e, ev.UserUtterance):
            self.rt.metrics.turns_total += 1
            pending = self._spec_pending
            if pending is not None and pending[0] is e:
                self._spec_pending = None
                self._adopting = pending[1]  # _handle_actions decides hit or miss

    def _handle_actions(self, actions: list[Any]) -> None:
        spec, self._adopting = self._adopting, None
        if spec is not None:
            actions = self._apply_speculation(spec, actions)
        for a in actions:
            if isinstance(a, act.Say):
                self._say(a)
            elif isinstance(a, Prepared):
                self._play_prepared_now(a)
            elif isinstance(a, act.LlmRequest):
                self._llm(a)
            elif isinstance(a, act.CallTool):
                self._spawn(self._tool(a), f"tool-{a.tool}")
            elif isinstance(a, act.StateEntered):
                self.state = a.state
                self._barge = self._barge_settings()
            elif isinstance(a, act.StartNoInputTimer):
                self._pending_no_input = a.seconds
                self._maybe_arm_no_input()
            elif isinstance(a, act.StopNoInputTimer):
                self._pending_no_input = None
                self._cancel_timer("no_input")
            elif isinstance(a, act.StartTimer):
                name = a.name
                self._timer(f"t:{name}", a.seconds,
                            lambda n=name: self.post(ev.TimerExpired(n, at=self.now())))
                if name == "max_duration":
                    # if the flow cannot end the call itself, we do, a little later
                    self._timer("max_hard", a.seconds + 30, self._hangup)
            elif isinstance(a, act.CancelTimer):
                self._cancel_timer(f"t:{a.name}")
            elif isinstance(a, act.Transfer):
                self.transfer_target = a.target
                self._transfer_reason = a.reason
                self.end_reason = a.reason or f"transferred to {a.target}"
                self._finish_after_playback()
            elif isinstance(a, act.EndCall):
                self.end_reason = self.end_reason or a.reason
                self._finish_after_playback()
            elif isinstance(a, act.SendDtmf):
                self._send_dtmf_tones(a.digits)

    async def _tool(self, action: act.CallTool) -> None:
        result = await self.tools.run(action)
        self.post(result)

    # -------------------------------------------------------------------------------------
    # speech out
    # -------------------------------------------------------------------------------------

    def _say(self, say: act.Say) -> None:
        self._barged = False
        info = _SayInfo(say.say_id, say.text, say.interruptible, say.expect_reply)
        self._says[say.say_id] = info
        self._record_agent(say.say_id, say.text)
        assert self.entry is not None
        if say.static and self._out is not None and not self._speech_busy \
                and not self._speech_jobs:
            tts = self.entry.providers.tts
            key = (tts.voice_id if tts else "", self.sample_rate, say.text)
            pcm = self.entry.prompt_cache.get(key)
            if pcm is not None:  # cached prompt: audio starts on the next tick
                info.segments.append([say.text, 0, len(pcm)])
                info.produced = len(pcm)
                self._turn_mark("tts_first_audio")
                self._out.add(say.say_id, pcm)
                self._out.end(say.say_id)
                return
        self._speech_jobs.append(say)
        self._speech_wake.set()

    def _llm(self, req: act.LlmRequest) -> None:
        if req.speak:
            self._barged = False
            self._says.setdefault(req.say_id, _SayInfo(req.say_id))
            self._speech_jobs.append(req)
            self._speech_wake.set()
        else:
            task = self._spawn(self._llm_run(req, None), f"llm-{req.request_id}")
            self._llm_tasks[req.request_id] = task

    async def _speech_loop(self) -> None:
        """Synthesises queued utterances one after another (playback order = engine order)."""
        while True:
            while not self._speech_jobs:
                self._speech_busy = False
                self._maybe_finish()
                self._maybe_arm_no_input()
                self._speech_wake.clear()
                await self._speech_wake.wait()
            job = self._speech_jobs.popleft()
            self._speech_busy = True
            if isinstance(job, act.Say):
                coro = self._synth_say(job)
            elif isinstance(job, Prepared):
                coro = self._run_prepared(job.spec)
            else:
                coro = self._llm_run(job, job.say_id)
            self._speaking = asyncio.get_running_loop().create_task(coro)
            try:
                await self._speaking
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling() == 0 and not self._closed:
                    continue  # barge-in cancelled this job, not us; carry on
                raise
            finally:
                self._speaking = None

    async def _synth_say(self, say: act.Say, spec: Speculation | None = None) -> None:
        """TTS one `Say` into the player (or, preparing a reply ahead, into `spec`'s held
        audio: `spec` set means the same work, its results held back; see preemptive.py)."""
        assert self.entry is not None and self._out is not None
        out: AudioOut = self._out if spec is None else spec.sink
        tts = self.entry.providers.tts
        info = self._says[say.say_id] if spec is None else spec.says[say.say_id]
        key = (getattr(tts, "voice_id", ""), self.sample_rate, say.text)
        cache = self.entry.prompt_cache if say.static else None
        pcm = cache.get(key) if cache is not None else None
        if pcm is not None:
            info.segments.append([say.text, 0, len(pcm)])
            info.produced = len(pcm)
            self._mark("tts_first_audio", spec)
            out.add(say.say_id, pcm)
            out.end(say.say_id)
            return
        collected: list[bytes] | None = [] if cache is not None else None
        ok = await self._synth_text(say.say_id, say.text, collected, spec)
        if ok and collected is not None:
            cache[key] = b"".join(collected)
        out.end(say.say_id)

    async def _synth_text(self, say_id: int, text: str, collected: list[bytes] | None,
                          spec: Speculation | None = None) -> bool:
        """TTS `text` into the player as say_id. Returns False (after reporting) on failure."""
        assert self.entry is not None and self._out is not None
        out: AudioOut = self._out if spec is None else spec.sink
        tts = self.entry.providers.tts
        info = self._says[say_id] if spec is None else spec.says[say_id]
        seg = [text, info.produced, None]
        info.segments.append(seg)
        if tts is None or not text.strip():
            seg[2] = info.produced
            return True
        timeout = self.rt.config.provider_timeout_s
        it = tts.synthesize(text, self.sample_rate).__aiter__()
        first = True
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(it)
                except StopAsyncIteration:
                    break
                if first:
                    first = False
                    self._mark("tts_first_audio", spec)
                if collected is not None:
                    collected.append(chunk)
                info.produced += len(chunk)
                out.add(say_id, chunk)
        except (ProviderError, TimeoutError, OSError) as exc:
            seg[2] = info.produced
            if spec is not None and not spec.live:
                spec.failed = True  # not heard by anyone: the final is handled afresh
                return False
            self._tts_failed(say_id, _msg(exc, "the TTS provider did not answer in time"))
            return False
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
        seg[2] = info.produced
        return True

    def _tts_failed(self, say_id: int, message: str) -> None:
        """A TTS fault: a short tone so the line is not dead, and the engine's error path —
        unless TTS failed moments ago (the apology would fail too: just the tone then)."""
        assert self._out is not None
        self.rt.metrics.error("tts")
        self.record.errors.append(f"tts: {message}")
        self._out.add(say_id, audio.tone(400, 480, self.sample_rate, 0.15))
        now = time.monotonic()
        recent = now - self._tts_failures_at < 5.0
        self._tts_failures_at = now
        if not recent:
            self.post(ev.ProviderFailed("tts", message, at=self.now()))

    async def _llm_run(self, req: act.LlmRequest, say_id: int | None,
                       spec: Speculation | None = None) -> None:
        """Stream the LLM; if speaking, clause-chunk the text into TTS as it arrives. With
        `spec` (preparing a reply ahead): audio into its held buffer, the `LlmResult` held back
        until the reply is adopted, a fault only marks the speculation failed."""
        assert self.entry is not None
        llm = self.entry.providers.llm
        if llm is None and spec is not None:
            spec.failed = True
            return
        if llm is None:
            self.post(ev.LlmResult(req.request_id, ok=False, error="no LLM provider configured",
                                   at=self.now()))
            if say_id is not None and self._out is not None:
                self._out.end(say_id)
            return
        timeout = self.rt.config.provider_timeout_s
        text_parts: list[str] = []
        tool_calls: list[LlmToolCall] = []
        chunker = Chunker()
        speak_q: asyncio.Queue[str | None] | None = None
        tts_task: asyncio.Task[Any] | None = None
        if say_id is not None:
            speak_q = asyncio.Queue()
            if spec is None:
                tts_task = self._spawn(self._speak_chunks(say_id, speak_q), f"llm-tts-{say_id}")
            else:  # not "llm-tts-": a barge-in on the previous reply must not cancel it
                tts_task = self._spawn(self._speak_chunks(say_id, speak_q, spec),
                                       f"spec-tts-{say_id}")
                spec.tasks.add(tts_task)
                tts_task.add_done_callback(spec.tasks.discard)
        error = ""
        if say_id is not None:
            self._llm_open_map(spec)[req.request_id] = (say_id, text_parts)
        it = llm.stream(req.messages, req.tools).__aiter__()
        first = True
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(it)
                except StopAsyncIteration:
                    break
                if first:
                    first = False
                    self._mark("llm_first_token", spec)
                if chunk.text:
                    text_parts.append(chunk.text)
                    if speak_q is not None:
                        for piece in chunker.feed(chunk.text):
                            speak_q.put_nowait(piece)
                if chunk.tool_calls:
                    tool_calls.extend(chunk.tool_calls)
        except (ProviderError, TimeoutError, OSError) as exc:
            error = _msg(exc, "the LLM provider did not answer in time")
            if spec is not None and not spec.live:
                spec.failed = True  # prepared, never heard: the final is handled afresh
                if tts_task is not None:
                    tts_task.cancel()
                return
            self.rt.metrics.error("llm")
        except asyncio.CancelledError:
            if tts_task is not None:
                tts_task.cancel()
            raise
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
        if speak_q is not None and tts_task is not None:
            rest = chunker.flush()
            if rest and not error:
                speak_q.put_nowait(rest)
            speak_q.put_nowait(None)
        text = "".join(text_parts)
        if self._llm_open_map(spec).pop(req.request_id, None) is None and say_id is not None:
            return  # a barge-in already answered this request
        says = self._says if spec is None else spec.says
        if say_id is not None and text and not error and say_id in says:
            says[say_id].text = text
        result = ev.LlmResult(req.request_id, text=text, tool_calls=tuple(tool_calls),
                              ok=not error, error=error, at=self.now())
        if spec is not None and not spec.live:
            spec.results.append(result)  # posted when the reply is adopted
        else:
            self.post(result)
        if tts_task is not None:
            await tts_task

    async def _speak_chunks(self, say_id: int, q: asyncio.Queue[str | None],
                            spec: Speculation | None = None) -> None:
        assert self._out is not None
        spoken: list[str] = []
        while True:
            piece = await q.get()
            if piece is None:
                break
            spoken.append(piece)
            if not await self._synth_text(say_id, piece, None, spec):
                break
        if spoken:
            (self._says if spec is None else spec.says)[say_id].text = " ".join(spoken)
            if spec is None or spec.live:
                self._record_agent(say_id, " ".join(spoken))
        (self._out if spec is None else spec.sink).end(say_id)

    def _record_agent(self, say_id: int, text: str) -> None:
        """Agent lines are recorded by the engine; LLM-spoken ones get their text here if the
        engine left it empty."""
        if self.record is None:
            return
        entry = self.record.agent_line(say_id)
        if entry is not None and not entry.text:
            entry.text = text

    def _send_dtmf_tones(self, digits: str) -> None:
        """AudioSocket cannot carry DTMF from us: send the standard dual tones in-band."""
        assert self._out is not None
        pcm = b"".join(_dtmf_tone(d, self.sample_rate) for d in digits)
        if pcm:
            self._out.add(-1, pcm)
            self._out.end(-1)

    # -- playback callbacks (from the player's clock) -------------------------------------

    def _open_out(self) -> OutStream:
        write = self.transport.write  # recording on: the frames sent are recorded too
        if self._rec is not None:
            write = self._rec.wrap_write(write, self.sample_rate)
        out = self.rt.player.open(
            write, self.sample_rate, on_done=self._on_say_done,
            on_error=self._on_write_error, on_first=self._on_first_frame,
            keepalive_ms=self.rt.config.keepalive_ms,
            # the native media loop writes the socket itself; a recorded call's frames must
            # pass through `write`, so it stays on the Python path
            transport=self.transport if self._rec is None else None,
        )
        out.on_idle = self._on_idle
        return out

    def _on_idle(self) -> None:
        if not self._closed:
            self._maybe_arm_no_input()
            self._maybe_finish()

    def _on_write_error(self, exc: BaseException) -> None:
        self.hangup_by = self.hangup_by or "caller"
        self._hangup(send_frame=False)

    def _on_first_frame(self, say_id: int, at: float) -> None:
        self._turn_mark("first_frame", at)
        if self._turn_open:
            self._close_turn()

    def _on_say_done(self, say_id: int) -> None:
        if self._closed or say_id < 0:
            self._maybe_finish()
            return
        self._says.pop(say_id, None)
        self.post(ev.SpeechFinished(say_id, at=self.now()))
        self._maybe_arm_no_input()
        self._maybe_finish()

    def _playing(self) -> bool:
        return self._out is not None and (self._out.busy or self._out.current_say > 0)

    def _idle(self) -> bool:
        return not self._speech_jobs and not self._speech_busy and not (
            self._out is not None and self._out.busy
        )

    def _maybe_arm_no_input(self) -> None:
        if self._pending_no_input is None or not self._idle() or self._in_speech:
            return
        seconds = self._pending_no_input
        self._pending_no_input = None
        self._timer("no_input", seconds, lambda: self.post(ev.NoInput(at=self.now())))

    # -- ending -------------------------------------------------------------------------------

    def _finish_after_playback(self) -> None:
        self._finishing = True
        self._timer("hangup_grace", self.rt.config.hangup_grace_s, self._hangup)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._finishing and self._idle() and not self._transferring:
            self.hangup_by = self.hangup_by or "agent"
            transferer = getattr(self.rt, "transferer", None)
            if self.transfer_target and transferer is not None:
                self._transferring = True
                self._spawn(self._transfer(transferer), "transfer")
                return
            # let the last frame leave before the hang-up frame (next loop iteration)
            asyncio.get_running_loop().call_soon(self._hangup)

    async def _transfer(self, transferer: Any) -> None:
        """Our reason has been spoken: hand the caller over. AMI configured: Asterisk redirects
        the channel (and closes the socket itself); otherwise (or if AMI fails) the socket path:
        0x00 frame, and the dialplan reads `GET /calls/{uuid}/transfer`."""
        channel = self.info.channel if self.info is not None else ""
        try:
            result = await asyncio.wait_for(
                transferer.transfer(self.uuid, channel, self.transfer_target,
                                    self._transfer_reason),
                10.0,
            )
            method = result.method
        except ValueError as exc:  # not a dialplan extension: the dialplan falls back
            log.warning("transfer target %r cannot be dialled: %s", self.transfer_target, exc)
            method = "socket"
        except Exception:
            log.exception("transfer to %r failed; ending the socket", self.transfer_target)
            method = "socket"
        log.info("transfer to %s by %s", self.transfer_target, method)
        # "ami": Asterisk moved the channel and closes the socket; closing it too is harmless
        self._hangup(send_frame=method == "socket")

    def _hangup(self, send_frame: bool = True) -> None:
        """End the call from our side: 0x00 frame, close. The read loop then sees EOF."""
        if self._closed:
            return
        self._closed = True
        native_bye = False
        if self._out is not None:
            if send_frame and getattr(self._out, "native", False):
                # the native loop owns the socket's writes: it sends the 0x00 frame itself
                # (never inside a partially written audio frame)
                self._out.send_hangup()  # type: ignore[attr-defined]
                native_bye = True
            self.rt.player.close_stream(self._out)
        transport = self.transport
        self._ended.set()
        if send_frame and not native_bye and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(encode_hangup())
        with contextlib.suppress(Exception):
            transport.close()

    # -------------------------------------------------------------------------------------
    # speech in
    # -------------------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.kind
        if kind in AUDIO_RATES:
            if AUDIO_RATES[kind] != self.sample_rate:
                self._switch_rate(kind)
            self._on_audio(frame.payload)
        elif kind is Kind.DTMF:
            self._on_dtmf(frame.digit())
        elif kind is Kind.HANGUP:
            self.hangup_by = self.hangup_by or "caller"
            self.end_reason = self.end_reason or "caller hung up"
            self._closed_by_peer()
        elif kind is Kind.ERROR:
            code = frame.error_code()
            self.record.errors.append(f"asterisk error frame 0x{code:02x}")
            self.hangup_by = self.hangup_by or ("caller" if code == 0x01 else "error")
            self.end_reason = self.end_reason or f"Asterisk sent error 0x{code:02x}"
            self._closed_by_peer()
        elif kind is Kind.UUID:
            raise ProtocolError("a second UUID frame in the same call")

    def _closed_by_peer(self) -> None:
        self._closed = True
        if self._out is not None:
            self.rt.player.close_stream(self._out)
        self._ended.set()

    def _switch_rate(self, kind: Kind) -> None:
        """The caller's audio kind sets our rate (Dial(AudioSocket/...) may use 16 kHz+)."""
        self.sample_rate = AUDIO_RATES[kind]
        self.kind = kind
        if self._out is not None:
            old = self._out
            switch = getattr(old, "switch_rate", None)
            if switch is not None:  # native: same socket, a fresh stream at the new rate
                switch(self.sample_rate)
            else:
                self.rt.player.close_stream(old)
                self._out = self._open_out()
        if self._vad is not None and self.entry is not None:
            self._vad_q.clear()
            if self._vad_feed is not None:
                self._vad.listener = None  # type: ignore[attr-defined]  # the old stream's late results
            self._vad = self.entry.providers.vad.open_stream(self.sample_rate)
            self._attach_vad()

    def _on_audio(self, pcm: bytes) -> None:
        """One inbound audio frame: to the ASR stream and the VAD, without a task per frame."""
        self.frames_in += 1
        if self._rec is not None:
            self._rec.caller(pcm)
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            pcm, self._odd = pcm[:-1], pcm[-1:]
            if not pcm:
                return
        asr = self._asr
        if asr is not None:
            nowait = self._asr_nowait
            if nowait is not None:
                try:
                    nowait(pcm)
                except (ProviderError, OSError) as exc:
                    self._spawn(self._asr_broken(_msg(exc)), "asr-broken")
            else:
                self._asr_q.append(pcm)
                self._asr_wake.set()
        if self._vad is None:
            return
        ms = len(pcm) * 500 // self.sample_rate
        if self._vad_now is not None:
            try:
                p = self._vad_now(pcm)
            except Exception as exc:
                self._vad_failed(exc)
                return
            self._on_vad(p, ms)
        elif self._vad_feed is not None:
            try:
                self._vad_feed(pcm, ms)  # -> _on_vad_result(p, ms) per window, in order
            except Exception as exc:
                self._vad_failed(exc)
        else:
            self._vad_q.append(pcm)
            self._vad_wake.set()

    def _attach_vad(self) -> None:
        """Pick the VAD stream's cheapest way in: synchronous, callback, or awaited."""
        vad = self._vad
        self._vad_now = getattr(vad, "probability_now", None)
        self._vad_feed = None
        if self._vad_now is None and hasattr(vad, "feed_ms") and hasattr(vad, "listener"):
            vad.listener = self._on_vad_result  # type: ignore[union-attr]
            vad.on_error = self._vad_failed  # type: ignore[union-attr]
            self._vad_feed = vad.feed_ms  # type: ignore[union-attr]

    def _on_vad_result(self, p: float, ms: int) -> None:
        if self._vad is None or self._ended.is_set():
            return  # a late result after hang-up or a VAD failure
        self._on_vad(p, ms)

    def _vad_failed(self, exc: BaseException) -> None:
        """The VAD broke mid-call (a model error, a provider bug): count it, and carry on with
        an energy VAD (no model, cannot fail) so the caller's turns are still heard — a call
        without any VAD would only ever reach its no-input timeouts."""
        self.rt.metrics.error("vad")
        self.record.errors.append(f"vad: {_msg(exc)}")
        old = self._vad
        if getattr(old, "listener", None) is not None:
            old.listener = None  # type: ignore[union-attr]  # its late results
        if self._vad_fallback:
            log.warning("call %s: the fallback VAD failed too (%s); no VAD for the rest of "
                        "the call", self.uuid, exc)
            self._vad = None
            return
        log.warning("call %s: VAD failed (%s); using an energy VAD for the rest of the call",
                    self.uuid, exc)
        from flowagent.providers.fake import FakeVadStream

        self._vad_fallback = True
        self._vad_q.clear()
        self._vad = FakeVadStream(threshold=0.01)
        self._attach_vad()

    async def _asr_feeder(self) -> None:
        """For ASR streams without a synchronous path: send queued audio in order."""
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
                    await self._asr_broken(_msg(exc))

    async def _vad_feeder(self) -> None:
        """For VAD streams without a synchronous path (e.g. batched models): in order."""
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
                    self._vad_failed(exc)
                    break
                self._on_vad(p, len(pcm) * 1000 // (2 * self.sample_rate))

    def _barge_settings(self) -> tuple[bool, int, float]:
        assert self.entry is not None
        s = self.entry.compiled.settings
        enabled = s.barge_in
        st = self.entry.compiled.states.get(self.state)
        if st is not None and st.barge_in is not None:
            enabled = st.barge_in
        return enabled, s.barge_in_min_speech_ms, s.barge_in_sensitivity

    def _on_vad(self, p: float, ms: int) -> None:
        out = self._out  # inlined _playing(): this runs for every inbound frame
        playing = not self._barged and out is not None and (
            out.current_say > 0 or bool(out._frames) or bool(out._partial))
        enabled, min_speech, sensitivity = self._barge
        # while we play, our own echo comes back: demand a clearer signal to count as speech
        threshold = 1.0 - (1.0 - SPEECH_THRESHOLD) * sensitivity if playing else SPEECH_THRESHOLD
        if p >= threshold:
            self._speech_ms += ms
            self._silence_ms = 0
        else:
            self._silence_ms += ms
            if self._silence_ms >= 60:
                self._speech_ms = 0
        if playing:
            if (self._speech_ms >= min_speech and enabled and self._interruptible()
                    and not self._finishing):
                if self._resume_after_false:
                    # maybe a cough: go quiet now, decide when we know whether words were said
                    self._barged = True
                    self._held = True
                    out.pause()  # type: ignore[union-attr]
                else:
                    self._barge_in()
                self._start_turn()
            return
        if not self._in_speech:
            if self._speech_ms >= TURN_START_MS:
                self._start_turn()
            return
        if self._silence_ms >= self._eot_ms:
            self._end_of_speech()

    def _interruptible(self) -> bool:
        assert self._out is not None
        sid = self._out.current_say
        info = self._says.get(sid)
        return info.interruptible if info is not None else True

    def _start_turn(self) -> None:
        if self._in_speech:
            return
        self._in_speech = True
        # Whisper keeps audio from before the VAD's onset (pre-roll): tell it how much was heard
        started = getattr(self._asr, "speech_started", None)
        if started is not None:
            try:
                started(int(self._speech_ms))
            except Exception:
                log.debug("speech_started failed", exc_info=True)
        self._cancel_timer("no_input")
        self._pending_no_input = None
        if self._spec is not None:
            self._drop_spec("the caller spoke again")

    def _end_of_speech(self) -> None:
        self._in_speech = False
        self._speech_ms = 0
        self._turn = {"end_of_speech": time.monotonic()}
        self._turn_open = True
        self._turn_spec = None
        if self._asr is None:
            self._resume_if_held()  # nothing can tell us words were said
            return
        self._awaiting_final = True
        self._spawn(self._asr_flush(), "asr-flush")
        self._timer("asr_final", self.rt.config.provider_timeout_s, self._asr_timed_out)
        self._speculate()  # the words heard so far: start preparing the answer

    async def _asr_flush(self) -> None:
        try:
            await self._asr.flush()
        except (ProviderError, OSError) as exc:
            await self._asr_broken(_msg(exc))

    def _asr_timed_out(self) -> None:
        if not self._awaiting_final:
            return
        self._awaiting_final = False
        if self._final_parts:
            self._emit_utterance(Transcript(text="", is_final=True))
            return
        self._drop_spec("no final transcript")
        if self._held:  # a pause for a noise the recogniser found no words in
            self._resume_if_held()
            return
        self.rt.metrics.error("asr")
        self.record.errors.append("asr: no final transcript in time")
        self.post(ev.ProviderFailed("asr", "the speech recogniser did not answer in time",
                                   at=self.now()))

    async def _asr_loop(self, stream: Any) -> None:
        try:
            async for t in stream.transcripts():
                self._on_transcript(t)
        except (ProviderError, OSError) as exc:
            await self._asr_broken(_msg(exc))

    async def _asr_broken(self, message: str) -> None:
        """The ASR stream died: tell the engine (fallback is spoken) and open a new stream."""
        if self._closed:
            return
        self.rt.metrics.error("asr")
        self.record.errors.append(f"asr: {message}")
        self._awaiting_final = False
        self._cancel_timer("asr_final")
        self._drop_spec("the recogniser failed")
        old, self._asr = self._asr, None
        self.post(ev.ProviderFailed("asr", message, at=self.now()))
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 1.0)
        self._asr_failures += 1
        if self._asr_failures <= 3 and not self._closed:
            await self._open_asr()

    def _on_transcript(self, t: Transcript) -> None:
        if not t.is_final:
            if t.text:
                self._interim = t.text  # what the recogniser thinks it heard so far
                self.post(ev.UserPartial(t.text, at=self.now()))
                if self._awaiting_final:
                    self._speculate()  # new words after our end of speech
            return
        if t.text.strip():
            self._final_parts.append(t.text.strip())
        self._interim = ""  # a final covers the interims before it
        endpointed = t.end_of_turn
        if self._awaiting_final or endpointed:
            if endpointed and not self._awaiting_final:
                # provider endpointing or injected text: the turn ends here
                self._turn = {"end_of_speech": time.monotonic()}
                self._turn_open = True
                self._turn_spec = None
                self._in_speech = False
                self._speech_ms = 0
            self._awaiting_final = False
            self._cancel_timer("asr_final")
            self._emit_utterance(t)

    def _emit_utterance(self, t: Transcript) -> None:
        text = " ".join(self._final_parts).strip()
        self._final_parts = []
        self._interim = ""
        self._turn_mark("asr_final")
        spec, self._spec = self._spec, None  # the reply prepared for this turn, if any
        if not text:
            if spec is not None:
                self._spec_missed(spec, "nothing was said")
            self._resume_if_held()
            return  # noise: nothing was said
        if self._held:
            self._held = False
            self._barge_in()  # words were said: the interruption was real
        self.rt.webhooks.emit(self.uuid, "transcription", {"text": text, "state": self.state})
        utterance = ev.UserUtterance(text, confidence=t.confidence, at=self.now())
        if self._spec_pending is not None:  # never reached the engine (e.g. it had ended)
            self._spec_missed(self._spec_pending[1], "superseded")
            self._spec_pending = None
        if spec is not None:
            why = self._spec_unusable(spec, text)
            if why:
                self._spec_missed(spec, why)
            else:  # same words: hit or miss once the engine has answered the final
                self._spec_pending = (utterance, spec)
        scorer = getattr(self.rt.flows, "intent_scorer", None)
        if scorer is not None and hasattr(scorer, "embed"):
            self._spawn(self._embed_then_post(scorer, utterance), "embed")
            return
        self.post(utterance)

    async def _embed_then_post(self, scorer: Any, utterance: ev.UserUtterance) -> None:
        """The intent scorer embeds the caller's words (20-80 ms of numpy on a busy 2-core
        machine): do it on a thread first, so the engine's synchronous intent match finds the
        embedding cached and the event loop — every call's 20 ms pacing — is not blocked."""
        try:
            await asyncio.wait_for(asyncio.to_thread(scorer.embed, utterance.text), 2.0)
        except Exception:  # the engine computes it itself if this failed
            log.debug("pre-embedding the utterance failed", exc_info=True)
        if not self._closed:
            self.post(utterance)

    def inject_text(self, text: str) -> None:
        """Text injection (tests, `POST /calls/{uuid}/inject`): as if the caller said `text`.
        Goes through the ASR stream when it supports injection, so the whole turn path runs."""
        if self._asr is not None and hasattr(self._asr, "inject"):
            self._asr.inject(text)
            return
        self._final_parts.append(text)
        self._turn = {"end_of_speech": time.monotonic()}
        self._turn_open = True
        self._turn_spec = None
        self._emit_utterance(Transcript(text=text, is_final=True, end_of_turn=True))

    def inject_dtmf(self, digit: str) -> None:
        """As if the caller keyed `digit` (a 0x03 frame)."""
        if not self._closed:
            self._on_dtmf(digit)

    # -- DTMF and barge-in ----------------------------------------------------------------

    def _on_dtmf(self, digit: str) -> None:
        self._cancel_timer("no_input")
        self._pending_no_input = None
        self.rt.webhooks.emit(self.uuid, "dtmf_digit", {"digit": digit, "state": self.state})
        enabled = self._barge[0]
        if (not self._barged and self._playing() and enabled and self._interruptible()
                and not self._finishing):
            self._barge_in()
        self.post(ev.DtmfDigit(digit, at=self.now()))

    def _resume_if_held(self) -> None:
        """A false barge-in (cough, noise): carry on speaking where we paused."""
        if self._held and self._out is not None:
            self._held = False
            self._barged = False
            self._out.resume()
            if self.record is not None:
                self.record.add(self.now(), "system", "resumed after a noise", self.state)

    def _barge_in(self) -> None:
        """Stop our audio now, cancel TTS/LLM in flight, tell the engine what was heard."""
        assert self._out is not None
        out = self._out
        self._barged = True
        self._held = False
        self._drop_spec("barge-in")  # nothing prepared may play now; live ones are cut too
        if self._spec_pending is not None:
            self._spec_missed(self._spec_pending[1], "barge-in")
            self._spec_pending = None
        for spec in list(self._live_specs):
            spec.cancel()
        self._live_specs.clear()
        current = out.current_say
        if current <= 0 and out._frames:  # paused: the utterance on hold is the one cut
            current = next((sid for sid, _ in out._frames if sid > 0), 0)
        out.flush()
        # read after the flush: nothing of ours can go out any more (the fade-out frame counts
        # for no utterance), so these are final — read before, the media thread could still
        # have sent one more frame in between
        played = dict(out.played)
        self.rt.metrics.barge_ins_total += 1
        # cancel synthesis and any speaking LLM request
        self._speech_jobs.clear()
        if self._speaking is not None:
            self._speaking.cancel()
        for t in list(self._tasks):
            if t.get_name().startswith("llm-tts-"):
                t.cancel()
        # the interrupted utterance: the one on the line, else the oldest unfinished one
        say_id = current if current > 0 else min((s for s in self._says if s > 0), default=0)
        info = self._says.pop(say_id, None)
        heard = info.heard(played.get(say_id, 0)) if info is not None else ""
        for sid in list(self._says):
            self._says.pop(sid, None)
        self._speech_busy = False
        entry = self.record.agent_line(say_id) if self.record is not None else None
        if entry is not None:
            entry.heard = heard
        self.rt.webhooks.emit(self.uuid, "interruption",
                              {"say_id": say_id, "heard": heard, "state": self.state})
        if say_id:
            self.post(ev.BargeIn(say_id, heard, at=self.now()))
        # a speaking LLM request that was cut: its reply, as far as the caller heard it,
        # completes the request (the conversation history then matches what was said)
        for rid, (sid, parts) in list(self._llm_open.items()):
            self._llm_open.pop(rid, None)
            text = heard if sid == say_id and heard else "".join(parts)
            self.post(ev.LlmResult(rid, text=text, ok=True, at=self.now()))

    # -- preemptive generation (see runner/preemptive.py) ----------------------------------

    def _speculate(self) -> None:
        """The caller has stopped (or new interim words came after that): start preparing the
        answer to the words heard so far on a fork of the engine, its audio held back."""
        entry = self.entry
        if (self._closed or self.engine is None or entry is None or self._in_speech
                or not self._awaiting_final or self._finishing
                or not entry.compiled.settings.preemptive_generation):
            return
        text = " ".join([*self._final_parts, self._interim]).strip()
        if not text:
            return
        norm = normalise(text)
        if self._spec is not None:
            if self._spec.norm == norm:
                return  # already preparing the answer to these words
            self._drop_spec("newer interim words")
        if getattr(self.engine, "ended", False) or self.engine.listening is None:
            return  # busy (tool or LLM in flight) or over: only handlers would act
        spec = Speculation(text, norm)
        self._spec = spec
        spec.task = self._spawn(self._spec_run(spec), "spec")

    async def _spec_run(self, spec: Speculation) -> None:
        """Fork the engine, give the fork the interim words, and make its speech (up to the
        first action with side effects) into the held buffer."""
        scorer = getattr(self.rt.flows, "intent_scorer", None)
        if scorer is not None and hasattr(scorer, "embed"):  # as _embed_then_post: off-loop
            try:
                await asyncio.wait_for(asyncio.to_thread(scorer.embed, spec.text), 2.0)
            except Exception:
                log.debug("pre-embedding the interim words failed", exc_info=True)
        if self._spec is not spec or self.engine is None or self._closed:
            return
        fork = self.engine.fork()
        plan = speech_plan(fork.handle(ev.UserUtterance(spec.text, at=self.now())))
        for a in plan:
            spec.says[a.say_id] = (
                _SayInfo(a.say_id, a.text, a.interruptible, a.expect_reply)
                if isinstance(a, act.Say) else _SayInfo(a.say_id))
        spec.plan = plan
        for job in plan:
            if isinstance(job, act.Say):
                await self._synth_say(job, spec)
            else:
                await self._llm_run(job, job.say_id, spec)
            if spec.failed:
                return

    def _spec_unusable(self, spec: Speculation, final: str) -> str:
        """Why the prepared reply cannot be used for the final words ("" if it may be)."""
        if normalise(final) != spec.norm:
            return "the final transcript differs"
        if spec.failed:
            return "a provider failed while preparing"
        if spec.plan is None:
            return "not prepared in time"
        return ""

    def _drop_spec(self, why: str) -> None:
        spec, self._spec = self._spec, None
        if spec is not None:
            self._spec_missed(spec, why)

    def _spec_missed(self, spec: Speculation, why: str) -> None:
        """Throw the prepared reply away unheard (its LLM/TTS work is cancelled)."""
        spec.cancel()
        if spec.plan is None or spec.plan:  # an empty plan had nothing to gain or lose
            self._turn_spec = ("miss", why)
            log.debug("call %s: prepared reply not used: %s", self.uuid, why)

    def _apply_speculation(self, spec: Speculation, actions: list[Any]) -> list[Any]:
        """The engine has answered the final words: if its answer starts with the speech that
        was prepared, that speech is replaced by the prepared audio (a hit); otherwise the
        preparation is cancelled and the answer is carried out as usual (a miss)."""
        real = speech_plan(actions)
        if spec.failed or spec.plan is None or self._closed or not same_plan(spec.plan, real):
            self._spec_missed(spec, "the answer to the final words differs")
            return actions
        self._turn_spec = ("hit", "")
        planned = {id(a) for a in real}
        out: list[Any] = []
        for a in actions:
            if id(a) not in planned:
                out.append(a)
            elif not any(isinstance(b, Prepared) for b in out):
                out.append(Prepared(spec))  # where the first prepared utterance belongs
        return out

    def _play_prepared_now(self, item: Prepared) -> None:
        """A hit, in the engine's action order: the held audio goes to the player at once if
        nothing of ours is queued before it; the rest is made live, in the speech queue."""
        spec = item.spec
        self._barged = False
        for a in spec.plan or ():
            if isinstance(a, act.Say):
                self._record_agent(a.say_id, a.text)
        self._live_specs.add(spec)
        if not self._speech_busy and not self._speech_jobs:
            self._go_live(spec)
        self._speech_jobs.append(item)
        self._speech_wake.set()

    def _go_live(self, spec: Speculation) -> None:
        if spec.live or self._out is None:
            return
        spec.live = True
        self._says.update(spec.says)
        self._llm_open.update(spec.llm_open)
        spec.llm_open.clear()
        for name, at in spec.marks.items():  # reached before the final: truthful times
            self._turn_mark(name, at)
        spec.sink.release(self._out)
        results, spec.results = spec.results, []
        for r in results:
            self.post(r)

    async def _run_prepared(self, spec: Speculation) -> None:
        """The speech loop's job for a hit: play what is ready, then wait for the rest."""
        try:
            self._go_live(spec)
            task = spec.task
            if task is not None and not task.done():
                await task  # cancelling this job (barge-in) cancels the preparation too
        except Exception:  # already reported by _task_done
            log.debug("prepared reply failed", exc_info=True)
        finally:
            self._live_specs.discard(spec)

    def _mark(self, name: str, spec: Speculation | None) -> None:
        """A latency milestone: of this turn, or held with a reply being prepared."""
        if spec is not None and not spec.live:
            spec.mark(name)
        else:
            self._turn_mark(name)

    def _llm_open_map(self, spec: Speculation | None) -> dict[int, tuple[int, list[str]]]:
        return spec.llm_open if spec is not None and not spec.live else self._llm_open

    # -- latency --------------------------------------------------------------------------

    def _turn_mark(self, name: str, at: float | None = None) -> None:
        if self._turn_open and name not in self._turn:
            self._turn[name] = time.monotonic() if at is None else at

    def _close_turn(self) -> None:
        self._turn_open = False
        t = self._turn
        eos = t.get("end_of_speech")
        if eos is None:
            return

        def ms(k: str) -> float | None:
            return None if k not in t else round((t[k] - eos) * 1000, 2)

        row = {
            "index": len(self.turns),
            "state": self.state,
            "end_of_speech_s": round(eos - self.t0, 3),
            "asr_final_ms": ms("asr_final"),
            "llm_first_token_ms": ms("llm_first_token"),
            "tts_first_audio_ms": ms("tts_first_audio"),
            "first_frame_ms": ms("first_frame"),
        }
        # the runner's own share: first frame minus the last provider milestone before it
        marks = [t[k] for k in ("asr_final", "llm_first_token", "tts_first_audio") if k in t]
        if "first_frame" in t and marks:
            row["runner_ms"] = round((t["first_frame"] - max(marks)) * 1000, 2)
        spec, self._turn_spec = self._turn_spec, None
        if spec is not None:  # preemptive generation: was the prepared reply used?
            row["preemptive"] = spec[0]
            if spec[1]:
                row["preemptive_miss"] = spec[1]
        self.turns.append(row)
        m = self.rt.metrics.latency
        if "first_frame" in t:
            m["turn"].observe(t["first_frame"] - eos)
            if spec is not None:  # stage="turn_preemptive_hit" / "..._miss" on /metrics
                m[f"turn_preemptive_{spec[0]}"].observe(t["first_frame"] - eos)
        if "asr_final" in t:
            m["asr"].observe(t["asr_final"] - eos)
        if "runner_ms" in row:
            m["runner"].observe(row["runner_ms"] / 1000)
        rec_turns = getattr(self.record, "turns", None)
        if rec_turns:
            lat = rec_turns[-1]
            if getattr(lat, "first_frame", 1) is None:
                lat.end_of_speech = eos - self.t0
                for k in ("asr_final", "llm_first_token", "tts_first_audio", "first_frame"):
                    if k in t:
                        setattr(lat, k, t[k] - self.t0)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _pick(meta: dict[str, Any], *keys: str) -> str:
    for k in keys:
        v = meta.get(k)
        if v:
            return str(v)
    for nested in ("payload", "metadata"):
        sub = meta.get(nested)
        if isinstance(sub, dict):
            v = _pick(sub, *keys)
            if v:
                return v
    return ""


def _msg(exc: BaseException, default: str = "") -> str:
    if isinstance(exc, ProviderError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return default or "the provider did not answer in time"
    return default or f"{exc.__class__.__name__}: {exc}"


_DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}


def _dtmf_tone(digit: str, rate: int) -> bytes:
    freqs = _DTMF_FREQS.get(digit.upper())
    if freqs is None:
        return b""
    import numpy as np

    a = audio.to_array(audio.tone(100, freqs[0], rate, 0.25)).astype(np.int32)
    b = audio.to_array(audio.tone(100, freqs[1], rate, 0.25)).astype(np.int32)
    return audio.from_array((a + b).astype(np.int16)) + audio.silence(80, rate)


__all__ = ["FRAME_MS", "CallSession"]
