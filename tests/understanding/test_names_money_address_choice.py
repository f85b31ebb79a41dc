"""Names, money, addresses and choices."""

from __future__ import annotations

import pytest

from flowagent.understanding.address import parse_address
from flowagent.understanding.choice import dtmf_choice, parse_choice
from flowagent.understanding.money import parse_money
from flowagent.understanding.names import find_name, parse_name

NAMES = [
    ("my name is Sarah Jones", "Sarah Jones"), ("Sarah Jones", "Sarah Jones"),
    ("sarah", "Sarah"), ("it's Dave", "Dave"), ("Dave speaking", "Dave"),
    ("yeah it's Dave", "Dave"), ("this is Mr O'Brien", "Mr O'Brien"),
    ("mcdonald", "McDonald"), ("smith-jones", "Smith-Jones"), ("I'm Priya Patel", "Priya Patel"),
    ("the name's Bond", "Bond"), ("um, John", "John"), ("s a r a h", "Sarah"),
    ("call me Jo", "Jo"), ("Mrs Ann Smith", "Mrs Ann Smith"), ("hi, it's Tom here", "Tom"),
    ("my name's Chloe", "Chloe"), ("JAMES", "James"), ("Dr Singh", "Dr Singh"),
    ("you're speaking to Alex", "Alex"),
]


@pytest.mark.parametrize(("text", "expected"), NAMES)
def test_names(text: str, expected: str) -> None:
    assert parse_name(text) == expected


@pytest.mark.parametrize(
    "text",
    ["I don't know", "why", "no", "", "what", "can I speak to someone", "LS11 5AB", "three",
     "my name is 42", "it's a long story about why I am calling you today okay"],
)
def test_not_names(text: str) -> None:
    assert parse_name(text) is None


def test_name_inside_a_longer_sentence_needs_a_cue() -> None:
    assert find_name("hi my name is sarah and i need a quote") == ("Sarah", 14, 19)
    assert find_name("i'm moving house") is None
    assert find_name("i need a quote for sarah") is None


MONEY = [
    ("£450", 450.0), ("450 pounds", 450.0), ("450 quid", 450.0), ("450", 450.0),
    ("four hundred and fifty pounds", 450.0), ("four hundred and fifty", 450.0),
    ("£1,200.50", 1200.5), ("£1200", 1200.0), ("two grand", 2000.0), ("2k", 2000.0),
    ("a grand", 1000.0), ("twelve pounds fifty", 12.5), ("12 pounds 50", 12.5),
    ("fifty pence", 0.5), ("about £300", 300.0), ("£ 75", 75.0), ("one thousand pounds", 1000.0),
    ("my budget is 800 pounds", 800.0), ("twelve hundred pounds", 1200.0),
]


@pytest.mark.parametrize(("text", "expected"), MONEY)
def test_money(text: str, expected: float) -> None:
    got = parse_money(text)
    assert got is not None and got.value == pytest.approx(expected)


@pytest.mark.parametrize("text", ["I don't know", "not sure", "", "loads", "the 14th"])
def test_not_money(text: str) -> None:
    assert parse_money(text) is None


def test_address_is_tidied_and_keeps_the_postcode() -> None:
    a = parse_address("flat 2, 14 high street, leeds ls11 5ab")
    assert a is not None
    assert a.value == "Flat 2, 14 High Street, Leeds LS11 5AB"
    assert a.postcode == "LS11 5AB"
    b = parse_address("my address is 10 downing street london sw1a 2aa")
    assert b is not None and b.value == "10 Downing Street London SW1A 2AA"
    c = parse_address("it's 22b baker street")
    assert c is not None and c.value == "22B Baker Street" and c.postcode is None


@pytest.mark.parametrize("text", ["", "yes", "my address is"])
def test_not_addresses(text: str) -> None:
    assert parse_address(text) is None


SIZES = {
    "small": ("studio", "flat", "one bed", "apartment"),
    "medium": ("two bed", "three bed", "terrace"),
    "large": ("house", "four bed", "five bed", "detached"),
}
CHOICES = [
    ("a studio", "small"), ("it's a flat", "small"), ("small", "small"),
    ("Small please", "small"), ("it's a terrace", "medium"), ("medium", "medium"),
    ("a detached house", "large"), ("it's a house", "large"), ("large", "large"),
    ("a hous", "large"),  # ASR slip
    ("an apartmant", "small"),  # typo
    ("the first one", "small"), ("the second one", "medium"), ("the last one", "large"),
    ("option 2", "medium"), ("number three", "large"), ("2", "medium"),
    ("not a house, a flat", "small"), ("it's a four bed", "large"),
    ("mediun", "medium"),
]


@pytest.mark.parametrize(("text", "expected"), CHOICES)
def test_choices(text: str, expected: str) -> None:
    got, reason = parse_choice(text, SIZES)
    assert got is not None, reason
    assert got.value == expected


@pytest.mark.parametrize("text", ["I don't know", "a flat or a house", "", "a castle",
                                  "option 7", "huge"])
def test_not_choices(text: str) -> None:
    got, reason = parse_choice(text, SIZES)
    assert got is None and reason


def test_choice_words_match_whole_words_only() -> None:
    got, _ = parse_choice("flatmate", {"flat": ("flat",), "house": ()})
    assert got is None


def test_choice_by_keypad_position() -> None:
    assert dtmf_choice("1", SIZES) == "small"
    assert dtmf_choice("3#", SIZES) == "large"
    assert dtmf_choice("4", SIZES) is None
    assert dtmf_choice("*", SIZES) is None


@pytest.mark.parametrize("text", [
    "no, that doesn't work either", "no that does not suit me", "neither of those",
    "that won't work", "none of them work for me", "Wednesday doesn't work either",
    "those times don't suit",
])
def test_a_refusal_is_not_a_name(text: str) -> None:
    # found by trying the dental flow: "no, that doesn't work either" became the name
    # "Doesn'T Work Either"
    assert parse_name(text) is None


@pytest.mark.parametrize("text, name", [
    ("June Whitfield", "June Whitfield"), ("it's Bernadette O'Neill", "Bernadette O'Neill"),
    ("Dawn", "Dawn"), ("pay it to Ana", "Ana"),
])
def test_names_that_look_like_words_still_are_names(text: str, name: str) -> None:
    assert parse_name(text) == name
