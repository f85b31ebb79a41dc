"""Run a flow by text: an `Engine` plus a tool runner and (optionally) an LLM, with no audio.

`Conversation` is what `flowagent chat` and `flowagent test` use. Each method feeds one caller
event and returns the agent's lines for that turn, after carrying out every action the engine
asked for — tool calls and LLM requests included — until the engine is waiting for the caller
again (or the call has ended).

Reusable pieces for the live call session (runtime), which implements the same action semantics
with audio:

* `run_tool(runner, action)` — `CallTool` -> `ToolResult` (never raises).
* `run_llm(llm, request, on_text=None)` — `LlmRequest` -> `LlmResult`, streaming text deltas to
  `on_text` (the session hands them to TTS); provider errors and timeouts become
  `LlmResult(ok=False)`.
* `resolve_context(flow, call, runner)` — the call's context: `context.data`, the `by_number`
  entry for the DID, then the `context.fetch` API's JSON laid over (failure keeps the static data).
* `ActionExecutor` — the text semantics in one place: it loops `actions -> events -> actions`
  until the engine waits for the caller. Timers are recorded in `timers` rather than run (a text
  caller's "silence" is explicit), so the session replaces only `on_say` and the timer handling.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import uuid as _uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowagent.dialogue.actions import (
    Action,
    CallTool,
    CancelTimer,
    EndCall,
    FlowProblem,
    LlmRequest,
    Say,
    SendDtmf,
    StartNoInputTimer,
    StartTimer,
    StopNoInputTimer,
    Transfer,
)
from flowagent.dialogue.engine import Engine
from flowagent.dialogue.events import (
    CallInfo,
    DtmfDigit,
    Hangup,
    LlmResult,
    NoInput,
    TimerExpired,
    ToolResult,
    UserUtterance,
)
from flowagent.dialogue.tools import ToolRunner
from flowagent.flow.compiler import CompiledFlow
from flowagent.providers.base import LlmProvider, LlmToolCall, ProviderError

log = logging.getLogger("flowagent.flow")

LLM_TIMEOUT_S = 30.0
MAX_ROUNDS_PER_TURN = 50  # tool/LLM round trips one caller turn may cause


async def run_tool(runner: ToolRunner, action: CallTool) -> ToolResult:
    """Execute a CallTool action (the runner never raises; this guards anyway)."""
    try:
        return await runner.run(action)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return ToolResult(action.call_id, action.tool, False, None, None,
                          f"The {action.tool} tool failed: {exc}.")


async def run_llm(
    llm: LlmProvider | None,
    request: LlmRequest,
    on_text: Callable[[str], Any] | None = None,
    *,
    timeout_s: float = LLM_TIMEOUT_S,
) -> LlmResult:
    """Stream one LLM request to completion. Never raises (except cancellation)."""
    if llm is None:
        return LlmResult(request.request_id, ok=False, error="no LLM is configured for this flow")
    text: list[str] = []
    calls: list[LlmToolCall] = []
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in llm.stream(request.messages, request.tools):
                if chunk.text:
                    text.append(chunk.text)
                    if on_text is not None:
                        res = on_text(chunk.text)
                        if asyncio.iscoroutine(res):
                            await res
                if chunk.tool_calls:
                    calls.extend(chunk.tool_calls)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return LlmResult(request.request_id, "".join(text), tuple(calls), ok=False,
                         error=f"the LLM did not finish within {timeout_s:g} seconds")
    except ProviderError as exc:
        return LlmResult(request.request_id, "".join(text), tuple(calls), ok=False,
                         error=exc.message)
    except Exception as exc:
        return LlmResult(request.request_id, "".join(text), tuple(calls), ok=False,
                         error=f"the LLM failed: {exc}")
    return LlmResult(request.request_id, "".join(text), tuple(calls))


async def resolve_context(
    flow: CompiledFlow, call: CallInfo, runner: ToolRunner | None
) -> dict[str, Any]:
    """Static context for the DID, with the context API's answer merged over (if any)."""
    ctx = flow.context_for(call.did)
    fetch = flow.context_fetch
    if fetch is None or runner is None:
        return ctx
    tctx = {
        "context": ctx,
        "call": {"caller": call.caller, "did": call.did, "uuid": call.uuid,
                 "channel": call.channel, "metadata": call.metadata},
        "slots": {}, "vars": {},
    }
    request = {
        "method": "GET",
        "url": fetch.url.render(tctx),
        "headers": {k: v.render(tctx) for k, v in fetch.headers},
    }
    result = await run_tool(runner, CallTool(0, "context", request, fetch.timeout_s, 0,
                                                   flow.settings.tool_response_limit_kb * 1024))
    if result.ok and isinstance(result.data, dict):
        ctx.update(result.data)
    return ctx


@dataclass
class ActionExecutor:
    """Carries out engine actions for text use; see the module docstring."""

    engine: Engine
    tools: ToolRunner
    llm: LlmProvider | None = None
    on_say: Callable[[str], None] | None = None
    lines: list[str] = field(default_factory=list)
    timers: dict[str, float] = field(default_factory=dict)
    transferred_to: str | None = None
    end_reason: str | None = None
    actions: list[Action] = field(default_factory=list)
    dtmf_sent: list[str] = field(default_factory=list)
    #: what went wrong in the flow at run time (`chat` and `flowagent test` print these)
    problems: list[FlowProblem] = field(default_factory=list)

    async def execute(self, actions: list[Action]) -> list[str]:
        """Carry out `actions` and everything they lead to; returns the lines spoken."""
        start = len(self.lines)
        queue = list(actions)
        rounds = 0
        while queue:
            action = queue.pop(0)
            self.actions.append(action)
            follow: list[Action] | None = None
            if isinstance(action, Say):
                self._speak(action.text)
            elif isinstance(action, CallTool):
                result = await run_tool(self.tools, action)
                follow = self.engine.handle(result)
            elif isinstance(action, LlmRequest):
                spoken: list[str] = []
                res = await run_llm(self.llm, action, spoken.append if action.speak else None)
                if action.speak and spoken and "".join(spoken).strip():
                    self._speak("".join(spoken).strip())
                follow = self.engine.handle(res)
            elif isinstance(action, Transfer):
                self.transferred_to = action.target
            elif isinstance(action, EndCall):
                self.end_reason = action.reason
            elif isinstance(action, SendDtmf):
                self.dtmf_sent.append(action.digits)
            elif isinstance(action, FlowProblem):
                self.problems.append(action)
                log.warning("flow problem in %s: %s [%s]", action.where, action.error,
                            action.source)
            elif isinstance(action, StartNoInputTimer):
                self.timers["no_input"] = action.seconds
            elif isinstance(action, StopNoInputTimer):
                self.timers.pop("no_input", None)
            elif isinstance(action, StartTimer):
                self.timers[action.name] = action.seconds
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.name, None)
            if follow:
                rounds += 1
                if rounds > MAX_ROUNDS_PER_TURN:
                    break
                queue = follow + queue
        return self.lines[start:]

    def _speak(self, text: str) -> None:
        self.lines.append(text)
        if self.on_say is not None:
            self.on_say(text)


class Conversation:
    """Talk to a flow by text. Every method returns the agent's lines for that turn.

    `tools`: a `ToolRunner` (real HTTP) or `CannedTools`; default: a real `ToolRunner`.
    `llm`: any `LlmProvider`; without one, `llm` states are skipped and the LLM fallback is off.
    `today`: pin "today" for relative dates (tests).
    `now`: fix the clock (an aware datetime): `now`, `hours` and "today" read it (tests).
    """

    def __init__(
        self,
        flow: CompiledFlow,
        tools: ToolRunner | None = None,
        llm: LlmProvider | None = None,
        *,
        today: _dt.date | None = None,
        on_say: Callable[[str], None] | None = None,
        now: _dt.datetime | None = None,
    ) -> None:
        self.flow = flow
        self.tools = tools if tools is not None else ToolRunner()
        self.llm = llm
        self.today = today
        self.now = now
        self.on_say = on_say
        self._new_engine()

    def _new_engine(self) -> None:
        fixed = self.now
        self.engine = Engine(self.flow, today=self.today, llm_available=self.llm is not None,
                             wall_clock=(lambda: fixed) if fixed is not None else None)
        self.executor = ActionExecutor(self.engine, self.tools, self.llm, self.on_say)

    # -- state for chat/test ------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.engine.state

    @property
    def slots(self) -> dict[str, Any]:
        return self.engine.slots

    @property
    def vars(self) -> dict[str, Any]:
        return self.engine.vars

    @property
    def ended(self) -> bool:
        return self.engine.ended

    @property
    def transferred_to(self) -> str | None:
        return self.executor.transferred_to

    @property
    def lines(self) -> list[str]:
        return self.executor.lines

    # -- turns --------------------------------------------------------------------------------

    async def start(self, call: CallInfo | None = None) -> list[str]:
        call = call or CallInfo(uuid=str(_uuid.uuid4()))
        if not call.context:
            ctx = await resolve_context(self.flow, call, self.tools)
            call = CallInfo(call.uuid, call.caller, call.did, call.channel, dict(call.metadata),
                            ctx)
        self.call = call
        return await self.executor.execute(self.engine.start(call))

    async def restart(self) -> list[str]:
        """A fresh call with the same caller details (chat's /restart)."""
        self._new_engine()
        return await self.start(self.call)

    async def send(self, event: Any) -> list[str]:
        return await self.executor.execute(self.engine.handle(event))

    async def say(self, text: str) -> list[str]:
        return await self.send(UserUtterance(text))

    async def dtmf(self, digits: str) -> list[str]:
        """Key one or more digits. A multi-digit entry without the terminator ends with the
        inter-digit pause, as it would on a phone."""
        out: list[str] = []
        for d in digits.replace(" ", ""):
            out += await self.send(DtmfDigit(d))
        if "dtmf" in self.executor.timers and not self.ended:
            out += await self.send(TimerExpired("dtmf"))
        return out

    async def silence(self) -> list[str]:
        """The caller says nothing until the no-input timeout."""
        return await self.send(NoInput())

    async def timer(self, name: str) -> list[str]:
        return await self.send(TimerExpired(name))

    async def hangup(self) -> list[str]:
        return await self.send(Hangup())
