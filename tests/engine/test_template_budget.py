"""Templates run under a time and output budget (flow/template_budget.py): what a flow's own
text makes impossible is a validate error; what depends on the call's data is stopped on the
call, named, and the caller hears the flow's `error` handler — never a frozen server."""

from __future__ import annotations

import time

import pytest
from engine_helpers import TODAY, flow_from_yaml

from flowagent.dialogue.actions import FlowProblem
from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools, parse_canned
from flowagent.flow.compiler import template
from flowagent.flow.template_budget import TemplateBudgetError
from flowagent.flow.validate import validate_text

CALL = CallInfo(uuid="budget", caller="+447700900123")

# the list comes from a tool on the call: the validator cannot know how long it will be
LOOPS = """
    flowagent: 1
    name: loops
    start: look
    tools:
      stock:
        url: "https://api.example.com/stock"
        save: {items: response.items}
    handlers:
      - event: error
        say: Sorry, something went wrong on our side. Let me put you through.
        go: to_human
    states:
      look:
        call: stock
        next: read
      read:
        say: >-
          {% for a in vars.items %}{% for b in vars.items %}{% endfor %}{% endfor %}We have
          {{ vars.items | length }} things.
        next: to_human
      to_human:
        transfer: "6001"
"""


async def _run(items: list[int]) -> tuple[list[str], Conversation, float]:
    flow = flow_from_yaml(LOOPS)
    tools = CannedTools(parse_canned({"stock": {"items": items}}, "tools"))
    conv = Conversation(flow, tools, today=TODAY)
    t0 = time.monotonic()
    lines = await conv.start(CALL)
    return lines, conv, time.monotonic() - t0


async def test_a_template_within_budget_speaks() -> None:
    lines, conv, _ = await _run([1, 2, 3])
    assert lines == ["We have 3 things."]
    assert not [a for a in conv.executor.actions if isinstance(a, FlowProblem)]


async def test_a_template_over_budget_on_a_call_takes_the_error_path() -> None:
    # 20,000 items looped within themselves: 400 million rounds; stopped at the budget
    lines, conv, took = await _run(list(range(20_000)))
    assert lines == ["Sorry, something went wrong on our side. Let me put you through."]
    problems = [a for a in conv.executor.actions if isinstance(a, FlowProblem)]
    assert len(problems) == 1 and problems[0].kind == "template"
    assert problems[0].state == "read" and "longer than 200 ms" in problems[0].error
    assert conv.transferred_to == "6001"
    assert took < 5  # without the budget this call would take many minutes


@pytest.mark.parametrize("src, reason", [
    ("{{ 'a' * slots.n }}", "1,000,000,000 characters"),
    ("{{ 'x' | center(slots.n) }}", "1,000,000,000 characters"),
    ("{{ '%0*d' | format(slots.n, 1) }}", "1,000,000,000 characters"),
    ("{{ '{:>{w}}'.format(1, w=slots.n) }}", "1,000,000,000 characters"),
    ("{{ 10 ** slots.n }}", "too big a number"),
    ("{% for i in range(slots.n) %}{% endfor %}", "range() would count"),
    ("{% for i in range(9000) %}{{ slots.word }}{% endfor %}", "more than 50,000 characters"),
])
def test_values_from_the_call_cannot_build_a_huge_text(src: str, reason: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(TemplateBudgetError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        template(src).render({"slots": {"n": 10**9, "word": "abcdefgh"}})
    assert time.monotonic() - t0 < 1  # refused before the value was built


def test_ordinary_templates_are_untouched() -> None:
    ctx = {"slots": {"name": "Ann", "price": 100_000, "items": ["tea", "milk"]}}
    src = ("Hello {{ slots.name }}, that's {{ '%d' | format(slots.price) }} "
           "{{ '{:>7}'.format(slots.price) }} for {% for i in slots['items'] %}{{ i }}"
           "{% if not loop.last %} and {% endif %}{% endfor %}, {{ 'ab' * 2 }} {{ 2 ** 10 }}.")
    assert template(src).render(ctx) == (
        "Hello Ann, that's 100000 100000 for tea and milk, abab 1024.")


HOSTILE = """
flowagent: 1
name: hostile
start: greet
handlers:
  - event: no_input
    go: bye
  - event: no_match
    go: bye
states:
  greet:
    say: "{say}"
    next: bye
  bye:
    say: Goodbye.
    end: true
"""


@pytest.mark.parametrize("say, code, mentions", [
    ("{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}Hi.",
     "template-too-costly", "longer than 200 ms"),
    ("{% for i in range(99999) %}{% endfor %}Hi.", "template-too-costly", "99,999"),
    ("Hi {{ 'a' * 10**9 }}.", "template-too-costly", "1,000,000,000"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "template-too-costly", "itself"),
    ("{{ ''|attr('\\\\x5f\\\\x5fclass\\\\x5f\\\\x5f') }}", "unsafe-template", "__class__"),
    ("{{ slots|map(attribute='__class__')|list }}", "unsafe-template", "__class__"),
    ("{{ slots|attr('__cla' ~ 'ss__') }}", "unsafe-template", "worked out on the call"),
    ("{% include '/etc/passwd' %}", "unsafe-template", "another template file"),
])
def test_validate_refuses_what_would_fail_or_freeze_every_call(say: str, code: str,
                                                               mentions: str) -> None:
    t0 = time.monotonic()
    report = validate_text(HOSTILE.replace("{say}", say.replace('"', '\\"')), "<t>",
                           check_env=False)
    took = time.monotonic() - t0
    found = [f for f in report.errors if f.code == code]
    assert found, [str(f) for f in report.findings]
    assert mentions in found[0].message and (found[0].line, found[0].column) == (12, 10)
    assert took < 3  # the old validator accepted these in 0.1 s; serve then hung for ever
