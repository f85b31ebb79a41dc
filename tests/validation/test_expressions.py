"""Format 2's expression evaluator (flowagent/flow/expressions.py): what it works out, what it
refuses, and that every refusal is a plain sentence naming the part that failed."""

from __future__ import annotations

import pytest

from flowagent.flow.expressions import (
    MAX_ITEMS,
    MAX_TEXT,
    ExpressionError,
    compile_expression,
    type_problems,
)

CTX = {
    "slots": {"quantity": 3, "zero": 0, "pizza": "margherita", "start": "2026-03-10",
              "end": "2026-03-12", "toppings": ["ham", "olives"]},
    "vars": {"total": 10, "basket": [{"pizza": "margherita", "price": 8.5},
                                     {"pizza": "pepperoni", "price": 9.0}]},
    "context": {"prices": {"margherita": 8.5, "pepperoni": 9}},
}


def run(src: str) -> object:
    return compile_expression(src)(CTX)


@pytest.mark.parametrize(("src", "want"), [
    ("vars.total + slots.quantity * 2", 16),
    ("context.prices[slots.pizza] * slots.quantity", 25.5),
    ("vars.basket | sum('price')", 17.5),
    ("vars.basket | length >= 2 and not slots.missing", True),
    ("vars.basket | join(', ', 'pizza')", "margherita, pepperoni"),
    ("slots.toppings | say_list", "ham and olives"),
    ("slots.toppings + ['onion']", ["ham", "olives", "onion"]),
    ("vars.basket | without(vars.basket[0]) | length", 1),
    ("slots.end >= slots.start", True),  # ISO dates compare in date order
    ("'pep' in vars.basket[1].pizza", True),
    ("slots.pizza | upper ~ '!'", "MARGHERITA!"),
    ("(vars.total / 4) | round(1)", 2.5),
    ("{'pizza': slots.pizza, 'n': slots.quantity}", {"pizza": "margherita", "n": 3}),
    ("slots.missing > 3", False),  # a condition on an unanswered question does not hold
    ("slots.missing | default(0) + 1", 1),
    ("slots.quantity if slots.quantity > 2 else 0", 3),
    ("slots.toppings[0:1]", ["ham"]),
    ("slots.missing is defined", False),
])
def test_what_expressions_work_out(src: str, want: object) -> None:
    assert run(src) == want


@pytest.mark.parametrize(("src", "said"), [
    ("slots.pizza + 1", "cannot add text (slots.pizza) and a number (1); join text with `~`"),
    ("slots.missing + 1", "cannot work out `slots.missing + 1`: slots.missing is empty"),
    ("vars.total / 0", "cannot divide by zero"),
    ("vars.total / slots.zero", "cannot divide by zero (slots.zero is 0)"),
    ("slots.pizza.upper", "slots.pizza.upper: text has no field `upper`"),
    ("slots.pizza | sum", "`sum` needs a list, but got text"),
    ("slots.pizza < 3", "cannot compare text (slots.pizza) with a number (3)"),
])
def test_run_time_failures_say_what_failed(src: str, said: str) -> None:
    with pytest.raises(ExpressionError) as err:
        run(src)
    assert said in str(err.value)


@pytest.mark.parametrize(("src", "said", "hint"), [
    ("len(vars.basket)", "calls a function", "x | length"),
    ("slots.pizza.__class__", "names starting with `_` cannot be read", None),
    ("vars.total ** 2", "powers", None),
    ("vars.basket | lenght", "no filter called `lenght`", "`length`"),
    ("{{ slots.pizza }}", "without `{{ }}` braces", None),
    ("slots.pizza ==", "", None),
])
def test_what_expressions_refuse_to_compile(src: str, said: str, hint: str | None) -> None:
    with pytest.raises(ExpressionError) as err:
        compile_expression(src)
    assert said in str(err.value)
    if hint:
        assert hint in (err.value.hint or "")


def test_values_are_capped_so_an_expression_cannot_run_away() -> None:
    big = {"vars": {"text": "x" * (MAX_TEXT // 2 + 1), "items": list(range(MAX_ITEMS // 2 + 1))}}
    with pytest.raises(ExpressionError, match="text grew past"):
        compile_expression("vars.text ~ vars.text")(big)
    with pytest.raises(ExpressionError, match="list grew past"):
        compile_expression("vars.items + vars.items")(big)
    with pytest.raises(ExpressionError, match="too large"):
        compile_expression("99999999 * 99999999")({})


def test_kinds_that_never_fit_are_found_before_the_call() -> None:
    kinds = {"slots.name": "text", "vars.basket": "list", "vars.total": "number"}.get
    assert type_problems("vars.total + 1", kinds) == []
    assert type_problems("vars.unknown * 2", kinds) == []  # a tool's answer: cannot know
    [(message, needle)] = type_problems("slots.name + 1", kinds)
    assert "would add text and a number" in message and "`~`" in message
    assert needle == "slots.name"
    [(message, _)] = type_problems("vars.total | sum", kinds)
    assert "`sum` needs a list" in message
    [(message, _)] = type_problems("slots.name >= 3", kinds)
    assert "cannot be compared" in message
