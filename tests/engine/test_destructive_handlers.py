"""An intent that a flow answers by hanging up or restarting gets the matcher's higher bar
(like the built-in `restart` and `goodbye`): a caller who only mentions the word on the way to
something else keeps their call; one who asks for it gets it.
"""

from __future__ import annotations

from engine_helpers import flow_from_yaml

from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import ToolRunner

FLOW = """
flowagent: 1
name: destructive
start: ask
intents:
  stop_call:
    examples: ["stop", "stop the call", "end the call"]
  more:
    examples: ["tell me more"]
slots:
  items: {type: text, prompt: "What are we moving?"}
handlers:
  - intent: stop_call
    say: "Okay, goodbye."
    do: hangup
  - intent: restart
    say: "Starting again."
    do: restart
  - intent: repeat
    do: repeat
states:
  ask:
    collect: [items]
    next: done
  done:
    say: "Thanks, we'll move {{ slots.items }}."
    end: true
"""


def test_handlers_that_end_or_restart_make_their_intent_strict() -> None:
    flow = flow_from_yaml(FLOW)
    assert flow.matcher is not None
    assert {"stop_call", "restart", "goodbye"} <= set(flow.matcher.strict)
    assert "more" not in flow.matcher.strict


async def test_mentioning_the_word_does_not_hang_up() -> None:
    conv = Conversation(flow_from_yaml(FLOW), ToolRunner())
    await conv.start(CallInfo("c1"))
    # (without the higher bar "stop the van" scores 0.75 against the example "stop")
    lines = await conv.say("stop the van")
    assert "Okay, goodbye." not in lines
    assert lines[-1] == "Thanks, we'll move stop the van."


async def test_go_back_does_not_restart_the_call() -> None:
    conv = Conversation(flow_from_yaml(FLOW), ToolRunner())
    await conv.start(CallInfo("c2"))
    lines = await conv.say("go back")
    assert "Starting again." not in lines
    # a command is never a text value: the question is asked again
    assert lines[-1] == "What are we moving?"
    assert conv.slots.get("items") is None


async def test_asking_for_it_still_works() -> None:
    conv = Conversation(flow_from_yaml(FLOW), ToolRunner())
    await conv.start(CallInfo("c3"))
    lines = await conv.say("stop the call")
    assert lines[-1] == "Okay, goodbye." and conv.ended
    conv = Conversation(flow_from_yaml(FLOW), ToolRunner())
    await conv.start(CallInfo("c4"))
    lines = await conv.say("can we start again")
    assert "Starting again." in lines and not conv.ended
