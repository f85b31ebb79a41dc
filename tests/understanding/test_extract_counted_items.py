"""A count of the things an order names (issue 19): "two large pepperonis" fills the quantity,
the pizza and the size at once; a plural names the same choice."""

from __future__ import annotations

import datetime as dt

from flowagent.understanding.choice import find_choices
from flowagent.understanding.extract import extract_slots

TODAY = dt.date(2026, 11, 27)
ORDER = {
    "pizza": {"type": "choice", "choices": {"margherita": ["cheese and tomato"], "pepperoni": [],
                                            "meat_feast": ["meat feast"]}},
    "size": {"type": "choice", "choices": {"small": [], "medium": [], "large": []}},
    "quantity": {"type": "integer", "min": 1, "max": 20},
}


def _values(text: str, current: str | None) -> dict[str, object]:
    got = extract_slots(text, ORDER, current=current, today=TODAY)
    return {k: v.value for k, v in got.items() if v.ok}


def test_a_plural_names_the_choice_exactly() -> None:
    found = find_choices("two large pepperonis", {"pepperoni": (), "veggie": ()})
    assert [(c.value, c.score) for c in found] == [("pepperoni", 1.0)]


def test_a_number_before_the_things_ordered_is_their_quantity() -> None:
    for current in ("pizza", "quantity", None):
        assert _values("can we get two large pepperonis", current) == {
            "quantity": 2, "pizza": "pepperoni", "size": "large"}, current
    # the choice slot's own name counts too
    assert _values("we'll need ten pizzas", "pizza") == {"quantity": 10}


def test_a_number_of_something_else_is_not_a_quantity() -> None:
    # "in 2 hours" counts hours, not pizzas
    assert "quantity" not in _values("a large pepperoni in 2 hours", "pizza")
