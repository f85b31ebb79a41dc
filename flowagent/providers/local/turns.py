"""Turn-taking rules on top of any VAD's per-frame speech probability.

Why: the VAD only says "this 32 ms looks like speech with probability p". Deciding that the
caller STARTED a turn, FINISHED it (end of turn -> `AsrStream.flush()`), or is INTERRUPTING our
audio (barge-in) needs durations and hysteresis, and barge-in needs a stricter rule: while we
play, our own echo comes back on the line and no VAD can tell it from the caller. So while
playing, speech must be more probable (`barge_in_threshold`, default 0.8 vs 0.5) for longer
(`barge_in_min_ms`, default 300 ms vs 200 ms) before we stop our audio.

For the session (runtime): one `TurnDetector` per call; for each inbound frame call
`detector.update(probability, frame_ms, playing=<our audio is playing>)` and act on the event it
returns: `"speech_start"` (caller began a turn: call `AsrStream.speech_started()` if the ASR
stream has it), `"barge_in"` (stop our audio now; also a speech start), `"end_of_turn"` (call
`AsrStream.flush()`). Time is counted in audio, not wall clock, so it is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TurnEvent = Literal["speech_start", "barge_in", "end_of_turn"]


@dataclass(frozen=True, slots=True)
class VadRules:
    """Thresholds and durations for turn-taking; provider options of the same names set them."""

    threshold: float = 0.5  # probability above which a frame counts as speech
    #: below this a frame counts as silence (hysteresis: between the two, nothing changes)
    neg_threshold: float = 0.35
    min_speech_ms: int = 200  # speech must last this long to start a turn
    min_silence_ms: int = 600  # silence after speech that ends the turn
    barge_in_threshold: float = 0.8  # stricter while our audio is playing (echo)
    barge_in_min_ms: int = 300

    @classmethod
    def from_options(cls, options: dict[str, Any], *, threshold: float = 0.5) -> VadRules:
        d = cls()
        neg = options.get("neg_threshold", min(d.neg_threshold, max(threshold - 0.15, 0.05)))
        return cls(
            threshold=threshold,
            neg_threshold=float(neg),
            min_speech_ms=int(options.get("min_speech_ms", d.min_speech_ms)),
            min_silence_ms=int(options.get("min_silence_ms", d.min_silence_ms)),
            barge_in_threshold=float(options.get("barge_in_threshold", d.barge_in_threshold)),
            barge_in_min_ms=int(options.get("barge_in_min_ms", d.barge_in_min_ms)),
        )


class TurnDetector:
    """Per-call state machine: idle -> (speech sustained) -> in turn -> (silence) -> idle."""

    def __init__(self, rules: VadRules | None = None) -> None:
        self.rules = rules or VadRules()
        self.in_turn = False
        self._speech_ms = 0.0
        self._silence_ms = 0.0

    def reset(self) -> None:
        self.in_turn = False
        self._speech_ms = 0.0
        self._silence_ms = 0.0

    def update(self, probability: float, frame_ms: float, *, playing: bool = False) -> (
        TurnEvent | None
    ):
        r = self.rules
        if not self.in_turn:
            threshold = r.barge_in_threshold if playing else r.threshold
            needed = r.barge_in_min_ms if playing else r.min_speech_ms
            if probability >= threshold:
                self._speech_ms += frame_ms
                if self._speech_ms >= needed:
                    self.in_turn = True
                    self._silence_ms = 0.0
                    return "barge_in" if playing else "speech_start"
            elif probability < r.neg_threshold or playing:
                # while playing, the sustained run must be unbroken; otherwise only clear
                # silence resets the count (hysteresis)
                self._speech_ms = 0.0
            return None
        if probability < r.neg_threshold:
            self._silence_ms += frame_ms
            if self._silence_ms >= r.min_silence_ms:
                self.in_turn = False
                self._speech_ms = 0.0
                self._silence_ms = 0.0
                return "end_of_turn"
        elif probability >= r.threshold:
            self._silence_ms = 0.0
        return None
