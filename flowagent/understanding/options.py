"""Options that arrive at run time: "the eleven o'clock with Dr Shah" against the two free
appointments a booking API just returned.

A choice slot's `choices:` are known when the flow is compiled, so `choice.py` matches them
with precompiled phrases. Options from a tool (`choices_from:`) are records — `{time: "11:00",
dentist: "Dr Shah", id: 17}` — or plain text, different on every call. Each option is scored
by how many of its *fields* the caller named:

* a field's words ("dr shah", or just "shah"), exactly or with an ASR slip (choice.py's fuzzy
  rule);
* a time of day in the answer ("eleven o'clock", "half two") against fields like "11:00" — an
  hour said without am/pm also fits the other half of the day;
* a date in the answer ("Friday", "the 14th") against fields like "2026-03-14".

The option naming the most fields wins; a tie is ambiguous (the engine asks again rather than
guess). With no field named, a position counts: "the second one", "the last one", "number 2".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from flowagent.understanding import choice, dates, times
from flowagent.understanding.normalise import STOP_WORDS, clean, strip_punctuation

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::\d\d)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
#: words too common in option labels to tell options apart on their own
_WEAK = STOP_WORDS | frozenset({"dr", "doctor", "mr", "mrs", "ms", "miss", "am", "pm", "with",
                                "at", "on", "the", "slot", "appointment", "oclock"})


@dataclass(frozen=True, slots=True)
class OptionMatch:
    index: int | None  # position in the options, or None
    reason: str = ""  # why None: "none of the options was named" / "more than one fits"


def _fields(option: Any, label: str) -> list[str]:
    if isinstance(option, Mapping):
        values = [str(v) for v in option.values() if isinstance(v, str | int | float)
                  and not isinstance(v, bool) and str(v).strip()]
    else:
        values = [str(option)] if option is not None else []
    return [*values, label] if label else values


def _phrases(field: str) -> list[str]:
    """How a caller may say one field: the whole of it, and each distinctive word."""
    whole = strip_punctuation(clean(field))
    if not whole:
        return []
    out = [whole]
    out += [w for w in whole.split() if len(w) >= 3 and w not in _WEAK and not w.isdigit()]
    return list(dict.fromkeys(out))


def _time_fits(said: str, field: str, exact_half: bool) -> bool:
    m = _TIME.match(field.strip())
    if not m:
        return False
    h, mins = int(m.group(1)), int(m.group(2))
    sh, smins = (int(x) for x in said.split(":"))
    if smins != mins:
        return False
    return sh == h or (not exact_half and sh % 12 == h % 12)


def match_option(text: str, options: Sequence[Any], labels: Sequence[str],
                 today: date | None = None) -> OptionMatch:
    """Which of `options` (records or text; `labels` as they were offered) the caller chose."""
    if not options:
        return OptionMatch(None, "there are no options")
    t = strip_punctuation(clean(text))
    fields = [_fields(o, labels[i] if i < len(labels) else "") for i, o in enumerate(options)]
    scores = [0.0] * len(options)
    # words: every field phrase of every option in one choice table (a phrase two options
    # share credits both), so exact matches win and a fuzzy match is only tried when nothing
    # was said exactly
    owners: dict[str, set[tuple[int, int]]] = {}
    for i, fs in enumerate(fields):
        for j, f in enumerate(fs):
            if _TIME.match(f.strip()):
                continue
            for phrase in _phrases(f):
                owners.setdefault(phrase, set()).add((i, j))
    named: set[tuple[int, int]] = set()
    if owners:
        for m in choice.find_choices(t, {p: (p,) for p in owners}):
            named |= owners[m.value]
    # times and dates in the answer
    said_times = times.find_times(clean(text))
    if not said_times:  # a bare "eleven" as the whole answer
        whole = times.parse_time(text)
        said_times = [whole] if whole is not None else []
    exact = bool(re.search(r"\b(?:am|pm|a\.m|p\.m|morning|afternoon|evening)\b", text.lower()))
    for said_time in said_times:
        for i, fs in enumerate(fields):
            for j, f in enumerate(fs):
                if _time_fits(said_time.value, f, exact):
                    named.add((i, j))
    if today is not None:
        said_date = dates.parse_date(text, today)
        if said_date is not None:
            iso = said_date.value.isoformat()
            for i, fs in enumerate(fields):
                for j, f in enumerate(fs):
                    if _DATE.match(f.strip()) and f.strip()[:10] == iso:
                        named.add((i, j))
    # the label repeats the fields' words: count each option's fields, the label only alone
    for i, fs in enumerate(fields):
        mine = {j for (k, j) in named if k == i}
        label_j = len(fs) - 1 if labels and i < len(labels) and labels[i] else None
        real = mine - {label_j} if label_j is not None and len(fs) > 1 else mine
        scores[i] = len(real) if real else (0.5 if mine else 0.0)
    best = max(scores)
    if best > 0:
        winners = [i for i, s in enumerate(scores) if s == best]
        if len(winners) == 1:
            return OptionMatch(winners[0])
        return OptionMatch(None, "more than one of the options fits")
    position = _position(t, len(options))
    if position is not None:
        return OptionMatch(position)
    return OptionMatch(None, "none of the options was named")


def _position(t: str, count: int) -> int | None:
    m, _ = choice.parse_choice(t, {str(i): () for i in range(1, count + 1)})
    if m is None:
        return None
    i = int(m.value) - 1
    return i if 0 <= i < count else None


def dtmf_option(digits: str, count: int) -> int | None:
    """Keypad: the option's position (1 = first)."""
    d = digits.strip().rstrip("#")
    if not d.isdigit():
        return None
    i = int(d) - 1
    return i if 0 <= i < count else None
