"""Dates as callers say them, against a fixed "today" (Monday 23 November 2026)."""

from __future__ import annotations

from datetime import date

import pytest

from flowagent.understanding.dates import parse_date, resolve_bound, weekday_date

MONDAY = date(2026, 11, 23)

FUTURE = [
    ("today", "2026-11-23"),
    ("tonight", "2026-11-23"),
    ("tomorrow", "2026-11-24"),
    ("tomorrow please", "2026-11-24"),
    ("tomorrow afternoon", "2026-11-24"),
    ("the day after tomorrow", "2026-11-25"),
    ("day after tomorrow", "2026-11-25"),
    ("Friday", "2026-11-27"),
    ("on Friday", "2026-11-27"),
    ("this Friday", "2026-11-27"),
    ("this coming Friday", "2026-11-27"),
    ("this Saturday", "2026-11-28"),
    ("Sunday", "2026-11-29"),
    ("next Friday", "2026-12-04"),  # British: next week's Friday when this week's is to come
    ("next Monday", "2026-11-30"),
    ("Friday next week", "2026-12-04"),
    ("next week Tuesday", "2026-12-01"),
    ("Thursday next week", "2026-12-03"),
    ("a week on Friday", "2026-12-04"),
    ("Friday week", "2026-12-04"),
    ("Sunday after next", "2026-12-06"),
    ("in two weeks", "2026-12-07"),
    ("in 2 weeks", "2026-12-07"),
    ("in a fortnight", "2026-12-07"),
    ("two weeks today", "2026-12-07"),
    ("a week today", "2026-11-30"),
    ("a week tomorrow", "2026-12-01"),
    ("in three days", "2026-11-26"),
    ("in a week", "2026-11-30"),
    ("in a month", "2026-12-23"),
    ("in 3 months time", "2027-02-23"),
    ("the 3rd of March", "2027-03-03"),
    ("3rd March", "2027-03-03"),
    ("the third of March", "2027-03-03"),
    ("March the 3rd", "2027-03-03"),
    ("March 3rd", "2027-03-03"),
    ("March 14", "2027-03-14"),
    ("14 March", "2027-03-14"),
    ("14th of March 2027", "2027-03-14"),
    ("March the twenty-first", "2027-03-21"),
    ("the twenty first of December", "2026-12-21"),
    ("the 30th of November", "2026-11-30"),
    ("25th December", "2026-12-25"),
    ("25 Dec", "2026-12-25"),
    ("December 25th", "2026-12-25"),
    ("the 1st of January", "2027-01-01"),
    ("the second of January", "2027-01-02"),
    ("Jan 5th", "2027-01-05"),
    ("5th of Jan next year", "2027-01-05"),
    ("the 14th", "2026-12-14"),  # already past this month -> next month
    ("14th", "2026-12-14"),
    ("on the 14th", "2026-12-14"),
    ("the fourteenth", "2026-12-14"),
    ("the 28th", "2026-11-28"),
    ("the twenty-eighth", "2026-11-28"),
    ("the 23rd", "2026-11-23"),  # today counts
    ("the first", "2026-12-01"),
    ("the 31st", "2026-12-31"),
    ("Friday the 27th", "2026-11-27"),
    ("Friday the 4th of December", "2026-12-04"),
    ("14/03", "2027-03-14"),  # UK order: day first
    ("14/03/2027", "2027-03-14"),
    ("1/12", "2026-12-01"),
    ("01/12/26", "2026-12-01"),
    ("14.03.2027", "2027-03-14"),
    ("2027-03-14", "2027-03-14"),
    ("can we do the 5th of December please", "2026-12-05"),
    ("erm, I was thinking next Friday", "2026-12-04"),
    ("Friday, no, Saturday", "2026-11-28"),
    ("14", "2026-12-14"),  # a bare number is a day when it is the whole answer
    ("it's the 15th", "2026-12-15"),
    ("3 December 2026", "2026-12-03"),
    ("the fourteenth day of March", "2027-03-14"),
    ("March fourteenth twenty twenty eight", "2028-03-14"),
    ("the 5th of May two thousand and twenty seven", "2027-05-05"),
    ("the 14th in March", "2027-03-14"),
    ("in March on the 14th", "2027-03-14"),
    ("the 14th of the 3rd", "2027-03-14"),
    ("14th of March, 2027 at noon", "2027-03-14"),
    ("Wednesday", "2026-11-25"),
    ("wed the 25th", "2026-11-25"),
    ("a fortnight on Saturday", "2026-12-12"),
    ("in ten days", "2026-12-03"),
    ("3 days from now", "2026-11-26"),
    ("two weeks tomorrow", "2026-12-08"),
    ("March, the fourteenth", "2027-03-14"),
    ("Mar 14, 2027", "2027-03-14"),
    ("14-Mar-2027", "2027-03-14"),  # not one of our forms: dateparser's fallback reads it
]


@pytest.mark.parametrize(("text", "expected"), FUTURE)
def test_dates_resolve_forwards(text: str, expected: str) -> None:
    got = parse_date(text, MONDAY)
    assert got is not None, text
    assert got.value.isoformat() == expected


NOT_DATES = [
    "I don't know",
    "may I ask something",
    "March",  # a month alone is not a day
    "next week",
    "the week after next",
    "soon",
    "whenever",
    "three bedrooms",
    "LS11 5AB",
    "yes",
    "32nd",
    "31/02",
    "the 45th",
    "",
    "as soon as possible",
]


@pytest.mark.parametrize("text", NOT_DATES)
def test_not_dates(text: str) -> None:
    assert parse_date(text, MONDAY) is None


PAST = [
    ("the 3rd of March 1980", "1980-03-03"),
    ("3/3/80", "1980-03-03"),
    ("the 14th", "2026-11-14"),
    ("25th December", "2025-12-25"),
    ("yesterday", "2026-11-22"),
    ("the day before yesterday", "2026-11-21"),
]


@pytest.mark.parametrize(("text", "expected"), PAST)
def test_dates_resolve_backwards_when_asked(text: str, expected: str) -> None:
    got = parse_date(text, MONDAY, prefer="past")
    assert got is not None and got.value.isoformat() == expected


@pytest.mark.parametrize(
    ("today", "text", "expected"),
    [
        (date(2026, 11, 27), "Friday", "2026-11-27"),  # said on a Friday: today
        (date(2026, 11, 27), "next Friday", "2026-12-04"),
        (date(2026, 11, 28), "next Monday", "2026-11-30"),  # said on Saturday: the coming one
        (date(2026, 11, 28), "Monday", "2026-11-30"),
        (date(2026, 12, 31), "the 1st", "2027-01-01"),
        (date(2026, 12, 31), "tomorrow", "2027-01-01"),
        (date(2027, 1, 31), "the 30th", "2027-03-30"),  # no 30 February: skip to March
        (date(2026, 12, 20), "the 3rd of January", "2027-01-03"),
        (date(2027, 2, 1), "29th February", "2028-02-29"),
    ],
)
def test_dates_from_other_days(today: date, text: str, expected: str) -> None:
    got = parse_date(text, today)
    assert got is not None and got.value.isoformat() == expected


def test_bare_ordinal_is_not_explicit() -> None:
    assert parse_date("the 14th", MONDAY).explicit is False  # type: ignore[union-attr]
    assert parse_date("March 14", MONDAY).explicit is True  # type: ignore[union-attr]


def test_weekday_date_helper() -> None:
    assert weekday_date(4, MONDAY).isoformat() == "2026-11-27"
    assert weekday_date(4, MONDAY, "next").isoformat() == "2026-12-04"


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        ("today", "2026-11-23"), ("tomorrow", "2026-11-24"), ("+3 days", "2026-11-26"),
        ("+2 weeks", "2026-12-07"), ("-1 days", "2026-11-22"), ("2027-01-01", "2027-01-01"),
        (date(2027, 5, 1), "2027-05-01"),
    ],
)
def test_range_bounds(bound: object, expected: str) -> None:
    got = resolve_bound(bound, MONDAY)
    assert got is not None and got.isoformat() == expected


def test_bad_bound_is_none() -> None:
    assert resolve_bound("next blue moon", MONDAY) is None
    assert resolve_bound(None, MONDAY) is None


def test_dateparser_is_only_imported_when_needed() -> None:
    """Importing it costs ~0.5 s: everyday answers must never pay that on a live call."""
    import subprocess
    import sys

    code = (
        "import sys; from datetime import date; "
        "from flowagent.understanding.slots import parse_slot; "
        "t = date(2026, 11, 23); "
        "[parse_slot('date', x, today=t) for x in ('next Friday', 'may I ask', 'the 14th', "
        "'I don\\'t know', '14/03')]; "
        "print('dateparser' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
