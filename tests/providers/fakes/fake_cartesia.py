"""Fake Cartesia TTS WebSocket (`/tts/websocket`), per Cartesia's WebSocket reference.

Checks `X-API-Key` and `Cartesia-Version` headers on the handshake (401 otherwise). Each
generation request must carry `model_id`, `voice {mode, id}`, `context_id`, `output_format
{container: raw, encoding, sample_rate}`. Input on one context is spoken as it arrives (like
continuations); a message with `continue: false` ends the context with `done`. Audio is
`ms_per_word` of tone per word at the requested rate, in `chunk_ms` chunks, as `{"type": "chunk",
"data": <base64>, "done": false, "status_code": 206, "context_id"}`. `{"context_id", "cancel":
true}` stops a context (no more chunks for it). Contexts are independent (multiplexing).

Faults: `http_429`, `http_500`, `error` (an `error` message for the context: invalid voice),
`drop` (TCP reset after the first chunk), `stall` (accepts input, never answers), `malformed`
(non-JSON frame), `bad_audio` (chunk whose data is not base64).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from .base import FakeWsServer, tone_pcm

REQUIRED = ("model_id", "voice", "context_id", "output_format")


class FakeCartesia(FakeWsServer):
    path_prefix = "/tts/websocket"

    def __init__(self, *, ms_per_word: float = 200.0, chunk_ms: float = 40.0,
                 first_audio_s: float = 0.0, chunk_s: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.ms_per_word = ms_per_word
        self.chunk_ms = chunk_ms
        self.first_audio_s = first_audio_s
        self.chunk_s = chunk_s
        self.cancelled: set[str] = set()
        self.voiced: set[str] = set()  # contexts whose first audio has been sent
        self.done_contexts: list[str] = []
        self.transcripts: dict[str, list[str]] = {}

    @property
    def url(self) -> str:
        return self.ws_url

    def auth_ok(self, request: Request) -> bool:
        return (request.headers.get("X-API-Key") == self.api_key
                and bool(request.headers.get("Cartesia-Version")))

    async def handler(self, ws: ServerConnection) -> None:
        tails: dict[str, asyncio.Task[None]] = {}  # per-context: generation chained in order
        async for raw in ws:
            msg = json.loads(raw)
            self.received.append(msg)
            ctx = str(msg.get("context_id", ""))
            if msg.get("cancel"):
                self.cancelled.add(ctx)
                continue
            missing = [k for k in REQUIRED if k not in msg]
            if missing:
                await ws.send(json.dumps({"type": "error", "done": True, "context_id": ctx,
                                          "status_code": 400, "title": "Invalid request",
                                          "message": f"missing {', '.join(missing)}"}))
                continue
            if self.fault == "stall":
                continue
            if self.fault == "malformed":
                await ws.send("<html>oops</html>")
                continue
            if self.fault == "error":
                await ws.send(json.dumps({"type": "error", "done": True, "context_id": ctx,
                                          "status_code": 400, "title": "Invalid voice",
                                          "error_code": "voice_not_found",
                                          "message": "The voice id is not valid."}))
                continue
            self.transcripts.setdefault(ctx, []).append(msg.get("transcript", ""))
            prev = tails.get(ctx)
            tails[ctx] = asyncio.create_task(self._speak(ws, msg, prev))

    async def _speak(self, ws: ServerConnection, msg: dict[str, Any],
                     prev: asyncio.Task[None] | None) -> None:
        try:
            await self._speak_now(ws, msg, prev)
        except Exception:  # the client went away mid-utterance
            pass

    async def _speak_now(self, ws: ServerConnection, msg: dict[str, Any],
                         prev: asyncio.Task[None] | None) -> None:
        if prev is not None:
            await prev
        ctx = str(msg["context_id"])
        rate = int(msg["output_format"]["sample_rate"])
        words = len(str(msg.get("transcript", "")).split())
        pcm = tone_pcm(words * self.ms_per_word, rate)
        step = int(rate * self.chunk_ms / 1000) * 2
        first = True
        for i in range(0, len(pcm), step):
            if ctx in self.cancelled:
                return
            # the service's first-audio latency is paid once per context: continued input
            # is voiced as it arrives
            opened = first and ctx not in self.voiced
            self.voiced.add(ctx)
            await self.sleep(self.first_audio_s if opened else self.chunk_s)
            if ctx in self.cancelled:
                return
            data = ("%%%not-base64" if self.fault == "bad_audio"
                    else base64.b64encode(pcm[i:i + step]).decode())
            await ws.send(json.dumps({"type": "chunk", "data": data, "done": False,
                                      "status_code": 206, "step_time": 12.5,
                                      "context_id": ctx}))
            if self.fault == "drop":
                self.drop(ws)
                return
            first = False
        if not msg.get("continue") and ctx not in self.cancelled:
            self.done_contexts.append(ctx)
            await ws.send(json.dumps({"type": "done", "done": True, "status_code": 206,
                                      "context_id": ctx}))
