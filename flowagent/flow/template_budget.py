"""The budget every template render runs under: time and output size.

Why: a flow's templates run on the event loop of a server that carries every call. A template
that loops `range(99999)` inside `range(99999)`, or says `{{ 'a' * 10**9 }}`, validated clean and
then froze start-up, spun a core on a hot reload (ignoring SIGTERM), or took 4 GB and lost the
call's record. The sandbox stops templates reaching Python internals; this module stops them
taking unbounded time or memory:

* **time** — a render may take at most `TIME_S`; the clock is read in every loop of the
  template (every 128 rounds: `budgeted_iter`, put on each `{% for %}` by the environment), on
  every call it makes, and between output chunks;
* **output** — a render may produce at most `MAX_OUTPUT` characters (a spoken sentence, a
  tool's URL or an LLM's instructions never come near it);
* **single values** — work that would build one huge value in one step is refused *before*
  it runs: `text * n`, `n ** m`, `'%9999999d' % x`, `range(n)`, and filters or text methods
  given a width or count (`center`, `indent`, `format`, `replace`, `ljust`...).

A render over its budget raises `TemplateBudgetError`, whose message is one plain sentence
fragment: on a call the engine turns it into a named flow problem and takes the flow's `error`
path; at validate time (`checks/template_checks.py`) it is the `template-too-costly` error.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "MAX_OUTPUT",
    "MAX_RANGE",
    "TIME_S",
    "TemplateBudgetError",
    "budget",
    "budgeted_iter",
    "check_binop",
    "check_call",
    "check_time",
    "guarded_filter",
    "safe_range",
]

TIME_S = 0.2
MAX_OUTPUT = 50_000
MAX_RANGE = 10_000
_MAX_POWER_BITS = 128  # 2**128 ~ 3.4e38: far beyond any price, count or date
_CHECK_EVERY = 128

_deadline: ContextVar[float] = ContextVar("flowagent_template_deadline", default=math.inf)


class TemplateBudgetError(Exception):
    """A template that would take too long or build too much. `str()` is the plain reason."""


@contextmanager
def budget(seconds: float = TIME_S) -> Iterator[None]:
    """Run the enclosed render(s) under one deadline. Nested budgets keep the outer (earlier)
    deadline, so a template that renders another cannot extend its own time."""
    outer = _deadline.get()
    token = _deadline.set(min(outer, time.monotonic() + seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_time() -> None:
    if time.monotonic() > _deadline.get():
        raise TemplateBudgetError(f"it takes longer than {_ms(TIME_S)} to work out")


def budgeted_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """What every `{% for %}` loops over: the same items, with the clock read every
    `_CHECK_EVERY` rounds (a loop with an empty body yields no output to check between)."""
    deadline = _deadline.get()
    for i, item in enumerate(iterable):
        if not i % _CHECK_EVERY and time.monotonic() > deadline:
            raise TemplateBudgetError(f"a loop in it takes longer than {_ms(TIME_S)}")
        yield item


def safe_range(*args: int) -> range:
    """`range()` in templates: at most `MAX_RANGE` numbers."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateBudgetError(
            f"range() would count {len(rng):,} numbers; at most {MAX_RANGE:,} are allowed")
    return rng


def _too_long(n: int) -> TemplateBudgetError:
    return TemplateBudgetError(
        f"it would make a text of {n:,} characters; at most {MAX_OUTPUT:,} are allowed")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _repeat(seq: Any, n: Any) -> None:
    if isinstance(seq, str | list | tuple) and _is_int(n) and len(seq) * n > MAX_OUTPUT:
        raise _too_long(len(seq) * n)


_WIDTH = re.compile(r"\d{6,}")


def _format_widths(fmt: Any) -> None:
    """'%9999999d' or '{:>9999999}': a width in the format text itself."""
    if isinstance(fmt, str):
        for m in _WIDTH.finditer(fmt):
            if int(m.group()) > MAX_OUTPUT:
                raise _too_long(int(m.group()))


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**` and `%` that would build a huge value, before Python builds it."""
    if operator == "*":
        _repeat(left, right)
        _repeat(right, left)
    elif operator == "**":
        if _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0 \
                and right * math.log2(abs(left)) > _MAX_POWER_BITS:
            raise TemplateBudgetError(f"{left} ** {right} is too big a number to work out")
    elif operator == "%" and isinstance(left, str):
        _format_widths(left)
        if "*" in left:  # '%*d' % (width, value): the width comes from the values
            _big_ints(right if isinstance(right, tuple) else (right,), {})


def _big_ints(args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    for v in (*args, *kwargs.values()):
        if _is_int(v) and v > MAX_OUTPUT:
            raise _too_long(v)


def _replace_size(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = text.count(old) if old else len(text) + 1
        size = len(text) + count * (len(new) - len(old))
        if size > MAX_OUTPUT:
            raise _too_long(size)


# text methods a template may call (the sandbox allows those that change nothing) whose
# arguments decide the size of what they return
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_NESTED_WIDTH = re.compile(r"\{[^{}]*:[^{}]*\{")  # '{:>{w}}': the width is a value


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before every call a template makes: the clock, and text methods that would build a
    huge text (`'a'.center(10**9)`, `'{:>9999999}'.format(1)`, `x.replace('a', long)`)."""
    check_time()
    # the sandbox hands templates `str.format` wrapped (functools.update_wrapper) in its own
    # safe formatter: look at the method it wraps
    obj = getattr(obj, "__wrapped__", obj)
    if getattr(obj, "__name__", "") == "generate_lorem_ipsum":  # Jinja's `lipsum(n, ...)`
        if any(_is_int(v) and v > 100 for v in (*args, *kwargs.values())):
            raise TemplateBudgetError("lipsum() is asked for too much text")
        return
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, str):
        name = getattr(obj, "__name__", "")
        if name in _SIZED_METHODS:
            _big_ints(args, kwargs)
        elif name in ("format", "format_map"):
            _format_widths(owner)
            if _NESTED_WIDTH.search(owner):
                _big_ints(args, kwargs)
        elif name == "replace" and len(args) >= 2:
            _replace_size(owner, args[0], args[1])
        elif name == "join" and args and isinstance(args[0], list | tuple):
            items = args[0]
            if sum(len(str(x)) for x in items) + len(owner) * len(items) > MAX_OUTPUT:
                raise _too_long(sum(len(str(x)) for x in items) + len(owner) * len(items))


def guarded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja filter wrapped so that a width or count in its arguments cannot build a huge
    text (`center(10**9)`, `indent(10**9)`, `format('%9999999d')`, `replace('a', long)`)."""

    skip = 2 if hasattr(fn, "jinja_pass_arg") else 1  # (environment,) value, then arguments

    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_time()
        value, params = args[skip - 1] if len(args) >= skip else None, args[skip:]
        if name == "replace":
            if len(params) >= 2:
                _replace_size(value, params[0], params[1])
        elif name in ("format", "format_map"):
            _format_widths(value)
            if isinstance(value, str) and "*" in value:
                _big_ints(params, kwargs)
        else:  # center(width), indent(width), wordwrap(width), truncate(length)
            _big_ints(params, kwargs)
        return fn(*args, **kwargs)

    for attr in ("jinja_pass_arg",):  # keep Jinja's "pass the environment/context" marker
        if hasattr(fn, attr):
            setattr(guarded, attr, getattr(fn, attr))
    guarded.__name__ = getattr(fn, "__name__", name)
    guarded.__doc__ = fn.__doc__
    return guarded


GUARDED_FILTERS = ("center", "indent", "format", "replace", "wordwrap", "truncate")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
