"""References: every state, slot, tool and intent a flow names must exist, and each state, tool
and handler must be put together in a way the engine can run (one action per state, one trigger
per handler, keys only where they mean something)."""

from __future__ import annotations

from typing import Any

from flowagent.flow.checks.context import (
    ACTION_KEYS,
    BUILTIN_TOOLS,
    CheckContext,
    quote_list,
    suggestion_for,
)
from flowagent.flow.loader import PathT

#: key -> the action it belongs to (anything else on a state with another action is misplaced)
_BELONGS_TO = {"reprompt": "ask", "confirm": "collect", "on_failure": "call",
               "reason": "transfer", "outcome": "end", "with": "subflow"}


def check_references(ctx: CheckContext) -> None:
    _check_start(ctx)
    for name, state in ctx.items("states"):
        _check_state(ctx, name, state)
    for i, handler in enumerate(ctx.listing("handlers")):
        if isinstance(handler, dict):
            check_handler(ctx, ("handlers", i), handler)
    for name, tool in ctx.items("tools"):
        _check_tool(ctx, name, tool)


def ref_state(ctx: CheckContext, path: PathT, target: Any, what: str) -> None:
    if not isinstance(target, str) or target in ctx.mapping("states"):
        return
    ctx.error("unknown-state", path, f"{what} goes to `{target}`, but there is no state called "
              f"`{target}`.",
              suggestion_for(target, ctx.state_names,
                             f"Add a state called `{target}` under `states:`, or use one of "
                             f"{quote_list(ctx.state_names)}."))


def ref_slot(ctx: CheckContext, path: PathT, slot: Any, what: str) -> None:
    if not isinstance(slot, str) or slot in ctx.mapping("slots"):
        return
    ctx.error("unknown-slot", path, f"{what} uses the slot `{slot}`, which is not defined under "
              "`slots:`.",
              suggestion_for(slot, ctx.slot_names, f"Add `{slot}:` under `slots:` with its type "
                             "and prompt."))


def ref_tool(ctx: CheckContext, path: PathT, tool: Any, what: str, *, builtins: bool) -> None:
    if not isinstance(tool, str) or tool in ctx.mapping("tools"):
        return
    if tool in BUILTIN_TOOLS:
        if builtins:
            return
        ctx.error("unknown-tool", path, f"{what} calls `{tool}`, which is a built-in tool only the "
                  "language model can use.",
                  "Use a state with `transfer:` or `end: true` instead." if tool != "send_dtmf"
                  else "Offer it to an `llm` state through `tools:`.")
        return
    candidates = [*ctx.tool_names, *(BUILTIN_TOOLS if builtins else ())]
    ctx.error("unknown-tool", path, f"{what} calls the tool `{tool}`, which is not defined under "
              "`tools:`.",
              suggestion_for(tool, candidates, f"Add `{tool}:` under `tools:`, or use one of "
                             f"{quote_list(candidates)}." if candidates
                             else f"Add `{tool}:` under `tools:`."))


#: words authors use for a built-in intent (`intent: operator` means the built-in `human`)
_BUILTIN_INTENT_WORDS = {
    "human": ("operator", "agent", "person", "representative", "someone", "staff", "transfer",
              "advisor", "adviser", "real_person", "speak_to_human", "talk_to_human"),
    "repeat": ("again", "pardon", "say_again", "repeat_that"),
    "restart": ("start_again", "start_over", "begin_again", "reset"),
    "goodbye": ("bye", "hang_up", "hangup", "end_call", "farewell"),
    "yes": ("affirm", "confirm", "agree", "correct"),
    "no": ("deny", "negative", "disagree"),
}


def _builtin_meaning(intent: str) -> str | None:
    word = intent.strip().lower().replace("-", "_").replace(" ", "_")
    for builtin, words in _BUILTIN_INTENT_WORDS.items():
        if word in words:
            return builtin
    return None


def ref_intent(ctx: CheckContext, path: PathT, intent: Any, what: str) -> None:
    if not isinstance(intent, str) or intent in ctx.intent_names:
        return
    builtin = _builtin_meaning(intent)
    if builtin is not None and builtin in ctx.intent_names:
        suggestion: str | None = (
            f"Use the built-in intent `{builtin}`, which already understands callers asking "
            f"for this: write `intent: {builtin}`.")
    else:
        suggestion = suggestion_for(intent, ctx.intent_names, f"Add `{intent}:` under "
                                    "`intents:` with a few example phrases.")
    ctx.error("unknown-intent", path, f"{what} waits for the intent `{intent}`, which is not "
              "defined under `intents:` and is not a built-in one.", suggestion)


def url_problem(url: str) -> str | None:
    """Why a tool's URL cannot be called as written, or None. A URL that starts with a
    template (`{{ context.api }}/x`) or with an environment reference without a default is only
    known when the call runs; `${NAME:-default}` is judged by its default."""
    text = url.strip()
    if text.startswith(("{{", "{%")):
        return None
    if text.startswith("${"):
        inner, _, rest = text[2:].partition("}")
        if ":-" not in inner:
            return None
        text = inner.split(":-", 1)[1] + rest
        if text.startswith(("{{", "{%")):
            return None
    if text.lower().startswith(("https://", "http://")):
        return None
    if "://" in text.split("/", 1)[0]:
        scheme = text.split("://", 1)[0]
        return (f"starts with `{scheme}://`, but a tool can only call `https://` or `http://` "
                "addresses")
    return "does not start with `https://` (or `http://`), so it is not a web address"


def _check_start(ctx: CheckContext) -> None:
    start = ctx.data.get("start")
    if isinstance(start, str) and ctx.mapping("states"):
        ref_state(ctx, ("start",), start, "The flow's `start`")


def _check_state(ctx: CheckContext, name: str, state: dict[str, Any]) -> None:
    base = ("states", name)
    where = f"State `{name}`"
    actions = [k for k in ACTION_KEYS if k in state]
    if len(actions) > 1:
        ctx.error("conflicting-keys", (*base, actions[1]),
                  f"{where} has both `{actions[0]}` and `{actions[1]}`, but a state can do only "
                  "one of ask, collect, call, llm, transfer, end, subflow or return.",
                  f"Move `{actions[1]}` into a state of its own and link it with `next:`.",
                  key=True)
    action = actions[0] if actions else None

    for key, owner in _BELONGS_TO.items():
        if key in state and owner not in state:
            ctx.error("misplaced-key", (*base, key),
                      f"`{key}` only means something in a state with `{owner}`, and {where} has "
                      + (f"`{action}`." if action else "no action."),
                      f"Remove `{key}`, or add `{owner}:` to this state.", key=True)
    if action in ("transfer", "end", "return") and "next" in state:
        ctx.error("misplaced-key", (*base, "next"),
                  f"{where} ends the flow with `{action}`, so its `next` would never be used.",
                  "Remove `next:` (or remove `" + action + "` if the call should carry on).",
                  key=True)

    for i, slot in enumerate(state.get("collect") or [] if isinstance(state.get("collect"), list)
                             else []):
        ref_slot(ctx, (*base, "collect", i), slot, where)
    if "call" in state:
        ref_tool(ctx, (*base, "call"), state["call"], where, builtins=False)
    if "on_failure" in state:
        ref_state(ctx, (*base, "on_failure"), state["on_failure"], f"The `on_failure` of {name}")
    llm = state.get("llm")
    if isinstance(llm, dict) and isinstance(llm.get("tools"), list):
        for i, tool in enumerate(llm["tools"]):
            ref_tool(ctx, (*base, "llm", "tools", i), tool, where, builtins=True)

    nxt = state.get("next")
    if isinstance(nxt, str):
        ref_state(ctx, (*base, "next"), nxt, where)
    elif isinstance(nxt, list):
        _check_branches(ctx, name, nxt, action)
    for i, handler in enumerate(state.get("handlers") or [] if isinstance(
            state.get("handlers"), list) else []):
        if isinstance(handler, dict):
            check_handler(ctx, (*base, "handlers", i), handler)


def _check_branches(ctx: CheckContext, name: str, branches: list[Any], action: str | None
                    ) -> None:
    base = ("states", name, "next")
    last = len(branches) - 1
    for i, br in enumerate(branches):
        if not isinstance(br, dict):
            continue
        what = f"Branch {i + 1} of state `{name}`"
        ref_state(ctx, (*base, i, "go"), br.get("go"), what)
        if "intent" in br:
            if action != "ask":
                ctx.error("intent-outside-ask", (*base, i, "intent"),
                          f"{what} checks an intent, but only `ask` states listen for intents "
                          f"(this state {'has `' + action + '`' if action else 'asks nothing'}).",
                          "Use `when:` with a condition instead, or make this an `ask` state.",
                          key=True)
            ref_intent(ctx, (*base, i, "intent"), br["intent"], what)
        if "intent" not in br and "when" not in br and i != last:
            ctx.error("fallback-not-last", (*base, i),
                      f"{what} has no `intent` or `when`, so it always matches and the branches "
                      "after it can never be taken.",
                      "Move it to the end of the list, or give it a condition.")


def check_handler(ctx: CheckContext, path: PathT, handler: dict[str, Any]) -> None:
    where = "Global handler" if path[0] == "handlers" else f"A handler of state `{path[1]}`"
    where = f"{where} {path[-1] + 1}" if isinstance(path[-1], int) else where
    triggers = [k for k in ("intent", "dtmf", "event") if k in handler]
    if not triggers:
        ctx.error("missing-key", path, f"{where} does not say when it fires: it needs an "
                  "`intent`, a `dtmf` key or an `event`.",
                  "Add one of `intent:`, `dtmf:` or `event:`.")
    elif len(triggers) > 1:
        ctx.error("conflicting-keys", (*path, triggers[1]),
                  f"{where} has both `{triggers[0]}` and `{triggers[1]}`; a handler has exactly "
                  "one trigger.", "Split it into two handlers.", key=True)
    if "go" in handler and "do" in handler:
        ctx.error("conflicting-keys", (*path, "do"),
                  f"{where} has both `go` and `do`; it can only do one of them.",
                  "Keep `go:` to move to a state, or `do:` for repeat/restart/continue/hangup.",
                  key=True)
    if "intent" in handler:
        ref_intent(ctx, (*path, "intent"), handler["intent"], where)
    if "go" in handler:
        ref_state(ctx, (*path, "go"), handler["go"], where)
    if "call" in handler:
        ref_tool(ctx, (*path, "call"), handler["call"], where, builtins=False)


def _check_tool(ctx: CheckContext, name: str, tool: dict[str, Any]) -> None:
    base = ("tools", name)
    where = f"Tool `{name}`"
    if name in BUILTIN_TOOLS:
        ctx.error("bad-value", base, f"`{name}` is the name of a built-in tool; a flow cannot "
                  "define it again.", f"Call yours something else, e.g. `my_{name}`.", key=True)
    has_url, has_python = "url" in tool, "python" in tool
    if not has_url and not has_python:
        ctx.error("missing-key", base, f"{where} does not say what to call: it needs a `url`.",
                  "Add `url:` with the address of the web service (developers: `python:`).",
                  key=True)
    elif has_url and has_python:
        ctx.error("conflicting-keys", (*base, "python"),
                  f"{where} has both `url` and `python`; a tool is one or the other.",
                  "Remove one of them.", key=True)
    url = tool.get("url")
    problem = url_problem(url) if isinstance(url, str) else None
    if problem is not None and isinstance(url, str):
        shown = url.strip()
        fixed = shown if "://" in shown.split("/", 1)[0] else f"https://{shown}"
        ctx.error("bad-url", (*base, "url"), f"The `url` of {where.lower()} ({shown}) {problem}.",
                  f"Write the whole address, e.g. `url: \"{fixed}\"`."
                  if "://" not in shown.split("/", 1)[0]
                  else "Use the service's `https://` address.")
    needs = tool.get("needs")
    if isinstance(needs, list):
        for i, slot in enumerate(needs):
            ref_slot(ctx, (*base, "needs", i), slot, where)
    if "on_failure" in tool:
        ref_state(ctx, (*base, "on_failure"), tool["on_failure"], f"The `on_failure` of {name}")
    method = str(tool.get("method", "GET")).upper()
    retries = tool.get("retries")
    if (isinstance(retries, int) and not isinstance(retries, bool) and retries > 0
            and method in ("POST", "PATCH") and tool.get("idempotent") is not True):
        ctx.warn("unsafe-retry", (*base, "retries"),
                 f"{where} is a {method} request, which is not retried unless it is marked "
                 "safe to repeat, so `retries` has no effect.",
                 "Add `idempotent: true` if sending it twice is harmless, or remove `retries`.",
                 key=True)
