"""Fixtures for engine tests (helpers live in engine_helpers.py)."""

from __future__ import annotations

import pytest
from engine_helpers import ROOT

from flowagent.flow.compiler import CompiledFlow, load_flow


@pytest.fixture(scope="session")
def removals() -> CompiledFlow:
    return load_flow(ROOT / "flows" / "removals.yaml")
