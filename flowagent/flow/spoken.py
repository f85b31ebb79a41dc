"""Flow format 2's spoken-output and list filters: `say_time`, `say_digits`, `say_list`,
`without`, `starts_with`, `ends_with`.

They live here, not in `templates.py`, because both readers of a flow use them: Jinja templates
(`{{ slots.code | say_digits }}`) and flowagent's own expression evaluator (`expressions.py`,
`set: {vars.basket: "vars.basket | without(slots.item)"}`). Each is a plain function of its
input that never raises for odd input: a voice line must not fail because a value arrived as a
number instead of text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ends_with", "say_digits", "say_list", "say_time", "starts_with", "without"]

_TIME = re.compile(r"^\s*([01]?\d|2[0-3])[:.]([0-5]\d)(?::[0-5]\d)?\s*$")


def say_time(value: Any) -> str:
    """'14:30' -> '2:30 pm', '11:00' -> '11 am', '12:00' -> '12 noon', '00:00' -> 'midnight'.

    A TTS voice reads "14:30" as "fourteen thirty"; callers in a shop or surgery say "half past
    two" or "two thirty p m". Anything that is not a time of day comes back as text."""
    if value is None:
        return ""
    m = _TIME.match(str(value))
    if not m:
        return str(value)
    hour, minute = int(m.group(1)), int(m.group(2))
    if minute == 0 and hour == 12:
        return "12 noon"
    if minute == 0 and hour == 0:
        return "midnight"
    suffix = "am" if hour < 12 else "pm"
    h12 = hour % 12 or 12
    return f"{h12} {suffix}" if minute == 0 else f"{h12}:{minute:02d} {suffix}"


def say_digits(value: Any, group: int = 3) -> str:
    """'012334' -> '0 1 2, 3 3 4': each digit on its own (a voice reads "012334" as twelve
    thousand...), groups of `group` separated by a pause. Letters in a code are spelt too."""
    if value is None:
        return ""
    chars = [c for c in str(value) if c.isalnum()]
    if not chars:
        return str(value)
    size = group if isinstance(group, int) and group > 0 else len(chars)
    groups = [" ".join(chars[i : i + size]) for i in range(0, len(chars), size)]
    return ", ".join(groups).upper()


def _label(item: Any) -> str:
    if isinstance(item, Mapping):
        return " ".join(str(v) for v in item.values() if v is not None and v != "")
    return "" if item is None else str(item)


def say_list(value: Any, last: str = "and") -> str:
    """['ham', 'mushrooms', 'olives'] -> 'ham, mushrooms and olives' (`say_list('or')` for a
    choice). Records are said by their values in order; text is returned as it is."""
    if value is None:
        return ""
    if isinstance(value, str) or not isinstance(value, Iterable) or isinstance(value, Mapping):
        return _label(value)
    items = [_label(v) for v in value]
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def without(value: Any, item: Any) -> list[Any]:
    """The list with the first element equal to `item` taken out (the basket without the item
    the caller asked to remove). Not a list: an empty list."""
    if value is None or isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        return []
    out = list(value)
    for i, v in enumerate(out):
        if v == item:
            del out[i]
            break
    return out


def starts_with(value: Any, prefix: Any) -> bool:
    return str("" if value is None else value).lower().startswith(str(prefix).lower())


def ends_with(value: Any, suffix: Any) -> bool:
    return str("" if value is None else value).lower().endswith(str(suffix).lower())
