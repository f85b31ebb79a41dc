"""An answer made only of values chooses the one branch whose next state collects them
(issue 19): "three ham and pineapple please, large" at a takeaway's menu is an order."""

from __future__ import annotations

import datetime as _dt

from engine_helpers import flow_from_yaml

from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import ToolRunner

TAKEAWAY = """
flowagent: 1
name: Takeaway
start: menu
slots:
  pizza:
    type: choice
    prompt: Which pizza?
    choices: {margherita: [cheese and tomato], hawaiian: [ham and pineapple], veggie: [vegetarian]}
  size: {type: choice, prompt: Which size?, choices: {small: [], medium: [], large: []}}
  quantity: {type: integer, prompt: How many?, min: 1, max: 20}
  order_number: {type: text, prompt: What's the order number?, pattern: "^[0-9]{5}$"}
intents:
  order:
    examples: [I'd like to place an order, can I order a pizza]
  track_order:
    examples: [where's my order]
  menu_question:
    examples: [what's on the menu]
handlers:
  - event: no_match
    go: bye
states:
  menu:
    ask: What can I get you?
    next:
      - {intent: order, go: take_order}
      - {intent: track_order, go: track}
      - {intent: menu_question, go: bye}
  take_order:
    collect: [pizza, size, quantity]
    next: done
  track:
    collect: [order_number]
    next: done
  done:
    say: Thanks.
    next: bye
  bye:
    end: true
    say: Bye.
"""


async def _say(line: str) -> Conversation:
    conv = Conversation(flow_from_yaml(TAKEAWAY), ToolRunner(), None,
                        today=_dt.date(2026, 11, 27))
    await conv.start(CallInfo(uuid="values"))
    await conv.say(line)
    return conv


async def test_values_alone_choose_the_branch_that_collects_them() -> None:
    conv = await _say("three ham and pineapple please, large")
    assert conv.engine.intent == "order"
    assert conv.slots == {"pizza": "hawaiian", "size": "large", "quantity": 3}


async def test_a_question_about_values_chooses_nothing() -> None:
    conv = await _say("do you have any vegetarian pizzas")
    assert conv.engine.intent != "order"
    assert "pizza" not in conv.slots
