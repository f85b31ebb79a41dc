"""Templates and expressions: they must parse, use only known filters, and read only names that
will exist on a call (declared slots, values some tool saves, context keys, call metadata...).

The checks use the very environment the engine renders with (`flowagent.flow.templates`), so
"validates clean" means "compiles at run time".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from flowagent.flow import templates as T
from flowagent.flow.checks.context import CheckContext, describe, quote_list, suggestion_for
from flowagent.flow.loader import PathT

CALL_FIELDS = ("caller", "did", "uuid", "channel", "started_at", "metadata")
RESULT_FIELDS = ("ok", "status", "data", "error")
TOP_NAMES = ("slots", "vars", "context", "call", "result", "answer", "intent", "now")
JINJA_GLOBALS = ("range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop")

_STATE_TEMPLATES = ("say", "ask", "reprompt", "confirm", "transfer", "reason")
_SLOT_TEMPLATES = ("prompt", "reprompt", "invalid")


def _string_leaves(value: Any, path: PathT) -> Iterator[tuple[PathT, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _string_leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_leaves(v, (*path, i))


def _templates(ctx: CheckContext) -> Iterator[tuple[PathT, str, str | None]]:
    """(path, source, tool name or None) for every template in the flow."""
    for name, st in ctx.items("states"):
        for key in _STATE_TEMPLATES:
            if isinstance(st.get(key), str):
                yield ("states", name, key), st[key], None
        repeat = st.get("repeat")
        if isinstance(repeat, dict) and isinstance(repeat.get("ask"), str):
            yield ("states", name, "repeat", "ask"), repeat["ask"], None
        llm = st.get("llm")
        if isinstance(llm, dict) and isinstance(llm.get("instructions"), str):
            yield ("states", name, "llm", "instructions"), llm["instructions"], None
        for i, h in enumerate(_as_list(st.get("handlers"))):
            if isinstance(h, dict) and isinstance(h.get("say"), str):
                yield ("states", name, "handlers", i, "say"), h["say"], None
    for name, slot in ctx.items("slots"):
        for key in (*_SLOT_TEMPLATES, "choice_label"):
            if isinstance(slot.get(key), str):
                yield ("slots", name, key), slot[key], None
    for name, tool in ctx.items("tools"):
        if isinstance(tool.get("url"), str):
            yield ("tools", name, "url"), tool["url"], name
        for key in ("headers", "body"):
            for path, src in _string_leaves(tool.get(key), ("tools", name, key)):
                yield path, src, name
    fetch = ctx.mapping("context", "fetch")
    if isinstance(fetch.get("url"), str):
        yield ("context", "fetch", "url"), fetch["url"], None
    for path, src in _string_leaves(fetch.get("headers"), ("context", "fetch", "headers")):
        yield path, src, None
    for i, h in enumerate(ctx.listing("handlers")):
        if isinstance(h, dict) and isinstance(h.get("say"), str):
            yield ("handlers", i, "say"), h["say"], None


def expressions(ctx: CheckContext) -> Iterator[tuple[PathT, str, str | None]]:
    """(path, source, tool name or None) for every expression in the flow (format 2's
    `set`, `valid_when`, `with`, `return`, `repeat` and `choices_from` too)."""
    v2 = ctx.data.get("flowagent") == 2  # format 1 files cannot have those (needs-format-two)
    for name, st in ctx.items("states"):
        nxt = st.get("next")
        for i, br in enumerate(nxt if isinstance(nxt, list) else []):
            if isinstance(br, dict) and "when" in br and not isinstance(br["when"], dict | list):
                yield ("states", name, "next", i, "when"), _expr_text(br["when"]), None
        llm = st.get("llm")
        if isinstance(llm, dict) and "until" in llm and isinstance(llm["until"], str):
            yield ("states", name, "llm", "until"), llm["until"], None
        if not v2:
            continue
        yield from _values(st, ("states", name), ("set", "with", "return"))
        repeat = st.get("repeat")
        if isinstance(repeat, dict):
            yield from _values(repeat, ("states", name, "repeat"), ("add",))
            if isinstance(repeat.get("until"), str):
                yield ("states", name, "repeat", "until"), repeat["until"], None
        for i, h in enumerate(_as_list(st.get("handlers"))):
            if isinstance(h, dict):
                yield from _values(h, ("states", name, "handlers", i), ("set",))
    if v2:
        for i, h in enumerate(ctx.listing("handlers")):
            if isinstance(h, dict):
                yield from _values(h, ("handlers", i), ("set",))
        for name, slot in ctx.items("slots"):
            for key in ("valid_when", "choices_from"):
                if isinstance(slot.get(key), str | bool):
                    yield ("slots", name, key), _expr_text(slot[key]), None
    for name, tool in ctx.items("tools"):
        save = tool.get("save")
        for var, expr in (save.items() if isinstance(save, dict) else []):
            if isinstance(expr, str):
                yield ("tools", name, "save", var), expr, name


def _values(owner: dict[str, Any], base: PathT, keys: tuple[str, ...]
            ) -> Iterator[tuple[PathT, str, str | None]]:
    """The text values of `set:`-like mappings (other YAML values are literal data)."""
    for key in keys:
        mapping = owner.get(key)
        for target, expr in (mapping.items() if isinstance(mapping, dict) else []):
            if isinstance(expr, str):
                yield (*base, key, target), expr, None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _expr_text(value: Any) -> str:
    # `when: true` is a (silly but valid) expression; YAML made it a bool
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Scope:
    """The names a template or expression may read at one place in the flow."""

    def __init__(self, ctx: CheckContext) -> None:
        self.v2 = ctx.data.get("flowagent") == 2
        self.slots = set(ctx.slot_names)
        self.vars = ctx.saved_vars | set(ctx.mapping("vars")) | ctx.returned_vars
        self.params = set(ctx.mapping("params"))
        self.hours = set(ctx.mapping("hours"))
        ctxmap = ctx.mapping("context")
        self.has_fetch = "fetch" in ctxmap
        keys = set(ctx.mapping("context", "data"))
        for extra in ctx.mapping("context", "by_number").values():
            if isinstance(extra, dict):
                keys |= set(extra)
        self.context_keys = keys
        self.tool_args = {n: set(t["args"]) if isinstance(t.get("args"), dict) else set()
                          for n, t in ctx.items("tools")}


def _extra_names(ctx: CheckContext, path: PathT) -> set[str]:
    """Names only one place can read: `value` in a slot's `valid_when`, `item` in a
    `choice_label`, `choices` in the prompts of a slot whose options come from a tool."""
    if path[0] != "slots" or len(path) < 3:
        return set()
    key = path[2]
    if key == "valid_when":
        return {"value"}
    if key == "choice_label":
        return {"item"}
    if key in _SLOT_TEMPLATES and "choices_from" in ctx.mapping("slots", str(path[1])):
        return {"choices"}
    return set()


_BUDGET_HINT = ("A template may take 200 ms and say 50,000 characters: loop over fewer items "
                "(range() counts at most 10,000) and do not build long text with `*`.")

_UNSAFE = re.compile(r"\.\s*(_\w*)|\[\s*['\"](_\w*)")


def _unsafe_name(src: str) -> str | None:
    """A `_`-name inside `{{ }}`/`{% %}` (`x.__class__`): the sandbox always refuses it."""
    if "_" not in src or not ("._" in src or "'_" in src or '"_' in src or ". _" in src):
        return None
    for block in re.findall(r"\{\{.*?\}\}|\{%.*?%\}", src, re.DOTALL):
        m = _UNSAFE.search(block)
        if m:
            return m.group(1) or m.group(2)
    return None


def _unsafe_message(path: PathT, kind: str, text: str) -> str:
    where = _where(path)
    if kind == "file":
        return (f"The template in {where} uses `{text}`, which reads another template file; "
                "flows cannot read files, so it would fail on every call.")
    if kind == "computed":
        return (f"The template in {where} uses `{text}` with a name worked out on the call; "
                "only a fixed name is allowed, for safety.")
    return (f"The template in {where} reads `{text}`; names starting with `_` are blocked for "
            "safety, so it would fail on every call.")


def check_templates(ctx: CheckContext) -> None:
    scope = _Scope(ctx)
    for path, src, tool in _templates(ctx):
        problem = T.template_error(src)
        if problem is not None:
            ctx.error("template-syntax", path, _syntax_message(path, problem.message),
                      _syntax_hint(problem.message), needle=_bad_spot(src))
            continue
        unsafe = _unsafe_name(src)
        if unsafe is not None:
            ctx.error("unsafe-template", path,
                      f"The template in {_where(path)} reads `{unsafe}`; names starting with "
                      "`_` are blocked for safety, so it would fail on every call.",
                      "Use the value itself, or a filter such as `| string` or `| length`.",
                      needle=unsafe)
            continue
        part = T.unsafe_part(src)
        if part is not None:
            ctx.error("unsafe-template", path, _unsafe_message(path, *part),
                      "Use the value itself, or a filter such as `| string` or `| length`."
                      if part[0] != "file" else
                      "Write the words in this template itself; flows cannot read other files.")
            continue
        costly = T.budget_problem(src)
        if costly is not None:
            ctx.error("template-too-costly", path,
                      f"The template in {_where(path)} would be stopped on every call: "
                      f"{costly}.", _BUDGET_HINT)
            continue
        try:
            names = T.template_names(src)
            filters, tests = T.filters_used(src), T.tests_used(src)
        except Exception:  # pragma: no cover - template_error said it parses
            continue
        _check_calls(ctx, path, filters, tests)
        _check_names(ctx, path, names, scope, tool=tool, response=False,
                     extra=_extra_names(ctx, path))
    for path, src, tool in expressions(ctx):
        if scope.v2:
            _check_v2_expression(ctx, path, src, tool, scope)
            continue
        problem = T.expression_error(src)
        if problem is not None:
            hint = ("Write the condition without `{{ }}`, e.g. `slots.bedrooms >= 6`."
                    if "braces" in problem.message else
                    "Check the brackets, quotes and operators (==, !=, <, >=, and, or, not).")
            ctx.error("expression-syntax", path,
                      f"The expression `{src}` in {_where(path)} cannot be read: "
                      f"{problem.message}.", hint)
            continue
        costly = T.budget_problem(src, expression=True)
        if costly is not None:
            ctx.error("template-too-costly", path,
                      f"The expression `{src}` in {_where(path)} would be stopped on every "
                      f"call: {costly}.", _BUDGET_HINT)
            continue
        try:
            names = T.expression_names(src)
            filters = T.filters_used(src, expression=True)
            tests = T.tests_used(src, expression=True)
        except Exception:  # pragma: no cover
            continue
        _check_calls(ctx, path, filters, tests)
        _check_names(ctx, path, names, scope, tool=tool, response=path[2:3] == ("save",))
        _check_literals(ctx, path, src)


def _check_v2_expression(ctx: CheckContext, path: PathT, src: str, tool: str | None,
                         scope: _Scope) -> None:
    """Format 2 expressions are read by flowagent's own evaluator: it decides what parses."""
    from flowagent.flow import expressions as E

    problem = E.syntax_error(src)
    if problem is not None:
        hint = problem.hint or (
            "Write the expression without `{{ }}`, e.g. `vars.total + 1`."
            if "braces" in str(problem) else
            "Check the brackets, quotes and operators (+, -, *, /, ==, <, and, or, not).")
        ctx.error("expression-syntax", path,
                  f"The expression `{src}` in {_where(path)} cannot be read: {problem}.", hint)
        return
    names = T.expression_names(src)
    _check_names(ctx, path, names, scope, tool=tool, response=path[2:3] == ("save",),
                 extra=_extra_names(ctx, path))
    _check_literals(ctx, path, src)


_INTENT_CMP = re.compile(r"\bintent\s*(?:==|!=)\s*['\"](\w+)['\"]"
                         r"|['\"](\w+)['\"]\s*(?:==|!=)\s*intent\b")
_INTENT_IN = re.compile(r"\bintent\s+(?:not\s+)?in\s*[\[(]([^\])]*)[\])]")
_CHOICE_CMP = re.compile(r"\bslots\.(\w+)\s*(?:==|!=)\s*['\"]([^'\"]*)['\"]")


def _check_literals(ctx: CheckContext, path: PathT, src: str) -> None:
    """`intent == 'goodbey'` or `slots.size == 'smal'` would silently never be true."""
    known_intents = ctx.intent_names
    wanted = [a or b for a, b in _INTENT_CMP.findall(src)]
    for group in _INTENT_IN.findall(src):
        wanted += re.findall(r"['\"](\w+)['\"]", group)
    for name in wanted:
        if name not in known_intents:
            ctx.error("unknown-intent", path,
                      f"The condition in {_where(path)} compares `intent` with `{name}`, which is "
                      "not an intent this flow knows, so it can never be true.",
                      suggestion_for(name, known_intents,
                                     f"Add `{name}:` under `intents:`, or fix the name."),
                      needle=name)
    slots = ctx.mapping("slots")
    for slot_name, value in _CHOICE_CMP.findall(src):
        slot = slots.get(slot_name)
        if not isinstance(slot, dict) or slot.get("type") != "choice":
            continue
        choices = slot.get("choices")
        if isinstance(choices, dict) and choices and value not in choices:
            ctx.error("bad-value", path,
                      f"The condition in {_where(path)} compares slot `{slot_name}` with "
                      f"`{value}`, which is not one of its choices, so it can never be true.",
                      _choice_suggestion(value, choices), needle=value)


def _choice_suggestion(value: str, choices: dict[str, Any]) -> str:
    """Point a word at the choice it *means*: a synonym (`not urgent`) names its own value
    (`routine`), never the value it happens to look like (`urgent`)."""
    synonyms: dict[str, str] = {}
    for choice, words in choices.items():
        for word in words if isinstance(words, list) else []:
            synonyms[str(word).lower()] = str(choice)
    meant = synonyms.get(value.lower())
    if meant is not None:
        return (f"`{value}` is one of the words callers use for `{meant}`; the slot holds "
                f"the value itself, so compare with `'{meant}'`.")
    from flowagent.flow.checks.context import did_you_mean

    near = did_you_mean(value, [*map(str, choices), *synonyms])
    if near is not None:
        return f"Did you mean `{synonyms.get(near.lower(), near)}`?"
    return f"Use one of {quote_list(str(c) for c in choices)}."


def _where(path: PathT) -> str:
    return describe(path)


def _syntax_message(path: PathT, message: str) -> str:
    return f"The template in {_where(path)} cannot be read: {message.rstrip('.')}."


def _syntax_hint(message: str) -> str:
    if "`{{`" in message:
        return "Close it with `}}`, e.g. `{{ slots.name }}`."
    if "block is never closed" in message:
        return "Add the closing tag named in the message."
    return "Check the `{{ }}` and `{% %}` parts of this text."


def _bad_spot(src: str) -> str | None:
    """Text to point at for a syntax error: the unclosed `{{`, else the first `{{`."""
    i = 0
    while True:
        j = src.find("{{", i)
        if j < 0:
            break
        k = src.find("}}", j + 2)
        nxt = src.find("{{", j + 2)
        if k < 0 or (0 <= nxt < k):
            return src[j:].split("\n", 1)[0][:30]
        i = k + 2
    j = src.find("{%")
    return src[j:].split("\n", 1)[0][:30] if j >= 0 else None


#: filters/tests every Jinja 3 has (a subset: anything else is looked up in the environment,
#: which imports Jinja — most flows never need that)
KNOWN_FILTERS = frozenset({
    "say_date", "say_money", "say_phone", "say_postcode", "upper", "lower", "title",
    "capitalize", "default", "d", "round", "int", "float", "join", "replace", "trim", "length",
    "first", "last", "string", "abs", "list", "sort", "unique", "truncate", "wordcount",
    "say_time", "say_digits", "say_list", "without", "starts_with", "ends_with"})
KNOWN_TESTS = frozenset({"defined", "undefined", "none", "number", "string", "in", "true",
                         "false", "even", "odd", "eq", "ne"})


def _check_calls(ctx: CheckContext, path: PathT, filters: set[str], tests: set[str]) -> None:
    if filters <= KNOWN_FILTERS and tests <= KNOWN_TESTS:
        return
    env_filters = set(T.get_environment().filters)
    env_tests = set(T.get_environment().tests)
    for f in sorted(filters - env_filters):
        ctx.error("template-syntax", path,
                  f"There is no filter called `{f}` (used in {_where(path)}).",
                  suggestion_for(f, env_filters, "Flow filters are say_date, say_money, "
                                 "say_phone and say_postcode."), needle=f)
    for t in sorted(tests - env_tests):
        ctx.error("template-syntax", path,
                  f"There is no test called `{t}` (used in {_where(path)}).",
                  suggestion_for(t, env_tests), needle=t)


def _check_names(ctx: CheckContext, path: PathT, names: set[str], scope: _Scope, *,
                 tool: str | None, response: bool, extra: set[str] | None = None) -> None:
    allowed_top = set(TOP_NAMES) | set(JINJA_GLOBALS) | (extra or set())
    if scope.v2:
        allowed_top |= {"params", "hours"}
    if tool is not None:
        allowed_top.add("args")
    if response:
        allowed_top.add("response")
    where = _where(path)
    for name in sorted(names):
        root, _, attr = name.partition(".")
        if root not in allowed_top:
            hint_names = sorted(allowed_top - set(JINJA_GLOBALS))
            why = ""
            if root == "response":
                why = " (`response` only exists in a tool's `save:`)"
            elif root == "args":
                why = " (`args` only exists in a tool's url, headers and body)"
            elif root in scope.slots:
                why = f" (to use the slot, write `slots.{root}`)"
            elif root in scope.vars:
                why = f" (to use the saved value, write `vars.{root}`)"
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `{root}`, which is not a name "
                      f"templates can see{why}.",
                      suggestion_for(root, hint_names,
                                     f"Use one of {quote_list(hint_names)}."),
                      needle=root)
            continue
        if not attr:
            continue
        if root == "slots" and attr not in scope.slots:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `slots.{attr}`, but there is no slot "
                      f"called `{attr}`.",
                      suggestion_for(attr, scope.slots, f"Add `{attr}:` under `slots:`."),
                      needle=name)
        elif root == "vars" and attr not in scope.vars:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `vars.{attr}`, but "
                      + (f"there is no variable `{attr}` under `vars:` and no tool saves one."
                         if scope.v2 else f"no tool saves a value called `{attr}`."),
                      suggestion_for(attr, scope.vars,
                                     f"Add `{attr}:` with its starting value under `vars:`."
                                     if scope.v2 else
                                     f"Add `{attr}: response.<field>` under a tool's `save:`."),
                      needle=name)
        elif root == "params" and attr not in scope.params:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `params.{attr}`, but this flow has "
                      f"no parameter called `{attr}`.",
                      suggestion_for(attr, scope.params, f"Add `{attr}:` under `params:`."),
                      needle=name)
        elif root == "hours" and attr not in scope.hours:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `hours.{attr}`, but there is no "
                      f"schedule called `{attr}` under `hours:`.",
                      suggestion_for(attr, scope.hours, f"Add `{attr}:` under `hours:` with "
                                     "its opening times."),
                      needle=name)
        elif root == "context" and not scope.has_fetch and attr not in scope.context_keys:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `context.{attr}`, but `context.data` "
                      f"has no `{attr}`.",
                      suggestion_for(attr, scope.context_keys,
                                     f"Add `{attr}:` under `context:` → `data:`."),
                      needle=name)
        elif root == "call" and attr not in CALL_FIELDS:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `call.{attr}`, which calls do not have.",
                      suggestion_for(attr, CALL_FIELDS, f"Use one of {quote_list(CALL_FIELDS)}."),
                      needle=name)
        elif root == "result" and attr not in RESULT_FIELDS:
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `result.{attr}`; a tool result only "
                      f"has {quote_list(RESULT_FIELDS)}.",
                      suggestion_for(attr, RESULT_FIELDS,
                                     "Values inside the response are in `result.data`."),
                      needle=name)
        elif root == "args" and tool is not None and attr not in scope.tool_args.get(tool, set()):
            known = scope.tool_args.get(tool, set())
            ctx.error("undefined-variable", path,
                      f"{where[0].upper()}{where[1:]} uses `args.{attr}`, but tool `{tool}` has "
                      f"no argument called `{attr}`.",
                      suggestion_for(attr, known, f"Add `{attr}:` under the tool's `args:`."),
                      needle=name)
