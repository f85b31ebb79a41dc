"""The default offline stack: loaded once with timings, and the registry's providers share it."""

from __future__ import annotations

from flowagent.providers import registry
from flowagent.providers.local.stack import load_default_stack, missing_packages


def test_default_stack_loads_once_and_registry_shares_the_models() -> None:
    stack = load_default_stack()
    assert missing_packages() == []
    assert set(stack.load_s) == {"whisper tiny.en", "piper joe", "silero", "minilm"}
    assert "offline speech stack loaded: whisper tiny.en" in stack.summary()
    asr = registry.create("asr", "whisper", {})
    tts = registry.create("tts", "piper", {"length_scale": 1.1})
    vad = registry.create("vad", "silero", {"threshold": 0.6})
    assert asr.engine is stack.asr.engine
    assert tts.voice is stack.tts.voice
    assert vad.model is stack.vad.model
    assert tts.voice_id != stack.tts.voice_id  # a different speed is different cached audio
    again = load_default_stack()
    assert again.asr.engine is stack.asr.engine
