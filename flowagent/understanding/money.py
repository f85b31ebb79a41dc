"""Amounts of money in pounds: "£450", "450 pounds", "450 quid", "four hundred and fifty
pounds", "£1,200.50", "two grand", "2k", "twelve pounds fifty" -> float pounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean
from flowagent.understanding.numbers import find_numbers

_CURRENCY_AFTER = re.compile(r"^\s*(?P<unit>pounds?|quid|gbp|grand|k|sterling|pence|p)\b")
_POUND_SIGN = re.compile(r"£\s*$")
_A_GRAND = re.compile(r"\ba grand\b")


@dataclass(frozen=True, slots=True)
class MoneyMatch:
    value: float
    start: int
    end: int
    explicit: bool  # had £, pounds, quid, grand...


def find_money(text: str) -> list[MoneyMatch]:
    """Amounts in cleaned ``text``; ``explicit`` ones carry a currency word or sign."""
    nums = [n for n in find_numbers(text, homophones=False) if not n.ordinal]
    out: list[MoneyMatch] = [
        MoneyMatch(1000.0, m.start(), m.end(), True) for m in _A_GRAND.finditer(text)
    ]
    skip: set[int] = set()
    for idx, n in enumerate(nums):
        if idx in skip:
            continue
        value = float(n.value)
        start, end = n.start, n.end
        explicit = bool(_POUND_SIGN.search(text[max(0, start - 2) : start]))
        if explicit:
            start = text.rfind("£", 0, start)
        m = _CURRENCY_AFTER.match(text[end:])
        if m:
            unit = m.group("unit")
            explicit = True
            end += m.end()
            if unit in ("grand", "k"):
                value *= 1000
            elif unit in ("pence", "p"):
                value /= 100
            # "twelve pounds fifty", "£12 and 50p"
            if unit.startswith("pound") or unit == "quid":
                rest = re.match(r"^\s*(?:and\s+)?", text[end:])
                if idx + 1 < len(nums) and rest and nums[idx + 1].start == end + rest.end():
                    cents = nums[idx + 1]
                    after = re.match(r"^\s*(?:pence|p)?\b", text[cents.end :])
                    if isinstance(cents.value, int) and 0 < cents.value < 100:
                        value += cents.value / 100
                        end = cents.end + (after.end() if after else 0)
                        skip.add(idx + 1)
        out.append(MoneyMatch(round(value, 2), start, end, explicit))
    out.sort(key=lambda m: m.start)
    return out


def parse_money(text: str) -> MoneyMatch | None:
    """The amount in an answer; a bare number counts because the question was about money."""
    found = find_money(clean(text))
    if not found:
        return None
    explicit = [m for m in found if m.explicit]
    return explicit[0] if explicit else found[0]
