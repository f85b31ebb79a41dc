"""The shared template environment: spoken filters, typed rendering, sandboxing, and the name
discovery the validator relies on."""

from __future__ import annotations

import datetime as dt

import pytest
from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError

from flowagent.flow import templates as T


def test_spoken_filters() -> None:
    this_year = dt.date.today().year
    assert T.say_date(f"{this_year}-03-14").endswith("the 14th of March")
    assert T.say_date("2031-03-14") == "Friday the 14th of March 2031"
    assert T.say_date(dt.date(2031, 1, 1)) == "Wednesday the 1st of January 2031"
    assert T.say_date("2031-01-22") == "Wednesday the 22nd of January 2031"
    assert T.say_date("2031-01-13") == "Monday the 13th of January 2031"
    assert T.say_date("not a date") == "not a date"
    assert T.say_money(450) == "£450"
    assert T.say_money(450.5) == "£450.50"
    assert T.say_money("1250") == "£1,250"
    assert T.say_money(None) == ""
    assert T.say_phone("+447700900123") == "0 7 7 0 0, 9 0 0, 1 2 3"
    assert T.say_phone("02079460000") == "0 2 0, 7 9 4 6, 0 0 0 0"
    assert T.say_phone("+33123456789").startswith("plus ")
    assert T.say_postcode("ls11 5ab") == "L S 1 1, 5 A B"
    assert T.say_postcode("M1 1AA") == "M 1, 1 A A"


def test_render_and_typed_values() -> None:
    ctx = {"slots": {"name": "Ann", "bedrooms": 3}, "vars": {"price": None}}
    assert T.render("Hi {{ slots.name }}!", ctx) == "Hi Ann!"
    assert T.render("Price {{ vars.price }}.", ctx) == "Price ."  # None is silent, not "None"
    assert T.render("plain text, no braces", ctx) == "plain text, no braces"
    assert T.render_value("{{ slots.bedrooms }}", ctx) == 3
    assert T.render_value("  {{ slots.bedrooms > 2 }} ", ctx) is True
    assert T.render_value("{{ slots.bedrooms }} beds", ctx) == "3 beds"
    assert T.render("{{ vars.price | say_money }}", {"vars": {"price": 450}}) == "£450"


def test_mapping_keys_win_over_dict_methods() -> None:
    # a slot called `items` or `values` must read the slot, not dict.items
    ctx = {"slots": {"items": 4, "values": "x"}}
    assert T.render("{{ slots.items }} {{ slots.values }}", ctx) == "4 x"
    assert T.evaluate("slots.items == 4", ctx) is True


def test_sandbox_blocks_python_internals() -> None:
    assert T.render("{{ x.__class__ }}", {"x": 1}) == ""
    with pytest.raises(SecurityError):
        T.render("{{ slots.update({'a': 1}) }}", {"slots": {}})


def test_expressions() -> None:
    f = T.compile_expression("slots.bedrooms >= 6")
    assert f({"slots": {"bedrooms": 7}}) is True
    assert T.compile_expression("slots.bedrooms >= 6") is f  # cached
    assert T.evaluate("slots.bedrooms >= 6", {"slots": {}}) is None  # error -> default
    assert T.evaluate("slots.missing", {"slots": {}}) is None
    with pytest.raises(TemplateSyntaxError):
        T.compile_expression("slots.bedrooms >=")


def test_names_used() -> None:
    src = ("{{ slots.bedrooms }} {{ context.company | upper }} {% for x in slots.rooms %}"
           "{{ x.size }}{% endfor %} {{ now }} {{ slots['from_postcode'] }} {{ call.metadata.a }}")
    assert T.template_names(src) == {"slots.bedrooms", "context.company", "slots.rooms", "now",
                                     "slots.from_postcode", "call.metadata"}
    assert T.expression_names("slots.x >= 6 and intent == 'goodbye'") == {"slots.x", "intent"}
    assert T.template_names("no braces") == set()
    assert T.filters_used("{{ a | say_date | upper }}") == {"say_date", "upper"}


def test_syntax_problems_in_plain_words() -> None:
    assert "never closed" in T.template_error("Hello {{ slots.name").message
    assert T.template_error("{% if x %}yes").message == (
        "a `{% if %}` block is never closed with `{% endif %}`")
    assert T.template_error("fine {{ x }}") is None
    assert "braces" in T.expression_error("{{ x }}").message
    assert T.expression_error("a b") is not None
    assert T.expression_error("a == 'b'") is None


SAMPLES = [
    "Hello {{ context.company }}.", "{{ slots.x | say_date }} and {{ vars.y|say_money|upper }}",
    "{{ now }}", "{{ true }}", "{{ call.metadata.a.b }}", "{{slots.a}}{{slots.b}}",
    "Price: {{ vars.price | say_money }}\nRef {{ vars.ref }}",
]
EXPRESSIONS = ["slots.a == 'x'", "vars.ok", "not slots.flag", "slots.n >= 6", "intent != \"no\"",
               "slots.a == slots.b", "-1 < slots.n", "true", "result.ok == false"]


def _flow_strings() -> tuple[list[str], list[str]]:
    from pathlib import Path

    from flowagent.flow.checks.context import CheckContext
    from flowagent.flow.checks.template_checks import _templates
    from flowagent.flow.checks.template_checks import expressions as _expressions
    from flowagent.flow.loader import FlowYamlError, load_file

    root = Path(__file__).resolve().parents[2]
    templates, expressions = list(SAMPLES), list(EXPRESSIONS)
    for path in [*(root / "flows").glob("*.yaml"), *(root / "tests/flows/broken").glob("*.yaml")]:
        try:
            ctx = CheckContext(load_file(path))
        except FlowYamlError:
            continue
        templates += [src for _, src, _ in _templates(ctx)]
        expressions += [src for _, src, _ in _expressions(ctx)]
    return templates, expressions


def test_fast_path_agrees_with_jinja() -> None:
    from jinja2 import nodes

    templates, expressions = _flow_strings()
    fast_hits = 0
    for src in templates:
        fast = T._fast_template(src)
        if fast is None:
            continue
        fast_hits += 1
        ast = T._template_ast(src)  # must parse: the fast path only accepts valid templates
        assert fast[0] == T._template_names(src), src
        assert fast[1] == {n.name for n in ast.find_all(nodes.Filter)}, src
    for src in expressions:
        fast = T._fast_expression(src)
        if fast is None:
            continue
        fast_hits += 1
        assert fast == T._expression_names(src), src
    assert fast_hits > 50


def test_known_filter_shortcut_is_a_subset_of_jinja() -> None:
    from flowagent.flow.checks.template_checks import KNOWN_FILTERS, KNOWN_TESTS

    env = T.get_environment()
    assert set(KNOWN_FILTERS) <= set(env.filters)
    assert set(KNOWN_TESTS) <= set(env.tests)
