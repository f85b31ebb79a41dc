"""Numbers said in words and digits, as callers answer "how many bedrooms?"."""

from __future__ import annotations

import pytest

from flowagent.understanding.normalise import clean
from flowagent.understanding.numbers import find_numbers, parse_number

ANSWERS = [
    ("three", 3),
    ("Three.", 3),
    ("3", 3),
    ("three bedrooms", 3),
    ("it's a three-bed", 3),
    ("three bed house", 3),
    ("it's got three bedrooms", 3),
    ("erm, three I think", 3),
    ("um three", 3),
    ("just the one", 1),
    ("one", 1),
    ("two", 2),
    ("four bedrooms", 4),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("fifteen", 15),
    ("twenty", 20),
    ("twenty one", 21),
    ("twenty-one", 21),
    ("ninety nine", 99),
    ("a hundred", 100),
    ("one hundred", 100),
    ("a hundred and fifty", 150),
    ("one hundred and five", 105),
    ("two hundred", 200),
    ("twelve hundred", 1200),
    ("12 hundred", 1200),
    ("a thousand", 1000),
    ("two thousand three hundred and forty five", 2345),
    ("one thousand five hundred", 1500),
    ("1,200", 1200),
    ("1200", 1200),
    ("two and a half", 2.5),
    ("two and half", 2.5),
    ("2.5", 2.5),
    ("two point five", 2.5),
    ("half a dozen", 6),
    ("a dozen", 12),
    ("fourteenth", 14),
    ("the 14th", 14),
    ("twenty first", 21),
    ("3rd", 3),
    ("zero", 0),
    ("we've got four", 4),
    ("there are five of us", 5),
    ("probably about six", 6),
    ("yeah four", 4),
    ("4 bedrooms please", 4),
    ("for bedrooms", 4),  # ASR homophone before a counted noun
    ("too bedrooms", 2),
    ("free bed", 3),
    ("for", 4),  # a lone homophone answer to a number question
    ("too", 2),
    ("free", 3),
    ("three, three bedrooms", 3),
    ("a couple", 2),
    ("just a couple of bedrooms", 2),
    ("Three.", 3),
    ("It's a 3-bed.", 3),
    ("Four, please.", 4),
    ("nil", 0),
]


@pytest.mark.parametrize(("text", "expected"), ANSWERS)
def test_number_answers(text: str, expected: float) -> None:
    got = parse_number(text)
    assert got is not None, text
    assert got.value == expected
    assert type(got.value) is type(expected)


NOT_NUMBERS = [
    "I don't know",
    "none of your business",
    "this one",
    "the other one",
    "no one",
    "a few",
    "lots",
    "two or three",
    "three or four bedrooms",
    "two to three",
    "",
    "hello",
    "I'm looking for a quote",  # "for" not before a counted noun
    "free quote",  # "free" not a number here
    "going to Leeds",
    "LS11 5AB",  # digits glued to letters are a code, not a number
    "M1 1AA",
]


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_not_a_number(text: str) -> None:
    assert parse_number(text) is None


def test_find_numbers_reports_spans_and_ordinals() -> None:
    t = clean("a three-bed on the 14th for 2 people")
    found = find_numbers(t)
    assert [(n.value, n.ordinal) for n in found] == [(3, False), (14, True), (2, False)]
    assert t[found[0].start : found[0].end] == "three"
    assert t[found[1].start : found[1].end] == "14th"


def test_homophones_need_a_counted_noun_inside_a_sentence() -> None:
    assert [n.value for n in find_numbers(clean("I'm looking for a removal"))] == []
    assert [n.value for n in find_numbers(clean("it's for people"))] == [4]
    # after another number "to" is a range word, not "two"
    assert [n.value for n in find_numbers(clean("two to bedrooms"))] == [2]


def test_two_numbers_that_agree_are_not_ambiguous() -> None:
    got = parse_number("three bedrooms, yes three")
    assert got is not None and got.value == 3
