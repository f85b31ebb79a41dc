"""Small interfaces every speech/language provider implements.

Why this shape: the call session only ever talks to these five protocols, so a provider is one
module that implements one of them, and every stage has a fake (`providers/fake.py`) for tests and
benchmarks. Audio everywhere is little-endian signed 16-bit mono PCM (`bytes`) at an explicit
sample rate; a provider that needs another rate resamples with `flowagent.audio.resample`.

Errors: a provider raises `ProviderError` (or a subclass) with a plain-English message for any
failure it can name (auth rejected, 429, 5xx, timeout, dropped connection, malformed message).
The runtime turns that into the flow's fallback; it never lets it escape a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# ---------------------------------------------------------------------------------------------
# LLM conversation vocabulary (the engine builds these; LLM providers send them)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LlmToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

@dataclass(frozen=True, slots=True)
class LlmMessage:
    role: str  # system | user | assistant | tool
    content: str
    tool_call_id: str = ""
    tool_calls: tuple[LlmToolCall, ...] = ()

@dataclass(frozen=True, slots=True)
class LlmToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments


class ProviderError(Exception):
    """A provider failed; `message` is one plain-English sentence safe to log (no secrets)."""

    def __init__(self, message: str, *, provider: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    """The provider did not answer within its deadline."""


# ---------------------------------------------------------------------------------------------
# ASR
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    is_final: bool
    confidence: float = 1.0
    start_s: float = 0.0  # offset in the stream, seconds
    end_s: float = 0.0
    #: True when the provider itself decided the caller finished the turn (endpointing)
    end_of_turn: bool = False


class AsrStream(Protocol):
    """One caller's audio stream (one per call). Feed audio as it arrives; read transcripts."""

    async def send_audio(self, pcm: bytes) -> None: ...

    async def flush(self) -> None:
        """Local end-of-turn decided by our VAD: finalise what was heard so far."""

    def transcripts(self) -> AsyncIterator[Transcript]: ...

    async def close(self) -> None: ...


@runtime_checkable
class AsrProvider(Protocol):
    name: str
    #: True if the provider does its own endpointing (we may still use local VAD as well)
    endpointing: bool

    async def open_stream(self, sample_rate: int, language: str) -> AsrStream: ...


# ---------------------------------------------------------------------------------------------
# LLM
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LlmChunk:
    """One piece of a streamed reply: text delta and/or completed tool calls (at the end)."""

    text: str = ""
    tool_calls: tuple[LlmToolCall, ...] = ()
    finish_reason: str = ""


@runtime_checkable
class LlmProvider(Protocol):
    name: str

    def stream(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...] = ()
    ) -> AsyncIterator[LlmChunk]:
        """Stream the reply. Cancelling the consuming task must close the HTTP request."""
        ...


# ---------------------------------------------------------------------------------------------
# TTS
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class TtsProvider(Protocol):
    name: str
    #: identifies the voice for the prompt-audio cache (same key + text -> same audio)
    voice_id: str

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Audio for a whole text at `sample_rate`, streamed in chunks as it is made.
        Cancelling the consumer stops synthesis (between chunks at the latest)."""
        ...

    def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        """Audio for text that is still arriving (LLM tokens). Providers with a continuation API
        use it; others chunk by clause/sentence (see `flowagent.providers.chunking`)."""
        ...


# ---------------------------------------------------------------------------------------------
# VAD
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VadOptions:
    threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_ms: int = 250
    min_silence_ms: int = 600  # end-of-turn silence


class VadStream(Protocol):
    """Per-call state of a (possibly shared, batched) VAD model."""

    async def probability(self, pcm: bytes) -> float:
        """Speech probability of this frame (any length; the model buffers internally)."""
        ...

    def reset(self) -> None: ...


@runtime_checkable
class VadProvider(Protocol):
    name: str

    def open_stream(self, sample_rate: int) -> VadStream: ...


# ---------------------------------------------------------------------------------------------
# STS (speech to speech)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StsEvent:
    """kind: audio | transcript_user | transcript_agent | tool_call | interrupted | error | done"""

    kind: str
    audio: bytes = b""
    text: str = ""
    tool_call: LlmToolCall | None = None
    data: dict[str, Any] = field(default_factory=dict)


class StsSession(Protocol):
    async def send_audio(self, pcm: bytes) -> None: ...

    async def send_tool_result(self, call_id: str, output: dict[str, Any]) -> None: ...

    def events(self) -> AsyncIterator[StsEvent]: ...

    async def close(self) -> None: ...


@runtime_checkable
class StsProvider(Protocol):
    name: str

    async def connect(
        self, instructions: str, tools: tuple[LlmToolSpec, ...], sample_rate: int
    ) -> StsSession: ...
