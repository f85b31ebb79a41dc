"""`flowagent graph`: every state and transition of every example flow appears in every format.

The golden files pin the exact text (diagrams are reviewed as text in pull requests); the
programmatic checks recompute the transitions from the raw YAML independently of flowagent.graph,
so a golden file regenerated with a bug in it would still fail. Regenerate the golden files with
`FLOWAGENT_UPDATE_GOLDEN=1 pytest tests/graph`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowagent.commands import graph as cmd
from flowagent.graph import model, render

ROOT = Path(__file__).resolve().parents[2]
FLOWS = sorted(p for p in (ROOT / "flows").rglob("*.yaml") if not p.name.endswith(".tests.yaml")
               and not p.name.endswith(".tools.yaml"))  # the recipes too: format 2 drawn
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLOWAGENT_UPDATE_GOLDEN") == "1"


def expected_transitions(data: dict) -> set[tuple[str, str]]:
    """(from, to) for every `next`, branch `go`, `on_failure` and handler `go` in the YAML."""
    out: set[tuple[str, str]] = set()
    tools = data.get("tools") or {}
    for name, state in data["states"].items():
        nxt = state.get("next")
        if isinstance(nxt, str):
            out.add((name, nxt))
        for branch in nxt if isinstance(nxt, list) else []:
            out.add((name, branch["go"]))
        if "call" in state:
            failure = state.get("on_failure") or (tools.get(state["call"]) or {}).get("on_failure")
            if failure:
                out.add((name, failure))
        for handler in state.get("handlers") or []:
            if "go" in handler:
                out.add((name, handler["go"]))
    for handler in data.get("handlers") or []:
        if "go" in handler:
            out.add((model.ANY, handler["go"]))
    return out


def test_there_are_example_flows() -> None:
    assert any(p.name == "removals.yaml" for p in FLOWS)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda p: p.stem)
def test_every_state_and_transition_is_drawn(flow: Path) -> None:
    data = yaml.safe_load(flow.read_text())
    graph = model.build_graph(data)
    ids = render._ids(graph)
    mermaid, dot, svg = render.to_mermaid(graph), render.to_dot(graph), render.to_svg(graph)
    for state in data["states"]:
        sid = ids[state]
        assert re.search(rf"^  {sid}[\[\{{(>]", mermaid, re.M), f"{state} missing in mermaid"
        assert re.search(rf"^  {sid} \[label=\"{re.escape(state)}", dot, re.M), state
        assert f'data-state="{state}"' in svg
    assert f"start_marker --> {ids[data['start']]}" in mermaid
    assert f"start_marker -> {ids[data['start']]};" in dot
    for source, target in expected_transitions(data):
        s, t = ids[source], ids[target]
        assert re.search(rf"^  {s} -(->|\.->)(\|[^\n]*\|)? {t}$", mermaid, re.M), (source, target)
        assert re.search(rf"^  {s} -> {t}( \[|;)", dot, re.M), (source, target)
        assert f'data-from="{source}" data-to="{target}"' in svg, (source, target)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda p: p.stem)
@pytest.mark.parametrize("fmt,ext", [("mermaid", "mmd"), ("dot", "dot")])
def test_golden_output(flow: Path, fmt: str, ext: str) -> None:
    graph = model.build_graph(yaml.safe_load(flow.read_text()))
    text = render.RENDERERS[fmt](graph)
    golden = GOLDEN / f"{flow.stem}.{ext}"
    if UPDATE:
        golden.write_text(text)
    assert golden.exists(), (
        f"no golden file {golden.name}: run FLOWAGENT_UPDATE_GOLDEN=1 pytest tests/graph"
    )
    assert text == golden.read_text()


def test_removals_labels_intents_conditions_tools_and_handlers() -> None:
    graph = model.build_graph(yaml.safe_load((ROOT / "flows/removals.yaml").read_text()))
    mermaid = render.to_mermaid(graph)
    assert '-->|"intent: quote"| s_details' in mermaid
    assert '-->|"when: slots.accept_quote"| s_contact_details' in mermaid
    assert '-->|"otherwise"| s_no_booking' in mermaid
    assert 's_get_quote -.->|"failure"| s_pricing_down' in mermaid
    assert 's_book -->|"success"| s_booked' in mermaid
    assert "calls tool book_move" in mermaid
    assert 'any_state -.->|"DTMF: 0"| s_to_human' in mermaid
    assert 'any_state -.->|"event: max_duration"| hang_up' in mermaid
    assert "intent: repeat → repeat" in mermaid  # a handler that does not move is in the legend
    assert "class s_to_human,s_goodbye terminal" in mermaid
    assert graph.nodes["greet"].start and graph.nodes["goodbye"].terminal
    assert graph.unreachable == []


UNREACHABLE_FLOW = """
flowagent: 1
name: Odd "flow" <test>
start: hello
handlers:
  - event: tool_failure
    go: sorry
states:
  hello:
    ask: Yes or no?
    next:
      - intent: yes
        when: "answer != ''"
        go: lookup
      - go: bye
  lookup:
    call: find
    next: bye
    handlers:
      - intent: human
        go: end
  orphan:
    say: Nobody comes here.
    next: bye
  sorry:
    say: Sorry.
    transfer: "100"
  end:
    llm: {instructions: Chat., tools: [find]}
    next: bye
  bye:
    end: true
    outcome: done
tools:
  find: {url: "http://127.0.0.1/x"}
"""


def test_unreachable_states_kinds_and_awkward_names_are_marked() -> None:
    graph = model.build_graph(yaml.safe_load(UNREACHABLE_FLOW))
    assert graph.unreachable == ["orphan"]
    kinds = {n.id: n.kind for n in graph.states}
    assert kinds == {"hello": "ask", "lookup": "call", "orphan": "say", "sorry": "transfer",
                     "end": "llm", "bye": "end"}
    assert graph.nodes["end"].tools == ["find"]
    mermaid, dot = render.to_mermaid(graph), render.to_dot(graph)
    assert "class s_orphan unreachable" in mermaid
    assert 'xlabel="unreachable"' in dot and "s_orphan [" in dot
    # a state called `end` must not break Mermaid/DOT (reserved words); quotes are escaped
    assert "s_end{{" in mermaid and 'digraph "Odd \\"flow\\" <test>"' in dot
    assert """-->|"intent: yes and when: answer != ''"| s_lookup""" in mermaid
    # the tool has no on_failure: the global tool_failure handler takes the failure edge
    assert 's_lookup -.->|"failure (tool_failure)"| s_sorry' in mermaid
    assert 's_lookup -.->|"intent: human"| s_end' in mermaid
    svg = render.to_svg(graph)
    assert 'class="node kind-say unreachable"' in svg and "UNREACHABLE" in svg


def test_html_is_self_contained() -> None:
    graph = model.build_graph(yaml.safe_load((ROOT / "flows/removals.yaml").read_text()))
    page = render.to_html(graph)
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    # the only URL is the SVG namespace, which browsers never fetch
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowagent.cli", "graph", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def test_cli_writes_each_format(tmp_path: Path) -> None:
    out = _cli("flows/removals.yaml", "--format", "dot")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (GOLDEN / "removals.dot").read_text()
    target = tmp_path / "removals.html"
    out = _cli("flows/removals.yaml", "--format", "html", "--output", str(target))
    assert out.returncode == 0, out.stderr
    assert "<svg" in target.read_text()


def test_invalid_flow_exits_2_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flowagent: 1\nname: x\nstart: nowhere\nstates:\n  a:\n\tsay: hi\n")
    out = _cli(str(bad))
    assert out.returncode == 2
    assert f"{bad}:" in out.stderr and "tab" in out.stderr
    assert out.stdout == ""
    assert cmd.run(tmp_path / "missing.yaml") == 2
    assert cmd.run(ROOT / "flows/removals.yaml", "png") == 2


@pytest.mark.skipif(
    not shutil.which("dot"), reason="Graphviz is not installed (apt-get install graphviz)"
)
@pytest.mark.parametrize("flow", FLOWS, ids=lambda p: p.stem)
def test_graphviz_accepts_the_dot_output(flow: Path) -> None:
    dot = render.to_dot(model.build_graph(yaml.safe_load(flow.read_text())))
    out = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.count('class="node"') >= len(yaml.safe_load(flow.read_text())["states"])
