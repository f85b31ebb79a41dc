"""How long `flowagent graph` takes on a big flow, and how much the live view costs per call.

    /work/venv/bin/python bench/bench_graph.py [--states 500] [--calls 1000]

1. A generated flow of N states (a chain of ask states with intent branches, a collect, a tool
   call with on_failure, global handlers) -> graph model -> Mermaid, DOT, SVG/HTML; best of 5.
2. The live view's watcher: one tick over N fake-free sessions built from real `CallRecord`s,
   when nothing changed (the steady state it runs in every 200 ms).
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

from flowagent.dialogue.call_record import CallRecord
from flowagent.graph import model, render
from flowagent.web.hub import LiveHub
from flowagent.web.watch import RuntimeWatcher


def big_flow(n: int) -> dict:
    states: dict[str, dict] = {}
    for i in range(n):
        nxt = f"s{i + 1}" if i + 1 < n else "bye"
        kind = i % 4
        if kind == 0:
            states[f"s{i}"] = {"ask": "Which way?", "next": [
                {"intent": "yes", "go": nxt}, {"when": "slots.n > 3", "go": "bye"}, {"go": nxt}]}
        elif kind == 1:
            states[f"s{i}"] = {"collect": ["n"], "next": nxt}
        elif kind == 2:
            states[f"s{i}"] = {"call": "t", "on_failure": "human", "next": nxt}
        else:
            states[f"s{i}"] = {"say": "Step.", "next": nxt}
    states["bye"] = {"say": "Bye.", "end": True}
    states["human"] = {"transfer": "6001"}
    return {"flowagent": 1, "name": "Big", "start": "s0", "states": states,
            "tools": {"t": {"url": "http://127.0.0.1/x"}},
            "handlers": [{"intent": "human", "go": "human"}, {"intent": "repeat", "do": "repeat"}]}


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--states", type=int, default=500)
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    data = big_flow(args.states)
    graph = model.build_graph(data)
    print(f"flow: {len(graph.states)} states, {len(graph.edges)} edges")
    print(f"build model   {best(lambda: model.build_graph(data)) * 1000:8.1f} ms")
    for name in ("mermaid", "dot", "html"):
        print(f"render {name:7s}{best(lambda n=name: render.RENDERERS[n](graph)) * 1000:8.1f} ms")

    hub = LiveHub()
    sessions = {}
    for i in range(args.calls):
        rec = CallRecord(uuid=f"c{i}", flow="Big")
        rec.add(0.0, "agent", "Hello.", "s0")
        rec.slots["n"] = 2
        sessions[f"c{i}"] = SimpleNamespace(
            state="s0", record=rec, turns=[], info=SimpleNamespace(caller="+44", did=""),
            entry=SimpleNamespace(name="Big"))
    watcher = RuntimeWatcher(SimpleNamespace(sessions=sessions), hub)
    watcher.tick()  # first sight of every call
    steady = best(watcher.tick, 20)
    share = steady / watcher.interval_s
    print(f"watcher tick, {args.calls} live calls, nothing new: {steady * 1000:.2f} ms "
          f"(every {watcher.interval_s * 1000:.0f} ms = {share:.2%} of a core)")


if __name__ == "__main__":
    main()
