"""Loops that can spin: states that can go round without listening to the caller, calling a
tool or changing anything (`loop-without-change`, a warning).

`no-exit-loop` (checks/graph.py) finds loops the call can never leave. This check finds the
other trap: a loop that *has* an exit, but whose conditions read only data nothing in the loop
changes — so if the exit does not hold the first time round, it never will, and the caller hears
the same lines until the engine's loop guard stops it. A round is safe when one of its states
listens (`ask`, `llm`, or a `collect` whose slots something in the round clears, or that
`repeat`s), calls a tool or a sub-flow (their answers can differ), or changes something (`set`,
`clear`).
"""

from __future__ import annotations

from typing import Any

from flowagent.flow.checks.context import CheckContext
from flowagent.flow.checks.graph import _cycles, _state_edges

_CHANGES = frozenset({"ask", "llm", "call", "subflow", "set", "clear", "repeat"})


def check_loops(ctx: CheckContext) -> None:
    # Only states that change nothing can make such a loop, so the cycles are looked for among
    # them alone (a round through any other state is safe): linear, and small on big flows.
    bodies = {n: s for n, s in ctx.mapping("states").items()
              if isinstance(s, dict) and _CHANGES.isdisjoint(s) and not _calls_in_handler(s)}
    if not bodies:
        return
    edges = {n: [t for t in _state_edges(ctx, st) if t in bodies] for n, st in bodies.items()}
    for comp in _cycles(list(bodies), edges):
        if _changes(comp, bodies):
            continue
        first = comp[0]
        names = ", ".join(f"`{n}`" for n in comp)
        collects = [n for n in comp if "collect" in bodies[n]]
        why = (f" (`{collects[0]}` asks nothing the second time round: its slots are still "
               "filled)" if collects else "")
        ctx.warn("loop-without-change", ("states", first),
                 (f"State {names} leads back to itself" if len(comp) == 1 else
                  f"States {names} can go round in a loop") +
                 " without listening to the caller or changing anything" + why +
                 ", so if the way out does not hold the first time, it never will.",
                 "Ask something in the loop, count the rounds with `set:` and leave with a "
                 "`when:`, or `clear:` the slots the `collect` state should ask again.",
                 key=True)


def _calls_in_handler(st: dict[str, Any]) -> bool:
    handlers = st.get("handlers")
    return isinstance(handlers, list) and any(isinstance(h, dict) and h.get("call")
                                              for h in handlers)


def _changes(comp: list[str], bodies: dict[str, dict[str, Any]]) -> bool:
    cleared: set[str] = set()
    for n in comp:
        for item in bodies[n].get("clear") or []:
            if isinstance(item, str) and item.startswith("slots."):
                cleared.add(item.removeprefix("slots."))
    for n in comp:
        st = bodies[n]
        if any(k in st for k in _CHANGES):
            return True
        collect = st.get("collect")
        if isinstance(collect, list) and any(s in cleared for s in collect):
            return True
        if isinstance(st.get("handlers"), list) and any(
                isinstance(h, dict) and h.get("call") for h in st["handlers"]):
            return True
    return False
