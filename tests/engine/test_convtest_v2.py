"""Conversation tests, format 2 additions: a fixed clock (`now:` with time and zone, per file
or per test), slots and variables filled before a test, exact `null` ("not filled"), named
run-time problems in the output, and the new keys checked with file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

from flowagent.dialogue.conversation_tests import load_tests, run_tests
from flowagent.dialogue.file_checks import validate_companion
from flowagent.flow.compiler import load_flow

FLOW = """
flowagent: 2
name: Clock shop
language: en-GB
timezone: Europe/London
hours:
  shop:
    monday to saturday: 09:00-17:30
vars:
  verified: false
context:
  data:
    price: forty
slots:
  name:
    type: name
    prompt: Can I take your name?
  reference:
    type: text
    prompt: What's the reference?
handlers:
  - event: error
    say: Sorry, something is wrong with our prices.
    go: closed
states:
  greet:
    next:
      - when: hours.shop and vars.verified
        go: welcome_back
      - when: hours.shop
        go: ask_name
      - go: closed
  welcome_back:
    say: Welcome back {{ slots.name }}, it's {{ now.time }}.
    next: price
  price:
    set:
      vars.verified: context.price * 2
    say: never heard
    next: closed
  ask_name:
    collect: [name]
    next: closed
  closed:
    say: We're closed now.
    end: true
start: greet
"""

TESTS = """
now: 2026-03-02T10:00 Europe/London
tests:
  - name: open in the morning
    turns:
      - expect: {say_contains: Can I take your name, state: ask_name}
  - name: closed in the evening
    now: 2026-03-02T19:30
    turns:
      - expect: {say_contains: closed}
  - name: a known caller, filled before the call
    slots: {name: Jane Smith}
    vars: {verified: true}
    turns:
      - expect: {say_contains: "Welcome back Jane Smith, it's 10:00"}
  - name: null means not filled
    turns:
      - caller: Jane Smith
        expect: {slots: {name: null}}
"""


def write(tmp_path: Path, tests: str = TESTS) -> tuple[Path, Path]:
    flow = tmp_path / "shop.yaml"
    flow.write_text(textwrap.dedent(FLOW))
    t = tmp_path / "shop.tests.yaml"
    t.write_text(textwrap.dedent(tests))
    return flow, t


def test_a_fixed_clock_and_filled_slots_decide_the_conversation(tmp_path: Path) -> None:
    flow_path, tests_path = write(tmp_path)
    flow = load_flow(flow_path)
    specs, _ = load_tests(tests_path, flow.timezone)
    results = {r.name: r for r in run_tests(flow, specs)}
    assert results["open in the morning"].passed, results["open in the morning"].failure
    assert results["closed in the evening"].passed, results["closed in the evening"].failure
    known = results["a known caller, filled before the call"]
    # the prefilled caller is welcomed, then `price` fails: the problem is named in the output
    assert known.passed, known.failure
    assert any(line.startswith("problem: expression in state `price`, set vars.verified")
               and "cannot multiply text" in line for line in known.conversation)
    assert "agent: Sorry, something is wrong with our prices." in known.conversation
    # `slots: {name: null}` fails once the name is filled
    null = results["null means not filled"]
    assert not null.passed
    assert "expected slot name to be empty, but it is 'Jane Smith'" in null.failure


def test_a_prefilled_slot_the_flow_would_refuse_fails_the_test(tmp_path: Path) -> None:
    flow_path, tests_path = write(tmp_path, """
        tests:
          - name: bad prefill
            slots: {name: "12345"}
            turns:
              - expect: {ended: false}
    """)
    flow = load_flow(flow_path)
    specs, _ = load_tests(tests_path)
    [result] = run_tests(flow, specs)
    assert not result.passed and "slots" in result.failure and "name" in result.failure


def test_new_test_file_keys_are_checked_at_their_lines(tmp_path: Path) -> None:
    _, tests_path = write(tmp_path, """
        now: 2026-03-02T10:00 Europe/Lundon
        tests:
          - name: typo in a slot
            now: tomorrow at ten
            slots: {nmae: Jane}
            vars: {verifed: true}
            turns:
              - expect: {ended: false}
    """)
    report = validate_companion(tests_path, "tests")
    found = {(f.code, f.line, f.column): f for f in report.findings}
    assert ("bad-value", 2, 6) in found and "Europe/Lundon" in found[("bad-value", 2, 6)].message
    assert ("bad-value", 5, 10) in found  # not a date and time
    slot = found[("unknown-slot", 6, 13)]
    assert "nmae" in slot.message and slot.suggestion == "Did you mean `name`?"
    var = found[("unknown-var", 7, 12)]
    assert "verifed" in var.message and var.suggestion == "Did you mean `verified`?"
