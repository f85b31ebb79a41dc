"""The example flows are clean, the schema is a valid, well-documented JSON Schema, and the
examples satisfy it when checked by jsonschema itself (not only by our own validator)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flowagent.flow.checks.structure import load_schema
from flowagent.flow.loader import load_file
from flowagent.flow.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "flows").glob("*.yaml"))
EXAMPLES = [p for p in EXAMPLES if not p.name.endswith((".tests.yaml", ".tools.yaml"))]
MODELINE = "# yaml-language-server: $schema=../flowagent/schemas/flow.schema.json"


def test_there_are_three_example_flows() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"removals.yaml", "dental.yaml", "plumber.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_flow_validates_clean(path: Path) -> None:
    report = validate_file(path, check_env=True, environ={})
    assert report.findings == [], "\n".join(map(str, report.findings))
    assert report.ok and report.flow is not None and report.data["flowagent"] in (1, 2)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_flow_passes_jsonschema_and_has_modeline(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == MODELINE
    errors = list(Draft202012Validator(load_schema()).iter_errors(load_file(path).data))
    assert errors == []


def test_examples_use_every_kind_of_state() -> None:
    kinds: set[str] = set()
    for path in EXAMPLES:
        for state in load_file(path).data["states"].values():
            action = [k for k in ("ask", "collect", "call", "llm", "transfer", "end") if k in state]
            kinds.add(action[0] if action else "say")
    assert kinds == {"say", "ask", "collect", "call", "llm", "transfer", "end"}


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _objects(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _objects(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{where}/{i}")


def test_every_property_has_a_tooltip_and_objects_are_closed() -> None:
    schema = load_schema()
    for where, node in _objects(schema):
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict):
                assert prop.get("description"), f"{where}/properties/{name} has no description"
        if node.get("properties") is not None and "type" in node:
            assert node.get("additionalProperties") is False, f"{where} is not closed"


def test_schema_enums_match_the_spec() -> None:
    defs = load_schema()["$defs"]
    assert defs["slot"]["properties"]["type"]["enum"] == [
        "text", "integer", "number", "yes_no", "choice", "date", "time", "phone", "email",
        "uk_postcode", "address", "name", "money", "digits"]
    assert defs["tool"]["properties"]["method"]["enum"] == ["GET", "POST", "PUT", "PATCH",
                                                              "DELETE"]
    assert defs["handler"]["properties"]["event"]["enum"] == [
        "no_input", "no_match", "tool_failure", "max_duration", "hangup", "error"]
    assert defs["handler"]["properties"]["do"]["enum"] == ["repeat", "restart", "continue",
                                                           "hangup"]


def test_schema_ships_as_package_data() -> None:
    from importlib import resources

    text = resources.files("flowagent.schemas").joinpath("flow.schema.json").read_text("utf-8")
    assert json.loads(text) == load_schema()


def test_conversation_test_files_are_not_mistaken_for_flows() -> None:
    for path in (ROOT / "flows").glob("*.tests.yaml"):
        report = validate_file(path)
        assert report.unusable
        assert [f.code for f in report.findings] == ["not-a-flow"]
