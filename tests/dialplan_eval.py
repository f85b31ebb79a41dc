"""Read a dialplan line the way Asterisk does: `${VAR}` is a channel variable (unset: empty),
`${FUNC(args)}` calls a dialplan function, and an application's arguments are split at the
commas that are not inside parentheses. Enough of Asterisk's rules to catch a line that would
look fine to a reader and drop every call (`${UUID}` instead of `${UUID()}`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

#: dialplan functions this evaluator knows (what our snippets call)
FUNCTIONS: dict[str, Callable[[str], str]] = {
    "UUID": lambda _args: str(uuid.uuid4()),
    "LEN": lambda args: str(len(args)),
}


def substitute(text: str, variables: dict[str, str] | None = None) -> str:
    """`${...}` expressions replaced, innermost first, as Asterisk's pbx_substitute does."""
    variables = variables or {}
    pattern = re.compile(r"\$\{([A-Za-z0-9_]+)(?:\(([^(){}]*)\))?\}")
    while True:
        m = pattern.search(text)
        if m is None:
            return text
        name, args = m.group(1), m.group(2)
        if args is None and "(" not in m.group(0):
            value = variables.get(name, "")  # a variable; unset is empty, not an error
        else:
            if name not in FUNCTIONS:
                raise KeyError(f"dialplan function {name}() is not loaded")
            value = FUNCTIONS[name](args or "")
        text = text[: m.start()] + value + text[m.end():]


def application(line: str) -> tuple[str, list[str]]:
    """`same => n,App(a,b)` / `exten => x,1,App(a,b)` -> ("App", [a, b]) (arguments not yet
    substituted)."""
    app_call = _split(line.split("=>", 1)[1].strip())[-1]  # after the extension, priority
    m = re.fullmatch(r"([A-Za-z_]+)\((.*)\)", app_call.strip(), re.S)
    if m is None:
        raise ValueError(f"not an application call: {app_call!r}")
    return m.group(1), _split(m.group(2))


def _split(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out
