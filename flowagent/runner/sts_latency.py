"""Per-turn latency for speech-to-speech calls: when did the caller stop speaking?

Why this module: an STS provider hears the caller itself, so the pipeline's end-of-turn
detector (our VAD + ASR) does not run. OpenAI Realtime tells us when its VAD decided the caller
stopped (`input_audio_buffer.speech_stopped`); an AVR STS service tells us nothing. For those,
`LocalEndpointer` is a cheap energy detector on the caller's frames (one RMS per frame, no
model) that only *measures* — it never decides turns, the provider does.

The end of speech it reports is the time of the caller's last loud frame (the true end of their
words). It is known for sure only after `silence_ms` of quiet, or earlier when the provider
starts replying after at least `min_gap_ms` of quiet (a fast service may answer before our
silence window ends) — `claim()` covers that case.
"""

from __future__ import annotations

from flowagent import audio

#: RMS (0..1) above which a caller frame counts as speech (about -40 dBFS; line silence is lower)
SPEECH_RMS = 0.01
#: speech needed before a turn counts (a click or a cough is not a turn)
MIN_SPEECH_MS = 120
#: quiet after speech that ends the turn by itself
SILENCE_MS = 500
#: quiet after speech that lets the provider's first reply audio end the turn early
MIN_GAP_MS = 60


class LocalEndpointer:
    """Feed caller frames with `feed(pcm, ms, now)`; returns an end-of-speech time (monotonic
    seconds, the last loud frame) once a turn is over, else None."""

    __slots__ = ("_last_loud", "_quiet_ms", "_speech_ms", "min_gap_ms", "silence_ms")

    def __init__(self, silence_ms: int = SILENCE_MS, min_gap_ms: int = MIN_GAP_MS) -> None:
        self.silence_ms = silence_ms
        self.min_gap_ms = min_gap_ms
        self._speech_ms = 0.0
        self._quiet_ms = 0.0
        self._last_loud = 0.0

    def feed(self, pcm: bytes, ms: float, now: float) -> float | None:
        if audio.rms(pcm) >= SPEECH_RMS:
            self._speech_ms += ms
            self._quiet_ms = 0.0
            self._last_loud = now
            return None
        self._quiet_ms += ms
        if self._speech_ms < MIN_SPEECH_MS:
            if self._quiet_ms >= self.silence_ms:
                self._speech_ms = 0.0  # a blip, not a turn
            return None
        if self._quiet_ms >= self.silence_ms:
            return self._take()
        return None

    def claim(self) -> float | None:
        """The provider began a reply: if the caller has been quiet long enough after a turn,
        that turn is over now (its end of speech), else None."""
        if self._speech_ms >= MIN_SPEECH_MS and self._quiet_ms >= self.min_gap_ms:
            return self._take()
        return None

    def _take(self) -> float:
        self._speech_ms = 0.0
        self._quiet_ms = 0.0
        return self._last_loud
