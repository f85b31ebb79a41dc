"""The flow side of a speech-to-speech (STS) call: what the model is told, which tools it gets,
what a tool call or a handler means, and the call record. Pure — no I/O; `sts_session` does that.

Why not the dialogue engine: with `providers: sts` the model itself listens, decides and speaks,
so the engine's step-by-step states (ask, collect, reprompt) do not run. What still comes from the
flow, and is enforced here rather than left to the model:

* **Instructions.** A fixed phone-style preamble, the flow's name/description/language, then the
  rendered `instructions` of the conversation state — the first `llm` state reached from `start`
  — or, if the flow has none, a generated outline of its `say`/`ask`/`collect` steps. Then the
  slots the offered tools need, with their prompts ("Details you may need").
* **Greeting.** The `say` texts from `start` up to the conversation state, spoken by the model
  word for word when the call connects.
* **Tools.** The conversation state's `llm.tools` (without an `llm` state: every flow tool, plus
  `transfer` if the flow has a transfer state, plus `hangup`). A flow tool's parameters are its
  `args` plus the slots in its `needs`; the model's values are checked and normalised by the slot
  parsers (postcodes, dates, numbers, ranges), stored as slots, and the tool's own url/headers/
  body templates are rendered exactly as in the engine. An invalid value goes back to the model as
  an error naming the slot, so it asks the caller again.
* **Handlers.** `dtmf` handlers, `error`, `max_duration` and `hangup` (its `call:` tool) work as
  in the engine; a handler's `go` is followed through `say` states to a transfer or an end.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowagent.dialogue import nlu
from flowagent.dialogue.actions import Action, CallTool
from flowagent.dialogue.call_record import CallRecord, ToolCallRecord, redact_request
from flowagent.dialogue.engine import _DEFAULT_ERROR, _DEFAULT_MAX_DURATION, _render_body
from flowagent.dialogue.events import CallInfo, Hangup, ToolResult
from flowagent.dialogue.llm_tools import BUILTIN_TOOL_SPECS
from flowagent.flow.compiler import BUILTIN_TOOLS, CompiledFlow, Handler, StateDef, ToolDef
from flowagent.providers.base import LlmToolCall, LlmToolSpec

PREAMBLE = (
    "You are a voice agent answering a telephone call. Speak naturally in short sentences, one "
    "or two at a time, and ask for one thing at a time. Never use lists, markdown or emoji. "
    "Say numbers, dates and postcodes the way a person would say them aloud."
)

#: how far a handler's `go` is followed through `say` states before giving up (loops)
MAX_ROUTE_STEPS = 40


@dataclass(frozen=True, slots=True)
class Route:
    """Where a handler or a built-in tool leads: words to say first, then transfer | end |
    continue (the conversation with the model goes on)."""

    say: str = ""
    action: str = "continue"
    target: str = ""
    reason: str = ""
    outcome: str = ""


class StsDialogue:
    """One STS call's flow logic and record. Also stands in for the engine where the shared call
    session code expects one (`record`, `ended`, `handle(Hangup)`)."""

    def __init__(self, flow: CompiledFlow, call: CallInfo,
                 clock: Callable[[], float]) -> None:
        self.flow = flow
        self.call = call
        self._clock = clock
        self.context: dict[str, Any] = (dict(call.context) if call.context
                                        else flow.context_for(call.did))
        self.slots: dict[str, Any] = {}
        self.vars: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.ended = False
        self.record = CallRecord(uuid=call.uuid, flow=flow.name, caller=call.caller,
                                 did=call.did, channel=call.channel)
        self._ids = 0
        self._pending: dict[int, tuple[ToolDef, str]] = {}  # call_id -> tool, model call id
        greeting, stop = self._walk_from(flow.start)
        self.greeting = greeting
        #: the state whose instructions the model follows (record lines are filed under it)
        self.state = stop.name if stop is not None else flow.start
        self.conversation: StateDef | None = self._conversation_state()
        #: when the flow's start leads straight to a transfer/end (no conversation at all)
        self.opening: Route | None = None
        if stop is not None and stop.kind in ("transfer", "end"):
            self.opening = self._terminal(stop, greeting)
        for name in self._visited:
            self.record.states.append(name)

    # -- template context ---------------------------------------------------------------------

    def ctx(self, **extra: Any) -> dict[str, Any]:
        c = self.call
        ctx: dict[str, Any] = {
            "slots": self.slots, "vars": self.vars, "context": self.context,
            "call": {"caller": c.caller, "did": c.did, "uuid": c.uuid, "channel": c.channel,
                     "started_at": self.record.started_at, "metadata": c.metadata},
            "result": self.result or {"ok": None, "status": None, "data": None, "error": ""},
            "answer": "", "intent": None, "now": _dt.datetime.now(),
        }
        ctx.update(extra)
        return ctx

    def _render(self, tpl: Any) -> str:
        if tpl is None:
            return ""
        try:
            return str(tpl.source if tpl.static else tpl.render(self.ctx())).strip()
        except Exception as exc:  # a template a flow author got wrong must not end the call
            self.record.errors.append(f"template failed: {exc}")
            return ""

    def now(self) -> float:
        return round(self._clock(), 3)

    # -- walking the flow ---------------------------------------------------------------------

    def _walk_from(self, name: str | None) -> tuple[str, StateDef | None]:
        """Follow `say` states from `name`; returns their words and the first other state
        (its own `say` included), or None if the walk loops or breaks."""
        words: list[str] = []
        self._visited: list[str] = []
        for _ in range(MAX_ROUTE_STEPS):
            st = self.flow.states.get(name or "")
            if st is None:
                return " ".join(words), None
            self._visited.append(st.name)
            text = self._render(st.say)
            if text:
                words.append(text)
            if st.kind != "say":
                return " ".join(words), st
            name = self._next(st)
        return " ".join(words), None

    def _next(self, st: StateDef) -> str | None:
        ctx = None
        for b in st.next:
            if b.intent is not None:
                continue
            if b.when is not None:
                ctx = ctx or self.ctx()
                if not b.when.test(ctx):
                    continue
            return b.go
        return None

    def _conversation_state(self) -> StateDef | None:
        """The first `llm` state reachable from `start` (breadth first, in branch order)."""
        seen: set[str] = set()
        queue = deque([self.flow.start])
        while queue:
            st = self.flow.states.get(queue.popleft())
            if st is None or st.name in seen:
                continue
            seen.add(st.name)
            if st.kind == "llm":
                return st
            queue.extend(b.go for b in st.next)
            if st.on_failure:
                queue.append(st.on_failure)
        return None

    def _terminal(self, st: StateDef, said: str) -> Route:
        if st.kind == "transfer":
            return Route(said, "transfer", self._render(st.transfer), self._render(st.reason))
        if st.kind == "end":
            return Route(said, "end", outcome=st.outcome or "completed")
        return Route(said, "continue")

    def route_to(self, state: str | None, said: str = "") -> Route:
        words, stop = self._walk_from(state)
        self.record.states.extend(self._visited)
        text = " ".join(t for t in (said, words) if t)
        if stop is None:
            return Route(text, "continue")
        return self._terminal(stop, text)

    def handler(self, kind: str, name: str) -> Handler | None:
        st = self.flow.states.get(self.state)
        table = st.handlers if st is not None else self.flow.handlers
        return table.get((kind, name))

    def handler_route(self, kind: str, name: str) -> Route | None:
        """What a `dtmf`/`event` handler of the current state does, or None if there is none."""
        h = self.handler(kind, name)
        if h is None:
            return None
        self.note(f"handler {kind} {name}")
        said = self._render(h.say)
        if h.go:
            return self.route_to(h.go, said)
        if h.do == "hangup":
            return Route(said, "end", outcome=name if kind == "event" else "hangup")
        return Route(said, "continue")

    def error_route(self, reason: str) -> Route:
        """The flow's `error` handler; without one: apologise, then the `human` handler's
        state if there is one, else end the call (as the engine does)."""
        self.record.errors.append(reason)
        self.note(f"error: {reason}")
        route = self.handler_route("event", "error")
        if route is not None:
            return route
        human = self.handler("intent", "human")
        if human is not None and human.go:
            return self.route_to(human.go, _DEFAULT_ERROR)
        return Route(_DEFAULT_ERROR, "end", outcome="error")

    def max_duration_route(self) -> Route:
        self.note("maximum call length reached")
        route = self.handler_route("event", "max_duration")
        return route or Route(_DEFAULT_MAX_DURATION, "end", outcome="max_duration")

    # -- what the model is told ----------------------------------------------------------------

    def offered_tools(self) -> tuple[str, ...]:
        if self.conversation is not None and self.conversation.llm is not None:
            return tuple(self.conversation.llm.tools)
        names = list(self.flow.tools)
        if any(s.kind == "transfer" for s in self.flow.states.values()):
            names.append("transfer")
        return (*names, "hangup")

    def _needed_slots(self) -> list[str]:
        if self.conversation is None:
            return list(self.flow.slots)
        names: list[str] = []
        for t in self.offered_tools():
            tool = self.flow.tools.get(t)
            if tool is not None:
                names += [n for n in tool.needs if n in self.flow.slots and n not in names]
        return names

    def instructions(self) -> str:
        f = self.flow
        parts = [PREAMBLE, f"You work for {f.name}." + (f" {f.description}" if f.description
                                                         else "")]
        if f.language:
            parts.append(f"Speak in the language of the locale {f.language}.")
        st = self.conversation
        if st is not None and st.llm is not None:
            parts.append(self._render(st.llm.instructions))
        else:
            parts.append(self._outline())
        slots = self._needed_slots()
        if slots:
            lines = [f"- {n} ({_type_words(f.slots[n].type)}): {self._render(f.slots[n].prompt)}"
                     for n in slots]
            parts.append("Details you may need from the caller (ask for them in this order, "
                         "and pass them to tools exactly as you understood them):\n"
                         + "\n".join(lines))
        offered = self.offered_tools()
        if "transfer" in offered:
            parts.append("If the caller wants a person, or you cannot help, tell them you are "
                         "putting them through and call the transfer tool.")
        if "hangup" in offered:
            parts.append("When the caller has finished, say goodbye and call the hangup tool.")
        return "\n\n".join(p for p in parts if p)

    def _outline(self) -> str:
        """Instructions for a flow without an `llm` state: its steps, in order."""
        steps: list[str] = []
        seen: set[str] = set()
        queue = deque([self.flow.start])
        while queue and len(steps) < 40:
            st = self.flow.states.get(queue.popleft())
            if st is None or st.name in seen:
                continue
            seen.add(st.name)
            for tpl in (st.say, st.ask):
                text = self._render(tpl)
                if text:
                    steps.append(f"- {text}")
            for n in st.collect:
                if n in self.flow.slots:
                    steps.append(f"- ask: {self._render(self.flow.slots[n].prompt)}")
            queue.extend(b.go for b in st.next)
        return ("Follow this script, in your own words where it helps the caller:\n"
                + "\n".join(steps))

    def tool_specs(self) -> tuple[LlmToolSpec, ...]:
        specs: list[LlmToolSpec] = []
        for name in self.offered_tools():
            if name in BUILTIN_TOOL_SPECS:
                specs.append(BUILTIN_TOOL_SPECS[name])
            elif name in self.flow.tools:
                tool = self.flow.tools[name]
                props: dict[str, Any] = {}
                required: list[str] = []
                for n in tool.needs:
                    slot = self.flow.slots.get(n)
                    if slot is None:
                        continue
                    prop: dict[str, Any] = {
                        "type": nlu.json_type(slot.type),
                        "description": f"{self._render(slot.prompt)} ({_type_words(slot.type)})"}
                    choices = getattr(slot.options, "choices", None)
                    if slot.type == "choice" and choices:
                        prop["enum"] = list(choices)
                    props[n] = prop
                    required.append(n)
                for a in tool.args.values():
                    props[a.name] = {"type": nlu.json_type(a.type), "description": a.description}
                    if a.required:
                        required.append(a.name)
                specs.append(LlmToolSpec(name, tool.description or name, {
                    "type": "object", "properties": props, "required": required}))
        return tuple(specs)

    # -- tool calls ---------------------------------------------------------------------------

    def tool_call(self, tc: LlmToolCall) -> CallTool | Route | dict[str, Any]:
        """A function call from the model: a `CallTool` to run, a `Route` (transfer/hangup), or
        the output to send straight back (an error the model should act on)."""
        self.note(f"model calls {tc.name} {json.dumps(tc.arguments, default=str)}")
        if tc.name not in self.offered_tools():
            return {"error": f"the tool {tc.name} is not available"}
        args = dict(tc.arguments or {})
        if tc.name == "transfer":
            human = self.handler("intent", "human")
            if human is not None and human.go:
                return self.route_to(human.go)
            st = next((s for s in self.flow.states.values() if s.kind == "transfer"), None)
            if st is not None:
                return self.route_to(st.name)
            if args.get("target"):
                return Route("", "transfer", str(args["target"]), str(args.get("reason", "")))
            return {"error": "no transfer target is configured; carry on helping the caller"}
        if tc.name == "hangup":
            return Route("", "end", outcome="completed")
        if tc.name == "send_dtmf":
            return Route(str(args.get("digits", "")), "dtmf")
        tool = self.flow.tools[tc.name]
        problems: list[str] = []
        values: dict[str, Any] = {}
        for n in tool.needs:
            slot = self.flow.slots.get(n)
            raw = args.pop(n, None)
            if slot is None:
                continue
            if raw is None or raw == "":
                if self.slots.get(n) is None:
                    problems.append(f"{n} is missing (ask: {self._render(slot.prompt)})")
                continue
            from flowagent.understanding import slots as S

            res = S.validate_value(slot.type, raw, slot.options, today=_dt.date.today(),
                                   region=nlu.region(self.flow))
            if res.ok:
                values[n] = res.value
            else:
                reason = (res.reason or "it was not understood").rstrip(".")
                problems.append(f"{n} {raw!r} is not valid: {reason}")
        for name, spec in tool.args.items():
            if args.get(name) is None:
                if spec.required:
                    problems.append(f"the argument {name} is missing")
                continue
            ok, value = nlu.coerce_arg(spec.type, args[name])
            if ok:
                args[name] = value
            else:
                problems.append(f"the argument {name} must be {spec.type}")
        args = {k: v for k, v in args.items() if k in tool.args}
        self._ids += 1
        cid = self._ids
        if problems:
            error = "; ".join(problems)
            self.record.tool_calls.append(ToolCallRecord(
                cid, tool.name, {}, self.state, self.now(), None, False, error, 0.0))
            return {"error": error + ". Ask the caller again, then call the tool again."}
        self.slots.update(values)
        self.record.slots = dict(self.slots)
        request = self._request(tool, args)
        self.record.tool_calls.append(ToolCallRecord(
            cid, tool.name, redact_request(request), self.state, self.now()))
        self._pending[cid] = (tool, tc.id)
        return CallTool(cid, tool.name, request, tool.timeout_s, tool.retries,
                        self.flow.settings.tool_response_limit_kb * 1024)

    def _request(self, tool: ToolDef, args: dict[str, Any]) -> dict[str, Any]:
        ctx = self.ctx(args=args)
        if tool.python:
            return {"python": tool.python, "args": dict(args), "context": {
                "slots": dict(self.slots), "vars": dict(self.vars), "call": dict(ctx["call"]),
                "context": dict(self.context)}}
        req: dict[str, Any] = {
            "method": tool.method,
            "url": tool.url.render(ctx) if tool.url else "",
            "headers": {k: v.render(ctx) for k, v in tool.headers},
        }
        if tool.body is not None:
            req["json"] = _render_body(tool.body, ctx)
        return req

    def tool_result(self, ev: ToolResult) -> dict[str, Any]:
        """Record a tool's result, save its vars; returns the output for the model."""
        rec = self.record.tool_call(ev.call_id)
        if rec is not None and rec.ok is None:
            rec.ok, rec.status, rec.error = ev.ok, ev.status, ev.error
            rec.duration_s = round(max(0.0, self.now() - rec.at), 3)
        tool, _ = self._pending.pop(ev.call_id, (None, ""))
        self.result = {"ok": ev.ok, "status": ev.status, "data": ev.data, "error": ev.error}
        if not ev.ok:
            self.record.errors.append(ev.error)
            self.note(f"tool failed: {ev.error}")
            return {"error": ev.error}
        if tool is not None:
            for var, expr in tool.save:
                try:
                    self.vars[var] = expr(self.ctx(response=ev.data))
                except Exception:
                    self.vars[var] = None
            self.record.vars = dict(self.vars)
        return ev.data if isinstance(ev.data, dict) else {"result": ev.data}

    # -- transcript and ending ------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.record.add(self.now(), "system", text, self.state)

    def finish(self, route: Route) -> None:
        """The call ends by `route` (transfer or end)."""
        self.ended = True
        if route.action == "transfer":
            self.record.transfer_target = route.target
            self.record.finish("transferred", route.reason)
        else:
            self.record.finish(route.outcome or "completed", route.reason)

    def handle(self, event: Any) -> list[Action]:
        """The shared session calls this on hang-up: record it; a `hangup` handler's `call:`
        tool is returned to be run."""
        if not isinstance(event, Hangup) or self.ended:
            return []
        self.ended = True
        self.note("caller hung up")
        self.record.finish("hangup_by_caller")
        h = self.handler("event", "hangup")
        if h is not None and h.call and h.call in self.flow.tools and h.call not in BUILTIN_TOOLS:
            tool = self.flow.tools[h.call]
            self._ids += 1
            request = self._request(tool, {})
            self.record.tool_calls.append(ToolCallRecord(
                self._ids, tool.name, redact_request(request), self.state, self.now()))
            return [CallTool(self._ids, tool.name, request, tool.timeout_s, tool.retries,
                             self.flow.settings.tool_response_limit_kb * 1024)]
        return []


def _type_words(slot_type: str) -> str:
    return {
        "uk_postcode": "a UK postcode", "date": "a date, as YYYY-MM-DD or as the caller said it",
        "time": "a time, HH:MM", "integer": "a whole number", "number": "a number",
        "money": "an amount in pounds", "yes_no": "true or false", "phone": "a phone number",
        "email": "an email address", "name": "a person's name", "choice": "one of the choices",
    }.get(slot_type, "text")
