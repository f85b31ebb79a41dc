"""Shared text normalisation for caller speech (ASR output or typed chat text).

Every finder in this package works on ``clean(text)``: the spans it reports index into that
string, which is what lets multi-slot extraction keep two parsers off the same words.
"""

from __future__ import annotations

import re
from functools import lru_cache

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "`": "'"})

# Hesitations ASR engines emit verbatim. "like" only counts as a filler between commas
# ("it's, like, three"): "I'd like a quote" must keep it.
_FILLERS = re.compile(r"\b(?:u+m+|u+h+m*|e+r+m*|h+m+|m+h*m+|a+h+)\b[,.]?\s*")
_LIKE_FILLER = re.compile(r",\s*like\s*,")
_OCLOCK = re.compile(r"\bo\s*'?\s*clock\b")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

def wordset(spaced: str) -> frozenset[str]:
    """A set of words written as one whitespace-separated string (readable long lists)."""
    return frozenset(spaced.split())


STOP_WORDS: frozenset[str] = wordset(
    """a an the i me my mine to of for in on at is it its it's be am are was do does did can
    could would will shall should please just um uh er you your yours and so with im i'm id i'd
    ive i've want wanna like some get we our us that this there then really well oh hi hello
    yeah ok okay"""
)


@lru_cache(maxsize=4096)
def clean(text: str) -> str:
    """Lower-case, straighten quotes, drop hesitations, join "o'clock", squeeze spaces.

    Punctuation that parsers need (``@ . / : £ - ,``) is kept; use :func:`words` for a bare
    word list. Cached: the engine often runs several parsers over the same utterance.
    """
    t = text.translate(_QUOTES).lower()
    t = _LIKE_FILLER.sub(",", t)
    t = _FILLERS.sub("", t)
    t = _OCLOCK.sub("oclock", t)
    return _SPACES.sub(" ", t).strip(" ,.;!?")


def words(text: str) -> list[str]:
    """The words of already-cleaned text, without punctuation (apostrophes kept inside words)."""
    return _WORD.findall(text)


def strip_punctuation(text: str) -> str:
    """Words joined by single spaces: for phrase lookups that must ignore commas and dots."""
    return " ".join(words(text))


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when two half-open character spans share at least one character."""
    return a[0] < b[1] and b[0] < a[1]
