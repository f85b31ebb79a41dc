"""Whatever a caller (or a confused ASR) says, understanding never raises, always answers in the
documented shapes, and never uses the same words for two slots."""

from __future__ import annotations

import itertools
import re
from datetime import date

from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowagent.understanding.corrections import find_corrections
from flowagent.understanding.extract import extract_slots
from flowagent.understanding.intents import IntentMatcher
from flowagent.understanding.slots import parse_dtmf, parse_slot
from flowagent.understanding.types import SLOT_TYPES, SlotSpec

TODAY = date(2026, 11, 23)
_VOCAB = (
    "yes no not the a three three-bed 14th fourteenth of March next Friday tomorrow half past "
    "two pm LS11 5AB M1 1AA L S one one five A B oh seven nine double triple at dot com gmail "
    "£450 pounds quid my name is Sarah it's I don't know um uh , . ? - ' actually sorry change "
    "date postcode bedrooms to from 0 1 2 3 07911 123456 speak person again start over bye"
)
WORDS = _VOCAB.split()
utterances = st.lists(st.sampled_from(WORDS), max_size=14).map(" ".join) | st.text(max_size=40)
SPECS = {
    "bedrooms": SlotSpec.coerce({"type": "integer", "min": 1, "max": 10}),
    "from_postcode": SlotSpec("uk_postcode"),
    "to_postcode": SlotSpec("uk_postcode"),
    "move_date": SlotSpec("date"),
    "arrival": SlotSpec("time"),
    "phone": SlotSpec("phone"),
    "email": SlotSpec("email"),
    "name": SlotSpec("name"),
    "budget": SlotSpec("money"),
    "ok": SlotSpec("yes_no"),
    "size": SlotSpec.coerce({"type": "choice", "choices": {"small": ["flat"], "large": ["house"]}}),
}
SHAPES = {
    "integer": int, "number": float, "money": float, "yes_no": bool, "choice": str, "date": str,
    "time": str, "phone": str, "email": str, "uk_postcode": str, "address": str, "name": str,
    "text": str, "digits": str,
}
MATCHER = IntentMatcher({"quote": ["I'd like a quote", "how much to move"]})


@settings(max_examples=150, deadline=None)
@given(utterances)
def test_every_parser_answers_in_shape(text: str) -> None:
    for typ in sorted(SLOT_TYPES):
        opts = {"choices": {"small": ["flat"], "large": ["house"]}} if typ == "choice" else {}
        r = parse_slot(typ, text, options=opts, today=TODAY)
        assert r.ok <= r.understood
        if r.ok:
            assert isinstance(r.value, SHAPES[typ]), (typ, text, r)
            if typ == "date":
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.value)
            if typ == "time":
                assert re.fullmatch(r"[0-2]\d:[0-5]\d", r.value)
            if typ == "phone":
                assert r.value.startswith("+")
        else:
            assert r.reason


@settings(max_examples=150, deadline=None)
@given(utterances, st.sampled_from([None, *SPECS]))
@example("A M1 5AB", None)  # found by CI: "AM1 5AB" and "M1 5AB" both filled a postcode slot
def test_extraction_never_reuses_words(text: str, current: str | None) -> None:
    got = extract_slots(text, SPECS, current=current, today=TODAY)
    assert all(r.understood for r in got.values())
    spans = sorted(r.span for n, r in got.items() if r.span and n != current
                   and SPECS[n].type != "time")  # a part of day may share "tomorrow afternoon"
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0], (text, got)


@settings(max_examples=100, deadline=None)
@given(utterances)
def test_corrections_and_intents_never_raise(text: str) -> None:
    filled = {"bedrooms": 3, "from_postcode": "LS11 5AB", "move_date": "2026-12-14"}
    find_corrections(text, SPECS, filled, today=TODAY, last_slot="bedrooms")
    m = MATCHER.match(text)
    assert m is None or 0 < m.score <= 1


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789*#", max_size=16))
def test_keypad_never_raises(digits: str) -> None:
    for typ in sorted(SLOT_TYPES):
        r = parse_dtmf(typ, digits, {"choices": {"a": [], "b": []}}, today=TODAY)
        assert r.ok <= r.understood


def test_an_article_before_a_written_postcode_is_not_part_of_it() -> None:
    got = extract_slots("A M1 5AB", SPECS, today=TODAY)
    postcodes = {n: r.value for n, r in got.items() if SPECS[n].type == "uk_postcode"}
    assert list(postcodes.values()) == ["M1 5AB"], got
