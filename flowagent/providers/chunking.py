"""Clause/sentence chunking of streamed LLM text, so TTS can start before the reply is complete.

Why: a TTS engine without a continuation API needs whole phrases to sound natural, but waiting
for the full LLM reply adds its whole generation time to the caller's wait. Cutting at sentence
ends (and at clause commas once a phrase is long enough) starts speech after the first few
words while keeping prosody acceptable.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"[,;:—–]\s+")
#: a trailing abbreviation must not end a sentence ("Mr. Smith", "e.g. this")
_ABBREV = re.compile(r"\b(?:mr|mrs|ms|dr|st|no|vs|etc|e\.g|i\.e|approx)\.\s+$", re.IGNORECASE)


#: a first chunk of at most this many words is followed by a bridge of `BRIDGE_WORDS` words
BRIDGE_AFTER_WORDS = 2
BRIDGE_WORDS = 4


class Chunker:
    """Feed text deltas; get back speakable chunks. `flush()` returns the remainder."""

    def __init__(self, min_clause_chars: int = 40, max_chars: int = 200,
                 first_clause_chars: int = 4) -> None:
        self.min_clause_chars = min_clause_chars
        self.max_chars = max_chars
        #: the first chunk may be a short clause ("Sure, ..."): speech starts sooner
        self.first_clause_chars = first_clause_chars
        self._first = True
        #: the first chunk was a word or two ("Well,"): it plays for a fraction of a second, so
        #: the next chunk is cut after a few words instead of at its clause end — waiting for
        #: the whole clause left the caller a silent hole after the first word
        self._bridge = False
        self._buf = ""

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut <= 0:
                break
            chunk, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if chunk:
                out.append(chunk)
                self._bridge = self._first and len(chunk.split()) <= BRIDGE_AFTER_WORDS
                self._first = False
        return out

    def flush(self) -> str:
        rest, self._buf = self._buf.strip(), ""
        return rest

    def _find_cut(self) -> int:
        buf = self._buf
        for m in _SENTENCE_END.finditer(buf):
            if _ABBREV.search(buf[: m.end()]):
                continue
            return m.end()
        min_clause = self.first_clause_chars if self._first else self.min_clause_chars
        if len(buf) >= min_clause:
            for m in _CLAUSE_END.finditer(buf):
                if m.start() >= min_clause // 2:
                    return m.end()
        if self._bridge:
            words = list(re.finditer(r"\S+\s+", buf))
            if len(words) >= BRIDGE_WORDS:
                return words[BRIDGE_WORDS - 1].end()
        if len(buf) >= self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return 0


async def chunk_stream(
    deltas: AsyncIterator[str], min_clause_chars: int = 40, max_chars: int = 200
) -> AsyncIterator[str]:
    """Async adapter: LLM text deltas in, speakable chunks out."""
    chunker = Chunker(min_clause_chars, max_chars)
    async for delta in deltas:
        for chunk in chunker.feed(delta):
            yield chunk
    rest = chunker.flush()
    if rest:
        yield rest
