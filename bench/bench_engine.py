"""Engine throughput and per-call memory on flows/removals.yaml, no LLM, no I/O.

    /work/venv/bin/python bench/bench_engine.py [--calls 2000]

Throughput: whole happy-path calls (greeting -> quote -> booking -> goodbye, 10 caller turns,
2 tool calls answered instantly) driven straight through `Engine.handle`, so the figure is the
engine's own cost per caller turn: understanding (parsers, intents, multi-slot extraction),
templates, transitions and the call record.
Memory: tracemalloc of N engines held mid-call (after the details are collected), divided by N
— what each live call costs on top of the shared CompiledFlow.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowagent.dialogue.actions import CallTool  # noqa: E402
from flowagent.dialogue.engine import Engine  # noqa: E402
from flowagent.dialogue.events import CallInfo, ToolResult, UserUtterance  # noqa: E402
from flowagent.flow.compiler import load_flow  # noqa: E402

TODAY = _dt.date(2026, 3, 2)
TURNS = [
    "Hi, I'd like a quote for a house move please",
    "LS11 5AB",
    "M1 1AE",
    "the 14th of March",
    "three bedrooms",
    "yes that's right",
    "yes please",
    "Jane Smith",
    "07912 345678",
]
RESPONSES = {"get_quote": {"price": 450, "quote_id": "Q-1"}, "book_move": {"reference": "SR-1"}}


def answer_tools(engine: Engine, actions: list) -> None:
    while True:
        calls = [a for a in actions if isinstance(a, CallTool)]
        if not calls:
            return
        a = calls[0]
        actions = engine.handle(ToolResult(a.call_id, a.tool, True, 200, RESPONSES[a.tool]))


def one_call(flow, i: int, turns: list[str]) -> tuple[Engine, int]:
    engine = Engine(flow, today=TODAY)
    answer_tools(engine, engine.start(CallInfo(uuid=f"c{i}", caller="+447912345678")))
    n = 0
    for text in turns:
        answer_tools(engine, engine.handle(UserUtterance(text)))
        n += 1
    return engine, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--memory-calls", type=int, default=500)
    args = ap.parse_args()
    flow = load_flow(ROOT / "flows" / "removals.yaml")
    eng, _ = one_call(flow, 0, TURNS)
    assert eng.ended and eng.record.outcome == "completed", eng.record.transcript[-3:]
    for i in range(50):  # warm caches
        one_call(flow, i, TURNS)

    rates = []
    turns_total = 0
    for _ in range(5):
        t0 = time.perf_counter()
        n_turns = 0
        for i in range(args.calls // 5):
            _, n = one_call(flow, i, TURNS)
            n_turns += n
        dt = time.perf_counter() - t0
        rates.append(n_turns / dt)
        turns_total += n_turns
    per_turn_us = 1e6 / statistics.median(rates)

    # memory: engines held mid-call (after the details are collected, before the quote)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    held = [one_call(flow, i, TURNS[:5])[0] for i in range(args.memory_calls)]
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_call = grown / len(held)

    print(f"flow: flows/removals.yaml ({len(flow.states)} states), no LLM, tools answered at once")
    print(f"caller turns measured: {turns_total}")
    print(f"throughput: {statistics.median(rates):,.0f} turns/s "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}) = {per_turn_us:.0f} µs per turn")
    print(f"memory per live call (mid-call engine + record): {per_call / 1024:.1f} KiB "
          f"({len(held)} engines held)")


if __name__ == "__main__":
    main()
