"""The engine's entry points: parse_slot (speech), parse_dtmf (keypad), validate_value (LLM),
with each slot's validation options, and the difference between "not understood" and
"understood but invalid"."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from flowagent.understanding.slots import invalid_message, parse_dtmf, parse_slot, validate_value
from flowagent.understanding.types import Money, ParseResult, SlotOptions, SlotSpec

TODAY = date(2026, 11, 23)
BEDROOMS = {"type": "integer", "min": 1, "max": 10}
SIZES = {"choices": {"small": ["flat", "studio"], "large": ["house"]}}

OK = [
    ("integer", "three bedrooms", BEDROOMS, 3),
    ("integer", "10", BEDROOMS, 10),
    ("integer", "one", BEDROOMS, 1),
    ("number", "two and a half", {}, 2.5),
    ("number", "3", {}, 3.0),
    ("money", "£450", {"min": 50}, Money(450.0, "GBP")),
    ("money", "four hundred and fifty pounds", {}, Money(450.0, "GBP")),
    ("yes_no", "yeah go ahead", {}, True),
    ("yes_no", "no thanks", {}, False),
    ("choice", "it's a flat", SIZES, "small"),
    ("choice", "house", SIZES, "large"),
    ("date", "next Friday", {}, "2026-12-04"),
    ("date", "tomorrow", {"min": "tomorrow"}, "2026-11-24"),
    ("date", "the 14th", {"max": "+30 days"}, "2026-12-14"),
    ("date", "the 3rd of March 1980", {"max": "today"}, "1980-03-03"),
    ("date", "yesterday", {"min": "2026-01-01"}, "2026-11-22"),
    ("time", "half past two", {}, "14:30"),
    ("phone", "oh seven nine one one one two three four five six", {}, "+447911123456"),
    ("email", "john dot smith at gmail dot com", {}, "john.smith@gmail.com"),
    ("uk_postcode", "L S one one five A B", {}, "LS11 5AB"),
    ("name", "my name is sarah jones", {}, "Sarah Jones"),
    ("address", "14 high street leeds", {}, "14 High Street Leeds"),
    ("text", "I need a piano moved", {}, "I need a piano moved"),
    ("text", "ABC1234", {"pattern": "^[A-Z]{3}[0-9]{4}$"}, "ABC1234"),
    ("text", "abc 1234", {"pattern": "^[A-Z]{3}[0-9]{4}$"}, "ABC1234"),
    ("text", "A B C one two three four", {"pattern": "^[A-Z]{3}[0-9]{4}$"}, "ABC1234"),
    ("text", "alpha bravo charlie one two three four", {"pattern": "^[A-Z]{3}[0-9]{4}$"},
     "ABC1234"),
    ("name", "Jo", {"min_length": 2}, "Jo"),
]


@pytest.mark.parametrize(("typ", "text", "opts", "expected"), OK)
def test_understood_and_valid(typ: str, text: str, opts: dict[str, Any], expected: Any) -> None:
    r = parse_slot(typ, text, options=opts, today=TODAY)
    assert r.ok and r.understood and not r.invalid, r
    assert r.value == expected
    assert type(r.value) is type(expected)
    if isinstance(expected, Money):
        assert r.value.currency == expected.currency


INVALID = [
    ("integer", "twelve", BEDROOMS, 12, "out of range"),
    ("integer", "zero", BEDROOMS, 0, "out of range"),
    ("integer", "two and a half", BEDROOMS, 2.5, "not a whole number"),
    ("money", "£20", {"min": 50}, 20.0, "out of range"),
    ("date", "yesterday", {}, "2026-11-22", "in the past"),
    ("date", "the 3rd of March 2020", {}, "2020-03-03", "in the past"),
    ("date", "today", {"min": "tomorrow"}, "2026-11-23", "too early"),
    ("date", "the 14th of March", {"max": "+30 days"}, "2027-03-14", "too late"),
    ("phone", "07911 12345", {}, "0791112345", "not a valid phone number"),
    ("uk_postcode", "ls1", {}, "LS1", "only the first part of a postcode"),
    ("text", "hello", {"pattern": "^[A-Z]{3}[0-9]{4}$"}, "hello", "expected format"),
    ("text", "hi", {"min_length": 5}, "hi", "too short"),
    ("text", "a very long answer", {"max_length": 5}, "a very long answer", "too long"),
    ("name", "Bo", {"min_length": 3}, "Bo", "too short"),
]


@pytest.mark.parametrize(("typ", "text", "opts", "value", "reason"), INVALID)
def test_understood_but_invalid(
    typ: str, text: str, opts: dict[str, Any], value: Any, reason: str
) -> None:
    r = parse_slot(typ, text, options=opts, today=TODAY)
    assert r.understood and not r.ok and r.invalid
    assert r.value == value
    assert reason in r.reason


NOT_UNDERSTOOD = [
    ("integer", "I don't know"), ("integer", "two or three"), ("number", "lots"),
    ("money", "not sure"), ("yes_no", "maybe"), ("choice", "a castle"),
    ("date", "I don't know"), ("date", "whenever"), ("time", "no idea"),
    ("phone", "I'd rather not say"), ("email", "I don't have one"),
    ("uk_postcode", "Leeds"), ("name", "I don't know"), ("address", "yes"), ("text", "   "),
    ("mystery_type", "anything"),
]


@pytest.mark.parametrize(("typ", "text"), NOT_UNDERSTOOD)
def test_not_understood(typ: str, text: str) -> None:
    r = parse_slot(typ, text, options=SIZES if typ == "choice" else {}, today=TODAY)
    assert not r.understood and not r.ok and not r.invalid and r.reason


def test_a_slot_spec_can_be_passed_instead_of_type_and_options() -> None:
    spec = SlotSpec.coerce(BEDROOMS)
    assert parse_slot(spec, "three", today=TODAY).value == 3
    assert parse_slot(spec, "eleven", today=TODAY).invalid
    assert parse_dtmf(spec, "11").invalid


def test_options_from_yaml_ignore_non_validation_keys() -> None:
    opts = SlotOptions.from_dict({"type": "choice", "prompt": "Which?", "choices": ["a", "b"],
                                  "dtmf": True})
    assert dict(opts.choices) == {"a": (), "b": ()}
    assert opts.dtmf


DTMF = [
    ("integer", "3", BEDROOMS, 3),
    ("integer", "3#", BEDROOMS, 3),
    ("integer", "10#", BEDROOMS, 10),
    ("number", "2*5", {}, 2.5),
    ("money", "450#", {}, 450.0),
    ("yes_no", "1", {}, True),
    ("yes_no", "2", {}, False),
    ("choice", "2", SIZES, "large"),
    ("phone", "07911123456#", {}, "+447911123456"),
    ("date", "1403", {}, "2027-03-14"),
    ("date", "01122026", {}, "2026-12-01"),
    ("date", "241126", {}, "2026-11-24"),
    ("time", "1430", {}, "14:30"),
]


@pytest.mark.parametrize(("typ", "digits", "opts", "expected"), DTMF)
def test_keypad(typ: str, digits: str, opts: dict[str, Any], expected: Any) -> None:
    r = parse_dtmf(typ, digits, opts, today=TODAY)
    assert r.ok, r
    assert r.value == expected


DTMF_BAD = [
    ("integer", "11", BEDROOMS, True),
    ("integer", "*", BEDROOMS, False),
    ("yes_no", "5", {}, False),
    ("choice", "7", SIZES, True),
    ("phone", "123", {}, False),
    ("date", "3102", {}, True),  # 31 February
    ("date", "12", {}, False),
    ("time", "2561", {}, False),
    ("email", "123", {}, False),
    ("integer", "#", BEDROOMS, False),
]


@pytest.mark.parametrize(("typ", "digits", "opts", "understood"), DTMF_BAD)
def test_keypad_rejections(typ: str, digits: str, opts: dict[str, Any], understood: bool) -> None:
    r = parse_dtmf(typ, digits, opts, today=TODAY)
    assert not r.ok
    assert r.understood is understood


VALUES = [
    ("integer", 3, BEDROOMS, True, 3),
    ("integer", "3", BEDROOMS, True, 3),
    ("integer", 3.0, BEDROOMS, True, 3),
    ("integer", 12, BEDROOMS, False, 12),
    ("integer", 2.5, BEDROOMS, False, 2.5),
    ("number", "2.5", {}, True, 2.5),
    ("yes_no", True, {}, True, True),
    ("yes_no", "yes", {}, True, True),
    ("choice", "small", SIZES, True, "small"),
    ("choice", "a house", SIZES, True, "large"),
    ("date", "2026-12-01", {}, True, "2026-12-01"),
    ("date", "2026-11-01", {}, False, "2026-11-01"),
    ("date", "next friday", {}, True, "2026-12-04"),
    ("time", "9:05", {}, True, "09:05"),
    ("uk_postcode", "ls115ab", {}, True, "LS11 5AB"),
    ("phone", "07911 123456", {}, True, "+447911123456"),
    ("email", "A@B.com", {}, True, "a@b.com"),
]


@pytest.mark.parametrize(("typ", "value", "opts", "ok", "expected"), VALUES)
def test_values_from_the_llm_are_checked(
    typ: str, value: Any, opts: dict[str, Any], ok: bool, expected: Any
) -> None:
    r = validate_value(typ, value, opts, today=TODAY)
    assert r.ok is ok
    assert r.value == expected


def test_invalid_messages_are_plain_sentences() -> None:
    spec = SlotSpec.coerce(BEDROOMS)
    r = parse_slot(spec, "twelve", today=TODAY)
    assert invalid_message(spec, r) == "Sorry, it needs to be between 1 and 10."
    past = parse_slot("date", "yesterday", today=TODAY)
    assert "past" in invalid_message("date", past)
    assert "postcode" in invalid_message("uk_postcode", ParseResult.rejected("LS1", "x"))


def test_parse_result_helpers() -> None:
    assert ParseResult.success(1).ok
    assert ParseResult.rejected(1, "why").invalid
    nm = ParseResult.no_match()
    assert not nm.understood and not nm.invalid
