"""`clear:` and `set:` (format 2): forget and work out slots and variables.

The engine calls `apply` on entering a state (and when a handler fires) with the call's own
slot and variable dicts: the `set` lines before the state speaks, the `clear` lines after it
has spoken (so `say` can still use a value being forgotten). Each `set` line sees the lines above
it — so `set: {vars.count: vars.count + 1, vars.many: vars.count > 3}` reads top to bottom like
a recipe — and a value can be used before it is forgotten (`set: {vars.basket: "vars.basket |
without(slots.remove)"}`, `clear: [slots.remove]`). A value set into a slot is checked like
an answer (by `check_slot`, which the engine passes in: the understanding rules live behind
`dialogue/nlu.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowagent.flow.compiler import Expression
from flowagent.flow.expressions import ExpressionError

#: (slot name, value) -> the value as the slot keeps it, or raises ValueError with a reason
SlotCheck = Callable[[str, Any], Any]


class AssignError(Exception):
    """A `set` line that could not be worked out or stored: which line, and why."""

    def __init__(self, target: str, source: str, error: str) -> None:
        super().__init__(error)
        self.target = target
        self.source = source
        self.error = error


def apply(
    clears: tuple[tuple[str, str], ...],
    sets: tuple[tuple[str, str, Expression], ...],
    slots: dict[str, Any],
    vars_: dict[str, Any],
    ctx: Callable[[], Mapping[str, Any]],
    check_slot: SlotCheck,
    initial_vars: Callable[[], Mapping[str, Any]],
) -> list[str]:
    """Carry out the lines; returns the slot names that changed (the record mirrors them).
    A cleared variable goes back to its starting value in `vars:` (a counter to 0, a basket
    to empty), a cleared slot is empty again."""
    changed: list[str] = []
    for scope, name, expr in sets:
        target = f"{scope}.{name}"
        try:
            value = expr(ctx())
        except ExpressionError as exc:
            raise AssignError(target, expr.source, str(exc)) from None
        if scope == "slots":
            try:
                value = check_slot(name, value)
            except ValueError as exc:
                raise AssignError(target, expr.source, str(exc)) from None
            slots.pop(name, None)  # the dict's order is the order slots were last filled
            if value is not None:
                slots[name] = value
            changed.append(name)
        else:
            vars_[name] = value
    for scope, name in clears:
        if scope == "slots":
            if slots.pop(name, None) is not None:
                changed.append(name)
        else:
            vars_[name] = initial_vars().get(name)
    return changed
