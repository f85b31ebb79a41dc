"""Destructive intents (restart, goodbye) need a higher bar than the others, and an intent's
name is one of its examples.

A false `restart` throws away every answer the caller gave; a false `goodbye` hangs up on
them. A false no-match only asks the question again. So "go back" (the previous question) must
never restart the call, while "start again" and "go back to the beginning" still do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from flowagent.understanding.intents import DESTRUCTIVE_INTENTS, IntentMatcher, name_example

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def _flow_intents(flow: str) -> dict[str, list[str]]:
    data = yaml.safe_load((FLOWS / f"{flow}.yaml").read_text("utf-8"))
    intents = data.get("intents") or {}
    return {n: list((s or {}).get("examples") or ()) for n, s in intents.items()}


REMOVALS = IntentMatcher(_flow_intents("removals"))
DENTAL = IntentMatcher(_flow_intents("dental"))
HANDLERS = ("human", "repeat", "restart")


def _name(m: IntentMatcher, text: str, allowed: Sequence[str] | None = None) -> str | None:
    got = m.match(text, allowed)
    return None if got is None else got.name


@pytest.mark.parametrize("text", [
    "go back", "can we go back", "go back a step", "go back to the previous question",
    "wait, go back", "back", "the beginning of March", "I want to restart my boiler",
    "start the car", "restart the form",
])
def test_not_a_restart(text: str) -> None:
    assert _name(REMOVALS, text) != "restart"
    assert _name(REMOVALS, text, HANDLERS) is None


@pytest.mark.parametrize("text", [
    "start again", "can we start over", "go back to the beginning", "restart please",
    "let's start from the beginning", "from the top", "startover", "start all over again",
    "can we go back to the beginning and start again",
])
def test_restart_still_works(text: str) -> None:
    assert _name(REMOVALS, text, HANDLERS) == "restart"


@pytest.mark.parametrize("text", [
    "thanks", "thank you", "I'm done with the packing", "see", "let me see", "done",
])
def test_not_a_goodbye(text: str) -> None:
    assert _name(REMOVALS, text) != "goodbye"


@pytest.mark.parametrize("text", ["bye", "goodbye", "that's all thanks", "ok thanks bye",
                                  "cheers, bye", "that's everything", "see you later",
                                  "I'm done", "ok I'm done thanks"])
def test_goodbye_still_works(text: str) -> None:
    assert _name(REMOVALS, text) == "goodbye"


def test_dont_restart_is_never_a_restart() -> None:
    assert _name(REMOVALS, "don't restart") in (None, "no")
    assert _name(REMOVALS, "don't restart", HANDLERS) is None
    assert _name(REMOVALS, "please don't start again", HANDLERS) is None


class _Similar:
    """A plug-in scorer (the `Scorer` protocol) that finds everything fairly similar, the way a
    sentence-embedding model rates "go back" against "go back to the beginning" (0.63)."""

    threshold = 0.5

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, text: str, examples: Sequence[str]) -> float:
        return self.value


def test_a_scorer_alone_needs_a_higher_bar_for_destructive_intents() -> None:
    intents = _flow_intents("removals")
    fair = IntentMatcher(intents, scorers=[_Similar(0.63)])
    # enough for an ordinary intent...
    assert fair.scores("go back", ["repeat"])["repeat"] >= fair.threshold
    # ...not for restart or goodbye
    assert _name(fair, "go back", ["restart", "goodbye"]) is None
    high = IntentMatcher(intents, scorers=[_Similar(0.8)])
    # a very close paraphrase that shares a word with the intent does match
    assert _name(high, "can we begin from scratch", ["restart"]) == "restart"
    # but similarity without any of the intent's words does not ("from the top flat")
    assert _name(high, "from the top flat", ["restart"]) is None


def test_strict_set_is_configurable() -> None:
    assert {"restart", "goodbye"} <= DESTRUCTIVE_INTENTS
    lenient = IntentMatcher(_flow_intents("removals"), strict=())
    # the old behaviour, on request
    assert _name(lenient, "I want to restart my boiler", HANDLERS) == "restart"
    strict_human = IntentMatcher(_flow_intents("removals"), strict={"human", "restart"})
    assert _name(strict_human, "speak", ["human"]) is None
    assert _name(strict_human, "can I speak to a person", ["human"]) == "human"


@pytest.mark.parametrize(("text", "intent"), [
    ("booking", "book"),
    ("a booking please", "book"),
    ("I'd like to make a booking", "book"),
    ("I need to change my booking", "change_booking"),
])
def test_intent_name_is_an_example(text: str, intent: str) -> None:
    assert _name(DENTAL, text) == intent


def test_name_keyword_does_not_guess_between_intents() -> None:
    # removals: "book" is in quote ("book a move") and existing_booking: still no guess
    assert _name(REMOVALS, "booking") is None
    # dental: a past booking is not a new one
    assert _name(DENTAL, "I booked last week") != "book"


@pytest.mark.parametrize(("name", "said"), [
    ("book", "book"), ("change_booking", "change booking"), ("opening-hours", "opening hours"),
    ("q1", None), ("intent_2", None), ("x", None), ("go_to", None),
])
def test_name_example(name: str, said: str | None) -> None:
    assert name_example(name) == said
