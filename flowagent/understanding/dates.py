"""Dates as people say them, resolved against an injected ``today``.

Handled by our own rules first (fast, predictable): "today", "tomorrow", "the day after
tomorrow", "in two weeks", "a week on Friday", "Friday", "this Saturday", "next Friday",
"Friday the 14th", "the 3rd of March", "March 14", "the 14th", "14/03" (UK order: day first),
ISO "2027-03-14". Only when those rules find nothing and the text still looks like a date do we
ask ``dateparser`` (imported lazily: it costs ~0.5 s to import).

Ambiguous forms resolve forwards ("the 14th" said on the 20th = the 14th of next month), or
backwards when the slot's range says the date must be in the past (``max: today``, e.g. a date
of birth). "next Friday" follows British usage: the Friday of next week when this week's Friday
is still to come (said on a Monday: 11 days away), otherwise the coming Friday.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from flowagent.understanding.normalise import clean
from flowagent.understanding.numbers import ORD_TEENS, ORD_TENS, ORD_UNITS, TEENS, TENS, UNITS

Prefer = Literal["future", "past"]

MONTHS: dict[str, int] = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12,
    "dec": 12,
}
WEEKDAYS: dict[str, int] = {
    "monday": 0, "mon": 0, "tuesday": 1, "tues": 1, "tue": 1, "wednesday": 2, "wed": 2,
    "thursday": 3, "thurs": 3, "thur": 3, "thu": 3, "friday": 4, "fri": 4, "saturday": 5,
    "sat": 5, "sunday": 6, "sun": 6,
}


def _day_words() -> tuple[dict[str, int], dict[str, int]]:
    """Spoken day-of-month numbers 1..31: (cardinal forms, ordinal forms)."""
    card: dict[str, int] = {}
    ords: dict[str, int] = {}
    for w, v in {**UNITS, **TEENS}.items():
        if 1 <= v <= 31:
            card[w] = v
    for w, v in {**ORD_UNITS, **ORD_TEENS}.items():
        ords[w] = v
    for tw, tv in TENS.items():
        if tv > 30:
            continue
        card[tw] = tv
        for uw, uv in UNITS.items():
            if 1 <= uv <= 9 and tv + uv <= 31:
                for sep in (" ", "-"):
                    card[f"{tw}{sep}{uw}"] = tv + uv
        for uw, uv in ORD_UNITS.items():
            if tv + uv <= 31:
                for sep in (" ", "-"):
                    ords[f"{tw}{sep}{uw}"] = tv + uv
    for w, v in ORD_TENS.items():
        if v <= 30:
            ords[w] = v
    for d in range(1, 32):
        suffix = "th" if 10 <= d % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
        ords[f"{d}{suffix}"] = d
        card[str(d)] = d
        if d < 10:
            card[f"0{d}"] = d
    return card, ords


DAY_CARDINALS, DAY_ORDINALS = _day_words()
_DAY_ALL = {**DAY_CARDINALS, **DAY_ORDINALS}


def _alt(words: Any) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_MONTH_ORDINALS = {w: v for w, v in DAY_ORDINALS.items() if v <= 12}
_MONTH = rf"(?P<month>{_alt(MONTHS)})\.?"
_WEEKDAY = rf"(?P<weekday>{_alt(WEEKDAYS)})"
# Day-of-month numbers as compact regexes (enumerating every spelling made the patterns slow
# to compile); the matched words are looked up in DAY_ORDINALS / DAY_CARDINALS, and a "day"
# that is not 1..31 there ("45th") simply does not match.
_UC = "one|two|three|four|five|six|seven|eight|nine"
_UO = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
_TC = "ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen"
_TO = ("tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|"
       "eighteenth|nineteenth")
_DAY_ORD_WORDS = rf"twenty[ -](?:{_UO})|thirty[ -]first|twentieth|thirtieth|{_TO}|{_UO}"
_DAY_CARD_WORDS = rf"twenty(?:[ -](?:{_UC}))?|thirty(?:[ -]one)?|{_TC}|{_UC}"
_DAY_ORD = rf"(?P<day>\d{{1,2}}(?:st|nd|rd|th)|{_DAY_ORD_WORDS})"
_DAY_ANY = rf"(?P<day>\d{{1,2}}(?:st|nd|rd|th)?|{_DAY_ORD_WORDS}|{_DAY_CARD_WORDS})"
def _spoken_years() -> dict[str, int]:
    """ "twenty twenty seven", "two thousand and twenty seven" -> 2027 (years 2001-2039);
    "nineteen eighty five" -> 1985, "nineteen oh five" -> 1905 (dates of birth)."""
    small: dict[str, int] = {w: v for w, v in {**UNITS, **TEENS}.items() if v}
    for tw, tv in TENS.items():
        if tv <= 30:
            small[tw] = tv
            for uw, uv in UNITS.items():
                if uv:
                    small[f"{tw} {uw}"] = small[f"{tw}-{uw}"] = tv + uv
    out: dict[str, int] = {}
    for w, v in small.items():
        if v < 40:
            out[f"two thousand and {w}"] = out[f"two thousand {w}"] = 2000 + v
        if 10 <= v < 40:
            out[f"twenty {w}"] = 2000 + v
        if v < 10:
            out[f"nineteen oh {w}"] = 1900 + v
    for tw, tv in TENS.items():
        if tv >= 10:
            out[f"nineteen {tw}"] = 1900 + tv
            for uw, uv in UNITS.items():
                if uv:
                    out[f"nineteen {tw} {uw}"] = out[f"nineteen {tw}-{uw}"] = 1900 + tv + uv
    for w, v in TEENS.items():
        out[f"nineteen {w}"] = 1900 + v
    return out


_SPOKEN_YEARS = _spoken_years()
_TENS_WORDS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_YEAR_WORDS = (
    rf"(?:(?:two thousand(?: and)? |twenty )"
    rf"(?:twenty(?:[ -](?:{_UC}))?|thirty(?:[ -](?:{_UC}))?|{_TC}|{_UC})"
    rf"|nineteen (?:(?:{_TENS_WORDS})(?:[ -](?:{_UC}))?|{_TC}|oh (?:{_UC})))"
)
_YEAR = rf"(?:,?\s*(?P<year>(?:19|20)\d{{2}}|next year|this year|{_YEAR_WORDS}))?"
_COUNT = r"(?P<count>an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d{1,2})"
_COUNTS = {
    "a": 1, "an": 1, **{k: v for k, v in UNITS.items() if v}, "ten": 10, "eleven": 11,
    "twelve": 12,
}

# Most specific first; a later pattern never takes words an earlier one used.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso", re.compile(r"\b(?P<year>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b")),
    ("numeric", re.compile(r"\b(?P<d>\d{1,2})/(?P<m>\d{1,2})(?:/(?P<year>\d{2}|\d{4}))?\b")),
    ("numeric", re.compile(r"\b(?P<d>\d{1,2})[.-](?P<m>\d{1,2})[.-](?P<year>\d{2}|\d{4})\b")),
    (
        "day_month",
        re.compile(
            rf"\b(?:(?:on )?{_WEEKDAY},? )?(?:the )?{_DAY_ANY}(?: day)?(?: of|,)? {_MONTH}{_YEAR}\b"
        ),
    ),
    (
        "month_day",
        re.compile(
            rf"\b(?:(?:on )?{_WEEKDAY},? )?{_MONTH},?(?: the)? {_DAY_ANY}(?!\d|:| ?(?:am|pm)\b)"
            rf"{_YEAR}\b"
        ),
    ),
    (
        "day_month",
        re.compile(rf"\bthe {_DAY_ORD} (?:in|of) {_MONTH}{_YEAR}\b"),
    ),
    (
        "day_month",
        re.compile(rf"\bin {_MONTH}{_YEAR},? (?:on )?the {_DAY_ORD}\b"),
    ),
    (
        "day_of_nth",  # "the 14th of the 3rd" (month as a number)
        re.compile(rf"\bthe {_DAY_ORD} of the (?P<nth>{_alt(_MONTH_ORDINALS)})\b"),
    ),
    ("weekday_day", re.compile(rf"\b{_WEEKDAY},?(?: the)? {_DAY_ORD}\b")),
    ("day_after", re.compile(r"\b(?:the )?day after tomorrow\b")),
    ("day_before", re.compile(r"\b(?:the )?day before yesterday\b")),
    (
        "week_on",
        re.compile(
            rf"\b(?P<count>a|one|two)? ?(?P<unit>week|fortnight) (?:on |from )?{_WEEKDAY}\b"
        ),
    ),
    ("weekday_week", re.compile(rf"\b{_WEEKDAY} week\b")),
    (
        "span_from",
        re.compile(
            rf"\b{_COUNT} (?P<unit>days?|weeks?|fortnights?|months?) "
            r"(?:from )?(?P<base>today|tomorrow|now|time)\b"
        ),
    ),
    (
        "span_in",
        re.compile(rf"\bin {_COUNT} (?P<unit>days?|weeks?|fortnights?|months?)(?: time)?\b"),
    ),
    ("span_in", re.compile(r"\bin a (?P<unit>fortnight)(?: time)?\b")),
    (
        "weekday",
        re.compile(
            r"\b(?P<rel>this coming|coming|this|next|the following|following|on|"
            rf"next week|this week)? ?{_WEEKDAY}(?: (?P<after>after next|next week|this week))?\b"
        ),
    ),
    ("today", re.compile(r"\b(?:today|tonight|this (?:morning|afternoon|evening))\b")),
    ("tomorrow", re.compile(r"\b(?:tomorrow|tomorow|tommorow|tommorrow|tmrw|tmw)\b")),
    ("yesterday", re.compile(r"\byesterday\b")),
    ("day_only", re.compile(rf"\b(?:on )?(?:the )?{_DAY_ORD}(?! of)\b")),
]
_NEEDS_THE = frozenset({"first", "second", "third"})  # "first" alone is rarely a date


@dataclass(frozen=True, slots=True)
class DateMatch:
    """A date found in cleaned text. ``explicit`` is False for a bare "the 14th"."""

    value: date
    start: int
    end: int
    explicit: bool = True
    #: the caller said the year ("1985", "twenty twenty six"): a date of birth needs one
    year_said: bool = False


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year_of(raw: str | None, today: date) -> int | None:
    if not raw:
        return None
    if raw == "next year":
        return today.year + 1
    if raw == "this year":
        return today.year
    if not raw[0].isdigit():
        return _SPOKEN_YEARS.get(raw)
    y = int(raw)
    if y >= 100:
        return y
    # Two-digit years: this century unless that is more than ten years ahead ("80" -> 1980).
    return 2000 + y if 2000 + y <= today.year + 10 else 1900 + y


def _day_month(day: int, month: int, year: int | None, today: date, prefer: Prefer) -> date | None:
    if year is not None:
        return _safe_date(year, month, day)
    cand = _safe_date(today.year, month, day)
    if prefer == "future":
        if cand is None or cand < today:
            return _safe_date(today.year + 1, month, day) or _safe_date(today.year + 4, month, day)
    elif cand is None or cand > today:
        return _safe_date(today.year - 1, month, day)
    return cand


def _day_only(day: int, today: date, prefer: Prefer) -> date | None:
    step = 1 if prefer == "future" else -1
    first = today.replace(day=1)
    for k in range(0, 13):
        month_start = _add_months(first, step * k)
        cand = _safe_date(month_start.year, month_start.month, day)
        if cand is None:
            continue
        if (prefer == "future" and cand >= today) or (prefer == "past" and cand <= today):
            return cand
    return None


def weekday_date(weekday: int, today: date, rel: str | None = None) -> date:
    """Resolve a weekday name with its qualifier ("this", "next", "next week"...)."""
    ahead = (weekday - today.weekday()) % 7
    coming = today + timedelta(days=ahead)  # "Friday"/"this Friday": today or the next one
    if rel in ("next week",):
        monday_next = today + timedelta(days=7 - today.weekday())
        return monday_next + timedelta(days=weekday)
    if rel in ("next", "the following", "following", "after next"):
        if rel == "after next":
            return coming + timedelta(days=7) if ahead else today + timedelta(days=14)
        # British "next Friday": next week's Friday if this week's is still to come.
        if ahead == 0:
            return today + timedelta(days=7)
        same_week = today.weekday() < weekday
        return coming + timedelta(days=7) if same_week else coming
    return coming


def _span_days(count: str | None, unit: str) -> tuple[int, int]:
    """(days, months) for "two weeks", "a fortnight", "3 months"."""
    n = 1 if count is None else _COUNTS.get(count) or int(count)
    unit = unit.rstrip("s")
    if unit == "day":
        return n, 0
    if unit == "week":
        return 7 * n, 0
    if unit == "fortnight":
        return 14 * n, 0
    return 0, n


def _resolve(kind: str, m: re.Match[str], today: date, prefer: Prefer,
             earliest: date | None = None) -> tuple[date | None, bool]:
    g = m.groupdict()
    if kind == "iso":
        return _safe_date(int(g["year"]), int(g["m"]), int(g["d"])), True
    if kind == "numeric":
        dom, month = int(g["d"]), int(g["m"])
        if not (1 <= month <= 12):
            return None, True
        return _day_month(dom, month, _year_of(g.get("year"), today), today, prefer), True
    if kind in ("day_month", "month_day"):
        day = _DAY_ALL.get(g["day"])
        if day is None:
            return None, True
        return _day_month(day, MONTHS[g["month"]], _year_of(g["year"], today), today, prefer), True
    if kind == "day_of_nth":
        day = DAY_ORDINALS.get(g["day"])
        if day is None:
            return None, True
        return _day_month(day, _MONTH_ORDINALS[g["nth"]], None, today, prefer), True
    if kind == "weekday_day":
        day = DAY_ORDINALS.get(g["day"])
        return (None if day is None else _day_only(day, today, prefer)), True
    if kind == "day_after":
        return today + timedelta(days=2), True
    if kind == "day_before":
        return today - timedelta(days=2), True
    if kind == "week_on":
        base = weekday_date(WEEKDAYS[g["weekday"]], today)
        n = 2 if g["count"] == "two" else 1
        return base + timedelta(days=(14 if g["unit"] == "fortnight" else 7) * n), True
    if kind == "weekday_week":
        return weekday_date(WEEKDAYS[g["weekday"]], today) + timedelta(days=7), True
    if kind in ("span_in", "span_from"):
        days, months = _span_days(g.get("count"), g["unit"])
        base = today + timedelta(days=1) if g.get("base") == "tomorrow" else today
        return _add_months(base, months) + timedelta(days=days), True
    if kind == "weekday":
        rel = g["after"] or g["rel"]
        if rel in ("this week", "next week") and g["rel"] and g["after"]:
            rel = g["after"]
        value = weekday_date(WEEKDAYS[g["weekday"]], today, rel)
        if earliest is not None and value < earliest and rel in _PLAIN_WEEKDAY:
            # "Friday" said on a Friday to a slot that starts tomorrow: next Friday
            value += timedelta(days=7)
        return value, True
    if kind == "today":
        return today, True
    if kind == "tomorrow":
        return today + timedelta(days=1), True
    if kind == "yesterday":
        return today - timedelta(days=1), True
    if kind == "day_only":
        word = g["day"]
        if word in _NEEDS_THE and not re.search(r"\bthe\b", m.group()):
            return None, False
        day = DAY_ORDINALS.get(word)
        return (None if day is None else _day_only(day, today, prefer)), False
    return None, False


# Which patterns can possibly match, decided by one cheap scan: most utterances ("three
# bedrooms", "yes please") contain no date word at all and skip every pattern.
_TRIGGERS = re.compile(
    r"(?P<digit>\d)|\b(?:"
    rf"(?P<month>{_alt(MONTHS)})|(?P<weekday>{_alt(WEEKDAYS)})|"
    rf"(?P<ord>{_DAY_ORD_WORDS})|"
    r"(?P<rel>today|tonight|tomm?orr?ow|tmrw|tmw|yesterday|days?|weeks?|fortnights?|months?|"
    r"this (?:morning|afternoon|evening)))\b"
)
_NEEDS: dict[str, frozenset[str]] = {
    "iso": frozenset({"digit"}), "numeric": frozenset({"digit"}),
    "day_month": frozenset({"month"}), "month_day": frozenset({"month"}),
    "day_of_nth": frozenset({"ord", "digit"}), "weekday_day": frozenset({"weekday"}),
    "day_after": frozenset({"rel"}), "day_before": frozenset({"rel"}),
    "week_on": frozenset({"weekday"}), "weekday_week": frozenset({"weekday"}),
    "span_from": frozenset({"rel"}), "span_in": frozenset({"rel"}),
    "weekday": frozenset({"weekday"}), "today": frozenset({"rel"}),
    "tomorrow": frozenset({"rel"}), "yesterday": frozenset({"rel"}),
    "day_only": frozenset({"ord", "digit"}),
}


#: weekday qualifiers that name the coming day (today included): "Friday", "this Friday"
_PLAIN_WEEKDAY = frozenset({None, "on", "this", "coming", "this coming"})


def find_dates(text: str, today: date, *, prefer: Prefer = "future",
               earliest: date | None = None) -> list[DateMatch]:
    """Every date our own rules find in cleaned ``text``, left to right, spans not overlapping.

    ``earliest``: the first date the slot accepts. A plain weekday ("Friday", "this Friday")
    that would fall before it means the same weekday a week later: said on a Friday to a slot
    that starts tomorrow, "Friday" is next Friday, not a refused today."""
    present = {k for m in _TRIGGERS.finditer(text) for k, v in m.groupdict().items() if v}
    if not present:
        return []
    taken: list[tuple[int, int]] = []
    out: list[DateMatch] = []
    for kind, rx in _PATTERNS:
        if present.isdisjoint(_NEEDS[kind]):
            continue
        for m in rx.finditer(text):
            s, e = m.span()
            if s == e or any(s < te and ts < e for ts, te in taken):
                continue
            value, explicit = _resolve(kind, m, today, prefer, earliest)
            if value is None:
                continue
            # Short month/weekday abbreviations only count inside a fuller pattern.
            if kind == "weekday" and len(m.group("weekday")) <= 3:
                continue
            if kind in ("day_month", "month_day") and m.group("month") == "may" and (
                kind == "month_day" and m.group("day") in DAY_CARDINALS and not m.group("year")
            ):
                # "may two people come" - only read "May 2" as a date with an ordinal.
                continue
            taken.append((s, e))
            year_said = kind == "iso" or bool(m.groupdict().get("year"))
            out.append(DateMatch(value, s, e, explicit, year_said))
    out.sort(key=lambda d: d.start)
    return out


# dateparser is only asked when a month is named: it reads vague phrases ("next week") as a
# specific day, which a booking must not do, and it is slow on the digits of a phone number.
_DATEY = re.compile(rf"\b(?:{_alt(MONTHS)})\b")


_NUMBERISH = re.compile(rf"\d|\b(?:{_DAY_ORD_WORDS}|{_DAY_CARD_WORDS})\b")


def warm_up() -> None:
    """Import dateparser now (~0.5 s) so the first unusual date on a live call does not stall.

    A server calls this once at start-up (in a thread); tests and the CLI need not.
    """
    import dateparser  # noqa: F401


def _dateparser_fallback(text: str, today: date, prefer: Prefer) -> date | None:
    """Ask dateparser (lazily imported) about text our rules did not understand.

    Only when a month is named *and* a number is said: anything less is too vague for a
    booking, and "may I ask..." must not cost a half-second import.
    """
    if not (_DATEY.search(text) and _NUMBERISH.search(text)):
        return None
    import dateparser  # slow import (~0.5 s): only for unusual phrasings

    settings = {
        "PREFER_DATES_FROM": "future" if prefer == "future" else "past",
        "DATE_ORDER": "DMY",
        "RELATIVE_BASE": datetime(today.year, today.month, today.day, 12, 0),
        "REQUIRE_PARTS": ["day"],
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    try:
        got = dateparser.parse(text, languages=["en"], settings=settings)
    except Exception:  # dateparser raises assorted errors on odd input; treat as "not a date"
        return None
    return got.date() if got is not None else None


_BARE_DAY = re.compile(rf"(?:it's |its |the |on the |on )*{_DAY_ANY}")
_CHANGE_CUE = re.compile(r"\b(?:no|not|actually|sorry|i mean|i meant|rather|instead)\b")


def parse_date(text: str, today: date, *, prefer: Prefer = "future",
               earliest: date | None = None) -> DateMatch | None:
    """The date a caller gave as an answer, or None.

    When several dates are said with a change of mind between them ("Friday, no, Saturday"),
    the last one wins; otherwise the first. A bare number 1..31 counts as a day of the month
    only when it is the whole answer (the question was about a date).
    """
    t = clean(text)
    found = find_dates(t, today, prefer=prefer, earliest=earliest)
    if found:
        if len(found) > 1 and _CHANGE_CUE.search(t[found[0].end : found[-1].start]):
            return found[-1]
        return found[0]
    bare = _BARE_DAY.fullmatch(t)
    if bare and bare.group("day") in _DAY_ALL:
        value = _day_only(_DAY_ALL[bare.group("day")], today, prefer)
        if value is not None:
            return DateMatch(value, bare.start("day"), bare.end("day"), explicit=False)
    value = _dateparser_fallback(t, today, prefer)
    if value is not None:
        return DateMatch(value, 0, len(t), explicit=True,
                         year_said=bool(re.search(r"\b(?:1[89]|20)\d\d\b", t)))
    return None


_OFFSET = re.compile(r"^([+-])\s*(\d+)\s*(days?|weeks?|months?|years?)?$")
_AGO = re.compile(r"^(\d+)\s*(days?|weeks?|months?|years?)\s+ago$")


def _offset(today: date, n: int, unit: str) -> date:
    """`today` moved by n days/weeks/months/years (n < 0 goes back); the 29th of February
    moved by years falls on the 28th."""
    first = unit[0]
    if first == "d":
        return today + timedelta(days=n)
    if first == "w":
        return today + timedelta(days=7 * n)
    return _add_months(today, n if first == "m" else 12 * n)


def resolve_bound(bound: Any, today: date) -> date | None:
    """A date slot's ``min``/``max``: ``today``, ``tomorrow``, ``yesterday``,
    ``+N days|weeks|months|years``, ``N days|weeks|months|years ago``, an ISO date, a date."""
    if bound is None:
        return None
    if isinstance(bound, datetime):
        return bound.date()
    if isinstance(bound, date):
        return bound
    return _resolve_text(str(bound).strip().lower(), today)


@lru_cache(maxsize=512)
def _resolve_text(s: str, today: date) -> date | None:
    """`resolve_bound` for text, cached: every date answer checks the slot's bounds."""
    if s == "today":
        return today
    if s == "tomorrow":
        return today + timedelta(days=1)
    if s == "yesterday":
        return today - timedelta(days=1)
    m = _OFFSET.match(s)
    if m:
        n = int(m.group(2))
        return _offset(today, n if m.group(1) == "+" else -n, m.group(3) or "days")
    m = _AGO.match(s)
    if m:
        return _offset(today, -int(m.group(1)), m.group(2))
    try:
        return date.fromisoformat(s)
    except ValueError:
        return None
