"""OpenAI Realtime as a speech-to-speech (STS) provider over WebSocket.

Wire protocol followed (the GA Realtime API):
- https://platform.openai.com/docs/guides/realtime-websocket — `wss://api.openai.com/v1/realtime
  ?model=gpt-realtime`, header `Authorization: Bearer <key>`; JSON events both ways.
- https://platform.openai.com/docs/api-reference/realtime-client-events — `session.update`
  `{session: {type: "realtime", instructions, tools: [{type: "function", name, description,
  parameters}], audio: {input: {format, turn_detection, transcription}, output: {format,
  voice}}}}`; `input_audio_buffer.append {audio: <base64>}`; `input_audio_buffer.commit`;
  `response.create`; `response.cancel`; `conversation.item.create {item: {type:
  "function_call_output", call_id, output}}`.
  Audio formats (RealtimeAudioFormats): `{type: "audio/pcm", rate: 24000}` (only 24 kHz),
  `{type: "audio/pcmu"}` and `{type: "audio/pcma"}` (G.711 at 8 kHz). We default to
  `audio/pcmu`: it is the telephone's own 8 kHz format, so no resampling is needed on an 8 kHz
  call (only μ-law expansion); `audio_format: pcm` uses 24 kHz PCM and resamples both ways.
- https://platform.openai.com/docs/api-reference/realtime-server-events — `session.created`,
  `session.updated`, `input_audio_buffer.speech_started` / `speech_stopped`,
  `conversation.item.input_audio_transcription.completed {transcript}`,
  `response.output_audio.delta {delta}` (beta name `response.audio.delta`),
  `response.output_audio_transcript.delta/.done` (beta `response.audio_transcript.*`),
  `response.output_item.added {item: {type: "function_call", name, call_id}}`,
  `response.function_call_arguments.done {call_id, name, arguments}`, `response.done
  {response: {status}}`, and `error {error: {type, code, message}}` — "most errors are
  recoverable and the session stays open", so they become `StsEvent("error")`, not an exception.

Turn taking: `turn_detection: server_vad` (default) or `semantic_vad` lets OpenAI decide ends of
turn and interruptions; `none` means ours — call `commit_turn()` (commit + response.create) at
end of turn and `interrupt()` on barge-in. `input_audio_buffer.speech_started` always yields
`StsEvent("interrupted")` and cancels a response in progress; `speech_stopped {item_id,
audio_end_ms}` yields `StsEvent("speech_stopped")` (the caller's end of speech, for per-turn
latency).

Barge-in (the WebSocket transport leaves this to the client): the server makes audio faster than
real time, so when the caller cuts in, most of the reply is still in our player, unheard.
`barge_in(item_id, content_index, audio_end_ms)` sends `response.cancel {response_id}` if a
response is still in progress, then `conversation.item.truncate {item_id, content_index,
audio_end_ms}` with the milliseconds actually played to the caller, so the model's context (and
its server-side transcript) holds only what was heard; the server answers
`conversation.item.truncated`. `audio_end_ms` beyond the item's audio is an error on the server's
side, so the caller of `barge_in` clamps it to the audio received. Audio events carry the
`item_id`/`content_index` they belong to in `StsEvent.data`.

Per-call URL: `with_url(url)` is the same provider pointed at another endpoint (the
`call_initiated` webhook's `sts_url`), checked by `sts_url.check_sts_url` — the API key is never
sent in clear text to another machine unless the flow's own URL already is clear text.

Residual uncertainty: beta-era servers (`OpenAI-Beta: realtime=v1`) use flat `input_audio_format`
fields; we speak the GA shape and accept both event-name families on receive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from flowagent.audio import StreamResampler
from flowagent.providers.base import (
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
    StsCapabilities,
    StsEvent,
    StsSessionBase,
)
from flowagent.providers.cloudutil import (
    END_OF_STREAM,
    build_options,
    cancel_and_wait,
    closed_error,
    drain,
    parse_json,
    pcm_to_ulaw,
    ulaw_to_pcm,
    ws_connect,
)
from flowagent.providers.sts_url import check_sts_url

PROVIDER = "OpenAI Realtime"
CLOSE_MEANINGS = {1008: "the session was refused (check the API key and model)",
                  1011: "OpenAI hit an internal error"}


@dataclass(slots=True)
class OpenAIRealtimeOptions:
    api_key: str = ""
    model: str = "gpt-realtime"
    url: str = "wss://api.openai.com/v1/realtime"
    voice: str = "alloy"
    audio_format: str = "pcmu"  # pcmu (G.711 μ-law 8 kHz) | pcm (24 kHz s16le)
    turn_detection: str = "server_vad"  # server_vad | semantic_vad | none
    vad_threshold: float = 0.5
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300
    transcription_model: str = "gpt-4o-mini-transcribe"  # empty: no caller transcripts
    connect_timeout_s: float = 5.0
    setup_timeout_s: float = 5.0


class OpenAIRealtimeSts:
    name = "openai_realtime"

    def __init__(self, options: OpenAIRealtimeOptions) -> None:
        if options.audio_format not in ("pcmu", "pcm"):
            raise ValueError("OpenAI Realtime audio_format must be pcmu or pcm.")
        if options.turn_detection not in ("server_vad", "semantic_vad", "none"):
            raise ValueError("OpenAI Realtime turn_detection must be server_vad, semantic_vad "
                             "or none.")
        self.options = options

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> OpenAIRealtimeSts:
        return cls(build_options(OpenAIRealtimeOptions, options, PROVIDER))

    @property
    def url(self) -> str:
        return self.options.url

    def with_url(self, url: str) -> OpenAIRealtimeSts:
        """This provider for one call at another WebSocket URL (ValueError with the reason
        if the URL is not acceptable). The flow's shared instance is not changed."""
        checked = check_sts_url(url, flow_url=self.options.url,
                                sends_secret=bool(self.options.api_key))
        return type(self)(dataclasses.replace(self.options, url=checked))

    def endpoint(self) -> str:
        """The URL we connect to: the configured one plus `?model=` unless it names one."""
        o = self.options
        query = urlsplit(o.url).query
        if "model" in parse_qs(query):
            return o.url
        return f"{o.url}{'&' if query else '?'}{urlencode({'model': o.model})}"

    def session_config(self, instructions: str, tools: tuple[LlmToolSpec, ...]) -> dict[str, Any]:
        o = self.options
        fmt: dict[str, Any] = ({"type": "audio/pcmu"} if o.audio_format == "pcmu"
                               else {"type": "audio/pcm", "rate": 24000})
        if o.turn_detection == "none":
            turn: dict[str, Any] | None = None
        elif o.turn_detection == "semantic_vad":
            turn = {"type": "semantic_vad", "create_response": True, "interrupt_response": True}
        else:
            turn = {"type": "server_vad", "threshold": o.vad_threshold,
                    "prefix_padding_ms": o.prefix_padding_ms,
                    "silence_duration_ms": o.silence_duration_ms,
                    "create_response": True, "interrupt_response": True}
        audio_in: dict[str, Any] = {"format": fmt, "turn_detection": turn}
        if o.transcription_model:
            audio_in["transcription"] = {"model": o.transcription_model}
        return {
            "type": "realtime",
            "instructions": instructions,
            "tools": [{"type": "function", "name": t.name, "description": t.description,
                       "parameters": t.parameters} for t in tools],
            "tool_choice": "auto",
            "audio": {"input": audio_in, "output": {"format": fmt, "voice": o.voice}},
        }

    async def connect(
        self, instructions: str, tools: tuple[LlmToolSpec, ...], sample_rate: int
    ) -> OpenAIRealtimeSession:
        o = self.options
        if not o.api_key:
            raise ProviderError("OpenAI Realtime needs an api_key (e.g. ${OPENAI_API_KEY}).",
                                provider=PROVIDER)
        ws = await ws_connect(self.endpoint(), provider=PROVIDER,
                              headers={"Authorization": f"Bearer {o.api_key}"},
                              timeout_s=o.connect_timeout_s)
        try:
            async with asyncio.timeout(o.setup_timeout_s):
                await _expect(ws, "session.created")
                await ws.send(json.dumps({"type": "session.update",
                                          "session": self.session_config(instructions, tools)}))
                await _expect(ws, "session.updated")
        except TimeoutError:
            await ws.close()
            raise ProviderTimeout(f"OpenAI Realtime did not set up the session within "
                                  f"{o.setup_timeout_s:g} s.", provider=PROVIDER) from None
        except ConnectionClosed as exc:
            raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None
        except ProviderError:
            await ws.close()
            raise
        return OpenAIRealtimeSession(ws, o, sample_rate)


async def _expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        msg = parse_json(PROVIDER, await ws.recv())
        if msg.get("type") == kind:
            return msg
        if msg.get("type") == "error":
            raise ProviderError(f"OpenAI Realtime refused the session: {_err_text(msg)}.",
                                provider=PROVIDER)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _err_text(msg: dict[str, Any]) -> str:
    err = msg.get("error") or {}
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or err.get("type") or "unknown error")
    return str(err)


_END = END_OF_STREAM


class OpenAIRealtimeSession(StsSessionBase):
    """One call's realtime session. Owns one reader task."""

    def __init__(self, ws: ClientConnection, options: OpenAIRealtimeOptions,
                 sample_rate: int) -> None:
        self._ws = ws
        self._o = options
        self._rate = sample_rate
        wire_rate = 8000 if options.audio_format == "pcmu" else 24000
        self._up = StreamResampler(sample_rate, wire_rate)
        self._down = StreamResampler(wire_rate, sample_rate)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._response_active = False
        self._response_id = ""  # the response in progress (for a targeted response.cancel)
        self.capabilities = StsCapabilities(
            #: the caller's end of speech comes as `speech_stopped` (server/semantic VAD only)
            reports_end_of_speech=options.turn_detection != "none",
            #: every response ends with `response.done` (the session splits replies on it)
            reports_response_done=True,
            respond=True, truncate=True, interrupt=True,
        )
        self._fn_names: dict[str, str] = {}  # call_id/item_id -> function name
        self._reader = asyncio.create_task(self._read(), name="openai-realtime-reader")

    # -- client events ----------------------------------------------------------------------

    async def _send(self, msg: dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(msg))
        except ConnectionClosed as exc:
            raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None

    async def send_audio(self, pcm: bytes) -> None:
        wire = self._up.process(pcm)
        if self._o.audio_format == "pcmu":
            wire = pcm_to_ulaw(wire)
        if wire:
            await self._send({"type": "input_audio_buffer.append",
                              "audio": base64.b64encode(wire).decode("ascii")})

    async def commit_turn(self) -> None:
        """End of the caller's turn decided by our VAD (turn_detection: none)."""
        await self._send({"type": "input_audio_buffer.commit"})
        await self._send({"type": "response.create"})

    async def respond(self, instructions: str = "") -> None:
        """Make the model speak now (e.g. the greeting, or the flow's own words before a
        transfer): `response.create`, with per-response `instructions` when given."""
        msg: dict[str, Any] = {"type": "response.create"}
        if instructions:
            msg["response"] = {"instructions": instructions}
        await self._send(msg)

    async def interrupt(self) -> None:
        """Our barge-in: stop the response being spoken."""
        await self.barge_in()

    async def barge_in(self, item_id: str = "", content_index: int = 0,
                       audio_end_ms: int | None = None) -> None:
        """The caller cut in: cancel a response still being made, then truncate the assistant
        item `item_id` to the `audio_end_ms` the caller actually heard (see the module doc)."""
        if self._response_active:
            msg: dict[str, Any] = {"type": "response.cancel"}
            if self._response_id:
                msg["response_id"] = self._response_id
            await self._send(msg)
        if item_id and audio_end_ms is not None:
            await self._send({"type": "conversation.item.truncate", "item_id": item_id,
                              "content_index": int(content_index),
                              "audio_end_ms": max(0, int(audio_end_ms))})

    async def send_tool_result(self, call_id: str, output: dict[str, Any]) -> None:
        await self._send({"type": "conversation.item.create",
                          "item": {"type": "function_call_output", "call_id": call_id,
                                   "output": json.dumps(output)}})
        await self._send({"type": "response.create"})

    # -- server events ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[StsEvent]:
        return self._iter()

    def _iter(self) -> AsyncIterator[StsEvent]:
        return drain(self._queue)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                for ev in await self._handle(parse_json(PROVIDER, raw)):
                    self._queue.put_nowait(ev)
            if not self._closing:
                self._queue.put_nowait(ProviderError("OpenAI Realtime ended the session.",
                                                     provider=PROVIDER))
        except ConnectionClosedOK:
            if not self._closing:
                self._queue.put_nowait(ProviderError("OpenAI Realtime ended the session.",
                                                     provider=PROVIDER))
        except ConnectionClosed as exc:
            if not self._closing:
                self._queue.put_nowait(closed_error(PROVIDER, exc, CLOSE_MEANINGS))
        except ProviderError as exc:
            self._queue.put_nowait(exc)
            with contextlib.suppress(Exception):
                await self._ws.close(1011)
        finally:
            self._queue.put_nowait(_END)

    async def _handle(self, msg: dict[str, Any]) -> list[StsEvent]:
        kind = str(msg.get("type", ""))
        if kind in ("response.output_audio.delta", "response.audio.delta"):
            try:
                wire = base64.b64decode(msg.get("delta") or "", validate=True)
            except (binascii.Error, ValueError):
                raise ProviderError("OpenAI Realtime sent audio that is not valid base64.",
                                    provider=PROVIDER) from None
            pcm = ulaw_to_pcm(wire) if self._o.audio_format == "pcmu" else wire
            out = self._down.process(pcm)
            where = {"item_id": str(msg.get("item_id") or ""),
                     "content_index": _int(msg.get("content_index")),
                     "response_id": str(msg.get("response_id") or "")}
            return [StsEvent("audio", audio=out, data=where)] if out else []
        if kind == "response.created":
            self._response_active = True
            self._response_id = str((msg.get("response") or {}).get("id") or "")
            return []
        if kind == "input_audio_buffer.speech_started":
            if self._response_active and self._o.turn_detection == "none":
                await self._send({"type": "response.cancel"})
            was_speaking = self._response_active
            return [StsEvent("interrupted", data={"agent_was_speaking": was_speaking,
                                                  "item_id": str(msg.get("item_id") or "")})]
        if kind == "input_audio_buffer.speech_stopped":
            return [StsEvent("speech_stopped", data={
                "item_id": str(msg.get("item_id") or ""),
                "audio_end_ms": _int(msg.get("audio_end_ms"))})]
        if kind == "conversation.item.truncated":
            return [StsEvent("truncated", data={
                "item_id": str(msg.get("item_id") or ""),
                "audio_end_ms": _int(msg.get("audio_end_ms"))})]
        if kind == "conversation.item.input_audio_transcription.completed":
            return [StsEvent("transcript_user", text=str(msg.get("transcript", "")),
                             data={"item_id": str(msg.get("item_id") or "")})]
        if kind in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
            return [StsEvent("transcript_agent", text=str(msg.get("delta", "")),
                             data={"partial": True})]
        if kind in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            return [StsEvent("transcript_agent", text=str(msg.get("transcript", "")),
                             data={"partial": False})]
        if kind == "response.output_item.added":
            item = msg.get("item") or {}
            if item.get("type") == "function_call":
                for key in ("call_id", "id"):
                    if item.get(key):
                        self._fn_names[str(item[key])] = str(item.get("name", ""))
            return []
        if kind == "response.function_call_arguments.done":
            call_id = str(msg.get("call_id", ""))
            name = str(msg.get("name") or self._fn_names.get(call_id)
                       or self._fn_names.get(str(msg.get("item_id", ""))) or "")
            try:
                args = json.loads(msg.get("arguments") or "{}")
            except ValueError:
                return [StsEvent("error", text=f"OpenAI Realtime asked for tool {name!r} with "
                                 "arguments that are not valid JSON.")]
            if not isinstance(args, dict):
                args = {"value": args}
            return [StsEvent("tool_call", tool_call=LlmToolCall(id=call_id, name=name,
                                                               arguments=args))]
        if kind == "response.done":
            self._response_active = False
            self._response_id = ""
            resp = msg.get("response") or {}
            status = str(resp.get("status", "completed"))
            # the resampler holds back a few ms of filter delay: release the reply's last syllable
            tail = self._down.process(b"", last=True)
            self._down = StreamResampler(self._down.from_rate, self._down.to_rate)
            lead = [StsEvent("audio", audio=tail)] if tail and status == "completed" else []
            if status == "failed":
                detail = ((resp.get("status_details") or {}).get("error") or {})
                text = detail.get("message") if isinstance(detail, dict) else ""
                return [StsEvent("error", text=f"OpenAI Realtime response failed: "
                                 f"{text or 'no reason given'}.", data={"status": status}),
                        StsEvent("done", data={"status": status})]
            return [*lead, StsEvent("done", data={"status": status})]
        if kind == "error":
            err = msg.get("error") or {}
            code = err.get("code") if isinstance(err, dict) else ""
            if code == "response_cancel_not_active":
                return []  # our cancel raced the end of the response: harmless
            return [StsEvent("error", text=f"OpenAI Realtime reported: {_err_text(msg)}.",
                             data={"code": code or ""})]
        return []

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._ws.close()
        await cancel_and_wait(self._reader)
