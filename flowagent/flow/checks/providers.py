"""Providers, secrets and the environment: provider names and options known to the registry,
no literal keys in the file, `${ENV}` variables that are set, and the default handlers a caller
would otherwise fall into."""

from __future__ import annotations

import os
import re
from typing import Any

from flowagent.flow.checks.context import CheckContext, quote_list, suggestion_for
from flowagent.flow.envrefs import iter_tree_refs
from flowagent.providers import registry

_SECRET_WORDS = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd|authorization)($|_)")


def _secret_name(name: str) -> bool:
    """`api_key`, `access_token`, `Authorization`, `X-Api-Key` — but not `keywords`/`max_tokens`."""
    return bool(_SECRET_WORDS.search(re.sub(r"[\W]", "_", name).lower()))

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
_PLAIN = {"string": "text", "integer": "a whole number", "number": "a number",
          "boolean": "true or false", "array": "a list", "object": "a group of settings",
          "dbfs_or_off": "a level in dBFS between -120 and 0 (such as -60), or off"}


def _dbfs_or_off(value: Any) -> bool:
    """A level in dBFS (-120 .. 0), or `off` / `false`."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return True
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and -120 <= value <= 0)


def _literal(value: Any) -> bool:
    """A value written out in full (not a `${ENV}` reference or a template)."""
    return isinstance(value, str) and bool(value.strip()) and "${" not in value \
        and "{{" not in value


def check_providers(ctx: CheckContext) -> None:
    providers = ctx.mapping("providers")
    if "sts" in providers:
        others = [k for k in ("asr", "llm", "tts") if k in providers]
        if others:
            ctx.error("sts-with-asr", ("providers", "sts"),
                      f"`sts` (speech-to-speech) replaces asr, llm and tts, but this flow also "
                      f"sets {quote_list(others)}.",
                      f"Remove {quote_list(others)}, or remove `sts`.", key=True)
    for kind, entry in providers.items():
        if not isinstance(entry, dict) or kind not in registry.KINDS:
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        spec = registry.get(kind, name)
        base = ("providers", kind)
        if spec is None:
            known = registry.names(kind)
            ctx.error("unknown-provider", (*base, "name"),
                      f"There is no {kind} provider called `{name}`.",
                      suggestion_for(name, known, f"Use one of {quote_list(known)}."))
            continue
        options = entry.get("options")
        options = options if isinstance(options, dict) else {}
        for opt, value in options.items():
            if opt not in spec.options:
                ctx.error("unknown-provider-option", (*base, "options", opt),
                          f"The {kind} provider `{name}` has no option called `{opt}`.",
                          suggestion_for(opt, spec.options,
                                         f"Its options are {quote_list(sorted(spec.options))}."
                                         if spec.options else "It takes no options."),
                          key=True)
                continue
            want = spec.options[opt]
            if isinstance(value, str) and "${" in value:
                continue  # filled in from the environment at run time
            ok_types = _JSON_TYPES.get(want)
            if want == "dbfs_or_off" and not _dbfs_or_off(value):
                ctx.error("wrong-type", (*base, "options", opt),
                          f"Option `{opt}` of the {kind} provider `{name}` should be "
                          f"{_PLAIN[want]}.")
            elif ok_types and (not isinstance(value, ok_types) or
                             (want in ("integer", "number") and isinstance(value, bool))):
                ctx.error("wrong-type", (*base, "options", opt),
                          f"Option `{opt}` of the {kind} provider `{name}` should be "
                          f"{_PLAIN.get(want, want)}.")
        for req in spec.required:
            if req not in options:
                ctx.error("missing-key", base,
                          f"The {kind} provider `{name}` needs the option `{req}`.",
                          f"Add `{req}:` under its `options:`"
                          + (f", e.g. `{req}: \"${{{req.upper()}}}\"`." if _secret_name(req)
                             else "."), key=True)
        for opt, value in options.items():
            if _secret_name(str(opt)) and _literal(value):
                _secret(ctx, (*base, "options", opt), str(opt))
            elif isinstance(value, dict):  # e.g. `headers: {Authorization: ...}`
                for sub, inner in value.items():
                    if _secret_name(str(sub)) and _literal(inner):
                        _secret(ctx, (*base, "options", opt, sub), str(sub))


def _secret(ctx: CheckContext, path: tuple[Any, ...], name: str) -> None:
    env = re.sub(r"\W", "_", name).upper()
    ctx.error("literal-secret", path,
              f"`{name}` looks like a secret written straight into the flow file; anyone who can "
              "read the file can use it.",
              f"Put it in an environment variable and write `\"${{{env}}}\"` instead.")


def check_secrets_in_headers(ctx: CheckContext) -> None:
    places = [(("tools", n, "headers"), t.get("headers")) for n, t in ctx.items("tools")]
    places.append((("context", "fetch", "headers"), ctx.mapping("context", "fetch").get("headers")))
    for base, headers in places:
        if not isinstance(headers, dict):
            continue
        for h, value in headers.items():
            if _secret_name(str(h)) and _literal(value):
                _secret(ctx, (*base, h), str(h))


def check_env(ctx: CheckContext) -> None:
    if not ctx.check_env:
        return
    environ = os.environ if ctx.environ is None else ctx.environ
    for path, ref in iter_tree_refs(ctx.data):
        if ref.default is None and ref.name not in environ:
            ctx.warn("missing-env", path,
                     f"The environment variable `{ref.name}` is not set, so this value will be "
                     "missing when the flow runs.",
                     f"Set {ref.name} before starting flowagent, or give a default: "
                     f"`${{{ref.name}:-value}}`.", needle="${" + ref.name)


def check_defaults(ctx: CheckContext) -> None:
    """Warnings about defaults an author may not expect."""
    states = ctx.mapping("states")
    listening = any(isinstance(s, dict) and any(k in s for k in ("ask", "collect", "llm"))
                    for s in states.values())
    events = {h.get("event") for h in ctx.listing("handlers") if isinstance(h, dict)}
    # a sub-flow (it has `params` or `return` states) uses the calling flow's handlers
    subflow = "params" in ctx.data or any(isinstance(s, dict) and "return" in s
                                          for s in states.values())
    # with `sts` the model does the listening: no_input/no_match handlers never run
    if listening and not subflow and "sts" not in ctx.mapping("providers"):
        where = ("handlers",) if "handlers" in ctx.data else ("states",)
        for ev, words in (("no_input", "hearing"), ("no_match", "understanding")):
            if ev not in events:
                ctx.warn("no-fallback-handler", where,
                         f"There is no `{ev}` handler, so a caller who keeps "
                         f"{'saying nothing' if ev == 'no_input' else 'not being understood'} "
                         f"hears \"Sorry, I'm having trouble {words} you. Goodbye.\" and is cut "
                         "off.",
                         f"Add a handler with `event: {ev}` (usually `go:` to a transfer state).",
                         key=True)
    providers = ctx.mapping("providers")
    if "llm" not in providers and "sts" not in providers:
        for name, st in ctx.items("states"):
            if "llm" in st:
                ctx.warn("no-llm-provider", ("states", name, "llm"),
                         f"State `{name}` hands the conversation to a language model, but no "
                         "`llm` provider is set; without one it cannot hold that conversation.",
                         "Add `providers: llm:` (for example `name: openai` with its options).",
                         key=True)


#: mirrors `runner.listener.PREPARE_MIN_MS`: the shortest pause an answer is prepared on (the
#: flow package does not import the runner)
_PREPARE_MIN_MS = 100


def check_preemptive(ctx: CheckContext) -> None:
    """Settings under which preemptive replies (`settings.preemptive_generation`, default on)
    can never engage: the answer is prepared on the recogniser's interim words during the
    caller's pause, so a recogniser that sends none, or that ends the turn before a pause is
    long enough to prepare on, leaves every turn on the slow sequential path."""
    settings = ctx.mapping("settings")
    if settings.get("preemptive_generation", True) is False:
        return
    providers = ctx.mapping("providers")
    if "sts" in providers:
        return
    asr = providers.get("asr")
    name = asr.get("name") if isinstance(asr, dict) else "whisper"
    opts = (asr.get("options") if isinstance(asr, dict) else None) or {}
    if not isinstance(opts, dict):
        return
    if name == "deepgram":
        if opts.get("interim_results") is False:
            ctx.warn("preemptive-impossible", ("providers", "asr", "options", "interim_results"),
                     "Deepgram is told to send no interim transcripts, so no answer can be "
                     "prepared before its final: preemptive replies never engage and every "
                     "turn waits for the recogniser, the language model and the voice in turn.",
                     "Remove `interim_results: false`, or set `settings: "
                     "preemptive_generation: false` to say you mean it.", key=True)
        endpointing = opts.get("endpointing_ms", 300)
        end_of_turn = settings.get("end_of_turn_ms", 600)
        if (isinstance(endpointing, int) and isinstance(end_of_turn, int)
                and 0 < endpointing <= _PREPARE_MIN_MS and endpointing < end_of_turn):
            ctx.warn("preemptive-impossible", ("providers", "asr", "options", "endpointing_ms"),
                     f"Deepgram's endpointing ends each turn after {endpointing} ms of silence, "
                     "before a pause "
                     f"is long enough ({_PREPARE_MIN_MS} ms) to prepare the answer on: "
                     "preemptive replies never engage.",
                     "Use `endpointing_ms: 300` (Deepgram's usual), or set `settings: "
                     "preemptive_generation: false`.", key=True)


def check_expected_answer(ctx: CheckContext) -> None:
    """`settings.expected_answer` (the end of turn judged by what was said) needs the words of
    the turn before it ends: the local Whisper transcribes them at a pause, a streaming
    recogniser sends them as interim transcripts. And its short silence must be shorter than
    its long one."""
    settings = ctx.mapping("settings")
    given = settings.get("expected_answer")
    if not isinstance(given, dict) or given.get("enabled", True) is False:
        return
    providers = ctx.mapping("providers")
    asr = providers.get("asr")
    opts = (asr.get("options") if isinstance(asr, dict) else None) or {}
    if "sts" in providers or (isinstance(asr, dict) and asr.get("name") == "deepgram"
                              and isinstance(opts, dict)
                              and opts.get("interim_results") is False):
        which = ("the speech-to-speech model hears the caller itself" if "sts" in providers
                 else "Deepgram is told to send no interim transcripts")
        ctx.warn("expected-answer-unused", ("settings", "expected_answer"),
                 f"`expected_answer` has no effect here: {which}, so there are no words to "
                 "judge before the turn ends; turns end after `end_of_turn_ms` of silence "
                 "(or the recogniser's own endpointing).",
                 "Remove `expected_answer`, or let the recogniser send interim words.",
                 key=True)
        return
    short, long_ = given.get("complete_ms", 200), given.get("incomplete_ms", 1500)
    if isinstance(short, int) and isinstance(long_, int) and short >= long_:
        ctx.warn("expected-answer-order", ("settings", "expected_answer", "complete_ms"),
                 f"`complete_ms` ({short}) is not shorter than `incomplete_ms` ({long_}), so a "
                 "caller who has answered waits as long as, or longer than, one who has said "
                 "half an answer.",
                 "Make `complete_ms` the shorter one (200 and 1500 by default).")
