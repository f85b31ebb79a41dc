"""Flow format 2, values: `vars` + `set`/`clear` (counting, asking again), slot checks that
compare answers (`valid_when`), dates of birth, a handler whose tool runs before it speaks, and
named run-time failures. Each test talks to a flow the way `flowagent chat` does."""

from __future__ import annotations

import pytest
from engine_helpers import TODAY, flow_from_yaml

from flowagent.dialogue.actions import FlowProblem
from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools, parse_canned

CALL = CallInfo(uuid="v2", caller="+447700900123")


def canned(answers: dict[str, object]) -> CannedTools:
    return CannedTools(parse_canned(answers, "tools"))

ASK_AGAIN = """
    flowagent: 2
    name: ask again
    start: ask_ref
    vars:
      tries: 0
    slots:
      reference:
        type: text
        prompt: What's your booking reference?
    tools:
      find_booking:
        url: "https://api.example.com/bookings/{{ slots.reference }}"
        save: {found: response.found}
    handlers:
      - event: no_match
        go: to_human
    states:
      ask_ref:
        collect: [reference]
        next: look_up
      look_up:
        call: find_booking
        next:
          - when: vars.found
            go: found
          - go: not_found
      not_found:
        set:
          vars.tries: vars.tries + 1
        clear: [slots.reference]
        say: I couldn't find booking {{ answer }}. That was try {{ vars.tries }}.
        next:
          - when: vars.tries < 2
            go: ask_ref
          - go: to_human
      found:
        say: Found it.
        end: true
      to_human:
        transfer: "6001"
"""


async def test_clear_asks_again_and_set_counts_the_tries() -> None:
    flow = flow_from_yaml(ASK_AGAIN)
    tools = canned({"find_booking": [{"response": {"found": False}},
                                          {"response": {"found": False}}]})
    conv = Conversation(flow, tools, today=TODAY)
    assert await conv.start(CALL) == ["What's your booking reference?"]
    lines = await conv.say("AB123")
    assert lines[0] == "I couldn't find booking AB123. That was try 1."
    assert lines[1] == "What's your booking reference?"  # asked again: the slot was cleared
    assert conv.slots.get("reference") is None and conv.vars["tries"] == 1
    lines = await conv.say("CD456")
    assert "That was try 2." in lines[0]
    assert conv.transferred_to == "6001"
    assert conv.engine.record.vars["tries"] == 2


async def test_restart_puts_variables_back_to_their_starting_values() -> None:
    flow = flow_from_yaml(ASK_AGAIN.replace("handlers:\n", "handlers:\n      - intent: restart\n"
                                            "        do: restart\n"))
    tools = canned({"find_booking": {"response": {"found": False}}})
    conv = Conversation(flow, tools, today=TODAY)
    await conv.start(CALL)
    await conv.say("AB123")
    assert conv.vars["tries"] == 1
    await conv.say("start again from the beginning")
    assert conv.vars["tries"] == 0


HIRE = """
    flowagent: 2
    name: hire
    start: dates
    slots:
      start_date:
        type: date
        prompt: What day do you want the van from?
      end_date:
        type: date
        prompt: And the last day?
        valid_when: value >= slots.start_date
        invalid: The last day can't be before the first. What's the last day?
      date_of_birth:
        type: date
        prompt: And the driver's date of birth?
        min: 100 years ago
        max: 21 years ago
        invalid: Drivers must be at least 21. What's the driver's date of birth?
    states:
      dates:
        collect: [start_date, end_date, date_of_birth]
        next: done
      done:
        say: Thanks.
        end: true
"""


async def test_valid_when_compares_two_answers_and_asks_again() -> None:
    conv = Conversation(flow_from_yaml(HIRE), canned({}), today=TODAY)
    await conv.start(CALL)
    await conv.say("the 10th of March")
    lines = await conv.say("the 5th of March")
    assert lines == ["The last day can't be before the first. What's the last day?"]
    assert conv.slots.get("end_date") is None and conv.state == "dates"
    lines = await conv.say("the 12th of March")
    assert conv.slots["end_date"] == "2026-03-12"
    assert lines == ["And the driver's date of birth?"]


async def test_date_of_birth_needs_the_year_and_an_adult() -> None:
    conv = Conversation(flow_from_yaml(HIRE), canned({}), today=TODAY)
    await conv.start(CALL)
    await conv.say("the 10th of March")
    await conv.say("the 12th of March")
    lines = await conv.say("the 12th of June")  # no year: not guessed into last year
    assert lines == ["Sorry, I need the year as well. And the driver's date of birth?"]
    lines = await conv.say("12th June 2010")  # 15 years old
    assert lines == ["Drivers must be at least 21. What's the driver's date of birth?"]
    lines = await conv.say("the twelfth of June nineteen eighty five")
    assert conv.slots["date_of_birth"] == "1985-06-12" and lines == ["Thanks."]


SIDE = """
    flowagent: {version}
    name: side question
    start: ask
    intents:
      opening_times:
        examples: [when are you open, what are your opening times]
    slots:
      name:
        type: name
        prompt: Can I take your name?
    tools:
      get_hours:
        url: "https://api.example.com/hours"
    handlers:
      - intent: opening_times
        call: get_hours
        say: "We're open {{{{ result.data.today }}}} today."
    states:
      ask:
        collect: [name]
        next: bye
      bye:
        say: Thanks {{{{ slots.name }}}}.
        end: true
"""


@pytest.mark.parametrize("version", [1, 2])
async def test_a_side_question_handler_speaks_after_its_tool_and_goes_back(version: int) -> None:
    flow = flow_from_yaml(SIDE.format(version=version))
    tools = canned({"get_hours": {"response": {"today": "9 till 5"}}})
    conv = Conversation(flow, tools, today=TODAY)
    await conv.start(CALL)
    lines = await conv.say("when are you open")
    assert lines == ["We're open 9 till 5 today.", "Can I take your name?"]
    assert [e.tool for e in tools.log] == ["get_hours"]
    lines = await conv.say("Jane Smith")
    assert lines == ["Thanks Jane Smith."]


FAULT = """
    flowagent: 2
    name: faults
    start: a
    vars:
      price: 0
    context:
      data:
        price: forty
    handlers:
      - event: error
        say: Sorry, I can't work that out. Let me put you through.
        go: to_human
    states:
      a:
        set:
          vars.price: context.price * 2
        say: That's {{ vars.price }}.
        next: to_human
      to_human:
        transfer: "6001"
"""


async def test_an_expression_that_fails_is_named_and_the_flow_fallback_is_heard() -> None:
    flow = flow_from_yaml(FAULT)
    conv = Conversation(flow, canned({}), today=TODAY)
    lines = await conv.start(CALL)
    assert lines == ["Sorry, I can't work that out. Let me put you through."]
    problems = [a for a in conv.executor.actions if isinstance(a, FlowProblem)]
    assert len(problems) == 1
    p = problems[0]
    assert (p.kind, p.state, p.where) == ("expression", "a", "state `a`, set vars.price")
    assert p.source == "context.price * 2" and "cannot multiply text" in p.error
    assert any("expression error in state `a`, set vars.price" in e
               for e in conv.engine.record.errors)
    assert conv.transferred_to == "6001"


async def test_set_checks_a_slot_value_like_an_answer() -> None:
    flow = flow_from_yaml("""
        flowagent: 2
        name: set slot
        start: a
        slots:
          rooms: {type: integer, prompt: How many rooms?, min: 1, max: 5}
        states:
          a:
            set:
              slots.rooms: 9
            say: Rooms {{ slots.rooms }}.
            end: true
    """)
    conv = Conversation(flow, canned({}), today=TODAY)
    lines = await conv.start(CALL)
    assert "Rooms 9." not in " ".join(lines)
    assert any("set slots.rooms" in e and "9" in e for e in conv.engine.record.errors)
