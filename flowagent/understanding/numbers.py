"""Numbers in words and digits: "three", "twenty one", "a hundred and fifty", "3", "three-bed",
"two and a half", "fourteenth", "14th", "1,200", "two point five".

A small left-to-right state machine over word tokens, written by hand because it must be fast
(it runs on every utterance) and because its spans feed multi-slot extraction. ASR homophones
("to", "too", "for", "free"...) are only read as numbers where the context leaves no doubt
(precision over recall): the whole answer is that one word, or it sits right before a counted
noun ("for bedrooms").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean, wordset

UNITS: dict[str, int] = {
    "zero": 0, "nought": 0, "nil": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}
TEENS: dict[str, int] = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS: dict[str, int] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
ORD_UNITS: dict[str, int] = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9,
}
ORD_TEENS: dict[str, int] = {
    "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
}
ORD_TENS: dict[str, int] = {
    "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "sixtieth": 60,
    "seventieth": 70, "eightieth": 80, "ninetieth": 90,
}
SCALES: dict[str, int] = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
ORD_SCALES: dict[str, int] = {"hundredth": 100, "thousandth": 1000}

#: ASR mis-hearings of number words, read as numbers only in a clear number context.
HOMOPHONES: dict[str, int] = {
    "to": 2, "too": 2, "for": 4, "fore": 4, "won": 1, "free": 3, "tree": 3, "ate": 8,
}
#: Nouns that make the word before them a count ("for bedrooms", "three-bed").
COUNT_NOUNS: frozenset[str] = wordset(
    """bed beds bedroom bedrooms bedroomed room rooms people persons person adults adult
    children kids boxes items floors floor storeys storey stories vans van men movers nights
    days weeks months hours minutes years pounds quid"""
)
# "one" is a pronoun after these words ("this one", "no one", "the other one").
_ONE_PRONOUN_BEFORE = wordset("this that which any each every no other another last")

# "one" in idioms that name no number: "one moment", "one sec", "one of those", "the one on
# the left", "the one with the ham". ("just the one" still is 1.)
_ONE_IDIOM_AFTER = wordset(
    """moment mo sec secs second seconds minute min tick jiffy of"""
)
_ONE_THE_AFTER = wordset(
    """on in at with that which who where from near you i we they he she there here by
    for like"""
)

# Digits glued to letters are codes, not numbers ("LS11", "5AB"), except before a unit
# ("3bed", "2pm", "2k") or an ordinal suffix ("14th").
_TOKEN = re.compile(
    r"(?<![a-z0-9_@])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:st|nd|rd|th)?)(?![a-z0-9_])"
    r"|(?<![a-z0-9])\d+(?:\.\d+)?(?=(?:bed|beds|bedroom|bedrooms|pm|am|k|p)\b)"
    r"|[a-z]++(?:'[a-z]+)?(?![0-9])"
    r"|[a-z0-9]+"
)
_DIGITS = re.compile(r"(\d[\d,]*(?:\.\d+)?)(st|nd|rd|th)?$")


@dataclass(frozen=True, slots=True)
class NumberMatch:
    """One number found in cleaned text: value, span, and how it was said."""

    value: int | float
    start: int
    end: int
    ordinal: bool = False  # "14th", "fourteenth"
    spoken: bool = False  # said in words (vs digits)
    homophone: bool = False  # read from an ASR homophone ("for bedrooms")


def tokens(text: str) -> list[tuple[str, int, int]]:
    """Word/number tokens of cleaned text with spans; hyphens and punctuation separate tokens."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _kind(w: str) -> tuple[str, int | float, bool] | None:
    """Classify one token: (kind, value, is_ordinal) or None when it is not a number part."""
    if w[0].isdigit():
        m = _DIGITS.match(w)
        if not m:
            return None
        raw = m.group(1).replace(",", "")
        try:
            val: int | float = float(raw) if "." in raw else int(raw)
        except ValueError:
            return None
        return ("digit", val, bool(m.group(2)))
    if w in UNITS:
        return ("unit", UNITS[w], False)
    if w in TEENS:
        return ("teen", TEENS[w], False)
    if w in TENS:
        return ("tens", TENS[w], False)
    if w in ORD_UNITS:
        return ("unit", ORD_UNITS[w], True)
    if w in ORD_TEENS:
        return ("teen", ORD_TEENS[w], True)
    if w in ORD_TENS:
        return ("tens", ORD_TENS[w], True)
    if w in SCALES:
        return ("scale", SCALES[w], False)
    if w in ORD_SCALES:
        return ("scale", ORD_SCALES[w], True)
    if w == "dozen":
        return ("dozen", 12, False)
    return None


def is_number_word(w: str) -> bool:
    """True for a word or token that is (part of) a number: "three", "14th", "hundred"."""
    return bool(w) and _kind(w) is not None


def _parse_at(toks: list[tuple[str, int, int]], i: int) -> tuple[NumberMatch, int] | None:
    """Read the longest number starting at token ``i``; returns it and the next token index."""
    n = len(toks)
    total: int | float = 0
    current: int | float = 0
    last: str | None = None
    j = i
    end_j = i  # exclusive index of the last token that belongs to the number
    ordinal = False
    spoken = False
    while j < n:
        w = toks[j][0]
        nxt = toks[j + 1][0] if j + 1 < n else ""
        if w in ("a", "an") and last is None and nxt in ("hundred", "thousand", "million", "dozen"):
            current, last, j = 1, "a", j + 1
            continue
        if w in ("a", "an") and last is None and nxt == "couple":  # "a couple (of)" = 2
            return NumberMatch(2, toks[i][1], toks[j + 1][2], spoken=True), j + 2
        if w == "half" and last is None and nxt in ("a", "an") and j + 2 < n and (
            toks[j + 2][0] == "dozen"
        ):
            return NumberMatch(6, toks[i][1], toks[j + 2][2], spoken=True), j + 3
        if w == "and" and last is not None and last != "a":
            if nxt in ("a", "an") and j + 2 < n and toks[j + 2][0] == "half":
                value = total + current + 0.5
                return NumberMatch(value, toks[i][1], toks[j + 2][2], spoken=True), j + 3
            if nxt == "half":
                value = total + current + 0.5
                return NumberMatch(value, toks[i][1], toks[j + 1][2], spoken=True), j + 2
            nk = _kind(nxt) if nxt else None
            if last == "scale" and nk and nk[0] in ("unit", "teen", "tens"):
                j += 1
                continue
            break
        if w == "point" and last in ("unit", "teen", "tens", "digit", "scale") and not ordinal:
            digits = []
            k = j + 1
            while k < n and (toks[k][0] in UNITS or toks[k][0] == "oh" or toks[k][0].isdigit()):
                tk = toks[k][0]
                digits.append("0" if tk == "oh" else str(UNITS[tk]) if tk in UNITS else tk)
                k += 1
            if digits:
                value = float(f"{int(total + current)}.{''.join(digits)}")
                return NumberMatch(value, toks[i][1], toks[k - 1][2], spoken=True), k
            break
        kind = _kind(w)
        if kind is None:
            break
        kname, val, is_ord = kind
        if kname == "digit":
            if last is not None:
                break
            current = val
        elif kname == "unit":
            if last not in (None, "tens", "scale"):
                break
            if w == "one" and last is None and j > 0 and toks[j - 1][0] in _ONE_PRONOUN_BEFORE:
                break
            current += val
        elif kname in ("teen", "tens"):
            if last not in (None, "scale"):
                break
            current += val
        elif kname == "scale":
            if last not in ("unit", "teen", "tens", "digit", "a"):
                break
            if val == 100:
                current = (current or 1) * 100
            else:
                total = (total + (current or 1)) * int(val)
                current = 0
        elif kname == "dozen":
            if last not in ("unit", "a", "digit"):
                break
            current = (current or 1) * 12
        spoken = spoken or kname != "digit"
        last = kname
        j += 1
        end_j = j
        if is_ord:
            ordinal = True
            break
        if kname == "dozen":
            break
    if end_j == i or last == "a":
        return None
    value = total + current
    if isinstance(value, float) and value.is_integer() and "." not in toks[i][0]:
        value = int(value)
    return NumberMatch(value, toks[i][1], toks[end_j - 1][2], ordinal, spoken), end_j


# Words a colloquial hundreds group is made of ("one twenty five" = 125, "nineteen ninety").
_GROUP_WORDS = frozenset(w for w, v in UNITS.items() if v) | frozenset(TEENS) | frozenset(TENS)
_GROUP_GAP = re.compile(r"[ -]+")


def _plain_group(
    toks: list[tuple[str, int, int]], i: int, j: int, text: str,
) -> bool:
    """True when tokens i..j-1 are number words only, separated by spaces/hyphens (no comma:
    "two, twenty" lists two numbers)."""
    if j <= i or not all(toks[k][0] in _GROUP_WORDS for k in range(i, j)):
        return False
    return all(_GROUP_GAP.fullmatch(text[toks[k][2] : toks[k + 1][1]]) for k in range(i, j - 1))


def _hundreds_style(
    text: str, toks: list[tuple[str, int, int]], first: NumberMatch, nxt: int,
) -> tuple[NumberMatch, int] | None:
    """Prices, counts and years said in pairs: "one twenty" = 120, "one twenty five" = 125,
    "two fifty" = 250, "nineteen ninety" = 1990, "nineteen oh five" = 1905.

    The first group is 1-99 in words, the second a two-digit group in words (a teen, a tens
    word with an optional unit, or "oh" + a unit) right after it. A unit after a unit is not
    a group ("one two three" stays three numbers: digits are read by the phone/postcode
    parsers, which do not use this function), and neither is anything after a comma.
    """
    if first.ordinal or first.homophone or not isinstance(first.value, int):
        return None
    start = next((k for k in range(nxt) if toks[k][1] == first.start), None)
    if start is None or not 1 <= first.value <= 99 or not _plain_group(toks, start, nxt, text):
        return None
    n = len(toks)
    if nxt >= n or not _GROUP_GAP.fullmatch(text[toks[nxt - 1][2] : toks[nxt][1]]):
        return None
    w = toks[nxt][0]
    if w in ("oh", "o") and nxt + 1 < n and toks[nxt + 1][0] in UNITS:
        unit = UNITS[toks[nxt + 1][0]]
        if unit and _plain_group(toks, nxt + 1, nxt + 2, text) and _GROUP_GAP.fullmatch(
            text[toks[nxt][2] : toks[nxt + 1][1]]
        ):
            end = nxt + 2
            if end < n and _kind(toks[end][0]) is not None:
                return None  # "one oh five six": a digit string, not a number
            value = first.value * 100 + unit
            return NumberMatch(value, first.start, toks[nxt + 1][2], spoken=True), end
        return None
    if w not in TEENS and w not in TENS:
        return None
    second = _parse_at(toks, nxt)
    if second is None:
        return None
    m, end = second
    if (m.ordinal or not isinstance(m.value, int) or not 10 <= m.value <= 99
            or not _plain_group(toks, nxt, end, text)):
        return None
    return NumberMatch(first.value * 100 + m.value, first.start, m.end, spoken=True), end


def find_numbers(text: str, *, homophones: bool = True) -> list[NumberMatch]:
    """Every number in cleaned ``text``, left to right, with spans.

    With ``homophones`` an ASR homophone counts only directly before a counted noun
    ("for bedrooms", "free bed") and not after another number ("two to three bedrooms").
    """
    toks = tokens(text)
    out: list[NumberMatch] = []
    i = 0
    n = len(toks)
    while i < n:
        if toks[i][0] == "one" and _idiom_one(toks, i):
            i += 1
            continue
        got = _parse_at(toks, i)
        if got is not None:
            got = _hundreds_style(text, toks, got[0], got[1]) or got
            out.append(got[0])
            i = got[1]
            continue
        w = toks[i][0]
        if (
            homophones
            and w in HOMOPHONES
            and i + 1 < n
            and toks[i + 1][0] in COUNT_NOUNS
            and not (i > 0 and _kind(toks[i - 1][0]) is not None)
        ):
            out.append(NumberMatch(HOMOPHONES[w], toks[i][1], toks[i][2], homophone=True))
        i += 1
    return out


def _idiom_one(toks: list[tuple[str, int, int]], i: int) -> bool:
    """Is the "one" at token ``i`` part of an idiom rather than a number ("one moment")?"""
    nxt = toks[i + 1][0] if i + 1 < len(toks) else ""
    if nxt in _ONE_IDIOM_AFTER:
        return True
    prev = toks[i - 1][0] if i > 0 else ""
    if prev != "the":
        return False
    # "the one on the left"; a bare "the one" is a choice, not a count ("just the one" is 1)
    before = toks[i - 2][0] if i > 1 else ""
    return nxt in _ONE_THE_AFTER or (not nxt and before not in ("just", "only"))


_LEAD_INS = re.compile(
    r"^(?:(?:yes|yeah|yep|ok|okay|so|well|right|oh|erm|about|around|roughly|approximately|"
    r"maybe|probably|just|it's|it is|its|that's|that is|i think|i'd say|we have|we've got|"
    r"there are|there's|i have|i've got|it'll be|it will be)\b[ ,]*)+"
)


def parse_number(text: str) -> NumberMatch | None:
    """The one number a caller gave as an answer ("three", "it's 3", "three bedrooms").

    Returns None when there is no number, or when two different numbers are offered as
    alternatives ("two or three"), which a flow should ask again rather than guess.
    A lone homophone answer ("for", "too", "free") is read as the number it sounds like,
    because the question set the number context.
    """
    t = clean(text)
    found = find_numbers(t)
    if not found:
        rest = _LEAD_INS.sub("", t).strip(" .,!?")
        if rest in HOMOPHONES:
            start = t.rfind(rest)
            return NumberMatch(HOMOPHONES[rest], start, start + len(rest), homophone=True)
        return None
    first = found[0]
    for other in found[1:]:
        if other.value != first.value:
            between = t[first.end : other.start]
            if re.search(r"\b(?:or|to|maybe)\b|-", between):
                return None
            break
    return first
