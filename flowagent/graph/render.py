"""A flow's graph as text: Mermaid, Graphviz DOT, SVG (our own layout) and self-contained HTML.

Pure and deterministic: the same flow always gives the same text, which is what lets the example
flows keep golden files. The graph model is `flowagent.graph.model`.
"""

from __future__ import annotations

import html
import re

from flowagent.graph.model import ANY, HANGUP, Edge, FlowGraph, shorten
from flowagent.graph.svg import render_svg

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
    "subflow": ('[\\"', '"/]'),
    "return": ('[/"', '"\\]'),
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
    lines = ["flowchart TD", f"  %% {shorten(graph.name, 80)}", "  start_marker(((start)))"]
    for node in graph.nodes.values():
        left, right = _MERMAID_SHAPES[node.kind]
        text = _mermaid_text(node.title)
        if node.detail and not node.pseudo:
            text += f"<br/><small>{_mermaid_text(node.detail)}</small>"
        if node.changes:
            text += f"<br/><small>{_mermaid_text(node.changes)}</small>"
        if node.unreachable:
            text += "<br/><small>UNREACHABLE</small>"
        lines.append(f"  {ids[node.id]}{left}{text}{right}")
    lines.append(f"  start_marker --> {ids[graph.start]}")
    for e in graph.edges:
        if e.target not in ids:
            continue
        arrow = {"handler": "-.->", "failure": "-.->", "repeat": "==>"}.get(e.kind, "-->")
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
    "subflow": "folder",
    "return": "invhouse",
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
        if node.changes:
            label += "\n" + node.changes
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
        if e.kind == "repeat":
            attrs += ["style=bold", 'color="#2e7d32"']
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
# SVG: our own layered layout (flowagent/graph/svg.py), no Graphviz, no JavaScript library
# ---------------------------------------------------------------------------------------------


def to_svg(graph: FlowGraph, *, element_id: str = "flow-graph") -> str:
    """An accessible inline SVG: each state is a focusable group with `data-state`."""


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
        "<li>bold green loop: a `repeat` going round again (\"anything else?\")</li>"
        "<li>folder shape: a sub-flow from another file; second grey line: values set or "
        "cleared</li>"
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
