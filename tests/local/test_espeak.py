"""espeak-ng fallback voice: speaks when the program is installed, plain error when not."""

from __future__ import annotations

import pytest

from flowagent.providers.base import ProviderError
from flowagent.providers.local.espeak import EspeakTts, espeak_binary


@pytest.mark.skipif(espeak_binary() is None, reason="espeak-ng is not installed here")
async def test_espeak_speaks_at_the_call_rate() -> None:
    tts = EspeakTts()
    chunks = [c async for c in tts.synthesize("Hello. Goodbye.", 8000)]
    assert len(chunks) == 2
    seconds = sum(len(c) for c in chunks) / 2 / 8000
    assert 0.5 < seconds < 4.0


def test_missing_espeak_is_a_plain_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ProviderError, match="not installed"):
        EspeakTts()
