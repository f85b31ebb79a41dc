"""Which providers exist, the options each accepts, and how to build one.

The validator reads this table to flag unknown provider names and options without importing any
provider module (CLI start-up stays fast); the runtime calls `create()` which imports the module
lazily. Each provider module defines an options dataclass and a class taking it.

To add a provider: write `flowagent/providers/<name>.py` with a class implementing the protocol
from `providers/base.py` and a `from_options(options: dict) -> instance` classmethod, then add
one `ProviderSpec` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

KINDS = ("asr", "llm", "tts", "vad", "sts")


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    kind: str
    name: str
    target: str  # "module:Class" with a `from_options(dict)` classmethod
    #: option name -> JSON type name ("string", "integer", "number", "boolean", "array", "object")
    #: or "dbfs_or_off" (a level in dBFS, or off)
    options: dict[str, str]
    summary: str = ""
    #: options that must be given (often an API key as ${ENV})
    required: tuple[str, ...] = ()
    #: True when it needs the network (doctor checks reachability; default stack avoids it)
    cloud: bool = False


_SPECS: list[ProviderSpec] = [
    # --- fakes: selectable from a flow for tests and benchmarks -------------------------------
    ProviderSpec("asr", "fake", "flowagent.providers.fake:FakeAsr",
                 {"latency_ms": "number", "latency_ms_max": "number", "transcripts": "array",
                  "fail_after": "integer", "interim_ms": "number",
                  "interim_mismatch": "number"},
                 "Turns each end of speech into the next scripted transcript."),
    ProviderSpec("llm", "fake", "flowagent.providers.fake:FakeLlm",
                 {"first_token_ms": "number", "first_token_ms_max": "number", "token_ms": "number",
                  "tokens": "integer", "replies": "array", "fail": "boolean",
                  "echo": "boolean"},
                 "Streams scripted replies or N tokens at a set pace."),
    ProviderSpec("tts", "fake", "flowagent.providers.fake:FakeTts",
                 {"first_audio_ms": "number", "first_audio_ms_max": "number",
                  "ms_per_word": "number", "tone_hz": "number", "word_tones": "boolean",
                  "fail": "boolean", "continuation": "boolean", "stall_after": "integer"},
                 "Makes a tone of a set length per word."),
    ProviderSpec("vad", "fake", "flowagent.providers.fake:FakeVad",
                 {"threshold": "number", "fail_after": "integer"},
                 "Energy-based speech detector (no model)."),
    # --- embedded offline stack --------------------------------------------------------------
    ProviderSpec("asr", "whisper", "flowagent.providers.local.whisper:WhisperAsr",
                 {"model": "string", "threads": "integer", "beam_size": "integer",
                  "preroll_ms": "integer", "max_queue": "integer", "max_batch": "integer",
                  "window_s": "number", "max_turn_s": "number",
                  "hallucination_filter": "boolean", "hallucination_phrases": "array",
                  "hallucination_unsure": "array", "hallucination_unsure_below": "number"},
                 "faster-whisper, offline; model tiny.en (bundled) or base."),
    ProviderSpec("tts", "piper", "flowagent.providers.local.piper:PiperTts",
                 {"voice": "string", "length_scale": "number", "speaker": "integer",
                  "threads": "integer"},
                 "Piper neural TTS, offline; voice joe (bundled)."),
    ProviderSpec("tts", "espeak", "flowagent.providers.local.espeak:EspeakTts",
                 {"voice": "string", "speed": "integer"},
                 "espeak-ng, lightweight fallback voice where installed."),
    ProviderSpec("vad", "silero", "flowagent.providers.local.silero:SileroVad",
                 {"threshold": "number", "batch_ms": "number", "max_batch": "integer",
                  "neg_threshold": "number", "min_speech_ms": "integer",
                  "min_silence_ms": "integer", "barge_in_threshold": "number",
                  "barge_in_min_ms": "integer", "silence_gate_dbfs": "dbfs_or_off",
                  "sessions": "integer", "max_lag_ms": "integer"},
                 "Silero VAD (ONNX), one shared batched session for all calls."),
    ProviderSpec("vad", "webrtc", "flowagent.providers.local.webrtcvad:WebrtcVad",
                 {"aggressiveness": "integer"},
                 "WebRTC VAD, cheap gate."),
    # --- cloud and AVR-compatible providers (owned by the cloud-providers work) ----------------
    ProviderSpec("asr", "deepgram", "flowagent.providers.deepgram:DeepgramAsr",
                 {"api_key": "string", "model": "string", "language": "string", "url": "string",
                  "interim_results": "boolean", "endpointing_ms": "integer",
                  "utterance_end_ms": "integer", "vad_events": "boolean",
                  "smart_format": "boolean", "keywords": "array", "keyterms": "array",
                  "keepalive_s": "number", "connect_timeout_s": "number",
                  "close_timeout_s": "number"},
                 "Deepgram live streaming ASR (WebSocket, linear16, endpointing, keywords).",
                 required=("api_key",), cloud=True),
    ProviderSpec("llm", "openai", "flowagent.providers.openai_chat:OpenAIChatLlm",
                 {"model": "string", "api_key": "string", "base_url": "string",
                  "temperature": "number", "max_tokens": "integer", "timeout_s": "number",
                  "first_token_timeout_s": "number", "idle_timeout_s": "number",
                  "connect_timeout_s": "number", "max_retries": "integer", "headers": "object"},
                 "Any OpenAI-compatible chat completions API over SSE (OpenAI, vLLM, llama.cpp).",
                 cloud=True),
    ProviderSpec("llm", "groq", "flowagent.providers.openai_chat:GroqLlm",
                 {"model": "string", "api_key": "string", "base_url": "string",
                  "temperature": "number", "max_tokens": "integer", "timeout_s": "number",
                  "first_token_timeout_s": "number", "idle_timeout_s": "number",
                  "connect_timeout_s": "number", "max_retries": "integer", "headers": "object"},
                 "Groq (OpenAI-compatible chat completions over SSE).",
                 required=("api_key",), cloud=True),
    ProviderSpec("llm", "ollama", "flowagent.providers.openai_chat:OllamaLlm",
                 {"model": "string", "api_key": "string", "base_url": "string",
                  "temperature": "number", "max_tokens": "integer", "timeout_s": "number",
                  "first_token_timeout_s": "number", "idle_timeout_s": "number",
                  "connect_timeout_s": "number", "max_retries": "integer", "headers": "object"},
                 "Ollama's OpenAI-compatible endpoint (local, no key).",
                 cloud=True),
    ProviderSpec("llm", "anthropic", "flowagent.providers.anthropic:AnthropicLlm",
                 {"api_key": "string", "model": "string", "base_url": "string",
                  "anthropic_version": "string", "max_tokens": "integer",
                  "temperature": "number", "timeout_s": "number",
                  "first_token_timeout_s": "number", "idle_timeout_s": "number",
                  "connect_timeout_s": "number", "max_retries": "integer"},
                 "Anthropic Messages API over SSE with tool use.",
                 required=("api_key",), cloud=True),
    ProviderSpec("tts", "cartesia", "flowagent.providers.cartesia:CartesiaTts",
                 {"api_key": "string", "voice_id": "string", "model_id": "string",
                  "language": "string", "version": "string", "url": "string",
                  "max_buffer_delay_ms": "integer", "speed": "string",
                  "flush_after_s": "number", "context_reuse_s": "number",
                  "connect_timeout_s": "number", "first_audio_timeout_s": "number",
                  "idle_timeout_s": "number"},
                 "Cartesia Sonic over WebSocket, native 8 kHz PCM, continuations.",
                 required=("api_key", "voice_id"), cloud=True),
    ProviderSpec("tts", "elevenlabs", "flowagent.providers.elevenlabs:ElevenLabsTts",
                 {"api_key": "string", "voice_id": "string", "model_id": "string",
                  "output_format": "string", "stability": "number", "similarity_boost": "number",
                  "speed": "number", "chunk_length_schedule": "array", "url": "string",
                  "keepalive_s": "number",
                  "connect_timeout_s": "number", "first_audio_timeout_s": "number",
                  "idle_timeout_s": "number"},
                 "ElevenLabs stream-input WebSocket (ulaw_8000 or pcm_*).",
                 required=("api_key", "voice_id"), cloud=True),
    ProviderSpec("sts", "openai_realtime", "flowagent.providers.openai_realtime:OpenAIRealtimeSts",
                 {"api_key": "string", "model": "string", "url": "string", "voice": "string",
                  "audio_format": "string", "turn_detection": "string",
                  "vad_threshold": "number", "silence_duration_ms": "integer",
                  "prefix_padding_ms": "integer", "transcription_model": "string",
                  "connect_timeout_s": "number", "setup_timeout_s": "number"},
                 "OpenAI Realtime speech-to-speech (G.711 u-law 8 kHz or 24 kHz PCM).",
                 required=("api_key",), cloud=True),
    ProviderSpec("sts", "openai-realtime", "flowagent.providers.openai_realtime:OpenAIRealtimeSts",
                 {"api_key": "string", "model": "string", "url": "string", "voice": "string",
                  "audio_format": "string", "turn_detection": "string",
                  "vad_threshold": "number", "silence_duration_ms": "integer",
                  "prefix_padding_ms": "integer", "transcription_model": "string",
                  "connect_timeout_s": "number", "setup_timeout_s": "number"},
                 "Alias of openai_realtime (the spelling used in docs/flow-format.md).",
                 required=("api_key",), cloud=True),
    ProviderSpec("asr", "avr", "flowagent.providers.avr:AvrAsr",
                 {"url": "string", "connect_timeout_s": "number", "close_timeout_s": "number"},
                 "An AVR ASR service (ASR_URL, /speech-to-text-stream).",
                 required=("url",), cloud=True),
    ProviderSpec("llm", "avr", "flowagent.providers.avr:AvrLlm",
                 {"url": "string", "uuid": "string", "connect_timeout_s": "number",
                  "first_token_timeout_s": "number", "idle_timeout_s": "number"},
                 "An AVR LLM service (LLM_URL, /prompt-stream).",
                 required=("url",), cloud=True),
    ProviderSpec("tts", "avr", "flowagent.providers.avr:AvrTts",
                 {"url": "string", "voice": "string", "connect_timeout_s": "number",
                  "first_audio_timeout_s": "number", "idle_timeout_s": "number"},
                 "An AVR TTS service (TTS_URL, /text-to-speech-stream).",
                 required=("url",), cloud=True),
    ProviderSpec("sts", "avr", "flowagent.providers.avr:AvrSts",
                 {"url": "string", "uuid": "string", "connect_timeout_s": "number"},
                 "An AVR STS service (STS_URL, WebSocket).",
                 required=("url",), cloud=True),
]

_BY_KEY: dict[tuple[str, str], ProviderSpec] = {(s.kind, s.name): s for s in _SPECS}


def register(spec: ProviderSpec) -> None:
    """Add or replace a provider (used by provider modules shipped outside this table)."""
    _BY_KEY[(spec.kind, spec.name)] = spec


def get(kind: str, name: str) -> ProviderSpec | None:
    return _BY_KEY.get((kind, name))


def names(kind: str) -> list[str]:
    return sorted(n for (k, n) in _BY_KEY if k == kind)


def all_specs() -> list[ProviderSpec]:
    return list(_BY_KEY.values())


def create(kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
    """Build a provider instance (imports its module now, not at CLI start-up)."""
    spec = _BY_KEY.get((kind, name))
    if spec is None:
        raise KeyError(f"No {kind} provider called {name!r}; known: {', '.join(names(kind))}")
    module_name, _, cls_name = spec.target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls.from_options(dict(options or {}))
