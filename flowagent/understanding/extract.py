"""Several slots from one utterance: "a three-bed in LS11 5AB to M1 1AA on the 14th" ->
bedrooms=3, from_postcode=LS11 5AB, to_postcode=M1 1AA, move_date=the 14th.

How it avoids double use: candidates are taken type by type, most distinctive first (email,
phone, postcode, money with a currency word, clock times, dates, counted numbers, choices,
names introduced by a cue), and a candidate whose words were already used is dropped — so "14th"
becomes a date and never also bedrooms=14, and "three-bed" is a count and never a date.
Two values of one type fill that type's slots in text order, unless a slot's name word sits
just before a value ("to M1 1AA" -> to_postcode). Bare answers (a lone "three", "yes", a name,
free text) only fill ``current``, the slot just asked, which is then read from the words no
other slot used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from functools import lru_cache
from typing import Any

from flowagent.understanding import dates, email, money, names, numbers, phone, postcode, times
from flowagent.understanding.choice import find_choices
from flowagent.understanding.normalise import clean, overlaps, wordset
from flowagent.understanding.slots import (
    BAD_PHONE,
    _check_date,
    _range,
    _text_checks,
    date_bounds,
    money_value,
    parse_slot,
)
from flowagent.understanding.types import ParseResult, SlotSpec

SpecLike = SlotSpec | Mapping[str, Any] | str

# Words of a slot's name that say nothing about which number it is.
_GENERIC = wordset("number num no count of how many total the a qty quantity amount")
_WORD = re.compile(r"[a-z]+")


@lru_cache(maxsize=1024)
def name_words(slot_name: str) -> frozenset[str]:
    """Keywords for a slot from its name: "bedrooms" -> {bedrooms, bedroom, bed, beds}."""
    out: set[str] = set()
    for w in re.split(r"[_\W]+", slot_name.lower()):
        if not w or w in _GENERIC:
            continue
        out.add(w)
        if w.endswith("s") and len(w) > 3:
            out.add(w[:-1])
        else:
            out.add(w + "s")
        if w.startswith("bedroom"):
            out.update({"bed", "beds", "bedroomed"})
        if w in ("people", "persons", "person"):
            out.update({"people", "person", "persons", "adults", "of us"})
    return frozenset(out)


def _words_after(text: str, end: int, n: int = 2) -> list[str]:
    return _WORD.findall(text[end:])[:n]


def _words_before(text: str, start: int, n: int = 3) -> list[str]:
    return _WORD.findall(text[:start])[-n:]


def _free(span: tuple[int, int], used: list[tuple[int, int]]) -> bool:
    return not any(overlaps(span, u) for u in used)


def _assign_in_order(
    cands: list[tuple[tuple[int, int], ParseResult]],
    slot_names: list[str],
    text: str,
    results: dict[str, ParseResult],
    used: list[tuple[int, int]],
    current: str | None,
) -> None:
    """Give same-type candidates to same-type slots: name cue first, then text order."""
    free = [c for c in cands if _free(c[0], used)]
    open_slots = [s for s in slot_names if s not in results]
    if not free or not open_slots:
        return
    if len(free) == 1 and current in open_slots:
        open_slots.remove(current)
        open_slots.insert(0, current)
    cues = {s: name_words(s) for s in open_slots}
    remaining: list[tuple[tuple[int, int], ParseResult]] = []
    for span, res in free:
        if not _free(span, used):
            continue  # overlaps a candidate already given to a slot: words are used once
        before = set(_words_before(text, span[0], 3))
        named = [s for s in open_slots if cues[s] & before]
        if len(named) == 1 and named[0] not in results:
            results[named[0]] = res
            used.append(span)
        else:
            remaining.append((span, res))
    for span, res in remaining:
        if not _free(span, used):
            continue
        for s in open_slots:
            if s not in results:
                results[s] = res
                used.append(span)
                break


def extract_slots(
    text: str,
    wanted: Mapping[str, SpecLike],
    *,
    current: str | None = None,
    today: date | None = None,
    region: str = "GB",
    exclude: Sequence[tuple[int, int]] = (),
) -> dict[str, ParseResult]:
    """Every wanted slot this utterance gives a value for (understood results only: ``ok``, or
    understood-but-invalid so the engine can say why). Spans index into ``normalise.clean(text)``.

    ``exclude``: spans of words already used for other slots (an utterance carried over to a
    later state must not give the same words twice).
    """
    if today is None:
        today = date.today()
    specs = {name: SlotSpec.coerce(s) for name, s in wanted.items()}
    t = clean(text)
    if not t or not specs:
        return {}
    by_type: dict[str, list[str]] = {}
    for name, spec in specs.items():
        by_type.setdefault(spec.type, []).append(name)
    results: dict[str, ParseResult] = {}
    used: list[tuple[int, int]] = list(exclude)

    def run(typ: str, cands: list[tuple[tuple[int, int], ParseResult]]) -> None:
        _assign_in_order(cands, by_type[typ], t, results, used, current)

    if "email" in by_type:
        m = email.find_email(t)
        if m:
            run("email", [((m.start, m.end), ParseResult.success(m.value, (m.start, m.end)))])
    if "phone" in by_type:
        run("phone", [
            ((p.start, p.end), ParseResult.success(p.value, (p.start, p.end)) if p.valid
             else ParseResult.rejected(p.value, BAD_PHONE, (p.start, p.end)))
            for p in phone.find_phones(t, region)
        ])
    if "uk_postcode" in by_type:
        run("uk_postcode", [
            ((p.start, p.end), ParseResult.success(p.value, (p.start, p.end)))
            for p in postcode.find_postcodes(t)
        ])
    if "money" in by_type:
        first = specs[by_type["money"][0]].options
        run("money", [
            ((m.start, m.end), _range(cash, first, (m.start, m.end))
             or ParseResult.success(cash, (m.start, m.end)))
            for m in money.find_money(t)
            if m.explicit or current in by_type["money"]
            or (current is None and _bare_amount_ok(by_type, m.value))
            for cash in (money_value(m.value, m.currency, region),)
        ])
    time_found = times.find_times(t) if "time" in by_type else []
    if time_found:
        run("time", [((m.start, m.end), ParseResult.success(m.value, (m.start, m.end)))
                     for m in time_found if not m.part_of_day])
    if "date" in by_type:
        opts = specs[by_type["date"][0]].options
        lo, _, prefer = date_bounds(opts, today)
        found = dates.find_dates(t, today, prefer=prefer, earliest=lo)  # type: ignore[arg-type]
        run("date", [((d.start, d.end), _check_date(d.value, opts, today, (d.start, d.end),
                                                    year_said=d.year_said))
                     for d in found])
    if time_found:
        # "tomorrow afternoon": the date and the part of the day share the word on purpose.
        parts = [m for m in time_found if m.part_of_day and "time" in by_type]
        for slot in by_type["time"]:
            if slot not in results and parts:
                tm = parts.pop(0)
                results[slot] = ParseResult.success(tm.value, (tm.start, tm.end))
    _counts(t, specs, by_type, results, used, current)
    if "choice" in by_type:
        for slot in by_type["choice"]:
            if slot in results:
                continue
            found_c = [c for c in find_choices(t, specs[slot].options.choices)
                       if _free((c.start, c.end), used) and c.score >= 1.0]
            values = {c.value for c in found_c}
            if len(values) == 1:
                c = found_c[0]
                results[slot] = ParseResult.success(c.value, (c.start, c.end))
                used.append((c.start, c.end))
    caps = names.capitalised_words(text) if "name" in by_type else frozenset()
    if "name" in by_type:
        got = names.find_name(t, caps)
        if got and _free((got[1], got[2]), used):
            slot = current if current in by_type["name"] else by_type["name"][0]
            if slot not in results:
                res = _text_checks(got[0], specs[slot].options, (got[1], got[2]))
                results[slot] = res
                used.append((got[1], got[2]))
    if current in specs and current not in results:
        rest = _mask(t, used)
        if rest.strip(" ,.!?"):
            if specs[current].type == "name":
                v = names.parse_name(rest, caps=caps)
                res = (ParseResult.no_match("no name heard") if v is None
                       else _text_checks(v, specs[current].options, None))
            else:
                res = parse_slot(specs[current], rest, today=today, region=region)
            if not res.understood and used and specs[current].type in ("name", "address"):
                # "Sarah, and it's a three bed": the answer is the phrase the others left alone.
                for chunk in re.split(r",|\.|\band\b|\bbut\b", rest):
                    if chunk.strip():
                        res = parse_slot(specs[current], chunk, today=today, region=region)
                        if res.understood:
                            break
            if res.understood:
                results[current] = res
    return results


def _bare_amount_ok(by_type: Mapping[str, list[str]], value: float) -> bool:
    """A number said without a currency ("pay Sam 30") is an amount when the one money slot
    is the only number wanted (nothing else it could count) and it is not tiny."""
    return (len(by_type["money"]) == 1 and value >= 2
            and not any(t in by_type for t in ("integer", "number", "date", "time", "phone")))


def _mask(text: str, used: list[tuple[int, int]]) -> str:
    """Text with the used spans blanked out (same length, so spans stay valid)."""
    chars = list(text)
    for s, e in used:
        for i in range(s, e):
            chars[i] = " "
    return "".join(chars)


def _item_words(specs: Mapping[str, SlotSpec]) -> frozenset[str]:
    """Words for the things a choice slot names, singular and plural: its name ("pizza") and
    its choices' words ("pepperoni", "meat", "feast", "large"), for counting them."""
    out: set[str] = set()
    for name, spec in specs.items():
        if spec.type != "choice":
            continue
        out |= name_words(name)
        for value, syns in (spec.options.choices or {}).items():
            for phrase in (value.replace("_", " "), *syns):
                for w in _WORD.findall(str(phrase).lower()):
                    if len(w) >= 3:
                        out.update({w, w + "s", w + "es"})
    return frozenset(out)


def _counts(
    t: str,
    specs: Mapping[str, SlotSpec],
    by_type: Mapping[str, list[str]],
    results: dict[str, ParseResult],
    used: list[tuple[int, int]],
    current: str | None,
) -> None:
    """Integer/number slots from counted numbers ("three bedrooms", "three-bed")."""
    numeric = (*by_type.get("integer", ()), *by_type.get("number", ()))
    slots = [s for s in numeric if s not in results]
    if not slots:
        return
    cues = {s: name_words(s) for s in slots}
    items = _item_words(specs)
    for n in numbers.find_numbers(t):
        span = (n.start, n.end)
        if not _free(span, used) or n.ordinal:
            continue
        after = set(_words_after(t, n.end, 2))
        before = set(_words_before(t, n.start, 2))
        target = next((s for s in slots if s not in results and cues[s] & after), None)
        if target is None:
            target = next((s for s in slots if s not in results and cues[s] & before
                           and not (after & numbers.COUNT_NOUNS)), None)
        if target is None and items:
            # a slot named only "quantity"/"count" counts the things the other slots name:
            # "two large pepperonis", "ten pizzas" (the `pizza` slot's name, plural)
            ahead = set(_words_after(t, n.end, 3))
            if ahead & items and not ahead & numbers.COUNT_NOUNS:
                target = next((s for s in slots if s not in results and not cues[s]), None)
        if target is None:
            continue
        spec = specs[target]
        value: int | float = n.value
        if spec.type == "integer":
            if isinstance(value, float) and not value.is_integer():
                results[target] = ParseResult.rejected(value, "that is not a whole number", span)
                used.append(span)
                continue
            value = int(value)
        else:
            value = float(value)
        results[target] = _range(value, spec.options, span) or ParseResult.success(value, span)
        used.append(span)
