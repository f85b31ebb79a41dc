"""The shape of the conversation: every state reachable, every state with a way forward, and no
loop the caller can never leave.

Edges: `next` (and branch `go`s), `on_failure` (the state's, else the called tool's), and per-
state handler `go`s. Caller-triggered handlers (intent or keypad) also lead out of every state
that listens (ask, collect, llm): a caller stuck in a menu can still say "human". Event handlers
(no_input, no_match...) are failure paths, not designed exits, so they do not count for loops —
but their targets are reachable.
"""

from __future__ import annotations

from typing import Any

from flowagent.flow.checks.context import LISTENING_ACTIONS, CheckContext, did_you_mean
from flowagent.flow.checks.structure import load_schema

_EXIT = "\x00exit"  # pseudo-state: the call ends (hangup handler)


def _state_edges(ctx: CheckContext, state: dict[str, Any]) -> list[str]:
    out: list[str] = []
    nxt = state.get("next")
    if isinstance(nxt, str):
        out.append(nxt)
    elif isinstance(nxt, list):
        out.extend(b["go"] for b in nxt if isinstance(b, dict) and isinstance(b.get("go"), str))
    failure = state.get("on_failure")
    called = [state.get("call")]
    llm = state.get("llm")
    if isinstance(llm, dict) and isinstance(llm.get("tools"), list):
        called.extend(llm["tools"])
    if isinstance(failure, str):
        out.append(failure)
    for tool_name in called:
        tool = ctx.mapping("tools").get(tool_name) if isinstance(tool_name, str) else None
        if isinstance(tool, dict) and isinstance(tool.get("on_failure"), str) and not (
                isinstance(failure, str) and tool_name == state.get("call")):
            out.append(tool["on_failure"])
    return out


def _handler_targets(handlers: Any, *, caller_only: bool) -> list[str]:
    out: list[str] = []
    for h in handlers if isinstance(handlers, list) else []:
        if not isinstance(h, dict):
            continue
        if caller_only and "intent" not in h and "dtmf" not in h:
            continue
        if isinstance(h.get("go"), str):
            out.append(h["go"])
        elif h.get("do") == "hangup":
            out.append(_EXIT)
        elif h.get("do") == "restart":
            out.append("\x00start")
    return out


def check_graph(ctx: CheckContext) -> None:
    states = ctx.mapping("states")
    if not states:
        return
    bodies = {n: s for n, s in states.items() if isinstance(s, dict)}
    start = ctx.data.get("start") if isinstance(ctx.data.get("start"), str) else None
    global_handlers = ctx.data.get("handlers")

    # --- no way forward -----------------------------------------------------------------------
    broken: set[str] = set(n for n in states if n not in bodies)  # structure already reported
    names = list(states)
    state_keys = set(load_schema()["$defs"]["state"]["properties"])
    for pos, (name, st) in enumerate(states.items()):
        if not isinstance(st, dict) or "transfer" in st or "end" in st or "return" in st:
            continue
        typo = any(did_you_mean(k, state_keys) == "next" for k in st if k not in state_keys)
        after = names[pos + 1] if pos + 1 < len(names) else None
        dedented = after is not None and after in state_keys and not isinstance(states[after],
                                                                                   dict)
        if typo or dedented:
            broken.add(name)  # already reported as unknown-key / bad-indent
            continue
        if "next" not in st or st.get("next") in (None, [], ""):
            broken.add(name)
            ctx.error("no-way-forward", ("states", name),
                      f"State `{name}` has nowhere to go after it finishes.",
                      "Add `next:` with the state to go to, or `end: true` to hang up.", key=True)

    # --- edges --------------------------------------------------------------------------------
    edges: dict[str, list[str]] = {}
    for name, st in bodies.items():
        out = _state_edges(ctx, st)
        out += _handler_targets(st.get("handlers"), caller_only=False)
        edges[name] = out
        if any(t not in states and t != _EXIT and not t.startswith("\x00") for t in out):
            broken.add(name)  # unknown target: already an unknown-state error
        nxt = st.get("next")
        if "next" in st and not isinstance(nxt, str | list):
            broken.add(name)  # wrong type: already a structure error
        if isinstance(nxt, list) and any(not isinstance(b, dict) or not isinstance(b.get("go"), str)
                                         for b in nxt):
            broken.add(name)  # a branch without `go`: already a structure error

    # --- reachability -------------------------------------------------------------------------
    roots = [start] if start in states else []
    roots += [t for t in _handler_targets(global_handlers, caller_only=False) if t in states]
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        s = todo.pop()
        if s in seen or s not in states:
            continue
        seen.add(s)
        todo.extend(t.replace("\x00start", start or "") for t in edges.get(s, []))
    # With a broken reference the reachable set is unknown: say nothing rather than cascade.
    all_known = not broken and all(t in states or t.startswith("\x00") for t in
                                   _handler_targets(global_handlers, caller_only=False))
    if start in states and all_known:
        for name in bodies:
            if name not in seen:
                ctx.error("unreachable-state", ("states", name),
                          f"State `{name}` can never be reached: no `start`, `next`, `go` or "
                          "`on_failure` leads to it.",
                          f"Add `go: {name}` where the call should go there, or remove the state.",
                          key=True)

    # --- loops with no exit -------------------------------------------------------------------
    exits = {n for n, st in bodies.items()
             if st.get("transfer") is not None or st.get("end") or "return" in st}
    exits |= broken
    listen_edges: dict[str, list[str]] = {}
    for name, st in bodies.items():
        out = list(edges[name])
        if any(k in st for k in LISTENING_ACTIONS):
            overridden = {(k, h.get(k)) for h in (st.get("handlers") or [])
                          if isinstance(h, dict) for k in ("intent", "dtmf") if k in h} \
                if isinstance(st.get("handlers"), list) else set()
            inherited = [h for h in (global_handlers if isinstance(global_handlers, list) else [])
                         if isinstance(h, dict)
                         and not any((k, h.get(k)) in overridden for k in ("intent", "dtmf"))]
            out += _handler_targets(inherited, caller_only=True)
            out += _handler_targets(st.get("handlers"), caller_only=True)
        listen_edges[name] = [start if t == "\x00start" and start else t for t in out]

    can_exit = _can_reach_exit(exits, listen_edges)

    stuck = [n for n in bodies if n in seen and n not in can_exit]
    for comp in _cycles(stuck, listen_edges):
        first = comp[0]
        listed = ", ".join(f"`{n}`" for n in comp)
        ctx.error("no-exit-loop", ("states", first),
                  (f"State {listed} only ever leads back to itself, so the call never reaches "
                   "an `end` or `transfer` state." if len(comp) == 1 else
                   f"States {listed} send the call round in a loop that never reaches an `end` "
                   "or `transfer` state."),
                  ("Give it" if len(comp) == 1 else "Give one of them") +
                  " a branch (or a `human` handler) that leads to an end or transfer state.",
                  key=True)


def _can_reach_exit(exits: set[str], edges: dict[str, list[str]]) -> set[str]:
    """Every state from which some path reaches an exit (or hangs up): one backward
    breadth-first walk over the reversed edges, so the time is linear in states + edges (a
    fixpoint over all states re-scanned a chain once per state: 4,000 states took 2.5 s)."""
    incoming: dict[str, list[str]] = {}
    todo: list[str] = list(exits)
    for name, out in edges.items():
        for target in out:
            if target == _EXIT:
                todo.append(name)
            else:
                incoming.setdefault(target, []).append(name)
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo.extend(p for p in incoming.get(name, ()) if p not in reached)
    return reached


def _cycles(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of `nodes` that contain a cycle, in file order."""
    order = {n: i for i, n in enumerate(nodes)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    # successors inside `nodes`, computed once (not on every visit of a node)
    succs = {n: [w for w in edges.get(n, []) if w in order] for n in nodes}
    for root in nodes:
        if root in index:
            continue
        # iterative Tarjan (a 500-state flow must not hit the recursion limit)
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on.add(v)
            succ = succs[v]
            if i < len(succ):
                work.append((v, i + 1))
                w = succ[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in edges.get(v, []):
                    out.append(sorted(comp, key=order.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    out.sort(key=lambda c: order[c[0]])
    return out
