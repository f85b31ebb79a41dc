"""A small JSON Schema (2020-12) validator for exactly the keywords flow.schema.json uses.

Why not call jsonschema here: importing it (with its format checkers) costs more than the whole
rest of `flowagent validate`, and the product promises a fast CLI. The flow schema deliberately
uses a plain subset — type, properties, additionalProperties, required, enum, const, pattern,
minimum/maximum/exclusiveMinimum, minLength, minItems, minProperties, items, propertyNames and
local `$ref`s — so this is short. Errors carry the same attributes as jsonschema's
(`validator`, `validator_value`, `instance`, `path`, `schema`, `relative_schema_path`,
`message`), and tests/validation check it reports the same places as jsonschema on every flow
in the test corpus. A keyword outside the subset raises at construction (so the schema cannot
quietly grow beyond what is checked).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SUPPORTED = frozenset({
    "$schema", "$id", "$defs", "$ref", "title", "description", "examples", "default",
    "markdownDescription", "type", "properties", "additionalProperties", "required", "enum",
    "const", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "minItems", "minProperties", "items", "propertyNames",
})


@dataclass
class SchemaError:
    validator: str
    validator_value: Any
    instance: Any
    path: tuple[Any, ...]
    schema: dict[str, Any]
    message: str
    relative_schema_path: tuple[str, ...] = field(default_factory=tuple)


def _is_type(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if t == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, int | float)
    return False


def _out_of_range(keyword: str, value: float, bound: float) -> bool:
    if keyword == "minimum":
        return value < bound
    if keyword == "maximum":
        return value > bound
    if keyword == "exclusiveMinimum":
        return value <= bound
    return value >= bound


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class SubsetValidator:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema
        self._refs: dict[str, dict[str, Any]] = {}
        self._check_keywords(schema)

    def _check_keywords(self, schema: Any) -> None:
        if isinstance(schema, dict):
            unknown = set(schema) - SUPPORTED
            if unknown:
                raise ValueError(f"flow schema uses unsupported keywords: {sorted(unknown)}")
            for key in ("properties", "$defs"):
                for sub in (schema.get(key) or {}).values():
                    self._check_keywords(sub)
            for key in ("additionalProperties", "items", "propertyNames"):
                if isinstance(schema.get(key), dict):
                    self._check_keywords(schema[key])

    def _resolve(self, ref: str) -> dict[str, Any]:
        hit = self._refs.get(ref)
        if hit is not None:
            return hit
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, not {ref}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        self._refs[ref] = node
        found: dict[str, Any] = node
        return found

    def iter_errors(self, instance: Any) -> Iterator[SchemaError]:
        yield from self._validate(instance, self.root, ())

    def _validate(self, inst: Any, schema: dict[str, Any], path: tuple[Any, ...]
                  ) -> Iterator[SchemaError]:
        if "$ref" in schema:
            yield from self._validate(inst, self._resolve(schema["$ref"]), path)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(inst, t) for t in types):
                yield SchemaError("type", schema["type"], inst, path, schema,
                                  f"{inst!r} is not of type {schema['type']}", ("type",))
                return  # the other keywords would only repeat the same complaint
        if "enum" in schema and not any(_equal(inst, e) for e in schema["enum"]):
            yield SchemaError("enum", schema["enum"], inst, path, schema,
                              f"{inst!r} is not one of {schema['enum']}", ("enum",))
        if "const" in schema and not _equal(inst, schema["const"]):
            yield SchemaError("const", schema["const"], inst, path, schema,
                              f"{schema['const']!r} was expected", ("const",))
        if isinstance(inst, str):
            if "pattern" in schema and not _regex(schema["pattern"]).search(inst):
                yield SchemaError("pattern", schema["pattern"], inst, path, schema,
                                  f"{inst!r} does not match {schema['pattern']!r}", ("pattern",))
            if "minLength" in schema and len(inst) < schema["minLength"]:
                yield SchemaError("minLength", schema["minLength"], inst, path, schema,
                                  f"{inst!r} is too short", ("minLength",))
        if isinstance(inst, int | float) and not isinstance(inst, bool):
            for kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if kw in schema and _out_of_range(kw, inst, schema[kw]):
                    yield SchemaError(kw, schema[kw], inst, path, schema,
                                      f"{inst!r} is out of range ({kw} {schema[kw]})", (kw,))
        if isinstance(inst, list):
            if "minItems" in schema and len(inst) < schema["minItems"]:
                yield SchemaError("minItems", schema["minItems"], inst, path, schema,
                                  f"{inst!r} should be non-empty", ("minItems",))
            if isinstance(schema.get("items"), dict):
                for i, item in enumerate(inst):
                    yield from self._validate(item, schema["items"], (*path, i))
        if isinstance(inst, dict):
            yield from self._validate_object(inst, schema, path)

    def _validate_object(self, inst: dict[str, Any], schema: dict[str, Any],
                         path: tuple[Any, ...]) -> Iterator[SchemaError]:
        if "minProperties" in schema and len(inst) < schema["minProperties"]:
            yield SchemaError("minProperties", schema["minProperties"], inst, path, schema,
                              f"{inst!r} should be non-empty", ("minProperties",))
        missing = [k for k in schema.get("required", ()) if k not in inst]
        if missing:
            yield SchemaError("required", schema["required"], inst, path, schema,
                              f"{missing[0]!r} is a required property", ("required",))
        if isinstance(schema.get("propertyNames"), dict):
            for name in inst:
                for err in self._validate(name, schema["propertyNames"], path):
                    err.relative_schema_path = ("propertyNames", *err.relative_schema_path)
                    yield err
        props = schema.get("properties", {})
        extra_schema = schema.get("additionalProperties", True)
        extras = []
        for key, value in inst.items():
            if key in props:
                yield from self._validate(value, props[key], (*path, key))
            elif extra_schema is False:
                extras.append(key)
            elif isinstance(extra_schema, dict):
                yield from self._validate(value, extra_schema, (*path, key))
        if extras:
            yield SchemaError("additionalProperties", False, inst, path, schema,
                              f"Additional properties are not allowed ({extras!r})",
                              ("additionalProperties",))
