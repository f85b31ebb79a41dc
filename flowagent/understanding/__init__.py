"""Understanding caller speech without an LLM: slot parsers, multi-slot extraction, corrections,
lexical intents.

Everything here is a pure function of its inputs (no I/O, no clock: ``today`` is passed in), fast
enough for thousands of turns per second, and imports nothing heavy at import time (dateparser is
imported lazily, only when our own spoken-date rules give up).

Public API (stable; the engine imports these; docs/understanding.md has the details):

- ``types.ParseResult(value, ok, understood, reason, span)`` — ``ok`` = understood and valid;
  ``.invalid`` = understood but breaks the slot's rules (say the slot's ``invalid`` message;
  ``reason`` reads after "Sorry, ...": "that date is in the past");
  ``understood == False`` = not understood (reprompt / no-match).
- ``types.SlotOptions.from_dict(slot_yaml)`` and ``types.SlotSpec(type, options)`` /
  ``SlotSpec.coerce(slot_yaml_or_type)``.
- ``slots.parse_slot(slot_type_or_spec, text, *, options=None, today, region="GB")
  -> ParseResult``
- ``slots.parse_dtmf(slot_type_or_spec, digits, options=None, *, today=None, region="GB")
  -> ParseResult``
- ``slots.validate_value(slot_type_or_spec, value, options=None, *, today, region="GB")
  -> ParseResult`` (a value from elsewhere, e.g. the LLM, checked against the same rules)
- ``slots.invalid_message(slot_type_or_spec, result) -> str`` (built-in spoken sentence)
- ``extract.extract_slots(text, wanted, *, current=None, today, region="GB")
  -> dict[str, ParseResult]`` — every wanted slot one utterance fills (understood results only).
- ``corrections.find_corrections(text, wanted, current_values, *, today, last_slot=None,
  region="GB") -> dict[str, ParseResult]``; ``corrections.detect_correction(text, filled,
  wanted, *, today, last_slot=None) -> Correction | None`` (``.slot``, ``.value``,
  ``.result``); ``corrections.is_correction(text) -> bool``;
  ``corrections.named_slot(text, wanted) -> str | None``.
- ``intents.IntentMatcher(intents, *, threshold=0.72, scorers=())`` built once per flow;
  ``.match(text, allowed=None) -> IntentMatch(name, score) | None``; ``.scores(text)``;
  ``.add_scorer(s)``; ``intents.Scorer`` protocol (``score(text, examples) -> float`` in 0..1,
  optional ``threshold`` attribute) for the embedding scorer; ``intents.BUILTIN_INTENTS``.
- ``yes_no.parse_yes_no(text) -> bool | None``; ``yes_no.dtmf_yes_no(digits)``.

Per-type parsers (``numbers``, ``dates``, ``times``, ``phone``, ``postcode``, ``email``, ``names``,
``money``, ``address``, ``choice``) each expose ``parse_*``/``find_*`` functions used by the above.
"""

from flowagent.understanding.types import SLOT_TYPES, ParseResult, SlotOptions, SlotSpec

__all__ = ["SLOT_TYPES", "ParseResult", "SlotOptions", "SlotSpec"]
