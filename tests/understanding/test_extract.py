"""Several slots from one utterance, without using the same words twice."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import pytest

from flowagent.understanding.extract import extract_slots, name_words

TODAY = date(2026, 11, 23)  # a Monday
REMOVALS: dict[str, Any] = {
    "name": {"type": "name"},
    "from_postcode": {"type": "uk_postcode"},
    "to_postcode": {"type": "uk_postcode"},
    "move_date": {"type": "date"},
    "bedrooms": {"type": "integer", "min": 1, "max": 10},
}


def values(text: str, current: str | None = None, wanted: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    got = extract_slots(text, wanted or REMOVALS, current=current, today=TODAY)
    return {k: r.value for k, r in got.items() if r.ok}


CASES = [
    ("a three-bed in LS11 5AB to M1 1AA on the 14th", None,
     {"bedrooms": 3, "from_postcode": "LS11 5AB", "to_postcode": "M1 1AA",
      "move_date": "2026-12-14"}),
    ("three bedrooms from LS11 5AB to M1 1AA next Friday", None,
     {"bedrooms": 3, "from_postcode": "LS11 5AB", "to_postcode": "M1 1AA",
      "move_date": "2026-12-04"}),
    ("to M1 1AA from LS11 5AB", None, {"from_postcode": "LS11 5AB", "to_postcode": "M1 1AA"}),
    ("we're moving from LS11 5AB", None, {"from_postcode": "LS11 5AB"}),
    ("moving to M1 1AA", None, {"to_postcode": "M1 1AA"}),
    ("M1 1AA", "to_postcode", {"to_postcode": "M1 1AA"}),
    ("LS11 5AB", "from_postcode", {"from_postcode": "LS11 5AB"}),
    ("LS11 5AB", "bedrooms", {"from_postcode": "LS11 5AB"}),  # not bedrooms=11
    ("the 14th", "bedrooms", {"move_date": "2026-12-14"}),  # not bedrooms=14
    ("the 14th", "move_date", {"move_date": "2026-12-14"}),
    ("three", "bedrooms", {"bedrooms": 3}),
    ("three", None, {}),  # a bare number with no question about numbers
    ("three", "move_date", {"move_date": "2026-12-03"}),  # asked for a date: the 3rd
    ("it's a four bedroom house", None, {"bedrooms": 4}),
    ("four bed, on Friday", None, {"bedrooms": 4, "move_date": "2026-11-27"}),
    ("hi my name is Sarah Jones and I'm moving a 4 bedroom house next friday", None,
     {"name": "Sarah Jones", "bedrooms": 4, "move_date": "2026-12-04"}),
    ("Sarah", "name", {"name": "Sarah"}),
    ("Sarah, and it's a three bed", "name", {"name": "Sarah", "bedrooms": 3}),
    ("L S one one five A B to M one one A A", None,
     {"from_postcode": "LS11 5AB", "to_postcode": "M1 1AA"}),
    ("on the 3rd of March, two bedrooms", None, {"move_date": "2027-03-03", "bedrooms": 2}),
    ("I don't know", "bedrooms", {}),
    ("", "bedrooms", {}),
    ("tomorrow", "bedrooms", {"move_date": "2026-11-24"}),
    ("for bedrooms", "bedrooms", {"bedrooms": 4}),
    ("3 kids and a dog", None, {}),  # a counted noun that is not this slot
]


@pytest.mark.parametrize(("text", "current", "expected"), CASES)
def test_extraction(text: str, current: str | None, expected: dict[str, Any]) -> None:
    assert values(text, current) == expected


def test_a_postcode_is_never_read_as_a_count_even_when_no_postcode_is_wanted() -> None:
    got = extract_slots("LS11 5AB", {"bedrooms": REMOVALS["bedrooms"]}, current="bedrooms",
                        today=TODAY)
    assert got == {}


def test_out_of_range_counts_are_reported_as_invalid() -> None:
    got = extract_slots("twelve bedrooms", REMOVALS, today=TODAY)
    assert got["bedrooms"].invalid and got["bedrooms"].value == 12


def test_past_dates_are_reported_as_invalid() -> None:
    got = extract_slots("yesterday", REMOVALS, current="move_date", today=TODAY)
    assert got["move_date"].invalid and got["move_date"].reason == "that date is in the past"


def test_spans_do_not_overlap() -> None:
    got = extract_slots("a three-bed in LS11 5AB to M1 1AA on the 14th", REMOVALS, today=TODAY)
    spans = sorted(r.span for r in got.values() if r.span)
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0]


BOOKING: dict[str, Any] = {
    "move_date": {"type": "date"},
    "arrival": {"type": "time"},
    "phone": {"type": "phone"},
    "email": {"type": "email"},
    "size": {"type": "choice", "choices": {"small": ["flat", "studio"], "large": ["house"]}},
    "budget": {"type": "money"},
    "confirm": {"type": "yes_no"},
    "notes": {"type": "text"},
}


BOOKING_CASES = [
    ("tomorrow afternoon", None, {"move_date": "2026-11-24", "arrival": "14:00"}),
    ("Friday at half past two", None, {"move_date": "2026-11-27", "arrival": "14:30"}),
    ("it's a house, budget £500", None, {"size": "large", "budget": 500.0}),
    ("call me on 07911 123456 or email john at gmail dot com", None,
     {"phone": "+447911123456", "email": "john@gmail.com"}),
    ("yes", "confirm", {"confirm": True}),
    ("yes", None, {}),
    ("a flat", "size", {"size": "small"}),
    ("there's a piano", "notes", {"notes": "there's a piano"}),
    ("500", "budget", {"budget": 500.0}),
    ("500", None, {}),
]


@pytest.mark.parametrize(("text", "current", "expected"), BOOKING_CASES)
def test_extraction_of_other_types(text: str, current: str | None, expected: dict[str, Any]
                                  ) -> None:
    assert values(text, current, BOOKING) == expected


def test_name_words() -> None:
    assert {"bedrooms", "bedroom", "bed"} <= name_words("bedrooms")
    assert "to" in name_words("to_postcode")
    assert "number" not in name_words("number_of_people")
