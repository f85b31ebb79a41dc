"""Structure: check the flow against the JSON Schema and say each problem in one plain sentence.

jsonschema's own messages ("'nxt' does not match any of the regexes") are for programmers. Each
error is translated here by the keyword that failed, with did-you-mean suggestions taken from
the schema itself, so the schema stays the single description of which keys exist.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from flowagent.flow.checks.context import (
    CheckContext,
    describe,
    did_you_mean,
    quote_list,
    suggestion_for,
)
from flowagent.flow.checks.schema_subset import SubsetValidator

_PLAIN_TYPES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a group of `key: value` lines",
    "null": "empty",
}

_REQUIRED_HINTS = {
    "flowagent": "Add `flowagent: 1` at the top of the file.",
    "name": "Add `name:` with the name of this flow (or provider).",
    "start": "Add `start:` with the name of the first state.",
    "states": "Add `states:` with at least one state.",
    "type": "Add `type:` (text, integer, number, yes_no, choice, date, time, phone, email, "
            "uk_postcode, address, name or money).",
    "prompt": "Add `prompt:` with the question that asks for it.",
    "go": "Add `go:` with the state to go to.",
    "examples": "Add `examples:` with a few phrases a caller might say.",
    "instructions": "Add `instructions:` saying what the language model should do.",
    "url": "Add `url:` with the address to call.",
}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The flow JSON Schema shipped in `flowagent/schemas/flow.schema.json`."""
    text = resources.files("flowagent.schemas").joinpath("flow.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> SubsetValidator:
    # Not jsonschema: see schema_subset.py (same results, a fraction of the start-up cost).
    return SubsetValidator(load_schema())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _expected(types: Any, key: Any) -> str:
    if isinstance(types, str):
        types = [types]
    types = list(types)
    if key == "next" and set(types) == {"string", "array"}:
        return "a state name or a list of branches"
    if set(types) == {"number", "string"}:
        return "a number or a date"
    if set(types) == {"string", "integer"}:
        return "a number or text"
    if set(types) == {"array", "null"}:
        return "a list (or nothing)"
    return " or ".join(_PLAIN_TYPES.get(t, t) for t in types)


def check_structure(ctx: CheckContext) -> None:
    """Report every schema violation (unknown/missing keys, wrong types, bad values)."""
    for err in _validator().iter_errors(ctx.loaded.data):
        _translate(ctx, err, tuple(err.path))


def _translate(ctx: CheckContext, err: Any, path: tuple[Any, ...]) -> bool:
    v = err.validator
    key = path[-1] if path else None
    where = describe(path)

    if v == "additionalProperties":
        props = list(err.schema.get("properties", {}))
        instance = err.instance if isinstance(err.instance, dict) else {}
        for extra in instance:
            if extra in props:
                continue
            ctx.error("unknown-key", (*path, extra),
                      f"`{extra}` is not something {where} can have.",
                      suggestion_for(extra, props,
                                     f"Remove it, or use one of: {quote_list(props)}."),
                      key=True)
        return True

    if v == "required":
        instance = err.instance if isinstance(err.instance, dict) else {}
        props = list(err.schema.get("properties", {}))
        misspelt = {did_you_mean(k, props) for k in instance if k not in props}
        for missing in err.validator_value:
            if missing in instance or missing in misspelt:
                continue  # present, or written with a typo (reported as unknown-key)
            ctx.error("missing-key", path, f"{where[0].upper()}{where[1:]} is missing `{missing}`.",
                      _REQUIRED_HINTS.get(missing, f"Add `{missing}:`."), key=True)
        return True

    if v == "type":
        return _type_error(ctx, err, path, key, where)

    if v in ("enum", "const"):
        allowed = err.validator_value if v == "enum" else [err.validator_value]
        value = err.instance
        if path == ("flowagent",):
            ctx.error("version-unsupported", path,
                      f"This file is written for flow format `{value}`, but this flowagent only "
                      "understands formats 1 and 2.",
                      "Write `flowagent: 2` (or `flowagent: 1` for a file that uses nothing "
                      "of format 2).")
            return True
        if key == "end":
            ctx.error("bad-value", path, f"{where[0].upper()}{where[1:]} can only be `true`.",
                      "Write `end: true`, or remove it and add `next:`.")
            return True
        names = [str(a) for a in allowed]
        ctx.error("bad-value", path,
                  f"`{value}` is not allowed for {where}; it must be one of {quote_list(names)}.",
                  suggestion_for(str(value), names))
        return True

    if v == "propertyNames" or "propertyNames" in err.relative_schema_path:
        name = err.instance
        what = {"states": "a state", "slots": "a slot", "tools": "a tool",
                "intents": "an intent"}.get(str(path[0]) if path else "", "this")
        if path and path[-1] == "args":
            what = "a tool argument"
        elif path and path[-1] == "save":
            what = "a saved value"
        if not isinstance(name, str) or not name:
            ctx.error("bad-value", path, f"{where[0].upper()}{where[1:]} has an empty name.",
                      key=True)
            return True
        fixed = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "name"
        if fixed[0].isdigit():
            fixed = "n" + fixed
        ctx.error("bad-value", (*path, name),
                  f"`{name}` cannot be the name of {what}: use only letters, digits and "
                  "underscores, starting with a letter.", f"For example `{fixed}`.", key=True)
        return True

    if v == "pattern":
        value = err.instance
        if key == "dtmf":
            msg = f"`{value}` is not a keypad key; {where} must be one key such as \"0\" or \"#\"."
        elif key == "terminator":
            msg = f"`{value}` is not a keypad key; the terminator must be one key such as \"#\"."
        elif key == "python":
            msg = (f"`{value}` should be written as `module:function`, "
                   "e.g. `mycompany.tools:lookup`.")
        elif key == "language":
            msg = f"`{value}` is not a language code; write one like `en-GB` or `en-US`."
        else:
            msg = f"`{value}` is not in the right form for {where}."
        ctx.error("bad-value", path, msg)
        return True

    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                 "exclusiveMaximum": "less than"}[v]
        ctx.error("bad-value", path,
                  f"{where[0].upper()}{where[1:]} must be {words} {err.validator_value}, "
                  f"not {err.instance}.")
        return True

    if v in ("minItems", "minProperties", "minLength"):
        ctx.error("bad-value", path, f"{where[0].upper()}{where[1:]} is empty.",
                  "Give it at least one entry." if v != "minLength" else "Write something here.")
        return True

    # anything else the schema may grow: still one sentence and a position
    ctx.error("bad-value", path, f"{where[0].upper()}{where[1:]}: {err.message}.")
    return True


def _type_error(ctx: CheckContext, err: Any, path: tuple[Any, ...], key: Any,
                where: str) -> bool:
    value = err.instance
    actual = _json_type(value)
    expected = _expected(err.validator_value, key)
    cap = where[0].upper() + where[1:]

    # a state/slot/tool-level key written at the indentation of the names above it
    if len(path) == 2 and path[0] in ("states", "slots", "tools") and actual != "object":
        child = load_schema()["$defs"][{"states": "state", "slots": "slot", "tools": "tool"}[
            path[0]]]["properties"]
        if key in child:
            names = list(ctx.mapping(path[0]))
            idx = names.index(key) if key in names else 0
            owner = names[idx - 1] if idx > 0 else None
            kind = {"states": "state", "slots": "slot", "tools": "tool"}[path[0]]
            ctx.error("bad-indent", path,
                      f"`{key}` is lined up with the {kind} names, so it is read as a {kind} "
                      f"called `{key}`" + (f"; it probably belongs to `{owner}` above it." if owner
                                           else "."),
                      f"Indent `{key}:` further, under the {kind} it belongs to.", key=True)
            return True

    if key == "choices" and actual == "array":
        ctx.error("wrong-type", path,
                  f"{cap} should give each value with the words callers use for it, not a "
                  "plain list.",
                  "Write one `value: [other words]` line per value under `choices:`, e.g. "
                  "`small: [studio, flat]` (use `[]` when there are none).")
        return True
    if actual == "null":
        ctx.error("wrong-type", path, f"{cap} is empty; it should be {expected}.",
                  "Write a value after the colon, or remove the line.", key=True)
        return True
    if actual == "boolean" and "string" in err.validator_value:
        ctx.error("wrong-type", path,
                  f"{cap} was read as true/false (YAML treats yes, no, on and off that way), but "
                  "it should be text.", f"Put it in quotes: \"{'yes' if value else 'no'}\".")
        return True
    if "array" in err.validator_value and actual in ("string", "integer", "number"):
        ex = f"{key}: [{value}]" if isinstance(key, str) else f"[{value}]"
        ctx.error("wrong-type", path, f"{cap} should be a list, not a single value.",
                  f"Write it as a list, like `{ex}`.")
        return True
    if "string" in err.validator_value and actual in ("integer", "number"):
        ctx.error("wrong-type", path, f"{cap} should be text in quotes, not a number.",
                  f"Write it as \"{value}\".")
        return True
    hint = None
    if expected == "true or false" and isinstance(value, str) and value.strip().lower() in (
        "yes", "no", "on", "off", "y", "n"
    ):
        on = value.strip().lower() in ("yes", "on", "y")
        hint = f"Write `{'true' if on else 'false'}` instead of `{value}`."
    elif "object" in err.validator_value:
        hint = "Put its entries on the lines below it, indented, as `key: value`."
    ctx.error("wrong-type", path,
              f"{cap} should be {expected}, not {_PLAIN_TYPES.get(actual, actual)}.", hint)
    return True
