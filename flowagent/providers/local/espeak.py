"""espeak-ng as a lightweight fallback voice (robotic, but tiny and instant), where installed.

Why a subprocess: the `espeak-ng` binary is a system package (`apt-get install espeak-ng`), not
a Python dependency; running it per sentence with asyncio keeps the event loop free and lets a
cancelled reply kill the process at once. Output is 22.05 kHz WAV on stdout, resampled to the
call's rate with soxr.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import wave
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from flowagent.providers.base import ProviderError, ProviderTimeout, TtsCapabilities
from flowagent.providers.local.piper import pop_sentences, split_sentences, to_pcm16


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


class EspeakTts:
    """The `espeak` TTS provider (implements `TtsProvider`)."""

    name = "espeak"
    capabilities = TtsCapabilities()

    def __init__(self, *, voice: str = "en-us", speed: int = 165, timeout_s: float = 10.0) -> None:
        binary = espeak_binary()
        if binary is None:
            raise ProviderError(
                "The espeak voice needs the espeak-ng program, which is not installed; install "
                "it with `apt-get install espeak-ng` (or use the bundled `piper` voice).",
                provider="espeak",
            )
        self.binary = binary
        self.voice = voice
        self.speed = speed
        self.timeout_s = timeout_s
        self.voice_id = f"espeak:{voice}:{speed}"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EspeakTts:
        return cls(voice=str(options.get("voice", "en-us")), speed=int(options.get("speed", 165)))

    async def _speak(self, text: str, sample_rate: int) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-v", self.voice, "-s", str(self.speed), "--stdout", "--", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError as exc:
            raise ProviderTimeout(f"espeak-ng took over {self.timeout_s:g} s for one sentence.",
                                  provider="espeak") from exc
        finally:
            if proc.returncode is None:  # cancelled or timed out: stop it now
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await proc.wait()
        if proc.returncode != 0:
            message = err.decode("utf-8", "replace").strip().splitlines()[:1]
            raise ProviderError(f"espeak-ng failed: {message[0] if message else proc.returncode}",
                                provider="espeak")
        with wave.open(io.BytesIO(out)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return to_pcm16(samples.astype(np.float32) / 32768.0, rate, sample_rate)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        for sentence in split_sentences(text):
            audio = await self._speak(sentence, sample_rate)
            if audio:
                yield audio

    async def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        buffer = ""
        async for piece in text_chunks:
            ready, buffer = pop_sentences(buffer + piece)
            for sentence in ready:
                yield await self._speak(sentence, sample_rate)
        if buffer.strip():
            async for audio in self.synthesize(buffer, sample_rate):
                yield audio
