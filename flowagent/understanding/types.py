"""Value types shared by every parser: what a slot asks for and what a parse produced.

Kept in one tiny module so the engine can import them without pulling in any parser (and without
dateparser, which is slow to import).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Slot types of flow format v1 (docs/flow-format.md).
SLOT_TYPES: frozenset[str] = frozenset(
    {
        "text",
        "integer",
        "number",
        "yes_no",
        "choice",
        "date",
        "time",
        "phone",
        "email",
        "uk_postcode",
        "address",
        "name",
        "money",
    }
)


@dataclass(frozen=True, slots=True)
class ParseResult:
    """The outcome of reading one slot value out of caller text.

    Three outcomes matter to the engine and are kept apart on purpose:
    - ``ok``: understood and valid; ``value`` has the shape flow-format.md specifies.
    - ``understood and not ok``: we know what was said but it breaks the slot's rules
      (out of range, not one of the choices...): the engine says the slot's ``invalid`` message.
      ``value`` still holds what was understood, so a message can mention it.
    - ``not understood``: nothing of this type was found: the engine reprompts (no-match).
    ``reason`` is a short plain-English clause for logs, test output and the LLM fallback; for
    understood-but-invalid answers it reads well after "Sorry, " ("that date is in the past").
    ``span`` is the (start, end) character range of ``text`` the value was read from, when known;
    multi-slot extraction uses it so one piece of speech never fills two slots.
    """

    value: Any = None
    ok: bool = False
    understood: bool = False
    reason: str = ""
    span: tuple[int, int] | None = None

    @property
    def invalid(self) -> bool:
        """Understood, but breaks the slot's validation rules."""
        return self.understood and not self.ok

    @classmethod
    def success(cls, value: Any, span: tuple[int, int] | None = None) -> ParseResult:
        return cls(value=value, ok=True, understood=True, reason="", span=span)

    @classmethod
    def rejected(
        cls, value: Any, reason: str, span: tuple[int, int] | None = None
    ) -> ParseResult:
        return cls(value=value, ok=False, understood=True, reason=reason, span=span)

    @classmethod
    def no_match(cls, reason: str = "not understood") -> ParseResult:
        return cls(value=None, ok=False, understood=False, reason=reason, span=None)


_OPTION_KEYS = ("min", "max", "pattern", "choices", "min_length", "max_length", "dtmf")


@dataclass(frozen=True, slots=True)
class SlotOptions:
    """A slot's validation options, exactly the keys of flow-format.md (`min`, `max`, ...).

    ``choices`` is normalised to ``{canonical value: (synonym, ...)}``; a plain list of values
    is accepted too (each value is its own only synonym).
    ``min``/``max`` stay as written (numbers, or for dates ``today``/``tomorrow``/``+N days``/ISO)
    and are interpreted by the parser of the slot's type.
    """

    min: Any = None
    max: Any = None
    pattern: str | None = None
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    min_length: int | None = None
    max_length: int | None = None
    dtmf: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | SlotOptions | None) -> SlotOptions:
        """Build from a slot's YAML mapping; keys that are not validation options are ignored."""
        if data is None:
            return _EMPTY_OPTIONS
        if isinstance(data, SlotOptions):
            return data
        raw_choices = data.get("choices") or {}
        choices: dict[str, tuple[str, ...]] = {}
        if isinstance(raw_choices, Mapping):
            for key, syns in raw_choices.items():
                if syns is None:
                    syns = []
                elif isinstance(syns, str):
                    syns = [syns]
                choices[str(key)] = tuple(str(s) for s in syns)
        else:
            for key in raw_choices:
                choices[str(key)] = ()
        return cls(
            min=data.get("min"),
            max=data.get("max"),
            pattern=data.get("pattern"),
            choices=choices,
            min_length=data.get("min_length"),
            max_length=data.get("max_length"),
            dtmf=bool(data.get("dtmf", False)),
        )


_EMPTY_OPTIONS = SlotOptions()


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """What multi-slot extraction and corrections need to know about one wanted slot."""

    type: str
    options: SlotOptions = _EMPTY_OPTIONS

    @classmethod
    def coerce(cls, spec: SlotSpec | Mapping[str, Any] | str) -> SlotSpec:
        """Accept a SlotSpec, a slot's YAML mapping (``{type: ..., min: ...}``) or a type name."""
        if isinstance(spec, SlotSpec):
            return spec
        if isinstance(spec, str):
            return cls(type=spec)
        return cls(type=str(spec.get("type", "text")), options=SlotOptions.from_dict(spec))
