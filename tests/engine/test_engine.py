"""The dialogue engine, state kind by state kind and handler by handler, through the same
Conversation driver `flowagent chat` and `flowagent test` use (and raw actions where the
contract with the audio runtime matters)."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import ROOT, TODAY, ScriptedLlm, flow_from_yaml

from flowagent.dialogue.actions import (
    CallTool,
    EndCall,
    FlowProblem,
    LlmRequest,
    Say,
    StartNoInputTimer,
    StartTimer,
    StateEntered,
    StopNoInputTimer,
    Transfer,
)
from flowagent.dialogue.engine import Engine
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
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools, parse_canned, register_tool
from flowagent.flow.compiler import CompiledFlow, load_flow
from flowagent.providers.base import ProviderError

CALL = CallInfo(uuid="call-1", caller="+447700900123", did="")


@register_tool("shop:stock")
async def _stock(args: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {"in_stock": args.get("size") == "small"}


@pytest.fixture(scope="module")
def shop() -> CompiledFlow:
    return load_flow(ROOT / "tests" / "engine" / "shop_flow.yaml")


def conv(flow: CompiledFlow, tools: dict[str, Any] | None = None, llm: Any = None) -> Conversation:
    canned = CannedTools(parse_canned(tools or {"price": {"response": {"total": 50}}}))
    return Conversation(flow, canned, llm, today=TODAY)


def said(lines: list[str]) -> str:
    return " ".join(lines)


# ---------------------------------------------------------------------------------------------
# say, ask, collect, confirm, call, transfer, end
# ---------------------------------------------------------------------------------------------


async def test_say_state_flows_into_ask_and_the_question_expects_a_reply(shop: CompiledFlow
                                                                        ) -> None:
    eng = Engine(shop, today=TODAY)
    actions = eng.start(CALL)
    says = [a for a in actions if isinstance(a, Say)]
    assert [s.text for s in says] == ["Welcome to Test Shop.",
                                      "Do you want to order, or ask a question?"]
    assert not says[0].expect_reply and says[1].expect_reply
    assert says[0].static is False and says[1].static is True
    # the no-input timer comes right after the question; max duration is armed at start
    assert isinstance(actions[actions.index(says[1]) + 1], StartNoInputTimer)
    assert actions[actions.index(says[1]) + 1].seconds == 4
    assert StartTimer("max_duration", 60) in actions
    assert [a.state for a in actions if isinstance(a, StateEntered)] == ["greet", "menu"]
    assert eng.state == "menu" and eng.listening == "ask"


async def test_ask_branches_on_intent(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    lines = await c.say("I'd like to place an order please")
    assert c.state == "order"
    assert said(lines) == "Lovely. Small or large?"


async def test_collect_validates_reprompts_and_confirms(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    await c.say("place an order")
    lines = await c.say("the big one")
    assert c.slots["size"] == "large"
    assert said(lines) == "How many would you like?"
    lines = await c.say("fifty")
    assert said(lines) == "I can do between one and twenty."  # the slot's `invalid`
    assert "qty" not in c.slots
    lines = await c.say("three please")
    assert c.slots["qty"] == 3
    assert said(lines) == "That's 3 large. Is that right?"
    lines = await c.say("yes")
    assert c.tools.log[-1].request["json"] == {"size": "large", "qty": 3}
    assert said(lines).startswith("One moment.")
    assert c.state == "contact"


async def test_state_confirm_no_then_correction(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    await c.say("place an order")
    await c.say("small")
    await c.say("two")
    lines = await c.say("no")
    assert said(lines) == "What needs changing?"
    lines = await c.say("make it five")
    assert c.slots["qty"] == 5
    assert said(lines) == "That's 5 small. Is that right?"


async def test_tool_result_saves_vars_and_branches_on_when(shop: CompiledFlow) -> None:
    c = conv(shop, {"price": {"response": {"total": 450}}})
    await c.start(CALL)
    await c.say("place an order")
    await c.say("large")
    await c.say("twenty")
    lines = await c.say("yes")
    assert c.vars["total"] == 450
    assert "That comes to £450, which is a big order." in lines
    assert c.state == "contact"


async def test_tool_failure_takes_the_tool_failure_handler(shop: CompiledFlow) -> None:
    c = conv(shop, {"price": {"status": 500}})
    await c.start(CALL)
    await c.say("place an order")
    await c.say("large")
    await c.say("two")
    lines = await c.say("yes")
    assert "Our system is down." in lines
    assert c.transferred_to == "6001"
    rec = c.engine.record
    assert rec.tool_calls[-1].ok is False and rec.tool_calls[-1].status == 500
    assert rec.outcome == "transferred"


async def test_tool_needs_are_checked_before_sending() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: needs
        start: go
        slots:
          qty: {type: integer, prompt: "How many?"}
        tools:
          price:
            url: "http://127.0.0.1:9/p"
            needs: [qty]
        handlers:
          - event: tool_failure
            say: Cannot price that.
            do: hangup
        states:
          go:
            call: price
            next: bye
          bye:
            say: bye
            end: true
    """)
    eng = Engine(flow)
    actions = eng.start(CALL)
    assert not any(isinstance(a, CallTool) for a in actions)
    assert any(isinstance(a, Say) and a.text == "Cannot price that." for a in actions)
    assert eng.ended
    assert "needs qty" in eng.record.tool_calls[0].error


async def test_slot_confirm_yes_and_no(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    await c.say("order")
    await c.say("small")
    await c.say("1")
    await c.say("yes")
    lines = await c.say("jane dot smith at gmail dot com")
    assert c.slots["email"] == "jane.smith@gmail.com"
    assert "Is that right?" in said(lines)
    lines = await c.say("no")
    assert "email" not in c.slots
    lines = await c.say("jane at example dot com")
    lines = await c.say("yes")
    assert c.slots["email"] == "jane@example.com"
    assert said(lines) == "Thanks, goodbye."
    assert c.ended and c.engine.record.outcome == "ordered"


async def test_end_and_transfer_actions_come_after_their_say() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: t
        start: a
        states:
          a:
            say: Let me transfer you.
            transfer: "6001"
            reason: "test"
    """)
    eng = Engine(flow)
    actions = eng.start(CALL)
    kinds = [type(a).__name__ for a in actions if isinstance(a, Say | Transfer)]
    assert kinds == ["Say", "Transfer"]
    assert Transfer("6001", "test") in actions
    assert eng.ended and eng.record.outcome == "transferred"
    assert eng.record.transfer_target == "6001"
    assert eng.handle(UserUtterance("hello?")) == []  # nothing after the end


# ---------------------------------------------------------------------------------------------
# global handlers
# ---------------------------------------------------------------------------------------------


async def test_human_intent_anywhere(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    await c.say("order")
    lines = await c.say("can I speak to a real person")
    assert lines == ["Putting you through."]
    assert c.transferred_to == "6001"


async def test_repeat_says_the_last_turn_again(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    first = await c.say("order")
    again = await c.say("sorry, can you say that again")
    assert again == first == ["Lovely.", "Small or large?"]


async def test_restart_clears_slots_and_goes_to_start(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    await c.say("order")
    await c.say("small")
    lines = await c.say("start again")
    assert lines[0] == "Starting again."
    assert "Welcome to Test Shop." in lines
    assert c.slots == {} and c.state == "menu"


async def test_dtmf_handlers_go_and_continue(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    lines = await c.dtmf("9")
    assert lines == ["Nine pressed.", "Say order, or question."]
    assert c.state == "menu"
    await c.dtmf("0")
    assert c.transferred_to == "6001"


async def test_no_input_reprompts_then_handler(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    assert await c.silence() == ["Say order, or question."]
    assert await c.silence() == ["I can't hear you."]
    assert c.transferred_to == "6001"


async def test_no_match_reprompts_then_handler(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    assert await c.say("purple elephants") == ["Say order, or question."]
    assert await c.say("the weather in Leeds") == ["Sorry, I can't help with that."]
    assert c.transferred_to == "6001"


async def test_max_duration_handler(shop: CompiledFlow) -> None:
    eng = Engine(shop)
    eng.start(CALL)
    actions = eng.handle(TimerExpired("max_duration"))
    assert Say in {type(a) for a in actions}
    assert [a.text for a in actions if isinstance(a, Say)] == ["Out of time."]
    assert any(isinstance(a, EndCall) for a in actions) and eng.ended


async def test_provider_error_takes_the_error_handler(shop: CompiledFlow) -> None:
    eng = Engine(shop)
    eng.start(CALL)
    actions = eng.handle(ProviderFailed("asr", "the ASR connection dropped"))
    assert [a.text for a in actions if isinstance(a, Say)] == ["Something broke."]
    assert any(isinstance(a, Transfer) for a in actions)
    assert "asr: the ASR connection dropped" in eng.record.errors


async def test_hangup_finalises_the_record(shop: CompiledFlow) -> None:
    eng = Engine(shop)
    eng.start(CALL)
    eng.handle(UserUtterance("order"))
    assert eng.handle(Hangup()) == []
    rec = eng.record.to_dict()
    assert rec["outcome"] == "hangup_by_caller" and rec["ended_at"] is not None
    assert [t["who"] for t in rec["transcript"]][:3] == ["agent", "agent", "caller"]
    assert rec["states"][:3] == ["greet", "menu", "order"]


async def test_default_handlers_without_definitions_say_sorry_and_hang_up() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: bare
        start: q
        settings: {no_input: {reprompts: 0}}
        states:
          q:
            ask: Yes or no?
            next:
              - intent: "yes"
                go: bye
          bye:
            say: bye
            end: true
    """)
    eng = Engine(flow)
    eng.start(CALL)
    actions = eng.handle(NoInput())
    assert [a.text for a in actions if isinstance(a, Say)] == [
        "Sorry, I'm having trouble hearing you. Goodbye."]
    assert eng.ended


# ---------------------------------------------------------------------------------------------
# per-state handler overrides, barge-in, partials, timers
# ---------------------------------------------------------------------------------------------


async def test_state_handler_overrides_the_global_one() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: override
        start: q
        handlers:
          - dtmf: "0"
            go: human
        states:
          q:
            ask: Press a key.
            handlers:
              - dtmf: "0"
                say: Not here, sorry.
                do: continue
            next:
              - intent: "yes"
                go: human
          human:
            transfer: "100"
    """)
    eng = Engine(flow)
    eng.start(CALL)
    actions = eng.handle(DtmfDigit("0"))
    assert [a.text for a in actions if isinstance(a, Say)] == ["Not here, sorry.", "Press a key."]
    assert not eng.ended


async def test_barge_in_records_what_was_heard_and_keeps_listening(shop: CompiledFlow) -> None:
    eng = Engine(shop)
    actions = eng.start(CALL)
    q = [a for a in actions if isinstance(a, Say)][-1]
    out = eng.handle(BargeIn(q.say_id, "Do you want to"))
    assert StopNoInputTimer() in out
    line = eng.record.agent_line(q.say_id)
    assert line is not None and line.heard == "Do you want to"
    assert eng.listening == "ask"
    assert eng.handle(UserPartial("ord")) == []
    assert eng.handle(SpeechFinished(q.say_id)) == []
    eng.handle(UserUtterance("order"))
    assert eng.state == "order"


async def test_stale_no_input_while_a_tool_runs_is_ignored(shop: CompiledFlow) -> None:
    eng = Engine(shop)
    eng.start(CALL)
    eng.handle(UserUtterance("order"))
    eng.handle(UserUtterance("small"))
    eng.handle(UserUtterance("two"))
    actions = eng.handle(UserUtterance("yes"))
    call = next(a for a in actions if isinstance(a, CallTool))
    assert eng.waiting_for == "tool"
    assert eng.handle(NoInput()) == []
    assert eng.handle(ToolResult(call.call_id + 100, "price", True, 200, {})) == []  # unknown id
    out = eng.handle(ToolResult(call.call_id, "price", True, 200, {"total": 10}))
    assert eng.state == "contact" and any(isinstance(a, Say) for a in out)


# ---------------------------------------------------------------------------------------------
# DTMF into slots
# ---------------------------------------------------------------------------------------------


async def test_dtmf_fills_choice_integer_and_phone(shop: CompiledFlow) -> None:
    c = conv(shop)
    await c.start(CALL)
    await c.say("order")
    await c.dtmf("2")  # second choice
    assert c.slots["size"] == "large"
    lines = await c.dtmf("12#")
    assert c.slots["qty"] == 12 and "Is that right?" in said(lines)
    await c.dtmf("1")  # 1 = yes at a confirmation
    assert c.state == "contact"


async def test_dtmf_entry_ends_on_the_inter_digit_timer() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: phone
        start: ask
        handlers:
          - dtmf: "0"
            go: human
        slots:
          phone: {type: phone, prompt: "Your number?", dtmf: true}
        states:
          ask:
            collect: [phone]
            next: bye
          bye:
            say: "Got {{ slots.phone }}."
            end: true
          human:
            transfer: "1"
    """)
    eng = Engine(flow)
    eng.start(CALL)
    out: list[Any] = []
    for d in "07912345678":
        out += eng.handle(DtmfDigit(d))
    assert StartTimer("dtmf", 3.0) in out  # restarted after each digit; a lone 0 is not a handler
    assert not eng.ended
    final = eng.handle(TimerExpired("dtmf"))
    assert [a.text for a in final if isinstance(a, Say)] == ["Got +447912345678."]
    # a lone 0 followed by the pause is still the "0" handler
    eng2 = Engine(flow)
    eng2.start(CALL)
    eng2.handle(DtmfDigit("0"))
    assert any(isinstance(a, Transfer) for a in eng2.handle(TimerExpired("dtmf")))


# ---------------------------------------------------------------------------------------------
# LLM
# ---------------------------------------------------------------------------------------------


async def test_llm_state_bounded_exchange_with_python_tool_and_until(shop: CompiledFlow) -> None:
    llm = ScriptedLlm([
        "Hello! What would you like to know?",
        {"text": "", "tool_calls": [("stock", {"size": "small"})]},
        "Yes, small is in stock.",
    ])
    c = conv(shop, llm=llm)
    await c.start(CALL)
    lines = await c.say("I have a question")
    assert c.state == "chat"
    assert lines == ["Hello! What would you like to know?"]
    lines = await c.say("do you have small in stock?")
    assert lines == ["Yes, small is in stock."]
    assert c.vars["in_stock"] is True
    # the tool's answer went back to the LLM as a tool message
    tool_msgs = [m for m in llm.requests[-1][0] if m.role == "tool"]
    assert tool_msgs and '"in_stock": true' in tool_msgs[0].content
    # the LLM saw only the tools the state allows
    assert {t.name for t in llm.requests[0][1]} == {"stock", "transfer", "hangup"}
    lines = await c.say("thanks, goodbye")
    assert lines == ["Thanks, goodbye."]  # until: intent == 'goodbye'
    assert c.ended


async def test_llm_state_max_turns(shop: CompiledFlow) -> None:
    c = conv(shop, llm=ScriptedLlm(["One.", "Two.", "Three.", "Four."]))
    await c.start(CALL)
    await c.say("I have a question")
    await c.say("a")
    lines = await c.say("b")
    assert lines == ["Three.", "Thanks, goodbye."]


async def test_llm_builtin_transfer(shop: CompiledFlow) -> None:
    llm = ScriptedLlm([
        "Hi.",
        {"text": "Let me get someone.", "tool_calls": [("transfer", {"reason": "asked"})]},
    ])
    c = conv(shop, llm=llm)
    await c.start(CALL)
    await c.say("I have a question")
    lines = await c.say("I want a refund")
    assert lines[0] == "Let me get someone."
    assert c.transferred_to == "6001"


async def test_llm_failure_takes_the_error_path(shop: CompiledFlow) -> None:
    c = conv(shop, llm=ScriptedLlm([ProviderError("the LLM answered 503")]))
    await c.start(CALL)
    lines = await c.say("I have a question")
    assert lines == ["Something broke."]
    assert c.transferred_to == "6001"
    assert any("503" in e for e in c.engine.record.errors)


async def test_llm_state_is_skipped_without_an_llm(shop: CompiledFlow) -> None:
    c = conv(shop, llm=None)
    await c.start(CALL)
    lines = await c.say("I have a question")
    assert lines == ["Thanks, goodbye."]


async def test_llm_fallback_extracts_slots_the_parsers_missed(shop: CompiledFlow) -> None:
    llm = ScriptedLlm([{"text": "", "tool_calls": [("fill_slots", {"size": "large"})]}])
    c = conv(shop, llm=llm)
    await c.start(CALL)
    await c.say("order")
    lines = await c.say("the one that fits a family of six")
    assert c.slots["size"] == "large"
    assert lines == ["How many would you like?"]
    messages, tools = llm.requests[0]
    assert tools[0].name == "fill_slots" and "size" in tools[0].parameters["properties"]
    assert messages[-1].content == "the one that fits a family of six"


async def test_llm_fallback_chooses_an_intent(shop: CompiledFlow) -> None:
    llm = ScriptedLlm([{"text": "", "tool_calls": [("choose_intent", {"intent": "order"})]}])
    c = conv(shop, llm=llm)
    await c.start(CALL)
    await c.say("my daughter needs one for school")
    assert c.state == "order"


# ---------------------------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------------------------


async def test_loop_guard_takes_the_error_path() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: loop
        start: a
        slots:
          x: {type: integer, prompt: "Number?"}
        handlers:
          - event: error
            say: Loop detected.
            do: hangup
        states:
          a:
            next:
              - when: slots.x == 1
                go: done
              - go: b
          b:
            say: b
            next: a
          done:
            collect: [x]
            next: a
    """, check=False)
    eng = Engine(flow)
    actions = eng.start(CALL)
    assert eng.ended
    # the round is heard once, then the flow's error handler; the loop is named
    assert [a.text for a in actions if isinstance(a, Say)] == ["b", "Loop detected."]
    assert any(e.startswith("loop in states a → b → a") for e in eng.record.errors), \
        eng.record.errors
    [problem] = [a for a in actions if isinstance(a, FlowProblem)]
    assert problem.kind == "loop" and problem.source == "a → b → a"


async def test_a_loop_that_keeps_changing_something_stops_at_the_transition_limit() -> None:
    flow = flow_from_yaml("""
        flowagent: 2
        name: counter
        start: a
        vars: {n: 0}
        handlers:
          - event: error
            say: Stopped.
            do: hangup
        states:
          a:
            set: {vars.n: vars.n + 1}
            next: a
    """, check=False)
    eng = Engine(flow)
    actions = eng.start(CALL)
    assert [a.text for a in actions if isinstance(a, Say)] == ["Stopped."]
    assert any("too many times" in e and "a → a" in e for e in eng.record.errors)


async def test_a_loop_without_an_error_handler_takes_the_no_match_path() -> None:
    flow = flow_from_yaml("""
        flowagent: 2
        name: spin
        start: a
        handlers:
          - event: no_match
            say: Let me get someone to help.
            go: human
        states:
          a:
            say: Just a moment.
            next: b
          b:
            next: a
          human:
            transfer: "6001"
    """, check=False)
    eng = Engine(flow)
    actions = eng.start(CALL)
    says = [a.text for a in actions if isinstance(a, Say)]
    assert says == ["Just a moment.", "Let me get someone to help."]
    assert any(isinstance(a, Transfer) for a in actions)


async def test_engine_never_raises_on_events_before_start_or_after_end(shop: CompiledFlow
                                                                       ) -> None:
    eng = Engine(shop)
    assert eng.handle(UserUtterance("hello")) == []
    eng.start(CALL)
    eng.handle(Hangup())
    for ev in (UserUtterance("x"), DtmfDigit("1"), NoInput(), TimerExpired("max_duration"),
               Hangup(), ToolResult(99, "price", True)):
        assert eng.handle(ev) == []


async def test_barge_in_over_an_llm_reply_keeps_what_was_heard(shop: CompiledFlow) -> None:
    eng = Engine(shop, llm_available=True)
    eng.start(CALL)
    actions = eng.handle(UserUtterance("I have a question"))
    req = next(a for a in actions if isinstance(a, LlmRequest))
    assert req.speak and req.say_id == req.request_id
    eng.handle(BargeIn(req.say_id, "Hello! We sell"))
    assert eng.listening == "llm"
    # the late result of the interrupted reply is ignored; the caller's words go to the LLM
    assert eng.handle(LlmResult(req.request_id, "Hello! We sell shoes and hats.")) == []
    nxt = eng.handle(UserUtterance("do you sell socks"))
    req2 = next(a for a in nxt if isinstance(a, LlmRequest))
    assert [(m.role, m.content) for m in req2.messages[-2:]] == [
        ("assistant", "Hello! We sell"), ("user", "do you sell socks")]
    line = next(t for t in eng.record.transcript if t.say_id == req.say_id)
    assert line.heard == "Hello! We sell"


async def test_barge_in_on_a_reply_generated_before_it_was_heard_keeps_only_the_heard_part(
        shop: CompiledFlow) -> None:
    eng = Engine(shop, llm_available=True)
    eng.start(CALL)
    req = next(a for a in eng.handle(UserUtterance("I have a question"))
               if isinstance(a, LlmRequest))
    # the LLM finished long before the caller had heard its reply, then they cut in
    eng.handle(LlmResult(req.request_id, "Hello! We sell shoes and hats."))
    eng.handle(BargeIn(req.say_id, "Hello! We sell"))
    req2 = next(a for a in eng.handle(UserUtterance("do you sell socks"))
                if isinstance(a, LlmRequest))
    assert [(m.role, m.content) for m in req2.messages[-2:]] == [
        ("assistant", "Hello! We sell"), ("user", "do you sell socks")]
    # cut before a word was heard: the reply is not in the history at all
    eng.handle(LlmResult(req2.request_id, "Yes we do."))
    eng.handle(BargeIn(req2.say_id, ""))
    req3 = next(a for a in eng.handle(UserUtterance("hello?")) if isinstance(a, LlmRequest))
    assert [(m.role, m.content) for m in req3.messages[-3:]] == [
        ("assistant", "Hello! We sell"), ("user", "do you sell socks"), ("user", "hello?")]


async def test_leaving_a_state_abandons_its_tool_call(shop: CompiledFlow) -> None:
    eng = Engine(shop, today=TODAY)
    eng.start(CALL)
    for text in ("order", "small", "two"):
        eng.handle(UserUtterance(text))
    call = next(a for a in eng.handle(UserUtterance("yes")) if isinstance(a, CallTool))
    out = eng.handle(DtmfDigit("0"))  # the caller asks for a person while the tool runs
    assert any(isinstance(a, Transfer) for a in out)
    # the late result changes nothing, but is kept in the record
    assert eng.handle(ToolResult(call.call_id, "price", True, 200, {"total": 5})) == []
    assert eng.record.tool_calls[-1].ok is True
    assert eng.record.outcome == "transferred"


async def test_a_failing_template_takes_the_error_path_not_a_crash() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: tpl
        start: a
        slots:
          n: {type: integer, prompt: "Number?"}
        handlers:
          - event: error
            say: Sorry about that.
            do: hangup
        states:
          a:
            say: "Twice is {{ slots.n * 2 }} and {{ slots.n.nope() }}."
            end: true
    """)
    eng = Engine(flow)
    actions = eng.start(CALL)
    assert [a.text for a in actions if isinstance(a, Say)] == ["Sorry about that."]
    # the state, the key, the template and the error are named (record and action)
    assert eng.ended and any(e.startswith("template error in state `a`, say: ")
                             and "slots.n * 2" in e for e in eng.record.errors), eng.record.errors
    problems = [a for a in actions if isinstance(a, FlowProblem)]
    assert len(problems) == 1 and problems[0].where == "state `a`, say"
    assert "{{ slots.n * 2 }}" in problems[0].source and problems[0].error


async def test_llm_tool_arguments_are_checked_and_disallowed_tools_refused() -> None:
    flow = flow_from_yaml("""
        flowagent: 1
        name: llmtools
        start: chat
        providers:
          llm: {name: fake, options: {}}
        tools:
          book:
            description: Book a table.
            url: "http://127.0.0.1:9/book"
            method: POST
            body: {people: "{{ args.people }}"}
            args:
              people: {type: integer, description: how many people}
        states:
          chat:
            llm:
              instructions: Book tables.
              tools: [book, send_dtmf, hangup]
              max_turns: 5
            next: bye
          bye:
            say: Bye.
            end: true
    """)
    llm = ScriptedLlm([
        {"text": "", "tool_calls": [("book", {"people": "lots"})]},
        {"text": "", "tool_calls": [("get_secrets", {})]},
        {"text": "", "tool_calls": [("book", {"people": "4"})]},
        {"text": "Booked for four.", "tool_calls": [("send_dtmf", {"digits": "12"})]},
        "Anything else?",
        {"text": "Goodbye.", "tool_calls": [("hangup", {})]},
    ])
    c = Conversation(flow, CannedTools(parse_canned({"book": {"ok": True}})), llm)
    lines = await c.start(CALL)
    tool_msgs = [m.content for m in llm.requests[2][0] if m.role == "tool"]
    assert "must be integer" in tool_msgs[0] and "not allowed" in tool_msgs[1]
    assert c.tools.log[0].request["json"] == {"people": 4}  # validated and converted
    assert lines == ["Booked for four.", "Anything else?"]
    assert c.executor.dtmf_sent == ["12"]
    lines = await c.say("no that's all")
    assert lines == ["Goodbye."] and c.ended
