"""A flow as a picture: flow data -> graph model -> Mermaid, Graphviz DOT, SVG or HTML.

Flow authors are not developers; they understand a diagram of their flow faster than its YAML.
The model is built from the *loaded* flow data (plain dicts, see docs/flow-format.md), not from the
compiled flow, so it can draw a flow the engine would refuse (unreachable states are exactly what an
author needs to see). Everything here is pure and deterministic: the same flow always gives the same
text, which is what lets the example flows keep golden files.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: the pseudo node global handlers hang from ("in any state, if the caller says ...")
ANY = "__any__"
#: the pseudo node a `do: hangup` handler leads to
HANGUP = "__hangup__"

KINDS = ("say", "ask", "collect", "call", "llm", "transfer", "end", "subflow", "return")


@dataclass
class Node:
    """One state of the flow (or a pseudo node: `ANY`, `HANGUP`)."""

    id: str
    kind: str  # say | ask | collect | call | llm | transfer | end | subflow | return | any |
    #            hangup
    detail: str = ""  # one short line: what the state does ("asks: ...", "calls get_quote")
    #: format 2: what the state works out or forgets on arrival ("sets total · clears day")
    changes: str = ""
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
    kind: str  # next | branch | otherwise | success | failure | handler | repeat
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


def shorten(text: Any, limit: int = 48) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def _kind(state: dict[str, Any]) -> str:
    for key in ("ask", "collect", "call", "llm", "transfer", "subflow"):
        if key in state:
            return key
    if state.get("end"):
        return "end"
    if "return" in state:
        return "return"
    return "say"


def _changes(state: dict[str, Any]) -> str:
    """`set:` and `clear:` in a few words: "sets vars.total · clears slots.day"."""
    parts = []
    sets = state.get("set")
    if isinstance(sets, dict) and sets:
        parts.append("sets " + ", ".join(str(k) for k in sets))
    clears = state.get("clear")
    if isinstance(clears, list) and clears:
        parts.append("clears " + ", ".join(str(c) for c in clears))
    return shorten(" · ".join(parts), 60) if parts else ""


def _detail(kind: str, state: dict[str, Any]) -> tuple[str, list[str]]:
    tools: list[str] = []
    if kind == "ask":
        return f"asks: {shorten(state['ask'])}", tools
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
        return f"transfers to {shorten(state['transfer'], 30)}", tools
    if kind == "end":
        outcome = state.get("outcome")
        return "ends the call" + (f" ({outcome})" if outcome else ""), tools
    if kind == "subflow":
        given = state.get("with")
        names = f" with {', '.join(map(str, given))}" if isinstance(given, dict) and given else ""
        return shorten(f"runs sub-flow {state['subflow']}{names}", 60), tools
    if kind == "return":
        values = state.get("return")
        names = ", ".join(map(str, values)) if isinstance(values, dict) and values else ""
        return "returns" + (f" {names}" if names else " to the calling flow"), tools
    return (f"says: {shorten(state['say'])}" if state.get("say") else ""), tools


def _branch_label(branch: dict[str, Any]) -> tuple[str, str]:
    parts = []
    if "intent" in branch:
        intent = branch["intent"]
        if isinstance(intent, bool):  # YAML 1.1 reads a bare `yes`/`no` as a boolean
            intent = "yes" if intent else "no"
        parts.append(f"intent: {intent}")
    if "when" in branch:
        parts.append(f"when: {shorten(branch['when'], 40)}")
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
    raw_tools, raw_handlers = data.get("tools"), data.get("handlers")
    tools: dict[str, Any] = raw_tools if isinstance(raw_tools, dict) else {}
    handlers: list[Any] = raw_handlers if isinstance(raw_handlers, list) else []

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
            terminal=kind in ("transfer", "end", "return"),
            tools=called,
            outcome=str(state.get("outcome") or ""),
            changes=_changes(state),
        )
        repeat = state.get("repeat")
        if kind == "collect" and isinstance(repeat, dict):
            ask = shorten(repeat.get("ask", "again?"), 30)
            to = str(repeat.get("to", "")).removeprefix("vars.")
            nodes[name].detail = shorten(f"{detail} · adds to {to}", 60)
            edges.append(Edge(name, name, "repeat", f"repeat: {ask} yes"))
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
            raw_tool = tools.get(state["call"])
            tool: dict[str, Any] = raw_tool if isinstance(raw_tool, dict) else {}
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
