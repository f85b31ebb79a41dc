"""Draw a `FlowGraph` as SVG with our own small layered layout (no Graphviz, no JS library).

Why our own: the diagram must open offline from a single file and be served by the web page
without shipping a large JavaScript library; flows are small (tens of states), so a compact
version of the classic layered method is enough:

1. Break cycles: edges that go back to a state already on the DFS path from the start ("loops",
   e.g. `opening_hours -> how_can_we_help`) are set aside and drawn on the right-hand side.
2. Layers by longest path, so the end of the call sits at the bottom and every forward arrow
   points down.
3. Arrows that skip layers get invisible waypoints in each layer they cross, so they run between
   states instead of through them.
4. A few up-and-down barycentre sweeps order each layer to reduce crossings.

Global handlers are not drawn as arrows from everywhere (that is the clutter that makes such
diagrams unreadable): they are listed in an "In any state" panel at the top.
"""

from __future__ import annotations

import html
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

from flowagent.graph.model import ANY, HANGUP, Edge, FlowGraph, Node

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 200, 58, 36, 64, 24
WAYPOINT_W = 14  # width a passing arrow takes in a layer
LINE_H = 16  # handler panel line height

_FILL = {
    "say": "#ffffff",
    "ask": "#fff8e1",
    "collect": "#eef7ee",
    "call": "#f3ecfb",
    "llm": "#e9f5fb",
    "transfer": "#e8f0fe",
    "end": "#e8f0fe",
    "subflow": "#fdf0e6",
    "return": "#e8f0fe",
    "any": "#f4f4f4",
    "hangup": "#f4f4f4",
}


@dataclass
class Layout:
    pos: dict[str, tuple[float, float]]  # state -> top-left corner
    #: forward edge index -> waypoints (x centre, y top) in the layers it crosses
    waypoints: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    layer_of: dict[str, int] = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0
    panel_h: float = 0.0
    #: right-most x used by each layer (back edges are routed beyond it)
    row_right: dict[int, float] = field(default_factory=dict)
    #: indexes (into `_drawn_edges`) of edges drawn as loops on the right
    back: set[int] = field(default_factory=set)


def _drawn_edges(graph: FlowGraph) -> list[Edge]:
    """Edges drawn as arrows: everything except the global handlers (shown in the panel)."""
    return [
        e for e in graph.edges
        if e.source != ANY and e.source in graph.nodes and e.target in graph.nodes
        and e.target != HANGUP
    ]


def _back_edges(graph: FlowGraph, edges: list[Edge]) -> set[int]:
    """Indexes of edges that close a loop (target on the DFS stack), DFS from the start first."""
    succ: dict[str, list[tuple[int, str]]] = {}
    for i, e in enumerate(edges):
        succ.setdefault(e.source, []).append((i, e.target))
    state: dict[str, int] = {}  # 1 on stack, 2 done
    back: set[int] = set()
    roots = [graph.start] + [n.id for n in graph.states if n.id != graph.start]
    for root in roots:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, k = stack[-1]
            out = succ.get(node, [])
            if k < len(out):
                stack[-1] = (node, k + 1)
                i, t = out[k]
                if t == node or state.get(t) == 1:
                    back.add(i)
                elif t not in state:
                    state[t] = 1
                    stack.append((t, 0))
            else:
                state[node] = 2
                stack.pop()
    return back


def _layers(graph: FlowGraph, edges: list[Edge], back: set[int]) -> dict[str, int]:
    """Longest-path layers over the loop-free edges; states nothing leads to (other than the
    start) go below the main flow, unreachable ones last."""
    ids = [n.id for n in graph.states]
    preds: dict[str, list[str]] = {n: [] for n in ids}
    succ: dict[str, list[str]] = {n: [] for n in ids}
    for i, e in enumerate(edges):
        if i not in back and e.source != e.target:
            preds[e.target].append(e.source)
            succ[e.source].append(e.target)
    indeg = {n: len(preds[n]) for n in ids}
    queue = deque(n for n in ids if indeg[n] == 0)
    order: list[str] = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for t in succ[n]:
            indeg[t] -= 1
            if indeg[t] == 0:
                queue.append(t)
    order += [n for n in ids if n not in order]  # defensive: cycles were all broken
    layer: dict[str, int] = {}
    # the main flow: what the start leads to
    main = {graph.start}
    frontier = [graph.start]
    while frontier:
        n = frontier.pop()
        for t in succ[n]:
            if t not in main:
                main.add(t)
                frontier.append(t)
    for n in order:
        if n in main:
            layer[n] = max((layer[p] + 1 for p in preds[n] if p in layer and p in main),
                           default=0)
    deepest = max(layer.values(), default=0)
    for n in order:
        if n not in main:
            base = deepest + (2 if graph.nodes[n].unreachable else 1)
            layer[n] = max([base] + [layer[p] + 1 for p in preds[n] if p in layer])
    return layer


def layout(graph: FlowGraph) -> Layout:
    edges = _drawn_edges(graph)
    back = _back_edges(graph, edges)
    layer = _layers(graph, edges, back)
    n_layers = max(layer.values(), default=0) + 1
    rows: list[list[str]] = [[] for _ in range(n_layers)]
    for n in (n.id for n in graph.states):
        rows[layer[n]].append(n)
    # waypoints for arrows that skip layers, named "~<edge>:<layer>"; a loop back up is laid out
    # as if it pointed down (from its target to its source) and drawn upwards
    chains: dict[int, list[str]] = {}
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    for i, e in enumerate(edges):
        if e.source == e.target:
            continue
        upper, lower = (e.target, e.source) if i in back else (e.source, e.target)
        a, b = layer[upper], layer[lower]
        if b <= a:  # same layer: only possible between states off the main flow
            upper, lower = lower, upper
            a, b = b, a
        if a == b:
            continue
        chain = [upper] + [f"~{i}:{k}" for k in range(a + 1, b)] + [lower]
        for k in range(a + 1, b):
            rows[k].append(f"~{i}:{k}")
        chains[i] = chain[1:-1]
        for s, t in pairwise(chain):
            down.setdefault(s, []).append(t)
            up.setdefault(t, []).append(s)
    # order each layer: barycentre sweeps, down then up
    index = {n: i for row in rows for i, n in enumerate(row)}
    for sweep in range(4):
        rng = range(1, n_layers) if sweep % 2 == 0 else range(n_layers - 2, -1, -1)
        neighbours = up if sweep % 2 == 0 else down
        for k in rng:
            def key(n: str, neighbours: dict[str, list[str]] = neighbours) -> float:
                ns = neighbours.get(n, [])
                return sum(index[m] for m in ns) / len(ns) if ns else index[n]

            rows[k].sort(key=key)
            for i, n in enumerate(rows[k]):
                index[n] = i

    def width_of(n: str) -> float:
        return WAYPOINT_W if n.startswith("~") else NODE_W

    # x: start centred, then pull each node towards its neighbours (straightens long arrows),
    # keeping the order and the minimum gap inside each layer
    row_w = [sum(width_of(n) for n in row) + GAP_X * max(0, len(row) - 1) for row in rows]
    full_w = max([*row_w, 2 * NODE_W + GAP_X])
    cx: dict[str, float] = {}
    for k, row in enumerate(rows):
        x = (full_w - row_w[k]) / 2
        for n in row:
            cx[n] = x + width_of(n) / 2
            x += width_of(n) + GAP_X
    for sweep in range(8):
        rng = range(n_layers) if sweep % 2 == 0 else range(n_layers - 1, -1, -1)
        for k in rng:
            row = rows[k]
            want = []
            for n in row:
                ns = up.get(n, []) + down.get(n, [])
                want.append(sum(cx[m] for m in ns) / len(ns) if ns else cx[n])
            for i in range(len(row)):  # left to right: keep the gap
                if i:
                    least = want[i - 1] + (width_of(row[i - 1]) + width_of(row[i])) / 2 + GAP_X
                    want[i] = max(want[i], least)
            for i in range(len(row) - 2, -1, -1):  # right to left: pull back what was pushed
                most = want[i + 1] - (width_of(row[i + 1]) + width_of(row[i])) / 2 - GAP_X
                want[i] = min(want[i], most)
            for n, x in zip(row, want, strict=True):
                cx[n] = x
    left = min(cx[n] - width_of(n) / 2 for row in rows for n in row)
    for n in cx:
        cx[n] += MARGIN - left
    full_w = max(cx[n] + width_of(n) / 2 for row in rows for n in row) - MARGIN
    full_w = max(full_w, 2 * NODE_W + GAP_X)
    panel_lines = _panel_lines(graph)
    panel_h = (24 + LINE_H * len(panel_lines) + GAP_Y / 2) if panel_lines else 0.0
    top = MARGIN + panel_h
    lay = Layout(pos={}, layer_of=layer, panel_h=panel_h)
    centres: dict[str, tuple[float, float]] = {}
    for k, row in enumerate(rows):
        y = top + k * (NODE_H + GAP_Y)
        for n in row:
            if n.startswith("~"):
                centres[n] = (cx[n], y)
            else:
                lay.pos[n] = (cx[n] - NODE_W / 2, y)
        lay.row_right[k] = max((cx[n] + width_of(n) / 2 for n in row), default=MARGIN)
    for i, chain in chains.items():
        lay.waypoints[i] = [centres[n] for n in chain]
    lay.width = MARGIN * 2 + full_w + 150  # room on the right for loops
    lay.height = top + n_layers * (NODE_H + GAP_Y) - GAP_Y + MARGIN
    lay.back = back
    return lay


def _panel_lines(graph: FlowGraph) -> list[tuple[str, str, str]]:
    """(trigger, target state or "", text) for each global handler."""
    lines = []
    for e in graph.edges:
        if e.source == ANY:
            target = graph.nodes[e.target].title if e.target in graph.nodes else e.target
            lines.append((e.label, e.target, f"{e.label} → {target}"))
    for item in graph.legend:
        if "(in any state)" in item:
            lines.append((item, "", item.replace(" (in any state)", "")))
    return lines


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------


def _wrap(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _node_shape(node: Node, x: float, y: float) -> str:
    w, h = NODE_W, NODE_H
    fill = _FILL[node.kind]
    cls = f"node kind-{node.kind}"
    if node.start:
        cls += " start"
    if node.terminal:
        cls += " terminal"
    if node.unreachable:
        cls += " unreachable"
        fill = "#fff4f4"
    stroke = "#c0392b" if node.unreachable else "#444"
    dash = ' stroke-dasharray="6 4"' if node.unreachable else ""
    width = 3 if node.start else 1.4
    common = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash} class="shape"'
    if node.kind == "end":
        shape = f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{h / 2}" {common}/>'
    elif node.kind == "ask":
        pts = (f"{x + 12},{y} {x + w - 12},{y} {x + w},{y + h / 2} {x + w - 12},{y + h} "
               f"{x + 12},{y + h} {x},{y + h / 2}")
        shape = f'<polygon points="{pts}" {common}/>'
    elif node.kind == "collect":
        pts = f"{x + 10},{y} {x + w},{y} {x + w - 10},{y + h} {x},{y + h}"
        shape = f'<polygon points="{pts}" {common}/>'
    elif node.kind == "call":
        shape = (
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" {common}/>'
            f'<line x1="{x + 8}" y1="{y}" x2="{x + 8}" y2="{y + h}" stroke="{stroke}"/>'
            f'<line x1="{x + w - 8}" y1="{y}" x2="{x + w - 8}" y2="{y + h}" stroke="{stroke}"/>'
        )
    elif node.kind == "subflow":  # a folder: a tab on the top left
        shape = (
            f'<path d="M{x},{y + 8} h{w * 0.3} l6,-8 h{w * 0.7 - 6} v{h} h{-w} z" {common}/>'
        )
    elif node.kind == "return":
        pts = f"{x + 14},{y} {x + w},{y} {x + w},{y + h} {x + 14},{y + h} {x},{y + h / 2}"
        shape = f'<polygon points="{pts}" {common}/>'
    elif node.kind == "transfer":
        pts = f"{x},{y} {x + w - 14},{y} {x + w},{y + h / 2} {x + w - 14},{y + h} {x},{y + h}"
        shape = f'<polygon points="{pts}" {common}/>'
    else:
        rx = 14 if node.kind == "llm" else 6
        shape = f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" {common}/>'
    detail = node.detail
    if node.changes:
        detail = f"{detail} · {node.changes}" if detail else node.changes
    if node.unreachable:
        detail = "UNREACHABLE · " + detail
    label = f"{node.title} ({node.kind}){': ' + node.detail if node.detail else ''}"
    if node.changes:
        label += f"; {node.changes}"
    if node.start:
        label = "start: " + label
    if node.unreachable:
        label += " — unreachable"
    tooltip = html.escape(label)
    texts = (
        f'<text x="{x + w / 2}" y="{y + (22 if detail else h / 2 + 5)}" text-anchor="middle" '
        f'font-weight="bold">{html.escape(_wrap(node.title, 26))}</text>'
    )
    if detail:
        texts += (
            f'<text x="{x + w / 2}" y="{y + 42}" text-anchor="middle" font-size="11" '
            f'fill="#333">{html.escape(_wrap(detail))}</text>'
        )
    return (
        f'<g class="{cls}" data-state="{html.escape(node.id)}" tabindex="0" role="listitem" '
        f'aria-label="{tooltip}"><title>{tooltip}</title>{shape}{texts}</g>'
    )


def _forward_path(
    e: Edge, lay: Layout, waypoints: list[tuple[float, float]], at: float = 0.5
) -> tuple[str, tuple[float, float]]:
    """Smooth path through the waypoints; the label point is at `at` along the first part.
    Downward arrows leave the bottom centre and enter the top centre; loops back up leave the
    top and enter the bottom, off-centre to the right so they do not meet the forward arrows."""
    sx, sy = lay.pos[e.source]
    tx, ty = lay.pos[e.target]
    if lay.layer_of[e.source] < lay.layer_of[e.target]:
        points = [(sx + NODE_W / 2, sy + NODE_H)]
        for cx, top in waypoints:
            points += [(cx, top), (cx, top + NODE_H)]
        points.append((tx + NODE_W / 2, ty))
    else:
        points = [(sx + NODE_W * 0.8, sy)]
        for cx, top in reversed(waypoints):
            points += [(cx, top + NODE_H), (cx, top)]
        points.append((tx + NODE_W * 0.8, ty + NODE_H))
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for k in range(0, len(points) - 1, 2):  # bottom of one layer -> top of the next
        (x1, y1), (x2, y2) = points[k], points[k + 1]
        my = (y1 + y2) / 2
        d += f" C{x1:.1f},{my:.1f} {x2:.1f},{my:.1f} {x2:.1f},{y2:.1f}"
        if k + 2 < len(points):
            d += f" L{points[k + 2][0]:.1f},{points[k + 2][1]:.1f}"
    (x1, y1), (x2, y2) = points[0], points[1]
    my, t = (y1 + y2) / 2, at
    bx = (1 - t) ** 3 * x1 + 3 * (1 - t) ** 2 * t * x1 + 3 * (1 - t) * t**2 * x2 + t**3 * x2
    by = (1 - t) ** 3 * y1 + 3 * (1 - t) ** 2 * t * my + 3 * (1 - t) * t**2 * my + t**3 * y2
    return d, (bx, by)


def _loop_path(e: Edge, lay: Layout, slot: int) -> tuple[str, tuple[float, float]]:
    """A loop back up (or a self loop): out of the right side, round, into the right side."""
    sx, sy = lay.pos[e.source]
    tx, ty = lay.pos[e.target]
    x1, y1 = sx + NODE_W, sy + NODE_H / 2 + 8
    x2, y2 = tx + NODE_W, ty + NODE_H / 2 - 8
    if e.source == e.target:
        return (f"M{x1},{y1} C{x1 + 50},{y1 + 30} {x1 + 50},{y2 - 30} {x2},{y2}",
                (x1 + 44, sy + NODE_H / 2))
    lo, hi = sorted((lay.layer_of[e.target], lay.layer_of[e.source]))
    right = max(lay.row_right.get(k, 0.0) for k in range(lo, hi + 1))
    bulge = right + 26 + 14 * (slot % 6)
    d = (f"M{x1:.1f},{y1:.1f} C{bulge:.1f},{y1:.1f} {bulge:.1f},{y1:.1f} {bulge:.1f},"
         f"{(y1 + y2) / 2:.1f} S{bulge:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
    return d, (bulge, (y1 + y2) / 2)


def _panel(graph: FlowGraph, width: float) -> str:
    lines = _panel_lines(graph)
    if not lines:
        return ""
    x, y = MARGIN, MARGIN
    h = 24 + LINE_H * len(lines)
    rows = []
    for k, (_, target, text) in enumerate(lines):
        data = f' data-from="{ANY}" data-to="{html.escape(target)}"' if target else ""
        rows.append(
            f'<text class="handler" x="{x + 12}" y="{y + 38 + LINE_H * k}" font-size="12"'
            f"{data}>{html.escape(_wrap(text, 70))}</text>"
        )
    return (
        f'<g class="node kind-any" data-state="{ANY}" tabindex="0" role="listitem" '
        f'aria-label="In any state: {html.escape("; ".join(t for _, _, t in lines))}">'
        f'<rect x="{x}" y="{y}" width="{width:.0f}" height="{h + 6}" rx="8" fill="#f4f4f4" '
        f'stroke="#888" stroke-dasharray="4 3" class="shape"/>'
        f'<text x="{x + 12}" y="{y + 18}" font-weight="bold">In any state (global handlers)</text>'
        f"{''.join(rows)}</g>"
    )


def render_svg(graph: FlowGraph, *, element_id: str = "flow-graph") -> str:
    lay = layout(graph)
    edges = _drawn_edges(graph)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{html.escape(element_id)}" class="flow-graph"'
        f' viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" width="{lay.width:.0f}"'
        f' height="{lay.height:.0f}" role="group" font-family="system-ui, sans-serif"'
        f' font-size="13" aria-label="Diagram of the flow {html.escape(graph.name)}">',
        f"<title>Flow {html.escape(graph.name)}</title>",
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
        "</marker>"
        '<marker id="arrow-fail" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#c0392b"/></marker></defs>',
        '<g class="edges">',
    ]
    labels = []
    merged: dict[tuple[str, str, str], list[int]] = {}
    for i, e in enumerate(edges):
        merged.setdefault((e.source, e.target, e.kind), []).append(i)
    loops = 0
    labelled: dict[str, list[tuple[str, str, str]]] = {}  # source -> its labelled forward edges
    for key, group in merged.items():
        if key[0] != key[1] and lay.layer_of[key[0]] != lay.layer_of[key[1]] and any(
            edges[i].label for i in group
        ):
            labelled.setdefault(key[0], []).append(key)
    for (source, target, kind), group in merged.items():
        first = group[0]
        e = edges[first]
        if source == target or lay.layer_of[source] == lay.layer_of[target]:
            d, (lx, ly) = _loop_path(e, lay, loops)
            loops += 1
        else:
            siblings = labelled.get(source, [])
            at = 0.5
            if len(siblings) > 1 and (source, target, kind) in siblings:
                j = siblings.index((source, target, kind))
                at = 0.4 + 0.45 * j / (len(siblings) - 1)  # stagger labels of one fan
            d, (lx, ly) = _forward_path(e, lay, lay.waypoints.get(first, []), at)
        colour = {"failure": "#c0392b", "handler": "#777", "repeat": "#2e7d32"}.get(kind, "#555")
        dash = ' stroke-dasharray="5 4"' if kind in ("failure", "handler") else ""
        marker = "arrow-fail" if kind == "failure" else "arrow"
        texts = [edges[i].label for i in group if edges[i].label]
        parts.append(
            f'<path class="edge edge-{kind}" data-from="{html.escape(source)}" '
            f'data-to="{html.escape(target)}" d="{d}" fill="none" stroke="{colour}" '
            f'stroke-width="1.3"{dash} marker-end="url(#{marker})"><title>'
            f"{html.escape(source)} → {html.escape(target)}"
            f"{': ' + html.escape('; '.join(texts)) if texts else ''}</title></path>"
        )
        if texts:
            longest = max(min(len(t), 28) for t in texts)
            approx = 6.0 * longest
            top = ly - 9 - 6.5 * (len(texts) - 1)
            spans = "".join(
                f'<tspan x="{lx:.1f}" dy="{13 if k else 0}">{html.escape(_wrap(t, 28))}</tspan>'
                for k, t in enumerate(texts)
            )
            labels.append(
                f'<g class="edge-label"><rect x="{lx - approx / 2 - 3:.1f}" y="{top:.1f}" '
                f'width="{approx + 6:.1f}" height="{2 + 13 * len(texts):.0f}" rx="3" fill="#fff"'
                f' fill-opacity="0.9"/><text y="{top + 12:.1f}" text-anchor="middle" '
                f'font-size="10.5" fill="{colour}">{spans}</text></g>'
            )
    parts.append("</g>")
    parts.append('<g class="nodes" role="list">')
    parts.append(_panel(graph, lay.width - 2 * MARGIN))
    for node in graph.states:
        x, y = lay.pos[node.id]
        parts.append(_node_shape(node, x, y))
    parts.append("</g>")
    parts.append('<g class="labels">' + "".join(labels) + "</g>")
    parts.append("</svg>")
    return "".join(parts)
