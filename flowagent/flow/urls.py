"""Templated URLs (tool `url:`, `context.fetch.url`): each value is percent-encoded for the part
of the URL it lands in, so a caller's "Flat 2, 10 High St & Co #3" cannot break the request.

The rule (documented in docs/flow-format.md, "Tools"), the same as RFC 6570's simple
expansion `{var}`:

* a value in the **path, query or fragment** is percent-encoded completely: everything but
  letters, digits and ``- . _ ~`` (so ``/ ? & = # + %`` and spaces are encoded too):
  ``?from={{ slots.from_postcode }}`` sends ``?from=LS11%205AB``;
* a value at the **very start** of the URL is inserted as it is: it is a base URL from the
  flow's configuration (``url: "{{ context.api_base }}/quote"``);
* a value in the **host part** (``https://{{ context.host }}/x``) keeps ``:`` (for a port) and
  is otherwise encoded like the rest, so it cannot add a path or a query;
* a value the template already encoded with ``| urlencode`` (as the last filter) is not encoded
  again, and ``| safe`` inserts a value exactly as it is (for a trusted value that holds
  several path segments, e.g. ``{{ context.prefix | safe }}``).

How: the URL template is rendered by an overlay of the shared sandboxed environment whose
``finalize`` wraps every ``{{ }}`` output in two private-use marker characters (with a flag
for "already encoded"); the assembled text is then walked left to right and each value is
encoded according to what precedes it in the *rendered* URL. Literal text the author wrote is
left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

_OPEN, _CLOSE = "\ue000", "\ue001"
_RAW, _VALUE = "R", "V"


class _Encoded(str):
    """Output of the URL environment's ``urlencode`` filter: already encoded."""

    __slots__ = ()


def _finalize(value: Any) -> str:
    """Mark every `{{ }}` output so the assembler knows where values are."""
    from markupsafe import Markup

    if value is None:  # a missing value is empty, as in spoken templates
        return ""
    kind = _RAW if isinstance(value, (_Encoded, Markup)) else _VALUE
    text = str(value).replace(_OPEN, "").replace(_CLOSE, "")
    return f"{_OPEN}{kind}{text}{_CLOSE}"


def _urlencode(value: Any) -> _Encoded:
    from jinja2.filters import do_urlencode

    return _Encoded(do_urlencode(value))


@lru_cache(maxsize=1)
def _environment() -> Any:
    from flowagent.flow.templates import get_environment

    env = get_environment().overlay(finalize=_finalize)
    env.filters = {**env.filters, "urlencode": _urlencode}
    return env


def _encode(value: str, before: str) -> str:
    """``value`` encoded for where it lands, given the URL rendered so far."""
    if not before.strip():
        return value  # a base URL from configuration
    _, sep, rest = before.partition("://")
    if not sep:
        # "{{ a }}{{ b }}" with no scheme yet: still building the base URL
        return value if "/" not in before and "?" not in before else quote(value, safe="")
    if not any(c in rest for c in "/?#"):
        return quote(value, safe=":[]")  # host[:port]
    return quote(value, safe="")


def assemble(marked: str) -> str:
    """The final URL from a rendering with marked values (see the module docstring)."""
    out: list[str] = []
    pos = 0
    while True:
        start = marked.find(_OPEN, pos)
        if start < 0:
            out.append(marked[pos:])
            break
        end = marked.find(_CLOSE, start)
        if end < 0:  # cannot happen (finalize always closes); keep the text, drop the marker
            out.append(marked[pos:start] + marked[start + 1 :])
            break
        out.append(marked[pos:start])
        kind, value = marked[start + 1], marked[start + 2 : end]
        out.append(value if kind == _RAW else _encode(value, "".join(out)))
        pos = end + 1
    return "".join(out).strip()


class UrlTemplate:
    """A compiled URL template; ``render(ctx)`` returns the URL with its values encoded.

    Has the same ``render`` signature as a Jinja template, so the compiler can store it where
    it stores compiled templates.
    """

    __slots__ = ("_template", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._template = _environment().from_string(source)

    def render(self, ctx: Mapping[str, Any] | None = None, /, **kwargs: Any) -> str:
        data = dict(ctx or {})
        data.update(kwargs)
        return assemble(self._template.render(data))


def compile_url(source: str) -> UrlTemplate:
    """Compile a URL template (raises Jinja's TemplateSyntaxError like the shared env)."""
    return UrlTemplate(source)


def render_url(source: str, ctx: Mapping[str, Any]) -> str:
    """Render a URL template once (tests, tools outside a compiled flow)."""
    return compile_url(source).render(ctx)
