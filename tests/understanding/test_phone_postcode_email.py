"""Phone numbers, UK postcodes and email addresses, typed and spoken."""

from __future__ import annotations

import pytest

from flowagent.understanding.email import parse_email
from flowagent.understanding.phone import dtmf_phone, parse_phone, region_from_language
from flowagent.understanding.postcode import is_valid_postcode, normalise_postcode, parse_postcode

PHONES = [
    ("07911 123456", "+447911123456"),
    ("07911123456", "+447911123456"),
    ("079 1112 3456", "+447911123456"),
    ("oh seven nine one one, one two three four five six", "+447911123456"),
    ("zero seven nine one one one two three four five six", "+447911123456"),
    ("nought seven nine double one one two three four five six", "+447911123456"),
    ("oh seven nine one one, one two three, four five six", "+447911123456"),
    ("my number is oh seven nine one one one two three four five six", "+447911123456"),
    ("it's 07911 123456 thanks", "+447911123456"),
    ("+44 7911 123456", "+447911123456"),
    ("plus four four seven nine one one one two three four five six", "+447911123456"),
    ("double oh four four seven nine one one one two three four five six", "+447911123456"),
    ("0044 7911 123456", "+447911123456"),
    ("0113 496 0000", "+441134960000"),
    ("oh one one three four nine six oh oh oh oh", "+441134960000"),
    ("oh one one three, four nine six, double oh double oh", "+441134960000"),
    ("oh one one three four nine six triple oh oh", "+441134960000"),
    ("020 7946 0000", "+442079460000"),
    ("oh two oh seven nine four six oh oh oh oh", "+442079460000"),
    ("0161 496 0000", "+441614960000"),
    ("0113, 496, 0000", "+441134960000"),
    ("07911 123 456.", "+447911123456"),
    ("0 7 9 1 1 1 2 3 4 5 6", "+447911123456"),
    ("07911-123456", "+447911123456"),
]


@pytest.mark.parametrize(("text", "expected"), PHONES)
def test_phone_numbers(text: str, expected: str) -> None:
    got = parse_phone(text)
    assert got is not None and got.valid, text
    assert got.value == expected


@pytest.mark.parametrize("text", ["I don't know", "three bedrooms", "123", "one two three",
                                  "LS11 5AB", "", "it's on the 14th"])
def test_not_phone_numbers(text: str) -> None:
    assert parse_phone(text) is None


@pytest.mark.parametrize("text", ["07911 12345", "0113 496 000", "1234567"])
def test_too_short_or_impossible_numbers_are_invalid(text: str) -> None:
    got = parse_phone(text)
    assert got is not None and not got.valid


def test_region_comes_from_the_flow_language() -> None:
    assert region_from_language("en-GB") == "GB"
    assert region_from_language("en_US") == "US"
    assert region_from_language("en") == "GB"
    assert region_from_language(None) == "GB"
    us = parse_phone("(201) 555-0123", region="US")
    assert us is not None and us.value == "+12015550123"


def test_phone_on_the_keypad() -> None:
    got = dtmf_phone("07911123456#")
    assert got is not None and got.valid and got.value == "+447911123456"
    assert dtmf_phone("123#") is None


POSTCODES = [
    ("LS11 5AB", "LS11 5AB"),
    ("ls11 5ab", "LS11 5AB"),
    ("ls115ab", "LS11 5AB"),
    ("LS11  5AB", "LS11 5AB"),
    ("it's LS11 5AB", "LS11 5AB"),
    ("L S one one, five A B", "LS11 5AB"),
    ("L S 1 1 5 A B", "LS11 5AB"),
    ("L S eleven five A B", "LS11 5AB"),
    ("el ess one one five ay bee", "LS11 5AB"),
    ("it's el ess eleven five a bee", "LS11 5AB"),
    ("lima sierra one one five alpha bravo", "LS11 5AB"),
    ("LS one one 5AB", "LS11 5AB"),
    ("M1 1AA", "M1 1AA"),
    ("m one one a a", "M1 1AA"),
    ("M one, one double A", "M1 1AA"),
    ("SW1A 1AA", "SW1A 1AA"),
    ("S W one A, one A A", "SW1A 1AA"),
    ("EC1A 1BB", "EC1A 1BB"),
    ("W1A 0AX", "W1A 0AX"),
    ("w one a oh a x", "W1A 0AX"),
    ("B33 8TH", "B33 8TH"),
    ("CR2 6XH", "CR2 6XH"),
    ("DN55 1PT", "DN55 1PT"),
    ("G2 3 double E", "G2 3EE"),
    ("ls1 4dl", "LS1 4DL"),
    ("the postcode is LS1 4DL thanks", "LS1 4DL"),
    ("yeah it's L S six, two P Q", "LS6 2PQ"),
    ("BS8 1TH", "BS8 1TH"),
    ("NE1 4ST", "NE1 4ST"),
    # as Whisper writes them
    ("L-S-1-1, 5-A-B.", "LS11 5AB"),
    ("LS 11 5AB.", "LS11 5AB"),
    ("L.S. 11 5AB", "LS11 5AB"),
    ("Ls11, 5ab.", "LS11 5AB"),
    ("It's LS11 5AB, yeah.", "LS11 5AB"),
    ("M11AA", "M1 1AA"),
]


@pytest.mark.parametrize(("text", "expected"), POSTCODES)
def test_postcodes(text: str, expected: str) -> None:
    got = parse_postcode(text)
    assert got is not None and got.full, text
    assert got.value == expected


@pytest.mark.parametrize("text", ["ls1", "LS11", "it's M1", "S W one A"])
def test_outward_code_alone_is_not_full(text: str) -> None:
    got = parse_postcode(text)
    assert got is not None and not got.full


@pytest.mark.parametrize(
    "text",
    ["I don't know", "Leeds", "three bedrooms", "", "LS11 5CB",  # C is never an inward letter
     "QQ1 1AA", "12345", "yes please", "next Friday"],
)
def test_not_postcodes(text: str) -> None:
    got = parse_postcode(text)
    assert got is None or not got.full


def test_normalise_and_validate() -> None:
    assert normalise_postcode("sw1a1aa") == "SW1A 1AA"
    assert normalise_postcode("LS11 5CB") is None
    assert is_valid_postcode("GIR 0AA")
    assert not is_valid_postcode("LS11")


EMAILS = [
    ("john dot smith at gmail dot com", "john.smith@gmail.com"),
    ("john.smith@gmail.com", "john.smith@gmail.com"),
    ("John.Smith@Gmail.com", "john.smith@gmail.com"),
    ("my email is john.smith@gmail.com thanks", "john.smith@gmail.com"),
    ("j o h n underscore smith at outlook dot co dot uk", "john_smith@outlook.co.uk"),
    ("sarah hyphen jones at hotmail dot co dot uk", "sarah-jones@hotmail.co.uk"),
    ("sarah dash jones at hotmail dot co dot uk", "sarah-jones@hotmail.co.uk"),
    ("my email is dave at btinternet dot com", "dave@btinternet.com"),
    ("it's dave at gmail", "dave@gmail.com"),
    ("john smith at gmail dot com", "johnsmith@gmail.com"),
    ("john one two three at yahoo dot com", "john123@yahoo.com"),
    ("info at swift removals dot co dot uk", "info@swiftremovals.co.uk"),
    ("yeah it's a dot b at example dot org", "a.b@example.org"),
    ("john at gmail dot com please", "john@gmail.com"),
    ("jane @ example dot com", "jane@example.com"),
    # as Whisper writes them
    ("John.Smith at gmail.com.", "john.smith@gmail.com"),
    ("john underscore smith at hotmail.co.uk", "john_smith@hotmail.co.uk"),
    ("It's J-O-H-N at gmail dot com.", "john@gmail.com"),
]


@pytest.mark.parametrize(("text", "expected"), EMAILS)
def test_emails(text: str, expected: str) -> None:
    got = parse_email(text)
    assert got is not None, text
    assert got.value == expected


@pytest.mark.parametrize("text", ["I don't have one", "at home", "john smith", "",
                                  "john at", "john dot smith", "look at that"])
def test_not_emails(text: str) -> None:
    assert parse_email(text) is None
