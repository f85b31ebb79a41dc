"""Intents from example phrases: word order, fillers, typos and ASR slips, built-ins."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from flowagent.understanding.intents import BUILTIN_INTENTS, IntentMatcher, Scorer

FLOW_INTENTS = {
    "quote": ["I'd like a quote", "how much to move a house", "price for a removal",
              "can you give me a price"],
    "existing_booking": ["I've already booked", "about my booking", "change my move date",
                         "I have a booking with you"],
    "storage": ["do you do storage", "I need to store some furniture"],
}
MATCHER = IntentMatcher(FLOW_INTENTS)

CASES = [
    # flow intents, paraphrased / reordered / with fillers
    ("I'd like a quote", "quote"),
    ("I would like a quote please", "quote"),
    ("can I get a quote", "quote"),
    ("quote please", "quote"),
    ("erm, yeah, I'm after a quote", "quote"),
    ("how much would it cost to move my house", "quote"),
    ("a house move, how much", "quote"),
    ("I need a price for a removal", "quote"),
    ("price for removal", "quote"),
    ("can I get a qoute", "quote"),  # typo
    ("how much to mover house", "quote"),  # ASR slip
    ("give me a price", "quote"),
    ("I've already booked", "existing_booking"),
    ("erm I already booked", "existing_booking"),
    ("it's about my booking", "existing_booking"),
    ("about a booking I made", "existing_booking"),
    ("I need to change my move date", "existing_booking"),
    ("I have a booking with you already", "existing_booking"),
    ("booking already made I have", "existing_booking"),  # word order
    ("my bookings", "existing_booking"),
    ("yes I'd like a quote", "quote"),  # a specific request beats a bare "yes"
    ("prices for removals", "quote"),
    ("I'm moving house, how much", "quote"),
    ("can I talk to a reel person", "human"),  # ASR homophone
    ("do you do storage", "storage"),
    ("do you offer storage", "storage"),
    ("I need somewhere to store furniture", "storage"),
    # built-ins
    ("can I speak to a person", "human"),
    ("can I speak to someone", "human"),
    ("I want to talk to a human", "human"),
    ("put me through to a real person please", "human"),
    ("real person", "human"),
    ("operator", "human"),
    ("operator please", "human"),
    ("can I speak to an agent", "human"),
    ("let me talk to somebody", "human"),
    ("speak to a human being", "human"),
    ("say that again", "repeat"),
    ("can you say that again", "repeat"),
    ("pardon", "repeat"),
    ("pardon?", "repeat"),
    ("what was that", "repeat"),
    ("sorry what", "repeat"),
    ("could you repeat that please", "repeat"),
    ("sorry, I didn't catch that", "repeat"),
    ("come again", "repeat"),
    ("start again", "restart"),
    ("start over", "restart"),
    ("can we start over", "restart"),
    ("startover", "restart"),
    ("let's start again from the beginning", "restart"),
    ("goodbye", "goodbye"),
    ("bye", "goodbye"),
    ("bye bye", "goodbye"),
    ("that's all thanks", "goodbye"),
    ("ok thanks bye", "goodbye"),
    ("yes", "yes"),
    ("yeah", "yes"),
    ("yes please", "yes"),
    ("that's right", "yes"),
    ("go ahead", "yes"),
    ("no", "no"),
    ("nope", "no"),
    ("no thanks", "no"),
    ("not right", "no"),
    ("that's wrong", "no"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_intents(text: str, expected: str) -> None:
    got = MATCHER.match(text)
    assert got is not None, (text, MATCHER.scores(text))
    assert got.name == expected
    assert 0 < got.score <= 1


NO_MATCH = [
    "the weather is lovely today",
    "my cat is called Bob",
    "LS11 5AB",
    "",
    "   ",
    "purple monkey dishwasher",
    "I'm not after a quote",
]


@pytest.mark.parametrize("text", NO_MATCH)
def test_no_match(text: str) -> None:
    assert MATCHER.match(text) is None


def test_negated_requests_do_not_match() -> None:
    text = "I don't want to speak to a person"
    assert MATCHER.match(text, allowed=["human", "quote", "repeat"]) is None
    got = MATCHER.match(text)
    assert got is None or got.name == "no"  # as an answer it is a "no", never "human"


def test_allowed_limits_the_candidates() -> None:
    assert MATCHER.match("I'd like a quote", allowed=["existing_booking", "human"]) is None
    got = MATCHER.match("I'd like a quote", allowed=["quote"])
    assert got is not None and got.name == "quote"
    # the engine's spelling of the same argument
    got = MATCHER.match("speak to a person", candidates=("human",))
    assert got is not None and got.name == "human"


def test_unknown_allowed_names_are_ignored() -> None:
    assert MATCHER.match("hello", allowed=["nonexistent"]) is None


def test_a_flow_can_extend_a_builtin_intent() -> None:
    m = IntentMatcher({"human": ["I want a supervisor"]})
    got = m.match("get me a supervisor")
    assert got is not None and got.name == "human"
    assert m.match("speak to a person").name == "human"  # type: ignore[union-attr]


def test_builtins_exist_without_definitions() -> None:
    m = IntentMatcher({})
    assert set(BUILTIN_INTENTS) <= set(m.examples)


def test_threshold_is_configurable() -> None:
    strict = IntentMatcher(FLOW_INTENTS, threshold=0.99)
    assert strict.match("what would it cost to move my house") is None
    assert strict.match("I'd like a quote") is not None


class KeywordScorer:
    """A stand-in for the embedding scorer: knows "removal" and "relocation" mean the same."""

    threshold = 0.5

    def score(self, text: str, examples: Sequence[str]) -> float:
        if "relocation" in text.lower() and any("removal" in e for e in examples):
            return 0.8
        return 0.0


class BrokenScorer:
    def score(self, text: str, examples: Sequence[str]) -> float:
        raise RuntimeError("model not loaded")


def test_a_plugged_in_scorer_adds_recall() -> None:
    assert isinstance(KeywordScorer(), Scorer)
    text = "a relocation estimate"
    assert IntentMatcher(FLOW_INTENTS).match(text) is None
    m = IntentMatcher(FLOW_INTENTS, scorers=[KeywordScorer()])
    got = m.match(text)
    assert got is not None and got.name == "quote"
    # rescaled: its 0.8 (above its own 0.5 threshold) lands above the matcher's threshold
    assert got.score >= m.threshold


def test_a_broken_scorer_does_not_break_matching() -> None:
    m = IntentMatcher(FLOW_INTENTS, scorers=[BrokenScorer()])
    got = m.match("I'd like a quote")
    assert got is not None and got.name == "quote"
