"""Fake OpenAI Realtime WebSocket (`/v1/realtime?model=...`), per the Realtime API reference.

Checks `Authorization: Bearer <key>` on the handshake. Sends `session.created` first; answers
`session.update` with `session.updated` (rejecting unsupported audio formats with an `error`
event). Audio arrives as `input_audio_buffer.append` (base64, in the session's format). With
server VAD, each `bytes_per_turn` of caller audio is one turn: `input_audio_buffer.speech_started`,
`speech_stopped`, `committed`, `conversation.item.input_audio_transcription.completed`, then a
response. Without VAD, `input_audio_buffer.commit` + `response.create` do the same.

A response is the next scripted item: a string (spoken: `response.created`,
`response.output_item.added`, `response.output_audio.delta`×n interleaved with
`response.output_audio_transcript.delta` (the words spread over the audio chunks), `.done`,
`response.done`; a cancelled response sends no `.done`) or `{"tool": name, "arguments":
{...}}` (a function call:
`response.output_item.added` with the function_call item, `response.function_call_arguments.delta`
/`.done`, `response.done`). After `conversation.item.create` (function_call_output) the client's
`response.create` gets the next scripted item. Caller audio during a spoken response is a
barge-in: `speech_started`, the response ends with status `cancelled`. `response.cancel` with no
active response gets the documented `response_cancel_not_active` error.

Script items may also be `{"say": text, "tool": name, "arguments": {...}}` (the model speaks,
then calls the function, in one response — how a model announces a transfer) and may set
`audio_ms` for that response. `response.create` may carry `response.instructions` (kept in
`response_instructions`).

`turns="energy"` (whole calls, where the caller streams silence all the time): server VAD like
the real one — loud audio starts speech (`speech_started`; a response in progress is cancelled,
as `interrupt_response` does), `silence_duration_ms` of quiet (from the session config) ends the
turn. The default `turns="bytes"` counts `bytes_per_turn` of any audio as a turn (unit tests).

Items: each caller turn is a user item `item_in<n>` (`speech_started/stopped`, transcription
carry it; `speech_stopped.audio_end_ms` is the milliseconds of input audio received so far);
each spoken response is an assistant item `item_out<n>`, and the fake keeps how many ms of audio
it sent for it (`item_audio_ms`). `conversation.item.truncate {item_id, content_index,
audio_end_ms}` is checked as the reference says — an assistant item that exists, `content_index`
0, `audio_end_ms` not beyond the audio sent (else an `invalid_value` error) — recorded in
`truncations` and answered with `conversation.item.truncated`. Every `response.cancel` is kept
in `cancel_requests` (with whether a response was in progress). The energy VAD only cancels a
response on `speech_started` when the session's `interrupt_response` is true (the default).

Faults: `http_429`, `http_500` (handshake), `stall` (never sends session.created), `drop` (TCP
reset after the first audio delta of a response after the first `fault_after` responses),
`malformed`, `error_event` (a recoverable `error` event after the first response),
`refuse_session` (`error` instead of `session.updated`).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from .base import FakeWsServer, tone_pcm
from .fake_elevenlabs import pcm_to_ulaw_reference

FORMATS = {"audio/pcmu": 8000, "audio/pcma": 8000, "audio/pcm": 24000}


class FakeOpenAIRealtime(FakeWsServer):
    path_prefix = "/v1/realtime"

    def __init__(self, script: list[Any] | None = None, *, user_transcripts: list[str] | None
                 = None, bytes_per_turn: int = 4000, audio_ms: float = 400.0,
                 chunk_ms: float = 100.0, first_audio_s: float = 0.0, chunk_s: float = 0.0,
                 turns: str = "bytes", fault_after: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.turns = turns
        self.fault_after = fault_after
        self.response_instructions: list[str] = []
        self.script = list(script or ["Hello, how can I help?"])
        self.user_transcripts = list(user_transcripts or ["hello"])
        self.bytes_per_turn = bytes_per_turn
        self.audio_ms = audio_ms
        self.chunk_ms = chunk_ms
        self.first_audio_s = first_audio_s
        self.chunk_s = chunk_s
        self.session: dict[str, Any] = {}
        self.audio_in = 0
        self.tool_outputs: list[dict[str, Any]] = []
        self.cancelled_responses = 0
        self.responses = 0
        self.item_audio_ms: dict[str, float] = {}  # assistant item id -> ms of audio sent
        self.truncations: list[dict[str, Any]] = []
        self.truncate_errors: list[str] = []
        self.cancel_requests: list[dict[str, Any]] = []
        self._dropped = False

    @property
    def url(self) -> str:
        return self.ws_url

    def auth_ok(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def handler(self, ws: ServerConnection) -> None:
        if self.fault == "stall":
            await asyncio.sleep(3600)
        self._ev = 0
        self._active: asyncio.Task[None] | None = None
        self._script_i = 0
        self._turn_i = 0
        self._in_speech = False
        self._quiet_ms = 0.0
        await self._send(ws, "session.created", session={"id": "sess_fake", "type": "realtime"})
        pending = 0
        async for raw in ws:
            msg = json.loads(raw)
            self.received.append(msg)
            kind = msg.get("type")
            if kind == "session.update":
                if self.fault == "refuse_session":
                    await self._error(ws, "invalid_request_error", "invalid_api_key",
                                      "This key may not use realtime models")
                    continue
                sess = msg.get("session", {})
                fmt = (((sess.get("audio") or {}).get("input") or {}).get("format") or {})
                if fmt and fmt.get("type") not in FORMATS:
                    await self._error(ws, "invalid_request_error", "invalid_value",
                                      f"Invalid audio format {fmt.get('type')!r}")
                    continue
                if fmt.get("type") == "audio/pcm" and fmt.get("rate", 24000) != 24000:
                    await self._error(ws, "invalid_request_error", "invalid_value",
                                      "Only a 24kHz sample rate is supported")
                    continue
                self.session.update(sess)
                await self._send(ws, "session.updated", session=self.session)
            elif kind == "input_audio_buffer.append":
                data = base64.b64decode(msg["audio"])
                self.audio_in += len(data)
                pending += len(data)
                vad = self._audio_in_cfg().get("turn_detection") is not None
                if vad and self.turns == "energy":
                    await self._energy_vad(ws, data)
                    continue
                if vad and pending >= self.bytes_per_turn:
                    pending = 0
                    barge = self._active is not None and not self._active.done()
                    await self._send(ws, "input_audio_buffer.speech_started",
                                     audio_start_ms=0, item_id=self._in_item())
                    if barge:
                        self._active.cancel()  # type: ignore[union-attr]
                        continue
                    await self._user_turn(ws)
                    await self._start_response(ws)
            elif kind == "input_audio_buffer.commit":
                pending = 0
                await self._user_turn(ws)
            elif kind == "response.create":
                instructions = (msg.get("response") or {}).get("instructions")
                if instructions:
                    self.response_instructions.append(str(instructions))
                await self._start_response(ws)
            elif kind == "response.cancel":
                active = self._active is not None and not self._active.done()
                self.cancel_requests.append({**msg, "was_active": active})
                if active:
                    self._active.cancel()  # type: ignore[union-attr]
                else:
                    await self._error(ws, "invalid_request_error", "response_cancel_not_active",
                                      "Cancellation failed: no active response found")
            elif kind == "conversation.item.truncate":
                await self._truncate(ws, msg)
            elif kind == "conversation.item.create":
                item = msg.get("item", {})
                if item.get("type") == "function_call_output":
                    self.tool_outputs.append(item)
                await self._send(ws, "conversation.item.added", item=item)

    async def _energy_vad(self, ws: ServerConnection, data: bytes) -> None:
        cfg = self._audio_in_cfg()
        kind = (cfg.get("format") or {}).get("type", "audio/pcm")
        rate = FORMATS.get(kind, 24000)
        pcm = ulaw_to_pcm_reference(data) if kind == "audio/pcmu" else data
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(float)
        loud = bool(samples.size and np.sqrt(np.mean(samples ** 2)) > 500)
        silence_ms = float((cfg.get("turn_detection") or {}).get("silence_duration_ms", 500))
        if loud:
            self._quiet_ms = 0.0
            if not self._in_speech:
                self._in_speech = True
                await self._send(ws, "input_audio_buffer.speech_started", audio_start_ms=0,
                                 item_id=self._in_item())
                td = cfg.get("turn_detection") or {}
                if (td.get("interrupt_response", True) and self._active is not None
                        and not self._active.done()):
                    self._active.cancel()  # interrupt_response
            return
        if self._in_speech:
            self._quiet_ms += samples.size * 1000 / rate
            if self._quiet_ms >= silence_ms:
                self._in_speech = False
                self._quiet_ms = 0.0
                await self._user_turn(ws)
                await self._start_response(ws)

    def _in_item(self) -> str:
        return f"item_in{self._turn_i + 1}"

    def _in_ms(self) -> int:
        kind = (self._audio_in_cfg().get("format") or {}).get("type", "audio/pcm")
        rate = FORMATS.get(kind, 24000)
        width = 1 if kind in ("audio/pcmu", "audio/pcma") else 2
        return int(self.audio_in * 1000 / (rate * width))

    async def _truncate(self, ws: ServerConnection, msg: dict[str, Any]) -> None:
        item_id = msg.get("item_id")
        index = msg.get("content_index")
        end = msg.get("audio_end_ms")
        sent = self.item_audio_ms.get(str(item_id))
        problem = ""
        if not isinstance(item_id, str) or sent is None:
            problem = f"Item with item_id '{item_id}' not found or not an assistant message"
        elif index != 0:
            problem = "content_index must be 0"
        elif not isinstance(end, int) or isinstance(end, bool) or end < 0:
            problem = "audio_end_ms must be a non-negative integer"
        elif end > sent:
            problem = (f"Audio content of {sent:.0f}ms is already shorter than "
                       f"{end}ms")
        if problem:
            self.truncate_errors.append(problem)
            await self._error(ws, "invalid_request_error", "invalid_value", problem)
            return
        self.truncations.append({"item_id": item_id, "content_index": index,
                                 "audio_end_ms": end, "audio_sent_ms": sent})
        await self._send(ws, "conversation.item.truncated", item_id=item_id,
                         content_index=index, audio_end_ms=end)

    def _audio_in_cfg(self) -> dict[str, Any]:
        return (self.session.get("audio") or {}).get("input") or {}

    async def _send(self, ws: ServerConnection, kind: str, **fields: Any) -> None:
        self._ev += 1
        await ws.send(json.dumps({"type": kind, "event_id": f"event_{self._ev}", **fields}))

    async def _error(self, ws: ServerConnection, etype: str, code: str, message: str) -> None:
        await self._send(ws, "error", error={"type": etype, "code": code, "message": message,
                                             "param": None, "event_id": None})

    async def _user_turn(self, ws: ServerConnection) -> None:
        text = self.user_transcripts[self._turn_i % len(self.user_transcripts)]
        item_id = self._in_item()
        self._turn_i += 1
        await self._send(ws, "input_audio_buffer.speech_stopped", audio_end_ms=self._in_ms(),
                         item_id=item_id)
        await self._send(ws, "input_audio_buffer.committed", item_id=item_id)
        await self._send(ws, "conversation.item.input_audio_transcription.completed",
                         item_id=item_id, content_index=0, transcript=text)

    async def _start_response(self, ws: ServerConnection) -> None:
        item = self.script[self._script_i % len(self.script)]
        self._script_i += 1
        self.responses += 1
        rid = f"resp_{self.responses}"
        await self._send(ws, "response.created", response={"id": rid, "status": "in_progress"})
        self._active = asyncio.create_task(self._respond(ws, item, rid))

    async def _respond(self, ws: ServerConnection, item: Any, rid: str) -> None:
        try:
            await asyncio.sleep(0)  # a cancel before the first byte still ends the response
            if isinstance(item, str):
                await self._speak(ws, rid, item)
            else:
                if item.get("say"):
                    await self._speak(ws, rid, item["say"], item.get("audio_ms"))
                    if self._dropped:
                        return
            if not isinstance(item, str) and item.get("tool"):
                call_id = f"call_{self.responses}"
                fitem = {"id": f"item_fc{self.responses}", "type": "function_call",
                         "name": item["tool"], "call_id": call_id, "arguments": ""}
                await self._send(ws, "response.output_item.added", response_id=rid,
                                 output_index=0, item=fitem)
                args = json.dumps(item.get("arguments", {}))
                await self._send(ws, "response.function_call_arguments.delta", response_id=rid,
                                 item_id=fitem["id"], call_id=call_id, delta=args)
                await self._send(ws, "response.function_call_arguments.done", response_id=rid,
                                 item_id=fitem["id"], call_id=call_id, name=item["tool"],
                                 arguments=args)
            await self._send(ws, "response.done", response={"id": rid, "status": "completed"})
            if self.fault == "error_event":
                await self._error(ws, "server_error", "server_error", "The server had an error "
                                  "while processing your request")
        except asyncio.CancelledError:
            self.cancelled_responses += 1
            await self._send(ws, "response.done", response={"id": rid, "status": "cancelled"})
        except Exception:  # client gone
            pass

    async def _speak(self, ws: ServerConnection, rid: str, text: str,
                     audio_ms: float | None = None) -> None:
        fmt = ((self.session.get("audio") or {}).get("output") or {}).get("format") or {}
        kind = fmt.get("type", "audio/pcm")
        rate = FORMATS.get(kind, 24000)
        pcm = tone_pcm(audio_ms or self.audio_ms, rate)
        step = int(rate * self.chunk_ms / 1000) * 2
        item_id = f"item_out{self.responses}"
        self.item_audio_ms[item_id] = 0.0
        await self._send(ws, "response.output_item.added", response_id=rid, output_index=0,
                         item={"id": item_id, "type": "message", "role": "assistant"})
        words = text.split(" ")
        chunks = max(1, -(-len(pcm) // step))
        first = True
        for n, i in enumerate(range(0, len(pcm), step)):
            await self.sleep(self.first_audio_s if first else self.chunk_s)
            first = False
            piece = pcm[i:i + step]
            wire = pcm_to_ulaw_reference(piece) if kind == "audio/pcmu" else piece
            if self.fault == "malformed":
                await ws.send("{{{")
                return
            await self._send(ws, "response.output_audio.delta", response_id=rid,
                             item_id=item_id, output_index=0, content_index=0,
                             delta=base64.b64encode(wire).decode())
            self.item_audio_ms[item_id] += len(piece) / 2 * 1000 / rate
            if self.fault == "drop" and self.responses > self.fault_after:
                self._dropped = True
                self.drop(ws)
                return
            # the transcript streams alongside the audio, as the real service's does
            for word in words[len(words) * n // chunks: len(words) * (n + 1) // chunks]:
                await self._send(ws, "response.output_audio_transcript.delta",
                                 response_id=rid, item_id=item_id, delta=word + " ")
        await self._send(ws, "response.output_audio_transcript.done", response_id=rid,
                         item_id=item_id, transcript=text)


def ulaw_to_pcm_reference(data: bytes) -> bytes:
    """G.711 μ-law decoder from the standard's formula (independent of the client's table)."""
    u = (~np.frombuffer(data, dtype=np.uint8)).astype(np.int32) & 0xFF
    exp = (u >> 4) & 0x07
    mag = (((u & 0x0F) << 3) + 0x84) << exp
    s = np.where(u & 0x80, -(mag - 0x84), mag - 0x84)
    return s.astype("<i2").tobytes()
