"""Deepgram live streaming ASR over WebSocket.

Wire protocol followed (Deepgram's published documentation, checked 2026-11):
- https://developers.deepgram.com/reference/speech-to-text-api/listen-streaming
  endpoint `wss://api.deepgram.com/v1/listen`, options as query parameters (`encoding=linear16`,
  `sample_rate`, `channels`, `model`, `language`, `interim_results`, `endpointing` (ms),
  `utterance_end_ms`, `vad_events`, `smart_format`, `keywords` (Nova-2 and older, `word:boost`)
  and `keyterm` (Nova-3)); header `Authorization: Token <key>`; audio as binary frames.
- Server messages: `{"type": "Results", "channel": {"alternatives": [{"transcript",
  "confidence", "words"}]}, "is_final", "speech_final", "start", "duration", "from_finalize"}`,
  `{"type": "UtteranceEnd", "last_word_end"}`, `{"type": "SpeechStarted", "timestamp"}`,
  `{"type": "Metadata", "request_id", ...}`.
- https://developers.deepgram.com/docs/audio-keep-alive — `{"type": "KeepAlive"}` as a *text*
  frame every 3-5 s while no audio is sent, else the socket closes after 10 s (NET-0001).
- https://developers.deepgram.com/docs/close-stream — `{"type": "CloseStream"}` flushes, the
  server answers with final Results and a Metadata message, then closes.
- https://developers.deepgram.com/docs/finalize — `{"type": "Finalize"}` flushes what was heard
  so far (Results then carry `from_finalize: true`); used when *our* VAD ends the turn.
- https://developers.deepgram.com/docs/stt-troubleshooting-websocket-data-and-net-errors —
  handshake failures are HTTP 4xx/5xx; errors after opening arrive as a close frame: 1008
  `DATA-0000` (audio could not be decoded), 1011 `NET-0000` (internal) / `NET-0001` (no audio
  received within 10 s).

Transcript contract: exactly one final `Transcript` per caller turn, with `end_of_turn=True`,
carrying the whole turn's text (Deepgram's `is_final` segments of the turn joined). The turn ends
on `speech_final`, on `from_finalize` (the answer to our `flush()`), or on `UtteranceEnd` after
finals that had no `speech_final`. Deepgram may finalise a turn in several segments; holding them
back means a consumer that treats any final as the end of the turn (runner/session.py does, once
its own VAD has flushed) never splits one sentence into two turns. Interim transcripts carry the
turn so far (finalised segments + in-progress words), for live views and early intent guesses.

Keywords and key terms: Deepgram documents `keywords` (with `:boost`) for Nova-2 and older and
`keyterm` for Nova-3, and refuses `keywords` on a Nova-3 model with HTTP 400 at the handshake;
on a `nova-3*` model both lists go out as `keyterm` (boosts dropped), otherwise as given.

Keep-alive: only audio and `KeepAlive` keep the stream open (the docs name no other message), so
the keep-alive clock is reset by those two alone, not by `Finalize`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from flowagent.providers.base import AsrCapabilities, AsrStreamBase, ProviderError, Transcript
from flowagent.providers.cloudutil import (
    END_OF_STREAM,
    build_options,
    cancel_and_wait,
    closed_error,
    drain,
    parse_json,
    ws_connect,
)

PROVIDER = "Deepgram"

CLOSE_MEANINGS = {
    1008: "the audio could not be decoded (check encoding and sample rate)",
    1011: "Deepgram hit an internal error or received no audio for 10 s",
}


@dataclass(slots=True)
class DeepgramOptions:
    api_key: str = ""
    model: str = "nova-3"
    language: str = ""  # empty: use the flow's language
    url: str = "wss://api.deepgram.com/v1/listen"
    interim_results: bool = True
    endpointing_ms: int = 300
    utterance_end_ms: int = 1000
    vad_events: bool = True
    smart_format: bool = True
    keywords: list[str] = field(default_factory=list)  # "word" or "word:boost" (Nova-2)
    keyterms: list[str] = field(default_factory=list)  # Nova-3 keyterm prompting
    keepalive_s: float = 4.0
    connect_timeout_s: float = 5.0
    close_timeout_s: float = 3.0


class DeepgramAsr:
    name = "deepgram"
    endpointing = True

    def __init__(self, options: DeepgramOptions) -> None:
        self.options = options

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> DeepgramAsr:
        return cls(build_options(DeepgramOptions, options, PROVIDER))

    def url(self, sample_rate: int, language: str) -> str:
        o = self.options
        params: list[tuple[str, str]] = [
            ("encoding", "linear16"),
            ("sample_rate", str(sample_rate)),
            ("channels", "1"),
            ("model", o.model),
            ("language", o.language or language or "en"),
            ("interim_results", _b(o.interim_results)),
            ("endpointing", str(o.endpointing_ms) if o.endpointing_ms > 0 else "false"),
            ("vad_events", _b(o.vad_events)),
            ("smart_format", _b(o.smart_format)),
        ]
        if o.utterance_end_ms and o.interim_results:  # Deepgram requires interim results for it
            params.append(("utterance_end_ms", str(o.utterance_end_ms)))
        if o.model.startswith("nova-3"):
            # Nova-3 refuses `keywords` (HTTP 400 INVALID_QUERY_PARAMETER): its boosting is
            # `keyterm`, which takes plain terms (no ":boost" intensifier)
            terms = [k.rsplit(":", 1)[0] if _has_boost(k) else k for k in o.keywords]
            params += [("keyterm", k) for k in dict.fromkeys([*terms, *o.keyterms])]
        else:
            params += [("keywords", k) for k in o.keywords]
            params += [("keyterm", k) for k in o.keyterms]
        return f"{o.url}?{urlencode(params)}"

    async def open_stream(self, sample_rate: int, language: str) -> DeepgramStream:
        if not self.options.api_key:
            raise ProviderError("Deepgram needs an api_key (e.g. api_key: ${DEEPGRAM_API_KEY}).",
                                provider=PROVIDER)
        ws = await ws_connect(
            self.url(sample_rate, language),
            provider=PROVIDER,
            headers={"Authorization": f"Token {self.options.api_key}"},
            timeout_s=self.options.connect_timeout_s,
        )
        return DeepgramStream(ws, self.options)


def _has_boost(keyword: str) -> bool:
    """`word:2` / `word:-1.5`: a Nova-2 keyword with its intensifier."""
    _, sep, boost = keyword.rpartition(":")
    try:
        float(boost)
    except ValueError:
        return False
    return bool(sep)


def _b(v: bool) -> str:
    return "true" if v else "false"


_END = END_OF_STREAM


class DeepgramStream(AsrStreamBase):
    """One caller's live stream. Owns a reader task and a keep-alive task."""

    def __init__(self, ws: ClientConnection, options: DeepgramOptions) -> None:
        self._ws = ws
        self._o = options
        self.capabilities = AsrCapabilities(endpointing_ms=max(0, options.endpointing_ms))
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._last_send = time.monotonic()
        self._closing = False
        self._finals: list[str] = []  # finalised segments of the current turn
        self._confidences: list[float] = []
        self._turn_start: float | None = None
        self._pending_end = False  # finals seen since the last end of turn
        self._last_end = 0.0
        self.request_id = ""
        self.speech_started_events = 0  # Deepgram's SpeechStarted messages received
        self._reader = asyncio.create_task(self._read(), name="deepgram-reader")
        self._keepalive = asyncio.create_task(self._keep_alive(), name="deepgram-keepalive")

    # -- sending ----------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        self._raise_if_failed()
        try:
            await self._ws.send(pcm)
        except ConnectionClosed as exc:
            raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None
        self._last_send = time.monotonic()

    async def flush(self) -> None:
        """Our VAD decided the turn ended: ask Deepgram to finalise what it heard."""
        await self._send_json({"type": "Finalize"})

    async def _send_json(self, msg: dict[str, Any]) -> None:
        self._raise_if_failed()
        try:
            await self._ws.send(json.dumps(msg))  # text frame, as the docs require
        except ConnectionClosed as exc:
            raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None

    def _raise_if_failed(self) -> None:
        if self._reader.done() and not self._reader.cancelled():
            exc = self._reader.exception()
            if isinstance(exc, ProviderError):
                raise exc

    async def _keep_alive(self) -> None:
        interval = max(0.05, self._o.keepalive_s)
        while True:
            await asyncio.sleep(interval / 4)
            if time.monotonic() - self._last_send >= interval:
                try:
                    await self._ws.send(json.dumps({"type": "KeepAlive"}))
                except ConnectionClosed:
                    return
                self._last_send = time.monotonic()

    # -- receiving --------------------------------------------------------------------------

    def transcripts(self) -> AsyncIterator[Transcript]:
        return self._iter()

    def _iter(self) -> AsyncIterator[Transcript]:
        return drain(self._queue)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    raise ProviderError("Deepgram sent binary data where JSON was expected.",
                                        provider=PROVIDER)
                for t in self._handle(parse_json(PROVIDER, raw)):
                    self._queue.put_nowait(t)
            # clean close (1000): normal after CloseStream, a failure otherwise
            if self._pending_end:  # finals flushed by CloseStream: still the caller's words
                self._queue.put_nowait(self._turn_end())
            if not self._closing:
                raise ProviderError("Deepgram closed the stream unexpectedly.", provider=PROVIDER)
        except ConnectionClosedOK:
            if not self._closing:
                self._queue.put_nowait(
                    ProviderError("Deepgram closed the stream unexpectedly.", provider=PROVIDER))
        except ConnectionClosed as exc:
            err = closed_error(PROVIDER, exc, CLOSE_MEANINGS)
            self._queue.put_nowait(err)
            raise err from None
        except ProviderError as exc:
            self._queue.put_nowait(exc)
            with contextlib.suppress(Exception):
                await self._ws.close(1011)
            raise
        finally:
            self._queue.put_nowait(_END)

    def _handle(self, msg: dict[str, Any]) -> list[Transcript]:
        kind = msg.get("type")
        if kind == "Results":
            return self._results(msg)
        if kind == "UtteranceEnd":
            if self._pending_end:
                return [self._turn_end()]
            return []
        if kind == "SpeechStarted":
            self.speech_started_events += 1
            return []
        if kind == "Metadata":
            self.request_id = str(msg.get("request_id", ""))
            return []
        if kind == "Error":  # some deployments send a JSON error before the close frame
            desc = msg.get("description") or msg.get("message") or "unknown error"
            raise ProviderError(f"Deepgram reported an error: {desc}.", provider=PROVIDER)
        return []  # unknown message types are ignored (forward compatible)

    def _results(self, msg: dict[str, Any]) -> list[Transcript]:
        try:
            alt = msg["channel"]["alternatives"][0]
            text = str(alt.get("transcript", ""))
            conf = float(alt.get("confidence", 0.0))
            start = float(msg.get("start", 0.0))
            duration = float(msg.get("duration", 0.0))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ProviderError("Deepgram sent a Results message without a transcript.",
                                provider=PROVIDER) from None
        end_s = start + duration
        if text and self._turn_start is None:
            self._turn_start = start
        if not msg.get("is_final"):
            if not text:
                return []
            joined = " ".join([*self._finals, text])
            return [Transcript(joined, False, conf, self._turn_start or start, end_s)]
        if text:
            self._finals.append(text)
            self._confidences.append(conf)
            self._pending_end = True
        self._last_end = end_s
        if msg.get("speech_final") or msg.get("from_finalize"):
            return [self._turn_end()]
        return []  # held until the end of the turn

    def _mean_conf(self) -> float:
        return sum(self._confidences) / len(self._confidences) if self._confidences else 0.0

    def _turn_end(self) -> Transcript:
        """The one final of a turn: all its segments joined, turn-wide confidence."""
        t = Transcript(" ".join(self._finals), True, self._mean_conf(), self._turn_start or 0.0,
                       self._last_end, end_of_turn=True)
        self._finals, self._confidences = [], []
        self._turn_start = None
        self._pending_end = False
        return t

    # -- closing ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Hang-up: CloseStream, wait (bounded) for the last results, then close the socket."""
        if self._closing:
            return
        self._closing = True
        await cancel_and_wait(self._keepalive)
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(json.dumps({"type": "CloseStream"}))
        try:
            async with asyncio.timeout(self._o.close_timeout_s):
                await asyncio.shield(self._reader)
        except Exception:  # timeout, or the reader's own error (already queued for the consumer)
            pass
        finally:
            await cancel_and_wait(self._reader)
            with contextlib.suppress(Exception):
                await self._ws.close()


__all__ = ["DeepgramAsr", "DeepgramOptions", "DeepgramStream"]
