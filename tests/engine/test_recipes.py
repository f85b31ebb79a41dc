"""The recipes of docs/authoring.md are complete flows under flows/recipes/, each with its
conversation tests: every one validates clean (its tests file too), its tests pass, and the
recipes page shows every one of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import ROOT

from flowagent.dialogue.conversation_tests import load_tests, run_tests
from flowagent.dialogue.file_checks import validate_companion
from flowagent.flow.compiler import load_flow
from flowagent.flow.validate import validate_file

RECIPES = sorted(p for p in (ROOT / "flows" / "recipes").glob("*.yaml")
                 if not p.name.endswith((".tests.yaml", ".tools.yaml")))
NEEDS = {"ask_again", "order_items", "price_list", "choices_from_api", "opening_hours",
         "verify_once", "side_question", "read_code", "date_of_birth"}


def test_every_recipe_the_issue_asks_for_is_there() -> None:
    assert {p.stem for p in RECIPES} >= NEEDS


@pytest.mark.parametrize("flow", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates_and_its_conversation_tests_pass(flow: Path) -> None:
    report = validate_file(flow)
    assert not report.findings, [str(f) for f in report.findings]
    tests = flow.with_name(flow.stem + ".tests.yaml")
    assert not validate_companion(tests, "tests").findings
    compiled = load_flow(flow)
    assert compiled.version == 2
    specs, _ = load_tests(tests, compiled.timezone)
    results = run_tests(compiled, specs)
    assert len(results) >= 2
    failed = [f"{r.name}: {r.failure}\n  " + "\n  ".join(r.conversation)
              for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_the_recipes_page_shows_each_recipe() -> None:
    guide = (ROOT / "docs" / "authoring.md").read_text(encoding="utf-8")
    recipes = guide.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    for flow in RECIPES:
        assert f"flows/recipes/{flow.name}" in recipes, flow.name
