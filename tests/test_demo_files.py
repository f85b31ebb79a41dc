"""`flowagent demo` ships a copy of flows/removals.yaml (so it runs from an installed wheel):
the copy must say exactly what the flow in flows/ says."""

from __future__ import annotations

from pathlib import Path

from flowagent.commands.demo import demo_flow
from flowagent.demo import DEMO_FLOW

ROOT = Path(__file__).resolve().parents[1]


def _body(path: Path) -> list[str]:
    # the first line points editors at the schema, relative to where the file is
    return path.read_text(encoding="utf-8").splitlines()[1:]


def test_the_packaged_demo_flow_is_flows_removals() -> None:
    assert _body(DEMO_FLOW) == _body(ROOT / "flows" / "removals.yaml"), (
        "flowagent/demo/removals.yaml differs from flows/removals.yaml: copy it over "
        "(keeping its first line)")
    assert DEMO_FLOW.read_text(encoding="utf-8").splitlines()[0].endswith(
        "$schema=../schemas/flow.schema.json")


def test_the_demo_serves_the_flow_of_the_folder_it_runs_in(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert demo_flow() == Path("flows") / "removals.yaml"
    monkeypatch.chdir(tmp_path)  # e.g. after `pip install flowagent-*.whl`
    assert demo_flow() == DEMO_FLOW
