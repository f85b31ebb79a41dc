"""Precision and recall of intent matching on realistic caller utterances.

The matcher is built exactly as the engine builds it for ``flows/removals.yaml`` (its three
intents plus the built-ins). Positives come in varied word order, with fillers and small ASR
slips; negatives are things callers really say mid-call (answers to slot questions, hedges,
small talk) that must match nothing — or one specific other intent — because a false match
sends the caller somewhere they did not ask to go.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flowagent.understanding.intents import IntentMatcher

_FLOW = Path(__file__).resolve().parents[2] / "flows" / "removals.yaml"
INTENTS = {
    name: list((spec or {}).get("examples") or ())
    for name, spec in yaml.safe_load(_FLOW.read_text("utf-8"))["intents"].items()
}
MATCHER = IntentMatcher(INTENTS)
#: what a `collect` state offers: the flow's global handler intents
HANDLERS = ("human", "repeat", "restart")

POSITIVES: list[tuple[str, str]] = [
    # yes
    ("yeah go ahead", "yes"),
    ("yep that's fine", "yes"),
    ("yes that's correct", "yes"),
    ("sure, go on", "yes"),
    ("yeah sounds good", "yes"),
    ("yes please do", "yes"),
    ("that's right yeah", "yes"),
    ("absolutely", "yes"),
    ("that's all right", "yes"),
    ("no problem", "yes"),
    ("ok", "yes"),
    # no
    ("nah", "no"),
    ("no thank you", "no"),
    ("nope, not at all", "no"),
    ("no that's not right", "no"),
    ("not really", "no"),
    ("I don't think so", "no"),
    ("that's not correct", "no"),
    ("no it isn't", "no"),
    # human
    ("can I talk to a real person please", "human"),
    ("I want to speak to someone", "human"),
    ("put me through to somebody", "human"),
    ("get me an operator", "human"),
    ("can I speak with a person", "human"),
    ("let me speak to the manager", "human"),
    ("transfer me to an agent", "human"),
    ("I'd rather talk to a person", "human"),
    ("can you put me through to someone", "human"),
    ("I wanna speak to a persn", "human"),  # ASR slip
    ("a real human please", "human"),
    ("person please", "human"),
    # repeat
    ("can you repeat that please", "repeat"),
    ("sorry, say that again", "repeat"),
    ("what did you just say", "repeat"),
    ("could you say that one more time", "repeat"),
    ("pardon me", "repeat"),
    ("I didn't hear that", "repeat"),
    ("repeat that please", "repeat"),
    ("come again?", "repeat"),
    ("sorry I didn't catch what you said", "repeat"),
    ("what was that again", "repeat"),
    ("say it again", "repeat"),
    ("what?", "repeat"),
    ("can you repeet that", "repeat"),  # ASR slip
    # restart
    ("can we start again", "restart"),
    ("let's start over", "restart"),
    ("start from the beginning please", "restart"),
    ("I want to start again", "restart"),
    ("begin again", "restart"),
    ("can we go back to the beginning", "restart"),
    ("restart please", "restart"),
    ("let me start over", "restart"),
    ("start all over again", "restart"),
    # goodbye
    ("ok bye", "goodbye"),
    ("bye now", "goodbye"),
    ("thanks, goodbye", "goodbye"),
    ("that's everything thanks", "goodbye"),
    ("that's all cheers", "goodbye"),
    ("nothing else thanks bye", "goodbye"),
    ("see you later", "goodbye"),
    ("have a nice day", "goodbye"),
    ("I'm done thanks", "goodbye"),
    ("good bye", "goodbye"),
    # quote
    ("I'd like a quote please", "quote"),
    ("how much would it cost to move a three bed house", "quote"),
    ("I need a quote for a house move", "quote"),
    ("I'm moving house and I need a price", "quote"),
    ("I'm after a removal van", "quote"),
    ("could you give me a price", "quote"),
    ("I want to book a move", "quote"),
    ("can I book a house move", "quote"),
    ("quote for a move please", "quote"),
    ("how much for a removal", "quote"),
    ("yeah I'd like a quote", "quote"),
    ("I need a removals van", "quote"),
    ("can I get a qoute", "quote"),  # typo
    ("how much would it cost to move my house", "quote"),
    # existing_booking
    ("I've already got a booking with you", "existing_booking"),
    ("it's about my booking", "existing_booking"),
    ("I need to change the date of my move", "existing_booking"),
    ("I want to cancel my move", "existing_booking"),
    ("I've got a booking already", "existing_booking"),
    ("can I change my move date", "existing_booking"),
    ("calling about my booking", "existing_booking"),
    ("I'd like to cancel my booking", "existing_booking"),
    ("about my booking please", "existing_booking"),
    ("change my moving date", "existing_booking"),
    # opening_hours
    ("what time are you open", "opening_hours"),
    ("what are your opening hours", "opening_hours"),
    ("are you open on Sundays", "opening_hours"),
    ("when are you open", "opening_hours"),
    ("are you open on Saturday", "opening_hours"),
    ("what are your hours", "opening_hours"),
    ("opening hours please", "opening_hours"),
    ("what time do you open", "opening_hours"),
    ("your opening times", "opening_hours"),
]

NEGATIVES: list[tuple[str, str | None]] = [
    # measured misfires of the first matcher
    ("it can wait", None),
    ("please scrap the booking", None),  # "scrap" = cancel is left to the embedding scorer
    ("what would you charge", "quote"),
    # hedges and holding
    ("I'm not sure", None),
    ("can you hold on", None),
    ("hold on a second", None),
    ("hang on", None),
    ("let me think", None),
    ("one moment please", None),
    ("just a sec", None),
    ("no rush", None),
    ("I don't know", None),
    ("maybe", None),
    # small talk and other business
    ("what's the weather", None),
    ("what's the weather like", None),
    ("my cat is called Bob", None),
    ("do you sell sofas", None),
    ("hello", None),
    ("what's your address", None),
    ("is that including VAT", None),
    ("what time is it", None),
    ("what time will the van arrive", None),
    ("what day suits you", None),
    ("I've got a question", None),
    ("how are you", None),
    ("is anyone there", None),
    ("it's for two people", None),
    ("hello, is anybody there?", None),
    ("sorry I'm on the motorway", None),
    ("can I pay by card", None),
    ("thank you", None),
    # answers to slot questions
    ("three", None),
    ("3", None),
    ("four bedrooms", None),
    ("a three bed house", None),
    ("LS11 5AB", None),
    ("M1 1AA", None),
    ("my postcode is LS6 2AB", None),
    ("oh seven nine one one one two three four five six", None),
    ("07911 123456", None),
    ("the 14th of March", None),
    ("next Friday", None),
    ("tomorrow", None),
    ("half past two", None),
    ("by Friday", None),
    ("Sarah Jones", None),
    ("my name is Dave", None),
    ("john dot smith at gmail dot com", None),
    ("twenty pounds", None),
    ("I'm moving on the 3rd", None),
    # words that look like an intent's key word but are not it
    ("the start date is Friday", None),
    ("when can you start", None),
    ("the beginning of March", None),
    ("the person moving is my mum", None),
    ("my estate agent has the keys", None),
    ("say hello to the driver for me", None),
    ("buy a house", None),
    ("I'm done with the packing", None),
    ("we're over the moon", None),
    ("I hear you're the best", None),
    ("the van was late last time", None),
    ("what did it cost last time", None),
    # negated requests: as an answer they are a "no", never the intent they name
    ("I don't want to speak to anyone", "no"),
    ("I'm not after a quote", None),
    ("I don't need a quote", "no"),
    ("I'm not calling about a booking", None),
    ("don't start again", "no"),
    ("no need to repeat that", "no"),
    # a specific request beats a bare yes/no
    ("yes I've already booked", "existing_booking"),
    ("no, I want a quote", "quote"),
    ("please cancel my move", "existing_booking"),
    ("yeah what are your opening hours", "opening_hours"),
    ("how much", "quote"),
    # "book" is in both quote ("book a move") and existing_booking ("my booking"): a bare
    # "booking" / "book it" says neither, so nothing matches rather than a guess
    ("booking", None),
    ("I'd like to book", None),
]

# In a collect state only the handler intents are candidates: slot answers must not trip them.
HANDLER_NEGATIVES = [
    "it can wait", "what would you charge", "what's the weather", "three", "LS11 5AB",
    "next Friday", "the start date is Friday", "what time", "the person moving is my mum",
    "how much", "I'm not sure", "hold on", "can you hold on", "a semi detached house",
    "over the road", "to the same street", "again on Friday", "say Friday",
    "what about Saturday", "top floor flat", "from the top floor",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_positive(text: str, expected: str) -> None:
    got = MATCHER.match(text)
    assert got is not None and got.name == expected, (got, MATCHER.scores(text))


@pytest.mark.parametrize(("text", "expected"), NEGATIVES)
def test_negative(text: str, expected: str | None) -> None:
    got = MATCHER.match(text)
    name = None if got is None else got.name
    assert name == expected, (got, MATCHER.scores(text))


@pytest.mark.parametrize("text", HANDLER_NEGATIVES)
def test_slot_answers_do_not_trip_handlers(text: str) -> None:
    got = MATCHER.match(text, HANDLERS)
    assert got is None, (got, MATCHER.scores(text, HANDLERS))


def test_table_is_big_enough() -> None:
    assert len(POSITIVES) >= 60
    assert len(NEGATIVES) + len(HANDLER_NEGATIVES) >= 60
    assert {e for _, e in POSITIVES} == {"yes", "no", "human", "repeat", "restart", "goodbye",
                                          "quote", "existing_booking", "opening_hours"}
