"""An energy VAD: speech probability from the frame's level. No model, cannot fail.

Why a product class: it is what a call falls back on when its VAD breaks mid-call (a model error
in a batch, a provider bug) — without any VAD a call would only ever reach its no-input
timeouts — and the `fake` VAD used by tests and benchmarks is this same detector.

It runs on every inbound frame, so the per-frame work is one C call (`audioop.rms`, ~0.3 us for
20 ms at 8 kHz) and a multiply: no numpy array per frame. Where audioop is missing (Python
3.13+) `audio.rms` (numpy) gives the same figure.
"""

from __future__ import annotations

from flowagent import audio
from flowagent.providers.base import VadCapabilities, VadStreamBase

_rms = audio.rms_raw


class EnergyVadStream(VadStreamBase):
    """Probability = RMS / (2 * threshold), capped at 1 (threshold: RMS as a fraction of full
    scale at which p = 0.5)."""

    __slots__ = ("_scale", "_threshold")
    capabilities = VadCapabilities(synchronous=True)

    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        #: RMS in raw s16 units -> probability, folded into one factor
        self._scale = 1.0 / (2.0 * threshold * 32768.0)

    async def probability(self, pcm: bytes) -> float:
        return self.probability_now(pcm)

    def probability_now(self, pcm: bytes) -> float:
        if _rms is not None and not len(pcm) & 1:
            p = _rms(pcm, 2) * self._scale
        else:
            p = audio.rms(pcm) * 32768.0 * self._scale
        return 1.0 if p > 1.0 else p

    def reset(self) -> None:
        return None
