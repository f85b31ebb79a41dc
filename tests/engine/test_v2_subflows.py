"""Flow format 2, sub-flows: a `subflow:` state runs another file with parameters, its
`return:` gives values back, the calling flow's handlers still work inside it, and sub-flows
keep their own slots (the record names them by sub-flow)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine_helpers import TODAY

from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools, parse_canned
from flowagent.flow.compiler import load_flow
from flowagent.flow.validate import validate_file

CALL = CallInfo(uuid="sub", caller="+447700900123")

VERIFY = """
    flowagent: 2
    name: Verify the caller
    params:
      tries: {description: How many goes the caller gets, default: 2}
      greeting: {description: What to say first}
    vars:
      goes: 0
    slots:
      pin:
        type: digits
        length: 4
        dtmf: true
        prompt: "{{ params.greeting }} Please say or key your four-digit PIN."
    tools:
      check_pin:
        url: "https://api.example.com/pin/{{ slots.pin }}"
        save: {customer: response.customer}
    start: ask_pin
    states:
      ask_pin:
        collect: [pin]
        next: check
      check:
        call: check_pin
        set:
          vars.goes: vars.goes + 1
        next:
          - when: vars.customer
            go: passed
          - when: vars.goes < params.tries
            go: wrong
          - go: failed
      wrong:
        say: That PIN didn't match.
        clear: [slots.pin]
        next: ask_pin
      passed:
        return: {verified: "true", customer_id: vars.customer}
      failed:
        return: {verified: "false"}
"""

MAIN = """
    flowagent: 2
    name: Bank line
    start: greet
    vars:
      verified: false
    slots:
      pin:
        type: text
        prompt: Unrelated slot with the same name.
    handlers:
      - intent: human
        say: Putting you through.
        go: to_human
    states:
      greet:
        say: Welcome.
        subflow: parts/verify.yaml
        with: {greeting: "'Hello.'", tries: 2}
        next:
          - when: vars.verified
            go: menu
          - go: to_human
      menu:
        say: Thanks, customer {{ vars.customer_id }}.
        end: true
      to_human:
        transfer: "6001"
"""


def write_flows(tmp_path: Path) -> Path:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "verify.yaml").write_text(textwrap.dedent(VERIFY))
    main = tmp_path / "bank.yaml"
    main.write_text(textwrap.dedent(MAIN))
    return main


def canned(answers: list[dict[str, object]]) -> CannedTools:
    return CannedTools(parse_canned({"check_pin": answers}, "tools"))


async def test_a_subflow_runs_with_parameters_and_returns_values(tmp_path: Path) -> None:
    main = write_flows(tmp_path)
    assert validate_file(main).ok, [str(f) for f in validate_file(main).findings]
    flow = load_flow(main)
    tools = canned([{"response": {"customer": None}}, {"response": {"customer": "C-42"}}])
    conv = Conversation(flow, tools, today=TODAY)
    lines = await conv.start(CALL)
    assert lines == ["Welcome.", "Hello. Please say or key your four-digit PIN."]
    assert conv.state == "verify.ask_pin"
    lines = await conv.say("one two three four")
    assert lines == ["That PIN didn't match.", "Hello. Please say or key your four-digit PIN."]
    lines = await conv.dtmf("0042")
    assert lines == ["Thanks, customer C-42."]
    assert conv.vars["verified"] is True and conv.vars["customer_id"] == "C-42"
    record = conv.engine.record.to_dict()
    assert record["slots"] == {"verify.pin": "0042"}  # the sub-flow's slot, named by it
    assert "verify.check" in record["states"]


async def test_the_subflow_gives_up_after_its_tries(tmp_path: Path) -> None:
    flow = load_flow(write_flows(tmp_path))
    conv = Conversation(flow, canned([{"response": {"customer": None}}]), today=TODAY)
    await conv.start(CALL)
    await conv.say("1 2 3 4")
    lines = await conv.say("4 3 2 1")
    assert conv.vars["verified"] is False
    assert conv.transferred_to == "6001" and lines == []


async def test_the_calling_flows_handler_works_inside_and_leaves_the_subflow(
        tmp_path: Path) -> None:
    flow = load_flow(write_flows(tmp_path))
    conv = Conversation(flow, canned([{"response": {"customer": None}}]), today=TODAY)
    await conv.start(CALL)
    lines = await conv.say("can I speak to a person please")
    assert lines == ["Putting you through."]
    assert conv.transferred_to == "6001"
    assert conv.engine.record.states[-1] == "to_human"
