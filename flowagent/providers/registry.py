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
    options: dict[str, str]
    summary: str = ""
    #: options that must be given (often an API key as ${ENV})
    required: tuple[str, ...] = ()
    #: True when it needs the network (doctor checks reachability; default stack avoids it)
    cloud: bool = False


_SPECS: list[ProviderSpec] = [
    # --- fakes: selectable from a flow for tests and benchmarks -------------------------------
    ProviderSpec("asr", "fake", "flowagent.providers.fake:FakeAsr",
                 {"latency_ms": "number", "transcripts": "array", "fail_after": "integer"},
                 "Turns each end of speech into the next scripted transcript."),
    ProviderSpec("llm", "fake", "flowagent.providers.fake:FakeLlm",
                 {"first_token_ms": "number", "token_ms": "number", "tokens": "integer",
                  "replies": "array", "fail": "boolean"},
                 "Streams scripted replies or N tokens at a set pace."),
    ProviderSpec("tts", "fake", "flowagent.providers.fake:FakeTts",
                 {"first_audio_ms": "number", "ms_per_word": "number", "tone_hz": "number"},
                 "Makes a tone of a set length per word."),
    ProviderSpec("vad", "fake", "flowagent.providers.fake:FakeVad",
                 {"threshold": "number"},
                 "Energy-based speech detector (no model)."),
    # --- embedded offline stack --------------------------------------------------------------
    ProviderSpec("asr", "whisper", "flowagent.providers.local_whisper:WhisperAsr",
                 {"model": "string", "threads": "integer", "beam_size": "integer",
                  "preroll_ms": "integer", "max_queue": "integer"},
                 "faster-whisper, offline; model tiny.en (bundled) or base."),
    ProviderSpec("tts", "piper", "flowagent.providers.local_piper:PiperTts",
                 {"voice": "string", "length_scale": "number", "speaker": "integer"},
                 "Piper neural TTS, offline; voice joe (bundled)."),
    ProviderSpec("tts", "espeak", "flowagent.providers.local_espeak:EspeakTts",
                 {"voice": "string", "speed": "integer"},
                 "espeak-ng, lightweight fallback voice where installed."),
    ProviderSpec("vad", "silero", "flowagent.providers.local_silero:SileroVad",
                 {"threshold": "number", "batch_ms": "number"},
                 "Silero VAD (ONNX), one shared batched session for all calls."),
    ProviderSpec("vad", "webrtc", "flowagent.providers.local_webrtcvad:WebrtcVad",
                 {"aggressiveness": "integer"},
                 "WebRTC VAD, cheap gate."),
    # --- cloud and AVR-compatible providers (owned by the cloud-providers work) ----------------
    # (entries added here)
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
