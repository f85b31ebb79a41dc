"""Times of day as people say them: "2pm", "half past two", "quarter to five", "ten fifteen",
"14:30", "noon", "five o'clock", and parts of the day ("tomorrow afternoon" -> 14:00).

Without am/pm, an hour from 1 to 7 is read as afternoon (people book removals and call-backs
in working hours: "half past two" is 14:30), 8 to 11 as morning, 12 as noon.
Parts of the day: morning 09:00, lunchtime 12:00, afternoon 14:00, evening/tonight 18:00.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from flowagent.understanding.normalise import clean

_HOURS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    **{str(h): h for h in range(0, 24)}, **{f"0{h}": h for h in range(0, 10)},
}
_MINUTE_WORDS: dict[str, int] = {
    "five": 5, "ten": 10, "fifteen": 15, "twenty": 20, "twenty five": 25, "twenty-five": 25,
    "thirty": 30, "thirty five": 35, "forty": 40, "forty five": 45, "fifty": 50,
    "fifty five": 55, "oh five": 5, "o five": 5, "a quarter": 15, "quarter": 15, "half": 30,
    "twenty minutes": 20, "ten minutes": 10, "five minutes": 5,
    **{str(m): m for m in range(1, 60)},
}
_PARTS: dict[str, str] = {
    "morning": "09:00", "first thing": "09:00", "lunchtime": "12:00", "lunch time": "12:00",
    "lunch": "12:00", "afternoon": "14:00", "evening": "18:00", "tonight": "18:00",
    "teatime": "17:00", "tea time": "17:00",
}


def _alt(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_H = rf"(?P<h>{_alt(_HOURS)})"
_MIN = rf"(?P<mw>{_alt(_MINUTE_WORDS)})"
_AMPM = (
    r"(?:\s*(?P<ampm>am|pm|a\.m\.?|p\.m\.?|a m|p m|in the morning|in the afternoon|"
    r"in the evening|at night|tonight|this morning|this afternoon|this evening))?"
)
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("hm", re.compile(rf"\b(?P<h>\d{{1,2}})[:.](?P<m>[0-5]\d)(?!\d){_AMPM}")),
    ("rel", re.compile(
        rf"\b{_MIN} (?:minutes )?(?P<dir>past|after|to|till|til|before) {_H}\b{_AMPM}"
    )),
    ("half_h", re.compile(rf"\bhalf {_H}\b{_AMPM}")),
    ("h_oclock", re.compile(rf"\b{_H} ?oclock\b{_AMPM}")),
    ("h_m_words", re.compile(
        rf"\b{_H} (?P<m2>oh five|o five|fifteen|thirty|forty five|forty-five|twenty|forty|"
        rf"fifty|ten|five|fifty five|twenty five|thirty five)\b{_AMPM}"
    )),
    ("h_ampm", re.compile(
        rf"\b{_H}(?P<ampm>\s*(?:am|pm|a\.m\.?|p\.m\.?|a m|p m)|"
        r" in the morning| in the afternoon| in the evening| at night| tonight| this morning|"
        r" this afternoon| this evening)\b"
    )),
    ("noon", re.compile(r"\b(?P<w>noon|midday|mid day|midnight|12 noon|twelve noon)\b")),
    ("at_h", re.compile(
        rf"\b(?:at|around|about|for|by|after|before) {_H}\b"
        r"(?! (?:days?|weeks?|bed|beds|bedrooms?|people|rooms?|of|months?|years?|hours?))"
    )),
    ("part", re.compile(rf"\b(?P<part>{_alt(_PARTS)})\b")),
]


@dataclass(frozen=True, slots=True)
class TimeMatch:
    """A time found in cleaned text as "HH:MM". ``part_of_day`` for "afternoon"-style answers."""

    value: str
    start: int
    end: int
    part_of_day: bool = False


def _apply(h: int, minute: int, ampm: str | None) -> str | None:
    if not (0 <= h <= 23 and 0 <= minute <= 59):
        return None
    a = (ampm or "").replace(".", "").replace(" ", "")
    if a:
        pm = a in ("pm",) or any(w in a for w in ("afternoon", "evening", "night", "tonight"))
        if h > 12:
            return None if not pm else f"{h:02d}:{minute:02d}"
        if pm and h < 12:
            h += 12
        elif not pm and h == 12:
            h = 0
    elif 1 <= h <= 7:
        h += 12
    return f"{h:02d}:{minute:02d}"


def _resolve(kind: str, m: re.Match[str]) -> tuple[str | None, bool]:
    g = m.groupdict()
    ampm = g.get("ampm")
    if kind == "hm":
        h, minute = int(g["h"]), int(g["m"])
        if h >= 13 or h == 0:
            return (f"{h:02d}:{minute:02d}" if h <= 23 else None), False
        return _apply(h, minute, ampm), False
    if kind == "rel":
        h = _HOURS[g["h"]]
        mins = _MINUTE_WORDS[g["mw"]]
        if g["dir"] in ("to", "till", "til", "before"):
            h = h - 1 if h > 1 else 12
            mins = 60 - mins
        return _apply(h, mins, ampm), False
    if kind == "half_h":
        return _apply(_HOURS[g["h"]], 30, ampm), False
    if kind == "h_oclock":
        return _apply(_HOURS[g["h"]], 0, ampm), False
    if kind == "h_m_words":
        return _apply(_HOURS[g["h"]], _MINUTE_WORDS[g["m2"]], ampm), False
    if kind == "h_ampm":
        return _apply(_HOURS[g["h"]], 0, (ampm or "").strip()), False
    if kind == "noon":
        return ("00:00" if g["w"] == "midnight" else "12:00"), False
    if kind == "at_h":
        h = _HOURS[g["h"]]
        return (_apply(h, 0, None) if h <= 12 else f"{h:02d}:00"), False
    if kind == "part":
        return _PARTS[g["part"]], True
    return None, False


def find_times(text: str) -> list[TimeMatch]:
    """Every time in cleaned ``text``, left to right, spans not overlapping."""
    taken: list[tuple[int, int]] = []
    out: list[TimeMatch] = []
    for kind, rx in _PATTERNS:
        for m in rx.finditer(text):
            s, e = m.span()
            if kind == "at_h":
                s = m.start("h")
            if any(s < te and ts < e for ts, te in taken):
                continue
            value, part = _resolve(kind, m)
            if value is None:
                continue
            taken.append((s, e))
            out.append(TimeMatch(value, s, e, part))
    out.sort(key=lambda t: t.start)
    return out


def parse_time(text: str) -> TimeMatch | None:
    """The time a caller gave as an answer; a bare hour ("three") counts when it is the answer."""
    t = clean(text)
    found = find_times(t)
    if found:
        exact = [f for f in found if not f.part_of_day]
        return exact[0] if exact else found[0]
    bare = re.fullmatch(rf"(?:at |about |around |it's |its )*{_H}", t)
    if bare:
        value = _apply(_HOURS[bare.group("h")], 0, None)
        if value is not None:
            return TimeMatch(value, bare.start("h"), bare.end("h"))
    return None
