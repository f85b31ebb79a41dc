"""Numbers said in pairs of groups, the way callers say prices, counts and years:
"one twenty" = 120, "one twenty five" = 125, "two fifty" = 250, "nineteen ninety" = 1990.

Digit-by-digit answers ("one two three") are not groups and must read exactly as before,
above all in phone numbers and postcodes.
"""

from __future__ import annotations

from datetime import date

import pytest

from flowagent.understanding.numbers import find_numbers, parse_number
from flowagent.understanding.slots import parse_slot

TODAY = date(2026, 11, 23)

GROUPS = [
    ("one twenty", 120),
    ("one twenty five", 125),
    ("two fifty", 250),
    ("nineteen ninety", 1990),
    ("nineteen ninety nine", 1999),
    ("nineteen oh five", 1905),
    ("one oh five", 105),
    ("twenty twenty", 2020),
    ("twenty twenty six", 2026),
    ("three forty", 340),
    ("four fifteen", 415),
    ("one-twenty", 120),
    ("about one twenty I think", 120),
    ("it's two fifty", 250),
]


@pytest.mark.parametrize(("text", "value"), GROUPS)
def test_number_said_in_groups(text: str, value: int) -> None:
    got = parse_number(text)
    assert got is not None and got.value == value


@pytest.mark.parametrize(("text", "value"), [
    ("one twenty", 120), ("one twenty five", 125), ("two fifty", 250), ("two fifty pounds", 250),
    ("£2.50", 2.5), ("twelve pounds fifty", 12.5), ("one twenty quid", 120),
])
def test_money_said_in_groups(text: str, value: float) -> None:
    res = parse_slot("money", text, today=TODAY)
    assert res.ok and res.value == value


@pytest.mark.parametrize(("slot_type", "text", "value"), [
    ("integer", "one twenty", 120),
    ("integer", "nineteen ninety", 1990),
    ("number", "one twenty five", 125.0),
    ("integer", "one hundred and twenty", 120),  # the long form still works
])
def test_number_slots(slot_type: str, text: str, value: float) -> None:
    res = parse_slot(slot_type, text, today=TODAY)
    assert res.ok and res.value == value


@pytest.mark.parametrize(("text", "values"), [
    ("one two three", [1, 2, 3]),  # digits, not a group
    ("two, twenty", [2, 20]),  # a comma separates two numbers
    ("two to three", [2, 3]),
    ("one twenty-first", [1, 21]),  # an ordinal is never the second group
    ("three bedrooms twenty boxes", [3, 20]),
    ("one oh five six", [1, 5, 6]),  # a digit string, not 105 then 6
    ("two and a half", [2.5]),
])
def test_not_groups(text: str, values: list[float]) -> None:
    assert [n.value for n in find_numbers(text)] == values


@pytest.mark.parametrize(("slot_type", "text", "value"), [
    ("phone", "oh one one three two four nine six one two three", "+441132496123"),
    ("phone", "oh seven nine one one one two three four five six", "+447911123456"),
    ("phone", "oh seven nine one one, one twenty three, four five six", "+447911123456"),
    ("uk_postcode", "L S one one five A B", "LS11 5AB"),
    ("time", "two twenty", "14:20"),
    ("time", "ten fifteen", "10:15"),
])
def test_digit_and_time_contexts_are_unchanged(slot_type: str, text: str, value: str) -> None:
    res = parse_slot(slot_type, text, today=TODAY)
    assert res.ok and res.value == value
