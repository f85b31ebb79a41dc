"""Sub-flows (format 2): the file a `subflow:` state names must exist and validate, its
parameters must be the ones it declares, and no sub-flow may end up calling itself.

The sub-flow's own findings stay in its own file (`flowagent validate` of a folder shows them
there once); the calling flow gets one error at its `subflow:` line when the sub-flow cannot run.
The values its `return:` states give back are recorded on the context, so the calling flow's
templates may read them as `vars.<name>`.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

from flowagent.flow.checks.context import CheckContext, is_typo_of, quote_list, suggestion_for
from flowagent.flow.subflow_paths import subflow_file

#: the files being validated right now, outermost first: a sub-flow met again is a loop
_VALIDATING: ContextVar[tuple[str, ...]] = ContextVar("validating_subflows", default=())


def check_subflows(ctx: CheckContext) -> None:
    if "subflow" not in ctx.text:
        return
    me = _key(ctx.file)
    token = _VALIDATING.set((*_VALIDATING.get(), me)) if me not in _VALIDATING.get() else None
    try:
        for name, st in ctx.items("states"):
            written = st.get("subflow")
            if isinstance(written, str):
                _check_one(ctx, name, st, written)
    finally:
        if token is not None:
            _VALIDATING.reset(token)


def _key(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def _check_one(ctx: CheckContext, name: str, st: dict[str, Any], written: str) -> None:
    path = ("states", name, "subflow")
    file = subflow_file(written, ctx.file)
    if not file.is_file():
        near = [p.name for p in file.parent.glob("*.y*ml")] if file.parent.is_dir() else []
        close = [n for n in near if is_typo_of(file.name, n)]
        ctx.error("unknown-subflow", path,
                  f"State `{name}` runs the sub-flow `{written}`, but there is no such file "
                  f"(looked for {file}).",
                  f"Did you mean `{close[0]}`?" if close else
                  "The path is relative to this flow's own file.")
        return
    if _key(str(file)) in _VALIDATING.get():
        ctx.error("subflow-loop", path,
                  f"State `{name}` runs the sub-flow `{written}`, which (itself or through "
                  "another sub-flow) runs this flow again, so the call could never come back.",
                  "Move the shared steps into a sub-flow of their own that both can run.")
        return
    if ctx.validate_other is None:
        return
    report = ctx.validate_other(file)
    errors = [f for f in report.findings if f.severity == "error"]
    data = report.data if isinstance(report.data, dict) else {}
    if errors:
        loops = [f for f in errors if f.code == "subflow-loop"]
        first = loops[0] if loops else errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = (f"The sub-flow `{written}` cannot run: {first.file}:{first.line}:"
                   f"{first.column}: {first.message.rstrip('.')}{more}.")
        fix = f"Run `flowagent validate {file}` and fix what it reports."
        if loops:
            ctx.error("subflow-loop", path, message, fix)
        else:
            ctx.error("subflow-invalid", path, message, fix)
    _check_params(ctx, name, st, written, data)
    for state in (data.get("states") or {}).values():
        returned = state.get("return") if isinstance(state, dict) else None
        if isinstance(returned, dict):
            ctx.returned_vars |= {str(k) for k in returned}


def _check_params(ctx: CheckContext, name: str, st: dict[str, Any], written: str,
                  data: dict[str, Any]) -> None:
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    assert isinstance(params, dict)
    given = st.get("with") if isinstance(st.get("with"), dict) else {}
    assert isinstance(given, dict)
    for key in given:
        if key not in params:
            ctx.error("unknown-param", ("states", name, "with", key),
                      f"State `{name}` gives the sub-flow `{written}` a value `{key}`, but it "
                      "has no parameter of that name"
                      + (f" (its parameters are {quote_list(params)})." if params else "."),
                      suggestion_for(key, list(params),
                                     f"Add `{key}:` under `params:` in {written}, or remove "
                                     "it here."), key=True)
    for pname, spec in params.items():
        has_default = isinstance(spec, dict) and "default" in spec
        if pname not in given and not has_default:
            ctx.error("missing-param", ("states", name, "subflow"),
                      f"State `{name}` runs the sub-flow `{written}` without its parameter "
                      f"`{pname}`, which has no default.",
                      f"Add `with: {{{pname}: ...}}` to this state, or give `{pname}` a "
                      f"`default:` in {written}.")
