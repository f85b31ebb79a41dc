"""Property: whatever a caller does, every example flow keeps the call alive or ends it.

Random sequences of caller events (speech from the flow's own examples and from noise, keypad
digits, silence, barge-ins, timers, provider failures) drive the engine of every `flows/*.yaml`;
tool calls and LLM requests are answered at random (success, failure, junk). After every event
the engine must be in one of three situations — ended, waiting for the caller *with the no-input
timer armed* (so a silent caller is re-asked), or waiting for an answer to an action it asked
for — and it must never have hit an internal error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import ROOT, TODAY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowagent.dialogue.actions import (
    CallTool,
    CancelTimer,
    EndCall,
    LlmRequest,
    Say,
    StartNoInputTimer,
    StartTimer,
    StateEntered,
    StopNoInputTimer,
    Transfer,
)
from flowagent.dialogue.engine import MAX_TRANSITIONS_PER_EVENT, Engine
from flowagent.dialogue.events import (
    BargeIn,
    CallInfo,
    DtmfDigit,
    Hangup,
    LlmResult,
    NoInput,
    ProviderFailed,
    SpeechFinished,
    TimerExpired,
    ToolResult,
    UserPartial,
    UserUtterance,
)
from flowagent.flow.compiler import CompiledFlow, load_flow
from flowagent.providers.base import LlmToolCall

FLOW_FILES = sorted(
    p for p in (ROOT / "flows").rglob("*.yaml")  # recipes: lists, repeats, sub-flows, hours
    if not p.name.endswith((".tests.yaml", ".tools.yaml"))
)
NOISE = [
    "", "yes", "no", "um", "banana", "speak to a person", "say that again", "start again",
    "goodbye", "three", "LS11 5AB", "M1 1AE", "next Friday", "the 14th of March", "tomorrow",
    "07912 345678", "jane at example dot com", "Jane Smith", "ten o'clock", "£200",
    "no, I said four", "actually the 15th", "I don't know", "what?", "12 High Street, Leeds",
    "asdf qwerty", "no that's wrong", "yes that's right",
]


def phrases(flow: CompiledFlow) -> list[str]:
    out = list(NOISE)
    for examples in flow.intents.values():
        out.extend(examples[:3])
    for slot in flow.slots.values():
        out.extend(list(slot.options.choices)[:3])
    return out


FLOWS: dict[str, CompiledFlow] = {}


def get_flow(path: Path) -> CompiledFlow:
    if str(path) not in FLOWS:
        FLOWS[str(path)] = load_flow(path)
    return FLOWS[str(path)]


caller_event = st.one_of(
    st.tuples(st.just("say"), st.integers(0, 10_000)),
    st.tuples(st.just("dtmf"), st.integers(0, 11)),
    st.tuples(st.just("silence"), st.just(0)),
    st.tuples(st.just("dtmf_pause"), st.just(0)),
    st.tuples(st.just("barge"), st.integers(0, 10_000)),
    st.tuples(st.just("partial"), st.integers(0, 10_000)),
    st.tuples(st.just("max_duration"), st.just(0)),
    st.tuples(st.just("provider_error"), st.just(0)),
    st.tuples(st.just("hangup"), st.just(0)),
)
answer = st.tuples(st.booleans(), st.integers(0, 10_000))


class Sim:
    """A minimal driver: tracks the no-input timer and outstanding actions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.timer_armed = False
        self.keys_timer = False  # a keypad entry in progress: the inter-digit timer runs
        self.pending: list[CallTool | LlmRequest] = []
        self.last_say = 0

    def feed(self, actions: list[Any]) -> None:
        entered = sum(isinstance(a, StateEntered) for a in actions)
        # the error path may add its own transitions after an overflow
        assert entered <= 2 * MAX_TRANSITIONS_PER_EVENT + 2
        for a in actions:
            if isinstance(a, StartTimer) and a.name == "dtmf":
                self.keys_timer = True
            elif isinstance(a, CancelTimer) and a.name == "dtmf":
                self.keys_timer = False
            elif isinstance(a, StartNoInputTimer):
                self.timer_armed = True
            elif isinstance(a, (StopNoInputTimer, EndCall, Transfer)):
                self.timer_armed = False
            elif isinstance(a, (CallTool, LlmRequest)):
                self.pending.append(a)
            elif isinstance(a, Say):
                self.last_say = a.say_id
        internal = [e for e in self.engine.record.errors if e.startswith("internal error")]
        assert not internal, internal

    def answer_pending(self, draw: Any, pool: list[str]) -> None:
        rounds = 0
        while self.pending:
            rounds += 1
            assert rounds < 60, "actions keep producing actions: a loop through tools/LLM"
            action = self.pending.pop(0)
            ok, n = draw(answer)
            if isinstance(action, CallTool):
                data = [{"price": n, "quote_id": "Q", "reference": "R", "total": n,
                         "available": ok, "slot": "10:00", "match": ok, "found": ok,
                         "start": "14:30", "today": "9 till 5", "times": ["9 am"][: n % 2],
                         "slots": [{"id": n, "time": "11:00", "dentist": "Dr Shah"},
                                   {"id": n + 1, "time": "14:30", "dentist": "Dr Patel"}
                                   ][: n % 3]},
                        None, "junk", [1, 2]][n % 4]
                ev: Any = ToolResult(action.call_id, action.tool, ok, 200 if ok else 500, data,
                                     "" if ok else "The tool failed.")
            else:
                calls: tuple[LlmToolCall, ...] = ()
                if action.tools and n % 3 == 0:
                    spec = action.tools[n % len(action.tools)]
                    props = spec.parameters.get("properties", {})
                    calls = (LlmToolCall("c1", spec.name,
                                         {k: pool[n % len(pool)] for k in props}),)
                ev = LlmResult(action.request_id, pool[n % len(pool)] if n % 2 else "",
                               calls, ok=ok or n % 5 != 0, error="" if ok else "llm down")
            self.feed(self.engine.handle(ev))

    def check_alive(self) -> None:
        eng = self.engine
        if eng.ended:
            return
        assert eng.waiting_for is None  # every action was answered above
        assert eng.listening is not None, f"stuck in {eng.state}: not listening, not ended"
        assert self.timer_armed or self.keys_timer, \
            f"listening in {eng.state} with no no-input (or keypad) timer armed"


@pytest.mark.parametrize("path", FLOW_FILES, ids=[p.stem for p in FLOW_FILES])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_callers_never_get_a_stuck_call(path: Path, data: st.DataObject) -> None:
    flow = get_flow(path)
    pool = phrases(flow)
    engine = Engine(flow, today=TODAY, llm_available=flow.has_llm)
    sim = Sim(engine)
    sim.feed(engine.start(CallInfo(uuid="prop", caller="+447912345678", did="")))
    sim.answer_pending(data.draw, pool)
    sim.check_alive()
    events = data.draw(st.lists(caller_event, max_size=25))
    for kind, n in events:
        if engine.ended:
            break
        text = pool[n % len(pool)]
        if kind == "say":
            evs: list[Any] = [UserUtterance(text)]
        elif kind == "dtmf":
            evs = [DtmfDigit("0123456789*#"[n])]
        elif kind == "dtmf_pause":
            evs = [TimerExpired("dtmf")]
            sim.keys_timer = False
        elif kind == "silence":
            evs = [NoInput()] if sim.timer_armed else []
        elif kind == "barge":
            evs = [BargeIn(sim.last_say, "Hel"), UserUtterance(text)]
        elif kind == "partial":
            evs = [UserPartial(text[:3]), SpeechFinished(sim.last_say)]
        elif kind == "max_duration":
            evs = [TimerExpired("max_duration")]
        elif kind == "provider_error":
            evs = [ProviderFailed("asr", "dropped")]
        else:
            evs = [Hangup()]
        for ev in evs:
            sim.feed(engine.handle(ev))
            sim.answer_pending(data.draw, pool)
        sim.check_alive()
    # however it went, the record is complete enough to store
    record = engine.record.to_dict()
    assert record["flow"] == flow.name and record["states"]
    json.dumps(record)  # storable as JSON (SQLite, API, webhook)
