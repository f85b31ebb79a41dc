"""Choices built from a tool's answer (format 2's `choices_from:`).

The options are worked out each time they are needed (the list a tool saved may change between
two questions); each is said with the slot's `choice_label` (`item` = the option) or, without
one, by its own values. `spoken` is what `{{ choices }}` says in the slot's prompts: "11 am with
Dr Shah, or 2:30 pm with Dr Patel".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowagent.flow import spoken


@dataclass(frozen=True, slots=True)
class Offer:
    items: tuple[Any, ...]
    labels: tuple[str, ...]

    @property
    def spoken(self) -> str:
        if len(self.labels) == 2:
            return f"{self.labels[0]}, or {self.labels[1]}"
        return spoken.say_list(list(self.labels), "or")


def default_label(item: Any) -> str:
    """An option said without a `choice_label`: its values in order ("11:00 Dr Shah")."""
    if isinstance(item, Mapping):
        return " ".join(spoken.say_time(v) if isinstance(v, str) else str(v)
                        for v in item.values()
                        if v is not None and not isinstance(v, bool | int | float)) \
            or spoken.say_list([item])
    return "" if item is None else str(item)
