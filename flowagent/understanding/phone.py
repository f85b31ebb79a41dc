"""Phone numbers, typed or spoken ("oh seven nine one one, one two three four five six",
"double oh four four..."), validated with Google's ``phonenumbers`` and returned as E.164.

The region (default GB) comes from the flow's language ("en-GB" -> GB), so national numbers
like "0113 496 0000" need no country code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from flowagent.understanding.normalise import clean
from flowagent.understanding.spoken import digit_string, is_digit_word

_TOKEN = re.compile(r"\+|[a-z]+|\d+")


@dataclass(frozen=True, slots=True)
class PhoneMatch:
    """A phone number found in cleaned text: E.164 (``valid``) or the digits heard."""

    value: str
    start: int
    end: int
    valid: bool


def region_from_language(language: str | None, default: str = "GB") -> str:
    """"en-GB" -> "GB", "en_US" -> "US"; anything without a region -> ``default``."""
    if not language:
        return default
    parts = re.split(r"[-_]", language)
    if len(parts) >= 2 and len(parts[-1]) == 2:
        return parts[-1].upper()
    return default


def _runs(text: str) -> list[tuple[str, int, int]]:
    """Maximal runs of digit tokens (spoken or written), with spans, as digit strings."""
    toks = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    out: list[tuple[str, int, int]] = []
    i = 0
    n = len(toks)
    while i < n:
        plus = toks[i][0] in ("+", "plus") and i + 1 < n and is_digit_word(toks[i + 1][0])
        if not plus and not is_digit_word(toks[i][0]):
            i += 1
            continue
        j = i + 1 if plus else i
        while j < n and is_digit_word(toks[j][0]):
            j += 1
        words = [t[0] for t in toks[(i + 1 if plus else i) : j]]
        # A trailing "double"/"triple" has nothing to repeat: leave it out.
        while words and words[-1] in ("double", "triple"):
            words.pop()
            j -= 1
        digits = digit_string(words) if words else None
        if digits:
            out.append((("+" if plus else "") + digits, toks[i][1], toks[j - 1][2]))
        i = max(j, i + 1)
    return out


def find_phones(text: str, region: str = "GB") -> list[PhoneMatch]:
    """Phone numbers in cleaned ``text``: runs of at least 7 digits, checked by phonenumbers."""
    out: list[PhoneMatch] = []
    for digits, s, e in _runs(text):
        if len(digits.lstrip("+")) < 7:
            continue
        out.append(_check(digits, s, e, region))
    return out


def _check(digits: str, s: int, e: int, region: str) -> PhoneMatch:
    try:
        num = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return PhoneMatch(digits, s, e, False)
    if phonenumbers.is_valid_number(num):
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        return PhoneMatch(e164, s, e, True)
    return PhoneMatch(digits, s, e, False)


def parse_phone(text: str, region: str = "GB") -> PhoneMatch | None:
    """The phone number in an answer; prefers a valid one, else the longest digit run heard."""
    found = find_phones(clean(text), region)
    if not found:
        return None
    valid = [p for p in found if p.valid]
    if valid:
        return valid[0]
    # Callers pause between groups and ASR may put commas there: try the runs joined.
    runs = _runs(clean(text))
    if len(runs) > 1:
        joined = "".join(r[0] for r in runs)
        m = _check(joined, runs[0][1], runs[-1][2], region)
        if m.valid:
            return m
    return max(found, key=lambda p: len(p.value))


def dtmf_phone(digits: str, region: str = "GB") -> PhoneMatch | None:
    """A phone number keyed on the keypad ("*" ignored, "#" ends the entry)."""
    d = re.sub(r"[^0-9+]", "", digits.split("#")[0])
    if len(d) < 7:
        return None
    return _check(d, 0, len(digits), region)
