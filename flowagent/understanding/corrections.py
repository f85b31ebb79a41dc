"""Corrections: "no, I said the 15th", "actually it's LS12 not LS11", "change the date to
Friday", "sorry, four bedrooms" -> which already-filled slot changes, and to what.

The slot is found, in order, by: the old value the caller names ("... not LS11": the slot that
holds LS11; an outward code alone changes just that half of a postcode), a slot named in words
("the date", "the postcode we're moving to", "bedrooms"), the type of the new value (a date can
only go to a date slot), and finally the slot most recently asked when several share a type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from flowagent.understanding.extract import SpecLike, extract_slots, name_words
from flowagent.understanding.normalise import clean
from flowagent.understanding.postcode import find_postcodes
from flowagent.understanding.slots import parse_slot
from flowagent.understanding.types import ParseResult, SlotSpec

_CUE = re.compile(
    r"^(?:no|nope|sorry|actually|oops|wait|oh wait|hang on|hold on|not|wrong|correction|"
    r"that's wrong|that's not right|scratch that|my mistake|make that|make it)\b"
    r"|\b(?:i said|i meant|i mean|should be|should have been|instead|rather than|not the|"
    r"change the|change it|change that|change my|update the|it's actually|it was actually|"
    r"meant to say|make that|make it)\b"
    r"|,\s*not\s+[a-z0-9]"
    r"|\b(?:it's|its|it is) [a-z0-9 ]{1,20} not\b"
)
_TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "date": ("date", "day", "when"),
    "time": ("time",),
    "uk_postcode": ("postcode", "post code", "postal code"),
    "phone": ("phone", "number", "mobile", "telephone"),
    "email": ("email", "e-mail", "email address"),
    "name": ("name", "surname"),
    "address": ("address",),
    "money": ("amount", "price", "budget"),
}
_DIRECTION = {
    "to": r"\b(?:moving to|move to|going to|destination|new (?:address|postcode|house|home|place)|"
          r"delivery|deliver to|the to)\b",
    "from": r"\b(?:moving from|move from|coming from|current|old (?:address|postcode|house|home)|"
            r"pick ?up|collection|collect from|the from)\b",
}
_NOT_SPLIT = re.compile(r"\b(?:not|rather than|instead of)\b")


@dataclass(frozen=True, slots=True)
class Correction:
    slot: str
    value: Any
    result: ParseResult


def is_correction(text: str) -> bool:
    """Does this utterance sound like the caller is changing an earlier answer?"""
    return bool(_CUE.search(clean(text)))


def _mentions(t: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", t) is not None


def named_slot(text: str, wanted: Mapping[str, SpecLike]) -> str | None:
    """The slot the caller names in words, if exactly one fits best ("the date", "bedrooms",
    "the postcode we're moving to")."""
    t = clean(text)
    scores: dict[str, int] = {}
    for name, raw in wanted.items():
        spec = SlotSpec.coerce(raw)
        score = 0
        for w in name_words(name) - {"to", "from", "tos", "froms"}:
            if _mentions(t, w):
                score += 2
        for w in _TYPE_WORDS.get(spec.type, ()):
            if _mentions(t, w):
                score += 1
                break
        if score:
            parts = set(re.split(r"[_\W]+", name.lower()))
            for direction, rx in _DIRECTION.items():
                if direction in parts and re.search(rx, t):
                    score += 2
        if score:
            scores[name] = score
    if not scores:
        return None
    best = max(scores.values())
    top = [n for n, s in scores.items() if s == best]
    return top[0] if len(top) == 1 else None


def _old_new(t: str) -> tuple[str, str] | None:
    """Split "X not Y" / "not Y, X" / "not Y but X" into (new part, old part)."""
    m = _NOT_SPLIT.search(t)
    if not m:
        return None
    before, after = t[: m.start()], t[m.end() :]
    bm = re.search(r"\b(?:but|it's|its|it is|,)\s*", after)
    if _has_value_words(before) or (_strip_cue(before).strip(" ,.") and not bm):
        return before, after
    if bm:
        return after[bm.end() :], after[: bm.start()]
    return None


_CUE_PREFIX = re.compile(
    r"^(?:(?:no|nope|nah|sorry|oh|wait|actually|oops|hang on|hold on|my mistake|correction|"
    r"and|so|right|i said|i meant to say|i meant|i mean|meant to say|it should be|"
    r"it should have been|should be|should have been|it's actually|it was actually|it's|its|"
    r"it is|make that|make it|change (?:it|that) to|not that(?: one)?|scratch that|"
    r"that's wrong|that's not right|no no)\b[ ,.:!-]*)+",
    re.IGNORECASE,
)


def _strip_cue(text: str) -> str:
    """The words after a correction's lead-in: "sorry, I meant Bob" -> "Bob"."""
    return _CUE_PREFIX.sub("", text.strip()).strip()


def _said_value(res_value: Any, part: str) -> bool:
    """Does ``part`` name this value ("rob" for "Rob", "jones" for "Sam Jones")?"""
    words = part.strip(" ,.!?").lower()
    return bool(words) and _mentions(str(res_value).lower(), words)


def _has_value_words(s: str) -> bool:
    return bool(re.search(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|first|"
                          r"second|third|\w+th|monday|tuesday|wednesday|thursday|friday|"
                          r"saturday|sunday|tomorrow|today)\b", s))


def find_corrections(
    text: str,
    wanted: Mapping[str, SpecLike],
    current_values: Mapping[str, Any],
    *,
    today: date | None = None,
    last_slot: str | None = None,
    region: str = "GB",
) -> dict[str, ParseResult]:
    """New values for already-filled slots that ``text`` corrects (only changed values)."""
    if today is None:
        today = date.today()
    specs = {n: SlotSpec.coerce(s) for n, s in wanted.items()}
    t = clean(text)
    out: dict[str, ParseResult] = {}

    split = _old_new(t)
    if split is not None:
        new_part, old_part = split
        # Half a postcode: "LS12 not LS11" changes the outward code of the slot holding LS11.
        new_pc = find_postcodes(new_part, partial=True)
        old_pc = find_postcodes(old_part, partial=True)
        if new_pc and old_pc and not new_pc[0].full and not old_pc[0].full:
            for name, spec in specs.items():
                cur = str(current_values.get(name) or "")
                if spec.type == "uk_postcode" and cur.split(" ")[0] == old_pc[0].value:
                    res = parse_slot(spec, f"{new_pc[0].value} {cur.split(' ')[1]}", today=today)
                    if res.understood:
                        return {name: res}
        old_found = extract_slots(old_part, specs, today=today, region=region,
                                  current=last_slot)
        # the slot whose current value the caller rejects
        holders = [n for n in specs if current_values.get(n) is not None
                   and any(r.ok and r.value == current_values.get(n)
                           and specs[k].type == specs[n].type for k, r in old_found.items())]
        holders += [n for n in specs if n not in holders and specs[n].type in _WORDY
                    and current_values.get(n) is not None
                    and _said_value(current_values[n], old_part)]
        if holders:
            target = holders[0]
            new_raw = _raw_part(text, new_part)
            res = parse_slot(specs[target], _strip_cue(new_raw) or new_raw, today=today,
                             region=region)
            if res.understood and res.value != current_values.get(target):
                return {target: res}

    named = named_slot(t, specs)
    if named is not None:
        named_res = extract_slots(t, {named: specs[named]}, current=named, today=today,
                                  region=region).get(named)
        if (named_res is not None and named_res.understood
                and named_res.value != current_values.get(named)):
            return {named: named_res}

    # A bare answer fills the slot last asked only when it is a number, date, code...: for
    # names and free text a lead-in must introduce the new words ("no thanks" is no address).
    asked = (last_slot if last_slot is not None and last_slot in specs
             and specs[last_slot].type not in _WORDY else None)
    found = extract_slots(t, specs, current=asked, today=today, region=region)
    if not found or all(r.value == current_values.get(n) for n, r in found.items()):
        # names, free text and codes: the words after the lead-in are the new value
        worded = _worded_correction(text, specs, current_values, last_slot, today, region)
        if worded:
            return worded
    for name, res in found.items():
        if res.value != current_values.get(name):
            out[name] = res
    # One new value of a type that several slots share: the slot last asked, else the first.
    if len(out) == 1 and last_slot in specs:
        (name, res), = out.items()
        if name != last_slot and specs[name].type == specs[last_slot].type and (
            current_values.get(last_slot) != res.value
        ):
            return {last_slot: res}
    return out


#: slot types whose value is words a caller says as they are (no number or date to find)
_WORDY = frozenset({"name", "text", "address", "email", "choice"})
# Lead-ins that introduce a new value, as opposed to a plain "no" ("no thanks", "no I haven't")
_INTRODUCES = re.compile(
    r"\b(?:i meant|i mean|i said|meant to say|should be|should have been|make that|make it|"
    r"it's actually|it was actually|change (?:it|that) to|oh wait|scratch that|my mistake)\b"
    r"|^(?:sorry|actually|no|nope|oops|wait)\b[ ,.]*(?:it's|its|it is|that's)?\b"
    r"(?=[ ,.]*(?:@|[a-z0-9]))(?!(?:[ ,.]*(?:thanks|thank you|that's (?:it|all|fine|right)|"
    r"it's fine|i haven't|i have|i don't|i'm|not|please|problem|worries)\b))"
)


def _raw_part(text: str, cleaned_part: str) -> str:
    """``cleaned_part`` as the caller wrote it (keeps "@lisa_m" and capitals) when it can be
    found in ``text``; otherwise the cleaned words."""
    i = text.lower().find(cleaned_part.strip())
    if i < 0:
        return cleaned_part
    return text[i : i + len(cleaned_part.strip())]


def _worded_correction(
    text: str, specs: Mapping[str, SlotSpec], current_values: Mapping[str, Any],
    last_slot: str | None, today: date, region: str,
) -> dict[str, ParseResult]:
    """"sorry, I meant Bob", "should be Ella", "no, I said @lisa_m": the words after the
    lead-in, read as the slot last filled, else the first filled slot of a wordy type that
    takes them as a new value."""
    if not _INTRODUCES.search(clean(text)):
        return {}
    rest = _strip_cue(text)
    if not rest or rest == text.strip():
        return {}
    first = [last_slot] if last_slot is not None and last_slot in specs else []
    order = [n for n in first + list(specs)
             if specs[n].type in _WORDY and current_values.get(n) is not None]
    for name in dict.fromkeys(order):
        res = parse_slot(specs[name], rest, today=today, region=region)
        if res.ok and res.value != current_values.get(name):
            return {name: res}
    return {}


def detect_correction(
    text: str,
    filled: Mapping[str, Any],
    wanted: Mapping[str, SpecLike],
    *,
    today: date | None = None,
    last_slot: str | None = None,
    region: str = "GB",
) -> Correction | None:
    """The single most likely correction in ``text`` (first found), or None."""
    found = find_corrections(text, wanted, filled, today=today, last_slot=last_slot,
                             region=region)
    for name, res in found.items():
        return Correction(name, res.value, res)
    return None
