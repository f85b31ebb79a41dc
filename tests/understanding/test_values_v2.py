"""Values callers give, as issue 19 found them misread: money keeps its currency and reads
back naturally, idioms with "one" fill no number, and a bare weekday said on that weekday
respects the slot's limits."""

from __future__ import annotations

import json
from datetime import date

import pytest

from flowagent.flow.compiler import template
from flowagent.flow.templates import say_money
from flowagent.understanding.slots import parse_slot, validate_value
from flowagent.understanding.types import Money

FRIDAY = date(2026, 11, 27)


@pytest.mark.parametrize(("said", "amount", "currency", "spoken"), [
    ("fifty quid", 50, "GBP", "£50"),
    ("60 euros", 60, "EUR", "€60"),
    ("$20", 20, "USD", "$20"),
    ("fifty bucks", 50, "USD", "$50"),
    ("a tenner", 10, "GBP", "£10"),
    ("twelve pounds fifty", 12.5, "GBP", "£12.50"),
    ("it's 32 pounds 50", 32.5, "GBP", "£32.50"),
    ("two grand", 2000, "GBP", "£2,000"),
    ("thirty", 30, "GBP", "£30"),
])
def test_money_keeps_its_currency_and_reads_naturally(
    said: str, amount: float, currency: str, spoken: str,
) -> None:
    r = parse_slot("money", said, today=FRIDAY)
    assert r.ok and isinstance(r.value, Money)
    assert (float(r.value), r.value.currency) == (amount, currency)
    # a template printing the slot, and the read-back filter, say it as a person would
    assert template("{{ slots.amount }}").render({"slots": {"amount": r.value}}) == spoken
    assert say_money(r.value) == spoken
    assert json.dumps(r.value) == json.dumps(float(amount))  # tools still get a number


def test_bare_amount_is_in_the_flows_currency() -> None:
    assert parse_slot("money", "forty", region="US").value.currency == "USD"
    assert validate_value("money", 12.5).value == Money(12.5, "GBP")


@pytest.mark.parametrize("said", [
    "one moment", "one sec", "hang on, one sec, stop", "one sec, I'm just checking how much",
    "the one on the left", "one of those", "hold on one minute",
])
def test_idioms_with_one_fill_no_number(said: str) -> None:
    for typ in ("integer", "number", "money"):
        assert not parse_slot(typ, said, today=FRIDAY).understood, (typ, said)


@pytest.mark.parametrize(("said", "value"), [("just the one", 1), ("one", 1), ("one large", 1)])
def test_one_is_still_a_number(said: str, value: int) -> None:
    assert parse_slot("integer", said, today=FRIDAY).value == value


@pytest.mark.parametrize(("said", "limit", "expected"), [
    ("Friday", "tomorrow", "2026-12-04"),  # today is refused: the caller means next Friday
    ("on Friday please", "tomorrow", "2026-12-04"),
    ("this Friday", "tomorrow", "2026-12-04"),
    ("Friday", "today", "2026-11-27"),  # today is allowed: it is today
    ("next Friday", "today", "2026-12-04"),
    ("Monday", "tomorrow", "2026-11-30"),
])
def test_weekday_said_on_that_weekday_respects_the_limits(
    said: str, limit: str, expected: str,
) -> None:
    r = parse_slot("date", said, options={"min": limit}, today=FRIDAY)
    assert r.ok and r.value == expected


def test_today_still_refused_when_the_slot_starts_tomorrow() -> None:
    r = parse_slot("date", "today", options={"min": "tomorrow"}, today=FRIDAY)
    assert r.invalid


@pytest.mark.parametrize(("said", "name"), [
    ("to Dave", "Dave"), ("right, pay it to Ana", "Ana"),
    ("it's my landlord, Mr Patel", "Mr Patel"),
    ("the payment's for Chloe", "Chloe"), ("my friend Lucy", "Lucy"), ("under Kim please", "Kim"),
    ("put it under Mrs O'Neill", "Mrs O'Neill"), ("sorry, I meant Bob", "Bob"),
])
def test_names_lose_their_carrier_words(said: str, name: str) -> None:
    assert parse_slot("name", said).value == name


@pytest.mark.parametrize("said", ["Hmm, cancel that, please", "never mind", "the same as last time",
                                  "my mobile is 0770", "I don't know"])
def test_not_a_name(said: str) -> None:
    assert not parse_slot("name", said).ok


HANDLE = {"pattern": "^@?[A-Za-z0-9_]{3,15}$"}


@pytest.mark.parametrize(("said", "opts", "value"), [
    ("it's @lisa_k", HANDLE, "@lisa_k"),
    ("at ben underscore 22", HANDLE, "@ben_22"),
    ("her handle is @amy_lou", HANDLE, "@amy_lou"),
    ("yeah it's FB 654321 and my internet's down", {"pattern": "^FB[0-9]{6}$"}, "FB654321"),
    ("the sort code is 20 40 60", {"pattern": "^[0-9]{6}$"}, "204060"),
    ("the code is SPRING5 I think", {"pattern": "^[A-Z]{3,6}[0-9]{1,2}$"}, "SPRING5"),
    ("pizza ten", {"pattern": "^[A-Z]{3,6}[0-9]{1,2}$"}, "PIZZA10"),
    ("it's for British Gas", {}, "British Gas"),
])
def test_codes_and_text_come_from_the_right_words(said: str, opts: dict, value: str) -> None:
    assert parse_slot("text", said, options=opts).value == value


@pytest.mark.parametrize("opts", [HANDLE, {}])
def test_a_command_is_never_a_text_value(opts: dict) -> None:
    r = parse_slot("text", "Hmm, cancel that, please", options=opts)
    assert not r.understood
