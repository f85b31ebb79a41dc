"""ElevenLabs TTS over the stream-input WebSocket, `ulaw_8000` or `pcm_*` output.

Wire protocol followed:
- https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-stream-input
  (also https://elevenlabs.io/docs/api-reference/websocket) — `wss://api.elevenlabs.io/v1/
  text-to-speech/{voice_id}/stream-input?model_id=...&output_format=...`, header
  `xi-api-key: <key>`. Client messages: first `{"text": " ", "voice_settings": {stability,
  similarity_boost, speed}, "generation_config": {"chunk_length_schedule": [...]}}`; then text
  chunks `{"text": "Hello "}` (each ending with a space); `{"text": "...", "flush": true}` forces
  generation of what is buffered; `{"text": ""}` ends the input and closes the stream.
  Server messages: `{"audio": <base64>, "isFinal": null, "normalizedAlignment": ...,
  "alignment": ...}` and finally `{"isFinal": true}`; errors as `{"message", "error", "code"}`
  followed by a close (1008 for policy/auth problems).
- https://elevenlabs.io/docs/api-reference/text-to-speech/convert#request.query.output_format —
  `ulaw_8000` (G.711 μ-law, 8 kHz: what a telephone line carries, so we only expand it to PCM
  with our own table — `audioop` is gone in 3.13), `pcm_8000`, `pcm_16000`, `pcm_22050`,
  `pcm_24000`, `pcm_44100` (s16le); other rates are resampled with
  `flowagent.audio.StreamResampler` (soxr, keeps filter state across chunks).

Keep-alive: the socket closes after 20 s without new text ("How can I keep the WebSocket open?",
https://help.elevenlabs.io/hc/en-us/articles/28084868106513); while the LLM is silent (a tool
call) we send a single space every `keepalive_s` (an empty string would end the input).

One WebSocket per utterance (the single-context endpoint ends with the input); cancelling closes
the socket, which stops generation.

Residual uncertainty: the exact JSON of error messages is not fully specified in the public
reference (we read `message`/`error`); the version of `voice_settings.speed` support by model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from flowagent.audio import StreamResampler
from flowagent.providers.base import ProviderError, ProviderTimeout, TtsCapabilities
from flowagent.providers.cloudutil import (
    build_options,
    cancel_and_wait,
    closed_error,
    parse_json,
    ulaw_to_pcm,
    ws_connect,
)

PROVIDER = "ElevenLabs"
CLOSE_MEANINGS = {1008: "the request was refused (check the API key, voice id and quota)",
                  1011: "ElevenLabs hit an internal error"}
FORMATS = {"ulaw_8000": 8000, "pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050,
           "pcm_24000": 24000, "pcm_44100": 44100}


@dataclass(slots=True)
class ElevenLabsOptions:
    api_key: str = ""
    voice_id: str = ""
    model_id: str = "eleven_flash_v2_5"
    output_format: str = "ulaw_8000"
    stability: float = 0.5
    similarity_boost: float = 0.8
    speed: float = 1.0
    chunk_length_schedule: list[int] = field(default_factory=lambda: [50, 90, 120, 150])
    url: str = "wss://api.elevenlabs.io"
    connect_timeout_s: float = 5.0
    first_audio_timeout_s: float = 5.0
    idle_timeout_s: float = 5.0
    #: while waiting for the LLM's next words, send " " this often: the service closes the
    #: socket after 20 s without text (`inactivity_timeout`)
    keepalive_s: float = 10.0


class ElevenLabsTts:
    name = "elevenlabs"
    capabilities = TtsCapabilities(continuation=True)

    def __init__(self, options: ElevenLabsOptions) -> None:
        if options.output_format not in FORMATS:
            raise ValueError(f"ElevenLabs output_format must be one of {', '.join(FORMATS)}.")
        self.options = options
        self.voice_id = f"elevenlabs:{options.model_id}:{options.voice_id}"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ElevenLabsTts:
        return cls(build_options(ElevenLabsOptions, options, PROVIDER))

    def url(self) -> str:
        o = self.options
        query = urlencode({"model_id": o.model_id, "output_format": o.output_format})
        return (f"{o.url.rstrip('/')}/v1/text-to-speech/{quote(o.voice_id, safe='')}"
                f"/stream-input?{query}")

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        async def one() -> AsyncIterator[str]:
            yield text

        async for pcm in self.synthesize_stream(one(), sample_rate):
            yield pcm

    async def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        o = self.options
        if not o.api_key or not o.voice_id:
            raise ProviderError("ElevenLabs needs an api_key and a voice_id.", provider=PROVIDER)
        ws = await ws_connect(self.url(), provider=PROVIDER, headers={"xi-api-key": o.api_key},
                              timeout_s=o.connect_timeout_s)
        src_rate = FORMATS[o.output_format]
        ulaw = o.output_format.startswith("ulaw")
        resampler = StreamResampler(src_rate, sample_rate)
        sender = asyncio.create_task(self._send_text(ws, text_chunks), name="elevenlabs-sender")
        carry = b""
        got_audio = False
        try:
            while True:
                streaming_text = not sender.done()
                timeout = o.idle_timeout_s if got_audio else o.first_audio_timeout_s
                if streaming_text:
                    timeout = max(timeout, 3600.0)  # LLM still talking: waiting is expected
                try:
                    async with asyncio.timeout(timeout):
                        if streaming_text:
                            raw = await self._recv_or_sender(ws, sender)
                            if raw is None:
                                continue
                        else:
                            raw = await ws.recv()
                except TimeoutError:
                    what = "stalled mid-utterance" if got_audio else "sent no audio"
                    raise ProviderTimeout(f"ElevenLabs {what} for {timeout:g} s.",
                                          provider=PROVIDER) from None
                except ConnectionClosed as exc:
                    raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None
                msg = parse_json(PROVIDER, raw)
                if msg.get("audio"):
                    try:
                        data = base64.b64decode(msg["audio"], validate=True)
                    except (binascii.Error, ValueError):
                        raise ProviderError("ElevenLabs sent audio that is not valid base64.",
                                            provider=PROVIDER) from None
                    if ulaw:
                        pcm = ulaw_to_pcm(data)
                    else:
                        data = carry + data
                        cut = len(data) - len(data) % 2
                        pcm, carry = data[:cut], data[cut:]
                    out = resampler.process(pcm)
                    if out:
                        got_audio = True
                        yield out
                if msg.get("isFinal"):
                    tail = resampler.process(b"", last=True)
                    if tail:
                        yield tail
                    return
                if "audio" not in msg and ("error" in msg or "message" in msg):
                    detail = msg.get("message") or msg.get("error")
                    raise ProviderError(f"ElevenLabs reported an error: {detail}.",
                                        provider=PROVIDER)
        finally:
            await cancel_and_wait(sender)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close()

    @staticmethod
    async def _recv_or_sender(ws: ClientConnection, sender: asyncio.Task[None]) -> Any:
        """Next server message, or None if the text sender finished (or failed) first."""
        recv = asyncio.ensure_future(ws.recv())
        try:
            done, _ = await asyncio.wait({recv, sender}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            recv.cancel()
            raise
        if recv in done:
            return recv.result()
        recv.cancel()  # cancelling recv() loses no data (websockets guarantees it)
        with contextlib.suppress(BaseException):
            await recv
        exc = sender.exception()
        if exc is not None:
            raise exc
        return None

    async def _send_text(self, ws: ClientConnection, text_chunks: AsyncIterator[str]) -> None:
        o = self.options
        try:
            await ws.send(json.dumps({
                "text": " ",
                "voice_settings": {"stability": o.stability,
                                   "similarity_boost": o.similarity_boost, "speed": o.speed},
                "generation_config": {"chunk_length_schedule": o.chunk_length_schedule},
            }))
            pending = ""
            async for text in _with_keepalive(text_chunks, o.keepalive_s):
                if text is None:  # the LLM is slow (a tool call): keep the socket open
                    await ws.send(json.dumps({"text": " "}))
                    continue
                # the docs ask for each chunk to end with a space: send whole words only, so an
                # LLM token split inside a word ("Hel" + "lo") is never spoken as two words
                pending += text
                cut = max(pending.rfind(" "), pending.rfind("\n"))
                if cut >= 0 and pending[: cut + 1].strip():
                    await ws.send(json.dumps({"text": pending[: cut + 1]}))
                    pending = pending[cut + 1 :]
            if pending.strip():
                await ws.send(json.dumps({"text": pending + " ", "flush": True}))
            await ws.send(json.dumps({"text": ""}))  # end of input: generate the rest, close
        except ConnectionClosed as exc:
            raise closed_error(PROVIDER, exc, CLOSE_MEANINGS) from None


async def _with_keepalive(
    chunks: AsyncIterator[str], every_s: float
) -> AsyncIterator[str | None]:
    """The text chunks, with a None whenever `every_s` passes without one."""
    it = aiter(chunks)
    while True:
        nxt = asyncio.ensure_future(anext(it))
        try:
            while True:
                done, _ = await asyncio.wait({nxt}, timeout=max(0.05, every_s))
                if done:
                    break
                yield None
            try:
                text = nxt.result()
            except StopAsyncIteration:
                return
        finally:
            if not nxt.done():
                nxt.cancel()
        yield text
