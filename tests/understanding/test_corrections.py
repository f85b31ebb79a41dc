"""Corrections update the right slot."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from flowagent.understanding.corrections import (
    detect_correction,
    find_corrections,
    is_correction,
    named_slot,
)

TODAY = date(2026, 11, 23)
WANTED: dict[str, Any] = {
    "name": {"type": "name"},
    "from_postcode": {"type": "uk_postcode"},
    "to_postcode": {"type": "uk_postcode"},
    "move_date": {"type": "date"},
    "bedrooms": {"type": "integer", "min": 1, "max": 10},
    "phone": {"type": "phone"},
}
FILLED: dict[str, Any] = {
    "name": "Sarah Jones",
    "from_postcode": "LS11 5AB",
    "to_postcode": "M1 1AA",
    "move_date": "2026-12-14",
    "bedrooms": 3,
    "phone": "+447911123456",
}

CASES = [
    ("no, I said the 15th", None, {"move_date": "2026-12-15"}),
    ("actually it's LS12 not LS11", None, {"from_postcode": "LS12 5AB"}),
    ("it's M1 2AB not M1 1AA", None, {"to_postcode": "M1 2AB"}),
    ("change the date to Friday", None, {"move_date": "2026-11-27"}),
    ("sorry, four bedrooms", None, {"bedrooms": 4}),
    ("no it's 4 bedrooms not 3", None, {"bedrooms": 4}),
    ("make that the 20th", None, {"move_date": "2026-12-20"}),
    ("the postcode we're moving to is M2 3BB", None, {"to_postcode": "M2 3BB"}),
    ("the from postcode should be LS2 7EE", None, {"from_postcode": "LS2 7EE"}),
    ("sorry the date should be next Friday", None, {"move_date": "2026-12-04"}),
    ("no, M2 3BB", "to_postcode", {"to_postcode": "M2 3BB"}),
    ("no, LS12 6DB", None, {"from_postcode": "LS12 6DB"}),
    ("actually make it five bedrooms", None, {"bedrooms": 5}),
    ("my number is actually 0113 496 0000", None, {"phone": "+441134960000"}),
    ("not the 14th, the 16th", None, {"move_date": "2026-12-16"}),
    ("the 16th not the 14th", None, {"move_date": "2026-12-16"}),
    ("sorry my name is Sara Jones", None, {"name": "Sara Jones"}),
    ("no the move is on the 2nd of January", None, {"move_date": "2027-01-02"}),
]


@pytest.mark.parametrize(("text", "last", "expected"), CASES)
def test_corrections(text: str, last: str | None, expected: dict[str, Any]) -> None:
    got = find_corrections(text, WANTED, FILLED, today=TODAY, last_slot=last)
    assert {k: r.value for k, r in got.items() if r.ok} == expected


@pytest.mark.parametrize("text", ["no", "that's all correct", "the 14th", "three bedrooms",
                                  "I don't know"])
def test_no_change_when_nothing_new_is_said(text: str) -> None:
    got = find_corrections(text, WANTED, FILLED, today=TODAY)
    assert {k: r for k, r in got.items() if r.ok} == {}


def test_invalid_correction_is_reported() -> None:
    got = find_corrections("sorry, twelve bedrooms", WANTED, FILLED, today=TODAY)
    assert got["bedrooms"].invalid


def test_detect_correction_returns_one() -> None:
    c = detect_correction("no, I said the 15th", FILLED, WANTED, today=TODAY)
    assert c is not None and c.slot == "move_date" and c.value == "2026-12-15"
    assert detect_correction("that's right", FILLED, WANTED, today=TODAY) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("no, I said the 15th", True), ("actually it's LS12", True), ("sorry, four bedrooms", True),
     ("change the date", True), ("it's LS12 not LS11", True), ("I meant Friday", True),
     ("three bedrooms", False), ("yes that's right", False), ("next Friday", False)],
)
def test_is_correction(text: str, expected: bool) -> None:
    assert is_correction(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("the date", "move_date"), ("the moving date is wrong", "move_date"),
     ("bedrooms", "bedrooms"), ("the number of bedrooms", "bedrooms"),
     ("the postcode we're moving to", "to_postcode"),
     ("the postcode we're moving from", "from_postcode"), ("the postcode", None),
     ("my phone number", "phone"), ("my name", "name"), ("nothing", None)],
)
def test_named_slot(text: str, expected: str | None) -> None:
    assert named_slot(text, WANTED) == expected
