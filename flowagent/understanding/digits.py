"""Codes said or keyed digit by digit: staff IDs, PINs, account and order numbers.

A code is not a number: "oh one two" must keep its leading zero, "double five" is 55, and
"twelve" is not a code digit (callers read codes one digit at a time). What is heard is
turned into a string of digits; anything that is not a digit word, a digit, a repeat word
(double/triple) or a filler ("it's", "my", "number", "is") means the answer was not a code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "nil": "0",
    "one": "1", "two": "2", "to": "2", "too": "2", "three": "3", "four": "4", "for": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
_REPEATS = {"double": 2, "triple": 3, "treble": 3}
_FILLERS = frozenset({
    "it", "its", "it's", "is", "my", "the", "number", "code", "pin", "id", "staff", "account",
    "reference", "digits", "digit", "please", "thats", "that's", "yes", "yeah", "okay", "ok",
    "um", "er", "uh", "and", "then", "hash", "a",
})
_TOKEN = re.compile(r"[a-z']+|\d+")


@dataclass(frozen=True, slots=True)
class DigitsMatch:
    value: str
    start: int
    end: int


def find_digits(text: str) -> DigitsMatch | None:
    """The run of code digits in cleaned `text` (the longest, if there are several), or None
    when the answer holds words that are not part of a code."""
    t = clean(text)
    runs: list[DigitsMatch] = []
    out: list[str] = []
    start: int | None = None
    end = 0
    repeat = 1
    for m in _TOKEN.finditer(t):
        tok = m.group()
        if tok.isdigit() or tok in _DIGIT_WORDS:
            digits = tok if tok.isdigit() else _DIGIT_WORDS[tok]
            if tok in ("to", "too", "for", "o", "a") and not out:
                continue  # "to", "for" only count inside a code
            out.append(digits * repeat if len(digits) == 1 else digits)
            repeat = 1
            start = m.start() if start is None else start
            end = m.end()
        elif tok in _REPEATS:
            repeat = _REPEATS[tok]
            start = m.start() if start is None else start
        elif tok in _FILLERS:
            continue
        else:
            if out and start is not None:
                runs.append(DigitsMatch("".join(out), start, end))
            out, start, repeat = [], None, 1
            if not tok.isalpha() or len(tok) > 2:
                return None  # a word that is not part of a code: not a code answer
    if out and start is not None:
        runs.append(DigitsMatch("".join(out), start, end))
    if not runs:
        return None
    return max(runs, key=lambda r: len(r.value))


def keyed(digits: str) -> str | None:
    """A keypad entry: the digits before the terminator."""
    d = digits.strip().split("#")[0].replace(" ", "")
    return d if d.isdigit() else None
