"""Whisper's stock phrases: what it "hears" in noise, music or breath, dropped before the engine.

Why: Whisper was trained on subtitled video, so audio with no words in it (a cough, line noise,
hold music, a TV in the room) can come out as the subtitles' stock lines — "Thank you for
watching", "Please subscribe", "Subtitles by the Amara.org community", or a lone "you". On a
phone line that becomes a caller turn the flow must answer. Reports of the same list in other
projects: the Whisper repository's discussion of hallucinations on silence, and the phrase
filters of several dictation and meeting tools (all match the *whole* transcript, never a part
of it, because a match blanks the turn).

Two tiers, precision first:
- `ALWAYS`: lines nobody says to a removals firm or a dental practice (video outros, subtitle
  credits, sound tags). Dropped whenever they are the whole transcript.
- `UNSURE`: words a caller does say ("thank you", "bye", "you") but which Whisper also makes
  from noise. Dropped only when Whisper itself was unsure (`confidence` below
  `unsure_below`), so a clearly spoken "Thank you." still reaches the flow.

A transcript is a match when, lower-cased and without punctuation, it is one listed phrase or
the same listed phrase repeated ("Thank you. Thank you.").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ALWAYS: tuple[str, ...] = (
    "thank you for watching",
    "thanks for watching",
    "thank you so much for watching",
    "thank you very much for watching",
    "thank you for watching and see you next time",
    "thanks for watching and see you next time",
    "thank you for listening",
    "thanks for listening",
    "please subscribe",
    "please subscribe to my channel",
    "subscribe to my channel",
    "like and subscribe",
    "please like and subscribe",
    "dont forget to like and subscribe",
    "dont forget to subscribe",
    "see you in the next video",
    "see you next time",
    "ill see you next time",
    "ill see you in the next video",
    "subtitles by the amaraorg community",
    "subtitles by the amara org community",
    "transcription by castingwords",
    "transcribed by otterai",
    "captions by",
    "music",
    "applause",
    "laughter",
    "silence",
    "blank_audio",
    "inaudible",
    "upbeat music",
    "soft music",
)
UNSURE: tuple[str, ...] = (
    "you",
    "thank you",
    "thank you very much",
    "thank you so much",
    "thanks",
    "bye",
    "bye bye",
    "okay",
    "so",
    "oh",
    "uh",
    "um",
    "hmm",
    "the",
    "i",
)

def normalise(text: str) -> str:
    """Lower case, punctuation and sound-tag brackets gone, apostrophes dropped, one space."""
    text = text.lower().replace("’", "'").replace("'", "")
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class HallucinationFilter:
    """Decides whether a whole Whisper transcript is a stock phrase (see the module doc)."""

    always: frozenset[str]
    unsure: frozenset[str]
    unsure_below: float = 0.6

    @classmethod
    def build(cls, always: Iterable[str] | None = None, unsure: Iterable[str] | None = None,
              unsure_below: float = 0.6) -> HallucinationFilter:
        return cls(frozenset(normalise(p) for p in (ALWAYS if always is None else always)),
                   frozenset(normalise(p) for p in (UNSURE if unsure is None else unsure)),
                   unsure_below)

    def drops(self, text: str, confidence: float) -> bool:
        said = normalise(text)
        if not said:
            return False
        phrase = _repeated_unit(said)
        if phrase in self.always:
            return True
        return phrase in self.unsure and confidence < self.unsure_below


def _repeated_unit(said: str) -> str:
    """"thank you thank you" -> "thank you" (the text itself when it is no repetition)."""
    words = said.split()
    for size in range(1, len(words) // 2 + 1):
        if len(words) % size == 0 and words == words[:size] * (len(words) // size):
            return " ".join(words[:size])
    return said
