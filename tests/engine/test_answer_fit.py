"""`Engine.judge_answer`: do the words heard so far answer what the call is waiting for? The
listener ends a turn after a short silence on COMPLETE and waits longer on INCOMPLETE."""

from __future__ import annotations

import datetime as _dt

from engine_helpers import flow_from_yaml

from flowagent.dialogue.actions import LlmRequest
from flowagent.dialogue.answer_fit import AnswerFit
from flowagent.dialogue.engine import Engine
from flowagent.dialogue.events import CallInfo, LlmResult, UserUtterance

FLOW = """
flowagent: 1
name: Moves
start: menu
intents:
  quote:
    examples: [I'd like a quote, how much for a move]
  booking:
    examples: [I have an existing booking, about my booking]
slots:
  from_postcode: {type: uk_postcode, prompt: What's the postcode you're moving from?}
  move_date: {type: date, prompt: What date?}
  name: {type: name, prompt: And your name?}
  ok: {type: yes_no, prompt: Shall I book it?}
states:
  menu:
    ask: Are you after a quote, or calling about a booking?
    next:
      - intent: quote
        go: details
      - intent: booking
        go: bye
  details:
    collect: [from_postcode, move_date, name]
    next: confirm
  confirm:
    collect: [ok]
    next: bye
  bye:
    say: Goodbye.
    end: true
"""


def engine(*answers: str) -> Engine:
    """The call after the caller has given `answers`."""
    e = Engine(flow_from_yaml(FLOW), today=_dt.date(2026, 3, 2))
    e.start(CallInfo(uuid="u"))
    for said in answers:
        e.handle(UserUtterance(said))
    return e


def test_an_intent_is_complete_a_half_sentence_is_not() -> None:
    e = engine()
    assert e.judge_answer("I'd like a quote please") is AnswerFit.COMPLETE
    assert e.judge_answer("about my booking") is AnswerFit.COMPLETE
    assert e.judge_answer("I'd like to") is AnswerFit.INCOMPLETE
    assert e.judge_answer("um") is AnswerFit.INCOMPLETE


def judged(e: Engine, *texts: str) -> list[AnswerFit]:
    return [e.judge_answer(t) for t in texts]


def test_half_a_postcode_or_a_carrier_phrase_is_incomplete() -> None:
    C, Inc = AnswerFit.COMPLETE, AnswerFit.INCOMPLETE
    e = engine("a quote")
    assert e.listening == "collect"
    assert judged(e, "L S six", "LS6", "LS6 1HT", "it's LS6 1HT") == [Inc, Inc, C, C]
    e.handle(UserUtterance("LS6 1HT"))
    assert judged(e, "the fifth of", "the fifth of March") == [Inc, C]
    e.handle(UserUtterance("the fifth of March"))
    assert judged(e, "my name is", "my name is Jane Smith") == [Inc, C]


def test_yes_no_and_judging_changes_nothing() -> None:
    e = engine("a quote", "LS6 1HT", "5th of March", "Jane Smith")
    assert e.state == "confirm"
    before = (e.state, e.slots, e.listening)
    assert e.judge_answer("yes") is AnswerFit.COMPLETE
    assert e.judge_answer("no") is AnswerFit.COMPLETE
    assert e.judge_answer("well") is AnswerFit.INCOMPLETE
    assert (e.state, e.slots, e.listening) == before  # judged on a fork
    # a reprompt count is not used up by judging: three misses later it still re-asks
    for _ in range(3):
        e.judge_answer("well")
    out = e.handle(UserUtterance("well"))
    assert e.state == "confirm" and not e.ended, out


def test_an_llm_conversation_takes_any_words() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: Chat
        start: chat
        providers:
          llm: {name: openai, options: {model: x, api_key: k}}
        states:
          chat:
            llm: {prompt: You help with moves.}
            next: chat
        """, check=False)
    e = Engine(flow, llm_available=True)
    request = next(a for a in e.start(CallInfo(uuid="u")) if isinstance(a, LlmRequest))
    e.handle(LlmResult(request.request_id, "Hello, how can I help?"))
    assert e.listening == "llm"
    assert e.judge_answer("I was wondering") is AnswerFit.OPEN


def test_a_valid_start_that_usually_goes_on_keeps_the_usual_silence() -> None:
    """"Jane" is a valid name and "the fifth" a valid date, but callers often go on ("... Smith",
    "... of March"): those turns end after the flow's usual silence, not the short one."""
    C, Op = AnswerFit.COMPLETE, AnswerFit.OPEN
    e = engine("a quote", "LS6 1HT")
    assert judged(e, "the fifth", "the 5th", "the fifth of March", "next Friday") == [Op, Op, C, C]
    e.handle(UserUtterance("next Friday"))
    assert judged(e, "Jane", "Jane Smith", "it's Jane Smith and") == [Op, C, Op]
    assert judged(e, "my name is Jane", "my name is Jane Smith") == [Op, C]


def test_may_go_on_words() -> None:
    from flowagent.dialogue.answer_fit import may_go_on

    assert may_go_on("twenty", {"integer": 20})
    assert not may_go_on("twenty five", {"integer": 25})
    assert not may_go_on("three", {"integer": 3})  # a whole answer, said alone
    assert may_go_on("three bedrooms and um", {"integer": 3})
    assert not may_go_on("twenty", {"yes_no": True})
    assert may_go_on("it's at forty", {"address": "40"})
    assert not may_go_on("forty Park Lane", {"address": "40 Park Lane"})
