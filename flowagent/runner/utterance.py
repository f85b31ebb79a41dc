"""One handle per utterance: what we are saying, and how much of it the caller has heard.

Why: when the caller interrupts, the engine (and the LLM history) must be told the words that
really reached the caller's ear, not the words we meant to say. Audio is made piece by piece (a
cached prompt whole, TTS clause by clause, a continuation stream as the LLM writes), so each
handle keeps its text pieces with the byte range of their audio; the played byte count the out
stream reports then maps back to words.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Segment:
    """A piece of text and where its audio lies in the utterance (end None: still growing)."""

    text: str
    start: int
    end: int | None = None


@dataclass
class Utterance:
    say_id: int
    text: str = ""
    interruptible: bool = True
    expect_reply: bool = False
    segments: list[Segment] = field(default_factory=list)
    produced: int = 0  # bytes of audio made so far

    def begin_segment(self, text: str) -> Segment:
        seg = Segment(text, self.produced)
        self.segments.append(seg)
        return seg

    def whole(self, text: str, nbytes: int) -> None:
        """All of the utterance's audio at once (a cached prompt)."""
        self.segments.append(Segment(text, 0, nbytes))
        self.produced = nbytes

    def heard(self, played: int) -> str:
        """The words the caller heard, given `played` bytes of this utterance went out."""
        words: list[str] = []
        for seg in self.segments:
            if played <= seg.start:
                break
            seg_words = seg.text.split()
            stop = self.produced if seg.end is None else seg.end
            if seg.end is not None and played >= seg.end:
                words += seg_words
                continue
            frac = (played - seg.start) / max(1, stop - seg.start)
            words += seg_words[: int(len(seg_words) * frac)]
            break
        return " ".join(words)
