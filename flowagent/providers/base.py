"""Small interfaces every speech/language provider implements.

Why this shape: a call only ever talks to these five protocols, so a provider is one module
that implements one of them, and every stage has a fake (`providers/fake.py`) for tests and
benchmarks. What differs between providers of one kind (a VAD that answers synchronously, an ASR
that wants to hear of the caller's speech onset, a TTS with a continuation API...) is DECLARED in
a capabilities dataclass on the instance — never discovered by probing for methods — and the
optional methods have a refusing default in the `...Base` classes every implementation extends.
Audio everywhere is little-endian signed 16-bit mono PCM (`bytes`) at an explicit sample rate;
a provider that needs another rate resamples with `flowagent.audio.resample`.

Errors: a provider raises `ProviderError` (or a subclass) with a plain-English message for any
failure it can name (auth rejected, 429, 5xx, timeout, dropped connection, malformed message).
The runtime turns that into the flow's fallback; it never lets it escape a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class ProviderTimeout(ProviderError):
    """The provider did not answer within its deadline."""


def describe_fault(exc: BaseException, default: str = "") -> str:
    """One plain sentence for a provider fault (a ProviderError's own message; a timeout or an
    OS error described without internals)."""
    if isinstance(exc, ProviderError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return default or "the provider did not answer in time"
    return default or f"{exc.__class__.__name__}: {exc}"


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


@dataclass(frozen=True, slots=True)
class AsrCapabilities:
    #: `send_audio_nowait(pcm)` may be called from the event loop for every frame (no await,
    #: no task per frame); otherwise audio goes through the awaited `send_audio`
    sync_audio: bool = False
    #: wants `speech_started(ms)` when our VAD hears the caller begin (Whisper keeps pre-roll)
    speech_onset: bool = False
    #: `inject(text)` runs text through the stream as if it had been heard (the fake; tests)
    text_injection: bool = False
    #: the recogniser ends a turn itself after this much silence (Deepgram's `endpointing`);
    #: 0 = only when asked (`flush`). Preemptive replies then start before it does.
    endpointing_ms: int = 0
    #: `partial()` transcribes the turn so far on request and `end_turn_with()` ends the turn
    #: with it (a non-streaming recogniser: Whisper). The listener asks at a short pause, so
    #: the end of turn can depend on what was said and the final needs no second decode.
    partial_on_demand: bool = False


class AsrStream(Protocol):
    """One caller's audio stream (one per call). Feed audio as it arrives; read transcripts."""

    capabilities: AsrCapabilities

    async def send_audio(self, pcm: bytes) -> None: ...

    def send_audio_nowait(self, pcm: bytes) -> None: ...

    def speech_started(self, speech_ms: int = 0) -> None: ...

    def inject(self, text: str) -> None: ...

    async def flush(self) -> None:
        """Local end-of-turn decided by our VAD: finalise what was heard so far."""

    async def partial(self) -> tuple[str, float] | None:
        """(text, confidence) of the turn so far, the turn left open; None when the
        recogniser has no time for it now (shared budget) or nothing was heard yet."""

    def end_turn_with(self, text: str, confidence: float) -> None:
        """End the turn with these words (a `partial()` after which only silence came): the
        final `Transcript` follows on `transcripts()` and the turn's audio is dropped."""

    def transcripts(self) -> AsyncIterator[Transcript]: ...

    async def close(self) -> None: ...


class AsrStreamBase:
    """Refusing defaults for the optional methods; `capabilities` says which are real."""

    capabilities = AsrCapabilities()

    def send_audio_nowait(self, pcm: bytes) -> None:
        raise NotImplementedError("this ASR stream has no synchronous audio path")

    def speech_started(self, speech_ms: int = 0) -> None:
        return None

    def inject(self, text: str) -> None:
        raise NotImplementedError("this ASR stream cannot take injected text")

    async def partial(self) -> tuple[str, float] | None:
        return None

    def end_turn_with(self, text: str, confidence: float) -> None:
        raise NotImplementedError("this ASR stream cannot end a turn with given words")


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


@dataclass(frozen=True, slots=True)
class TtsCapabilities:
    #: `synthesize_stream` keeps ONE utterance open while text arrives (Cartesia contexts with
    #: `continue`, ElevenLabs stream-input, AVR's stream): an LLM reply is fed to it token by
    #: token. Otherwise the reply is cut into clauses and each is synthesised on its own.
    continuation: bool = False
    #: how many syntheses may run at once (prompt warm-up); 0 = the warm-up's default
    max_concurrency: int = 0
    #: the local model file that decides how text sounds (part of the prompt-audio cache key)
    model_file: str = ""


@runtime_checkable
class TtsProvider(Protocol):
    name: str
    #: identifies the voice for the prompt-audio cache (same key + text -> same audio)
    voice_id: str
    capabilities: TtsCapabilities

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Audio for a whole text at `sample_rate`, streamed in chunks as it is made.
        Cancelling the consumer stops synthesis (between chunks at the latest)."""
        ...

    def synthesize_stream(
        self, text_chunks: AsyncIterator[str], sample_rate: int
    ) -> AsyncIterator[bytes]:
        """Audio for text that is still arriving (LLM tokens). Providers with a continuation API
        use it; others chunk by clause/sentence (see `flowagent.providers.chunking`).
        Cancelling the consumer closes the utterance on the provider's side."""
        ...


# ---------------------------------------------------------------------------------------------
# VAD
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VadCapabilities:
    #: `probability_now(pcm)` answers at once (cheap detectors: no await per frame)
    synchronous: bool = False
    #: `feed_ms(pcm, ms)` delivers (probability, ms covered) per window to the listener given
    #: to `listen()`, in order (batched models: no coroutine or future per frame)
    callback: bool = False


@dataclass(frozen=True, slots=True)
class TurnTuning:
    """Turn-taking numbers a VAD provider's options set explicitly (None: the flow's settings
    decide). The call's one turn-taking rule is `runner.turn_taking`; see docs/offline-stack.md.
    """

    threshold: float | None = None  # speech probability of a frame that counts as speech
    neg_threshold: float | None = None  # below this a frame is silence (hysteresis)
    min_speech_ms: int | None = None  # speech that opens a caller turn
    min_silence_ms: int | None = None  # silence that ends the caller's turn
    barge_in_threshold: float | None = None  # stricter while our audio plays (echo)
    barge_in_min_ms: int | None = None  # speech over our audio that interrupts it


class VadStream(Protocol):
    """Per-call state of a (possibly shared, batched) VAD model."""

    capabilities: VadCapabilities

    async def probability(self, pcm: bytes) -> float:
        """Speech probability of this frame (any length; the model buffers internally)."""
        ...

    def probability_now(self, pcm: bytes) -> float: ...

    def feed_ms(self, pcm: bytes, ms: int) -> None: ...

    def listen(self, listener: Callable[[float, int], None] | None,
               on_error: Callable[[BaseException], None] | None = None) -> None:
        """Where `feed_ms` results (and a model failure) go; None stops delivery."""

    def reset(self) -> None: ...


class VadStreamBase:
    """Refusing defaults for the optional ways in; `capabilities` says which are real."""

    capabilities = VadCapabilities()

    def probability_now(self, pcm: bytes) -> float:
        raise NotImplementedError("this VAD stream has no synchronous path")

    def feed_ms(self, pcm: bytes, ms: int) -> None:
        raise NotImplementedError("this VAD stream has no callback path")

    def listen(self, listener: Callable[[float, int], None] | None,
               on_error: Callable[[BaseException], None] | None = None) -> None:
        raise NotImplementedError("this VAD stream has no callback path")


@runtime_checkable
class VadProvider(Protocol):
    name: str
    turn_tuning: TurnTuning

    def open_stream(self, sample_rate: int) -> VadStream: ...


# ---------------------------------------------------------------------------------------------
# STS (speech to speech)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StsEvent:
    """kind: audio | transcript_user | transcript_agent | speech_stopped | tool_call |
    interrupted | error | done"""

    kind: str
    audio: bytes = b""
    text: str = ""
    tool_call: LlmToolCall | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StsCapabilities:
    #: sends `speech_stopped` when the caller stops (else we find the end of speech ourselves)
    reports_end_of_speech: bool = False
    #: sends `done` at the end of every response (else a quiet gap ends a reply)
    reports_response_done: bool = False
    #: `respond(instructions)` asks the model to speak now (e.g. a fixed sentence)
    respond: bool = False
    #: `barge_in(item, index, heard_ms)` cancels the response and truncates it to what was
    #: heard (OpenAI Realtime); `interrupt()` only stops it (AVR has neither)
    truncate: bool = False
    interrupt: bool = False


class StsSession(Protocol):
    capabilities: StsCapabilities

    async def send_audio(self, pcm: bytes) -> None: ...

    async def send_tool_result(self, call_id: str, output: dict[str, Any]) -> None: ...

    async def respond(self, instructions: str = "") -> None: ...

    async def barge_in(self, item_id: str = "", content_index: int = 0,
                       audio_end_ms: int | None = None) -> None: ...

    async def interrupt(self) -> None: ...

    def events(self) -> AsyncIterator[StsEvent]: ...

    async def close(self) -> None: ...


class StsSessionBase:
    """Refusing defaults for the optional requests; `capabilities` says which are real."""

    capabilities = StsCapabilities()

    async def respond(self, instructions: str = "") -> None:
        raise NotImplementedError("this speech-to-speech session cannot be asked to speak")

    async def barge_in(self, item_id: str = "", content_index: int = 0,
                       audio_end_ms: int | None = None) -> None:
        raise NotImplementedError("this speech-to-speech session cannot truncate a reply")

    async def interrupt(self) -> None:
        raise NotImplementedError("this speech-to-speech session cannot be interrupted")


@runtime_checkable
class StsProvider(Protocol):
    name: str

    async def connect(
        self, instructions: str, tools: tuple[LlmToolSpec, ...], sample_rate: int
    ) -> StsSession: ...

    def with_url(self, url: str) -> StsProvider:
        """The same provider at another endpoint, for one call (the `call_initiated` webhook's
        `sts_url`). Raises ValueError when the URL is refused or cannot be overridden."""
        ...
