"""Choices with synonyms: the slot's ``choices: {value: [synonym, ...]}`` matched on word
boundaries, then fuzzily (rapidfuzz) for ASR slips, then by position ("the second one",
"option 2", DTMF 2). Negated mentions ("not the house") do not count; two different choices in
one answer are ambiguous and rejected rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz

from flowagent.understanding.normalise import clean, strip_punctuation
from flowagent.understanding.numbers import ORD_UNITS, UNITS

_NEGATION_BEFORE = re.compile(r"\b(?:not|no|don't want|isn't|wasn't|rather than|instead of)\s+"
                              r"(?:a |an |the |really )?$")
_INDEX = re.compile(
    r"\b(?:option|number|choice|press|item)\s+(?P<n>\d|one|two|three|four|five|six|seven|eight|nine)\b"
    r"|\bthe (?P<o>first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|last)"
    r"(?: one| option| choice)?\b"
)
FUZZY_THRESHOLD = 85  # phrases of 4-5 characters
FUZZY_THRESHOLD_LONG = 80  # phrases of 6+ characters: one slip is a smaller share


@dataclass(frozen=True, slots=True)
class ChoiceMatch:
    value: str
    start: int
    end: int
    score: float = 1.0


@dataclass(frozen=True, slots=True)
class _Compiled:
    values: tuple[str, ...]
    phrases: tuple[tuple[str, str], ...]  # (phrase, canonical), longest first
    regex: re.Pattern[str] | None


ChoicesKey = tuple[tuple[str, tuple[str, ...]], ...]


def choices_key(choices: Mapping[str, tuple[str, ...] | list[str]]) -> ChoicesKey:
    return tuple((k, tuple(v)) for k, v in choices.items())


@lru_cache(maxsize=512)
def _compile(key: ChoicesKey) -> _Compiled:
    phrases: dict[str, str] = {}
    for value, syns in key:
        for p in (value, value.replace("_", " "), *syns):
            norm = strip_punctuation(clean(str(p)))
            if norm:
                phrases.setdefault(norm, value)
    ordered = tuple(sorted(phrases.items(), key=lambda kv: len(kv[0]), reverse=True))
    regex = (
        # a plural names the same choice: "two large pepperonis", "a couple of veggies"
        re.compile(r"\b(" + "|".join(re.escape(p) for p, _ in ordered) + r")(?:e?s)?\b")
        if ordered
        else None
    )
    return _Compiled(tuple(k for k, _ in key), ordered, regex)


ChoicesLike = Mapping[str, tuple[str, ...] | list[str]]


def find_choices(text: str, choices: ChoicesLike) -> list[ChoiceMatch]:
    """Mentions of choices in punctuation-free cleaned ``text`` (exact first, else fuzzy)."""
    comp = _compile(choices_key(choices))
    out: list[ChoiceMatch] = []
    if comp.regex is not None:
        phrase_to_value = dict(comp.phrases)
        for m in comp.regex.finditer(text):
            if _NEGATION_BEFORE.search(text[: m.start()]):
                continue
            out.append(ChoiceMatch(phrase_to_value[m.group(1)], m.start(), m.end()))
    if out or not comp.phrases:
        return out
    words = [(m.group(), m.start(), m.end()) for m in re.finditer(r"[a-z0-9']+", text)]
    best: ChoiceMatch | None = None
    for phrase, value in comp.phrases:
        k = len(phrase.split())
        if len(phrase) < 4:
            continue
        for i in range(0, max(0, len(words) - k + 1)):
            window = " ".join(w[0] for w in words[i : i + k])
            score = fuzz.ratio(window, phrase)
            need = FUZZY_THRESHOLD_LONG if len(phrase) >= 6 else FUZZY_THRESHOLD
            if score >= need and (best is None or score > best.score * 100):
                if _NEGATION_BEFORE.search(text[: words[i][1]]):
                    continue
                best = ChoiceMatch(value, words[i][1], words[i + k - 1][2], score / 100)
    return [best] if best else []


def parse_choice(
    text: str, choices: Mapping[str, tuple[str, ...] | list[str]]
) -> tuple[ChoiceMatch | None, str]:
    """(match, reason): the one choice an answer names; reason explains a None."""
    t = strip_punctuation(clean(text))
    found = find_choices(t, choices)
    values = {m.value for m in found}
    if len(values) == 1:
        return found[0], ""
    if len(values) > 1:
        return None, "more than one of the choices was mentioned"
    comp = _compile(choices_key(choices))
    m = _INDEX.search(t)
    idx: int | None = None
    if m:
        if m.group("n"):
            n = m.group("n")
            idx = int(n) if n.isdigit() else UNITS[n]
        else:
            o = m.group("o")
            idx = len(comp.values) if o == "last" else ORD_UNITS[o]
    elif t in UNITS or t.isdigit():
        idx = int(t) if t.isdigit() else UNITS[t]
    if idx is not None and 1 <= idx <= len(comp.values):
        return ChoiceMatch(comp.values[idx - 1], 0, len(t), 0.9), ""
    return None, "none of the choices was mentioned"


def dtmf_choice(digits: str, choices: Mapping[str, tuple[str, ...] | list[str]]) -> str | None:
    """Keypad choice by 1-based position in the flow's order of choices."""
    d = digits.strip().rstrip("#")
    if not d.isdigit():
        return None
    values = list(choices)
    i = int(d)
    return values[i - 1] if 1 <= i <= len(values) else None
