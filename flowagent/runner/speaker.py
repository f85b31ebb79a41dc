"""The speaker: what the agent says -> prompt cache / TTS (and LLM tokens) -> the paced line.

Everything about speaking lives here, behind `SpeakerHooks`: the speech queue (utterances play
in the order the engine asked for them), the static-prompt audio cache (a cached prompt starts on
the next 20 ms tick), TTS, streaming an LLM reply into TTS as its tokens arrive, one
`Utterance` handle per utterance (so an interruption knows the words the caller really heard),
and the short tone when TTS fails so the line is never dead.

An LLM reply reaches TTS one of two ways, chosen by what the TTS declares:
- **continuation** (Cartesia contexts with `continue`, ElevenLabs stream-input, AVR's stream):
  one utterance is opened per reply and every token goes to it as it arrives — one first-audio
  latency per reply, natural prosody across clauses;
- **clauses** (Piper, espeak, any other): the reply is cut at sentence/clause ends
  (`providers.chunking.Chunker`) and each clause is synthesised as soon as it is complete.
An interruption cancels the work in flight; cancelling a continuation stream closes its context
on the provider's side.

Replies prepared ahead of the caller's final words (`speculation.py`) use the same code with a
`Speculation`: the audio goes to its held buffer, milestones are held with it, and a fault only
marks it failed (nobody heard it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowagent import audio
from flowagent.dialogue.actions import LlmRequest, Say
from flowagent.dialogue.events import LlmResult, ProviderFailed
from flowagent.providers.base import LlmToolCall, ProviderError, describe_fault
from flowagent.providers.chunking import Chunker
from flowagent.runner import dtmf_tones
from flowagent.runner.call_tasks import CallTasks
from flowagent.runner.interruption import Interruption
from flowagent.runner.line import Line
from flowagent.runner.out_stream import AudioSink, OutStream
from flowagent.runner.prompt_cache import memory_key
from flowagent.runner.served_flow import FlowEntry
from flowagent.runner.speculation import Speculation
from flowagent.runner.utterance import Utterance

log = logging.getLogger(__name__)

#: a TTS fault within this long of the previous one only gets the tone (the spoken apology
#: would fail too)
TTS_FAULT_QUIET_S = 5.0
#: say_id of the keypad tones we send (not an utterance of the engine's)
DTMF_SAY_ID = -1


class SpeakerHooks(Protocol):
    def post(self, event: LlmResult | ProviderFailed) -> None:
        """An event for the dialogue engine."""

    def milestone(self, name: str) -> None:
        """A latency milestone of the turn in progress (`tts_first_audio`, `llm_first_token`)."""

    def agent_line(self, say_id: int, text: str) -> None:
        """The words an LLM reply actually spoke (the record's agent line)."""

    def speech_queue_idle(self) -> None:
        """Nothing is left to synthesise."""

    def fault(self, kind: str, message: str) -> None:
        """A TTS or LLM fault, for the metrics and the record."""

    def cut_short(self, say_id: int, heard: str) -> None:
        """Utterance `say_id` stopped early (TTS failed): the caller heard only `heard`."""

    def now(self) -> float:
        """Seconds since the call connected (event times)."""


@dataclass(frozen=True, slots=True)
class PlayPrepared:
    """A speech-queue job that plays a reply prepared ahead (see `speculation.Speculator`)."""

    spec: Speculation
    run: Callable[[], Coroutine[Any, Any, None]]


Job = Say | LlmRequest | PlayPrepared


class Speaker:
    def __init__(self, hooks: SpeakerHooks, tasks: CallTasks, line: Line, entry: FlowEntry,
                 *, provider_timeout_s: float) -> None:
        self.hooks = hooks
        self.tasks = tasks
        self.line = line
        self.entry = entry
        self.provider_timeout_s = provider_timeout_s
        #: the highest say_id issued to us so far (latency rows: which replies are newer)
        self.last_say_id = 0
        #: the utterances not yet finished on the line, by say_id
        self.utterances: dict[int, Utterance] = {}
        #: the `Say` behind each unfinished utterance (made again after a rate change)
        self._says: dict[int, Say] = {}
        #: speaking LLM requests whose `LlmResult` is not sent yet: request_id -> (say_id, text)
        self.open_replies: dict[int, tuple[int, list[str]]] = {}
        self._jobs: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._current: asyncio.Task[None] | None = None
        self._synthesising = False
        self._reply_audio: set[asyncio.Task[Any]] = set()  # TTS of live LLM replies
        self._tts_fault_at = -1e9
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = self.tasks.spawn(self._speech_loop(), "speech")

    # -- what the engine asks for ---------------------------------------------------------------

    @property
    def out(self) -> OutStream:
        out = self.line.out
        assert out is not None, "the speaker runs once the line's output is open"
        return out

    @property
    def idle(self) -> bool:
        """Nothing to synthesise and nothing of ours queued on the line."""
        return not self._jobs and not self._synthesising and not self.out.busy

    @property
    def queue_empty(self) -> bool:
        return not self._jobs and not self._synthesising

    def say(self, say: Say) -> None:
        self.last_say_id = max(self.last_say_id, say.say_id)
        info = Utterance(say.say_id, say.text, say.interruptible, say.expect_reply)
        self.utterances[say.say_id] = info
        self._says[say.say_id] = say
        if say.static and self.queue_empty:
            pcm = self.entry.prompt_cache.get(self._key(say.text))
            if pcm is not None:  # cached prompt: audio starts on the next tick
                info.whole(say.text, len(pcm))
                self.hooks.milestone("tts_first_audio")
                self.out.add(say.say_id, pcm)
                self.out.end(say.say_id)
                return
        self.enqueue(say)

    def llm(self, req: LlmRequest) -> None:
        if req.speak:
            self.last_say_id = max(self.last_say_id, req.say_id)
            self.utterances.setdefault(req.say_id, Utterance(req.say_id))
            self.enqueue(req)
        else:
            self.tasks.spawn(self.run_llm(req, None), f"llm-{req.request_id}")

    def enqueue(self, job: Job) -> None:
        self._jobs.append(job)
        self._wake.set()

    def play_tones(self, digits: str) -> None:
        """Keypad tones (AudioSocket cannot carry DTMF from us: they go in-band)."""
        pcm = dtmf_tones.tones(digits, self.line.sample_rate)
        if pcm:
            self.out.add(DTMF_SAY_ID, pcm)
            self.out.end(DTMF_SAY_ID)

    # -- audio made elsewhere (a speech-to-speech provider's replies) ---------------------------

    def relay_audio(self, say_id: int, pcm: bytes) -> None:
        """Audio of reply `say_id` made by someone else: onto the line, counted for `heard`."""
        info = self.utterances.get(say_id)
        if info is None:
            info = self.utterances[say_id] = Utterance(say_id)
            info.begin_segment("")
        info.produced += len(pcm)
        self.out.add(say_id, pcm)

    def relay_text(self, say_id: int, text: str) -> None:
        """The words of relayed reply `say_id` so far (its transcript)."""
        info = self.utterances.get(say_id)
        if info is None:
            info = self.utterances[say_id] = Utterance(say_id)
            info.begin_segment("")
        info.text = info.segments[0].text = text

    def end_relay(self, say_id: int) -> None:
        self.out.end(say_id)

    def interruptible_now(self) -> bool:
        """Whether the utterance on the line may be cut by the caller."""
        info = self.utterances.get(self.out.current_say)
        return info.interruptible if info is not None else True

    def utterance_done(self, say_id: int) -> None:
        self.utterances.pop(say_id, None)
        self._says.pop(say_id, None)

    def restart_at_new_rate(self) -> Interruption:
        """The call's rate changed and the line dropped what it had queued at the old rate:
        every `Say` not yet finished is made again at the new rate, from its start, in order;
        LLM replies in flight end where they were (their requests complete with what was heard,
        as after an interruption)."""
        again = [self._says[sid] for sid in sorted(self._says) if sid in self.utterances]
        cut = self.stop_audio()
        self.on_interruption(cut)
        for say in again:
            self.say(say)
        return cut

    def _key(self, text: str) -> tuple[str, int, str]:
        tts = self.entry.providers.tts
        return memory_key(tts.voice_id if tts is not None else "", self.line.sample_rate, text)

    # -- the queue ------------------------------------------------------------------------------

    async def _speech_loop(self) -> None:
        """Synthesises queued utterances one after another (playback order = engine order)."""
        while True:
            while not self._jobs:
                self._synthesising = False
                self.hooks.speech_queue_idle()
                self._wake.clear()
                await self._wake.wait()
            job = self._jobs.popleft()
            self._synthesising = True
            if isinstance(job, Say):
                coro = self.synth_say(job)
            elif isinstance(job, PlayPrepared):
                coro = job.run()
            else:
                coro = self.run_llm(job, job.say_id)
            self._current = asyncio.get_running_loop().create_task(coro)
            try:
                await self._current
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling() == 0 and not self.tasks.closed:
                    continue  # an interruption cancelled this job, not us; carry on
                raise
            finally:
                self._current = None

    # -- synthesis ------------------------------------------------------------------------------

    def _sink(self, spec: Speculation | None) -> AudioSink:
        return self.out if spec is None else spec.sink

    def _utterances(self, spec: Speculation | None) -> dict[int, Utterance]:
        return self.utterances if spec is None else spec.says

    def _mark(self, name: str, spec: Speculation | None) -> None:
        if spec is not None and not spec.live:
            spec.mark(name)  # held with the prepared reply until it is used
        else:
            self.hooks.milestone(name)

    async def synth_say(self, say: Say, spec: Speculation | None = None) -> None:
        """TTS one `Say` onto the line (or into `spec`'s held audio)."""
        out = self._sink(spec)
        info = self._utterances(spec)[say.say_id]
        cache = self.entry.prompt_cache if say.static else None
        key = self._key(say.text)
        pcm = cache.get(key) if cache is not None else None
        if pcm is not None:
            info.whole(say.text, len(pcm))
            self._mark("tts_first_audio", spec)
            out.add(say.say_id, pcm)
            out.end(say.say_id)
            return
        collected: list[bytes] | None = [] if cache is not None else None
        ok = await self._synth_text(say.say_id, say.text, collected, spec)
        if ok and cache is not None and collected is not None:
            cache[key] = b"".join(collected)
        out.end(say.say_id)

    async def _synth_text(self, say_id: int, text: str, collected: list[bytes] | None,
                          spec: Speculation | None = None,
                          voice: _ReplyVoice | None = None) -> bool:
        """TTS `text` as (part of) utterance `say_id` (of an LLM reply when `voice` is given).
        False (after reporting) on failure."""
        out = self._sink(spec)
        tts = self.entry.providers.tts
        info = self._utterances(spec)[say_id]
        seg = info.begin_segment(text)
        if tts is None or not text.strip():
            seg.end = info.produced
            return True
        it = tts.synthesize(text, self.line.sample_rate).__aiter__()
        first = True
        try:
            while True:
                try:
                    async with asyncio.timeout(self.provider_timeout_s):
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
                if voice is not None:
                    voice.audible.set()
        except (ProviderError, TimeoutError, OSError) as exc:
            seg.end = info.produced
            if spec is not None and not spec.live:
                spec.failed = True  # not heard by anyone: the final is handled afresh
                return False
            message = describe_fault(exc, "the TTS provider did not answer in time")
            if voice is not None:
                self._reply_tts_failed(voice, say_id, message, spec)
            else:
                self._tts_failed(say_id, message)
                self.hooks.cut_short(say_id, info.heard(info.produced))
            return False
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
        seg.end = info.produced
        return True

    def _tts_failed(self, say_id: int, message: str) -> None:
        """A TTS fault: a short tone so the line is not dead, and the engine's error path —
        unless TTS failed moments ago (the apology would fail too: just the tone then)."""
        self.hooks.fault("tts", message)
        self.out.add(say_id, audio.tone(400, 480, self.line.sample_rate, 0.15))
        now = time.monotonic()
        recent = now - self._tts_fault_at < TTS_FAULT_QUIET_S
        self._tts_fault_at = now
        if not recent:
            self.hooks.post(ProviderFailed("tts", message, at=self.hooks.now()))

    def _reply_tts_failed(self, voice: _ReplyVoice, say_id: int, message: str,
                          spec: Speculation | None) -> None:
        """TTS failed while speaking an LLM reply. Before the reply's result went to the engine,
        the result itself carries the failure (the engine takes its error path instead of
        moving on as if the reply had been said); after, the engine is told as for any TTS
        fault. Either way the record keeps only the words the caller heard."""
        voice.failure = message
        voice.audible.set()
        heard = self._utterances(spec)[say_id].heard(self._utterances(spec)[say_id].produced)
        if not voice.result_posted:
            self.hooks.fault("tts", message)
            self.out.add(say_id, audio.tone(400, 480, self.line.sample_rate, 0.15))
            return
        self._tts_failed(say_id, message)
        self.hooks.cut_short(say_id, heard)

    # -- LLM replies ----------------------------------------------------------------------------

    async def run_llm(self, req: LlmRequest, say_id: int | None,
                      spec: Speculation | None = None) -> None:
        """Stream the LLM; if speaking (`say_id`), its text goes to TTS as it arrives. With
        `spec` (preparing a reply ahead): audio into its held buffer, the `LlmResult` held back
        until the reply is adopted, a fault only marks the speculation failed."""
        llm = self.entry.providers.llm
        if llm is None:
            if spec is not None:
                spec.failed = True
                return
            self.hooks.post(LlmResult(req.request_id, ok=False,
                                      error="no LLM provider configured", at=self.hooks.now()))
            if say_id is not None:
                self.out.end(say_id)
            return
        text_parts: list[str] = []
        tool_calls: list[LlmToolCall] = []
        voice: _ReplyVoice | None = None
        if say_id is not None:
            voice = self._reply_voice(say_id, spec)
            self._open_replies(spec)[req.request_id] = (say_id, text_parts)
        error = ""
        it = llm.stream(req.messages, req.tools).__aiter__()
        first = True
        try:
            while True:
                try:
                    async with asyncio.timeout(self.provider_timeout_s):
                        chunk = await anext(it)
                except StopAsyncIteration:
                    break
                if first:
                    first = False
                    self._mark("llm_first_token", spec)
                if chunk.text:
                    text_parts.append(chunk.text)
                    if voice is not None:
                        voice.feed(chunk.text)
                if chunk.tool_calls:
                    tool_calls.extend(chunk.tool_calls)
        except (ProviderError, TimeoutError, OSError) as exc:
            error = describe_fault(exc, "the LLM provider did not answer in time")
            if spec is not None and not spec.live:
                spec.failed = True  # prepared, never heard: the final is handled afresh
                if voice is not None:
                    voice.cancel()
                return
            self.hooks.fault("llm", error)
        except asyncio.CancelledError:
            if voice is not None:
                voice.cancel()
            raise
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
        if voice is not None:
            voice.finish(keep_rest=not error)
            # the engine hears of the reply once the caller hears it start (or its TTS fails):
            # a reply nobody heard must not move the dialogue on (bounded: TTS times out)
            if not error:
                await voice.audible.wait()
        text = "".join(text_parts)
        if self._open_replies(spec).pop(req.request_id, None) is None and say_id is not None:
            return  # an interruption already answered this request
        says = self._utterances(spec)
        if voice is not None and voice.failure and not error and say_id is not None:
            info = says[say_id]
            text = info.heard(info.produced)  # what was voiced before TTS failed
            error = f"the TTS provider failed while speaking the reply: {voice.failure}"
        if say_id is not None and text and not error and say_id in says:
            says[say_id].text = text
        result = LlmResult(req.request_id, text=text, tool_calls=tuple(tool_calls),
                           ok=not error, error=error, at=self.hooks.now())
        if spec is not None and not spec.live:
            spec.results.append(result)  # posted when the reply is adopted
        else:
            self.hooks.post(result)
        if voice is not None:
            voice.result_posted = True
            if voice.task is not None:
                await voice.task

    def _open_replies(self, spec: Speculation | None) -> dict[int, tuple[int, list[str]]]:
        return spec.llm_open if spec is not None and not spec.live else self.open_replies

    def _reply_voice(self, say_id: int, spec: Speculation | None) -> _ReplyVoice:
        tts = self.entry.providers.tts
        continuation = tts is not None and tts.capabilities.continuation
        voice = _ReplyVoice(asyncio.Queue(), None if continuation else Chunker())
        coro = (self._speak_stream(say_id, voice, spec) if continuation
                else self._speak_clauses(say_id, voice, spec))
        # a prepared reply's voice is not "llm-tts": an interruption of the reply before it
        # must not cancel it
        task = voice.task = self.tasks.spawn(coro, f"{'spec' if spec else 'llm'}-tts-{say_id}")
        task.add_done_callback(lambda _t: voice.audible.set())
        if spec is None:
            self._reply_audio.add(task)
            task.add_done_callback(self._reply_audio.discard)
        else:
            spec.tasks.add(task)
            task.add_done_callback(spec.tasks.discard)
        return voice

    async def _speak_clauses(self, say_id: int, voice: _ReplyVoice,
                             spec: Speculation | None) -> None:
        """Clause by clause: each complete clause is synthesised on its own."""
        spoken: list[str] = []
        while True:
            piece = await voice.queue.get()
            if piece is None:
                break
            spoken.append(piece)
            if not await self._synth_text(say_id, piece, None, spec, voice):
                break
        self._reply_spoken(say_id, " ".join(spoken), spec)
        self._sink(spec).end(say_id)

    async def _speak_stream(self, say_id: int, voice: _ReplyVoice,
                            spec: Speculation | None) -> None:
        """One continuation stream for the whole reply: tokens in as the LLM writes them."""
        tts = self.entry.providers.tts
        assert tts is not None
        out = self._sink(spec)
        info = self._utterances(spec)[say_id]
        seg = info.begin_segment("")
        text_done = asyncio.Event()
        text_started = asyncio.Event()

        async def text() -> AsyncIterator[str]:
            while True:
                piece = await voice.queue.get()
                if piece is None:
                    text_done.set()
                    return
                seg.text += piece
                text_started.set()
                yield piece

        it = tts.synthesize_stream(text(), self.line.sample_rate).__aiter__()
        first = True
        try:
            while True:
                # the TTS may be quiet while the LLM is still writing; it must answer within
                # the provider timeout once it has text and owes us audio
                owed = text_done.is_set() or (first and text_started.is_set())
                try:
                    async with asyncio.timeout(self.provider_timeout_s if owed else None):
                        chunk = await anext(it)
                except StopAsyncIteration:
                    break
                if first:
                    first = False
                    self._mark("tts_first_audio", spec)
                info.produced += len(chunk)
                out.add(say_id, chunk)
                voice.audible.set()
        except (ProviderError, TimeoutError, OSError) as exc:
            seg.end = info.produced
            if spec is None or spec.live:
                self._reply_tts_failed(voice, say_id, describe_fault(
                    exc, "the TTS provider did not answer in time"), spec)
            else:
                spec.failed = True
        finally:
            seg.end = info.produced
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
        self._reply_spoken(say_id, " ".join(seg.text.split()), spec)
        out.end(say_id)

    def _reply_spoken(self, say_id: int, text: str, spec: Speculation | None) -> None:
        if not text:
            return
        self._utterances(spec)[say_id].text = text
        if spec is None or spec.live:
            self.hooks.agent_line(say_id, text)

    # -- interruption ---------------------------------------------------------------------------

    def stop_audio(self) -> Interruption:
        """The caller interrupted: silence the line now and say what they heard of what."""
        out = self.out
        current = out.current_say
        if current <= 0:  # paused: the utterance on hold is the one cut
            current = out.queued_say()
        out.flush()
        # read after the flush: nothing of ours can go out any more (the fade-out frame counts
        # for no utterance), so these are final — read before, the media thread could still
        # have sent one more frame in between
        played = dict(out.played)
        # the interrupted utterance: the one on the line, else the oldest unfinished one
        say_id = current if current > 0 else min((s for s in self.utterances if s > 0),
                                                 default=0)
        info = self.utterances.get(say_id)
        heard = info.heard(played.get(say_id, 0)) if info is not None else ""
        # a speaking LLM request that was cut: its reply, as far as the caller heard it,
        # completes the request (the conversation history then matches what was said)
        replies = []
        for rid, (sid, parts) in list(self.open_replies.items()):
            self.open_replies.pop(rid, None)
            text = heard if sid == say_id and heard else "".join(parts)
            replies.append(LlmResult(rid, text=text, ok=True, at=self.hooks.now()))
        return Interruption(say_id, heard, time.monotonic(), played.get(say_id, 0),
                            tuple(replies))

    def on_interruption(self, interruption: Interruption) -> None:
        """Nothing more of what was queued may be said: cancel synthesis and LLM replies."""
        self._jobs.clear()
        if self._current is not None:
            self._current.cancel()
        for t in list(self._reply_audio):
            t.cancel()
        self.utterances.clear()
        self._says.clear()
        self._synthesising = False


@dataclass
class _ReplyVoice:
    """Where an LLM reply's text goes on its way to TTS (clauses, or a continuation stream),
    and how its speaking went."""

    queue: asyncio.Queue[str | None]
    chunker: Chunker | None
    task: asyncio.Task[Any] | None = None
    #: the reply's first audio was made, or its voice is over (failed or done)
    audible: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str = ""  # why TTS failed ("" while it works)
    result_posted: bool = False  # the engine has the reply's LlmResult
    def feed(self, text: str) -> None:
        if self.chunker is None:
            self.queue.put_nowait(text)
            return
        for piece in self.chunker.feed(text):
            self.queue.put_nowait(piece)

    def finish(self, keep_rest: bool) -> None:
        if self.chunker is not None:
            rest = self.chunker.flush()
            if rest and keep_rest:
                self.queue.put_nowait(rest)
        self.queue.put_nowait(None)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
