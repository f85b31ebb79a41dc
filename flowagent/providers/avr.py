"""AVR-compatible providers: reuse Agent Voice Response's ASR/LLM/TTS/STS services unchanged.

Formats confirmed from the agentvoiceresponse repositories (read, not copied):
- AVR Core's contract — https://github.com/agentvoiceresponse/avr-docs (understanding-avr-core.md,
  integrations/development-guide.md): `ASR_URL=http://host:6010/speech-to-text-stream`,
  `LLM_URL=http://host:6002/prompt-stream`, `TTS_URL=http://host:6012/text-to-speech-stream`,
  `STS_URL=ws://host:6033`; audio everywhere is 8 kHz 16-bit mono PCM.
- ASR (e.g. agentvoiceresponse/avr-asr-vosk, avr-asr-soniox `index.js`): `POST
  /speech-to-text-stream` whose request body is the caller's raw PCM streamed as it arrives
  (chunked); the response (`Content-Type: text/event-stream`, but *not* SSE-framed) is plain
  text: each write is a recognised transcript. We treat each write as a final, end-of-turn
  transcript (the services do their own endpointing); a write that parses as JSON with
  `text`/`transcript` is also accepted.
- LLM (agentvoiceresponse/avr-llm-openai `index.js`): `POST /prompt-stream` with JSON
  `{"messages": [{role, content}], "uuid": "<call uuid>"}`; the service adds its own system prompt
  and runs its own tools; the response body is a sequence of JSON objects written back to back
  (no separator) — `{"type": "text", "content": "..."}`. We parse a concatenated/NDJSON/`data:`
  stream of such objects and yield their `content`.
- TTS (agentvoiceresponse/avr-tts-elevenlabs `index.js`): `POST /text-to-speech-stream` with JSON
  `{"text": "..."}`; response body is raw s16le PCM at 8 kHz (sent with `Content-Type:
  audio/basic` by some services even though it is linear PCM), written in small chunks; errors
  are HTTP 400/500 with `{"message": ...}`.
- STS (avr-docs avr-sts-integration-implementation.md; agentvoiceresponse/avr-sts-ultravox):
  WebSocket; client sends `{"type": "init", "uuid"}` then `{"type": "audio", "audio": <base64
  8 kHz PCM>}`; server sends `{"type": "audio", "audio"}`, `{"type": "interruption"}`,
  `{"type": "transcript", "role": "user"|"agent", "text"}`, `{"type": "error", "message"}`, and
  (Ultravox) `{"type": "tool_invocation", "toolName", "invocationId", "parameters"}` answered
  with `{"type": "tool_result", "invocationId", "result"}`.
  Barge-in: the service detects it and sends `interruption`; the protocol has no client message
  to cancel or truncate a reply (no `interrupt`/`truncate` counterpart), so on our side the
  player is flushed and the record keeps what was heard; the service's own context may still
  hold the unheard rest of its reply.

Limits of the format (documented for flow authors): AVR LLM and STS services own their system
prompt and tools, so a flow's instructions/tools are not sent to them (the flow's messages are);
the ASR protocol has no "finalise now", so `flush()` is a no-op.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from flowagent.audio import StreamResampler
from flowagent.providers.base import (
    AsrStreamBase,
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
    StsEvent,
    StsSessionBase,
    Transcript,
    TtsCapabilities,
)
from flowagent.providers.chunking import chunk_stream
from flowagent.providers.cloudutil import (
    END_OF_STREAM,
    build_options,
    cancel_and_wait,
    closed_error,
    drain,
    error_detail,
    parse_json,
    status_error,
    ws_connect,
)
from flowagent.providers.openai_chat import SessionHolder
from flowagent.providers.sts_url import check_sts_url

AVR_RATE = 8000


# ---------------------------------------------------------------------------------------------
# ASR
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AvrAsrOptions:
    url: str = "http://localhost:6010/speech-to-text-stream"  # ASR_URL
    connect_timeout_s: float = 5.0
    close_timeout_s: float = 3.0


class AvrAsr:
    name = "avr"
    endpointing = True

    def __init__(self, options: AvrAsrOptions) -> None:
        self.options = options
        self._sessions = SessionHolder()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AvrAsr:
        return cls(build_options(AvrAsrOptions, options, "AVR ASR"))

    async def open_stream(self, sample_rate: int, language: str) -> AvrAsrStream:
        return AvrAsrStream(self._sessions.get(), self.options, sample_rate)

    async def close(self) -> None:
        """Release pooled HTTP connections (server shutdown)."""
        await self._sessions.close()


_END = END_OF_STREAM


class AvrAsrStream(AsrStreamBase):
    """Streams the request body from a queue; a task owns the HTTP exchange."""

    def __init__(self, session: aiohttp.ClientSession, options: AvrAsrOptions,
                 sample_rate: int) -> None:
        self._o = options
        self._to8k = StreamResampler(sample_rate, AVR_RATE)
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._task = asyncio.create_task(self._run(session), name="avr-asr")

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._audio.get()
            if chunk is None:
                return
            yield chunk

    async def _run(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(
                self._o.url, data=self._body(),
                headers={"Content-Type": "application/octet-stream"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._o.connect_timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise status_error("AVR ASR", resp.status, error_detail(await resp.text()))
                async for data in resp.content.iter_any():
                    text = _asr_text(data.decode("utf-8", "replace"))
                    if text:
                        self._out.put_nowait(Transcript(text, True, 1.0, end_of_turn=True))
            if not self._closing:
                raise ProviderError("The AVR ASR service ended the stream before the call did.",
                                    provider="AVR ASR")
        except ProviderError as exc:
            self._out.put_nowait(exc)
        except (aiohttp.ClientError, OSError) as exc:
            if not self._closing:
                self._out.put_nowait(ProviderError(f"The AVR ASR service failed ({exc}).",
                                                   provider="AVR ASR"))
        finally:
            self._out.put_nowait(_END)

    async def send_audio(self, pcm: bytes) -> None:
        if self._task.done():
            return  # the failure is delivered through transcripts()
        out = self._to8k.process(pcm)
        if out:
            self._audio.put_nowait(out)

    async def flush(self) -> None:
        """AVR's ASR protocol has no finalise message; its services endpoint by themselves."""

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._iter()

    def _iter(self) -> AsyncIterator[Transcript]:
        return drain(self._out)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        tail = self._to8k.process(b"", last=True)
        if tail:
            self._audio.put_nowait(tail)
        self._audio.put_nowait(None)  # end the request body: the service ends its response
        try:
            async with asyncio.timeout(self._o.close_timeout_s):
                await asyncio.shield(self._task)
        except Exception:
            pass
        finally:
            await cancel_and_wait(self._task)


def _asr_text(chunk: str) -> str:
    chunk = chunk.strip()
    if chunk.startswith("{"):
        with contextlib.suppress(ValueError):
            data = json.loads(chunk)
            if isinstance(data, dict):
                return str(data.get("text") or data.get("transcript") or "").strip()
    return chunk


# ---------------------------------------------------------------------------------------------
# LLM
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AvrLlmOptions:
    url: str = "http://localhost:6002/prompt-stream"  # LLM_URL
    uuid: str = ""  # call uuid sent to the service; empty: one random uuid per provider
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 15.0
    idle_timeout_s: float = 15.0


class AvrLlm:
    name = "avr"

    def __init__(self, options: AvrLlmOptions) -> None:
        self.options = options
        self.uuid = options.uuid or str(uuid.uuid4())
        self._sessions = SessionHolder()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AvrLlm:
        return cls(build_options(AvrLlmOptions, options, "AVR LLM"))

    async def close(self) -> None:
        await self._sessions.close()

    async def stream(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...] = ()
    ) -> AsyncIterator[LlmChunk]:
        o = self.options
        body = {"messages": [{"role": m.role, "content": m.content} for m in messages
                             if m.role in ("user", "assistant", "system") and m.content],
                "uuid": self.uuid}
        label = "The AVR LLM service"
        try:
            resp = await self._sessions.get().post(
                o.url, json=body,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=o.connect_timeout_s,
                                              sock_read=None))
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError(f"Could not reach the AVR LLM service ({exc}).",
                                provider="AVR LLM") from None
        try:
            if resp.status != 200:
                raise status_error("AVR LLM", resp.status, error_detail(await resp.text()),
                                   what=label)
            decoder = JsonStream()
            got = False
            while True:
                wait = o.idle_timeout_s if got else o.first_token_timeout_s
                try:
                    async with asyncio.timeout(wait):
                        data = await resp.content.readany()
                except TimeoutError:
                    what = "stalled mid-reply" if got else "sent no reply"
                    raise ProviderTimeout(f"{label} {what} for {wait:g} s.",
                                          provider="AVR LLM") from None
                except aiohttp.ClientError as exc:
                    raise ProviderError(f"{label} dropped the connection mid-reply ({exc}).",
                                        provider="AVR LLM") from None
                if not data:
                    break
                for obj in decoder.feed(data.decode("utf-8", "replace")):
                    if obj.get("type", "text") == "text" and obj.get("content"):
                        got = True
                        yield LlmChunk(text=str(obj["content"]))
            decoder.finish()
        finally:
            resp.close()
        yield LlmChunk(finish_reason="stop")


class JsonStream:
    """Decodes JSON objects written back to back, one per line, or as `data:` lines."""

    def __init__(self) -> None:
        self._buf = ""
        self._dec = json.JSONDecoder()

    def feed(self, text: str) -> list[dict[str, Any]]:
        self._buf += text
        out: list[dict[str, Any]] = []
        while True:
            s = self._buf.lstrip()
            if s.startswith("data:"):
                s = s[5:].lstrip()
            if not s:
                self._buf = ""
                return out
            try:
                obj, end = self._dec.raw_decode(s)
            except ValueError:
                if not s.startswith(("{", "[")):
                    raise ProviderError("The AVR LLM service sent something that is not JSON: "
                                        f"{s[:60]!r}.", provider="AVR LLM") from None
                self._buf = s
                return out  # incomplete object: wait for more bytes
            self._buf = s[end:]
            if isinstance(obj, dict):
                out.append(obj)

    def finish(self) -> None:
        if self._buf.strip():
            raise ProviderError("The AVR LLM service's reply ended in the middle of a JSON "
                                "object.", provider="AVR LLM")


# ---------------------------------------------------------------------------------------------
# TTS
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AvrTtsOptions:
    url: str = "http://localhost:6012/text-to-speech-stream"  # TTS_URL
    voice: str = "default"  # only used as the prompt-audio cache key
    connect_timeout_s: float = 5.0
    first_audio_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0


class AvrTts:
    name = "avr"
    #: AVR's TTS answers one text per request: an LLM reply goes to it clause by clause
    capabilities = TtsCapabilities()

    def __init__(self, options: AvrTtsOptions) -> None:
        self.options = options
        self.voice_id = f"avr:{options.url}:{options.voice}"
        self._sessions = SessionHolder()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AvrTts:
        return cls(build_options(AvrTtsOptions, options, "AVR TTS"))

    async def close(self) -> None:
        await self._sessions.close()

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        o = self.options
        label = "The AVR TTS service"
        try:
            resp = await self._sessions.get().post(
                o.url, json={"text": text},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=o.connect_timeout_s))
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError(f"Could not reach the AVR TTS service ({exc}).",
                                provider="AVR TTS") from None
        resampler = StreamResampler(AVR_RATE, sample_rate)
        try:
            if resp.status != 200:
                raise status_error("AVR TTS", resp.status, error_detail(await resp.text()),
                                   what=label)
            got = False
            while True:
                wait = o.idle_timeout_s if got else o.first_audio_timeout_s
                try:
                    async with asyncio.timeout(wait):
                        data = await resp.content.readany()
                except TimeoutError:
                    what = "stalled mid-utterance" if got else "sent no audio"
                    raise ProviderTimeout(f"{label} {what} for {wait:g} s.",
                                          provider="AVR TTS") from None
                except aiohttp.ClientError as exc:
                    raise ProviderError(f"{label} dropped the connection mid-utterance ({exc}).",
                                        provider="AVR TTS") from None
                if not data:
                    break
                out = resampler.process(data)
                if out:
                    got = True
                    yield out
            tail = resampler.process(b"", last=True)
            if tail:
                yield tail
        finally:
            resp.close()

    async def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        async for sentence in chunk_stream(text_chunks):
            async for pcm in self.synthesize(sentence, sample_rate):
                yield pcm


# ---------------------------------------------------------------------------------------------
# STS
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class AvrStsOptions:
    url: str = "ws://localhost:6033"  # STS_URL
    uuid: str = ""  # empty: a random uuid per session
    connect_timeout_s: float = 5.0


class AvrSts:
    name = "avr"

    def __init__(self, options: AvrStsOptions) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AvrSts:
        return cls(build_options(AvrStsOptions, options, "AVR STS"))

    @property
    def url(self) -> str:
        return self.options.url

    def with_url(self, url: str) -> AvrSts:
        """This provider for one call at another `STS_URL` (the `call_initiated` webhook's
        `sts_url`, as in AVR Core); ValueError with the reason if it is not acceptable."""
        checked = check_sts_url(url, flow_url=self.options.url, sends_secret=False)
        return type(self)(dataclasses.replace(self.options, url=checked))

    async def connect(
        self, instructions: str, tools: tuple[LlmToolSpec, ...], sample_rate: int
    ) -> AvrStsSession:
        ws = await ws_connect(self.options.url, provider="The AVR STS service",
                              timeout_s=self.options.connect_timeout_s)
        session_uuid = self.options.uuid or str(uuid.uuid4())
        try:
            await ws.send(json.dumps({"type": "init", "uuid": session_uuid}))
        except ConnectionClosed as exc:
            raise closed_error("The AVR STS service", exc, {}) from None
        return AvrStsSession(ws, sample_rate)


class AvrStsSession(StsSessionBase):
    """AVR's STS protocol has no way to ask for speech, cancel or truncate a reply, and no
    end-of-speech or response-done events (the default capabilities: all off)."""

    def __init__(self, ws: ClientConnection, sample_rate: int) -> None:
        self._ws = ws
        self._up = StreamResampler(sample_rate, AVR_RATE)
        self._down = StreamResampler(AVR_RATE, sample_rate)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._reader = asyncio.create_task(self._read(), name="avr-sts-reader")

    async def _send(self, msg: dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(msg))
        except ConnectionClosed as exc:
            raise closed_error("The AVR STS service", exc, {}) from None

    async def send_audio(self, pcm: bytes) -> None:
        out = self._up.process(pcm)
        if out:
            await self._send({"type": "audio", "audio": base64.b64encode(out).decode("ascii")})

    async def send_tool_result(self, call_id: str, output: dict[str, Any]) -> None:
        await self._send({"type": "tool_result", "invocationId": call_id,
                          "result": json.dumps(output)})

    def events(self) -> AsyncIterator[StsEvent]:
        return self._iter()

    def _iter(self) -> AsyncIterator[StsEvent]:
        return drain(self._queue)

    async def _read(self) -> None:
        label = "The AVR STS service"
        try:
            async for raw in self._ws:
                msg = parse_json(label, raw)
                kind = msg.get("type")
                if kind == "audio":
                    try:
                        pcm = base64.b64decode(msg.get("audio") or "", validate=True)
                    except (binascii.Error, ValueError):
                        raise ProviderError(f"{label} sent audio that is not valid base64.",
                                            provider="AVR STS") from None
                    out = self._down.process(pcm)
                    if out:
                        self._queue.put_nowait(StsEvent("audio", audio=out))
                elif kind == "interruption":
                    self._queue.put_nowait(StsEvent("interrupted"))
                elif kind == "transcript":
                    role = "transcript_user" if msg.get("role") == "user" else "transcript_agent"
                    self._queue.put_nowait(StsEvent(role, text=str(msg.get("text", ""))))
                elif kind == "tool_invocation":
                    params = msg.get("parameters") or {}
                    self._queue.put_nowait(StsEvent("tool_call", tool_call=LlmToolCall(
                        id=str(msg.get("invocationId", "")), name=str(msg.get("toolName", "")),
                        arguments=params if isinstance(params, dict) else {"value": params})))
                elif kind == "error":
                    self._queue.put_nowait(StsEvent("error", text=f"{label} reported: "
                                                    f"{msg.get('message', 'unknown error')}."))
            if not self._closing:
                self._queue.put_nowait(ProviderError(f"{label} ended the session.",
                                                     provider="AVR STS"))
        except ConnectionClosedOK:
            if not self._closing:
                self._queue.put_nowait(ProviderError(f"{label} ended the session.",
                                                     provider="AVR STS"))
        except ConnectionClosed as exc:
            if not self._closing:
                self._queue.put_nowait(closed_error(label, exc, {}))
        except ProviderError as exc:
            self._queue.put_nowait(exc)
        finally:
            self._queue.put_nowait(_END)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._ws.close()
        await cancel_and_wait(self._reader)
