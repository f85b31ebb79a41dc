"""The dialogue engine: one instance per call, driven by events, answering with actions.

It owns the call's conversation state — current state, slots, vars, reprompt counters, the LLM
exchange so far, the call record — and nothing else: no I/O, no clocks it did not get, no threads.
Whoever drives it (`driver.Conversation` for text, the runtime's call session for audio) feeds it
`flowagent.dialogue.events` events and carries out the actions **in order**.

Contract for drivers (the audio session and the text driver both follow it):

* `start(CallInfo)` first, then `handle(event)` for everything else; both return a list of
  actions and **never raise** for a well-formed event (an internal failure takes the flow's
  `error` path; if that fails too, the call ends).
* `Say(expect_reply=True)` is always followed by `StartNoInputTimer(seconds)`: the driver starts
  counting when that prompt has finished playing (after `SpeechFinished`), and sends `NoInput`
  when it runs out. `StopNoInputTimer` cancels it (the engine sends it whenever the caller is
  heard or the call moves on). A stale `NoInput` (arriving when nothing is being asked) is ignored.
* `StartTimer(name, seconds)` / `CancelTimer(name)` are driver-owned timers that start at once and
  come back as `TimerExpired(name)`: `max_duration` (set at call start from `settings.max_call_s`)
  and `dtmf` (inter-digit gap).
* `Transfer` and `EndCall` come after the `Say` that announces them: play the say first.
* `LlmRequest(speak=True)` — stream the reply to TTS under `say_id`, then send `LlmResult`.
  `LlmRequest(speak=False)` (purpose `extract`) — silent structured extraction; send `LlmResult`.
* `CallTool` — run it (`tools.ToolRunner`) and send `ToolResult` with the same `call_id`.

Keypad (DTMF) policy — decided here, not in the driver: a digit that matches a `dtmf:` handler
fires it, except while the caller is keying a multi-digit slot (phone, integer, number, money with
`dtmf: true`), where digits are buffered; the entry ends on the terminator (`#`), on the inter-digit
timer (`TimerExpired("dtmf")`), or as soon as no more digits could fit (e.g. max 9). A lone
handler digit entered that way (e.g. just `0` then a pause) still fires its handler. yes_no slots
and confirmations take 1 = yes, 2 = no; choice slots take the choice's position (1 = first).

Loop guard: a flow can never spin without input. Each event may enter at most
`MAX_TRANSITIONS_PER_EVENT` states; overflowing takes the `error` path, and overflowing that ends
the call.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from jinja2 import TemplateError

from flowagent.dialogue import nlu
from flowagent.dialogue.actions import (
    Action,
    CallTool,
    CancelTimer,
    EndCall,
    LlmRequest,
    Say,
    SendDtmf,
    StartNoInputTimer,
    StartTimer,
    StateEntered,
    StopNoInputTimer,
    Transfer,
)
from flowagent.dialogue.answer_fit import AnswerFit, may_go_on
from flowagent.dialogue.call_record import CallRecord, ToolCallRecord, TurnLatency, redact_request
from flowagent.dialogue.events import (
    BargeIn,
    CallInfo,
    CallStarted,
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
from flowagent.dialogue.llm_tools import BUILTIN_TOOL_SPECS
from flowagent.dialogue.steps import assign, lists
from flowagent.dialogue.steps.faults import FlowFault, short_error
from flowagent.dialogue.steps.frames import Frame, label_of, parameters
from flowagent.dialogue.steps.loop_guard import Marks, revisit
from flowagent.dialogue.steps.offers import Offer, default_label
from flowagent.flow.compiler import (
    CompiledFlow,
    Expression,
    Handler,
    SlotDef,
    StateDef,
    Template,
    ToolDef,
)
from flowagent.flow.expressions import ExpressionError
from flowagent.flow.hours import Now, OpenNow, zone
from flowagent.providers.base import LlmMessage, LlmToolCall, LlmToolSpec

MAX_TRANSITIONS_PER_EVENT = 40
MAX_LLM_TOOL_ROUNDS = 4
#: intent score at which a handler intent (human/repeat/...) beats a slot value in one answer
STRONG_HANDLER_MATCH = 0.85
#: `settings.clarify`: both intents within this of the threshold, and closer than the margin
CLARIFY_BELOW, CLARIFY_MARGIN = 0.12, 0.1

_DEFAULT_NO_INPUT = "Sorry, I'm having trouble hearing you. Goodbye."
_DEFAULT_NO_MATCH = "Sorry, I'm having trouble understanding. Goodbye."
_DEFAULT_ERROR = "I'm sorry, something went wrong on our side."
_DEFAULT_MAX_DURATION = "I'm sorry, we've run out of time on this call. Goodbye."
_LLM_DIDNT_CATCH = "Sorry, I didn't catch that. Could you say it again?"
_STILL_THERE = "Are you still there?"
_WHAT_CHANGE = "What needs changing?"

_MULTI_DIGIT_TYPES = frozenset({"phone", "integer", "number", "money", "digits"})


class _LoopOverflow(Exception):
    pass


class Engine:
    """One call's dialogue. See the module docstring for the driver contract.

    `today`: the date relative dates are read against (tests pin it); default: the date now
    in the flow's time zone.
    `clock`: monotonic seconds, used for transcript times when an event carries no `at`.
    `wall_clock`: the time of day (an aware datetime) that `now` and `hours` read; tests fix it.
    `llm_available`: whether the driver can execute `LlmRequest`s (default: the flow configures
    an LLM). Without it, `llm` states and the LLM fallback are skipped gracefully.
    """

    def __init__(
        self,
        flow: CompiledFlow,
        *,
        today: _dt.date | None = None,
        clock: Callable[[], float] | None = None,
        llm_available: bool | None = None,
        wall_clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self.flow = flow
        self._today = today
        self._clock = clock or time.monotonic
        self._wall = wall_clock or _utc_now
        self._moment: _dt.datetime | None = None  # the time of the event being handled
        self._prefilled: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.llm_available = flow.has_llm if llm_available is None else llm_available
        self._t0 = 0.0
        self._state: StateDef | None = None
        self._slots: dict[str, Any] = {}
        self._vars: dict[str, Any] = {}
        self._call: CallInfo = CallInfo(uuid="")
        self._context: dict[str, Any] = {}
        self._result: dict[str, Any] | None = None
        self._answer = ""
        self._intent: str | None = None
        self._ended = False
        # sub-flows: the calling flows waiting for a `return`, and the running one's params
        self._frames: tuple[Frame, ...] = ()  # replaced, never changed in place (cheap forks)
        self._params: Mapping[str, Any] = _NO_PARAMS
        self.record = CallRecord(uuid="", flow=flow.name)
        # listening
        # ask | collect | slot_confirm | confirm | confirm_fix | llm | clarify
        self._listen: str | None = None
        self._slot: str | None = None  # slot being asked / confirmed
        self._no_input = 0
        self._no_match = 0
        #: answers not understood over the whole call (never reset; `judge_answer` compares)
        self._misses = 0
        self._dtmf_buffer = ""
        self._last_filled: str | None = None
        # What the caller said in the task in hand (the answer that chose it, the answers
        # since), with the spans of words already used: offered to the slots later states
        # collect, so a detail said early is not asked for again.
        self._carry: list[tuple[str, tuple[tuple[int, int], ...]]] = []
        # "did you mean X or Y?": the two intents offered and what the caller first said
        self._clarify: tuple[tuple[str, str], str] | None = None
        # pending async work
        self._pending_tool: tuple[int, str, str, str] | None = None  # id, tool, purpose, llm id
        self._pending_llm: tuple[int, str, Any] | None = None  # id, purpose, info
        # a handler waiting for its tool (it speaks after), and what was being listened for
        self._pending_handler: tuple[Handler, str | None] | None = None
        self._llm_messages: list[LlmMessage] = []
        #: (say_id, index in _llm_messages) of the last spoken reply: a barge-in on it while it
        #: still plays rewrites it to the words the caller heard
        self._llm_spoken: tuple[int, int] | None = None
        self._llm_turns = 0
        self._llm_tool_rounds = 0
        self._llm_queue: list[LlmToolCall] = []
        # ids and output
        self._ids = 0
        self._out: list[Action] = []
        self._turn_says: list[tuple[str, bool]] = []
        self._last_turn_says: list[tuple[str, bool]] = []
        self._steps = 0
        self._in_error = False
        # the loop guard's record of this event only (None between events: nothing kept)
        self._trail: list[str] | None = None
        self._visits: set[str] | None = None
        self._marks: Marks | None = None

    # ------------------------------------------------------------------------------------------
    # public surface
    # ------------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The current state; inside a sub-flow `verify_caller.ask_dob`."""
        if self._state is None:
            return ""
        if self._frames:
            return f"{self._frames[-1].label}.{self._state.name}"
        return self._state.name

    @property
    def slots(self) -> dict[str, Any]:
        return dict(self._slots)

    @property
    def vars(self) -> dict[str, Any]:
        return dict(self._vars)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def listening(self) -> str | None:
        """What the engine is waiting for from the caller, or None (busy / ended)."""
        return None if self._ended else self._listen

    @property
    def intent(self) -> str | None:
        """The intent the caller's last request chose (`{{ intent }}` in templates), or None.
        Two branches of a question may go to the same state: this tells them apart."""
        return self._intent

    @property
    def waiting_for(self) -> str | None:
        """'tool' or 'llm' while an action's answer is outstanding, else None."""
        if self._pending_tool:
            return "tool"
        if self._pending_llm:
            return "llm"
        return None

    def start(self, call: CallInfo, *, at: float | None = None) -> list[Action]:
        return self.handle(CallStarted(call, at=at if at is not None else 0.0))

    def prefill(self, slots: Mapping[str, Any] | None = None,
                vars_: Mapping[str, Any] | None = None) -> None:
        """Before `start`: slots and variables the call begins with (conversation tests'
        `slots:`/`vars:`). Slot values are checked like answers; raises ValueError (naming
        the slot) for an unknown slot or a value it would refuse."""
        checked = {}
        for name, value in (slots or {}).items():
            if name not in self.flow.slots:
                raise ValueError(f"the flow has no slot called {name}")
            checked[name] = self._checked_slot_value(name, value)
        self._prefilled = (checked, dict(vars_ or {}))

    def fork(self) -> Engine:
        """An independent copy of this call's dialogue, to try an event on without touching
        the real one (preemptive generation: what would we answer if the caller's final words
        are the interim ones?). Cheap: the compiled flow, call info and immutable values are
        shared; every container the engine mutates (slots, vars, LLM history, the record's
        lists) is copied one level deep. The copy's actions must not be carried out for real
        unless the caller's words are confirmed."""
        other = copy.copy(self)
        other._slots = dict(self._slots)
        other._vars = dict(self._vars)
        other._context = dict(self._context)
        other._llm_messages = list(self._llm_messages)
        other._llm_queue = list(self._llm_queue)
        other._carry = list(self._carry)
        other._turn_says = list(self._turn_says)
        other._last_turn_says = list(self._last_turn_says)
        other._out = []
        other._frames = tuple(f.copied() for f in self._frames)
        other._params = dict(self._params) if self._frames else _NO_PARAMS
        rec = copy.copy(self.record)
        rec.transcript = list(rec.transcript)
        rec.tool_calls = list(rec.tool_calls)
        rec.states = list(rec.states)
        rec.turns = list(rec.turns)
        rec.errors = list(rec.errors)
        rec.slots = dict(rec.slots)
        rec.vars = dict(rec.vars)
        other.record = rec
        return other

    def judge_answer(self, text: str, *, at: float = 0.0) -> AnswerFit:
        """Would `text`, as the caller's whole answer, answer what we are listening for? Tried
        on a fork (nothing here changes): COMPLETE if the dialogue would move on (a slot filled,
        an intent chosen, a yes/no taken, a command), INCOMPLETE if it would ask again or ask
        "did you mean", OPEN if any words do (an LLM conversation) or an LLM would decide.
        The listener ends a turn sooner or later on it (see `answer_fit.py`)."""
        if self._ended or self._listen is None or self._listen == "llm" or not text.strip():
            return AnswerFit.OPEN
        fork = self.fork()
        fork.handle(UserUtterance(text, at=at))
        if fork._misses > self._misses:
            return AnswerFit.INCOMPLETE
        if fork._listen == "clarify" and self._listen != "clarify":
            return AnswerFit.INCOMPLETE
        if fork._pending_llm is not None and fork._pending_llm is not self._pending_llm:
            return AnswerFit.OPEN
        moved = (fork._ended or fork._state is not self._state or fork._listen != self._listen
                 or fork._slot != self._slot or fork._slots != self._slots
                 or fork._pending_tool is not None)
        if not moved:
            return AnswerFit.INCOMPLETE
        filled = {self.flow.slots[name].type: value for name, value in fork._slots.items()
                  if name in self.flow.slots and self._slots.get(name) != value}
        return AnswerFit.OPEN if may_go_on(text, filled) else AnswerFit.COMPLETE

    def handle(self, event: Any) -> list[Action]:
        """Feed one event; returns the actions to carry out, in order. Never raises."""
        self._out = []
        self._moment = None
        self._steps = 0
        self._in_error = False
        try:
            self._dispatch(event)
        except FlowFault as fault:
            self._fault(fault)
        except _LoopOverflow:
            route = " → ".join((self._trail or [])[-6:])
            self._error("the flow moved between states too many times without hearing the "
                        f"caller (last: {route})")
        except TemplateError as exc:  # e.g. arithmetic on a value a tool did not return
            self._error(f"a template in state {self.state!r} failed: {exc}")
        except Exception as exc:  # the engine must never take a call down
            self._error(f"internal error: {exc.__class__.__name__}: {exc}")
        out, self._out = self._out, []
        self._trail = self._visits = self._marks = None
        return out

    # ------------------------------------------------------------------------------------------
    # dispatch
    # ------------------------------------------------------------------------------------------

    def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, CallStarted):
            self._on_start(ev)
            return
        if self._state is None:
            return  # not started: nothing to do
        if isinstance(ev, ToolResult):
            self._on_tool_result(ev)
            return
        if isinstance(ev, Hangup):
            self._on_hangup(ev)
            return
        if self._ended:
            return
        if isinstance(ev, UserUtterance):
            self._begin_turn()
            self._on_utterance(ev)
        elif isinstance(ev, DtmfDigit):
            self._on_dtmf(ev)
        elif isinstance(ev, NoInput):
            if self._listen is not None and not self._pending_llm:
                self._begin_turn()
                self._on_no_input()
        elif isinstance(ev, TimerExpired):
            self._on_timer(ev)
        elif isinstance(ev, BargeIn):
            self._on_barge_in(ev)
        elif isinstance(ev, LlmResult):
            self._on_llm_result(ev)
        elif isinstance(ev, ProviderFailed):
            self.record.errors.append(f"{ev.kind}: {ev.message}")
            self._begin_turn()
            self._error(f"the {ev.kind} provider failed: {ev.message}")
        elif isinstance(ev, SpeechFinished | UserPartial):
            return

    def _now(self, ev: Any = None) -> float:
        at = getattr(ev, "at", 0.0) if ev is not None else 0.0
        return round((at or self._clock()) - self._t0, 3)

    def _begin_turn(self) -> None:
        if self._turn_says:
            self._last_turn_says = self._turn_says
        self._turn_says = []

    # ------------------------------------------------------------------------------------------
    # call start / end
    # ------------------------------------------------------------------------------------------

    def _on_start(self, ev: CallStarted) -> None:
        call = ev.call
        self._call = call
        self._t0 = ev.at or self._clock()
        self._context = dict(call.context) if call.context else self.flow.context_for(call.did)
        self.record = CallRecord(
            uuid=call.uuid, flow=self.flow.name, caller=call.caller, did=call.did,
            channel=call.channel,
        )
        self._vars = self.flow.initial_vars()
        if self._prefilled is not None:
            slots, vars_ = self._prefilled
            for name, value in slots.items():
                self._set_slot(name, value)
            self._vars.update(vars_)
            self.record.vars = dict(self._vars)
        self._emit(StartTimer("max_duration", self.flow.settings.max_call_s))
        self._enter(self.flow.start)

    def _on_hangup(self, ev: Hangup) -> None:
        if self._ended:
            return
        self._ended = True
        self._listen = None
        self.record.add(self._now(ev), "system", "caller hung up", self.state)
        self.record.finish("hangup_by_caller")
        self._sync_record()
        h = self._handler("event", "hangup")
        if h is not None and h.call and h.call in self.flow.tools:
            self._call_tool(self.flow.tools[h.call], purpose="hangup", args={})

    def _end(self, outcome: str, reason: str = "") -> None:
        self._emit(StopNoInputTimer())
        self._emit(CancelTimer("max_duration"))
        self._emit(EndCall(reason=outcome))
        self._ended = True
        self._listen = None
        self.record.finish(outcome, reason)
        self._sync_record()

    def _sync_record(self) -> None:
        """The record's slots are kept up to date as they change (a sub-flow's named by it,
        and kept after it returns); its vars are the calling flow's."""
        self.record.slots.update({self._rkey(k): v for k, v in self._slots.items()})
        self.record.vars = dict(self._frames[0].vars if self._frames else self._vars)

    def _rkey(self, name: str) -> str:
        """A slot's name in the call record: inside a sub-flow `verify_caller.dob`."""
        if not self._frames:
            return name
        return "".join(f"{f.label}." for f in self._frames) + name

    # ------------------------------------------------------------------------------------------
    # output helpers
    # ------------------------------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _interruptible(self) -> bool:
        st = self._state
        if st is not None and st.barge_in is not None:
            return st.barge_in
        return self.flow.settings.barge_in

    def _say_text(self, text: str, *, static: bool = False, expect: bool = False) -> None:
        text = text.strip()
        if not text:
            if expect:
                self._arm_no_input()
            return
        sid = self._next_id()
        self._emit(Say(sid, text, static=static, interruptible=self._interruptible(),
                       expect_reply=expect))
        self.record.add(self._now(), "agent", text, self.state, say_id=sid)
        self._turn_says.append((text, static))
        if expect:
            self._arm_no_input()

    def _say(self, tpl: Template | None, *, expect: bool = False, **extra: Any) -> None:
        if tpl is None:
            if expect:
                self._arm_no_input()
            return
        self._say_text(self._render(tpl, **extra), static=tpl.static, expect=expect)

    def _say_slot(self, slot: SlotDef, tpl: Template) -> None:
        """A slot's prompt or reprompt; options from a tool are said through `choices`."""
        if slot.choices_from is None:
            self._say(tpl, expect=True)
        else:
            self._say(tpl, expect=True, **self._slot_extra(slot))

    def _spoken(self, slot: SlotDef, value: Any) -> str:
        """A slot's value read back: an option from a tool as it was offered."""
        if slot.choices_from is not None and value is not None:
            if slot.choice_label is not None:
                return self._render(slot.choice_label, item=value)
            return default_label(value)
        return nlu.spoken_value(slot, value)

    def _slot_extra(self, slot: SlotDef) -> dict[str, Any]:
        if slot.choices_from is None:
            return {}
        return {"choices": self._offer(slot).spoken}

    def _offer(self, slot: SlotDef) -> Offer:
        """The options of a `choices_from` slot now, with how each is said."""
        assert slot.choices_from is not None
        where = f"slot `{slot.name}`, choices_from"
        items = self._value(slot.choices_from, where)
        if items is None:
            items = []
        if not isinstance(items, list | tuple):
            raise FlowFault("expression", self.state, where, slot.choices_from.source,
                            f"the options must be a list, but this gives {type(items).__name__}")
        labels = []
        for item in items:
            if slot.choice_label is not None:
                labels.append(self._render(slot.choice_label, item=item))
            else:
                labels.append(default_label(item))
        return Offer(tuple(items), tuple(labels))

    def _arm_no_input(self) -> None:
        st = self._state
        secs = self.flow.settings.no_input_timeout_s
        if st is not None and st.no_input_timeout_s is not None:
            secs = st.no_input_timeout_s
        self._emit(StartNoInputTimer(secs))

    # ------------------------------------------------------------------------------------------
    # template context
    # ------------------------------------------------------------------------------------------

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        c = self._call
        ctx: dict[str, Any] = {
            "slots": self._slots,
            "vars": self._vars,
            "context": self._context,
            "call": {
                "caller": c.caller,
                "did": c.did,
                "uuid": c.uuid,
                "channel": c.channel,
                "started_at": self.record.started_at,
                "metadata": c.metadata,
            },
            "result": self._result or {"ok": None, "status": None, "data": None, "error": ""},
            "answer": self._answer,
            "intent": self._intent,
            "params": self._params,
        }
        if self.flow.version >= 2:
            local = self._local_now()
            ctx["now"] = Now(local)
            ctx["hours"] = OpenNow(self.flow.hours, local)
        elif self._wall is _utc_now:  # format 1: the machine's local time, as always
            ctx["now"] = _dt.datetime.now()
        else:
            ctx["now"] = self._local_now().replace(tzinfo=None)
        ctx.update(extra)
        return ctx

    def _render(self, tpl: Template, **extra: Any) -> str:
        if tpl.static:
            return tpl.source
        try:
            return tpl.render(self._ctx(**extra))
        except Exception as exc:  # named, so the author can find it (steps/faults.py)
            raise FlowFault("template", self.state, self._template_where(tpl), tpl.source,
                            short_error(exc)) from None

    def _template_where(self, tpl: Template) -> str:
        """Which key of the flow a failing template is (looked up only on failure)."""
        st = self._state
        if st is not None:
            for key in ("say", "ask", "reprompt", "confirm", "transfer", "reason"):
                if getattr(st, key) is tpl:
                    return f"state `{st.name}`, {key}"
            if st.llm is not None and st.llm.instructions is tpl:
                return f"state `{st.name}`, llm instructions"
            for h in st.handlers.values():
                if h.say is tpl:
                    return f"the {h.trigger[1]} handler, say"
        for slot in self.flow.slots.values():
            for key in ("prompt", "reprompt", "invalid"):
                if getattr(slot, key) is tpl:
                    return f"slot `{slot.name}`, {key}"
        return f"state `{self.state}`"

    def _value(self, expr: Expression, where: str, ctx: Mapping[str, Any] | None = None) -> Any:
        """Work out a format-2 expression; a failure is named (FlowFault), never silent."""
        try:
            return expr(self._ctx() if ctx is None else ctx)
        except ExpressionError as exc:
            raise FlowFault("expression", self.state, where, expr.source, str(exc)) from None

    def _branch_holds(self, expr: Expression, st: StateDef, i: int,
                      ctx: Mapping[str, Any]) -> bool:
        try:
            return bool(expr(ctx))
        except ExpressionError as exc:
            raise FlowFault("expression", self.state, f"state `{st.name}`, branch {i + 1}",
                            expr.source, str(exc)) from None

    def _holds(self, expr: Expression, where: str, ctx: Mapping[str, Any] | None = None
               ) -> bool:
        """A condition. Format 1 keeps its old rule (an error is false); format 2 names it."""
        if self.flow.version < 2:
            return expr.test(self._ctx() if ctx is None else ctx)
        return bool(self._value(expr, where, ctx))

    def _assign(self, clears: tuple[tuple[str, str], ...],
                sets: tuple[tuple[str, str, Expression], ...], where: str) -> None:
        """`clear` then `set` (format 2), before anything is said."""
        if not clears and not sets:
            return
        try:
            changed = assign.apply(clears, sets, self._slots, self._vars, self._ctx,
                                   self._checked_slot_value, self.flow.initial_vars)
        except assign.AssignError as exc:
            raise FlowFault("expression", self.state, f"{where}, set {exc.target}", exc.source,
                            exc.error) from None
        for name in changed:
            if name in self._slots:
                self.record.slots[self._rkey(name)] = self._slots[name]
            else:
                self.record.slots.pop(self._rkey(name), None)
        self.record.vars = dict(self._vars)

    def _checked_slot_value(self, name: str, value: Any) -> Any:
        """A value `set` into a slot, checked like an answer (raises ValueError)."""
        slot = self.flow.slots.get(name)
        if slot is None:
            raise ValueError(f"there is no slot called {name}")
        if value is None or slot.list or slot.choices_from is not None:
            return value
        res = nlu.validate_value(self.flow, self.today(), slot, value)
        if not res.ok:
            raise ValueError(f"{value!r} is not a valid {slot.type} for slot {name}"
                             + (f": {res.reason}" if res.reason else ""))
        return res.value

    def today(self) -> _dt.date:
        return self._today or self._local_now().date()

    def _local_now(self) -> _dt.datetime:
        """This event's moment in the flow's time zone (format 1: the machine's own zone,
        as `now` always was). Read once per event, so one turn sees one time."""
        if self._moment is None:
            wall = self._wall()
            self._moment = (wall.astimezone(zone(self.flow.timezone))
                            if self.flow.version >= 2 else wall.astimezone())
        return self._moment

    # ------------------------------------------------------------------------------------------
    # states
    # ------------------------------------------------------------------------------------------

    def _enter(self, name: str) -> None:
        self._steps += 1
        if self._steps > MAX_TRANSITIONS_PER_EVENT:
            raise _LoopOverflow(name)
        st = self.flow.states[name]
        label = f"{self._frames[-1].label}.{name}" if self._frames else name
        if self._trail is None or self._visits is None:
            self._trail, self._visits = [label], {label}
        else:
            self._trail.append(label)
            if label in self._visits:
                if not self._in_error:
                    self._guard_loop(label, self._trail)
            else:
                self._visits.add(label)
        if self._listen is not None:
            self._emit(StopNoInputTimer())
        self._state = st
        self._listen = None
        self._slot = None
        self._no_input = 0
        self._no_match = 0
        self._dtmf_buffer = ""
        self._clarify = None
        self._pending_llm = None  # moving on abandons an answer still being waited for
        self._pending_tool = None
        self._pending_handler = None
        self.record.states.append(label)  # inside a sub-flow: `verify_caller.ask_dob`
        self._emit(StateEntered(label))
        # work out (`set`), speak (`say`), forget (`clear`), then the action
        if st.set:
            self._assign((), st.set, f"state `{name}`")
        self._say(st.say)
        if st.clear:
            self._assign(st.clear, (), f"state `{name}`")
        kind = st.kind
        if kind == "say":
            self._follow(st)
        elif kind == "ask":
            self._listen = "ask"
            self._say(st.ask, expect=True)
        elif kind == "collect":
            carried = self._carry_over()
            if carried:
                self._after_fill(carried)
            else:
                self._collect_next()
        elif kind == "call":
            tool = self.flow.tools.get(st.call or "")
            if tool is None:
                self._tool_failed(f"the tool {st.call!r} is not defined")
            else:
                self._call_tool(tool, purpose="state", args={})
        elif kind == "llm":
            self._llm_start()
        elif kind == "transfer":
            self._transfer(
                self._render(st.transfer) if st.transfer else "",
                self._render(st.reason) if st.reason else "",
            )
        elif kind == "end":
            self._end(st.outcome or "completed")
        elif kind == "subflow":
            self._call_subflow(st)
        elif kind == "return":
            self._return(st)

    # ------------------------------------------------------------------------------------------
    # sub-flows (format 2)
    # ------------------------------------------------------------------------------------------

    def _call_subflow(self, st: StateDef) -> None:
        assert st.subflow is not None
        sub = self.flow.subflows[st.subflow]
        given = {name: self._value(expr, f"state `{st.name}`, with {name}")
                 for name, expr in st.with_}
        self._frames = (*self._frames, Frame(self.flow, st.name, self._slots, self._vars,
                                             dict(self._params), self._carry,
                                             label_of(st.subflow)))
        self.flow = sub
        self._slots = {}
        self._vars = sub.initial_vars()
        self._params = parameters(sub, given)
        self._carry = []
        self.record.add(self._now(), "system", f"sub-flow {label_of(st.subflow)}", self.state)
        self._enter(sub.start)

    def _return(self, st: StateDef) -> None:
        values = {name: self._value(expr, f"state `{st.name}`, return {name}")
                  for name, expr in st.returns}
        if not self._frames:  # a sub-flow run on its own: its return ends the call
            self._end(st.outcome or "completed")
            return
        frame, self._frames = self._frames[-1], self._frames[:-1]
        self.record.add(self._now(), "system", f"back from {frame.label}", frame.state)
        self._leave(frame)
        self._vars.update(values)
        self.record.vars = dict(self._vars)
        calling = self.flow.states[frame.state]
        self._state = calling
        self._follow(calling)

    def _leave(self, frame: Frame) -> None:
        """Back to the calling flow (after a `return`, or when its handler takes over)."""
        self.flow = frame.flow
        self._slots = frame.slots
        self._vars = frame.vars
        self._params = frame.params
        self._carry = frame.carry

    def _unwind_to(self, home: str) -> None:
        """A calling flow's handler fired inside a sub-flow: leave the sub-flows up to the
        flow that owns the handler (its `go` names that flow's states)."""
        while self._frames and self.flow.path != home:
            frame, self._frames = self._frames[-1], self._frames[:-1]
            self.record.add(self._now(), "system", f"left {frame.label}", frame.state)
            self._leave(frame)

    def _guard_loop(self, label: str, trail: list[str]) -> None:
        """A state entered again in this event: stop the round if it repeats with nothing
        changed (steps/loop_guard.py)."""
        if self._marks is None:
            self._marks = {}
        loop = revisit(self._marks, trail, label, self._snapshot(), len(self._out),
                       len(self.record.transcript))
        if loop is None:
            return
        del self._out[loop.out_at:]  # the caller hears the round once, not twice
        del self.record.transcript[loop.said_at:]
        route = " → ".join(loop.states)
        raise FlowFault("loop", self.state, f"states {route}", route,
                        "the flow went round these states without listening to the caller or "
                        "changing any slot or variable, so it would never stop")

    def _snapshot(self) -> str:
        return repr((self._slots, self._vars, len(self._frames)))

    def _transfer(self, target: str, reason: str = "") -> None:
        self.record.transfer_target = target
        self._emit(StopNoInputTimer())
        self._emit(CancelTimer("max_duration"))
        self._emit(Transfer(target=target, reason=reason))
        self._ended = True
        self._listen = None
        self.record.finish("transferred", reason)
        self._sync_record()

    def _follow(self, st: StateDef, intent: str | None = None, *, from_answer: bool = False
                ) -> bool:
        """Take the first branch of `st.next` that holds. Returns False if none does."""
        ctx = None
        v1 = self.flow.version < 2
        for i, b in enumerate(st.next):
            if b.intent is not None and b.intent != intent:
                continue
            if b.when is not None:
                if ctx is None:
                    ctx = self._ctx()
                if not (b.when.test(ctx) if v1 else self._branch_holds(b.when, st, i, ctx)):
                    continue
            self._enter(b.go)
            return True
        if not from_answer:
            # a non-ask state whose conditions all fail has nowhere to go: that is an error
            self._error(f"no branch of state {st.name!r} applies")
        return False

    # ------------------------------------------------------------------------------------------
    # asking again
    # ------------------------------------------------------------------------------------------

    def _question(self) -> None:
        """(Re)ask whatever we are listening for."""
        st = self._state
        assert st is not None
        mode = self._listen
        if mode == "ask":
            self._say(st.reprompt or st.ask, expect=True)
        elif mode == "collect" and self._slot:
            slot = self.flow.slots[self._slot]
            self._say_slot(slot, slot.reprompt)
        elif mode == "repeat" and st.repeat is not None:
            self._say(st.repeat.ask, expect=True)
        elif mode == "slot_confirm" and self._slot:
            self._ask_slot_confirm(self._slot, again=True)
        elif mode == "confirm":
            self._say_text("Please say yes or no.", static=True)
            self._say(st.confirm, expect=True)
        elif mode == "confirm_fix":
            self._say_text(self._which_detail(), expect=True)
        elif mode == "llm":
            self._say_text(_LLM_DIDNT_CATCH, static=True, expect=True)
        elif mode == "clarify" and self._clarify is not None:
            self._say_clarify()
        else:
            self._arm_no_input()

    def _which_detail(self) -> str:
        st = self._state
        names = [n.replace("_", " ") for n in (st.collect if st else ())]
        if not names:
            return _WHAT_CHANGE
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"Sorry, which detail needs changing: the {listed}?"

    def _on_no_input(self) -> None:
        self._emit(StopNoInputTimer())
        self.record.add(self._now(), "system", "no input", self.state)
        self._no_input += 1
        if self._no_input > self.flow.settings.no_input_reprompts:
            self._event_handler("no_input", _DEFAULT_NO_INPUT)
            return
        if self._listen == "llm":
            self._say_text(_STILL_THERE, static=True, expect=True)
            return
        self._question()

    def _no_match_again(self, invalid: str | None = None) -> None:
        """The answer was not understood (or invalid): reprompt, or the no_match handler."""
        self._no_match += 1
        self._misses += 1
        if self._no_match > self.flow.settings.no_match_reprompts:
            self._event_handler("no_match", _DEFAULT_NO_MATCH)
            return
        if invalid:
            self._say_text(invalid, expect=True)
            return
        self._question()

    # ------------------------------------------------------------------------------------------
    # handlers
    # ------------------------------------------------------------------------------------------

    def _handler(self, kind: str, name: str) -> Handler | None:
        st = self._state
        table = st.handlers if st is not None else self.flow.handlers
        return table.get((kind, name))

    def _event_handler(self, name: str, default_say: str) -> None:
        h = self._handler("event", name)
        if h is None:
            self._say_text(default_say, static=True)
            self._end("error" if name == "error" else name)
            return
        self._run_handler(h)

    def _run_handler(self, h: Handler) -> None:
        self.record.add(self._now(), "system", f"handler {h.trigger[0]} {h.trigger[1]}", self.state)
        if h.trigger == ("intent", "cancel"):
            self._cancel_task()
        tool = self.flow.tools.get(h.call) if h.call else None
        if tool is not None and h.trigger != ("event", "hangup"):
            # a side question: the tool runs first, so what the handler says can use it
            self._pending_handler = (h, self._listen)
            self._listen = None
            self._emit(StopNoInputTimer())
            self._call_tool(tool, purpose="handler", args={})
            return
        self._finish_handler(h)

    def _finish_handler(self, h: Handler) -> None:
        """A handler after its tool (if any): clear/set, say, then go or do."""
        self._assign((), h.set, f"the {h.trigger[1]} handler")
        if h.say is not None and h.trigger != ("event", "hangup"):
            self._say(h.say)
        self._assign(h.clear, (), f"the {h.trigger[1]} handler")
        if h.go:
            if h.home and h.home != self.flow.path:
                self._unwind_to(h.home)
            self._enter(h.go)
            return
        do = h.do or "continue"
        if do == "repeat":
            self._repeat()
        elif do == "restart":
            while self._frames:
                frame, self._frames = self._frames[-1], self._frames[:-1]
                self._leave(frame)
            self._carry = []
            self._slots.clear()
            self._vars = self.flow.initial_vars()
            self.record.slots.clear()
            self._result = None
            self._enter(self.flow.start)
        elif do == "hangup":
            self._end(h.trigger[1] if h.trigger[0] == "event" else "hangup")
        else:  # continue: carry on with what we were asking
            if h.trigger in (("event", "no_input"), ("event", "no_match")):
                self._no_input = 0
                self._no_match = 0
            if self._pending_tool or self._pending_llm:
                return
            self._question()

    def _repeat(self) -> None:
        says = self._last_turn_says
        if not says or self._listen is None:
            self._question()
            return
        for i, (text, static) in enumerate(says):
            self._say_text(text, static=static, expect=i == len(says) - 1)

    def _handler_intent(self, text: str, extra: tuple[str, ...] = ()) -> tuple[str | None, bool]:
        """Match `text` against the state's intent handlers (+ `extra` branch intents).
        Returns (intent, is_handler)."""
        st = self._state
        assert st is not None
        candidates = (extra + tuple(i for i in st.handler_intents if i not in extra)
                      if extra else st.handler_intents)
        if not candidates:
            return None, False
        name = nlu.match_intent(self.flow, text, candidates)
        if name is None:
            return None, False
        return name, ("intent", name) in st.handlers and name not in extra

    # ------------------------------------------------------------------------------------------
    # caller speech
    # ------------------------------------------------------------------------------------------

    def _on_utterance(self, ev: UserUtterance) -> None:
        text = ev.text.strip()
        self._emit(StopNoInputTimer())
        self.record.add(self._now(ev), "caller", text, self.state)
        self.record.turns.append(TurnLatency(index=len(self.record.turns), state=self.state))
        if not text:
            if self._listen is not None:
                self._on_no_input()
            return
        self._answer = text
        self._dtmf_buffer = ""
        pending = self._pending_llm
        if pending is not None and pending[1] == "extract":
            self._pending_llm = None  # a newer answer replaces the one being read by the LLM
        elif pending is not None and self._state is not None and self._state.kind == "llm":
            self._llm_interrupted("")  # the caller talked over the LLM's reply
        if self._listen is None:
            # busy (tool/LLM in flight): only handlers can act on what the caller said
            name, is_handler = self._handler_intent(text)
            if is_handler and name:
                self._intent = name
                self._drop_pending()
                self._run_handler(self._state.handlers[("intent", name)])  # type: ignore[union-attr]
            return
        mode = self._listen
        if mode == "ask":
            self._answer_ask(text)
        elif mode == "collect":
            self._answer_collect(text)
        elif mode == "slot_confirm":
            self._answer_slot_confirm(text)
        elif mode == "confirm":
            self._answer_confirm(text)
        elif mode == "confirm_fix":
            self._answer_confirm_fix(text)
        elif mode == "llm":
            self._answer_llm(text)
        elif mode == "clarify":
            self._answer_clarify(text)
        elif mode == "repeat":
            self._answer_repeat(text)

    # -- ask ----------------------------------------------------------------------------------

    def _answer_ask(self, text: str) -> None:
        st = self._state
        assert st is not None
        if self._correct_earlier(text):
            self._say(st.ask, expect=True)
            return
        branch_intents = st.branch_intents
        intent: str | None = None
        if any(i in ("yes", "no") for i in branch_intents):
            yn = nlu.yes_no(text)
            if yn is not None:
                intent = "yes" if yn else "no"
        is_handler = False
        if intent is None:
            intent, is_handler = self._handler_intent(text, branch_intents)
        if is_handler and intent:
            self._intent = intent
            self._run_handler(st.handlers[("intent", intent)])
            return
        if self._ask_which(text, intent):
            return
        if intent is not None and self._unsure(text, intent):
            self._request_extract(text, intents=st.branch_intents, guess=intent)
            return
        self._resolve_ask(intent, text=text)

    def _ask_which(self, text: str, intent: str | None) -> bool:
        """With `settings.clarify`: when the two best of this question's intents fit almost
        equally, ask "Did you mean X, or Y?" rather than guess. True when asked."""
        st = self._state
        assert st is not None
        if not self.flow.settings.clarify:
            return False
        options = tuple(i for i in st.branch_intents if i not in ("yes", "no"))
        ranked = nlu.ranked_intents(self.flow, text, options)
        if len(ranked) < 2 or (intent is not None and intent != ranked[0][0]):
            return False
        (first, s1), (second, s2) = ranked[0], ranked[1]
        floor = nlu.intent_threshold(self.flow) - CLARIFY_BELOW
        if s2 < floor or s1 - s2 >= CLARIFY_MARGIN:
            return False
        self._clarify = ((first, second), text)
        self._listen = "clarify"
        self._no_match = 0
        self.record.add(self._now(), "system", f"did you mean {first} or {second}", self.state)
        self._say_clarify()
        return True

    def _say_clarify(self) -> None:
        assert self._clarify is not None
        a, b = (self.flow.intent_labels.get(i, i.replace("_", " ")) for i in self._clarify[0])
        self._say_text(f"Sorry, did you mean {a}, or {b}?", expect=True)

    def _answer_clarify(self, text: str) -> None:
        assert self._clarify is not None
        (first, second), said = self._clarify
        labels = {i: self.flow.intent_labels.get(i, i.replace("_", " ")) for i in (first, second)}
        picked = nlu.choose_between(text, labels)
        if picked is None:
            match = nlu.match_intent(self.flow, text, (first, second))
            picked = match
        if picked is None and nlu.yes_no(text) is False:  # neither: ask the question again
            self._clarify = None
            self._listen = "ask"
            st = self._state
            assert st is not None
            self._say(st.reprompt or st.ask, expect=True)
            return
        if picked is None:
            name, is_handler = self._handler_intent(text)
            if is_handler and name:
                self._clarify = None
                self._run_handler(self._state.handlers[("intent", name)])  # type: ignore[union-attr]
                return
            self._no_match_again()
            return
        self._clarify = None
        self._listen = "ask"
        self._resolve_ask(picked, text=said)

    def _unsure(self, text: str, intent: str) -> bool:
        """With `settings.llm_fallback_below`: the intent was found, but with less confidence
        than the flow asks for, and an LLM can decide instead."""
        below = self.flow.settings.llm_fallback_below
        if below <= 0 or not self._llm_fallback_ok():
            return False
        st = self._state
        assert st is not None
        ranked = dict(nlu.ranked_intents(self.flow, text, st.branch_intents))
        return ranked.get(intent, 0.0) < below

    def _resolve_ask(self, intent: str | None, *, text: str | None = None,
                     ask_llm: bool = True) -> None:
        """Take the branch the answer selects; if none does and the parsers found no intent,
        ask the LLM (when allowed) before counting a no-match."""
        st = self._state
        assert st is not None
        if intent is None and text is not None:
            intent = self._intent_by_values(st, text)
        self._intent = intent
        if text is not None:
            self._carry = [(text, ())]  # a new task: what it was chosen with comes along
        if self._follow(st, intent, from_answer=True):
            return
        if (ask_llm and text is not None and intent is None and st.branch_intents
                and self._llm_fallback_ok()):
            self._request_extract(text, intents=st.branch_intents)
            return
        self._no_match_again()

    def _intent_by_values(self, st: StateDef, text: str) -> str | None:
        """No intent matched, but the answer is made of values that only one branch's next
        state collects ("three ham and pineapple, large" at a menu whose `order` branch
        collects pizza, size and quantity): that branch's intent. Free-text and yes/no slots
        take any words, so they decide nothing; a question about values gives none ("do you
        have vegetarian pizzas")."""
        if nlu.is_question(text):
            return None
        found: set[str] = set()
        for b in st.next:
            target = self.flow.states.get(b.go)
            if b.intent is None or b.intent in ("yes", "no") or target is None:
                continue
            wanted = {n: self.flow.slots[n] for n in target.collect
                      if n in self.flow.slots and self.flow.slots[n].type
                      not in (*nlu.FREE_TEXT_TYPES, "yes_no")}
            if wanted and any(r.ok for r in nlu.extract(
                    self.flow, self.today(), text, wanted, None).values()):
                found.add(b.intent)
        return found.pop() if len(found) == 1 else None

    # -- collect ------------------------------------------------------------------------------

    def _collect_next(self) -> None:
        st = self._state
        assert st is not None
        for name in st.collect:
            if self._slots.get(name) is None:
                self._listen = "collect"
                if self._slot != name:
                    self._no_match = 0
                    self._no_input = 0
                self._slot = name
                slot = self.flow.slots[name]
                if slot.choices_from is not None and not self._offer(slot).items:
                    self.record.add(self._now(), "system", f"no options for {name}", self.state)
                    self._event_handler("no_match", _DEFAULT_NO_MATCH)
                    return
                if slot.choices_from is None:
                    self._say(slot.prompt, expect=True)
                else:
                    self._say_slot(slot, slot.prompt)
                return
        self._slot = None
        if st.confirm is not None:
            self._listen = "confirm"
            self._no_match = 0
            self._no_input = 0
            self._say(st.confirm, expect=True)
            return
        self._listen = None
        self._collect_done(st)

    def _collect_done(self, st: StateDef) -> None:
        """Every slot collected (and confirmed): next state, or another round."""
        if st.repeat is None:
            self._follow(st)
            return
        rep = st.repeat
        record = lists.round_record(rep, st.collect, self._slots,
                                    lambda e, w: self._value(e, f"state `{st.name}`, {w}"))
        try:
            self._vars[rep.to] = lists.appended(self._vars.get(rep.to), record)
        except lists.ListFull as exc:
            raise FlowFault("expression", self.state, f"state `{st.name}`, repeat",
                            f"vars.{rep.to}", str(exc)) from None
        for name in st.collect:
            self._slots.pop(name, None)
            self.record.slots.pop(self._rkey(name), None)
        self.record.vars = dict(self._vars)
        self._carry = []  # this item's words are used up
        if rep.until is not None and self._holds(rep.until, f"state `{st.name}`, repeat until"):
            self._follow(st)
            return
        self._listen = "repeat"
        self._no_match = 0
        self._no_input = 0
        self._say(rep.ask, expect=True)

    def _answer_repeat(self, text: str) -> None:
        """"Anything else?": yes, or naming the next item, goes round again; no moves on."""
        st = self._state
        assert st is not None and st.repeat is not None
        handler = nlu.match_intent_scored(self.flow, text, st.handler_intents)
        if handler is not None and (handler[1] >= STRONG_HANDLER_MATCH or nlu.is_command(text)):
            self._run_handler(st.handlers[("intent", handler[0])])
            return
        # a value of a kind that cannot be mistaken for "yes" ("and a pepperoni")
        wanted = {n: self.flow.slots[n] for n in st.collect
                  if self.flow.slots[n].type not in nlu.FREE_TEXT_TYPES}
        results = self._listify(self._guarded(
            nlu.extract(self.flow, self.today(), text, wanted, None)), text)
        filled = self._apply(results)
        if filled:
            self._listen = "collect"
            self._remember(text, [results[n] for n in filled])
            self._after_fill(filled)
            return
        yn = nlu.yes_no(text)
        if yn is True:
            self._listen = "collect"
            self._collect_next()
            return
        if yn is False:
            self._listen = None
            self._follow(st)
            return
        if handler is not None:
            self._run_handler(st.handlers[("intent", handler[0])])
            return
        self._no_match_again()

    def _listify(self, results: Mapping[str, Any], text: str) -> Mapping[str, Any]:
        """List slots keep every value one answer gives ("ham and mushrooms")."""
        if not self.flow.checks_answers:
            return results
        out = dict(results)
        for name, res in results.items():
            slot = self.flow.slots.get(name)
            if slot is not None and slot.list and getattr(res, "ok", False):
                values = nlu.all_choices(slot, text) if slot.type == "choice" else []
                out[name] = nlu.accepted(values or lists.as_list(res.value), res)
        return out

    def _match_offer(self, name: str, text: str) -> dict[str, Any]:
        """A choice from a tool's list: which option the caller named."""
        slot = self.flow.slots[name]
        offer = self._offer(slot)
        index = nlu.match_option(text, offer.items, offer.labels, self.today())
        if index is None:
            return {}
        return {name: nlu.accepted(offer.items[index], None)}

    def _wanted(self, *, include_filled: bool = False) -> dict[str, SlotDef]:
        st = self._state
        assert st is not None
        order = list(st.collect)
        if self._slot in order:  # the slot being asked first: an ambiguous answer is for it
            order.remove(self._slot)
            order.insert(0, self._slot)
        return {
            n: self.flow.slots[n]
            for n in order
            if include_filled or self._slots.get(n) is None
        }

    def _answer_collect(self, text: str) -> None:
        st = self._state
        assert st is not None
        # A clear "speak to a person" / "say that again" wins over slot values (a text slot
        # would take any words); a weak handler match only counts if no slot value was heard.
        handler = nlu.match_intent_scored(self.flow, text, st.handler_intents)
        if handler is not None and (handler[1] >= STRONG_HANDLER_MATCH or nlu.is_command(text)):
            self._intent = handler[0]
            self._run_handler(st.handlers[("intent", handler[0])])
            return
        current = self._slot
        results: dict[str, Any] = {}
        if nlu.is_correction(text):
            # "no, I said LS12 5AB" changes the earlier answer; it is not also this one
            results = nlu.corrections(self.flow, self.today(), text, self._filled_defs(),
                                      self._slots, self._last_filled)
        corrected = bool(results)
        if not results and current is not None and self.flow.checks_answers:
            cur_slot = self.flow.slots[current]
            if cur_slot.choices_from is not None:
                results = self._match_offer(current, text)
            elif cur_slot.list and cur_slot.type == "choice":
                values = nlu.all_choices(cur_slot, text)
                results = {current: nlu.accepted(values, None)} if values else {}
        if not results:
            results = nlu.extract(self.flow, self.today(), text, self._wanted(), current)
        answers = self._listify(self._guarded(results), text)
        filled = self._apply(answers)
        cur = answers.get(current) if current else None
        if filled:
            if not corrected:
                self._remember(text, [answers[n] for n in filled])
            self._acknowledge([n for n in filled if n not in st.collect])
            self._after_fill(filled)
            return
        if handler is not None:
            self._intent = handler[0]
            self._run_handler(st.handlers[("intent", handler[0])])
            return
        if cur is not None and current is not None and cur.invalid:
            self._no_match_again(invalid=self._invalid_text(self.flow.slots[current], cur))
            return
        if self._llm_fallback_ok():
            self._request_extract(text, slots=tuple(self._wanted()))
            return
        self._no_match_again()

    def _invalid_text(self, slot: SlotDef, res: Any) -> str:
        """The slot's `invalid` message, else a short reason followed by the reprompt."""
        extra = self._slot_extra(slot)
        if slot.invalid is not None and not nlu.needs_year(res):
            return self._render(slot.invalid, **extra)
        return f"{nlu.invalid_reason(res)} {self._render(slot.reprompt, **extra)}"

    def _filled_defs(self) -> dict[str, SlotDef]:
        """Every filled slot a correction may change: this state's first, then the rest of
        the call's, most recently filled first."""
        st = self._state
        assert st is not None
        names = [n for n in st.collect if self._slots.get(n) is not None]
        names += [n for n in reversed(self._slots)
                  if n not in names and n in self.flow.slots and self._slots[n] is not None]
        return {n: self.flow.slots[n] for n in names}

    def _carry_over(self) -> list[str]:
        """Fill this collect state's open slots from what the caller already said in the
        task (newest first), each word used once. Returns the slots filled."""
        st = self._state
        assert st is not None
        wanted = {n: self.flow.slots[n] for n in st.collect if self._slots.get(n) is None}
        filled: list[str] = []
        for i in range(len(self._carry) - 1, -1, -1):
            if not wanted:
                break
            text, used = self._carry[i]
            results = nlu.extract(self.flow, self.today(), text, wanted, None, used)
            got = {n: r for n, r in results.items() if r.ok}
            if not got:
                continue
            self._carry[i] = (text, used + tuple(r.span for r in got.values() if r.span))
            for name in self._apply(got):
                filled.append(name)
                wanted.pop(name, None)
        if filled:
            self.record.add(self._now(), "system", f"already said: {', '.join(filled)}",
                            self.state)
        return filled

    def _remember(self, text: str, used: list[Any]) -> None:
        """Keep an answer for the states after this one, minus the words it used."""
        self._carry.append((text, tuple(r.span for r in used if r.span)))
        del self._carry[:-8]

    def _cancel_task(self) -> None:
        """The caller cancelled: drop the details of the task in hand. A flow has no task
        boundaries, so the task is the group of slots the current state collects."""
        st = self._state
        self._carry = []
        for name in (st.collect if st is not None else ()):
            self._slots.pop(name, None)
            self.record.slots.pop(self._rkey(name), None)

    def _acknowledge(self, changed: list[str]) -> None:
        """Say what changed when a correction reached back to an earlier state's slot."""
        for name in changed:
            slot = self.flow.slots[name]
            value = self._spoken(slot, self._slots.get(name))
            self._say_text(f"Thanks, I've changed the {name.replace('_', ' ')} to {value}.")

    def _correct_earlier(self, text: str) -> bool:
        """A correction of any filled slot ("sorry, I meant the 6th") where the state was
        not asking for one; True when something changed (it has been acknowledged)."""
        if not self._slots or not nlu.is_correction(text):
            return False
        fixed = self._apply(nlu.corrections(self.flow, self.today(), text, self._filled_defs(),
                                            self._slots, self._last_filled))
        if not fixed:
            return False
        self._acknowledge(fixed)
        return True

    def _guarded(self, results: Mapping[str, Any]) -> Mapping[str, Any]:
        """Answers the slot's `valid_when` refuses become invalid ones (format 2)."""
        if not self.flow.checks_answers:
            return results
        out = dict(results)
        for name, res in results.items():
            slot = self.flow.slots.get(name)
            if slot is not None and slot.valid_when is not None and getattr(res, "ok", False) \
                    and not self._passes(slot, res.value):
                out[name] = nlu.guard_failed(res.value)
        return out

    def _passes(self, slot: SlotDef, value: Any) -> bool:
        assert slot.valid_when is not None
        return self._holds(slot.valid_when, f"slot `{slot.name}`, valid_when",
                           self._ctx(value=value))

    def _apply(self, results: Mapping[str, Any]) -> list[str]:
        filled = []
        for name, res in results.items():
            if name in self.flow.slots and getattr(res, "ok", False):
                slot = self.flow.slots[name]
                if slot.valid_when is not None and not self._passes(slot, res.value):
                    continue
                self._set_slot(name, res.value)
                filled.append(name)
        return filled

    def _set_slot(self, name: str, value: Any) -> None:
        if self.flow.checks_answers and self.flow.slots[name].list:
            value = lists.as_list(value)
        self._last_filled = name
        self._slots.pop(name, None)  # the dict's order is the order slots were last filled
        self._slots[name] = value
        self.record.slots[self._rkey(name) if self._frames else name] = value

    def _after_fill(self, filled: list[str]) -> None:
        for name in filled:
            if self.flow.slots[name].confirm:
                self._ask_slot_confirm(name)
                return
        self._collect_next()

    def _ask_slot_confirm(self, name: str, *, again: bool = False) -> None:
        self._listen = "slot_confirm"
        self._slot = name
        value = self._spoken(self.flow.slots[name], self._slots.get(name))
        prefix = "Sorry, was that" if again else "I have"
        self._say_text(f"{prefix} {value}. Is that right?", expect=True)

    def _answer_slot_confirm(self, text: str) -> None:
        name = self._slot
        assert name is not None
        if nlu.is_correction(text):
            fixed = self._apply(nlu.corrections(self.flow, self.today(), text,
                                                self._filled_defs(), self._slots, name))
            if fixed:
                self._acknowledge([n for n in fixed if n != name])
                self._ask_slot_confirm(name)
                return
        yn = nlu.yes_no(text)
        if yn is True:
            self._no_match = 0
            self._listen = "collect"
            self._collect_next()
            return
        # "no", or a different value: try to read the new value from what was said
        res = nlu.extract(self.flow, self.today(), text, {name: self.flow.slots[name]},
                          name).get(name)
        if res is not None and res.ok and res.value != self._slots.get(name):
            self._set_slot(name, res.value)
            self._ask_slot_confirm(name)
            return
        if yn is False:
            self._slots.pop(name, None)
            self.record.slots.pop(self._rkey(name), None)
            self._listen = "collect"
            self._slot = name
            self._say_slot(self.flow.slots[name], self.flow.slots[name].reprompt)
            return
        name2, is_handler = self._handler_intent(text)
        if is_handler and name2:
            self._run_handler(self._state.handlers[("intent", name2)])  # type: ignore[union-attr]
            return
        self._no_match_again()

    # -- state confirm ------------------------------------------------------------------------

    def _answer_confirm(self, text: str) -> None:
        # a changed value wins over a "yes" in the same breath ("yes, but it's 4 bedrooms")
        fixed = self._apply(nlu.corrections(self.flow, self.today(), text, self._filled_defs(),
                                            self._slots, self._last_filled))
        if fixed:
            self._no_match = 0
            self._collect_next()  # asks anything now missing, then confirms again
            return
        yn = nlu.yes_no(text)
        if yn is True:
            self._listen = None
            self._collect_done(self._state)  # type: ignore[arg-type]
            return
        if yn is False:
            self._listen = "confirm_fix"
            self._no_match = 0
            self._say_text(_WHAT_CHANGE, static=True, expect=True)
            return
        name, is_handler = self._handler_intent(text)
        if is_handler and name:
            self._run_handler(self._state.handlers[("intent", name)])  # type: ignore[union-attr]
            return
        self._no_match_again()

    def _answer_confirm_fix(self, text: str) -> None:
        name, is_handler = self._handler_intent(text)
        if is_handler and name:
            self._run_handler(self._state.handlers[("intent", name)])  # type: ignore[union-attr]
            return
        if nlu.yes_no(text) is True:  # "actually it's fine"
            self._listen = None
            self._collect_done(self._state)  # type: ignore[arg-type]
            return
        defs = self._filled_defs()
        results = nlu.corrections(self.flow, self.today(), text, defs, self._slots,
                                  self._last_filled)
        if not results:
            results = nlu.extract(self.flow, self.today(), text,
                                  self._wanted(include_filled=True), None)
        changed = self._apply(results)
        if changed:
            self._no_match = 0
            self._collect_next()
            return
        # the caller named a detail without its value ("the date"): forget it and ask again
        named = nlu.named_slot(text, self._wanted(include_filled=True))
        if named:
            self._slots.pop(named, None)
            self.record.slots.pop(self._rkey(named), None)
            self._no_match = 0
            self._collect_next()
            return
        if self._llm_fallback_ok():
            self._request_extract(text, slots=tuple(self._wanted(include_filled=True)))
            return
        self._no_match_again()

    # ------------------------------------------------------------------------------------------
    # DTMF
    # ------------------------------------------------------------------------------------------

    def _dtmf_slot(self) -> SlotDef | None:
        if self._listen == "collect" and self._slot:
            slot = self.flow.slots[self._slot]
            if slot.dtmf:
                return slot
        return None

    def _on_dtmf(self, ev: DtmfDigit) -> None:
        digit = ev.digit
        self.record.add(self._now(ev), "caller", f"[keypad {digit}]", self.state)
        if not self.flow.settings.dtmf_enabled:
            return
        slot = self._dtmf_slot()
        multi = slot is not None and slot.type in _MULTI_DIGIT_TYPES
        if not (multi and (self._dtmf_buffer or digit.isdigit())):
            h = self._handler("dtmf", digit)
            if h is not None:
                self._begin_turn()
                self._emit(StopNoInputTimer())
                self._dtmf_buffer = ""
                self._run_handler(h)
                return
        if self._listen is None:
            return
        if multi and not digit.isdigit() and digit != self.flow.settings.dtmf_terminator:
            return  # a key no entry uses (`*`): ignored, and the caller is still asked
        self._emit(StopNoInputTimer())
        if multi and slot is not None:
            if digit == self.flow.settings.dtmf_terminator:
                self._emit(CancelTimer("dtmf"))
                self._dtmf_complete()
                return
            if not digit.isdigit():
                return
            self._dtmf_buffer += digit
            if nlu.dtmf_entry_full(slot, self._dtmf_buffer):
                self._emit(CancelTimer("dtmf"))
                self._dtmf_complete()
            else:
                self._emit(StartTimer("dtmf", self.flow.settings.dtmf_digit_timeout_s))
            return
        self._begin_turn()
        self._dtmf_single(digit, slot)

    def _dtmf_single(self, digit: str, slot: SlotDef | None) -> None:
        mode = self._listen
        if slot is not None:
            if slot.choices_from is not None:
                offer = self._offer(slot)
                index = nlu.dtmf_option(digit, len(offer.items))
                raw = nlu.accepted(offer.items[index], None) if index is not None \
                    else nlu.not_understood()
            else:
                raw = nlu.dtmf_value(self.flow, self.today(), slot, digit)
            res = self._listify(self._guarded({slot.name: raw}), "")[slot.name]
            if res.ok:
                self._set_slot(slot.name, res.value)
                self._after_fill([slot.name])
                return
            self._no_match_again()
            return
        if mode in ("confirm", "slot_confirm", "repeat") and digit in "12":
            self._on_utterance_like("yes" if digit == "1" else "no")
            return
        if mode == "ask" and digit in "12":
            st = self._state
            assert st is not None
            if {"yes", "no"} & set(st.branch_intents):
                self._resolve_ask("yes" if digit == "1" else "no")
                return
        self._no_match_again()

    def _on_utterance_like(self, text: str) -> None:
        if self._listen == "confirm":
            self._answer_confirm(text)
        elif self._listen == "slot_confirm":
            self._answer_slot_confirm(text)
        elif self._listen == "repeat":
            self._answer_repeat(text)

    def _dtmf_complete(self) -> None:
        digits, self._dtmf_buffer = self._dtmf_buffer, ""
        self._begin_turn()
        if not digits:
            self._no_match_again()
            return
        h = self._handler("dtmf", digits)
        slot = self._dtmf_slot()
        if h is not None and len(digits) == 1:
            self._run_handler(h)
            return
        if slot is None:
            return
        res = self._guarded({slot.name: nlu.dtmf_value(self.flow, self.today(), slot,
                                                       digits)})[slot.name]
        if res.ok:
            self._set_slot(slot.name, res.value)
            self._after_fill([slot.name])
            return
        if res.invalid:
            self._no_match_again(invalid=self._invalid_text(slot, res))
            return
        self._no_match_again()

    # ------------------------------------------------------------------------------------------
    # timers, barge-in
    # ------------------------------------------------------------------------------------------

    def _on_timer(self, ev: TimerExpired) -> None:
        if ev.name == "max_duration":
            self._begin_turn()
            self._drop_pending()
            self.record.add(self._now(ev), "system", "maximum call length reached", self.state)
            self._event_handler("max_duration", _DEFAULT_MAX_DURATION)
        elif ev.name == "dtmf":
            if self._dtmf_buffer:
                self._dtmf_complete()
        elif ev.name == "no_input" and self._listen is not None and not self._pending_llm:
            self._begin_turn()
            self._on_no_input()

    def _on_barge_in(self, ev: BargeIn) -> None:
        pending = self._pending_llm
        if pending is not None and pending[1] == "reply":
            # a barge-in cuts every reply being spoken: the one on the line was heard in part
            self._llm_interrupted(ev.heard if pending[0] == ev.say_id else "")
        else:
            self._llm_heard(ev.say_id, ev.heard)
        entry = self.record.agent_line(ev.say_id)
        if entry is not None:
            entry.heard = ev.heard
        self.record.add(self._now(ev), "system", "caller interrupted", self.state)
        if self._listen is not None:
            self._emit(StopNoInputTimer())  # the caller is talking; their words come next

    # ------------------------------------------------------------------------------------------
    # tools
    # ------------------------------------------------------------------------------------------

    def _call_tool(self, tool: ToolDef, *, purpose: str, args: dict[str, Any],
                   llm_call_id: str = "") -> None:
        problem = self._check_tool(tool, args)
        cid = self._next_id()
        if problem:
            self.record.tool_calls.append(ToolCallRecord(
                cid, tool.name, {}, self.state, self._now(), None, False, problem, 0.0))
            if purpose == "state":
                self._tool_failed(problem)
            elif purpose == "llm":
                self._llm_tool_answer(llm_call_id, {"error": problem})
            return
        request = self._tool_request(tool, args)
        self.record.tool_calls.append(ToolCallRecord(
            cid, tool.name, redact_request(request), self.state, self._now()))
        self._pending_tool = (cid, tool.name, purpose, llm_call_id) if purpose != "hangup" else None
        self._emit(CallTool(cid, tool.name, request, tool.timeout_s, tool.retries,
                            self.flow.settings.tool_response_limit_kb * 1024))

    def _check_tool(self, tool: ToolDef, args: dict[str, Any]) -> str:
        missing = [s for s in tool.needs if self._slots.get(s) is None]
        if missing:
            return (f"the {tool.name} tool needs {', '.join(missing)}, which "
                    f"{'has' if len(missing) == 1 else 'have'} not been collected")
        for name, spec in tool.args.items():
            if name not in args or args[name] is None:
                if spec.required:
                    return f"the {tool.name} tool needs the argument {name}"
                continue
            ok, value = nlu.coerce_arg(spec.type, args[name])
            if not ok:
                return f"the {tool.name} tool's argument {name} must be {spec.type}"
            args[name] = value
        unknown = [a for a in args if a not in tool.args]
        for a in unknown:
            args.pop(a)
        return ""

    def _tool_request(self, tool: ToolDef, args: dict[str, Any]) -> dict[str, Any]:
        ctx = self._ctx(args=args)
        if tool.python:
            return {
                "python": tool.python,
                "args": dict(args),
                "context": {
                    "slots": dict(self._slots),
                    "vars": dict(self._vars),
                    "call": dict(ctx["call"]),
                    "context": dict(self._context),
                },
            }
        req: dict[str, Any] = {
            "method": tool.method,
            "url": tool.url.render(ctx) if tool.url else "",
            "headers": {k: v.render(ctx) for k, v in tool.headers},
        }
        if tool.body is not None:
            req["json"] = _render_body(tool.body, ctx)
        return req

    def _on_tool_result(self, ev: ToolResult) -> None:
        rec = self.record.tool_call(ev.call_id)
        if rec is not None and rec.ok is None:
            rec.ok = ev.ok
            rec.status = ev.status
            rec.error = ev.error
            rec.duration_s = round(max(0.0, self._now(ev) - rec.at), 3)
        pending = self._pending_tool
        if self._ended or pending is None or pending[0] != ev.call_id:
            return  # stale (e.g. the caller asked for a person meanwhile)
        self._pending_tool = None
        _, name, purpose, llm_id = pending
        tool = self.flow.tools.get(name)
        self._result = {"ok": ev.ok, "status": ev.status, "data": ev.data, "error": ev.error}
        if ev.ok and tool is not None:
            self._save(tool, ev.data)
        if purpose == "llm":
            self._llm_tool_answer(llm_id, ev.data if ev.ok else {"error": ev.error})
            return
        if purpose == "handler" and self._pending_handler is not None:
            h, listen = self._pending_handler
            self._pending_handler = None
            self._listen = listen
            if ev.ok:
                self._finish_handler(h)
                return
            self.record.errors.append(ev.error)
            self.record.add(self._now(), "system", f"tool failed: {ev.error}", self.state)
            if tool is not None and tool.on_failure:
                self._enter(tool.on_failure)
                return
            fail = self._handler("event", "tool_failure")
            if fail is not None:
                self._run_handler(fail)
            else:
                self._question()  # carry on with what was being asked
            return
        if ev.ok:
            self._follow(self._state)  # type: ignore[arg-type]
        else:
            self.record.errors.append(ev.error)
            self._tool_failed(ev.error, tool)

    def _save(self, tool: ToolDef, data: Any) -> None:
        if not tool.save:
            return
        ctx = self._ctx(response=data)
        for var, expr in tool.save:
            try:
                self._vars[var] = expr(ctx)
            except Exception:
                self._vars[var] = None
        self.record.vars = dict(self._vars)

    def _tool_failed(self, error: str, tool: ToolDef | None = None) -> None:
        st = self._state
        assert st is not None
        if self._result is None or self._result.get("ok") is not False:
            self._result = {"ok": False, "status": None, "data": None, "error": error}
        self.record.add(self._now(), "system", f"tool failed: {error}", self.state)
        target = st.on_failure or (tool.on_failure if tool else None)
        if target is None and st.call in self.flow.tools:
            target = self.flow.tools[st.call].on_failure  # type: ignore[index]
        if target:
            self._enter(target)
            return
        h = self._handler("event", "tool_failure")
        if h is not None:
            self._run_handler(h)
            return
        self._error(error)

    # ------------------------------------------------------------------------------------------
    # errors
    # ------------------------------------------------------------------------------------------

    def _error(self, reason: str) -> None:
        """The `error` path. Runs the flow's error handler once per event; if that fails too
        (or loops), the call ends."""
        self.record.errors.append(reason)
        self.record.add(self._now(), "system", f"error: {reason}", self.state)
        self._drop_pending()
        if self._ended:
            return
        if self._in_error or self._state is None:
            self._hard_end()
            return
        self._in_error = True
        self._steps = 0
        try:
            h = self._handler("event", "error")
            if h is not None:
                self._run_handler(h)
                return
            self._say_text(_DEFAULT_ERROR, static=True)
            human = self._handler("intent", "human")
            if human is not None and human.go:
                self._enter(human.go)
            else:
                self._end("error", reason)
        except Exception:
            self._hard_end()

    def _drop_pending(self) -> None:
        """Forget the tool/LLM answer being waited for; a handler waiting for its tool gives
        back what was being listened for, so "carry on" still knows what to ask."""
        self._pending_tool = None
        self._pending_llm = None
        if self._pending_handler is not None:
            self._listen = self._pending_handler[1]
            self._pending_handler = None

    def _fault(self, fault: FlowFault) -> None:
        """A template, expression or loop failed: say so by name (action, record, log) and
        take the flow's own error path (for a loop without an `error` handler: `no_match`)."""
        self._emit(fault.problem())
        if fault.kind == "loop" and self._handler("event", "error") is None:
            fallback = self._handler("event", "no_match")
            if fallback is not None and not self._ended:
                self.record.errors.append(fault.sentence())
                self.record.add(self._now(), "system", f"error: {fault.sentence()}", self.state)
                self._drop_pending()
                self._in_error = True
                self._steps = 0
                try:
                    self._run_handler(fallback)
                except Exception:
                    self._hard_end()
                return
        self._error(fault.sentence())

    def _hard_end(self) -> None:
        if self._ended:
            return
        self._say_text(_DEFAULT_ERROR + " Goodbye.", static=True)
        self._end("error")

    # ------------------------------------------------------------------------------------------
    # LLM
    # ------------------------------------------------------------------------------------------

    def _llm_fallback_ok(self) -> bool:
        return self.flow.settings.llm_fallback and self.llm_available

    def _request_extract(self, text: str, *, slots: tuple[str, ...] = (),
                         intents: tuple[str, ...] = (), guess: str | None = None) -> None:
        rid = self._next_id()
        if slots:
            props = {
                n: {"type": "string", "description": self._render(self.flow.slots[n].prompt)
                    + f" (type: {self.flow.slots[n].type})"}
                for n in slots
            }
            tool = LlmToolSpec(
                "fill_slots",
                "Record the details the caller gave, exactly as they said them. "
                "Leave out anything they did not say.",
                {"type": "object", "properties": props},
            )
            system = ("You read what a caller said on the phone and record details with the "
                      "fill_slots tool. Call it once; include only details the caller gave.")
        else:
            tool = LlmToolSpec(
                "choose_intent",
                "Say which of the listed intents the caller meant, or none.",
                {"type": "object",
                 "properties": {"intent": {"type": "string", "enum": [*intents, "none"]}},
                 "required": ["intent"]},
            )
            examples = "; ".join(
                f"{i}: {', '.join(self.flow.intents.get(i, ())[:3])}" for i in intents)
            system = ("You classify what a caller said on the phone. Call choose_intent once. "
                      f"Intents with examples — {examples}.")
        self._pending_llm = (rid, "extract", {"slots": slots, "intents": intents, "text": text,
                                              "guess": guess})
        self._emit(LlmRequest(
            rid,
            (LlmMessage("system", system), LlmMessage("user", text)),
            (tool,),
            speak=False,
            purpose="extract",
        ))

    def _on_extract_result(self, ev: LlmResult, info: dict[str, Any]) -> None:
        args: dict[str, Any] = {}
        for tc in ev.tool_calls:
            if isinstance(tc.arguments, dict):
                args.update(tc.arguments)
        if info["intents"]:
            # the LLM decides; if it failed, the words' own best guess (if any) stands
            name = args.get("intent") if ev.ok else info.get("guess")
            self._resolve_ask(name if name in info["intents"] else None, text=info["text"],
                              ask_llm=False)
            return
        results: dict[str, Any] = {}
        if ev.ok:
            for n in info["slots"]:
                raw = args.get(n)
                if raw in (None, ""):
                    continue
                res = nlu.validate_value(self.flow, self.today(), self.flow.slots[n], raw)
                if res.ok:
                    results[n] = res
        filled = self._apply(results)
        if filled:
            self._no_match = 0 if self._listen == "confirm_fix" else self._no_match
            if self._listen == "confirm_fix":
                self._listen = "collect"
            self._after_fill(filled)
            return
        self._no_match_again()

    def _llm_start(self) -> None:
        st = self._state
        assert st is not None and st.llm is not None
        if not self.llm_available:
            self.record.add(self._now(), "system", "no LLM configured: skipping llm state",
                            self.state)
            self._follow(st)
            return
        self._llm_turns = 0
        self._llm_tool_rounds = 0
        self._llm_queue = []
        system = self._render(st.llm.instructions) + (
            "\n\nYou are speaking on the phone: reply in one or two short sentences, "
            "plain words, no lists or markdown."
        )
        self._llm_messages = [LlmMessage("system", system)]
        self._llm_spoken = None
        if self._answer and self.record.transcript and self.record.transcript[-1].who == "caller":
            self._llm_messages.append(LlmMessage("user", self._answer))
        self._llm_send()

    def _llm_interrupted(self, heard: str) -> None:
        """The caller spoke over a streamed LLM reply: keep what they heard as the assistant's
        turn, drop the rest (its late `LlmResult` is ignored) and listen."""
        pending = self._pending_llm
        self._pending_llm = None
        if pending is None:
            return
        if heard.strip():
            self._llm_messages.append(LlmMessage("assistant", heard.strip()))
            self.record.add(self._now(), "agent", heard.strip(), self.state, say_id=pending[0],
                            heard=heard.strip())
        self._llm_turns += 1
        self._listen = "llm"

    def _llm_heard(self, say_id: int, heard: str) -> None:
        """The caller cut a reply whose whole text the history already holds (it had been
        generated before they spoke): keep only what they heard of it."""
        spoken, self._llm_spoken = self._llm_spoken, None
        if spoken is None or spoken[0] != say_id or spoken[1] >= len(self._llm_messages):
            return
        msg = self._llm_messages[spoken[1]]
        if heard.strip() or msg.tool_calls:
            self._llm_messages[spoken[1]] = LlmMessage("assistant", heard.strip(),
                                                       tool_calls=msg.tool_calls)
        else:
            del self._llm_messages[spoken[1]]  # none of it was heard

    def _llm_tools(self) -> tuple[LlmToolSpec, ...]:
        st = self._state
        assert st is not None and st.llm is not None
        specs = []
        for name in st.llm.tools:
            if name in BUILTIN_TOOL_SPECS:
                specs.append(BUILTIN_TOOL_SPECS[name])
            elif name in self.flow.tools:
                tool = self.flow.tools[name]
                props = {a.name: {"type": nlu.json_type(a.type), "description": a.description}
                         for a in tool.args.values()}
                required = [a.name for a in tool.args.values() if a.required]
                specs.append(LlmToolSpec(name, tool.description or name, {
                    "type": "object", "properties": props, "required": required}))
        return tuple(specs)

    def _llm_send(self) -> None:
        rid = self._next_id()
        self._pending_llm = (rid, "reply", None)
        self._emit(LlmRequest(rid, tuple(self._llm_messages), self._llm_tools(), speak=True,
                              say_id=rid, purpose="reply"))

    def _answer_llm(self, text: str) -> None:
        st = self._state
        assert st is not None and st.llm is not None
        name, is_handler = self._handler_intent(text)
        if is_handler and name:
            self._intent = name
            self._run_handler(st.handlers[("intent", name)])
            return
        self._intent = nlu.match_intent(self.flow, text, tuple(self.flow.intents))
        if st.llm.until is not None and st.llm.until.test(self._ctx()):
            self._listen = None
            self._follow(st)
            return
        self._listen = None
        self._llm_tool_rounds = 0
        self._llm_messages.append(LlmMessage("user", text))
        self._llm_send()

    def _on_llm_result(self, ev: LlmResult) -> None:
        pending = self._pending_llm
        if pending is None or pending[0] != ev.request_id:
            return
        self._pending_llm = None
        _, purpose, info = pending
        if purpose == "extract":
            self._on_extract_result(ev, info)
            return
        st = self._state
        assert st is not None and st.llm is not None
        if not ev.ok:
            if ev.text.strip():  # part of the reply was heard before it failed (e.g. its TTS)
                self.record.add(self._now(ev), "agent", ev.text.strip(), self.state,
                                say_id=ev.request_id, heard=ev.text.strip())
            self.record.errors.append(f"llm: {ev.error}")
            self._error(f"the LLM failed: {ev.error}")
            return
        if ev.text.strip():
            self.record.add(self._now(ev), "agent", ev.text.strip(), self.state,
                            say_id=ev.request_id)
            self._turn_says.append((ev.text.strip(), False))
        self._llm_messages.append(LlmMessage("assistant", ev.text, tool_calls=ev.tool_calls))
        self._llm_spoken = (ev.request_id, len(self._llm_messages) - 1)
        if ev.tool_calls:
            self._llm_queue = list(ev.tool_calls)
            self._llm_next_tool()
            return
        self._llm_after_reply(spoke=bool(ev.text.strip()))

    def _llm_after_reply(self, *, spoke: bool) -> None:
        st = self._state
        assert st is not None and st.llm is not None
        self._llm_turns += 1
        if (st.llm.until is not None and st.llm.until.test(self._ctx())) or (
            self._llm_turns >= st.llm.max_turns
        ):
            self._follow(st)
            return
        self._listen = "llm"
        if spoke:
            self._arm_no_input()
        else:
            self._say_text(_LLM_DIDNT_CATCH, static=True, expect=True)

    def _llm_next_tool(self) -> None:
        if not self._llm_queue:
            self._llm_tool_rounds += 1
            if self._llm_tool_rounds > MAX_LLM_TOOL_ROUNDS:
                self._llm_after_reply(spoke=False)
                return
            self._llm_send()
            return
        tc = self._llm_queue.pop(0)
        st = self._state
        assert st is not None and st.llm is not None
        self.record.add(self._now(), "system", f"llm calls {tc.name}", self.state)
        if tc.name not in st.llm.tools:
            self._llm_tool_answer(tc.id, {"error": f"the tool {tc.name} is not allowed here"})
            return
        args = dict(tc.arguments or {})
        if tc.name == "transfer":
            human = self._handler("intent", "human")
            if human is not None and human.go:
                self._enter(human.go)
            else:
                self._transfer(str(args.get("target", "")), str(args.get("reason", "")))
            return
        if tc.name == "hangup":
            self._end(st.outcome or "completed")
            return
        if tc.name == "send_dtmf":
            self._emit(SendDtmf(str(args.get("digits", ""))))
            self._llm_tool_answer(tc.id, {"ok": True})
            return
        self._call_tool(self.flow.tools[tc.name], purpose="llm", args=args, llm_call_id=tc.id)

    def _llm_tool_answer(self, call_id: str, data: Any) -> None:
        self._llm_messages.append(
            LlmMessage("tool", json.dumps(data, default=str), tool_call_id=call_id))
        self._llm_next_tool()


_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _render_body(body: Any, ctx: Mapping[str, Any]) -> Any:
    if isinstance(body, Template):
        return body.source if body.static else body.render_value(ctx)
    if isinstance(body, Mapping):
        return {k: _render_body(v, ctx) for k, v in body.items()}
    if isinstance(body, tuple):
        return [_render_body(v, ctx) for v in body]
    return body
