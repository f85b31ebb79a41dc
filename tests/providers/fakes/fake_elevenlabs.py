"""Fake ElevenLabs stream-input WebSocket, per ElevenLabs' TTS WebSocket reference.

`/v1/text-to-speech/{voice_id}/stream-input?model_id=...&output_format=...`; the `xi-api-key`
header is checked *after* the upgrade like the real service: a bad key gets `{"message":
"Invalid API key", "error": "invalid_api_key", "code": 1008}` and close 1008. The first message
must be `{"text": " ", "voice_settings": ...}`; later text is buffered and spoken when a chunk
carries `flush: true` or when the closing `{"text": ""}` arrives. Audio is `ms_per_word` of tone
per word in the requested `output_format` (`ulaw_8000` μ-law, or `pcm_<rate>`), as `{"audio":
<base64>, "isFinal": null, "normalizedAlignment": {...}}`; the end is `{"isFinal": true}` and a
normal close.

Service rule (https://help.elevenlabs.io/hc/en-us/articles/28084868106513 and the WebSocket
reference's `inactivity_timeout` query parameter, default 20 s, at most 180): the connection
closes after that long without new text; a single space `" "` keeps it open (an empty string
would end the input). The fake sends `{"message": "Have not received new text for 20 seconds.
Closing connection.", "error": "input_timeout_exceeded", "code": 1008}` and closes 1008 after
`inactivity_timeout` (the query value, else `inactivity_s`) without a text message. The exact
payload of this close is not published; the shape is the service's error message shape.

Faults: `http_500` (handshake), `drop` (TCP reset after the first audio), `stall`, `malformed`,
`quota` (error message `quota_exceeded` then close 1008).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from .base import FakeWsServer, tone_pcm

_SEGMENT_ENDS = np.array([0x100, 0x200, 0x400, 0x800, 0x1000, 0x2000, 0x4000])


def pcm_to_ulaw_reference(pcm: bytes) -> bytes:
    """G.711 μ-law encoder written from the standard's segment table (independent of the
    client's lookup table, so a test comparing the two means something)."""
    s = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int32)
    sign = np.where(s < 0, 0x80, 0)
    mag = np.minimum(np.abs(s), 32635) + 0x84
    exp = np.searchsorted(_SEGMENT_ENDS, mag, side="right")  # segment 0..7
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


class FakeElevenLabs(FakeWsServer):
    def __init__(self, *, ms_per_word: float = 200.0, chunk_ms: float = 100.0,
                 first_audio_s: float = 0.0, chunk_s: float = 0.0, inactivity_s: float = 20.0,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.inactivity_s = inactivity_s
        self.inactivity_closes = 0
        self.ms_per_word = ms_per_word
        self.chunk_ms = chunk_ms
        self.first_audio_s = first_audio_s
        self.chunk_s = chunk_s
        self.params: dict[str, list[str]] = {}
        self.texts: list[str] = []  # what was spoken, per flush

    @property
    def url(self) -> str:
        return self.ws_url

    def auth_ok(self, request: Request) -> bool:
        return True  # checked after the upgrade, as the real service does

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.params = parse_qs(urlsplit(ws.request.path).query)
        fmt = self.params.get("output_format", ["mp3_44100_128"])[0]
        if ws.request.headers.get("xi-api-key") != self.api_key or self.fault == "quota":
            err, text = (("quota_exceeded", "You have exceeded your quota")
                         if self.fault == "quota" else ("invalid_api_key", "Invalid API key"))
            await ws.send(json.dumps({"message": text, "error": err, "code": 1008}))
            await self.close_and_drain(ws, 1008, err)
            return
        limit = float(self.params.get("inactivity_timeout", [self.inactivity_s])[0])
        last = [time.monotonic()]
        watch = asyncio.create_task(self._inactivity(ws, last, limit))
        try:
            await self._serve(ws, fmt, last)
        finally:
            watch.cancel()

    async def _inactivity(self, ws: ServerConnection, last: list[float], limit: float) -> None:
        while True:
            wait = last[0] + limit - time.monotonic()
            if wait <= 0:
                self.inactivity_closes += 1
                await ws.send(json.dumps({
                    "message": f"Have not received new text for {limit:g} seconds. Closing "
                               "connection.", "error": "input_timeout_exceeded", "code": 1008}))
                await self.close_and_drain(ws, 1008, "input_timeout_exceeded")
                return
            await asyncio.sleep(wait)

    async def _serve(self, ws: ServerConnection, fmt: str, last: list[float]) -> None:
        first = True
        buffered = ""
        sent_audio = False
        async for raw in ws:
            last[0] = time.monotonic()
            msg = json.loads(raw)
            self.received.append(msg)
            if first:
                first = False
                if msg.get("text") != " " or "voice_settings" not in msg:
                    await ws.send(json.dumps({"message": "first message must be the "
                                              "initialisation", "error": "bad_init",
                                              "code": 1008}))
                    await self.close_and_drain(ws, 1008, "bad_init")
                    return
                continue
            text = msg.get("text", "")
            buffered += text
            closing = text == ""
            if (msg.get("flush") or closing) and buffered.strip():
                if self.fault == "stall":
                    continue
                if self.fault == "malformed":
                    await ws.send("not json at all")
                    continue
                self.texts.append(buffered.strip())
                await self._speak(ws, buffered, fmt, first_chunk=not sent_audio)
                sent_audio = True
                buffered = ""
            if closing and self.fault != "stall":
                await ws.send(json.dumps({"isFinal": True}))
                await self.close_and_drain(ws, 1000)
                return

    async def _speak(self, ws: ServerConnection, text: str, fmt: str, first_chunk: bool) -> None:
        rate = int(fmt.split("_")[1])
        pcm = tone_pcm(len(text.split()) * self.ms_per_word, rate)
        step = int(rate * self.chunk_ms / 1000) * 2
        for i in range(0, len(pcm), step):
            await self.sleep(self.first_audio_s if first_chunk else self.chunk_s)
            first_chunk = False
            piece = pcm[i:i + step]
            data = pcm_to_ulaw_reference(piece) if fmt.startswith("ulaw") else piece
            await ws.send(json.dumps({"audio": base64.b64encode(data).decode(), "isFinal": None,
                                      "normalizedAlignment": {"chars": list(text[:3]),
                                                              "charStartTimesMs": [0, 10, 20],
                                                              "charDurationsMs": [10, 10, 10]}}))
            if self.fault == "drop":
                self.drop(ws)
                return
