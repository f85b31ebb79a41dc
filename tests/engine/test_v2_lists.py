"""Flow format 2, lists: list slots, "anything else?" rounds (`repeat`), taking an item off at
the read-back, and choices built from a tool's answer (`choices_from`)."""

from __future__ import annotations

from engine_helpers import TODAY, flow_from_yaml

from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools, parse_canned

CALL = CallInfo(uuid="lists", caller="+447700900123")

PIZZA = """
    flowagent: 2
    name: pizza
    start: order
    context:
      data:
        prices: {margherita: 8.5, pepperoni: 9.5, hawaiian: 10}
    vars:
      basket: []
    slots:
      pizza:
        type: choice
        prompt: Which pizza would you like?
        choices: {margherita: [], pepperoni: [], hawaiian: []}
        dtmf: true
      toppings:
        type: choice
        list: true
        prompt: Any extra toppings?
        choices: {ham: [], mushrooms: [mushroom], olives: [olive], none: [no extras, nothing]}
      remove:
        type: choice
        choices_from: vars.basket
        choice_label: "{{ item.pizza }}"
        prompt: Which one shall I take off, {{ choices }}?
    handlers:
      - event: no_match
        go: bye
    states:
      order:
        collect: [pizza, toppings]
        repeat:
          add: {pizza: slots.pizza, toppings: slots.toppings,
                price: "context.prices[slots.pizza]"}
          to: vars.basket
          ask: Anything else?
          until: vars.basket | length >= 3
        next: read_back
      read_back:
        ask: >-
          That's {{ vars.basket | join(', ', 'pizza') }}, {{ vars.basket | sum('price') |
          say_money }}. Shall I place the order, or take something off?
        next:
          - intent: "yes"
            go: placed
          - when: "'off' in answer or 'remove' in answer"
            go: take_off
      take_off:
        collect: [remove]
        next: removed
      removed:
        set:
          vars.basket: vars.basket | without(slots.remove)
        clear: [slots.remove]
        next: read_back
      placed:
        say: Done.
        end: true
      bye:
        say: Bye.
        end: true
"""


async def test_order_item_by_item_with_a_list_slot_and_a_total() -> None:
    conv = Conversation(flow_from_yaml(PIZZA), CannedTools({}), today=TODAY)
    assert await conv.start(CALL) == ["Which pizza would you like?"]
    assert await conv.say("a margherita") == ["Any extra toppings?"]
    assert await conv.say("ham, mushrooms and olives") == ["Anything else?"]
    assert conv.vars["basket"] == [{"pizza": "margherita",
                                    "toppings": ["ham", "mushrooms", "olives"], "price": 8.5}]
    assert conv.slots.get("pizza") is None  # emptied for the next round
    # naming the next item is a "yes"
    assert await conv.say("and a pepperoni") == ["Any extra toppings?"]
    assert await conv.say("no extras") == ["Anything else?"]
    lines = await conv.say("no thanks")
    assert lines == ["That's margherita, pepperoni, £18. Shall I place the order, or take "
                     "something off?"]
    assert conv.state == "read_back"


async def test_take_one_item_off_at_the_read_back() -> None:
    conv = Conversation(flow_from_yaml(PIZZA), CannedTools({}), today=TODAY)
    await conv.start(CALL)
    for said in ("margherita", "ham", "yes", "pepperoni", "olives", "no"):
        await conv.say(said)
    lines = await conv.say("take something off please")
    assert lines == ["Which one shall I take off, margherita, or pepperoni?"]
    lines = await conv.say("the pepperoni")
    assert conv.vars["basket"] == [{"pizza": "margherita", "toppings": ["ham"], "price": 8.5}]
    assert lines == ["That's margherita, £8.50. Shall I place the order, or take something "
                     "off?"]
    assert await conv.say("yes please") == ["Done."]


async def test_until_stops_the_rounds_without_asking() -> None:
    conv = Conversation(flow_from_yaml(PIZZA), CannedTools({}), today=TODAY)
    await conv.start(CALL)
    for said in ("margherita", "ham", "yes", "hawaiian", "olives", "yes", "pepperoni"):
        await conv.say(said)
    lines = await conv.say("mushrooms")
    assert len(conv.vars["basket"]) == 3
    assert lines[0].startswith("That's margherita, hawaiian, pepperoni, £28.")


async def test_keypad_answers_anything_else_and_a_choice() -> None:
    conv = Conversation(flow_from_yaml(PIZZA), CannedTools({}), today=TODAY)
    await conv.start(CALL)
    assert await conv.dtmf("2") == ["Any extra toppings?"]  # 2 = pepperoni
    await conv.say("ham")
    assert (await conv.dtmf("2"))[0].startswith("That's pepperoni")  # 2 = no


DENTIST = """
    flowagent: 2
    name: dentist
    start: find
    tools:
      free_slots:
        url: "https://api.example.com/free"
        save: {free: response.slots}
    slots:
      appointment:
        type: choice
        choices_from: vars.free
        choice_label: "{{ item.time | say_time }} with {{ item.dentist }}"
        prompt: I can do {{ choices }}. Which would you like?
        confirm: true
    handlers:
      - event: no_match
        say: Let me pass you to reception.
        go: reception
    states:
      find:
        call: free_slots
        next: pick
      pick:
        collect: [appointment]
        next: booked
      booked:
        say: Booked with {{ slots.appointment.dentist }}, reference {{ slots.appointment.id }}.
        end: true
      reception:
        transfer: "7001"
"""

FREE = {"slots": [{"time": "11:00", "dentist": "Dr Shah", "id": 17},
                  {"time": "14:30", "dentist": "Dr Patel", "id": 18}]}


def tools(answer: dict[str, object]) -> CannedTools:
    return CannedTools(parse_canned({"free_slots": {"response": answer}}, "tools"))


async def test_options_from_a_tool_are_offered_and_matched_by_what_the_caller_says() -> None:
    conv = Conversation(flow_from_yaml(DENTIST), tools(FREE), today=TODAY)
    lines = await conv.start(CALL)
    assert lines == ["I can do 11 am with Dr Shah, or 2:30 pm with Dr Patel. Which would you "
                     "like?"]
    lines = await conv.say("the eleven o'clock with Dr Shah")
    assert conv.slots["appointment"] == FREE["slots"][0]
    assert lines == ["I have 11 am with Dr Shah. Is that right?"]
    assert await conv.say("yes") == ["Booked with Dr Shah, reference 17."]


async def test_a_run_time_option_by_time_alone_and_by_position() -> None:
    conv = Conversation(flow_from_yaml(DENTIST), tools(FREE), today=TODAY)
    await conv.start(CALL)
    await conv.say("half past two")
    assert conv.slots["appointment"]["id"] == 18
    conv = Conversation(flow_from_yaml(DENTIST), tools(FREE), today=TODAY)
    await conv.start(CALL)
    await conv.say("the first one")
    assert conv.slots["appointment"]["id"] == 17


async def test_no_options_take_the_no_match_path() -> None:
    conv = Conversation(flow_from_yaml(DENTIST), tools({"slots": []}), today=TODAY)
    lines = await conv.start(CALL)
    assert lines == ["Let me pass you to reception."]
    assert conv.transferred_to == "7001"
