"""One entry point per way of answering: ``parse_slot`` for speech/text, ``parse_dtmf`` for the
keypad, ``validate_value`` for a value that came from elsewhere (an LLM, a tool).

Each returns a :class:`ParseResult` that keeps "not understood" (reprompt) apart from
"understood but invalid" (say the slot's ``invalid`` message), with the parsed value in the
shape flow-format.md promises: integer -> int, number/money -> float, yes_no -> bool,
choice -> canonical value, date -> "YYYY-MM-DD", time -> "HH:MM", phone -> E.164,
uk_postcode -> "LS11 5AB", email/text/name/address -> str.

Dates are never in the past unless the slot allows it: with no ``min``, the earliest date is
today, except when ``max`` is today or earlier (a date of birth), when ambiguous dates resolve
backwards and there is no lower limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from functools import lru_cache
from typing import Any

from flowagent.understanding import (
    address,
    choice,
    dates,
    email,
    money,
    names,
    numbers,
    phone,
    postcode,
    times,
    yes_no,
)
from flowagent.understanding.commands import is_command
from flowagent.understanding.digits import find_digits, keyed
from flowagent.understanding.normalise import clean
from flowagent.understanding.spoken import DIGIT_WORDS, LETTER_NAMES, NATO, TEEN_DIGITS
from flowagent.understanding.types import (
    REGION_CURRENCY,
    Money,
    ParseResult,
    SlotOptions,
    SlotSpec,
)

OptionsLike = SlotOptions | Mapping[str, Any] | None
BAD_PHONE = "that is not a valid phone number"
HALF_POSTCODE = "that is only the first part of a postcode"
TypeLike = str | SlotSpec


def _opts(options: OptionsLike) -> SlotOptions:
    return SlotOptions.from_dict(options)


def _type_and_opts(slot_type: TypeLike, options: OptionsLike) -> tuple[str, SlotOptions]:
    """Accept a type name plus options, or a SlotSpec (whose options apply unless given)."""
    if isinstance(slot_type, SlotSpec):
        return slot_type.type, (slot_type.options if options is None else _opts(options))
    return slot_type, _opts(options)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


# ---------------------------------------------------------------------------------------------
# Validation shared by every way a value arrives
# ---------------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    """A bound as a caller would say it: 10 not 10.0."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return str(int(f)) if f.is_integer() else str(f)


def _range(value: float, opts: SlotOptions, span: tuple[int, int] | None) -> ParseResult | None:
    if opts.min is not None and value < float(opts.min):
        reason = f"that is out of range: less than {_num(opts.min)}"
        return ParseResult.rejected(value, reason, span)
    if opts.max is not None and value > float(opts.max):
        reason = f"that is out of range: more than {_num(opts.max)}"
        return ParseResult.rejected(value, reason, span)
    return None


#: the reason a date without a year is refused by a slot whose dates are all before this year
NEED_YEAR = "I need the year as well"


def date_bounds(opts: SlotOptions, today: date) -> tuple[date | None, date | None, str]:
    """(earliest, latest, preferred direction) for a date slot; see the module docstring."""
    lo = dates.resolve_bound(opts.min, today)
    hi = dates.resolve_bound(opts.max, today)
    prefer = "past" if hi is not None and hi <= today else "future"
    if lo is None and prefer == "future":
        lo = today
    return lo, hi, prefer


def _text_checks(value: str, opts: SlotOptions, span: tuple[int, int] | None) -> ParseResult:
    if opts.min_length is not None and len(value) < int(opts.min_length):
        reason = f"that is too short (at least {opts.min_length} characters)"
        return ParseResult.rejected(value, reason, span)
    if opts.max_length is not None and len(value) > int(opts.max_length):
        reason = f"that is too long (at most {opts.max_length} characters)"
        return ParseResult.rejected(value, reason, span)
    if opts.pattern:
        rx = _regex(opts.pattern)
        if rx is not None and not rx.fullmatch(value):
            return ParseResult.rejected(value, "that is not in the expected format", span)
    return ParseResult.success(value, span)


def validate_value(
    slot_type: TypeLike, value: Any, options: OptionsLike = None, *, today: date | None = None,
    region: str = "GB",
) -> ParseResult:
    """Check an already-parsed value (e.g. from the LLM) against the slot's rules, coercing it
    to the documented shape where that is unambiguous ("3" -> 3 for an integer slot)."""
    slot_type, opts = _type_and_opts(slot_type, options)
    today = today or date.today()
    if value is None or (isinstance(value, str) and not value.strip()):
        return ParseResult.no_match("no value")
    try:
        if slot_type in ("integer", "number", "money"):
            if isinstance(value, bool):
                return ParseResult.no_match("not a number")
            num = float(value) if not isinstance(value, str) else None
            if num is None:
                return parse_slot(slot_type, value, options=opts, today=today, region=region)
            if slot_type == "integer":
                if not num.is_integer():
                    return ParseResult.rejected(num, "that is not a whole number")
                return _range(num, opts, None) or ParseResult.success(int(num))
            if slot_type == "money":
                cash = money_value(num, "", region)
                return _range(cash, opts, None) or ParseResult.success(cash)
            return _range(num, opts, None) or ParseResult.success(float(num))
        if slot_type == "yes_no":
            if isinstance(value, bool):
                return ParseResult.success(value)
            return parse_slot(slot_type, str(value), options=opts, today=today)
        if slot_type == "choice":
            if str(value) in opts.choices:
                return ParseResult.success(str(value))
            return parse_slot(slot_type, str(value), options=opts, today=today)
        if slot_type == "date":
            try:
                d = value if isinstance(value, date) else date.fromisoformat(str(value))
            except ValueError:
                return parse_slot(slot_type, str(value), options=opts, today=today)
            return _check_date(d, opts, today, None)
        if slot_type == "time":
            m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(value).strip())
            if m:
                return ParseResult.success(f"{int(m.group(1)):02d}:{m.group(2)}")
        if slot_type in ("text",):
            return _text_checks(str(value).strip(), opts, None)
    except (TypeError, ValueError):
        return ParseResult.no_match("not understood")
    return parse_slot(slot_type, str(value), options=opts, today=today, region=region)


def _check_date(
    d: date, opts: SlotOptions, today: date, span: tuple[int, int] | None,
    year_said: bool = True,
) -> ParseResult:
    lo, hi, _ = date_bounds(opts, today)
    iso = d.isoformat()
    if hi is not None and hi.year < today.year and not year_said:
        # a date of birth: "the 12th of June" cannot be guessed into some year
        return ParseResult.rejected(iso, NEED_YEAR, span)
    if lo is not None and d < lo:
        if lo == today and opts.min is None:
            reason = "that date is in the past"
        else:
            reason = "that date is too early"
        return ParseResult.rejected(iso, reason, span)
    if hi is not None and d > hi:
        return ParseResult.rejected(iso, "that date is too late", span)
    return ParseResult.success(iso, span)


# ---------------------------------------------------------------------------------------------
# Speech / typed text
# ---------------------------------------------------------------------------------------------


def _p_integer(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = numbers.parse_number(text)
    if m is None:
        return ParseResult.no_match("no number heard")
    span = (m.start, m.end)
    if isinstance(m.value, float) and not m.value.is_integer():
        return ParseResult.rejected(m.value, "that is not a whole number", span)
    v = int(m.value)
    return _range(v, opts, span) or ParseResult.success(v, span)


def _p_number(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = numbers.parse_number(text)
    if m is None:
        return ParseResult.no_match("no number heard")
    v = float(m.value)
    span = (m.start, m.end)
    return _range(v, opts, span) or ParseResult.success(v, span)


def money_value(amount: float, currency: str, region: str) -> Money:
    """An amount in the currency said, else the region's own (en-GB: pounds)."""
    return Money(amount, currency or REGION_CURRENCY.get(region.upper(), "GBP"))


def _p_money(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = money.parse_money(text)
    if m is None:
        return ParseResult.no_match("no amount heard")
    span = (m.start, m.end)
    value = money_value(m.value, m.currency, region)
    return _range(value, opts, span) or ParseResult.success(value, span)


def _p_yes_no(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    v = yes_no.parse_yes_no(text)
    if v is None:
        return ParseResult.no_match("neither yes nor no")
    return ParseResult.success(v)


def _p_choice(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    if not opts.choices:
        return ParseResult.no_match("the slot has no choices")
    m, reason = choice.parse_choice(text, opts.choices)
    if m is None:
        return ParseResult.no_match(reason)
    return ParseResult.success(m.value, (m.start, m.end))


def _p_date(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    lo, _, prefer = date_bounds(opts, today)
    m = dates.parse_date(text, today, prefer=prefer, earliest=lo)  # type: ignore[arg-type]
    if m is None:
        return ParseResult.no_match("no date heard")
    return _check_date(m.value, opts, today, (m.start, m.end), year_said=m.year_said)


def _p_time(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = times.parse_time(text)
    if m is None:
        return ParseResult.no_match("no time heard")
    return ParseResult.success(m.value, (m.start, m.end))


def _p_phone(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = phone.parse_phone(text, region)
    if m is None:
        return ParseResult.no_match("no phone number heard")
    if not m.valid:
        return ParseResult.rejected(m.value, BAD_PHONE, (m.start, m.end))
    return ParseResult.success(m.value, (m.start, m.end))


def _p_email(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = email.parse_email(text)
    if m is None:
        return ParseResult.no_match("no email address heard")
    return ParseResult.success(m.value, (m.start, m.end))


def _p_postcode(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = postcode.parse_postcode(text)
    if m is None:
        return ParseResult.no_match("no postcode heard")
    if not m.full:
        return ParseResult.rejected(m.value, HALF_POSTCODE, (m.start, m.end))
    return ParseResult.success(m.value, (m.start, m.end))


def _p_name(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    v = names.parse_name(text)
    if v is None:
        return ParseResult.no_match("no name heard")
    return _text_checks(v, opts, None)


def _p_address(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = address.parse_address(text)
    if m is None:
        return ParseResult.no_match("no address heard")
    return _text_checks(m.value, opts, None)


def _spelled(text: str) -> str:
    """Letters and digits spoken one by one ("A B C one two") -> "ABC12"."""
    return "".join(_spell_token(w) for w in re.findall(r"[a-z0-9]+", clean(text))).upper()


def _spell_token(w: str) -> str:
    if w in DIGIT_WORDS and w not in ("o",):
        return DIGIT_WORDS[w]
    if w in TEEN_DIGITS:
        return TEEN_DIGITS[w]
    if w in LETTER_NAMES:
        return LETTER_NAMES[w]
    if w in NATO:
        return NATO[w]
    return w


# Symbols said as words in handles and codes ("at ben underscore 22" -> "@ben_22"); used only
# when the slot's pattern allows the symbol.
_SYMBOL_WORDS = {"at": "@", "underscore": "_", "dash": "-", "hyphen": "-", "dot": ".",
                 "hash": "#", "slash": "/"}
_TEXT_LEAD = re.compile(
    r"^(?:(?:yes|yeah|yep|ok|okay|right|so|well|oh|um|erm|it's|it is|its|that's|that is|"
    r"it's for|it's with|for|with|the company is|the company's|they're called|it's called|"
    r"called)\b[ ,.:]*)+",
    re.IGNORECASE,
)
_TEXT_TRAIL = re.compile(r"[ ,.]*\b(?:please|thanks|thank you|cheers|i think)\b[ ,.!]*$|[ ,.!?]+$",
                         re.IGNORECASE)
_CODE_TOKEN = re.compile(r"[^\s,;!?]+")


def _code_like(token: str) -> bool:
    """A token that can only be part of a code: has a digit or symbol, is one letter, or is a
    spoken digit, letter name or NATO word."""
    w = token.lower()
    if w in ("i", "a"):  # the pronoun and the article, not spelt letters
        return False
    return (_hard(token) or len(token) == 1
            or w in DIGIT_WORDS or w in TEEN_DIGITS or w in LETTER_NAMES or w in NATO
            or w in _SYMBOL_WORDS)


def _hard(token: str) -> bool:
    """A token only a code has: a digit or a symbol."""
    return any(c.isdigit() or c in "@_-./#" for c in token)


def _code_forms(tokens: list[str], symbols: frozenset[str]) -> list[str]:
    parts = []
    for tok in tokens:
        w = tok.lower().strip(".")
        if w in _SYMBOL_WORDS and _SYMBOL_WORDS[w] in symbols:
            parts.append(_SYMBOL_WORDS[w])
        elif w in DIGIT_WORDS or w in TEEN_DIGITS or w in LETTER_NAMES or w in NATO:
            parts.append(_spell_token(w) if len(tokens) > 1 or not w.isalpha() or len(w) == 1
                         else tok)
        else:
            parts.append(tok.strip(".") if tok.endswith(".") else tok)
    joined = "".join(parts)
    return list(dict.fromkeys((joined, joined.upper(), joined.lower())))


def find_code(text: str, rx: re.Pattern[str]) -> str | None:
    """The code in an answer that ``rx`` accepts, read from the right words: "yeah it's FB
    654321 and my internet's down" -> "FB654321", "at ben underscore 22" -> "@ben_22".

    Runs of words are tried longest first; a run may hold at most one ordinary word ("pizza
    ten" -> "PIZZA10") and must hold something only a code has (a digit, a symbol, a spelt
    letter) unless it is the whole answer, so "her handle is @amy_lou" is "@amy_lou", never
    "her".
    """
    symbols = frozenset(c for c in "@_-./#" if c in rx.pattern)
    tokens = _CODE_TOKEN.findall(text)
    n = len(tokens)
    best: tuple[int, int, int, str] | None = None  # (hard, strong, length, value)
    for i in range(n):
        ordinary = 0
        strong = 0
        hard = 0
        for j in range(i, min(n, i + 16)):
            if _code_like(tokens[j]):
                strong += 1
                hard += _hard(tokens[j])
            else:
                ordinary += 1
                if ordinary > 1:
                    break
            window = tokens[i : j + 1]
            if not strong and len(window) != n:
                continue
            for form in _code_forms(window, symbols):
                if rx.fullmatch(form):
                    key = (hard, strong, len(window), form)
                    if best is None or key[:3] > best[:3]:
                        best = key
                    break
    return None if best is None else best[3]


def _digits_checks(value: str, opts: SlotOptions, span: tuple[int, int] | None) -> ParseResult:
    n = len(value)
    if opts.length is not None and n != int(opts.length):
        return ParseResult.rejected(value, f"that is {n} digits, and I need {opts.length}", span)
    if opts.min_length is not None and n < int(opts.min_length):
        return ParseResult.rejected(value, f"that is too short (at least {opts.min_length} "
                                    "digits)", span)
    if opts.max_length is not None and n > int(opts.max_length):
        return ParseResult.rejected(value, f"that is too long (at most {opts.max_length} "
                                    "digits)", span)
    return ParseResult.success(value, span)


def _p_digits(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    m = find_digits(text)
    if m is None:
        return ParseResult.no_match("no digits heard")
    return _digits_checks(m.value, opts, (m.start, m.end))


def _p_text(text: str, opts: SlotOptions, today: date, region: str) -> ParseResult:
    raw = text.strip()
    if not raw:
        return ParseResult.no_match("nothing said")
    if is_command(raw):
        return ParseResult.no_match("a command, not a value")
    if opts.pattern and (rx := _regex(opts.pattern)) is not None:
        # ASR splits codes into words; try the forms a caller could have meant.
        for cand in (raw, raw.upper(), re.sub(r"[\s.-]", "", raw.upper())):
            if rx.fullmatch(cand):
                return _text_checks(cand, opts, None)
        stripped = _TEXT_TRAIL.sub("", _TEXT_LEAD.sub("", raw))
        for source in dict.fromkeys((stripped, raw)):
            code = find_code(source, rx)
            if code is not None:
                return _text_checks(code, opts, None)
        if all(_code_like(t) for t in _CODE_TOKEN.findall(raw)):
            spelled = _spelled(raw)
            if rx.fullmatch(spelled):
                return _text_checks(spelled, opts, None)
        said = _CODE_TOKEN.findall(stripped)
        codeish = [t for t in said if _code_like(t)]
        if len(said) <= 2 or len(codeish) >= 2 or any(any(c.isdigit() for c in t) for t in codeish):
            return ParseResult.rejected(raw, "that is not in the expected format")
        return ParseResult.no_match("no code heard")
    value = _TEXT_TRAIL.sub("", _TEXT_LEAD.sub("", raw)).strip() or raw
    return _text_checks(value, opts, None)


_PARSERS: dict[str, Callable[[str, SlotOptions, date, str], ParseResult]] = {
    "integer": _p_integer,
    "number": _p_number,
    "money": _p_money,
    "yes_no": _p_yes_no,
    "choice": _p_choice,
    "date": _p_date,
    "time": _p_time,
    "phone": _p_phone,
    "email": _p_email,
    "uk_postcode": _p_postcode,
    "name": _p_name,
    "address": _p_address,
    "text": _p_text,
    "digits": _p_digits,
}


def parse_slot(
    slot_type: TypeLike,
    text: str,
    *,
    options: OptionsLike = None,
    today: date | None = None,
    region: str = "GB",
) -> ParseResult:
    """Read a value of ``slot_type`` from one caller answer and validate it.

    ``text`` is the whole answer to the slot's question, so a lone number counts as a number
    and a lone "the 14th" as a date. Unknown slot types are "not understood" (the validator
    rejects them before a flow can run). ``slot_type`` may be a :class:`SlotSpec`, whose
    options are used when ``options`` is not given.
    """
    typ, opts = _type_and_opts(slot_type, options)
    parser = _PARSERS.get(typ)
    if parser is None:
        return ParseResult.no_match(f"unknown slot type {typ!r}")
    if today is None:
        today = date.today()
    return parser(text, opts, today, region)


# ---------------------------------------------------------------------------------------------
# Keypad
# ---------------------------------------------------------------------------------------------


def parse_dtmf(
    slot_type: TypeLike,
    digits: str,
    options: OptionsLike = None,
    *,
    today: date | None = None,
    region: str = "GB",
) -> ParseResult:
    """Read a keypad entry: integer/number/money (``*`` is the decimal point), yes_no (1 yes,
    2 no), choice (1-based position), phone, date (DDMM, DDMMYY or DDMMYYYY), time (HHMM)."""
    slot_type, opts = _type_and_opts(slot_type, options)
    d = digits.strip().split("#")[0]
    if not d:
        return ParseResult.no_match("no digits")
    if slot_type == "integer":
        if not d.isdigit():
            return ParseResult.no_match("not a number")
        v = int(d)
        return _range(v, opts, None) or ParseResult.success(v)
    if slot_type in ("number", "money"):
        if not re.fullmatch(r"\d+(?:\*\d+)?", d):
            return ParseResult.no_match("not a number")
        f = float(d.replace("*", "."))
        if slot_type == "money":
            f = money_value(f, "", region)
        return _range(f, opts, None) or ParseResult.success(f)
    if slot_type == "yes_no":
        b = yes_no.dtmf_yes_no(d)
        if b is None:
            return ParseResult.no_match("press 1 for yes or 2 for no")
        return ParseResult.success(b)
    if slot_type == "choice":
        c = choice.dtmf_choice(d, opts.choices)
        if c is None:
            if d.isdigit():
                return ParseResult.rejected(d, "no option has that number")
            return ParseResult.no_match("not a number")
        return ParseResult.success(c)
    if slot_type == "phone":
        p = phone.dtmf_phone(d, region)
        if p is None:
            return ParseResult.no_match("too few digits for a phone number")
        if p.valid:
            return ParseResult.success(p.value)
        return ParseResult.rejected(p.value, BAD_PHONE)
    if slot_type == "date":
        today = today or date.today()
        m = re.fullmatch(r"(\d{2})(\d{2})(\d{2}|\d{4})?", d)
        if not m:
            return ParseResult.no_match("enter the date as day then month")
        year = m.group(3)
        try:
            if year:
                full_year = int(year) + (2000 if len(year) == 2 else 0)
                dd = date(full_year, int(m.group(2)), int(m.group(1)))
            else:
                _, _, prefer = date_bounds(opts, today)
                got = dates._day_month(int(m.group(1)), int(m.group(2)), None, today, prefer)  # type: ignore[arg-type]
                if got is None:
                    raise ValueError
                dd = got
        except ValueError:
            return ParseResult.rejected(d, "that is not a real date")
        return _check_date(dd, opts, today, None)
    if slot_type == "digits":
        code = keyed(d)
        if code is None:
            return ParseResult.no_match("not digits")
        return _digits_checks(code, opts, None)
    if slot_type == "time":
        m = re.fullmatch(r"([01]\d|2[0-3])([0-5]\d)", d)
        if not m:
            return ParseResult.no_match("enter the time as four digits, like 1430")
        return ParseResult.success(f"{m.group(1)}:{m.group(2)}")
    return ParseResult.no_match(f"a {slot_type.replace('_', ' ')} cannot be keyed in")


# ---------------------------------------------------------------------------------------------
# Built-in "invalid" sentences (a slot's own `invalid:` message replaces these)
# ---------------------------------------------------------------------------------------------

_INVALID: dict[str, str] = {
    "integer": "Sorry, that number isn't one I can accept.",
    "number": "Sorry, that number isn't one I can accept.",
    "money": "Sorry, that amount isn't one I can accept.",
    "choice": "Sorry, that isn't one of the options.",
    "digits": "Sorry, that code doesn't look right.",
    "date": "Sorry, I can't accept that date.",
    "time": "Sorry, I can't accept that time.",
    "phone": "Sorry, that doesn't sound like a complete phone number.",
    "email": "Sorry, that doesn't sound like a complete email address.",
    "uk_postcode": "Sorry, I need the full postcode, for example L S 1 1, 5 A B.",
    "text": "Sorry, that doesn't look right.",
    "name": "Sorry, that doesn't look right.",
    "address": "Sorry, that doesn't look right.",
    "yes_no": "Sorry, was that a yes or a no?",
}


def invalid_message(slot_type: TypeLike, result: ParseResult) -> str:
    """A plain sentence for an understood-but-invalid answer, using the reason when it helps."""
    typ, opts = _type_and_opts(slot_type, None)
    reason = result.reason
    if typ == "date" and reason == "that date is in the past":
        return "Sorry, that date is in the past. Which date would you like?"
    if typ in ("integer", "number", "money") and reason.startswith("that is out of range"):
        if opts.min is not None and opts.max is not None:
            return f"Sorry, it needs to be between {opts.min} and {opts.max}."
        if opts.min is not None:
            return f"Sorry, it needs to be at least {opts.min}."
        if opts.max is not None:
            return f"Sorry, it can be at most {opts.max}."
    if typ == "integer" and reason == "that is not a whole number":
        return "Sorry, I need a whole number."
    return _INVALID.get(typ, "Sorry, that doesn't look right.")
