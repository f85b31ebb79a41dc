"""The ONE turn-taking rule: speech probabilities in, "the caller started / stopped / is talking
over us" out.

Why one place: a VAD only says "this 20-32 ms looks like speech with probability p". Deciding that
the caller STARTED a turn, FINISHED it, or is INTERRUPTING our audio needs durations, and
interruption needs a stricter rule: while we play, our own voice comes back as line echo and no
VAD can tell it from the caller's. So while our audio plays a frame must be more probable
(`barge_in_threshold`) and the speech must last longer (`barge_in_min_ms`) before we stop.

The numbers come from the flow's `settings` (end-of-turn silence, barge-in minimum speech and
sensitivity); a VAD provider's options may set any of them explicitly (`TurnTuning`, e.g.
`silero: {min_silence_ms: 500}`), and then they win — the most specific word a flow author wrote.
Time is counted in audio (the ms each probability covers), not on a wall clock, so the rule is
deterministic and testable with recorded audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flowagent.flow.compiler import Settings
from flowagent.providers.base import TurnTuning

#: speech probability above which a frame counts as speech when we are not playing
SPEECH_THRESHOLD = 0.5
#: speech needed to open a caller turn when nothing of ours plays (nothing to protect)
TURN_START_MS = 100
#: silence that resets a run of speech that has not opened a turn yet (a click, a breath)
SPEECH_RESET_MS = 60


class TurnSignal(Enum):
    SPEECH_START = "speech_start"  # the caller began a turn (we were quiet)
    BARGE_IN = "barge_in"  # the caller is talking over our audio
    END_OF_TURN = "end_of_turn"  # the caller stopped: silence long enough after speech


@dataclass(frozen=True, slots=True)
class TurnRules:
    threshold: float = SPEECH_THRESHOLD
    #: below this a frame counts as silence; between it and `threshold` nothing changes
    #: (hysteresis). Equal to `threshold` by default: no band.
    neg_threshold: float = SPEECH_THRESHOLD
    turn_start_ms: int = TURN_START_MS
    end_of_turn_ms: int = 600
    barge_in_threshold: float = 0.75
    barge_in_min_ms: int = 250
    speech_reset_ms: int = SPEECH_RESET_MS
    #: with a recogniser that transcribes on request: the silence that ends a turn whose words
    #: already answer the question (`AnswerFit.COMPLETE`), and one whose words do not yet
    #: (half a postcode, "my name is ..."); 0 = end of turn by silence alone
    answer_end_ms: int = 0
    half_answer_end_ms: int = 0

    @classmethod
    def for_flow(cls, settings: Settings, tuning: TurnTuning | None = None) -> TurnRules:
        """The rule a flow's calls use: its settings, then the VAD provider's explicit options.
        `barge_in_sensitivity` 0..1 maps to the threshold while we play: 0.5 -> 0.75, 1 -> 0.5
        (as easy as a normal turn), 0 -> 1.0 (never)."""
        t = tuning or TurnTuning()
        threshold = SPEECH_THRESHOLD if t.threshold is None else t.threshold
        barge = 1.0 - (1.0 - threshold) * settings.barge_in_sensitivity
        return cls(
            threshold=threshold,
            neg_threshold=threshold if t.neg_threshold is None else min(t.neg_threshold,
                                                                        threshold),
            turn_start_ms=TURN_START_MS if t.min_speech_ms is None else t.min_speech_ms,
            end_of_turn_ms=(settings.end_of_turn_ms if t.min_silence_ms is None
                            else t.min_silence_ms),
            barge_in_threshold=barge if t.barge_in_threshold is None else t.barge_in_threshold,
            barge_in_min_ms=(settings.barge_in_min_speech_ms if t.barge_in_min_ms is None
                             else t.barge_in_min_ms),
            answer_end_ms=settings.answer_end_ms,
            half_answer_end_ms=settings.half_answer_end_ms,
        )


class TurnTaker:
    """One call's turn state. `update(p, ms, playing=...)` per VAD result; act on the signal.

    A barge-in signal repeats for every frame while it holds (the owner decides whether the
    interruption is allowed right now; when it is not, the caller's speech opens a turn once our
    audio has finished)."""

    __slots__ = ("end_ms", "hint", "hint_silence_ms", "in_speech", "rules", "silence_ms",
                 "speech_ms")

    def __init__(self, rules: TurnRules) -> None:
        self.rules = rules
        self.in_speech = False
        self.speech_ms = 0
        self.silence_ms = 0
        #: while we play: a window passed the normal speech threshold (not yet the stricter
        #: barge-in one) and no `speech_reset_ms` of silence has followed — the first sign
        self.hint = False
        self.hint_silence_ms = 0
        #: the silence that ends the turn in progress: `rules.end_of_turn_ms` unless what was
        #: said so far moved it (`end_after`)
        self.end_ms = rules.end_of_turn_ms

    def end_after(self, ms: int) -> bool:
        """This turn ends after `ms` of silence (what was said so far decided it); True when
        the silence in progress is already that long."""
        self.end_ms = ms
        return self.in_speech and self.silence_ms >= ms

    def reset(self) -> None:
        self.in_speech = False
        self.speech_ms = 0
        self.silence_ms = 0

    def begin(self) -> None:
        """A turn is open (we heard speech, or the caller interrupted us)."""
        self.in_speech = True
        self.end_ms = self.rules.end_of_turn_ms

    def end(self) -> None:
        """The turn is over (our end of turn, or the recogniser's)."""
        self.in_speech = False
        self.speech_ms = 0

    @property
    def onset(self) -> bool:
        """While we play: the first sign of caller speech — a window passed the NORMAL speech
        threshold (Silero needs ~100 ms more to pass the stricter barge-in one) and no
        `speech_reset_ms` of silence has followed. This is when our audio is ducked: a cough, a
        click or our own echo ends the run and the audio comes back; real speech becomes
        BARGE_IN once it has lasted `barge_in_min_ms` above the barge-in threshold."""
        return self.hint or self.speech_ms > 0

    def update(self, p: float, ms: int, playing: bool) -> TurnSignal | None:
        r = self.rules
        if p >= (r.barge_in_threshold if playing else r.threshold):
            self.speech_ms += ms
            self.silence_ms = 0
        elif p < r.neg_threshold or playing:
            self.silence_ms += ms
            if self.silence_ms >= r.speech_reset_ms:
                self.speech_ms = 0
        if playing:
            if p >= r.threshold:
                self.hint = True
                self.hint_silence_ms = 0
            elif self.hint:
                self.hint_silence_ms += ms
                if self.hint_silence_ms >= r.speech_reset_ms:
                    self.hint = False
            return TurnSignal.BARGE_IN if self.speech_ms >= r.barge_in_min_ms else None
        self.hint = False
        if not self.in_speech:
            return TurnSignal.SPEECH_START if self.speech_ms >= r.turn_start_ms else None
        if self.silence_ms >= self.end_ms:
            return TurnSignal.END_OF_TURN
        return None
