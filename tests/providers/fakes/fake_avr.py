"""Fake AVR provider services, in the formats AVR Core uses (agentvoiceresponse repositories).

HTTP (one aiohttp app):
- `POST /speech-to-text-stream`: raw 8 kHz s16le PCM streamed in the request body; every
  `bytes_per_utterance` the next scripted transcript is written to the response as plain text.
- `POST /prompt-stream`: JSON `{"messages", "uuid"}` (both required, 400 otherwise, like
  avr-llm-openai); the reply is JSON objects written back to back: `{"type": "text", "content"}`.
- `POST /text-to-speech-stream`: JSON `{"text"}` (400 if missing); the reply is raw 8 kHz s16le
  PCM in 320-byte writes (`Content-Type: audio/basic`, as avr-tts-elevenlabs sends it).
WebSocket (`sts_url`): `init {uuid}`, then `audio {audio: base64}`; every `bytes_per_utterance`:
`transcript` (user), `audio` chunks, `transcript` (agent); audio arriving while it speaks gets
`interruption`. A scripted `{"tool": name, "parameters": {...}}` sends a `tool_invocation`.

Faults: `http_500`, `drop`, `stall`, `malformed` (HTTP routes); for STS, `sts_error` (an `error`
message), `drop`, `malformed`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from .base import FakeHttpServer, FakeWsServer, tone_pcm


class _FakeAvrSts(FakeWsServer):
    def __init__(self, owner: FakeAvr) -> None:
        super().__init__()
        self.owner = owner

    def auth_ok(self, request: Request) -> bool:
        return True

    async def handler(self, ws: ServerConnection) -> None:
        o = self.owner
        pending = 0
        speaking: asyncio.Task[None] | None = None
        turn = 0
        async for raw in ws:
            msg = json.loads(raw)
            o.sts_received.append({k: v for k, v in msg.items() if k != "audio"})
            if msg.get("type") == "init":
                o.sts_uuid = msg.get("uuid", "")
            elif msg.get("type") == "tool_result":
                o.tool_results.append(msg)
            elif msg.get("type") == "audio":
                pending += len(base64.b64decode(msg["audio"]))
                if speaking is not None and not speaking.done():
                    speaking.cancel()
                    await ws.send(json.dumps({"type": "interruption"}))
                    pending = 0
                    continue
                if pending >= o.bytes_per_utterance:
                    pending = 0
                    item = o.sts_script[turn % len(o.sts_script)]
                    turn += 1
                    speaking = asyncio.create_task(self._reply(ws, item))

    async def _reply(self, ws: ServerConnection, item: Any) -> None:
        o = self.owner
        try:
            await ws.send(json.dumps({"type": "transcript", "role": "user",
                                      "text": o.transcripts[0]}))
            if o.fault == "sts_error":
                await ws.send(json.dumps({"type": "error", "message": "provider failed"}))
                return
            if isinstance(item, dict):
                await ws.send(json.dumps({"type": "tool_invocation", "toolName": item["tool"],
                                          "invocationId": "inv_1",
                                          "parameters": item.get("parameters", {})}))
                return
            pcm = tone_pcm(o.ms_per_word * len(item.split()), 8000)
            for i in range(0, len(pcm), 1600):
                await o.sleep(o.chunk_s)
                if o.fault == "malformed":
                    await ws.send("nope")
                    return
                await ws.send(json.dumps({"type": "audio",
                                          "audio": base64.b64encode(pcm[i:i + 1600]).decode()}))
                if o.fault == "drop":
                    self.drop(ws)
                    return
            await ws.send(json.dumps({"type": "transcript", "role": "agent", "text": item}))
        except Exception:
            pass


class FakeAvr(FakeHttpServer):
    def __init__(self, transcripts: list[str] | None = None, replies: list[str] | None = None,
                 sts_script: list[Any] | None = None, *, bytes_per_utterance: int = 8000,
                 ms_per_word: float = 200.0, first_token_s: float = 0.0,
                 first_audio_s: float = 0.0, chunk_s: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.transcripts = list(transcripts or ["hello"])
        self.replies = list(replies or ["Hello there."])
        self.sts_script = list(sts_script or ["Hello from speech to speech."])
        self.bytes_per_utterance = bytes_per_utterance
        self.ms_per_word = ms_per_word
        self.first_token_s = first_token_s
        self.first_audio_s = first_audio_s
        self.chunk_s = chunk_s
        self.asr_bytes = 0
        self.sts_received: list[dict[str, Any]] = []
        self.sts_uuid = ""
        self.tool_results: list[dict[str, Any]] = []
        self._sts = _FakeAvrSts(self)
        self._reply_i = 0

    async def start(self) -> FakeAvr:
        await super().start()
        await self._sts.start()
        return self

    async def stop(self) -> None:
        await self._sts.stop()
        await super().stop()

    @property
    def asr_url(self) -> str:
        return self.base_url + "/speech-to-text-stream"

    @property
    def llm_url(self) -> str:
        return self.base_url + "/prompt-stream"

    @property
    def tts_url(self) -> str:
        return self.base_url + "/text-to-speech-stream"

    @property
    def sts_url(self) -> str:
        return self._sts.ws_url

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/speech-to-text-stream", self.asr)
        app.router.add_post("/prompt-stream", self.llm)
        app.router.add_post("/text-to-speech-stream", self.tts)

    async def asr(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"route": "asr", "headers": dict(request.headers)})
        fault = self.take_fault()
        if fault == "http_500":
            return web.json_response({"message": "Error receiving audio stream"}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pending, i = 0, 0
        async for chunk in request.content.iter_any():
            self.asr_bytes += len(chunk)
            pending += len(chunk)
            if fault == "stall":
                continue
            if pending >= self.bytes_per_utterance:
                pending = 0
                await resp.write(self.transcripts[i % len(self.transcripts)].encode())
                i += 1
                if fault == "drop":
                    self.drop(request)
                    return resp
        await resp.write_eof()
        return resp

    async def llm(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"route": "llm", "body": body})
        if not body.get("messages"):
            return web.json_response({"message": "Messages is required"}, status=400)
        if not body.get("uuid"):
            return web.json_response({"message": "UUID is required"}, status=400)
        fault = self.take_fault()
        if fault == "http_500":
            return web.json_response({"message": "Error communicating with OpenAI"}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if fault == "stall":
            await asyncio.sleep(3600)
        await self.sleep(self.first_token_s)
        reply = self.replies[self._reply_i % len(self.replies)]
        self._reply_i += 1
        if fault == "malformed":
            await resp.write(b"Sorry, I crashed")
        else:
            await resp.write(json.dumps({"type": "text", "content": reply}).encode())
        if fault == "drop":
            await resp.write(b'{"type": "text", "con')
            self.drop(request)
            return resp
        await resp.write_eof()
        return resp

    async def tts(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"route": "tts", "body": body})
        if not body.get("text"):
            return web.json_response({"message": "Text is required"}, status=400)
        fault = self.take_fault()
        if fault == "http_500":
            return web.json_response({"message": "Error processing text-to-speech request"},
                                     status=500)
        resp = web.StreamResponse(headers={"Content-Type": "audio/basic"})
        await resp.prepare(request)
        if fault == "stall":
            await asyncio.sleep(3600)
        await self.sleep(self.first_audio_s)
        pcm = tone_pcm(self.ms_per_word * len(body["text"].split()), 8000)
        for i in range(0, len(pcm), 320):
            await resp.write(pcm[i:i + 320])
            if fault == "drop" and i >= 3200:
                self.drop(request)
                return resp
        await resp.write_eof()
        return resp
