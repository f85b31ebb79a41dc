"""Fake Deepgram live streaming endpoint (`/v1/listen`), per Deepgram's streaming docs.

Protocol: `Authorization: Token <key>` on the handshake (401 otherwise); options in the query;
binary audio frames in; `Results` (interim, then `is_final`, the last with `speech_final`),
`SpeechStarted` (if `vad_events`), `UtteranceEnd` (if `utterance_end_ms`), `Metadata` out;
`KeepAlive` counted, `Finalize` answered with a `from_finalize` result, `CloseStream` answered with
`Metadata` then close 1000.

Each scripted transcript is "heard" once `bytes_per_utterance` of audio has arrived
(`turns="bytes"`, for unit tests), or — `turns="energy"`, for whole calls where silence streams
all the time — when loud audio is followed by `endpointing` ms of quiet, like the real
endpointer.

Interim results in `turns="energy"` mode follow Deepgram's "Interim Results" / "Using Interim
Results" docs: with `interim_results=true` the server sends `is_final: false` Results *while the
audio streams in*, each cumulative for the segment (same `start`, growing `duration`, the words
so far), then at the endpoint the `is_final` segments as before. The fake sends one after every
`interim_ms` of loud audio, with the words "spoken" so far: one word per `ms_per_word` of loud
audio (at least one), capped at the whole scripted text. The defaults are test-scale (a 300 ms
tone stands for a short sentence: interims at 100/200/300 ms, the whole text of up to 10 words
by 300 ms); real Deepgram sends them roughly every second of real speech. A larger
`ms_per_word` leaves the last interim short of the final (the recogniser had not caught up), as
happens for real. If no interim was streamed for an utterance (speech shorter than
`interim_ms`, or `interim_ms=0`), one is sent just before the finals, as in `turns="bytes"`.

Service rules the fake enforces (Deepgram's documentation):
- https://developers.deepgram.com/docs/audio-keep-alive — "If no audio data or KeepAlive
  messages are sent within a 10-second window, the connection will close with a NET-0001
  error": the fake closes with 1011 `NET-0001` after `idle_close_s` (10 s; tests shorten it)
  without a binary audio frame or a `KeepAlive` (other control messages do not count).
- https://developers.deepgram.com/docs/endpointing — `endpointing=false` turns endpointing off:
  `speech_final` is then never true; finals come from `Finalize`, or in `turns="energy"` mode
  after `utterance_end_ms` of quiet as `is_final` Results followed by `UtteranceEnd`.
- https://developers.deepgram.com/docs/keywords and /docs/keyterm — `keywords` is for Nova-2 and
  older; on a Nova-3 model the handshake is refused with HTTP 400 `{"err_code":
  "INVALID_QUERY_PARAMETER", "err_msg": "Keywords are not supported for Nova-3. Please use
  `keyterm` instead."}` (the service's answer as quoted in public reports).

Faults:
`http_429`, `http_500` (handshake), `drop` (TCP reset after the first interim), `stall` (never
answers), `malformed` (non-JSON text frame), `data_error` (close 1008 DATA-0000), `net_error`
(close 1011 NET-0000), `utterance_end` (finals without speech_final, then UtteranceEnd).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from .base import FakeWsServer


class FakeDeepgram(FakeWsServer):
    path_prefix = "/v1/listen"

    def __init__(self, transcripts: list[str] | None = None, *, bytes_per_utterance: int = 8000,
                 latency_s: float = 0.0, turns: str = "bytes", interim_ms: float = 100.0,
                 ms_per_word: float = 30.0, idle_close_s: float = 10.0,
                 finalize_latency_s: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        #: how long the answer to `Finalize` takes (the rest of the audio being recognised)
        self.finalize_latency_s = finalize_latency_s
        self.idle_close_s = idle_close_s
        self.idle_closes = 0  # streams closed with NET-0001
        self.turns = turns
        self.interim_ms = interim_ms
        self.ms_per_word = ms_per_word
        self.interims: list[str] = []  # interim transcripts streamed during speech (energy mode)
        self.transcripts = list(transcripts or ["hello there"])
        self.bytes_per_utterance = bytes_per_utterance
        self.latency_s = latency_s
        self.params: dict[str, list[str]] = {}
        self.keepalives = 0
        self.finalizes = 0
        self.close_streams = 0
        self.audio_bytes = 0

    @property
    def url(self) -> str:
        return self.ws_url

    def auth_ok(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Token {self.api_key}"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        refused = super()._process_request(connection, request)
        if refused is not None:
            return refused
        params = parse_qs(urlsplit(request.path).query)
        if params.get("keywords") and params.get("model", [""])[0].startswith("nova-3"):
            return connection.respond(400, json.dumps({
                "err_code": "INVALID_QUERY_PARAMETER",
                "err_msg": "Keywords are not supported for Nova-3. Please use `keyterm` instead.",
                "request_id": str(uuid.uuid4())}) + "\n")
        return None

    async def _idle_watch(self, ws: ServerConnection, last: list[float]) -> None:
        """NET-0001: close the stream when neither audio nor KeepAlive came for a while."""
        while True:
            wait = last[0] + self.idle_close_s - time.monotonic()
            if wait <= 0:
                self.idle_closes += 1
                await self.close_and_drain(ws, 1011, "NET-0001")
                return
            await asyncio.sleep(wait)

    async def handler(self, ws: ServerConnection) -> None:
        last = [time.monotonic()]  # when audio or a KeepAlive last arrived
        watch = asyncio.create_task(self._idle_watch(ws, last))
        try:
            await self._serve(ws, last)
        finally:
            watch.cancel()
            with contextlib.suppress(BaseException):
                await watch

    async def _serve(self, ws: ServerConnection, last: list[float]) -> None:
        assert ws.request is not None
        self.params = parse_qs(urlsplit(ws.request.path).query)
        rate = int(self.params.get("sample_rate", ["8000"])[0])
        interim = self.params.get("interim_results", ["false"])[0] == "true"
        vad_events = self.params.get("vad_events", ["false"])[0] == "true"
        request_id = str(uuid.uuid4())
        raw_ep = self.params.get("endpointing", ["10"])[0]
        endpointing = raw_ep != "false"  # off: no speech_final, ever
        utterance_end_ms = (float(self.params.get("utterance_end_ms", ["0"])[0])
                            if interim else 0.0)
        # without endpointing, a quiet gap only ends a segment through UtteranceEnd
        endpointing_ms = float(raw_ep) if endpointing else (utterance_end_ms or float("inf"))
        quiet = 0
        pending = 0  # audio bytes since the last utterance
        streamed = 0  # interims streamed during the current utterance (energy mode)
        offset = 0.0  # seconds of audio before the current utterance
        index = 0
        async for msg in ws:
            if isinstance(msg, bytes):
                last[0] = time.monotonic()
                self.audio_bytes += len(msg)
                if self.fault == "stall":
                    continue
                if self.fault == "data_error":
                    await self.close_and_drain(ws, 1008, "DATA-0000")
                    return
                if self.fault == "net_error":
                    await self.close_and_drain(ws, 1011, "NET-0000")
                    return
                if self.turns == "energy":
                    loud = bool(len(msg) >= 2 and np.sqrt(np.mean(
                        np.frombuffer(msg[: len(msg) // 2 * 2], dtype="<i2").astype(float) ** 2))
                        > 500)
                    if loud:
                        if pending == 0 and vad_events:
                            await ws.send(json.dumps({"type": "SpeechStarted", "channel": [0],
                                                      "timestamp": offset}))
                        pending += len(msg)
                        quiet = 0
                        heard_ms = pending / (2 * rate) * 1000
                        if (interim and self.interim_ms > 0
                                and heard_ms >= (streamed + 1) * self.interim_ms):
                            streamed += 1
                            text = self._heard_so_far(
                                self.transcripts[index % len(self.transcripts)], heard_ms)
                            self.interims.append(text)
                            await ws.send(json.dumps(self._results(
                                text, offset, pending / (2 * rate), False, False)))
                            if self.fault == "drop":
                                self.drop(ws)
                                return
                    elif pending:
                        quiet += len(msg)
                        if quiet / (2 * rate) * 1000 >= endpointing_ms:
                            duration = pending / (2 * rate)
                            text = self.transcripts[index % len(self.transcripts)]
                            index += 1
                            await self.sleep(self.latency_s)
                            await self._utterance(ws, text, offset, duration,
                                                  interim and not streamed, endpointing)
                            offset += duration
                            pending = 0
                            streamed = 0
                    else:
                        offset += len(msg) / (2 * rate)
                    continue
                if pending == 0 and vad_events:
                    await ws.send(json.dumps({"type": "SpeechStarted", "channel": [0],
                                              "timestamp": offset}))
                pending += len(msg)
                if pending >= self.bytes_per_utterance:
                    duration = pending / (2 * rate)
                    text = self.transcripts[index % len(self.transcripts)]
                    index += 1
                    await self.sleep(self.latency_s)
                    if self.fault == "malformed":
                        await ws.send("{this is not json")
                        continue
                    await self._utterance(ws, text, offset, duration, interim, endpointing)
                    if self.fault == "drop":
                        return
                    offset += duration
                    pending = 0
                continue
            data = json.loads(msg)
            self.received.append(data)
            kind = data.get("type")
            if kind == "KeepAlive":
                last[0] = time.monotonic()
                self.keepalives += 1
            elif kind == "Finalize":
                self.finalizes += 1
                text = ""
                if pending:
                    text = self.transcripts[index % len(self.transcripts)]
                    index += 1
                duration = pending / (2 * rate)
                await self.sleep(self.finalize_latency_s)
                await ws.send(json.dumps(self._results(text, offset, duration, True, False,
                                                       from_finalize=True)))
                offset += duration
                pending = 0
                streamed = 0
            elif kind == "CloseStream":
                self.close_streams += 1
                await ws.send(json.dumps({
                    "type": "Metadata", "transaction_key": "deprecated",
                    "request_id": request_id, "sha256": "0" * 64,
                    "created": "2026-11-22T00:00:00.000Z", "duration": offset,
                    "channels": 1}))
                await self.close_and_drain(ws, 1000)
                return

    async def _utterance(self, ws: ServerConnection, text: str, start: float, duration: float,
                         interim: bool, endpointing: bool = True) -> None:
        words = text.split()
        half = max(1, len(words) // 2)
        first, second = " ".join(words[:half]), " ".join(words[half:])
        if interim:
            await ws.send(json.dumps(self._results(first, start, duration / 2, False, False)))
            if self.fault == "drop":
                self.drop(ws)
                return
        mid = start + duration / 2
        await ws.send(json.dumps(self._results(first, start, duration / 2, True, False)))
        if self.fault == "utterance_end" or not endpointing:
            if second:
                await ws.send(json.dumps(self._results(second, mid, duration / 2, True, False)))
            if self.fault == "utterance_end" or "utterance_end_ms" in self.params:
                await ws.send(json.dumps({"type": "UtteranceEnd", "channel": [0, 1],
                                          "last_word_end": start + duration}))
            return
        if second:
            await ws.send(json.dumps(self._results(second, mid, duration / 2, True, True)))
        else:
            await ws.send(json.dumps(self._results("", mid, duration / 2, True, True)))

    def _heard_so_far(self, text: str, heard_ms: float) -> str:
        """The words of `text` "spoken" in `heard_ms` of loud audio (a growing prefix)."""
        words = text.split()
        n = len(words) if self.ms_per_word <= 0 else int(heard_ms // self.ms_per_word)
        return " ".join(words[: max(1, min(len(words), n))])

    @staticmethod
    def _results(text: str, start: float, duration: float, is_final: bool, speech_final: bool,
                 *, from_finalize: bool = False) -> dict[str, Any]:
        words = [{"word": w.lower().strip(".,?!"), "start": start, "end": start + duration,
                  "confidence": 0.98, "punctuated_word": w} for w in text.split()]
        msg: dict[str, Any] = {
            "type": "Results", "channel_index": [0, 1], "duration": duration, "start": start,
            "is_final": is_final, "speech_final": speech_final,
            "channel": {"alternatives": [{"transcript": text, "confidence": 0.98 if text else 0,
                                          "words": words}]},
            "metadata": {"request_id": "fake", "model_info": {"name": "fake"}},
        }
        if from_finalize:
            msg["from_finalize"] = True
        return msg
