"""Format 2's values: declared variables, what `set`/`clear`/`repeat` change, the new slot
options, and the kinds of values expressions mix (where the kinds can be known).

Names are checked against what exists, and a suggestion is only made for a plausible typo
(`context.is_typo_of`): `vars.second_time` is never offered for `vars.first_time`.
"""

from __future__ import annotations

from typing import Any

from flowagent.flow.checks.context import CheckContext, quote_list, suggestion_for
from flowagent.flow.checks.template_checks import expressions
from flowagent.flow.loader import PathT

#: what each slot type holds, for the kinds of values expressions mix
_SLOT_KINDS = {"integer": "number", "number": "number", "money": "number", "yes_no": "bool"}
_NOW_KINDS = {"hour": "number", "minute": "number", "date": "text", "time": "text",
              "weekday": "text", "year": "number", "month": "number", "day": "number"}
#: slot option -> the types it applies to (format 2's; format 1's are in checks/slots.py)
V2_OPTION_TYPES: dict[str, tuple[str, ...]] = {
    "length": ("digits",),
    "choices_from": ("choice",),
    "choice_label": ("choice",),
}


def kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "record"
    return None


def check_values(ctx: CheckContext) -> None:
    if ctx.data.get("flowagent") != 2:
        return
    declared = set(ctx.mapping("vars")) | ctx.saved_vars | ctx.returned_vars
    for name, st in ctx.items("states"):
        base: PathT = ("states", name)
        _check_targets(ctx, base, st, declared)
        for i, h in enumerate(ctx.listing("states", name, "handlers")):
            if isinstance(h, dict):
                _check_targets(ctx, (*base, "handlers", i), h, declared)
        _check_repeat(ctx, name, st)
    for i, h in enumerate(ctx.listing("handlers")):
        if isinstance(h, dict):
            _check_targets(ctx, ("handlers", i), h, declared)
    for name, slot in ctx.items("slots"):
        _check_slot(ctx, name, slot)
    _check_hours(ctx)
    _check_kinds(ctx)


def _check_hours(ctx: CheckContext) -> None:
    from flowagent.flow.hours import HoursError, parse_schedule, zone
    from flowagent.phone_numbers import region_of

    tz = ctx.data.get("timezone")
    if isinstance(tz, str):
        try:
            zone(tz)
        except HoursError as exc:
            from zoneinfo import available_timezones

            ctx.error("bad-value", ("timezone",), f"{str(exc)[0].upper()}{str(exc)[1:]}.",
                      suggestion_for(tz, sorted(available_timezones()),
                                     "See the list of zone names at https://en.wikipedia.org/"
                                     "wiki/List_of_tz_database_time_zones."))
    schedules = list(ctx.items("hours"))
    if schedules and "timezone" not in ctx.data:
        ctx.warn("hours-without-timezone", ("hours",),
                 "The opening hours are read in UTC because the flow has no `timezone`, so "
                 "they are an hour out in British summer time.",
                 "Add `timezone: Europe/London` (or your own zone) at the top of the file.",
                 key=True)
    country = region_of(str(ctx.data.get("language") or "en-GB"))
    for name, raw in schedules:
        try:
            parse_schedule(raw, country)
        except HoursError as exc:
            path = ("hours", name, exc.key) if exc.key in raw else ("hours", name)
            ctx.error("bad-hours", path,
                      f"The `{name}` opening hours cannot be read: {exc}.",
                      "Write days like `monday to friday:` with times like `08:00-18:00`, and "
                      "`closed:` with dates or `public holidays`.", key=exc.key in raw)


def _check_targets(ctx: CheckContext, base: PathT, owner: dict[str, Any],
                   declared: set[str]) -> None:
    targets: list[tuple[PathT, str, bool]] = []
    clears = owner.get("clear")
    for i, item in enumerate(clears if isinstance(clears, list) else []):
        if isinstance(item, str):
            targets.append(((*base, "clear", i), item, False))
    sets = owner.get("set")
    for key in sets if isinstance(sets, dict) else {}:
        targets.append(((*base, "set", key), str(key), True))
    verb = {False: "clears", True: "sets"}
    for path, target, is_set in targets:
        scope, _, name = target.partition(".")
        what = f"{'This handler' if 'handlers' in base else f'State `{base[1]}`'}"
        if scope == "slots" and name not in ctx.mapping("slots"):
            ctx.error("unknown-slot", path,
                      f"{what} {verb[is_set]} `slots.{name}`, but there is no slot called "
                      f"`{name}`.",
                      suggestion_for(name, ctx.slot_names,
                                     f"Add `{name}:` under `slots:`, or use `vars.{name}` for "
                                     "a value the flow works out."), key=is_set)
        elif scope == "vars" and name not in declared:
            ctx.error("unknown-var", path,
                      f"{what} {verb[is_set]} `vars.{name}`, but there is no variable called "
                      f"`{name}` under `vars:`.",
                      suggestion_for(name, sorted(declared),
                                     f"Add `{name}:` with its starting value under `vars:` "
                                     f"(e.g. `{name}: 0`)."), key=is_set)


def _check_repeat(ctx: CheckContext, name: str, st: dict[str, Any]) -> None:
    repeat = st.get("repeat")
    if not isinstance(repeat, dict):
        return
    base = ("states", name, "repeat")
    if "collect" not in st:
        ctx.error("misplaced-key", base,
                  f"`repeat` only means something in a state with `collect`, and state "
                  f"`{name}` has none.",
                  "Add `collect:` with the slots asked each round, or remove `repeat`.",
                  key=True)
    to = repeat.get("to")
    if not isinstance(to, str) or not to.startswith("vars."):
        return
    var = to.removeprefix("vars.")
    starts = ctx.mapping("vars").get(var, None) if var in ctx.mapping("vars") else ...
    if starts is ...:
        ctx.error("unknown-var", (*base, "to"),
                  f"The repeat of state `{name}` adds to `{to}`, but there is no variable "
                  f"called `{var}` under `vars:`.",
                  suggestion_for(var, list(ctx.mapping("vars")),
                                 f"Add `{var}: []` under `vars:`."))
    elif not isinstance(starts, list):
        ctx.error("bad-value", (*base, "to"),
                  f"The repeat of state `{name}` adds to `{to}`, which starts as "
                  f"`{starts}`, not as a list.",
                  f"Write `{var}: []` under `vars:`.")
    collect: list[Any] = st["collect"] if isinstance(st.get("collect"), list) else []
    add = repeat.get("add")
    if isinstance(add, dict) and not add:
        ctx.error("bad-value", (*base, "add"),
                  f"The repeat of state `{name}` adds an empty record each round.",
                  "Name the fields to keep, e.g. `add: {item: slots.item}`, or remove `add` "
                  f"to keep {quote_list(str(c) for c in collect)}.")


def _check_slot(ctx: CheckContext, name: str, slot: dict[str, Any]) -> None:
    base = ("slots", name)
    stype = slot.get("type")
    for option, types in V2_OPTION_TYPES.items():
        if option in slot and stype not in types:
            ctx.error("option-not-for-type", (*base, option),
                      f"`{option}` does not apply to slot `{name}`, which is a `{stype}` slot.",
                      f"Remove `{option}`; it works with {quote_list(types)} slots.", key=True)
    if slot.get("list") is True and stype == "yes_no":
        ctx.error("option-not-for-type", (*base, "list"),
                  f"Slot `{name}` is a yes/no question, which has one answer, so it cannot be a "
                  "list.", "Remove `list: true`.", key=True)
    if "choices_from" in slot and "choices" in slot:
        ctx.error("conflicting-keys", (*base, "choices_from"),
                  f"Slot `{name}` has both `choices` and `choices_from`; its options come "
                  "either from the flow or from a list worked out on the call.",
                  "Keep one of them.", key=True)
    if "choice_label" in slot and "choices_from" not in slot and stype == "choice":
        ctx.error("misplaced-key", (*base, "choice_label"),
                  f"`choice_label` says how options from `choices_from` are said, and slot "
                  f"`{name}` has no `choices_from`.",
                  "Remove `choice_label`, or add `choices_from:`.", key=True)
    if stype == "digits" and "length" in slot and (
            "min_length" in slot or "max_length" in slot):
        ctx.error("conflicting-keys", (*base, "length"),
                  f"Slot `{name}` has `length` and `min_length`/`max_length`; use one or the "
                  "other.", "Keep `length` for an exact number of digits.", key=True)


def name_kinds(ctx: CheckContext) -> dict[str, str | None]:
    """What each readable name holds, where the flow says it."""
    kinds: dict[str, str | None] = {}
    for name, slot in ctx.items("slots"):
        if slot.get("list") is True:
            kinds[f"slots.{name}"] = "list"
        elif "choices_from" in slot:
            kinds[f"slots.{name}"] = None
        else:
            kinds[f"slots.{name}"] = _SLOT_KINDS.get(str(slot.get("type")), "text")
    for name in ctx.saved_vars | ctx.returned_vars:
        kinds[f"vars.{name}"] = None
    for name, value in ctx.mapping("vars").items():
        if f"vars.{name}" not in kinds:
            kinds[f"vars.{name}"] = kind_of(value)
    for name in ctx.mapping("hours"):
        kinds[f"hours.{name}"] = "bool"
    for name, value in _now_kinds().items():
        kinds[name] = value
    for name, spec in ctx.mapping("params").items():
        default = spec.get("default") if isinstance(spec, dict) else None
        kinds[f"params.{name}"] = kind_of(default)
    kinds["answer"] = "text"
    return kinds


def _now_kinds() -> dict[str, str]:
    return {f"now.{k}": v for k, v in _NOW_KINDS.items()}


def _check_kinds(ctx: CheckContext) -> None:
    from flowagent.flow import expressions as E

    kinds = name_kinds(ctx)
    for path, src, _tool in expressions(ctx):
        for message, needle in E.type_problems(src, kinds.get):
            ctx.error("expression-type", path,
                      f"The expression `{src}` in {_describe(path)} can never work: "
                      f"{message}.",
                      "Check which values it uses: slots hold what their type says, `vars` "
                      "what they start as.", needle=needle)


def _describe(path: PathT) -> str:
    from flowagent.flow.checks.context import describe

    return describe(path)
