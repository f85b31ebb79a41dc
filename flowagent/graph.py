"""A flow as a picture: flow data -> graph model -> Mermaid, Graphviz DOT, SVG or HTML.

Flow authors are not developers; they understand a diagram of their flow faster than its YAML.
The model is built from the *loaded* flow data (plain dicts, see docs/flow-format.md), not from the
compiled flow, so it can draw a flow the engine would refuse (unreachable states are exactly what an
author needs to see). Everything here is pure and deterministic: the same flow always gives the same
text, which is what lets the example flows keep golden files.
"""

from __future__ import annotations

import html
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: the pseudo node global handlers hang from ("in any state, if the caller says ...")
ANY = "__any__"
#: the pseudo node a `do: hangup` handler leads to
HANGUP = "__hangup__"

KINDS = ("say", "ask", "collect", "call", "llm", "transfer", "end")


@dataclass
class Node:
    """One state of the flow (or a pseudo node: `ANY`, `HANGUP`)."""

    id: str
    kind: str  # say | ask | collect | call | llm | transfer | end | any | hangup
    detail: str = ""  # one short line: what the state does ("asks: ...", "calls get_quote")
    start: bool = False
    terminal: bool = False  # transfer, end (and the hangup pseudo node)
    unreachable: bool = False
    tools: list[str] = field(default_factory=list)
    outcome: str = ""

    @property
    def pseudo(self) -> bool:
        return self.id in (ANY, HANGUP)

    @property
    def title(self) -> str:
        if self.id == ANY:
            return "any state"
        if self.id == HANGUP:
            return "hang up"
        return self.id


@dataclass
class Edge:
    """A transition. `kind` says why it is taken (styles differ per kind)."""

    source: str
    target: str
    kind: str  # next | branch | otherwise | success | failure | handler
    label: str = ""


@dataclass
class FlowGraph:
    name: str
    start: str
    nodes: dict[str, Node]
    edges: list[Edge]
    #: handlers that do not move anywhere (repeat, continue) as "trigger: effect" lines
    legend: list[str] = field(default_factory=list)

    @property
    def states(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.pseudo]

    @property
    def unreachable(self) -> list[str]:
        return [n.id for n in self.states if n.unreachable]


class GraphError(ValueError):
    """The data is not a flow that can be drawn (no `states` mapping, no start...)."""


# ---------------------------------------------------------------------------------------------
# Flow data -> model
# ---------------------------------------------------------------------------------------------


def _short(text: Any, limit: int = 48) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def _kind(state: dict[str, Any]) -> str:
    for key in ("ask", "collect", "call", "llm", "transfer"):
        if key in state:
            return key
    if state.get("end"):
        return "end"
    return "say"


def _detail(kind: str, state: dict[str, Any]) -> tuple[str, list[str]]:
    tools: list[str] = []
    if kind == "ask":
        return f"asks: {_short(state['ask'])}", tools
    if kind == "collect":
        slots = state["collect"] if isinstance(state["collect"], list) else [state["collect"]]
        extra = " + confirm" if state.get("confirm") else ""
        return f"collects: {', '.join(str(s) for s in slots)}{extra}", tools
    if kind == "call":
        tools.append(str(state["call"]))
        return f"calls tool {state['call']}", tools
    if kind == "llm":
        llm = state["llm"] if isinstance(state["llm"], dict) else {}
        tools.extend(str(t) for t in llm.get("tools") or [])
        return ("LLM" + (f" with tools: {', '.join(tools)}" if tools else "")), tools
    if kind == "transfer":
        return f"transfers to {_short(state['transfer'], 30)}", tools
    if kind == "end":
        outcome = state.get("outcome")
        return "ends the call" + (f" ({outcome})" if outcome else ""), tools
    return (f"says: {_short(state['say'])}" if state.get("say") else ""), tools


def _branch_label(branch: dict[str, Any]) -> tuple[str, str]:
    parts = []
    if "intent" in branch:
        intent = branch["intent"]
        if isinstance(intent, bool):  # YAML 1.1 reads a bare `yes`/`no` as a boolean
            intent = "yes" if intent else "no"
        parts.append(f"intent: {intent}")
    if "when" in branch:
        parts.append(f"when: {_short(branch['when'], 40)}")
    if not parts:
        return "otherwise", "otherwise"
    return " and ".join(parts), "branch"


def _trigger(handler: dict[str, Any]) -> str:
    for key in ("intent", "dtmf", "event"):
        if key in handler:
            return f"{'DTMF' if key == 'dtmf' else key}: {handler[key]}"
    return "handler"


def _handler_edges(
    source: str, handlers: list[Any], start: str, nodes: dict[str, Node], legend: list[str] | None
) -> list[Edge]:
    """Edges for handlers; effects that do not move (repeat, continue) go to `legend`."""
    edges: list[Edge] = []
    for handler in handlers:
        if not isinstance(handler, dict):
            continue
        label = _trigger(handler)
        if handler.get("call"):
            label += f" (calls {handler['call']})"
        if "go" in handler:
            edges.append(Edge(source, str(handler["go"]), "handler", label))
        elif handler.get("do") == "restart":
            edges.append(Edge(source, start, "handler", f"{label} (start again)"))
        elif handler.get("do") == "hangup":
            nodes.setdefault(HANGUP, Node(HANGUP, "hangup", "", terminal=True))
            edges.append(Edge(source, HANGUP, "handler", label))
        else:
            effect = handler.get("do") or "carry on"
            where = "any state" if source == ANY else source
            line = f"{label} → {effect} (in {where})"
            if legend is not None:
                legend.append(line)
    return edges


def build_graph(data: Any) -> FlowGraph:
    """Build the graph model of loaded flow data. Raises GraphError if it cannot be drawn."""
    if not isinstance(data, dict):
        raise GraphError("The file is not a flow: its top level must be a mapping of keys.")
    states = data.get("states")
    if not isinstance(states, dict) or not states:
        raise GraphError("The flow has no `states` mapping, so there is nothing to draw.")
    start = data.get("start")
    if not isinstance(start, str) or start not in states:
        raise GraphError(f"The flow's `start` ({start!r}) is not one of its states.")
    tools = data.get("tools") if isinstance(data.get("tools"), dict) else {}
    handlers = data.get("handlers") if isinstance(data.get("handlers"), list) else []

    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    legend: list[str] = []
    tool_failure_go = next(
        (
            str(h["go"])
            for h in handlers
            if isinstance(h, dict) and h.get("event") == "tool_failure" and "go" in h
        ),
        None,
    )

    for name, state in states.items():
        state = state if isinstance(state, dict) else {}
        kind = _kind(state)
        detail, called = _detail(kind, state)
        nodes[name] = Node(
            name,
            kind,
            detail,
            start=name == start,
            terminal=kind in ("transfer", "end"),
            tools=called,
            outcome=str(state.get("outcome") or ""),
        )
        nxt = state.get("next")
        ok_kind = "success" if kind == "call" else "next"
        if isinstance(nxt, str):
            edges.append(Edge(name, nxt, ok_kind, "success" if kind == "call" else ""))
        elif isinstance(nxt, list):
            for branch in nxt:
                if isinstance(branch, dict) and "go" in branch:
                    label, bkind = _branch_label(branch)
                    if kind == "call":
                        label = f"success, {label}" if bkind == "branch" else "success"
                    edges.append(Edge(name, str(branch["go"]), bkind, label))
        if kind == "call":
            tool = tools.get(state["call"]) if isinstance(tools.get(state["call"]), dict) else {}
            failure = state.get("on_failure") or tool.get("on_failure")
            if failure:
                edges.append(Edge(name, str(failure), "failure", "failure"))
            elif tool_failure_go:
                edges.append(Edge(name, tool_failure_go, "failure", "failure (tool_failure)"))
        own = state.get("handlers")
        if isinstance(own, list):
            edges.extend(_handler_edges(name, own, start, nodes, legend))

    if handlers:
        nodes[ANY] = Node(ANY, "any", "global handlers")
        edges.extend(_handler_edges(ANY, handlers, start, nodes, legend))

    # order pseudo nodes last so renderers list states in file order
    if HANGUP in nodes:
        nodes[HANGUP] = nodes.pop(HANGUP)
    for node_id in reachable_from(start, nodes, edges) ^ set(nodes):
        if not nodes[node_id].pseudo:
            nodes[node_id].unreachable = True
    return FlowGraph(str(data.get("name") or "flow"), start, nodes, edges, legend)


def reachable_from(start: str, nodes: dict[str, Node], edges: list[Edge]) -> set[str]:
    """States a call can reach: BFS over transitions; global handlers fire from any state."""
    out: dict[str, list[str]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e.target)
    seen = {start}
    if ANY in nodes:
        seen.add(ANY)
    queue = deque(seen)
    while queue:
        for target in out.get(queue.popleft(), []):
            if target in nodes and target not in seen:
                seen.add(target)
                queue.append(target)
    if HANGUP in nodes:
        seen.add(HANGUP)
    return seen


# ---------------------------------------------------------------------------------------------
# Mermaid
# ---------------------------------------------------------------------------------------------

_MERMAID_SHAPES = {
    "say": ('["', '"]'),
    "ask": ('{"', '"}'),
    "collect": ('[/"', '"/]'),
    "call": ('[["', '"]]'),
    "llm": ('{{"', '"}}'),
    "transfer": ('>"', '"]'),
    "end": ('(("', '"))'),
    "any": ('(["', '"])'),
    "hangup": ('(("', '"))'),
}


def _ids(graph: FlowGraph) -> dict[str, str]:
    """Safe, unique identifiers (Mermaid and DOT are picky about names like `end`)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for node_id in graph.nodes:
        base = {"__any__": "any_state", "__hangup__": "hang_up"}.get(node_id) or (
            "s_" + re.sub(r"\W", "_", node_id)
        )
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        ids[node_id] = candidate
    return ids


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(graph: FlowGraph) -> str:
    ids = _ids(graph)
    lines = ["flowchart TD", f"  %% {_short(graph.name, 80)}", "  start_marker(((start)))"]
    for node in graph.nodes.values():
        left, right = _MERMAID_SHAPES[node.kind]
        text = _mermaid_text(node.title)
        if node.detail and not node.pseudo:
            text += f"<br/><small>{_mermaid_text(node.detail)}</small>"
        if node.unreachable:
            text += "<br/><small>UNREACHABLE</small>"
        lines.append(f"  {ids[node.id]}{left}{text}{right}")
    lines.append(f"  start_marker --> {ids[graph.start]}")
    for e in graph.edges:
        if e.target not in ids:
            continue
        arrow = {"handler": "-.->", "failure": "-.->"}.get(e.kind, "-->")
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        lines.append(f"  {ids[e.source]} {arrow}{label} {ids[e.target]}")
    lines += [
        "  classDef start stroke-width:3px",
        "  classDef terminal fill:#e8f0fe,stroke:#1a56db",
        "  classDef unreachable fill:#fff4f4,stroke:#c0392b,stroke-dasharray:5 5",
        "  classDef pseudo fill:#f4f4f4,stroke:#888,stroke-dasharray:3 3",
    ]
    for cls, members in (
        ("start", [n for n in graph.nodes.values() if n.start]),
        ("terminal", [n for n in graph.nodes.values() if n.terminal and not n.pseudo]),
        ("unreachable", [n for n in graph.nodes.values() if n.unreachable]),
        ("pseudo", [n for n in graph.nodes.values() if n.pseudo]),
    ):
        if members:
            lines.append(f"  class {','.join(ids[n.id] for n in members)} {cls}")
    if graph.legend:
        items = "<br/>".join(_mermaid_text(item) for item in graph.legend)
        lines.append(f'  legend["handlers that stay in place:<br/>{items}"]')
        lines.append("  class legend pseudo")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Graphviz DOT
# ---------------------------------------------------------------------------------------------

_DOT_SHAPES = {
    "say": "box",
    "ask": "diamond",
    "collect": "parallelogram",
    "call": "component",
    "llm": "hexagon",
    "transfer": "cds",
    "end": "doublecircle",
    "any": "note",
    "hangup": "doublecircle",
}


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: FlowGraph) -> str:
    ids = _ids(graph)
    lines = [
        f"digraph {_dot_str(graph.name)} {{",
        "  rankdir=TB;",
        '  node [fontname="Helvetica", fontsize=11, style=filled, fillcolor=white];',
        '  edge [fontname="Helvetica", fontsize=9];',
        '  start_marker [label="start", shape=circle, fillcolor=black, fontcolor=white];',
    ]
    for node in graph.nodes.values():
        label = node.title
        if node.detail and not node.pseudo:
            label += "\n" + node.detail
        attrs = [f"label={_dot_str(label)}", f"shape={_DOT_SHAPES[node.kind]}"]
        if node.start:
            attrs.append("penwidth=3")
        if node.terminal and not node.pseudo:
            attrs.append('fillcolor="#e8f0fe"')
        if node.unreachable:
            attrs += ['style="filled,dashed"', 'color="#c0392b"', 'fillcolor="#fff4f4"',
                      'xlabel="unreachable"']
        if node.pseudo:
            attrs += ['style="filled,dashed"', 'fillcolor="#f4f4f4"']
        lines.append(f"  {ids[node.id]} [{', '.join(attrs)}];")
    lines.append(f"  start_marker -> {ids[graph.start]};")
    for e in graph.edges:
        if e.target not in ids:
            continue
        attrs = []
        if e.label:
            attrs.append(f"label={_dot_str(e.label)}")
        if e.kind == "handler":
            attrs.append("style=dashed")
        if e.kind == "failure":
            attrs += ["style=dashed", 'color="#c0392b"']
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {ids[e.source]} -> {ids[e.target]}{suffix};")
    if graph.legend:
        text = "handlers that stay in place:\\l" + "".join(
            _dot_str(item)[1:-1] + "\\l" for item in graph.legend
        )
        lines.append(f'  legend [shape=note, fillcolor="#f4f4f4", label="{text}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# SVG: our own layered layout (flowagent/web/svg.py), no Graphviz, no JavaScript library
# ---------------------------------------------------------------------------------------------


def to_svg(graph: FlowGraph, *, element_id: str = "flow-graph") -> str:
    """An accessible inline SVG: each state is a focusable group with `data-state`."""
    from flowagent.web.svg import render_svg

    return render_svg(graph, element_id=element_id)


# ---------------------------------------------------------------------------------------------
# Self-contained HTML
# ---------------------------------------------------------------------------------------------

GRAPH_CSS = """
.flow-graph { max-width: 100%; height: auto; }
.flow-graph .node:focus { outline: none; }
.flow-graph .node:focus .shape, .flow-graph .node:hover .shape { stroke: #1a56db; stroke-width: 3; }
.flow-graph .node.current .shape { fill: #fde68a; stroke: #b45309; stroke-width: 4; }
.flow-graph .node.visited .shape { fill: #fef9c3; }
"""


def legend_html(graph: FlowGraph) -> str:
    items = "".join(f"<li>{html.escape(item)}</li>" for item in graph.legend)
    unreachable = graph.unreachable
    out = (
        '<ul class="graph-key"><li>solid arrow: the next step, labelled with its condition</li>'
        "<li>grey panel at the top: global handlers, which apply in every state</li>"
        "<li>dashed grey arrow: a handler of that one state</li>"
        "<li>dashed red arrow: what happens when a tool call fails</li>"
        "<li>thick border: the start state; red dashed border: unreachable</li></ul>"
    )
    if items:
        out += f"<h3>Handlers that stay in place</h3><ul>{items}</ul>"
    if unreachable:
        names = ", ".join(html.escape(n) for n in unreachable)
        out += (
            f'<p class="warning" role="alert">Unreachable states (no path from the start): '
            f"{names}</p>"
        )
    return out


def text_html(graph: FlowGraph) -> str:
    """The diagram as a list, for screen readers and for searching the page with Ctrl+F."""
    by_source: dict[str, list[Edge]] = {}
    for e in graph.edges:
        by_source.setdefault(e.source, []).append(e)
    items = []
    for node in graph.nodes.values():
        if node.id == HANGUP:
            continue
        notes = []
        if node.start:
            notes.append("start")
        if node.terminal:
            notes.append("ends here")
        if node.unreachable:
            notes.append("UNREACHABLE")
        head = f"<strong>{html.escape(node.title)}</strong>"
        if node.kind not in ("any",):
            head += f" ({node.kind}{', ' + ', '.join(notes) if notes else ''})"
        if node.detail and not node.pseudo:
            head += f": {html.escape(node.detail)}"
        moves = "".join(
            f"<li>{html.escape(e.label or 'then')} → {html.escape(graph.nodes[e.target].title)}"
            "</li>"
            for e in by_source.get(node.id, [])
            if e.target in graph.nodes
        )
        items.append(f"<li>{head}{f'<ul>{moves}</ul>' if moves else ''}</li>")
    tools: dict[str, list[str]] = {}
    for node in graph.states:
        for tool in node.tools:
            tools.setdefault(tool, []).append(node.id)
    tool_items = "".join(
        f"<li>{html.escape(t)}: used in {html.escape(', '.join(where))}</li>"
        for t, where in tools.items()
    )
    out = f'<ol class="graph-text">{"".join(items)}</ol>'
    if tool_items:
        out += f"<h3>Tools called</h3><ul>{tool_items}</ul>"
    return out


def to_html(graph: FlowGraph) -> str:
    """One HTML file with the SVG inline: opens in a browser with no network at all."""
    name = html.escape(graph.name)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} — flow diagram</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; color: #111; }}
h1 {{ font-size: 1.4rem; }}
.scroll {{ overflow: auto; border: 1px solid #ddd; border-radius: 6px; }}
.warning {{ color: #9b1c1c; font-weight: bold; }}
{GRAPH_CSS}
</style>
</head>
<body>
<main>
<h1>{name}</h1>
<p>Start: <strong>{html.escape(graph.start)}</strong> · {len(graph.states)} states ·
{sum(1 for e in graph.edges if e.source != ANY)} transitions</p>
<div class="scroll">{to_svg(graph)}</div>
<section aria-labelledby="key"><h2 id="key">Key</h2>{legend_html(graph)}</section>
<section aria-labelledby="as-text"><h2 id="as-text">The flow as a list</h2>{text_html(graph)}
</section>
</main>
</body>
</html>
"""


RENDERERS = {"mermaid": to_mermaid, "dot": to_dot, "html": to_html, "svg": to_svg}


# ---------------------------------------------------------------------------------------------
# A flow file -> graph + validation status (used by `flowagent graph` and the web UI)
# ---------------------------------------------------------------------------------------------

#: findings the diagram itself shows, so they do not stop it being drawn
DRAWABLE_CODES = frozenset({"unreachable-state", "no-way-forward", "no-exit-loop"})


@dataclass
class FlowStatus:
    """What the web page and the CLI need to know about one flow file."""

    path: str
    graph: FlowGraph | None = None
    #: "file:line:column: sentence" for each finding, split by severity
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: errors that stop the diagram (everything but DRAWABLE_CODES)
    blocking: list[str] = field(default_factory=list)
    #: False when the team validator was not importable (only drawing checks were made)
    validated: bool = False

    @property
    def name(self) -> str:
        return self.graph.name if self.graph else self.path

    @property
    def status(self) -> str:
        if self.blocking or self.graph is None:
            return "invalid"
        if self.errors:
            return "errors"
        if self.warnings:
            return "warnings"
        return "valid"


def _finding_line(path: str, finding: Any) -> tuple[str, str, str]:
    """(severity, code, text) from a validator finding, read by attribute or key."""

    def get(name: str, default: Any = "") -> Any:
        if isinstance(finding, dict):
            return finding.get(name, default)
        return getattr(finding, name, default)

    where = f"{get('file') or path}:{get('line', 1)}:{get('column', 1)}"
    text = f"{where}: {get('message')}"
    if get("suggestion"):
        text += f" ({get('suggestion')})"
    return str(get("severity", "error")), str(get("code")), text


def inspect_flow(path: str | Any) -> FlowStatus:
    """Load, validate (when the validator is present) and draw one flow file. Never raises for a
    bad file: the reason lands in `blocking` as one sentence with file:line:column."""
    from flowagent.runner.loader import FlowYamlError, load_file

    status = FlowStatus(str(path))
    try:
        loaded = load_file(path)
    except FlowYamlError as exc:
        status.blocking.append(f"{path}:{exc.line}:{exc.column}: {exc.message}")
        return status
    except OSError as exc:
        status.blocking.append(f"{path}:1:1: The file cannot be read ({exc.strerror or exc}).")
        return status
    try:
        from flowagent.runner.validate import validate_file
    except ImportError:
        validate_file = None
    if validate_file is not None:
        status.validated = True
        report = validate_file(path)
        findings = getattr(report, "findings", report if isinstance(report, list) else [])
        for finding in findings:
            severity, code, text = _finding_line(str(path), finding)
            if severity == "error":
                status.errors.append(text)
                if code not in DRAWABLE_CODES:
                    status.blocking.append(text)
            else:
                status.warnings.append(text)
    try:
        status.graph = build_graph(loaded.data)
    except GraphError as exc:
        status.blocking.append(f"{path}:1:1: {exc}")
        return status
    if not status.validated:
        for name in status.graph.unreachable:
            mark = loaded.positions.of(("states", name))
            status.errors.append(
                f"{path}:{mark.line}:{mark.column}: No transition leads to the state "
                f"`{name}`, so a call can never reach it."
            )
    return status
