"""Flow format 2's safe expressions: `when`, `until`, `save`, `set`, `valid_when`, `with`,
`repeat.add`.

Why not Jinja's own expression compiler (format 1 keeps using it): a flow author's arithmetic
must be safe *and* explainable. Here an expression is parsed with Jinja's parser — so the syntax
is exactly what authors already write inside `{{ }}` — and then compiled, node by node, into
small Python closures that only do what the flow format allows:

* names from the call's data (`slots.x`, `vars.x`, `context.x` ...) and look-ups into records
  and lists (`x.key`, `x['key']`, `x[0]`, `x[1:3]`); never an attribute or method of a value;
* arithmetic, comparisons, `and`/`or`/`not`, `in`, `a if c else b`, list and record literals;
* a fixed list of functions written as filters (`FILTERS`) and tests (`TESTS`).

There are no loops and no calls, so the work an expression does is bounded by its length; the
values it builds are capped (`MAX_TEXT` characters, `MAX_ITEMS` items), so `'a' * 10**9` is an
error, not a frozen call. Every failure is an `ExpressionError` whose message names the part of
the expression that failed in the author's own words ("cannot add text (slots.name) and a
number (1)"), so the call record, the log and `flowagent test` can say what went wrong.

Empty values: a slot not yet filled, or a key a tool did not return, reads as `None`. Comparing
`None` with `<`/`>` is simply false (a condition on an unanswered question does not hold), but
arithmetic on it is an error (a total cannot be worked out from a missing price).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flowagent.flow import spoken

if TYPE_CHECKING:
    from jinja2 import nodes

__all__ = [
    "FILTERS",
    "MAX_ITEMS",
    "MAX_TEXT",
    "TESTS",
    "CompiledExpression",
    "ExpressionError",
    "compile_expression",
    "describe",
    "parse",
    "syntax_error",
]

MAX_TEXT = 10_000
MAX_ITEMS = 1_000
_MAX_NUMBER = 10**15

Ctx = Mapping[str, Any]
Fn = Callable[[Ctx], Any]


class ExpressionError(Exception):
    """An expression that cannot be read (at compile time) or worked out (at run time).
    The message is one plain sentence fragment, without a full stop; `hint` says what to
    write instead, when we know."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    source: str
    fn: Fn

    def __call__(self, ctx: Ctx) -> Any:
        try:
            return self.fn(ctx)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError("the expression is nested too deeply") from None
        except Exception as exc:  # a filter met a value it cannot take
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


def parse(src: str) -> nodes.Expr:
    """The Jinja AST of a bare expression. Raises ExpressionError with a plain message."""
    from jinja2 import TemplateSyntaxError
    from jinja2.parser import Parser

    from flowagent.flow.templates import get_environment

    if not src.strip():
        raise ExpressionError("the expression is empty")
    if "{{" in src or "}}" in src:
        raise ExpressionError("write the expression without `{{ }}` braces")
    try:
        parser = Parser(get_environment(), src, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            tok = parser.stream.current
            raise ExpressionError(f"unexpected {tok.value!r} after the end of the expression")
    except TemplateSyntaxError as exc:
        raise ExpressionError((exc.message or "syntax error").strip()) from None
    return node


def syntax_error(src: str) -> ExpressionError | None:
    """Why `src` cannot be compiled (parse errors and disallowed constructs), or None."""
    try:
        compile_expression(src)
    except ExpressionError as exc:
        return exc
    return None


@lru_cache(maxsize=8192)
def compile_expression(src: str) -> CompiledExpression:
    """Parse and compile once (cached by source). Raises ExpressionError."""
    return CompiledExpression(src, _compile(parse(src)))


# ---------------------------------------------------------------------------------------------
# describing nodes in the author's words (for messages)
# ---------------------------------------------------------------------------------------------


def describe(node: nodes.Node) -> str:
    """Text for a node, close to how the author wrote it: `slots.x`, `vars.items[0]`, `3`."""
    from jinja2 import nodes as N

    if isinstance(node, N.Name):
        return node.name
    if isinstance(node, N.Getattr):
        return f"{describe(node.node)}.{node.attr}"
    if isinstance(node, N.Getitem):
        return f"{describe(node.node)}[{describe(node.arg)}]"
    if isinstance(node, N.Const):
        return repr(node.value) if isinstance(node.value, str) else str(node.value).lower() \
            if isinstance(node.value, bool) or node.value is None else str(node.value)
    if isinstance(node, N.Filter):
        inner = describe(node.node) if node.node is not None else "..."
        return f"{inner} | {node.name}"
    if isinstance(node, N.Slice):
        return ":".join(describe(p) if p is not None else "" for p in
                        (node.start, node.stop))
    return "(...)"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "yes/no"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a record"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------
# budget
# ---------------------------------------------------------------------------------------------


def _checked(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ExpressionError(f"the text grew past {MAX_TEXT:,} characters")
    if isinstance(value, list | tuple) and len(value) > MAX_ITEMS:
        raise ExpressionError(f"the list grew past {MAX_ITEMS:,} items")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            raise ExpressionError("the result is not a number")
        if abs(value) > _MAX_NUMBER:
            raise ExpressionError("the number grew too large")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------
# filters and tests (the only functions an expression can use)
# ---------------------------------------------------------------------------------------------


def _field(item: Any, name: Any) -> Any:
    if name is None:
        return item
    if isinstance(item, Mapping):
        return item.get(str(name))
    return None


def _items(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping | str) or not isinstance(value, Iterable):
        raise ExpressionError(f"`{what}` needs a list, but got {_kind(value)}")
    return list(value)


def _f_length(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, str | list | tuple | Mapping):
        return len(v)
    raise ExpressionError(f"`length` needs text or a list, but got {_kind(v)}")


def _f_sum(v: Any, attribute: Any = None, start: Any = 0) -> Any:
    total = start
    for x in _items(v, "sum"):
        x = _field(x, attribute)
        if x is None:
            continue
        if not _is_number(x):
            raise ExpressionError(f"`sum` can only add numbers, but found {_kind(x)}")
        total += x
    return total


def _f_minmax(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def f(v: Any, attribute: Any = None) -> Any:
        xs = [_field(x, attribute) for x in _items(v, name)]
        xs = [x for x in xs if x is not None]
        if not xs:
            return None
        try:
            return fn(xs)
        except TypeError:
            raise ExpressionError(f"`{name}` needs values of one kind") from None
    return f


def _f_join(v: Any, sep: Any = "", attribute: Any = None) -> str:
    return str(sep).join("" if x is None else str(x)
                         for x in (_field(i, attribute) for i in _items(v, "join")))


def _f_sort(v: Any, reverse: Any = False, case_sensitive: Any = False,
            attribute: Any = None) -> list[Any]:
    xs = _items(v, "sort")
    try:
        return sorted(xs, key=lambda x: _sort_key(_field(x, attribute), bool(case_sensitive)),
                      reverse=bool(reverse))
    except TypeError:
        raise ExpressionError("`sort` needs values of one kind") from None


def _sort_key(v: Any, case: bool) -> Any:
    return v.lower() if isinstance(v, str) and not case else v


def _f_unique(v: Any) -> list[Any]:
    out: list[Any] = []
    for x in _items(v, "unique"):
        if x not in out:
            out.append(x)
    return out


def _f_first(v: Any) -> Any:
    xs = _items(v, "first") if not isinstance(v, str) else list(v)
    return xs[0] if xs else None


def _f_last(v: Any) -> Any:
    xs = _items(v, "last") if not isinstance(v, str) else list(v)
    return xs[-1] if xs else None


def _f_round(v: Any, precision: Any = 0, method: Any = "common") -> Any:
    if not _is_number(v):
        raise ExpressionError(f"`round` needs a number, but got {_kind(v)}")
    p = int(precision)
    if method == "ceil":
        return math.ceil(v * 10**p) / 10**p
    if method == "floor":
        return math.floor(v * 10**p) / 10**p
    out = round(float(v) + 0.0, p)
    return out


def _f_int(v: Any, default: Any = 0) -> Any:
    try:
        return int(float(v)) if not isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return default


def _f_float(v: Any, default: Any = 0.0) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _f_abs(v: Any) -> Any:
    if not _is_number(v):
        raise ExpressionError(f"`abs` needs a number, but got {_kind(v)}")
    return abs(v)


def _text(name: str, fn: Callable[[str], str]) -> Callable[[Any], str]:
    def f(v: Any) -> str:
        return "" if v is None else fn(str(v))
    f.__name__ = name
    return f


def _f_replace(v: Any, old: Any, new: Any, count: Any = None) -> str:
    text = "" if v is None else str(v)
    return text.replace(str(old), str(new), -1 if count is None else int(count))


def _f_default(v: Any, default: Any = "", boolean: Any = False) -> Any:
    if v is None or (boolean and not v):
        return default
    return v


def _f_string(v: Any) -> str:
    return "" if v is None else str(v)


def _f_list(v: Any) -> list[Any]:
    if isinstance(v, str):
        return list(v)
    return _items(v, "list")


def _filters() -> dict[str, Callable[..., Any]]:
    from flowagent.flow import templates as T

    return {
        # text
        "upper": _text("upper", str.upper), "lower": _text("lower", str.lower),
        "title": _text("title", str.title), "capitalize": _text("capitalize", str.capitalize),
        "trim": _text("trim", str.strip), "replace": _f_replace, "string": _f_string,
        "starts_with": spoken.starts_with, "ends_with": spoken.ends_with,
        # numbers
        "round": _f_round, "int": _f_int, "float": _f_float, "abs": _f_abs,
        # lists
        "length": _f_length, "count": _f_length, "sum": _f_sum,
        "min": _f_minmax(min, "min"), "max": _f_minmax(max, "max"),
        "join": _f_join, "sort": _f_sort, "unique": _f_unique, "first": _f_first,
        "last": _f_last, "list": _f_list, "without": spoken.without,
        # anything
        "default": _f_default, "d": _f_default,
        # spoken forms
        "say_date": T.say_date, "say_money": T.say_money, "say_phone": T.say_phone,
        "say_postcode": T.say_postcode, "say_time": spoken.say_time,
        "say_digits": spoken.say_digits, "say_list": spoken.say_list,
    }


FILTERS: frozenset[str] = frozenset({
    "upper", "lower", "title", "capitalize", "trim", "replace", "string", "starts_with",
    "ends_with", "round", "int", "float", "abs", "length", "count", "sum", "min", "max", "join",
    "sort", "unique", "first", "last", "list", "without", "default", "d", "say_date",
    "say_money", "say_phone", "say_postcode", "say_time", "say_digits", "say_list",
})

TESTS: Mapping[str, Callable[[Any], bool]] = {
    "defined": lambda v: v is not None,
    "undefined": lambda v: v is None,
    "none": lambda v: v is None,
    "number": _is_number,
    "string": lambda v: isinstance(v, str),
    "true": lambda v: v is True,
    "false": lambda v: v is False,
    "even": lambda v: _is_number(v) and int(v) % 2 == 0,
    "odd": lambda v: _is_number(v) and int(v) % 2 == 1,
}


@lru_cache(maxsize=1)
def _filter_table() -> Mapping[str, Callable[..., Any]]:
    table = _filters()
    assert set(table) == FILTERS
    return table


# ---------------------------------------------------------------------------------------------
# compiling nodes into closures
# ---------------------------------------------------------------------------------------------


def _compile(node: nodes.Node) -> Fn:
    from jinja2 import nodes as N

    if isinstance(node, N.Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, N.Name):
        name = node.name
        return lambda ctx: ctx.get(name)
    if isinstance(node, N.Getattr):
        if node.attr.startswith("_"):
            raise ExpressionError(f"{describe(node)}: names starting with `_` cannot be read")
        attr: str = node.attr
        return _lookup(_compile(node.node), lambda ctx: attr, node)
    if isinstance(node, N.Getitem):
        if isinstance(node.arg, N.Slice):
            return _slice(node)
        return _lookup(_compile(node.node), _compile(node.arg), node)
    if isinstance(node, N.List | N.Tuple):
        items = [_compile(i) for i in node.items]
        return lambda ctx: [f(ctx) for f in items]
    if isinstance(node, N.Dict):
        pairs = []
        for pair in node.items:
            if not isinstance(pair.key, N.Const):
                raise ExpressionError("the names in a record `{...}` must be written in quotes")
            pairs.append((str(pair.key.value), _compile(pair.value)))
        return lambda ctx: {k: f(ctx) for k, f in pairs}
    if isinstance(node, N.And):
        a, b = _compile(node.left), _compile(node.right)
        return lambda ctx: a(ctx) and b(ctx)
    if isinstance(node, N.Or):
        a, b = _compile(node.left), _compile(node.right)
        return lambda ctx: a(ctx) or b(ctx)
    if isinstance(node, N.Not):
        a = _compile(node.node)
        return lambda ctx: not a(ctx)
    if isinstance(node, N.Neg | N.Pos):
        a = _compile(node.node)
        sign = -1 if isinstance(node, N.Neg) else 1
        what = describe(node.node)

        def signed(ctx: Ctx) -> Any:
            v = a(ctx)
            if not _is_number(v):
                raise ExpressionError(f"{what} is {_kind(v)}, not a number")
            return sign * v
        return signed
    if isinstance(node, N.CondExpr):
        test, yes = _compile(node.test), _compile(node.expr1)
        no = _compile(node.expr2) if node.expr2 is not None else (lambda ctx: None)
        return lambda ctx: yes(ctx) if test(ctx) else no(ctx)
    if isinstance(node, N.Concat):
        parts = [_compile(n) for n in node.nodes]
        return lambda ctx: _checked("".join("" if (v := f(ctx)) is None else str(v)
                                            for f in parts))
    if isinstance(node, N.BinExpr):
        return _binary(node)
    if isinstance(node, N.Compare):
        return _compare(node)
    if isinstance(node, N.Filter):
        return _filter(node)
    if isinstance(node, N.Test):
        return _test(node)
    if isinstance(node, N.Call):
        target = describe(node.node)
        name = target.rsplit(".", 1)[-1]
        as_filter = _CALL_AS_FILTER.get(name, name if name in FILTERS else "")
        raise ExpressionError(
            f"`{target}(...)` calls a function, which expressions cannot do",
            f"Write it as a filter: `x | {as_filter}`." if as_filter else
            "Functions are written as filters, e.g. `x | length`.")
    raise ExpressionError(f"this expression uses something flow expressions do not have "
                          f"({type(node).__name__})")


def _lookup(obj: Fn, key: Fn, node: nodes.Node) -> Fn:
    from jinja2 import nodes as N

    attr = isinstance(node, N.Getattr)
    where = describe(node)

    def get(ctx: Ctx) -> Any:
        base = obj(ctx)
        k = key(ctx)
        if isinstance(k, str) and k.startswith("_"):
            raise ExpressionError(f"{where}: names starting with `_` cannot be read")
        if base is None:
            return None
        if isinstance(base, Mapping):
            return base.get(k) if isinstance(k, str | int) else None
        if isinstance(base, list | tuple) and not attr and isinstance(k, int) \
                and not isinstance(k, bool):
            return base[k] if -len(base) <= k < len(base) else None
        if attr:
            raise ExpressionError(f"{where}: {_kind(base)} has no field `{k}` (only records "
                                  "have fields)")
        raise ExpressionError(f"{where}: cannot look up {k!r} in {_kind(base)}")
    return get


def _slice(node: nodes.Getitem) -> Fn:
    from jinja2 import nodes as N

    assert isinstance(node.arg, N.Slice)
    obj = _compile(node.node)
    start = _compile(node.arg.start) if node.arg.start is not None else (lambda ctx: None)
    stop = _compile(node.arg.stop) if node.arg.stop is not None else (lambda ctx: None)
    where = describe(node)

    def get(ctx: Ctx) -> Any:
        base = obj(ctx)
        if base is None:
            return None
        if not isinstance(base, str | list | tuple):
            raise ExpressionError(f"{where}: only text and lists can be cut, not {_kind(base)}")
        a, b = start(ctx), stop(ctx)
        if not all(x is None or (isinstance(x, int) and not isinstance(x, bool)) for x in (a, b)):
            raise ExpressionError(f"{where}: the positions must be whole numbers")
        return base[a:b]
    return get


#: what authors try to call, and the filter that does it
_CALL_AS_FILTER = {"len": "length", "str": "string", "sorted": "sort", "lower": "lower",
                   "upper": "upper", "strip": "trim", "startswith": "starts_with",
                   "endswith": "ends_with", "set": "unique"}

_OPS: Mapping[str, str] = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "FloorDiv": "//",
                           "Mod": "%", "Pow": "**"}
_VERB = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "//": "divide",
         "%": "divide"}


def _binary(node: nodes.BinExpr) -> Fn:
    op = _OPS.get(type(node).__name__)
    if op is None or op == "**":
        raise ExpressionError("powers (`**`) are not part of flow expressions; multiply instead")
    left, right = _compile(node.left), _compile(node.right)
    lw, rw = describe(node.left), describe(node.right)

    def run(ctx: Ctx) -> Any:
        a, b = left(ctx), right(ctx)
        if _is_number(a) and _is_number(b):
            if op in ("/", "//", "%") and b == 0:
                raise ExpressionError("cannot divide by zero" + (
                    "" if rw.replace(".", "").isdigit() else f" ({rw} is 0)"))
            out = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                   "/": lambda: a / b, "//": lambda: a // b, "%": lambda: a % b}[op]()
            return _checked(out)
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return _checked(a + b)
        if op == "+" and isinstance(a, list | tuple) and isinstance(b, list | tuple):
            return _checked([*a, *b])
        if a is None or b is None:
            empty = lw if a is None else rw
            raise ExpressionError(f"cannot work out `{lw} {op} {rw}`: {empty} is empty")
        raise ExpressionError(f"cannot {_VERB[op]} {_kind(a)} ({lw}) and {_kind(b)} ({rw})"
                              + ("; join text with `~`" if op == "+" else ""))
    return run


def _compare(node: nodes.Compare) -> Fn:
    first = _compile(node.expr)
    ops = [(o.op, _compile(o.expr), describe(o.expr)) for o in node.ops]
    head = describe(node.expr)

    def run(ctx: Ctx) -> bool:
        a, aw = first(ctx), head
        for op, fn, bw in ops:
            b = fn(ctx)
            if not _cmp(op, a, b, aw, bw):
                return False
            a, aw = b, bw
        return True
    return run


def _cmp(op: str, a: Any, b: Any, aw: str, bw: str) -> bool:
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if op in ("in", "notin"):
        if b is None:
            found = False
        elif isinstance(b, str):
            found = a is not None and str(a).lower() in b.lower()
        elif isinstance(b, Mapping | list | tuple):
            found = a in b
        else:
            raise ExpressionError(f"`in` needs text or a list on its right, but {bw} is "
                                  f"{_kind(b)}")
        return found if op == "in" else not found
    if a is None or b is None:
        return False  # a condition on an unanswered question does not hold
    if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return bool({"lt": a < b, "lteq": a <= b, "gt": a > b, "gteq": a >= b}[op])
    raise ExpressionError(f"cannot compare {_kind(a)} ({aw}) with {_kind(b)} ({bw})")


def _args(node: nodes.Filter | nodes.Test) -> tuple[list[Fn], list[tuple[str, Fn]]]:
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        raise ExpressionError("`*` and `**` arguments are not part of flow expressions")
    keywords: list[nodes.Keyword] = list(node.kwargs)  # type: ignore[arg-type]
    return ([_compile(a) for a in node.args],
            [(str(kw.key), _compile(kw.value)) for kw in keywords])


def _filter(node: nodes.Filter) -> Fn:
    name = node.name
    if name not in FILTERS:
        close = difflib.get_close_matches(name, sorted(FILTERS), n=1, cutoff=0.6)
        raise ExpressionError(f"there is no filter called `{name}`",
                              f"Did you mean `{close[0]}`?" if close else
                              "Filters are " + ", ".join(sorted(FILTERS)) + ".")
    assert node.node is not None
    target = _compile(node.node)
    args, kwargs = _args(node)
    fn = _filter_table()[name]

    def run(ctx: Ctx) -> Any:
        try:
            out = fn(target(ctx), *[a(ctx) for a in args], **{k: f(ctx) for k, f in kwargs})
        except TypeError as exc:
            raise ExpressionError(f"`{name}` was given the wrong arguments ({exc})") from None
        return _checked(out)
    return run


def _test(node: nodes.Test) -> Fn:
    test = TESTS.get(node.name)
    if test is None:
        raise ExpressionError(f"there is no test called `{node.name}`; use one of "
                              + ", ".join(sorted(TESTS)))
    target = _compile(node.node)
    return lambda ctx: bool(test(target(ctx)))


# ---------------------------------------------------------------------------------------------
# what an expression reads (for the validator)
# ---------------------------------------------------------------------------------------------


def names_read(src: str) -> set[str]:
    """Dotted names an expression reads, two parts at most: {"slots.x", "vars.total", "now"}.
    Raises ExpressionError when it does not parse."""
    from flowagent.flow import templates as T

    parse(src)
    return T.expression_names(src)


def filters_used(src: str) -> list[str]:
    from jinja2 import nodes as N

    return [n.name for n in parse(src).find_all(N.Filter)]


# ---------------------------------------------------------------------------------------------
# types, where they can be known (for the validator)
# ---------------------------------------------------------------------------------------------

#: what a filter needs and gives: (input kinds it accepts or None for any, output kind)
_FILTER_TYPES: Mapping[str, tuple[frozenset[str] | None, str | None]] = {
    "upper": (None, "text"), "lower": (None, "text"), "title": (None, "text"),
    "capitalize": (None, "text"), "trim": (None, "text"), "replace": (None, "text"),
    "string": (None, "text"), "starts_with": (None, "bool"), "ends_with": (None, "bool"),
    "round": (frozenset({"number"}), "number"), "int": (None, "number"),
    "float": (None, "number"), "abs": (frozenset({"number"}), "number"),
    "length": (frozenset({"text", "list", "record"}), "number"),
    "count": (frozenset({"text", "list", "record"}), "number"),
    "sum": (frozenset({"list"}), "number"), "min": (frozenset({"list"}), None),
    "max": (frozenset({"list"}), None), "join": (frozenset({"list"}), "text"),
    "sort": (frozenset({"list"}), "list"), "unique": (frozenset({"list"}), "list"),
    "first": (frozenset({"list", "text"}), None), "last": (frozenset({"list", "text"}), None),
    "list": (frozenset({"list", "text"}), "list"), "without": (frozenset({"list"}), "list"),
    "default": (None, None), "d": (None, None),
    "say_date": (None, "text"), "say_money": (None, "text"), "say_phone": (None, "text"),
    "say_postcode": (None, "text"), "say_time": (None, "text"), "say_digits": (None, "text"),
    "say_list": (None, "text"),
}
_WORDS = {"number": "a number", "text": "text", "bool": "yes/no", "list": "a list",
          "record": "a record"}


def type_problems(src: str, type_of: Callable[[str], str | None]) -> list[tuple[str, str]]:
    """Mistakes of kind an expression makes whatever the call brings, as (plain sentence,
    text to point at): adding text to a number, `sum` of something that is not a list...

    `type_of("slots.x")` gives what a name holds — "number", "text", "bool", "list",
    "record" — or None when it cannot be known (a tool's answer). Unknown stays quiet."""
    try:
        node = parse(src)
    except ExpressionError:
        return []
    out: list[tuple[str, str]] = []
    _infer(node, type_of, out)
    return out


def _infer(node: nodes.Node, type_of: Callable[[str], str | None],
           out: list[tuple[str, str]]) -> str | None:
    from jinja2 import nodes as N

    if isinstance(node, N.Const):
        v = node.value
        return ("bool" if isinstance(v, bool) else "number" if _is_number(v)
                else "text" if isinstance(v, str) else None)
    if isinstance(node, N.List | N.Tuple):
        for item in node.items:
            _infer(item, type_of, out)
        return "list"
    if isinstance(node, N.Dict):
        for pair in node.items:
            _infer(pair.value, type_of, out)
        return "record"
    if isinstance(node, N.Name | N.Getattr):
        name = describe(node)
        parts = name.split(".")
        return type_of(".".join(parts[:2])) if len(parts) <= 2 else None
    if isinstance(node, N.Getitem):
        _infer(node.node, type_of, out)
        _infer(node.arg, type_of, out)
        return None
    if isinstance(node, N.And | N.Or):
        _infer(node.left, type_of, out)
        _infer(node.right, type_of, out)
        return None
    if isinstance(node, N.Not | N.Test):
        _infer(node.node, type_of, out)
        return "bool"
    if isinstance(node, N.Neg | N.Pos):
        t = _infer(node.node, type_of, out)
        if t not in (None, "number"):
            out.append((f"`{describe(node.node)}` is {_WORDS[t]}, so it cannot be made "
                        "negative", describe(node.node)))
        return "number"
    if isinstance(node, N.Concat):
        for n in node.nodes:
            _infer(n, type_of, out)
        return "text"
    if isinstance(node, N.CondExpr):
        _infer(node.test, type_of, out)
        a = _infer(node.expr1, type_of, out)
        b = _infer(node.expr2, type_of, out) if node.expr2 is not None else None
        return a if a == b else None
    if isinstance(node, N.BinExpr):
        a, b = _infer(node.left, type_of, out), _infer(node.right, type_of, out)
        op = _OPS.get(type(node).__name__, "?")
        if a is None or b is None:
            return "number" if op in ("-", "/", "//", "%") else None
        if a == b == "number":
            return "number"
        if op == "+" and a == b and a in ("text", "list"):
            return a
        left, right = describe(node.left), describe(node.right)
        verb = _VERB.get(op, "combine")
        out.append((f"`{left} {op} {right}` would {verb} {_WORDS[a]} and {_WORDS[b]}"
                    + (" (to join text, use `~`)" if op == "+" and "text" in (a, b) else
                       "; only numbers can be " + ("multiplied" if op == "*" else
                                                   "subtracted" if op == "-" else "divided")
                       if op != "+" else ""),
                    left if left != "(...)" else op))
        return None
    if isinstance(node, N.Compare):
        a = _infer(node.expr, type_of, out)
        left = describe(node.expr)
        for operand in node.ops:
            b = _infer(operand.expr, type_of, out)
            ordered = operand.op in ("lt", "lteq", "gt", "gteq")
            if ordered and a is not None and b is not None and not (
                    a == b and a in ("number", "text")):
                out.append((f"`{left}` ({_WORDS[a]}) cannot be compared with "
                            f"`{describe(operand.expr)}` ({_WORDS[b]}) by size", left))
            if operand.op in ("in", "notin") and b in ("number", "bool"):
                out.append((f"`in` looks inside text or a list, but `{describe(operand.expr)}` "
                            f"is {_WORDS[b]}", describe(operand.expr)))
            a, left = b, describe(operand.expr)
        return "bool"
    if isinstance(node, N.Filter):
        t = _infer(node.node, type_of, out) if node.node is not None else None
        for arg in node.args:
            _infer(arg, type_of, out)
        accepts, gives = _FILTER_TYPES.get(node.name, (None, None))
        if accepts is not None and t is not None and t not in accepts:
            out.append((f"`{node.name}` needs "
                        + " or ".join(_WORDS[k] for k in sorted(accepts))
                        + f", but `{describe(node.node) if node.node else '...'}` is {_WORDS[t]}",
                        node.name))
        return gives
    return None
