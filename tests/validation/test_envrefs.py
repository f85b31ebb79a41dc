"""`${NAME}` / `${NAME:-default}` references: found with positions, expanded from the
environment, and missing ones either kept (for running) or reported."""

from __future__ import annotations

import pytest

from flowagent.flow import envrefs


def test_find_refs_with_positions() -> None:
    refs = envrefs.find_refs("Bearer ${TOKEN} and ${URL:-http://x}")
    assert [(r.name, r.default, r.start) for r in refs] == [("TOKEN", None, 7),
                                                             ("URL", "http://x", 20)]
    assert envrefs.find_refs("no refs, {{ template }}") == []


def test_expand_tree_and_defaults() -> None:
    data = {"a": "${A}", "b": ["x ${B:-bee}"], "n": 3}
    env = {"A": "ay"}
    assert envrefs.expand_tree(data, env) == {"a": "ay", "b": ["x bee"], "n": 3}
    assert envrefs.missing_names({"k": "${NOPE} ${A} ${D:-d}"}, env) == ["NOPE"]


def test_missing_variable_strict_or_kept() -> None:
    with pytest.raises(envrefs.MissingEnvError) as info:
        envrefs.expand_text("${NOPE}", {})
    assert "NOPE" in str(info.value)
    assert envrefs.expand({"k": "${NOPE}"}, {}) == {"k": "${NOPE}"}


def test_iter_tree_refs_paths_match_loader_paths() -> None:
    data = {"providers": {"llm": {"options": {"api_key": "${KEY}"}}}, "l": ["${X}"]}
    assert [(p, r.name) for p, r in envrefs.iter_tree_refs(data)] == [
        (("providers", "llm", "options", "api_key"), "KEY"), (("l", 0), "X")]
