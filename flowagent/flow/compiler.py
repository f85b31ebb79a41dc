"""Turn a validated flow into an immutable `CompiledFlow`, built once and shared by every call.

Why compile: a live server runs hundreds of calls of the same flow. Everything that can be decided
from the file alone — templates parsed, expressions compiled, slot specs with their parsers,
handlers merged per state, the intent matcher trained on the examples — is done here once, so a
call's `Engine` only holds the call's own data (slots, vars, counters, transcript).

Immutability: every object here is a frozen dataclass, tuple or `MappingProxyType`, so one call
cannot change what another call sees.

`load_flow(path)` is the entry point for running a flow: it validates first (a flow with errors
never runs — `FlowInvalid` carries the report), expands `${ENV}` references, then compiles.
`compile_flow(data)` trusts its input: a compilation error on a flow that validated clean is a
validator bug.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flowagent.flow import templates as T
from flowagent.flow.hours import parse_schedule
from flowagent.flow.subflow_paths import subflow_file
from flowagent.phone_numbers import region_of, to_e164
from flowagent.understanding.types import SlotOptions, SlotSpec

# ---------------------------------------------------------------------------------------------
# Templates and expressions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template. `static` means it has no variables: its text (and audio) never
    changes, so the runtime may cache its synthesised audio per flow + voice."""

    source: str
    static: bool
    _compiled: Any = field(default=None, repr=False, compare=False)

    def render(self, ctx: Mapping[str, Any]) -> str:
        if self._compiled is None:
            return self.source
        return " ".join(self._compiled.render(ctx).split())

    def render_value(self, ctx: Mapping[str, Any]) -> Any:
        """Like render, but `{{ expr }}` alone keeps the expression's type (tool bodies)."""
        return T.render_value(self.source, ctx)


def template(src: Any) -> Template:
    text = "" if src is None else str(src)
    if "{{" not in text and "{%" not in text:
        return Template(" ".join(text.split()), True, None)
    return Template(text, False, T.get_environment().from_string(text))


def maybe_template(src: Any) -> Template | None:
    return None if src is None else template(src)


def url_template(src: Any) -> Template | None:
    """A tool's or context fetch's URL: values are percent-encoded for the part of the URL
    they land in (rule in `flowagent/flow/urls.py`, docs/flow-format.md "Tools")."""
    if src is None:
        return None
    text = str(src)
    if "{{" not in text and "{%" not in text:
        return template(text)
    from flowagent.flow.urls import compile_url

    return Template(text, False, compile_url(text))


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled bare Jinja expression (`when`, `until`, `save`)."""

    source: str
    _fn: Callable[[Mapping[str, Any]], Any] = field(repr=False, compare=False)

    def __call__(self, ctx: Mapping[str, Any]) -> Any:
        """Evaluate; raises on a run-time error (callers decide what that means)."""
        return self._fn(ctx)

    def test(self, ctx: Mapping[str, Any]) -> bool:
        """Truth of the expression; an error counts as false (a missing value must not crash
        a call — the validator catches what it can see)."""
        try:
            return bool(self._fn(ctx))
        except Exception:
            return False


def expression(src: Any, *, v2: bool = False) -> Expression:
    """A condition or value. Format 1 reads it with Jinja (as it always has); format 2 with
    flowagent's own evaluator (`flow/expressions.py`: arithmetic, lists, named errors)."""
    if isinstance(src, bool):
        src = "true" if src else "false"
    text = str(src)
    if v2:
        from flowagent.flow.expressions import compile_expression

        return Expression(text, compile_expression(text))
    return Expression(text, T.compile_expression(text))


def value_expression(src: Any) -> Expression:
    """A format-2 value: text is an expression; a number, true/false, list or record written
    in YAML is that value (copied for each use, so one call never changes another's)."""
    if isinstance(src, str):
        return expression(src, v2=True)
    frozen = _freeze(src)
    return Expression(repr(src), lambda ctx: _thaw(frozen))


# ---------------------------------------------------------------------------------------------
# Compiled pieces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    barge_in: bool = True
    barge_in_min_speech_ms: int = 250
    barge_in_sensitivity: float = 0.5
    barge_in_resume_after_false: bool = False
    #: how much quieter (dB) our audio goes at the first sign of caller speech, until the
    #: barge-in is confirmed (stopped) or came to nothing (restored); 0 = no ducking
    barge_in_duck_db: float = 15.0
    #: speech over our audio that our own audio's echo explains is not a barge-in (the check
    #: runs only on speech windows while we play: runner/echo_guard.py)
    barge_in_echo_rejection: bool = True
    end_of_turn_ms: int = 600
    #: silence that ends a turn once its words answer the question (a recogniser that
    #: transcribes at pauses: Whisper); 0 = off, `end_of_turn_ms` always
    answer_end_ms: int = 200
    #: silence that ends a turn whose words do not answer it yet ("L S six ...")
    half_answer_end_ms: int = 1500
    no_input_timeout_s: float = 6.0
    no_input_reprompts: int = 2
    no_match_reprompts: int = 2
    dtmf_enabled: bool = True
    dtmf_digit_timeout_s: float = 3.0
    dtmf_terminator: str = "#"
    max_call_s: float = 900.0
    llm_fallback: bool = True
    #: ask the LLM (when `llm_fallback`) also when the best intent's confidence is below this
    llm_fallback_below: float = 0.0
    #: ask "did you mean X or Y?" when two of a question's intents fit almost equally
    clarify: bool = False
    #: record the call's audio (stereo WAV: caller left, agent right); see runner/recording.py
    recording: bool = False
    #: start the reply (LLM + TTS, held back) on the interim transcript at end of speech
    preemptive_generation: bool = True
    #: the largest tool answer read, in KB; a bigger one is a tool failure (never held whole)
    tool_response_limit_kb: int = 1024


@dataclass(frozen=True, slots=True)
class SlotDef:
    name: str
    type: str
    prompt: Template
    reprompt: Template
    invalid: Template | None
    confirm: bool
    dtmf: bool
    options: SlotOptions
    spec: SlotSpec  # what understanding.* parsers take
    #: format 2: the slot holds a list (a choice list takes every choice named)
    list: bool = False
    #: format 2: the answer is kept only when this holds (`value` is the new answer)
    valid_when: Expression | None = None
    #: format 2: the options of a choice slot, worked out on the call (a list)
    choices_from: Expression | None = None
    #: format 2: how each run-time option is said (`item`)
    choice_label: Template | None = None


@dataclass(frozen=True, slots=True)
class ToolArg:
    name: str
    type: str
    description: str
    required: bool


@dataclass(frozen=True, slots=True)
class ToolDef:
    name: str
    description: str
    method: str
    url: Template | None
    headers: tuple[tuple[str, Template], ...]
    body: Any  # same shape as the YAML, string leaves are Templates
    needs: tuple[str, ...]
    args: Mapping[str, ToolArg]
    timeout_s: float
    retries: int  # effective: 0 unless the call is idempotent
    idempotent: bool
    save: tuple[tuple[str, Expression], ...]
    on_failure: str | None
    python: str | None


@dataclass(frozen=True, slots=True)
class Handler:
    """A global or per-state handler. `trigger` is ("intent", name) | ("dtmf", digit) |
    ("event", name)."""

    trigger: tuple[str, str]
    say: Template | None
    go: str | None
    do: str | None  # repeat | restart | continue | hangup
    call: str | None  # a tool run first (its answer is in `result` when the handler speaks)
    clear: tuple[tuple[str, str], ...] = ()  # format 2: (slots|vars, name) to forget
    set: tuple[tuple[str, str, Expression], ...] = ()  # format 2: (slots|vars, name, value)
    #: the flow file that defined it: a calling flow's handler used inside a sub-flow leaves
    #: the sub-flow before its `go` (states are named in the flow that owns the handler)
    home: str = ""


@dataclass(frozen=True, slots=True)
class Branch:
    go: str
    intent: str | None = None
    when: Expression | None = None


@dataclass(frozen=True, slots=True)
class LlmDef:
    instructions: Template
    tools: tuple[str, ...]
    max_turns: int
    until: Expression | None


@dataclass(frozen=True, slots=True)
class RepeatDef:
    """`repeat:` on a collect state (format 2): after each round, add a record to a list and
    ask whether there is anything else."""

    to: str  # the variable (in `vars:`) that collects the records
    ask: Template
    add: tuple[tuple[str, Expression], ...] = ()  # empty: every collected slot
    until: Expression | None = None


@dataclass(frozen=True, slots=True)
class StateDef:
    name: str
    kind: str  # say | ask | collect | call | llm | transfer | end
    say: Template | None
    next: tuple[Branch, ...]
    handlers: Mapping[tuple[str, str], Handler]  # global merged with the state's overrides
    ask: Template | None = None
    reprompt: Template | None = None
    collect: tuple[str, ...] = ()
    confirm: Template | None = None
    call: str | None = None
    on_failure: str | None = None
    llm: LlmDef | None = None
    transfer: Template | None = None
    reason: Template | None = None
    outcome: str = ""
    barge_in: bool | None = None
    no_input_timeout_s: float | None = None
    #: format 2: forget these on entry, then work these out (before `say`)
    clear: tuple[tuple[str, str], ...] = ()
    set: tuple[tuple[str, str, Expression], ...] = ()
    #: format 2: go round the collect again ("anything else?")
    repeat: RepeatDef | None = None
    #: format 2: run this sub-flow (key of `CompiledFlow.subflows`) with these parameters
    subflow: str | None = None
    with_: tuple[tuple[str, Expression], ...] = ()
    #: format 2: end the sub-flow, giving these values to the calling flow's `vars`
    returns: tuple[tuple[str, Expression], ...] = ()

    #: intents the `next` branches name, in order (computed once at compile time)
    branch_intents: tuple[str, ...] = ()
    #: intents that have a handler in this state (global merged with the state's)
    handler_intents: tuple[str, ...] = ()

    @property
    def has_fallback(self) -> bool:
        return any(b.intent is None and b.when is None for b in self.next)


@dataclass(frozen=True, slots=True)
class ContextFetch:
    url: Template
    headers: tuple[tuple[str, Template], ...]
    timeout_s: float


BUILTIN_TOOLS = frozenset({"transfer", "hangup", "send_dtmf"})


@dataclass(frozen=True)
class CompiledFlow:
    """Everything about a flow that is the same for every call."""

    name: str
    path: str
    description: str
    language: str
    start: str
    settings: Settings
    providers: Mapping[str, Any]
    context_data: Mapping[str, Any]
    by_number: Mapping[str, Mapping[str, Any]]
    context_fetch: ContextFetch | None
    slots: Mapping[str, SlotDef]
    intents: Mapping[str, tuple[str, ...]]  # the flow's merged with the built-ins
    tools: Mapping[str, ToolDef]
    handlers: Mapping[tuple[str, str], Handler]  # global only
    states: Mapping[str, StateDef]
    matcher: Any = field(repr=False, compare=False)  # understanding.intents matcher (or None)
    #: how to name each intent in "Did you mean ...?" (its `label`, else its name in words)
    intent_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: the flow format the file is written in (1 or 2)
    version: int = 1
    #: format 2: declared variables and their starting values
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: format 2, sub-flows: parameter name -> default (`REQUIRED` when the caller must give it)
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: format 2: the sub-flows this flow's `subflow:` states run, by the path as written
    subflows: Mapping[str, CompiledFlow] = field(default_factory=lambda: MappingProxyType({}))
    #: format 2: the business's time zone (`now` and `hours` are told in it); "" = UTC
    timezone: str = ""
    #: format 2: opening-hours schedules by name (`hours.office`)
    hours: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: format 2: some slot has `valid_when`, `list` or `choices_from` (answers need more work)
    checks_answers: bool = False

    def initial_vars(self) -> dict[str, Any]:
        """A fresh copy of the starting values of `vars:` (each call gets its own)."""
        return {str(k): _thaw(v) for k, v in self.vars.items()}

    @property
    def has_llm(self) -> bool:
        return bool(self.providers.get("llm") or self.providers.get("sts"))

    def context_for(self, did: str = "") -> dict[str, Any]:
        """Static context for a call to `did`: `data` with the `by_number` entry laid over.
        Numbers match however they are written (`by_number` keys are E.164 from compile time)."""
        ctx: dict[str, Any] = _thaw(self.context_data)
        did = to_e164(did, region_of(self.language)) if did else ""
        if did and did in self.by_number:
            ctx.update(_thaw(self.by_number[did]))
        return ctx


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# compile
# ---------------------------------------------------------------------------------------------

_IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE", "HEAD", "OPTIONS"})


def _settings(raw: Mapping[str, Any] | None) -> Settings:
    raw = raw or {}
    barge = raw.get("barge_in") or {}
    if isinstance(barge, bool):
        barge = {"enabled": barge}
    ni = raw.get("no_input") or {}
    nm = raw.get("no_match") or {}
    dtmf = raw.get("dtmf") or {}
    if isinstance(dtmf, bool):
        dtmf = {"enabled": dtmf}
    d = Settings()
    return Settings(
        barge_in=bool(barge.get("enabled", d.barge_in)),
        barge_in_min_speech_ms=int(barge.get("min_speech_ms", d.barge_in_min_speech_ms)),
        barge_in_sensitivity=float(barge.get("sensitivity", d.barge_in_sensitivity)),
        barge_in_resume_after_false=bool(
            barge.get("resume_after_false", d.barge_in_resume_after_false)
        ),
        barge_in_duck_db=max(0.0, float(barge.get("duck_db", d.barge_in_duck_db))),
        barge_in_echo_rejection=bool(barge.get("echo_rejection", d.barge_in_echo_rejection)),
        end_of_turn_ms=int(raw.get("end_of_turn_ms", d.end_of_turn_ms)),
        **_answer_end(raw.get("expected_answer") or {}, d),
        no_input_timeout_s=float(ni.get("timeout_s", d.no_input_timeout_s)),
        no_input_reprompts=int(ni.get("reprompts", d.no_input_reprompts)),
        no_match_reprompts=int(nm.get("reprompts", d.no_match_reprompts)),
        dtmf_enabled=bool(dtmf.get("enabled", d.dtmf_enabled)),
        dtmf_digit_timeout_s=float(dtmf.get("digit_timeout_s", d.dtmf_digit_timeout_s)),
        dtmf_terminator=str(dtmf.get("terminator", d.dtmf_terminator)),
        max_call_s=float(raw.get("max_call_s", d.max_call_s)),
        llm_fallback=bool(raw.get("llm_fallback", d.llm_fallback)),
        llm_fallback_below=float(raw.get("llm_fallback_below", d.llm_fallback_below)),
        clarify=bool(raw.get("clarify", d.clarify)),
        recording=bool(raw.get("recording", d.recording)),
        preemptive_generation=bool(
            raw.get("preemptive_generation", d.preemptive_generation)
        ),
        tool_response_limit_kb=int(raw.get("tool_response_limit_kb", d.tool_response_limit_kb)),
    )


def _answer_end(given: Mapping[str, Any], d: Settings) -> dict[str, int]:
    """`settings.expected_answer: {enabled, complete_ms, incomplete_ms}`; not enabled: silence
    alone ends turns (both 0)."""
    if not given.get("enabled", True):
        return {"answer_end_ms": 0, "half_answer_end_ms": 0}
    return {"answer_end_ms": int(given.get("complete_ms", d.answer_end_ms)),
            "half_answer_end_ms": int(given.get("incomplete_ms", d.half_answer_end_ms))}


def _slot(name: str, raw: Mapping[str, Any], v2: bool = False) -> SlotDef:
    prompt = template(raw.get("prompt", ""))
    options = SlotOptions.from_dict(raw)
    typ = str(raw.get("type", "text"))
    valid_when, choices_from = raw.get("valid_when"), raw.get("choices_from")
    return SlotDef(
        name=name,
        type=typ,
        prompt=prompt,
        reprompt=template(raw["reprompt"]) if raw.get("reprompt") else prompt,
        invalid=maybe_template(raw.get("invalid")),
        confirm=bool(raw.get("confirm", False)),
        dtmf=bool(raw.get("dtmf", False)),
        options=options,
        spec=SlotSpec(type=typ, options=options),
        list=bool(raw.get("list", False)),
        valid_when=expression(valid_when, v2=v2) if valid_when is not None else None,
        choices_from=expression(choices_from, v2=v2) if choices_from is not None else None,
        choice_label=maybe_template(raw.get("choice_label")),
    )


def _templated(value: Any) -> Any:
    """YAML body -> same shape with string leaves compiled as templates."""
    if isinstance(value, str):
        return template(value)
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _templated(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_templated(v) for v in value)
    return value


def _tool(name: str, raw: Mapping[str, Any], v2: bool = False) -> ToolDef:
    method = str(raw.get("method", "GET")).upper()
    idempotent = bool(raw.get("idempotent", False)) or method in _IDEMPOTENT_METHODS
    args = {
        str(k): ToolArg(
            str(k),
            str((v or {}).get("type", "text")),
            str((v or {}).get("description", "")),
            bool((v or {}).get("required", True)),
        )
        for k, v in (raw.get("args") or {}).items()
    }
    return ToolDef(
        name=name,
        description=str(raw.get("description", "")),
        method=method,
        url=url_template(raw.get("url")),
        headers=tuple((str(k), template(v)) for k, v in (raw.get("headers") or {}).items()),
        body=_templated(raw.get("body")) if raw.get("body") is not None else None,
        needs=tuple(str(s) for s in raw.get("needs") or ()),
        args=MappingProxyType(args),
        timeout_s=float(raw.get("timeout_s", 5)),
        retries=int(raw.get("retries", 0)) if idempotent else 0,
        idempotent=idempotent,
        save=tuple((str(k), expression(v, v2=v2)) for k, v in (raw.get("save") or {}).items()),
        on_failure=raw.get("on_failure"),
        python=raw.get("python"),
    )


def _assignments(raw: Mapping[str, Any]
                 ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, Expression], ...]]:
    """`clear: [slots.x]` and `set: {vars.y: expr}` as (scope, name) pairs."""
    clears = []
    for item in raw.get("clear") or ():
        scope, _, name = str(item).partition(".")
        clears.append((scope, name))
    sets = []
    for key, value in (raw.get("set") or {}).items():
        scope, _, name = str(key).partition(".")
        sets.append((scope, name, value_expression(value)))
    return tuple(clears), tuple(sets)


def _handler(raw: Mapping[str, Any]) -> Handler:
    if "intent" in raw:
        trigger = ("intent", str(raw["intent"]))
    elif "dtmf" in raw:
        trigger = ("dtmf", str(raw["dtmf"]))
    else:
        trigger = ("event", str(raw.get("event")))
    clears, sets = _assignments(raw)
    return Handler(
        trigger=trigger,
        say=maybe_template(raw.get("say")),
        go=raw.get("go"),
        do=raw.get("do"),
        call=raw.get("call"),
        clear=clears,
        set=sets,
    )


def _handlers(items: Any, home: str = "") -> dict[tuple[str, str], Handler]:
    out: dict[tuple[str, str], Handler] = {}
    for raw in items or ():
        h = _handler(raw)
        if raw.get("\x00home"):
            h = replace(h, home=str(raw["\x00home"]))
        elif home:
            h = replace(h, home=home)
        out.setdefault(h.trigger, h)  # first entry for a trigger wins, as in reading order
    return out


def _next(raw: Any, v2: bool = False) -> tuple[Branch, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (Branch(go=raw),)
    out = []
    for b in raw:
        when = b.get("when")
        out.append(
            Branch(
                go=str(b["go"]),
                intent=b.get("intent"),
                when=expression(when, v2=v2) if when is not None else None,
            )
        )
    return tuple(out)


_KINDS = ("ask", "collect", "call", "llm", "transfer", "end", "subflow")


def _state(name: str, raw: Mapping[str, Any],
           global_handlers: Mapping[tuple[str, str], Handler], v2: bool = False,
           home: str = "") -> StateDef:
    kind = next((k for k in _KINDS if k in raw and raw[k] is not None and raw[k] is not False),
                "return" if "return" in raw else "say")
    merged = dict(global_handlers)
    merged.update(_handlers(raw.get("handlers"), home))
    llm = None
    if kind == "llm":
        lraw = raw["llm"] or {}
        llm = LlmDef(
            instructions=template(lraw.get("instructions", "")),
            tools=tuple(str(t) for t in lraw.get("tools") or ()),
            max_turns=int(lraw.get("max_turns", 6)),
            until=expression(lraw["until"], v2=v2) if lraw.get("until") else None,
        )
    collect = raw.get("collect") or ()
    if isinstance(collect, str):
        collect = (collect,)
    barge = raw.get("barge_in")
    branches = _next(raw.get("next"), v2)
    clears, sets = _assignments(raw)
    repeat = None
    if isinstance(raw.get("repeat"), Mapping):
        rraw = raw["repeat"]
        repeat = RepeatDef(
            to=str(rraw.get("to", "")).removeprefix("vars."),
            ask=template(rraw.get("ask", "")),
            add=tuple((str(k), value_expression(v)) for k, v in (rraw.get("add") or {}).items()),
            until=expression(rraw["until"], v2=True) if rraw.get("until") is not None else None,
        )
    return StateDef(
        name=name,
        kind=kind,
        say=maybe_template(raw.get("say")),
        next=branches,
        handlers=MappingProxyType(merged),
        branch_intents=tuple(dict.fromkeys(b.intent for b in branches if b.intent)),
        handler_intents=tuple(k[1] for k in merged if k[0] == "intent"),
        ask=maybe_template(raw.get("ask")),
        reprompt=maybe_template(raw.get("reprompt")),
        collect=tuple(str(s) for s in collect),
        confirm=maybe_template(raw.get("confirm")),
        call=raw.get("call"),
        on_failure=raw.get("on_failure"),
        llm=llm,
        transfer=maybe_template(raw.get("transfer")),
        reason=maybe_template(raw.get("reason")),
        outcome=str(raw.get("outcome", "") or ""),
        barge_in=None if barge is None else bool(barge),
        no_input_timeout_s=(
            float(raw["no_input_timeout_s"]) if raw.get("no_input_timeout_s") is not None else None
        ),
        clear=clears,
        set=sets,
        repeat=repeat,
        subflow=str(raw["subflow"]) if raw.get("subflow") else None,
        with_=tuple((str(k), value_expression(v)) for k, v in (raw.get("with") or {}).items()),
        returns=tuple((str(k), value_expression(v))
                      for k, v in (raw.get("return") or {}).items()),
    )


def _intents(raw: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """The flow's own intents: name -> examples (built-ins are added by the matcher)."""
    return {
        str(name): tuple(str(e) for e in ((spec or {}).get("examples") or ()))
        for name, spec in (raw or {}).items()
    }


def _build_matcher(intents: Mapping[str, tuple[str, ...]], data: Mapping[str, Any]) -> Any:
    """The lexical intent matcher from `flowagent.understanding.intents`, trained once (it adds
    the built-in intents yes/no/human/repeat/restart/goodbye).

    Intents that some handler answers by restarting or ending the call are *strict* (a higher
    bar, so "go back" never restarts a call), as `restart` and `goodbye` always are."""
    from flowagent.understanding import intents as U

    return U.IntentMatcher({k: list(v) for k, v in intents.items()},
                           strict=U.DESTRUCTIVE_INTENTS | _destructive_intents(data))


def _destructive_intents(data: Mapping[str, Any]) -> set[str]:
    """Intents whose global or per-state handler restarts or ends the call."""
    states = data.get("states") or {}
    ends = {str(n) for n, raw in states.items() if isinstance(raw, Mapping) and raw.get("end")}
    lists = [data.get("handlers")]
    lists += [raw.get("handlers") for raw in states.values() if isinstance(raw, Mapping)]
    out: set[str] = set()
    for items in lists:
        for h in items or ():
            if isinstance(h, Mapping) and "intent" in h and (
                h.get("do") in ("restart", "hangup") or str(h.get("go")) in ends
            ):
                out.add(str(h["intent"]))
    return out


#: a sub-flow parameter without a default: the calling flow must give it
REQUIRED = object()


def compile_flow(data_or_loaded: Any, *, path: str | Path = "<flow>",
                 _calling: tuple[str, ...] = (), _parent: CompiledFlow | None = None,
                 _parent_data: Mapping[str, Any] | None = None) -> CompiledFlow:
    """Compile validated flow data (a dict, or a `LoadedFlow`) into a `CompiledFlow`.

    Sub-flows (`subflow:` states) are read from their files, relative to `path`, and compiled
    with the calling flow's settings, providers and context (one call, one set of those), and
    with its intents, tools and global handlers added where the sub-flow has none of its own:
    "speak to a person" works inside a sub-flow too."""
    data = getattr(data_or_loaded, "data", data_or_loaded)
    if hasattr(data_or_loaded, "path") and path == "<flow>":
        path = data_or_loaded.path
    if not isinstance(data, Mapping):
        raise TypeError("compile_flow needs the flow as a mapping (did it validate?)")
    if _parent_data is not None:
        data = _inherit(data, _parent_data, str(_parent.path if _parent else ""))
    global_handlers = _handlers(data.get("handlers"), str(path))
    ctx = data.get("context") or {}
    fetch_raw = ctx.get("fetch")
    fetch = None
    fetch_url = url_template(fetch_raw["url"]) if fetch_raw else None
    if fetch_raw and fetch_url is not None:
        fetch = ContextFetch(
            url=fetch_url,
            headers=tuple(
                (str(k), template(v)) for k, v in (fetch_raw.get("headers") or {}).items()
            ),
            timeout_s=float(fetch_raw.get("timeout_s", 2)),
        )
    matcher = _build_matcher(_intents(data.get("intents")), data)
    v2 = data.get("flowagent") == 2
    states = {str(n): _state(str(n), raw or {}, global_handlers, v2, str(path))
              for n, raw in (data.get("states") or {}).items()}
    language = str(data.get("language", "en-GB") or "en-GB")
    flow = CompiledFlow(
        name=str(data.get("name", "")),
        path=str(path),
        description=str(data.get("description", "") or ""),
        language=language,
        start=str(data["start"]),
        settings=_settings(data.get("settings")),
        providers=_freeze(data.get("providers") or {}),
        context_data=_freeze(ctx.get("data") or {}),
        by_number=_freeze({to_e164(str(k), region_of(language)): v
                           for k, v in (ctx.get("by_number") or {}).items()}),
        context_fetch=fetch,
        slots=MappingProxyType(
            {str(n): _slot(str(n), raw or {}, v2) for n, raw in (data.get("slots") or {}).items()}
        ),
        intents=MappingProxyType(dict(matcher.examples)),
        tools=MappingProxyType(
            {str(n): _tool(str(n), raw or {}, v2)
             for n, raw in (data.get("tools") or {}).items()}
        ),
        handlers=MappingProxyType(global_handlers),
        states=MappingProxyType(states),
        matcher=matcher,
        intent_labels=MappingProxyType({
            str(name): str((spec or {}).get("label") or str(name).replace("_", " "))
            for name, spec in (data.get("intents") or {}).items()
        }),
        version=2 if v2 else 1,
        vars=_freeze(data.get("vars") or {}),
        timezone=str(data.get("timezone") or ""),
        hours=MappingProxyType({
            str(n): parse_schedule(raw, region_of(language))
            for n, raw in (data.get("hours") or {}).items() if isinstance(raw, Mapping)}),
        params=MappingProxyType({
            str(n): (_freeze(spec["default"]) if isinstance(spec, Mapping) and "default" in spec
                     else REQUIRED)
            for n, spec in (data.get("params") or {}).items()}),
    )
    if any(sl.valid_when is not None or sl.list or sl.choices_from is not None
           for sl in flow.slots.values()):
        flow = replace(flow, checks_answers=True)
    subs = _subflow_paths(data)
    if subs:
        flow = replace(flow, subflows=MappingProxyType(
            {written: _load_subflow(written, flow, data, _calling) for written in subs}))
    if _parent is not None:
        flow = replace(flow, settings=_parent.settings, providers=_parent.providers,
                       context_data=_parent.context_data, by_number=_parent.by_number,
                       context_fetch=_parent.context_fetch,
                       timezone=flow.timezone or _parent.timezone,
                       hours=flow.hours or _parent.hours)
    return flow


def _subflow_paths(data: Mapping[str, Any]) -> list[str]:
    out = []
    for raw in (data.get("states") or {}).values():
        if isinstance(raw, Mapping) and isinstance(raw.get("subflow"), str):
            out.append(str(raw["subflow"]))
    return list(dict.fromkeys(out))


def _load_subflow(written: str, parent: CompiledFlow, parent_data: Mapping[str, Any],
                  calling: tuple[str, ...]) -> CompiledFlow:
    from flowagent.flow import envrefs
    from flowagent.flow.loader import load_file

    file = subflow_file(written, parent.path)
    key = str(file.resolve())
    if key in calling:
        raise ValueError(f"the sub-flow {written} calls itself")  # the validator says so first
    loaded = load_file(file)
    return compile_flow(envrefs.expand(loaded.data), path=str(file),
                        _calling=(*calling, str(Path(parent.path).resolve()), key),
                        _parent=parent, _parent_data=parent_data)


def _inherit(data: Mapping[str, Any], parent: Mapping[str, Any], home: str) -> dict[str, Any]:
    """A sub-flow's data with what the calling flow offers everywhere: its intents, its tools
    and its global handlers (after the sub-flow's own, so the sub-flow's win)."""
    out = dict(data)
    intents = dict(parent.get("intents") or {})
    intents.update(data.get("intents") or {})
    out["intents"] = intents
    tools = dict(parent.get("tools") or {})
    tools.update(data.get("tools") or {})
    out["tools"] = tools
    own = list(data.get("handlers") or [])
    inherited = [{**h, "\x00home": home} for h in parent.get("handlers") or []
                 if isinstance(h, Mapping)]
    out["handlers"] = own + inherited
    return out


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------


class FlowInvalid(Exception):
    """The flow has validation errors and cannot run. `report` has every finding."""

    def __init__(self, path: str | Path, report: Any) -> None:
        self.path = str(path)
        self.report = report
        errors = [
            f for f in getattr(report, "findings", []) if getattr(f, "severity", "") == "error"
        ]
        first = errors[0] if errors else None
        where = (
            f"{getattr(first, 'file', path)}:{getattr(first, 'line', 1)}:"
            f"{getattr(first, 'column', 1)}: {getattr(first, 'message', '')}"
            if first
            else str(path)
        )
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(f"{where}{more}")


def load_flow(path: str | Path, *, check_env: bool = False) -> CompiledFlow:
    """Validate, expand `${ENV}` references, compile. Raises FlowInvalid if the flow has errors
    (and OSError if the file is missing)."""
    from flowagent.flow import envrefs
    from flowagent.flow.loader import load_file
    from flowagent.flow.validate import validate_file

    report = validate_file(path, check_env=check_env)
    if _has_errors(report):
        raise FlowInvalid(path, report)
    loaded = getattr(report, "flow", None) or load_file(path)
    data = envrefs.expand(loaded.data)
    return compile_flow(data, path=str(path))


def _has_errors(report: Any) -> bool:
    if hasattr(report, "has_errors"):
        attr = report.has_errors
        return bool(attr() if callable(attr) else attr)
    return any(getattr(f, "severity", "") == "error" for f in getattr(report, "findings", []))
