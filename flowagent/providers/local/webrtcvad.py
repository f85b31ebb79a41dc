"""WebRTC VAD: a very cheap first gate (microseconds per frame, no model file).

Why only a gate: measured, it keeps up in quiet lines but collapses at 0 dB SNR noise where
Silero still works, so it is useful to skip Silero on obviously silent frames, not as the only
end-of-turn detector. It answers speech / not speech per 10/20/30 ms frame; `probability()`
returns the fraction of complete 20 ms frames in the audio judged speech (0.0 - 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowagent.providers.base import ProviderError, TurnTuning, VadCapabilities, VadStreamBase

_RATES = (8000, 16000, 32000, 48000)


@dataclass
class WebrtcStream(VadStreamBase):
    capabilities = VadCapabilities(synchronous=True)
    factory: Any  # () -> webrtcvad.Vad (it keeps hangover state, so reset makes a new one)
    sample_rate: int
    _buffer: bytes = field(default=b"")
    last: float = 0.0
    vad: Any = None

    def __post_init__(self) -> None:
        self.vad = self.factory()

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate // 50 * 2  # 20 ms of s16le

    async def probability(self, pcm: bytes) -> float:
        return self.probability_now(pcm)

    def probability_now(self, pcm: bytes) -> float:
        """webrtcvad is a small C library: answered at once, no await per frame."""
        self._buffer += pcm
        size = self.frame_bytes
        votes = []
        while len(self._buffer) >= size:
            frame, self._buffer = self._buffer[:size], self._buffer[size:]
            votes.append(self.vad.is_speech(frame, self.sample_rate))
        if votes:
            self.last = sum(votes) / len(votes)
        return self.last

    def reset(self) -> None:
        self._buffer = b""
        self.last = 0.0
        self.vad = self.factory()


class WebrtcVad:
    """The `webrtc` VAD provider. `aggressiveness` 0 (lenient) .. 3 (strict)."""

    name = "webrtc"

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ProviderError("webrtc aggressiveness must be 0, 1, 2 or 3.", provider="webrtc")
        try:
            import webrtcvad
        except ImportError as exc:
            raise ProviderError(
                "The webrtc VAD needs the `webrtcvad-wheels` package; run "
                "`pip install webrtcvad-wheels`.",
                provider="webrtc",
            ) from exc
        self._module = webrtcvad
        self.aggressiveness = aggressiveness
        self.turn_tuning = TurnTuning()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> WebrtcVad:
        return cls(int(options.get("aggressiveness", 2)))

    def open_stream(self, sample_rate: int) -> WebrtcStream:
        if sample_rate not in _RATES:
            raise ProviderError(
                f"webrtc VAD runs at 8, 16, 32 or 48 kHz, not {sample_rate} Hz.", provider="webrtc"
            )
        return WebrtcStream(lambda: self._module.Vad(self.aggressiveness), sample_rate)
