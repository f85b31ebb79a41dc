"""Cartesia TTS over WebSocket: native 8 kHz pcm_s16le, contexts and continuations, cancel.

Wire protocol followed:
- https://docs.cartesia.ai/api-reference/tts/websocket — `wss://api.cartesia.ai/tts/websocket`,
  headers `X-API-Key: <key>` and `Cartesia-Version: <date>` (query `api_key`/`cartesia_version`
  are the browser alternative). Generation request `{model_id, transcript, voice: {mode: "id",
  id}, language, context_id, output_format: {container: "raw", encoding: "pcm_s16le",
  sample_rate: 8000}, continue, max_buffer_delay_ms}`; cancel `{context_id, cancel: true}`.
  Server messages: `{"type": "chunk", "data": <base64 audio>, "done": false, "context_id",
  "status_code": 206}`, `{"type": "done", "done": true, "context_id"}`, `{"type":
  "flush_done"}`, `{"type": "timestamps"}`, and `{"type": "error", "done": true, "title",
  "message", "error_code", "status_code", "context_id"}`. Raw `pcm_s16le` at 8000 Hz is a
  documented output format, so telephone audio needs no resampling.
- https://docs.cartesia.ai/build-with-cartesia/capability-guides/stream-inputs-using-continuations
  and https://docs.cartesia.ai/use-the-api/tts-websocket/contexts — one context per utterance;
  more input on the same `context_id` with `continue: true` continues the utterance with the same
  prosody; a last message with `continue: false` (empty transcript allowed) ends it; a new context
  per turn, and `cancel` on interruption. One socket multiplexes many contexts.

Context lifetime (https://docs.cartesia.ai/use-the-api/tts-websocket/contexts): "Contexts
automatically expire 1 second after the last audio output is streamed out" and input after that
is not supported. An LLM that pauses (a tool call, a slow token) would otherwise lose the rest of
its reply. So when streamed text pauses for `flush_after_s` we send a flush (`flush: true`,
empty transcript, https://docs.cartesia.ai/use-the-api/tts-websocket/context-flushing-and-flush-i-ds);
its `flush_done` says all audio is out, and text arriving more than `context_reuse_s` later goes
on a new context (no audio of the old one can interleave: it was all out). A context that ended
on its own (`done` without our closing input) is never used again.

We keep one socket per provider instance (no TLS handshake per utterance) and route messages to
each utterance by `context_id`. A dropped socket fails the utterances in flight; the next one
reconnects.

Residual uncertainty: the current API version string (we default to "2025-04-16"; override with
`version`); the exact error payload for auth failures after the handshake (we accept both the
handshake HTTP 401 and an `error` message).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from flowagent.providers.base import ProviderError, ProviderTimeout, TtsCapabilities
from flowagent.providers.cloudutil import (
    build_options,
    cancel_and_wait,
    closed_error,
    parse_json,
    ws_connect,
)

PROVIDER = "Cartesia"
CLOSE_MEANINGS = {1008: "the request was refused (check the API key and version)",
                  1011: "Cartesia hit an internal error"}
SUPPORTED_RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@dataclass(slots=True)
class CartesiaOptions:
    api_key: str = ""
    voice_id: str = ""
    model_id: str = "sonic-2"
    language: str = "en"
    version: str = "2025-04-16"
    url: str = "wss://api.cartesia.ai/tts/websocket"
    max_buffer_delay_ms: int = 0  # 0: Cartesia's default
    speed: str = ""  # "slow" | "normal" | "fast" (experimental controls); empty: not sent
    connect_timeout_s: float = 5.0
    first_audio_timeout_s: float = 5.0
    idle_timeout_s: float = 5.0
    #: a pause this long in streamed text makes us flush the context (Cartesia then says when
    #: all its audio is out, which starts its 1 s expiry)
    flush_after_s: float = 0.2
    #: a flushed context stays in use this long after its `flush_done`; later text starts a new
    #: context (Cartesia expires one 1 s after its last audio; the rest is network margin)
    context_reuse_s: float = 0.4


_DONE = object()  # the sender ended the input on the utterance's last context
_ALL_OUT = object()  # the sender finished and nothing is left to hear (no context to end)


@dataclass(slots=True)
class _Context:
    """One Cartesia context of an utterance, as last heard from the server (the reader task
    updates it the moment a message arrives, so timing is the server's, not the consumer's)."""

    id: str
    queue: asyncio.Queue[Any]
    ended: bool = False  # `done` came: finished, expired, or failed
    sent_since_flush: bool = False
    flushes_out: int = 0
    quiet_since: float | None = None  # when `flush_done` said all its audio is out

    def usable(self, now: float, reuse_s: float) -> bool:
        if self.ended:
            return False
        return self.quiet_since is None or now - self.quiet_since < reuse_s

    def heard(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "flush_done":
            self.flushes_out = max(0, self.flushes_out - 1)
            if not self.flushes_out and not self.sent_since_flush:
                self.quiet_since = time.monotonic()
        elif kind in ("done", "error") or msg.get("done"):
            self.ended = True


class CartesiaTts:
    name = "cartesia"
    capabilities = TtsCapabilities(continuation=True)

    def __init__(self, options: CartesiaOptions) -> None:
        self.options = options
        self.voice_id = f"cartesia:{options.model_id}:{options.voice_id}"
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._contexts: dict[str, _Context] = {}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> CartesiaTts:
        return cls(build_options(CartesiaOptions, options, PROVIDER))

    # -- connection -------------------------------------------------------------------------

    async def _connection(self) -> ClientConnection:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._ws is not None and self._reader is not None and not self._reader.done():
                return self._ws
            if not self.options.api_key:
                raise ProviderError("Cartesia needs an api_key (e.g. ${CARTESIA_API_KEY}).",
                                    provider=PROVIDER)
            self._ws = await ws_connect(
                self.options.url, provider=PROVIDER,
                headers={"X-API-Key": self.options.api_key,
                         "Cartesia-Version": self.options.version},
                timeout_s=self.options.connect_timeout_s,
            )
            self._reader = asyncio.create_task(self._read(self._ws), name="cartesia-reader")
            return self._ws

    async def _read(self, ws: ClientConnection) -> None:
        err: ProviderError | None = None
        try:
            async for raw in ws:
                try:
                    msg = parse_json(PROVIDER, raw)
                except ProviderError as exc:
                    # we cannot tell whose message it was: fail every utterance in flight
                    err = exc
                    break
                route = self._contexts.get(str(msg.get("context_id", "")))
                if route is not None:
                    route.heard(msg)
                    route.queue.put_nowait(msg)
                elif msg.get("type") == "error" and not msg.get("context_id"):
                    err = _error_from(msg)
                    break
            else:
                err = ProviderError("Cartesia closed the connection.", provider=PROVIDER)
        except ConnectionClosed as exc:
            err = closed_error(PROVIDER, exc, CLOSE_MEANINGS)
        finally:
            failure = err or ProviderError("Cartesia connection ended.", provider=PROVIDER)
            for route in self._contexts.values():
                route.queue.put_nowait(failure)
            if err is not None:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def close(self) -> None:
        await cancel_and_wait(self._reader)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._ws = None

    async def _send(self, msg: dict[str, Any]) -> None:
        ws = await self._connection()
        try:
            await ws.send(json.dumps(msg))
        except ConnectionClosed as exc:
            raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None

    def _request(self, context_id: str, text: str, sample_rate: int, cont: bool) -> dict[str, Any]:
        o = self.options
        msg: dict[str, Any] = {
            "model_id": o.model_id,
            "transcript": text,
            "voice": {"mode": "id", "id": o.voice_id},
            "language": o.language,
            "context_id": context_id,
            "output_format": {"container": "raw", "encoding": "pcm_s16le",
                              "sample_rate": sample_rate},
            "continue": cont,
        }
        if o.max_buffer_delay_ms:
            msg["max_buffer_delay_ms"] = o.max_buffer_delay_ms
        if o.speed:
            msg["voice"]["__experimental_controls"] = {"speed": o.speed}
        return msg

    # -- synthesis --------------------------------------------------------------------------

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        async def one() -> AsyncIterator[str]:
            yield text

        async for pcm in self._utterance(one(), sample_rate, continuation=False):
            yield pcm

    async def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        async for pcm in self._utterance(text_chunks, sample_rate, continuation=True):
            yield pcm

    async def _utterance(
        self, text_chunks: AsyncIterator[str], sample_rate: int, *, continuation: bool
    ) -> AsyncIterator[bytes]:
        if sample_rate not in SUPPORTED_RATES:
            raise ProviderError(f"Cartesia cannot produce {sample_rate} Hz audio; supported: "
                                f"{', '.join(map(str, SUPPORTED_RATES))}.", provider=PROVIDER)
        if not self.options.voice_id:
            raise ProviderError("Cartesia needs a voice_id.", provider=PROVIDER)
        q: asyncio.Queue[Any] = asyncio.Queue()
        mine: list[_Context] = []  # this utterance's contexts, the current one last
        await self._connection()
        sender = asyncio.create_task(
            self._send_text(mine, q, text_chunks, sample_rate, continuation),
            name="cartesia-sender")
        finished = False
        got_audio = False
        final: str | None = None  # the context our closing input went to
        try:
            while True:
                timeout = (self.options.idle_timeout_s if got_audio
                           else self.options.first_audio_timeout_s)
                # while the LLM is still producing text, silence from Cartesia is expected
                if continuation and not sender.done():
                    timeout = max(timeout, 3600.0)
                try:
                    async with asyncio.timeout(timeout):
                        msg = await q.get()
                except TimeoutError:
                    what = "stalled mid-utterance" if got_audio else "sent no audio"
                    raise ProviderTimeout(f"Cartesia {what} for {timeout:g} s.",
                                          provider=PROVIDER) from None
                if isinstance(msg, BaseException):
                    raise msg
                if msg is _DONE:  # the sender ended the input; keep reading audio
                    final = mine[-1].id
                    continue
                if msg is _ALL_OUT:
                    finished = True
                    return
                kind = msg.get("type")
                if kind == "chunk":
                    try:
                        pcm = base64.b64decode(msg.get("data") or "", validate=True)
                    except (binascii.Error, ValueError):
                        raise ProviderError("Cartesia sent audio that is not valid base64.",
                                            provider=PROVIDER) from None
                    if pcm:
                        got_audio = True
                        yield pcm
                if kind == "done" or (kind == "chunk" and msg.get("done")):
                    # our closing input answered; any other context ended by expiry, and the
                    # sender moves on to a new one if more text comes
                    if msg.get("context_id") == final:
                        finished = True
                        return
                elif kind == "error":
                    finished = True
                    raise _error_from(msg)
                # flush_done, timestamps, phoneme_timestamps: the reader noted them
        finally:
            await cancel_and_wait(sender)
            for ctx in mine:
                self._contexts.pop(ctx.id, None)
            if not finished:  # barge-in / cancelled consumer / failure: stop generation
                for ctx in mine:
                    if ctx.ended:
                        continue
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await self._send({"context_id": ctx.id, "cancel": True})

    def _new_context(self, mine: list[_Context], q: asyncio.Queue[Any]) -> _Context:
        ctx = _Context(uuid.uuid4().hex, q)
        self._contexts[ctx.id] = ctx
        mine.append(ctx)
        return ctx

    async def _send_text(
        self, mine: list[_Context], q: asyncio.Queue[Any], text_chunks: AsyncIterator[str],
        sample_rate: int, continuation: bool,
    ) -> None:
        """Feed the text to Cartesia. Streamed text goes on one context while that context is
        alive; when the text pauses we flush it, and text arriving after the context has been
        quiet for `context_reuse_s` (or after it expired) starts a new context."""
        o = self.options
        try:
            if not continuation:
                async for text in text_chunks:
                    ctx = self._new_context(mine, q)
                    await self._send(self._request(ctx.id, text, sample_rate, cont=False))
                q.put_nowait(_DONE if mine else _ALL_OUT)
                return
            it = aiter(text_chunks)
            while True:
                nxt = asyncio.ensure_future(anext(it))
                try:
                    cur = mine[-1] if mine else None
                    if cur is not None and cur.sent_since_flush and not cur.ended:
                        done, _ = await asyncio.wait({nxt}, timeout=o.flush_after_s)
                        if not done:  # the text paused: have Cartesia finish what it has
                            cur.sent_since_flush = False
                            cur.flushes_out += 1
                            cur.quiet_since = None
                            await self._send({**self._request(cur.id, "", sample_rate,
                                                              cont=True), "flush": True})
                    text = await nxt
                except StopAsyncIteration:
                    break
                finally:
                    if not nxt.done():
                        nxt.cancel()
                if not text:
                    continue
                cur = mine[-1] if mine else None
                if cur is None or not cur.usable(time.monotonic(), o.context_reuse_s):
                    cur = self._new_context(mine, q)
                cur.sent_since_flush = True
                cur.quiet_since = None
                await self._send(self._request(cur.id, text, sample_rate, cont=True))
            cur = mine[-1] if mine else None
            if cur is not None and cur.usable(time.monotonic(), o.context_reuse_s):
                await self._send(self._request(cur.id, "", sample_rate, cont=False))
                q.put_nowait(_DONE)
            else:  # nothing said, or all of it heard and the context lapsing: nothing to end
                q.put_nowait(_ALL_OUT)
        except ProviderError as exc:
            q.put_nowait(exc)
        except Exception as exc:  # the text source (LLM) failed: end this utterance with it
            q.put_nowait(exc)


def _error_from(msg: dict[str, Any]) -> ProviderError:
    title = msg.get("title") or msg.get("error_code") or "error"
    detail = msg.get("message") or msg.get("error") or ""
    return ProviderError(f"Cartesia reported {title}: {detail}".rstrip(": ") + ".",
                         provider=PROVIDER)
