"""Amounts of money: "£450", "450 pounds", "450 quid", "four hundred and fifty pounds",
"£1,200.50", "two grand", "2k", "twelve pounds fifty", "60 euros", "$20", "fifty bucks".

Each amount keeps its currency (``MoneyMatch.currency``: GBP, EUR, USD); an amount said
without one is in the flow's own currency (``default``, from the flow's region).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean
from flowagent.understanding.numbers import find_numbers

_CURRENCY_AFTER = re.compile(
    r"^\s*(?P<unit>pounds?|quid|gbp|grand|k|sterling|pence|p|euros?|eur|dollars?|bucks|usd|"
    r"cents?)\b"
)
_SIGN = re.compile(r"[£€$]\s*$")
_SIGN_CURRENCY = {"£": "GBP", "€": "EUR", "$": "USD"}
_UNIT_CURRENCY = {
    "euro": "EUR", "euros": "EUR", "eur": "EUR", "dollar": "USD", "dollars": "USD",
    "bucks": "USD", "usd": "USD",
}
_A_GRAND = re.compile(r"\ba grand\b")
_TENNERS = {"fiver": 5.0, "tenner": 10.0, "pony": 25.0}
_A_TENNER = re.compile(r"\ban? (?P<w>fiver|tenner|pony)\b")


@dataclass(frozen=True, slots=True)
class MoneyMatch:
    value: float
    start: int
    end: int
    explicit: bool  # had £, pounds, quid, grand...
    currency: str = ""  # GBP, EUR, USD; "" = not said (the flow's own currency)


def find_money(text: str) -> list[MoneyMatch]:
    """Amounts in cleaned ``text``; ``explicit`` ones carry a currency word or sign."""
    nums = [n for n in find_numbers(text, homophones=False) if not n.ordinal]
    out: list[MoneyMatch] = [
        MoneyMatch(1000.0, m.start(), m.end(), True, "GBP") for m in _A_GRAND.finditer(text)
    ]
    for m in _A_TENNER.finditer(text):
        out.append(MoneyMatch(_TENNERS[m.group("w")], m.start(), m.end(), True, "GBP"))
    skip: set[int] = set()
    for idx, n in enumerate(nums):
        if idx in skip:
            continue
        value = float(n.value)
        start, end = n.start, n.end
        sign = _SIGN.search(text[max(0, start - 2) : start])
        explicit = sign is not None
        currency = ""
        if sign is not None:
            currency = _SIGN_CURRENCY[sign.group().strip()]
            start = max(text.rfind(c, 0, start) for c in _SIGN_CURRENCY)
        cur = _CURRENCY_AFTER.match(text[end:])
        if cur:
            unit = cur.group("unit")
            explicit = True
            end += cur.end()
            if unit in ("grand", "k"):
                value *= 1000
            elif unit in ("pence", "p", "cent", "cents"):
                value /= 100
            if unit in _UNIT_CURRENCY:
                currency = _UNIT_CURRENCY[unit]
            elif unit in ("pence", "p", "pound", "pounds", "quid", "gbp", "sterling"):
                currency = "GBP"
            # "twelve pounds fifty", "£12 and 50p"
            if unit.startswith(("pound", "euro", "dollar")) or unit in ("quid", "bucks"):
                rest = re.match(r"^\s*(?:and\s+)?", text[end:])
                if idx + 1 < len(nums) and rest and nums[idx + 1].start == end + rest.end():
                    cents = nums[idx + 1]
                    after = re.match(r"^\s*(?:pence|p)?\b", text[cents.end :])
                    if isinstance(cents.value, int) and 0 < cents.value < 100:
                        value += cents.value / 100
                        end = cents.end + (after.end() if after else 0)
                        skip.add(idx + 1)
        out.append(MoneyMatch(round(value, 2), start, end, explicit, currency))
    out.sort(key=lambda m: m.start)
    return out


def parse_money(text: str) -> MoneyMatch | None:
    """The amount in an answer; a bare number counts because the question was about money."""
    found = find_money(clean(text))
    if not found:
        return None
    explicit = [m for m in found if m.explicit]
    return explicit[0] if explicit else found[0]
