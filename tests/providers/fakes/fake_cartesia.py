"""Fake Cartesia TTS WebSocket (`/tts/websocket`), per Cartesia's WebSocket reference.

Checks `X-API-Key` and `Cartesia-Version` headers on the handshake (401 otherwise). Each
generation request must carry `model_id`, `voice {mode, id}`, `context_id`, `output_format
{container: raw, encoding, sample_rate}`. Input on one context is spoken as it arrives (like
continuations); a message with `continue: false` ends the context with `done`. Audio is
`ms_per_word` of tone per word at the requested rate, in `chunk_ms` chunks, as `{"type": "chunk",
"data": <base64>, "done": false, "status_code": 206, "context_id"}`. `{"context_id", "cancel":
true}` stops a context (no more chunks for it). Contexts are independent (multiplexing).

Service rules the fake enforces (Cartesia's docs):
- https://docs.cartesia.ai/api-reference/tts/websocket — a generation request carries
  `model_id`, `transcript`, `voice`, `context_id` and `output_format`; a missing one is answered
  with an `error` message for the context (`{"type": "error", "context_id", "status_code": 400,
  "done": true, "title", "message"}`).
- https://docs.cartesia.ai/use-the-api/tts-websocket/contexts — "Inputs on the same context must
  keep all fields except transcript, continue, and duration the same"; "Contexts automatically
  expire 1 second after the last audio output is streamed out. Attempting to send another input
  on the same context ID after expiry is not supported." The fake expires a context
  `context_expiry_s` (1 s) after its last audio when no input is pending, answers the expiry
  with `done` (the official SDKs treat an unrequested `done` as the end of a context), and
  refuses any later input on it with an `error` ("not supported" made loud: the service's exact
  answer is not documented).
- https://docs.cartesia.ai/use-the-api/tts-websocket/context-flushing-and-flush-i-ds — an input
  with `flush: true` (empty transcript, `continue: true`) is answered, once the audio for all
  earlier input on the context is out, by `{"type": "flush_done", "context_id", "flush_id",
  "flush_done": true, "done": false}`; chunks carry the `flush_id` they belong to.
`rejected` lists the error messages sent for broken input.

Faults: `http_429`, `http_500`, `error` (an `error` message for the context: invalid voice),
`drop` (TCP reset after the first chunk), `stall` (accepts input, never answers), `malformed`
(non-JSON frame), `bad_audio` (chunk whose data is not base64).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from .base import FakeWsServer, tone_pcm

REQUIRED = ("model_id", "transcript", "voice", "context_id", "output_format")
#: fields every input on one context must repeat unchanged
SAME = ("model_id", "voice", "output_format", "language")


class FakeCartesia(FakeWsServer):
    path_prefix = "/tts/websocket"

    def __init__(self, *, ms_per_word: float = 200.0, chunk_ms: float = 40.0,
                 first_audio_s: float = 0.0, chunk_s: float = 0.0,
                 context_expiry_s: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.ms_per_word = ms_per_word
        self.chunk_ms = chunk_ms
        self.first_audio_s = first_audio_s
        self.chunk_s = chunk_s
        self.context_expiry_s = context_expiry_s
        self.cancelled: set[str] = set()
        self.voiced: set[str] = set()  # contexts whose first audio has been sent
        self.done_contexts: list[str] = []
        self.expired: list[str] = []
        self.flushes: list[str] = []  # context of each flush_done sent
        self.transcripts: dict[str, list[str]] = {}
        self.rejected: list[str] = []

    @property
    def url(self) -> str:
        return self.ws_url

    def auth_ok(self, request: Request) -> bool:
        return (request.headers.get("X-API-Key") == self.api_key
                and bool(request.headers.get("Cartesia-Version")))

    async def _refuse(self, ws: ServerConnection, ctx: str, message: str,
                      title: str = "Invalid request") -> None:
        self.rejected.append(message)
        await ws.send(json.dumps({"type": "error", "done": True, "context_id": ctx,
                                  "status_code": 400, "title": title, "message": message}))

    async def handler(self, ws: ServerConnection) -> None:
        tails: dict[str, asyncio.Task[None]] = {}  # per-context: generation chained in order
        first_input: dict[str, dict[str, Any]] = {}
        closed: set[str] = set()  # contexts that ended (done) or expired
        flush_ids: dict[str, int] = {}
        expiry: dict[str, asyncio.Task[None]] = {}
        try:
            async for raw in ws:
                msg = json.loads(raw)
                self.received.append(msg)
                ctx = str(msg.get("context_id", ""))
                if msg.get("cancel"):
                    self.cancelled.add(ctx)
                    continue
                missing = [k for k in REQUIRED if k not in msg]
                if missing:
                    await self._refuse(ws, ctx, f"missing {', '.join(missing)}")
                    continue
                if ctx in closed:
                    await self._refuse(ws, ctx, f"context {ctx} has expired or is done; "
                                       "inputs on it are not accepted")
                    continue
                first = first_input.setdefault(ctx, msg)
                changed = [k for k in SAME if msg.get(k) != first.get(k)]
                if changed:
                    await self._refuse(ws, ctx, "inputs on one context must keep the same "
                                       f"{', '.join(changed)}")
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
                timer = expiry.pop(ctx, None)
                if timer is not None:
                    timer.cancel()
                if not msg.get("continue"):
                    closed.add(ctx)
                flush_id = flush_ids.get(ctx, 1)  # audio before the first flush is flush 1
                if msg.get("flush"):
                    flush_ids[ctx] = flush_id + 1
                self.transcripts.setdefault(ctx, []).append(msg.get("transcript", ""))
                prev = tails.get(ctx)
                tail = asyncio.create_task(self._speak(ws, msg, prev, flush_id))
                tails[ctx] = tail
                if msg.get("continue"):
                    expiry[ctx] = asyncio.create_task(self._expire(ws, ctx, tail, closed))
        finally:
            for task in expiry.values():
                task.cancel()

    async def _expire(self, ws: ServerConnection, ctx: str, tail: asyncio.Task[None],
                      closed: set[str]) -> None:
        """The context lapses `context_expiry_s` after its last audio (no newer input)."""
        with contextlib.suppress(Exception):
            await asyncio.shield(tail)
        await asyncio.sleep(self.context_expiry_s)
        if ctx in closed or ctx in self.cancelled:
            return
        closed.add(ctx)
        self.expired.append(ctx)
        with contextlib.suppress(Exception):
            await ws.send(json.dumps({"type": "done", "done": True, "status_code": 206,
                                      "context_id": ctx}))

    async def _speak(self, ws: ServerConnection, msg: dict[str, Any],
                     prev: asyncio.Task[None] | None, flush_id: int) -> None:
        try:
            await self._speak_now(ws, msg, prev, flush_id)
        except Exception:  # the client went away mid-utterance
            pass

    async def _speak_now(self, ws: ServerConnection, msg: dict[str, Any],
                         prev: asyncio.Task[None] | None, flush_id: int) -> None:
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
                                      "context_id": ctx, "flush_id": flush_id}))
            if self.fault == "drop":
                self.drop(ws)
                return
            first = False
        if msg.get("flush") and ctx not in self.cancelled:
            self.flushes.append(ctx)
            await ws.send(json.dumps({"type": "flush_done", "done": False, "flush_done": True,
                                      "flush_id": flush_id, "status_code": 206,
                                      "context_id": ctx}))
        if not msg.get("continue") and ctx not in self.cancelled:
            self.done_contexts.append(ctx)
            await ws.send(json.dumps({"type": "done", "done": True, "status_code": 206,
                                      "context_id": ctx}))
