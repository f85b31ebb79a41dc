"""Yes and no, the many ways callers say them."""

from __future__ import annotations

import pytest

from flowagent.understanding.yes_no import dtmf_yes_no, parse_yes_no

YES = [
    "yes", "Yes.", "yeah", "yep", "yup", "aye", "sure", "sure thing", "certainly", "absolutely",
    "definitely", "of course", "correct", "that's correct", "that's right", "that is right",
    "right", "exactly", "ok", "okay", "alright", "fine", "that's fine", "go ahead", "go on",
    "please do", "yes please", "sounds good", "perfect", "great", "lovely", "brilliant",
    "spot on", "uh huh", "mm hmm", "yeah that's right", "yes that's correct", "yep, go ahead",
    "I think so", "why not", "no problem", "no worries", "yes I would like that",
    "yeah, book it", "Yes, that's correct.", "affirmative", "that works", "yes it is",
    "bang on", "cheers", "yeah yeah", "it is", "oh yes", "YES", "correct, thanks",
    "please", "ok please", "cheers, thanks", "book it please", "go for it", "let's do it",
]
NO = [
    "no", "No.", "nope", "nah", "no thanks", "no thank you", "not really", "wrong",
    "that's wrong", "that is wrong", "incorrect", "that's incorrect", "I don't think so",
    "not right", "that's not right", "that is not correct", "no that's not right", "negative",
    "not at all", "no way", "definitely not", "absolutely not", "of course not", "it isn't",
    "it's not", "that isn't right", "not quite", "not exactly", "no it isn't",
    "I'd rather not", "not now", "no, that's wrong", "nope, not right", "that's not correct",
    "isn't right", "never", "not interested", "no need",
    "cancel", "cancel it", "no, scrap that", "forget it", "call it off", "don't bother",
    "don't book it",
]
NEITHER = [
    "", "hmm", "I'm not sure", "not sure", "maybe", "perhaps", "I don't know", "dunno",
    "yeah no", "no, that's fine", "what?", "can I speak to someone", "three bedrooms",
    "hang on", "it depends", "possibly", "let me think", "LS11 5AB",
    # politeness inside a request is not assent; a request to cancel something is not an answer
    "please scrap the booking", "one moment please", "two bedrooms please", "that's all, cheers",
    "scrap my reservation", "cancel my move", "no rush", "just a sec", "thank you",
]


@pytest.mark.parametrize("text", YES)
def test_yes(text: str) -> None:
    assert parse_yes_no(text) is True


@pytest.mark.parametrize("text", NO)
def test_no(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize("text", NEITHER)
def test_neither(text: str) -> None:
    assert parse_yes_no(text) is None


@pytest.mark.parametrize(("digits", "expected"), [("1", True), ("2", False), ("1#", True),
                                                   ("3", None), ("", None), ("*", None)])
def test_keypad(digits: str, expected: bool | None) -> None:
    assert dtmf_yes_no(digits) is expected
