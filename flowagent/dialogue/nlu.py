"""The engine's narrow window onto `flowagent.understanding` (glue, not parsing).

The engine asks a handful of questions — "which of these intents?", "yes or no?", "what slots are
in this utterance?", "is this a correction?", "what does this keypad entry mean for this slot?" —
and this module answers each by calling the understanding package (owned by the understanding
work) and adapting shapes. All parsing lives in `flowagent.understanding`; if a question needs a
new parser, it belongs there, not here. Keeping the calls in one place means a change of that API
touches one file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flowagent.phone_numbers import region_of
from flowagent.understanding import yes_no as _yn
from flowagent.understanding.types import ParseResult

if TYPE_CHECKING:
    import datetime as _dt

    from flowagent.flow.compiler import CompiledFlow, SlotDef


def yes_no(text: str) -> bool | None:
    return _yn.parse_yes_no(text)


def match_intent(flow: CompiledFlow, text: str, candidates: tuple[str, ...]) -> str | None:
    """The best intent among `candidates` for `text`, or None when nothing is close enough."""
    if flow.matcher is None or not candidates:
        return None
    m = flow.matcher.match(text, candidates)
    return None if m is None else str(m.name)


def match_intent_scored(
    flow: CompiledFlow, text: str, candidates: tuple[str, ...]
) -> tuple[str, float] | None:
    """Like `match_intent`, with the match score (0..1)."""
    if flow.matcher is None or not candidates:
        return None
    m = flow.matcher.match(text, candidates)
    return None if m is None else (str(m.name), float(m.score))


def ranked_intents(
    flow: CompiledFlow, text: str, candidates: tuple[str, ...]
) -> list[tuple[str, float]]:
    """Every candidate intent with its confidence (0..1), best first, below the threshold
    too: what "did you mean X or Y?" and the LLM fallback's threshold decide on."""
    if flow.matcher is None or not candidates:
        return []
    return [(str(n), float(v)) for n, v in flow.matcher.ranked(text, candidates)]


def intent_threshold(flow: CompiledFlow) -> float:
    """The confidence at which an intent matches."""
    return float(flow.matcher.threshold) if flow.matcher is not None else 1.0


def choose_between(text: str, options: Mapping[str, str]) -> str | None:
    """Which of the offered options (intent -> its label) the caller picked: "the second
    one", "a payment", "add a payee". None when it is neither or unclear."""
    from flowagent.understanding import choice as C

    choices = {name: (label, name.replace("_", " ")) for name, label in options.items()}
    m, _ = C.parse_choice(text, choices)
    return None if m is None else str(m.value)


def region(flow: CompiledFlow) -> str:
    """"en-GB" -> "GB" (phone numbers and dates are read with this region's conventions)."""
    return region_of(flow.language)


def parse(flow: CompiledFlow, today: _dt.date, slot: SlotDef, text: str) -> ParseResult:
    """Read one slot from a whole answer."""
    from flowagent.understanding import slots as S

    return S.parse_slot(slot.type, text, options=slot.options, today=today,
                        region=region(flow))


def validate_value(flow: CompiledFlow, today: _dt.date, slot: SlotDef, value: Any) -> ParseResult:
    """Check (and normalise) a value that came from the LLM, not from caller words."""
    from flowagent.understanding import slots as S

    return S.validate_value(slot.type, value, slot.options, today=today,
                            region=region(flow))


def extract(
    flow: CompiledFlow, today: _dt.date, text: str, wanted: Mapping[str, SlotDef],
    current: str | None, exclude: tuple[tuple[int, int], ...] = (),
) -> dict[str, ParseResult]:
    """Every wanted slot found in one utterance (current slot first, for ambiguous answers).
    ``exclude``: spans of the words already used for other slots (carried-over utterances)."""
    if not wanted:
        return {}
    from flowagent.understanding import extract as X

    specs = {n: s.spec for n, s in wanted.items()}
    return dict(X.extract_slots(text, specs, current=current, today=today,
                                region=region(flow), exclude=exclude))


def is_command(text: str) -> bool:
    """Is the whole answer a command (cancel, never mind, repeat...) rather than a value?"""
    from flowagent.understanding import commands as K

    return K.is_command(text)


def is_question(text: str) -> bool:
    """Does the caller ask something ("do you have vegetarian pizzas?") rather than say it?"""
    from flowagent.understanding import commands as K

    return K.is_question(text)


def is_correction(text: str) -> bool:
    """Does the caller sound like they are changing an earlier answer ("no, I said...")?"""
    from flowagent.understanding import corrections as C

    return bool(C.is_correction(text))


def corrections(
    flow: CompiledFlow, today: _dt.date, text: str, filled: Mapping[str, SlotDef],
    values: Mapping[str, Any], last_slot: str | None = None,
) -> dict[str, ParseResult]:
    """Slots (already filled) that `text` corrects, with their new values."""
    if not filled:
        return {}
    from flowagent.understanding import corrections as C

    specs = {n: s.spec for n, s in filled.items()}
    current = {n: values.get(n) for n in filled}
    out = C.find_corrections(text, specs, current, today=today, last_slot=last_slot,
                             region=region(flow))
    return {n: r for n, r in dict(out).items() if r.ok and r.value != values.get(n)}


def named_slot(text: str, wanted: Mapping[str, SlotDef]) -> str | None:
    """Which slot the caller named ("the date", "the postcode we're moving to"), if any."""
    from flowagent.understanding import corrections as C

    return C.named_slot(text, {n: s.spec for n, s in wanted.items()})


def dtmf_value(flow: CompiledFlow, today: _dt.date, slot: SlotDef, digits: str) -> ParseResult:
    """A keypad entry for a slot: 1/2 for yes_no, position for choice, digits otherwise."""
    from flowagent.understanding import slots as S

    return S.parse_dtmf(slot.type, digits, slot.options, today=today,
                        region=region(flow))


def dtmf_entry_full(slot: SlotDef, digits: str) -> bool:
    """True when no further digit could make a valid entry (end the keypad entry now)."""
    if slot.type in ("integer", "number", "money") and slot.options.max is not None:
        try:
            return int(digits) * 10 > float(slot.options.max)
        except (TypeError, ValueError):
            return False
    if slot.type == "phone":
        return len(digits) >= 15
    if slot.type == "digits":
        most = slot.options.length or slot.options.max_length
        return most is not None and len(digits) >= int(most)
    return False


#: slot types that take any words, so "yes" could be read as a value of them
FREE_TEXT_TYPES = frozenset({"text", "name", "address"})


def accepted(value: Any, like: ParseResult | None) -> ParseResult:
    """A value the engine worked out (a list, a run-time option), as an understood answer."""
    return ParseResult.success(value, like.span if like is not None else None)


def not_understood() -> ParseResult:
    return ParseResult.no_match("not understood")


def all_choices(slot: SlotDef, text: str) -> list[str]:
    """Every choice an answer names, in order, once each ("ham, mushrooms and olives")."""
    from flowagent.understanding import choice as C
    from flowagent.understanding.normalise import clean, strip_punctuation

    found = C.find_choices(strip_punctuation(clean(text)), slot.options.choices)
    return list(dict.fromkeys(m.value for m in found))


def match_option(text: str, items: tuple[Any, ...], labels: tuple[str, ...],
                 today: _dt.date) -> int | None:
    """Which option of a list that arrived at run time the caller named, or None."""
    from flowagent.understanding import options as O

    return O.match_option(text, items, labels, today).index


def dtmf_option(digits: str, count: int) -> int | None:
    from flowagent.understanding import options as O

    return O.dtmf_option(digits, count)


def needs_year(res: ParseResult) -> bool:
    """A date of birth said without its year: ask for the year, not the slot's `invalid`."""
    from flowagent.understanding.slots import NEED_YEAR

    return res.reason == NEED_YEAR


def guard_failed(value: Any) -> ParseResult:
    """An answer the slot's `valid_when` refused (it reads like any invalid answer)."""
    return ParseResult.rejected(value, "that doesn't fit with the other details")


def invalid_reason(res: ParseResult) -> str:
    """A short spoken reason for an understood-but-invalid answer ("that date is in the past")."""
    reason = (res.reason or "").strip().rstrip(".")
    return f"Sorry, {reason}." if reason else "Sorry, that doesn't look right."


def spoken_value(slot: SlotDef, value: Any) -> str:
    """How to read a slot value back to the caller."""
    from flowagent.flow import spoken
    from flowagent.flow import templates as T

    if isinstance(value, list | tuple | Mapping):
        return spoken.say_list(value)
    if slot.type == "date":
        return T.say_date(value)
    if slot.type == "money":
        return T.say_money(value)
    if slot.type == "phone":
        return T.say_phone(value)
    if slot.type == "digits":
        from flowagent.flow.spoken import say_digits

        return say_digits(value)
    if slot.type == "uk_postcode":
        return T.say_postcode(value)
    if slot.type == "yes_no":
        return "yes" if value else "no"
    return str(value)


_JSON_TYPES = {"integer": "integer", "number": "number", "money": "number", "yes_no": "boolean"}


def json_type(slot_type: str) -> str:
    return _JSON_TYPES.get(slot_type, "string")


def coerce_arg(arg_type: str, value: Any) -> tuple[bool, Any]:
    """Check an LLM-supplied tool argument against its declared type (and convert it)."""
    try:
        if arg_type == "integer":
            if isinstance(value, bool):
                return False, value
            f = float(value)
            return (f.is_integer(), int(f))
        if arg_type in ("number", "money"):
            if isinstance(value, bool):
                return False, value
            return True, float(value)
        if arg_type == "yes_no":
            if isinstance(value, bool):
                return True, value
            v = _yn.parse_yes_no(str(value))
            return (v is not None, v)
    except (TypeError, ValueError):
        return False, value
    if isinstance(value, (dict, list)):
        return False, value
    return True, str(value)
