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


def engine() -> Engine:
    e = Engine(flow_from_yaml(FLOW), today=_dt.date(2026, 3, 2))
    e.start(CallInfo(uuid="u"))
    return e


def test_an_intent_is_complete_a_half_sentence_is_not() -> None:
    e = engine()
    assert e.judge_answer("I'd like a quote please") is AnswerFit.COMPLETE
    assert e.judge_answer("about my booking") is AnswerFit.COMPLETE
    assert e.judge_answer("I'd like to") is AnswerFit.INCOMPLETE
    assert e.judge_answer("um") is AnswerFit.INCOMPLETE


def test_half_a_postcode_or_a_carrier_phrase_is_incomplete() -> None:
    e = engine()
    e.handle(UserUtterance("a quote"))
    assert e.listening == "collect"
    assert e.judge_answer("L S six") is AnswerFit.INCOMPLETE
    assert e.judge_answer("LS6") is AnswerFit.INCOMPLETE
    assert e.judge_answer("LS6 1HT") is AnswerFit.COMPLETE
    assert e.judge_answer("it's LS6 1HT") is AnswerFit.COMPLETE
    e.handle(UserUtterance("LS6 1HT"))
    assert e.judge_answer("the fifth of") is AnswerFit.INCOMPLETE
    assert e.judge_answer("the fifth of March") is AnswerFit.COMPLETE
    e.handle(UserUtterance("the fifth of March"))
    assert e.judge_answer("my name is") is AnswerFit.INCOMPLETE
    assert e.judge_answer("my name is Jane Smith") is AnswerFit.COMPLETE


def test_yes_no_and_judging_changes_nothing() -> None:
    e = engine()
    for said in ("a quote", "LS6 1HT", "5th of March", "Jane Smith"):
        e.handle(UserUtterance(said))
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
    e = engine()
    e.handle(UserUtterance("a quote"))
    e.handle(UserUtterance("LS6 1HT"))
    assert e.judge_answer("the fifth") is AnswerFit.OPEN
    assert e.judge_answer("the 5th") is AnswerFit.OPEN
    assert e.judge_answer("the fifth of March") is AnswerFit.COMPLETE
    assert e.judge_answer("next Friday") is AnswerFit.COMPLETE
    e.handle(UserUtterance("next Friday"))
    assert e.judge_answer("Jane") is AnswerFit.OPEN
    assert e.judge_answer("Jane Smith") is AnswerFit.COMPLETE
    assert e.judge_answer("it's Jane Smith and") is AnswerFit.OPEN


def test_may_go_on_words() -> None:
    from flowagent.dialogue.answer_fit import may_go_on

    assert may_go_on("twenty", frozenset({"integer"}))
    assert not may_go_on("twenty five", frozenset({"integer"}))
    assert not may_go_on("three", frozenset({"integer"}))  # a whole answer, said alone
    assert may_go_on("three bedrooms and um", frozenset({"integer"}))
    assert not may_go_on("twenty", frozenset({"yes_no"}))
