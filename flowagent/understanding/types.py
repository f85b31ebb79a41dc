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
        "digits",
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


#: Currency codes a money value can carry, with the sign a caller sees and the word they hear.
CURRENCY_SIGNS: Mapping[str, str] = {"GBP": "£", "EUR": "€", "USD": "$"}
CURRENCY_WORDS: Mapping[str, tuple[str, str]] = {
    "GBP": ("pound", "pounds"), "EUR": ("euro", "euros"), "USD": ("dollar", "dollars"),
}
#: The currency a bare amount is in, by the flow's region ("en-GB" -> GB).
REGION_CURRENCY: Mapping[str, str] = {
    "GB": "GBP", "UK": "GBP", "US": "USD", "IE": "EUR", "DE": "EUR", "FR": "EUR", "ES": "EUR",
    "IT": "EUR", "NL": "EUR", "BE": "EUR", "AT": "EUR", "PT": "EUR", "FI": "EUR",
}


class Money(float):
    """An amount of money that keeps its currency: ``Money(50, "GBP")``.

    It is a float, so templates compare and add it, tools send it as a JSON number and older
    flows keep working; printed (``{{ slots.amount }}``, a read-back) it says itself the way a
    person would write it for a voice to read: "£50", "£12.50", "€60", never "50.0".
    """

    __slots__ = ("currency",)
    currency: str

    def __new__(cls, amount: float, currency: str = "GBP") -> Money:
        self = super().__new__(cls, amount)
        self.currency = currency
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Money, (float(self), self.currency))

    def __copy__(self) -> Money:
        return self

    def __deepcopy__(self, memo: Any) -> Money:
        return self

    def __str__(self) -> str:
        return format_money(float(self), self.currency)

    def __repr__(self) -> str:
        return f"Money({float(self)!r}, {self.currency!r})"

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(float(self), spec)


def format_money(amount: float, currency: str = "GBP") -> str:
    """50 -> "£50", 12.5 -> "£12.50", 1250 -> "£1,250"; unknown codes as "50 CHF"."""
    sign = "minus " if amount < 0 else ""
    pence = round(abs(amount) * 100)
    whole = f"{pence // 100:,}" if pence % 100 == 0 else f"{pence // 100:,}.{pence % 100:02d}"
    symbol = CURRENCY_SIGNS.get(currency)
    if symbol is None:
        return f"{sign}{whole} {currency}"
    return f"{sign}{symbol}{whole}"


_OPTION_KEYS = ("min", "max", "pattern", "choices", "min_length", "max_length", "dtmf", "length")


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
    #: digits slots: exactly this many digits
    length: int | None = None

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
            length=data.get("length"),
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
