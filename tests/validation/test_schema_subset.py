"""Our small schema validator must agree with jsonschema on where a flow breaks the schema.

`flowagent validate` uses `checks/schema_subset.py` for start-up speed; jsonschema is the
reference. For every example and every broken flow, both must flag the same places."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from flowagent.flow.checks.schema_subset import SubsetValidator
from flowagent.flow.checks.structure import load_schema
from flowagent.flow.loader import FlowYamlError, load_file

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "tests" / "flows" / "broken").glob("*.yaml")) + sorted(
    (ROOT / "flows").glob("*.yaml"))


def _places(errors: list) -> set[tuple]:
    out = set()
    for e in errors:
        if e.validator in ("enum", "const", "pattern") and any(
                o.validator == "type" and tuple(o.path) == tuple(e.path) for o in errors):
            continue  # we stop at a type error; jsonschema goes on to enum/const
        out.add((tuple(e.path), e.validator))
    return out


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_subset_validator_agrees_with_jsonschema(path: Path) -> None:
    try:
        data = load_file(path).data
    except FlowYamlError:
        pytest.skip("not YAML: nothing to compare")
    ours = list(SubsetValidator(load_schema()).iter_errors(data))
    ref = list(Draft202012Validator(load_schema()).iter_errors(data))
    assert _places(ours) == _places(ref)


def test_subset_validator_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(ValueError, match="oneOf"):
        SubsetValidator({"type": "object", "oneOf": [{"type": "string"}]})
