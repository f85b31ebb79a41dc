"""Lists and "anything else?" (format 2): list slots and `repeat:` rounds.

A round of a repeating `collect` state ends by adding one record to a list variable; the
collected slots are then emptied so the next round asks for them afresh. Records are built from
`repeat.add` (expressions) or, by default, from every collected slot. Lists are always replaced,
never changed in place, so a forked engine (preemptive generation) cannot touch the real call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowagent.flow.compiler import Expression, RepeatDef
from flowagent.flow.expressions import MAX_ITEMS


class ListFull(Exception):
    """The list already holds MAX_ITEMS records."""


def round_record(repeat: RepeatDef, collect: tuple[str, ...], slots: Mapping[str, Any],
                 value: Callable[[Expression, str], Any]) -> dict[str, Any]:
    """The record one round adds: `repeat.add`, else every collected slot."""
    if repeat.add:
        return {field: value(expr, f"repeat add {field}") for field, expr in repeat.add}
    return {name: slots.get(name) for name in collect}


def appended(current: Any, record: Any) -> list[Any]:
    """A new list: the old one (or nothing) with `record` at the end."""
    items = list(current) if isinstance(current, list | tuple) else []
    if len(items) >= MAX_ITEMS:
        raise ListFull(f"the list already holds {MAX_ITEMS:,} items")
    return [*items, record]


def as_list(value: Any) -> list[Any]:
    """What a list slot keeps: a list, whatever one answer gave."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
