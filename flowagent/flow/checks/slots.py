"""Slots and intents: options that fit the slot's type, sensible ranges, regexes that compile,
choices for choice slots; intents with examples, and no example claimed by two intents."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from flowagent.flow.checks.context import CheckContext, quote_list

#: option -> slot types it applies to
OPTION_TYPES: dict[str, tuple[str, ...]] = {
    "min": ("integer", "number", "money", "date"),
    "max": ("integer", "number", "money", "date"),
    "pattern": ("text", "name", "address"),
    "choices": ("choice",),
    "min_length": ("text", "name", "address", "digits"),
    "max_length": ("text", "name", "address", "digits"),
    "dtmf": ("integer", "number", "phone", "yes_no", "choice", "digits"),
}

SLOT_TYPES = ("text", "integer", "number", "yes_no", "choice", "date", "time", "phone", "email",
              "uk_postcode", "address", "name", "money", "digits")

_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_REL_DATE = re.compile(r"^\s*([+-])\s*(\d+)\s*(day|week|month|year)s?\s*$", re.IGNORECASE)
_AGO_DATE = re.compile(r"^\s*(\d+)\s*(day|week|month|year)s?\s+ago\s*$", re.IGNORECASE)


def _date_bound(value: Any) -> tuple[str, int | _dt.date] | None:
    """('rel', days from today) or ('abs', date); None if not understood."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    if v == "today":
        return ("rel", 0)
    if v == "tomorrow":
        return ("rel", 1)
    if v == "yesterday":
        return ("rel", -1)
    m = _REL_DATE.match(v)
    if m:
        n = int(m[2]) * _UNIT_DAYS[m[3].lower()]
        return ("rel", n if m[1] == "+" else -n)
    m = _AGO_DATE.match(v)
    if m:
        return ("rel", -int(m[1]) * _UNIT_DAYS[m[2].lower()])
    try:
        return ("abs", _dt.date.fromisoformat(v))
    except ValueError:
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_slots(ctx: CheckContext) -> None:
    for name, slot in ctx.items("slots"):
        stype = slot.get("type")
        if stype not in SLOT_TYPES:
            continue  # the structure check reports an unknown type
        base = ("slots", name)
        for option, types in OPTION_TYPES.items():
            if option in slot and stype not in types:
                if option == "dtmf" and slot.get("dtmf") is False:
                    continue
                ctx.error("option-not-for-type", (*base, option),
                          f"`{option}` does not apply to slot `{name}`, which is a `{stype}` slot.",
                          f"Remove `{option}`; it works with {quote_list(types)} slots.",
                          key=True)
        if stype == "choice":
            choices = slot.get("choices")
            if "choices_from" in slot:
                pass  # the options come from a list worked out on the call
            elif "choices" not in slot or choices is None or choices == {}:
                ctx.error("missing-choices", base,
                          f"Slot `{name}` is a choice, but it does not list its `choices`.",
                          "Add `choices:` with each allowed value, e.g. `small: [studio, flat]`.",
                          key=True)
        if stype in OPTION_TYPES["pattern"] and isinstance(slot.get("pattern"), str):
            try:
                re.compile(slot["pattern"])
            except re.error as exc:
                ctx.error("bad-regex", (*base, "pattern"),
                          f"The pattern of slot `{name}` is not a valid regular expression: "
                          f"{exc.msg}" + (f" (at character {exc.pos + 1})"
                                          if exc.pos is not None else "") + ".",
                          "Check the brackets and backslashes; put the pattern in quotes.")
        _check_range(ctx, name, slot, stype)


def _check_range(ctx: CheckContext, name: str, slot: dict[str, Any], stype: str) -> None:
    base = ("slots", name)
    lo, hi = slot.get("min"), slot.get("max")
    if stype in ("integer", "number", "money"):
        for key, v in (("min", lo), ("max", hi)):
            if v is not None and not _is_number(v):
                ctx.error("bad-range", (*base, key),
                          f"The `{key}` of slot `{name}` must be a number, not `{v}`.")
        if lo is not None and hi is not None and _is_number(lo) and _is_number(hi) and lo > hi:
            ctx.error("bad-range", (*base, "max"),
                      f"Slot `{name}` has `min` {lo} larger than `max` {hi}, so no answer fits.",
                      "Swap them, or fix one of them.")
    elif stype == "date":
        bounds = {}
        for key, v in (("min", lo), ("max", hi)):
            if v is None:
                continue
            b = _date_bound(v)
            if b is None:
                ctx.error("bad-range", (*base, key),
                          f"The `{key}` of slot `{name}` is `{v}`, which is not a date flowagent "
                          "understands.",
                          "Use `today`, `tomorrow`, `+N days` (e.g. `+30 days`), `N years ago` "
                          "(e.g. `18 years ago`) or a date like `2026-01-31`.")
            else:
                bounds[key] = b
        if "min" in bounds and "max" in bounds and bounds["min"][0] == bounds["max"][0] and \
                bounds["min"][1] > bounds["max"][1]:  # type: ignore[operator]
            ctx.error("bad-range", (*base, "max"),
                      f"Slot `{name}` has a `min` date later than its `max` date, so no date fits.",
                      "Swap them, or fix one of them.")
    lo_len, hi_len = slot.get("min_length"), slot.get("max_length")
    if (lo_len is not None and hi_len is not None and _is_number(lo_len)
            and _is_number(hi_len) and lo_len > hi_len):
        ctx.error("bad-range", (*base, "max_length"),
                  f"Slot `{name}` has `min_length` larger than `max_length`, so no answer fits.",
                  "Swap them, or fix one of them.")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def check_intents(ctx: CheckContext) -> None:
    seen: dict[str, str] = {}
    for name, intent in ctx.items("intents"):
        examples = intent.get("examples")
        if not isinstance(examples, list):
            continue
        usable = [e for e in examples if isinstance(e, str) and e.strip()]
        if not usable:
            ctx.error("empty-intent", ("intents", name),
                      f"Intent `{name}` has no example phrases, so nothing a caller says can "
                      "match it.", "Add a few phrases under `examples:`.", key=True)
            continue
        for i, ex in enumerate(examples):
            if not isinstance(ex, str) or not ex.strip():
                continue
            key = _norm(ex)
            if key in seen:
                other = seen[key]
                msg = (f"The example \"{ex}\" is listed twice in intent `{name}`." if other == name
                       else f"The example \"{ex}\" is in both `{other}` and `{name}`, so a caller "
                            "saying it could mean either.")
                ctx.warn("duplicate-example", ("intents", name, "examples", i), msg,
                         "Keep it in one intent only.")
            else:
                seen[key] = name
    _check_examples_understood(ctx)


def _check_examples_understood(ctx: CheckContext) -> None:
    """Each example, said by a caller, should come out as its own intent: an example the
    matcher reads as nothing ("that's it": only small words) or as another intent teaches
    nothing and misleads the author."""
    intents: dict[str, list[str]] = {}
    where: dict[tuple[str, str], int] = {}
    for name, intent in ctx.items("intents"):
        examples = intent.get("examples")
        if not isinstance(examples, list):
            continue
        for i, ex in enumerate(examples):
            if isinstance(ex, str) and ex.strip():
                intents.setdefault(name, []).append(ex)
                where.setdefault((name, ex), i)
    if not intents:
        return
    from flowagent.understanding.intents import IntentMatcher

    matcher = IntentMatcher(intents)
    for name, examples in intents.items():
        for ex in examples:
            ranked = matcher.ranked(ex)
            scores = dict(ranked)
            own = scores.get(name, 0.0)
            best, best_score = ranked[0] if ranked else (name, own)
            path = ("intents", name, "examples", where[(name, ex)])
            if best != name and best_score > own + 1e-9:
                ctx.warn("example-not-understood", path,
                         f"The example \"{ex}\" of intent `{name}` is understood as `{best}` "
                         "instead, so callers who say it go the wrong way.",
                         f"Reword it with the words that make it `{name}`, or move it to "
                         f"`{best}` if that is what it means.")
            elif own < matcher.threshold:
                ctx.warn("example-not-understood", path,
                         f"The example \"{ex}\" of intent `{name}` is not understood as "
                         f"`{name}` (only {own:.2f} of the {matcher.threshold:.2f} needed): its "
                         "words are too common to tell intents apart.",
                         "Use the words a caller would stress, e.g. \"I'm finished, thanks\" "
                         "rather than \"that's it\".")
