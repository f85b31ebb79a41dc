"""The one sandboxed Jinja2 environment shared by the validator and the engine.

Flow authors write templates (`say`, `ask`, tool bodies...) and bare expressions (`when`, `until`,
`save`). Both must behave identically when checked by `flowagent validate` and when run on a live
call, so there is exactly one environment, built here, with the spoken-output filters
(`say_date`, `say_money`, `say_phone`, `say_postcode`) and caches of compiled templates.

Safety: `ImmutableSandboxedEnvironment` — a template can read the data it is given but cannot
call mutating methods, reach Python internals, or touch files/environment.

Stable API (the engine imports it):
    render(template_str, ctx) -> str
    render_value(template_str, ctx) -> Any        # "{{ expr }}" alone keeps the expression's type
    compile_expression(expr) -> Callable[[Mapping], Any]
    evaluate(expr, ctx, default=None) -> Any      # never raises
    template_names(src) -> set[str]               # {"slots.bedrooms", "context.company", "now"}
    expression_names(expr) -> set[str]
    template_error(src) / expression_error(expr) -> SyntaxProblem | None
    get_environment() -> the shared environment
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flowagent.understanding.types import Money

if TYPE_CHECKING:  # Jinja is imported on first use: most validations never need it
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "SyntaxProblem",
    "budget_problem",
    "compile_expression",
    "evaluate",
    "expression_error",
    "expression_names",
    "filters_used",
    "get_environment",
    "is_single_expression",
    "render",
    "render_value",
    "say_date",
    "say_money",
    "say_phone",
    "say_postcode",
    "template_error",
    "template_names",
    "tests_used",
    "unsafe_part",
]


# ---------------------------------------------------------------------------------------------
# Filters: turn parsed slot values into something a TTS voice reads naturally
# ---------------------------------------------------------------------------------------------

_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def _as_date(value: Any) -> _dt.date | None:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        try:
            return _dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def say_date(value: Any, year: bool | None = None) -> str:
    """'2026-03-14' -> 'Saturday the 14th of March'. The year is added when it is not this year
    (or when `year=True`). Anything that is not a date is returned as text unchanged."""
    d = _as_date(value)
    if d is None:
        return "" if value is None else str(value)
    text = f"{_DAYS[d.weekday()]} the {_ordinal(d.day)} of {_MONTHS[d.month - 1]}"
    if year or (year is None and d.year != _dt.date.today().year):
        text += f" {d.year}"
    return text


def say_money(value: Any, currency: str | None = None) -> str:
    """450 -> '£450', 450.5 -> '£450.50', 1250 -> '£1,250'. Non-numbers are returned unchanged.

    A caller's amount keeps the currency they said (``Money``: '€60'); ``currency`` overrides
    the sign."""
    if currency is None:
        if isinstance(value, Money):
            return str(value)
        currency = "£"
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    if amount != amount or amount in (float("inf"), float("-inf")):
        return str(value)
    sign = "minus " if amount < 0 else ""
    amount = abs(amount)
    pence = round(amount * 100)
    if pence % 100 == 0:
        return f"{sign}{currency}{pence // 100:,}"
    return f"{sign}{currency}{pence // 100:,}.{pence % 100:02d}"


def _group(digits: str, sizes: tuple[int, ...]) -> list[str]:
    out, i = [], 0
    for size in sizes:
        if i >= len(digits):
            break
        out.append(digits[i : i + size])
        i += size
    if i < len(digits):
        out.append(digits[i:])
    return out


def say_phone(value: Any) -> str:
    """'+447700900123' -> '0 7 7 0 0, 9 0 0, 1 2 3': UK numbers in national form, each digit
    separate (TTS voices read '07700' as a number), groups separated by pauses."""
    if value is None:
        return ""
    text = str(value).strip()
    digits = re.sub(r"\D", "", text)
    if not digits:
        return text
    if text.startswith("+44") or (text.startswith("44") and len(digits) == 12):
        digits = "0" + digits[2:]
    prefix = "plus " if text.startswith("+") and not digits.startswith("0") else ""
    if digits.startswith("0") and len(digits) == 11:
        if digits[1] == "2":
            sizes: tuple[int, ...] = (3, 4, 4)  # 020 7946 0000
        elif digits[1] == "1" and "1" in (digits[2], digits[3]):
            sizes = (4, 3, 4)  # 0113 496 0000
        else:
            sizes = (5, 3, 3)  # 07700 900 123
    else:
        sizes = (*([3] * (max(len(digits) - 4, 0) // 3)), 4)
        head = len(digits) - sum(sizes)
        if head > 0:
            sizes = (head, *sizes)
    return prefix + ", ".join(" ".join(g) for g in _group(digits, sizes))


def say_postcode(value: Any) -> str:
    """'LS11 5AB' -> 'L S 1 1, 5 A B' (letters and digits read one by one)."""
    if value is None:
        return ""
    text = re.sub(r"\s+", "", str(value)).upper()
    if len(text) < 5:
        return " ".join(text)
    return f"{' '.join(text[:-3])}, {' '.join(text[-3:])}"


# ---------------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------------


def _finalize(value: Any) -> Any:
    # A missing tool value should be silent on the phone, not the word "None".
    return "" if value is None else value


@lru_cache(maxsize=1)
def _environment_class() -> type[ImmutableSandboxedEnvironment]:
    import jinja2
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from flowagent.flow import template_budget as budget

    class BudgetedTemplate(jinja2.Template):
        """Renders under the time and output budget (`template_budget`): output is taken
        chunk by chunk, so a template that would say megabytes stops at the limit."""

        def render(self, *args: Any, **kwargs: Any) -> str:
            with budget.budget():
                parts: list[str] = []
                size = 0
                for chunk in self.generate(*args, **kwargs):
                    size += len(chunk)
                    if size > budget.MAX_OUTPUT:
                        raise budget.TemplateBudgetError(
                            f"it says more than {budget.MAX_OUTPUT:,} characters")
                    parts.append(chunk)
                budget.check_time()
                return "".join(parts)

    class FlowEnvironment(ImmutableSandboxedEnvironment):
        """Sandboxed environment where `slots.items` means the slot called `items`, not
        dict.items. Jinja normally tries Python attributes before mapping keys, so a slot named
        `keys`, `items` or `values` would silently become a bound method. Flow data is always
        mappings, so keys win.

        It also keeps every render inside its budget (`template_budget`): each `{% for %}`
        loops over `budgeted_iter(...)`, each call and `*`/`**`/`%` is checked before it runs
        (which also stops Jinja folding `'a' * 10**9` into a gigabyte when it compiles)."""

        template_class = BudgetedTemplate
        intercepted_binops = frozenset({"*", "**", "%"})

        def getattr(self, obj: Any, attribute: str) -> Any:
            if isinstance(obj, Mapping):
                try:
                    return obj[attribute]
                except (KeyError, TypeError):
                    pass
            return super().getattr(obj, attribute)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget.check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any,
                 **kwargs: Any) -> Any:
            budget.check_call(__obj, args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)

        def from_string(self, source: Any, globals: Any = None,
                        template_class: Any = None) -> Any:
            if isinstance(source, str):
                source = self.parse(source)
            for loop in source.find_all(nodes.For):
                loop.iter = nodes.Filter(loop.iter, _BUDGETED_ITER, [], [], None, None,
                                         lineno=loop.iter.lineno)
            return super().from_string(source, globals, template_class)

    return FlowEnvironment


_BUDGETED_ITER = "flowagent_budgeted_iter"


def __getattr__(name: str) -> Any:
    if name == "FlowEnvironment":
        return _environment_class()
    raise AttributeError(name)


@lru_cache(maxsize=1)
def get_environment() -> ImmutableSandboxedEnvironment:
    """The shared environment (built once per process)."""
    env = _environment_class()(
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        cache_size=2000,
    )
    env.filters.update(
        say_date=say_date, say_money=say_money, say_phone=say_phone, say_postcode=say_postcode
    )
    from flowagent.flow import template_budget as budget

    env.globals["range"] = budget.safe_range
    env.filters[_BUDGETED_ITER] = budget.budgeted_iter
    for name in budget.GUARDED_FILTERS:
        env.filters[name] = budget.guarded_filter(name, env.filters[name])
    from flowagent.flow import spoken  # format 2's filters, shared with expressions.py

    env.filters.update(
        say_time=spoken.say_time, say_digits=spoken.say_digits, say_list=spoken.say_list,
        without=spoken.without, starts_with=spoken.starts_with, ends_with=spoken.ends_with,
    )
    return env


@lru_cache(maxsize=4096)
def _template(src: str) -> Any:
    return get_environment().from_string(src)


def render(template_str: str, ctx: Mapping[str, Any]) -> str:
    """Render a template to text. Compiled templates are cached by their source text.
    Raises jinja2 errors (syntax/security/undefined-operation) to the caller."""
    if "{" not in template_str:
        return template_str  # plain text: nothing to render (most prompts)
    text: str = _template(template_str).render(dict(ctx))
    return text


_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


def is_single_expression(template_str: str) -> str | None:
    """If the template is exactly one `{{ expr }}` (nothing around it), return `expr`."""
    m = _SINGLE.match(template_str)
    return m.group("expr").strip() if m else None


def render_value(template_str: str, ctx: Mapping[str, Any]) -> Any:
    """Render, but a string that is exactly one `{{ expr }}` keeps the expression's type
    (so `bedrooms: "{{ slots.bedrooms }}"` goes out in a JSON body as a number)."""
    expr = is_single_expression(template_str)
    if expr is not None:
        return compile_expression(expr)(ctx)
    return render(template_str, ctx)


def _parse_expression(expr: str) -> nodes.Expr:
    from jinja2 import TemplateSyntaxError
    from jinja2.parser import Parser

    env = get_environment()
    parser = Parser(env, expr, state="variable")
    node = parser.parse_expression()
    if not parser.stream.eos:
        tok = parser.stream.current
        raise TemplateSyntaxError(
            f"unexpected {tok.value!r} after the end of the expression", tok.lineno, None, None
        )
    return node


@lru_cache(maxsize=4096)
def compile_expression(expr: str) -> Callable[[Mapping[str, Any]], Any]:
    """Compile a bare expression (`slots.bedrooms >= 6`) once; returns `f(ctx) -> value`.
    Undefined names evaluate to None. Raises jinja2.TemplateSyntaxError on bad syntax."""
    compiled = get_environment().compile_expression(expr, undefined_to_none=True)
    from flowagent.flow.template_budget import budget

    def run(ctx: Mapping[str, Any]) -> Any:
        with budget():
            return compiled(**ctx)

    return run


def evaluate(expr: str, ctx: Mapping[str, Any], default: Any = None) -> Any:
    """Evaluate an expression, returning `default` on any error (a bad comparison with a missing
    value must not crash a live call; the validator catches the mistakes it can see)."""
    try:
        return compile_expression(expr)(ctx)
    except Exception:
        return default


# ---------------------------------------------------------------------------------------------
# Checks used by the validator
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    """A template/expression syntax error: plain message and 1-based line inside the source."""

    message: str
    line: int


def _problem(exc: TemplateSyntaxError, src: str) -> SyntaxProblem:
    msg = (exc.message or "syntax error").strip()
    block = re.search(r"innermost block that needs to be closed is '(\w+)'", msg)
    if src.count("{{") > src.count("}}"):
        msg = "a `{{` is opened but never closed with `}}`"
    elif src.count("{%") > src.count("%}"):
        msg = "a `{%` is opened but never closed with `%}`"
    elif block:
        msg = f"a `{{% {block[1]} %}}` block is never closed with `{{% end{block[1]} %}}`"
    return SyntaxProblem(msg, max(int(exc.lineno or 1), 1))


@lru_cache(maxsize=8192)
def _parse_template(src: str) -> nodes.Template | TemplateSyntaxError:
    """Parse once; the validator asks several questions of the same template."""
    from jinja2 import TemplateSyntaxError

    try:
        return get_environment().parse(src)
    except TemplateSyntaxError as exc:
        return exc


def _template_ast(src: str) -> nodes.Template:
    ast = _parse_template(src)
    if isinstance(ast, Exception):
        raise ast
    return ast


@lru_cache(maxsize=8192)
def _parse_expr_cached(expr: str) -> nodes.Expr | TemplateSyntaxError:
    from jinja2 import TemplateSyntaxError

    try:
        return _parse_expression(expr)
    except TemplateSyntaxError as exc:
        return exc


def _expression_ast(expr: str) -> nodes.Expr:
    ast = _parse_expr_cached(expr)
    if isinstance(ast, Exception):
        raise ast
    return ast


# Fast path: most flow templates are plain text with `{{ dotted.name | filter }}` parts and most
# conditions are `dotted.name == 'value'`. Those are answered with a regex (Jinja's lexer and
# parser cost ~1 ms per template, which adds up on a 500-state flow); anything else goes to
# Jinja. tests/validation check both paths agree.

_CONSTANTS = frozenset({"true", "false", "none", "True", "False", "None"})
_KEYWORDS = _CONSTANTS | {"and", "or", "not", "in", "is", "if", "else", "recursive"}
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_OUTPUT = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SIMPLE_OUTPUT = re.compile(
    rf"^\s*(?P<name>{_DOTTED})\s*(?P<filters>(?:\|\s*[A-Za-z_]\w*\s*)*)$")
_LITERAL = r"(?:-?\d+(?:\.\d+)?|'[^'\\\n]*'|\"[^\"\\\n]*\")"
_OPERAND = rf"(?:{_DOTTED}|{_LITERAL})"
_SIMPLE_EXPR = re.compile(
    rf"^\s*(?:not\s+)?(?P<a>{_OPERAND})\s*(?:(?:==|!=|>=|<=|>|<)\s*(?P<b>{_OPERAND})\s*)?$")


def _dotted_name(text: str) -> str | bool | None:
    """'slots.x.y' -> 'slots.x'; a constant -> None; False if Jinja must decide (keywords)."""
    parts = text.split(".")
    if len(parts) == 1 and parts[0] in _CONSTANTS:
        return None
    if any(p in _KEYWORDS for p in parts):
        return False
    return ".".join(parts[:2])


@lru_cache(maxsize=8192)
def _fast_template(src: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """(names, filters) of a simple template, or None if Jinja must look at it."""
    if "{%" in src or "{#" in src:
        return None
    blocks = _OUTPUT.findall(src)
    if src.count("{{") != len(blocks) or src.count("}}") != len(blocks):
        return None
    names: set[str] = set()
    filters: set[str] = set()
    for block in blocks:
        m = _SIMPLE_OUTPUT.match(block)
        if not m:
            return None
        name = _dotted_name(m["name"])
        if name is False:
            return None
        if name:
            names.add(name)  # type: ignore[arg-type]
        filters.update(re.findall(r"\|\s*([A-Za-z_]\w*)", m["filters"]))
    return frozenset(names), frozenset(filters)


@lru_cache(maxsize=8192)
def _fast_expression(expr: str) -> frozenset[str] | None:
    """Names read by a simple comparison, or None if Jinja must look at it."""
    if "{{" in expr or "}}" in expr:
        return None
    m = _SIMPLE_EXPR.match(expr)
    if not m:
        return None
    names: set[str] = set()
    for operand in (m["a"], m["b"]):
        if operand is None or not re.match(r"[A-Za-z_]", operand):
            continue  # a literal
        name = _dotted_name(operand)
        if name is False:
            return None
        if name:
            names.add(name)  # type: ignore[arg-type]
    return frozenset(names)


@lru_cache(maxsize=1)
def _trial_environment() -> ImmutableSandboxedEnvironment:
    """The shared environment, but every name reads as an empty value that can be followed
    (`slots.x.y` is empty, not an error): for trying a template before any call has data."""
    from jinja2 import ChainableUndefined

    return get_environment().overlay(undefined=ChainableUndefined)


def budget_problem(src: str, *, expression: bool = False) -> str | None:
    """Why this template (or bare expression) would be stopped on every call, or None.

    It is tried once with no data under the render budget (`template_budget`): what the
    template does whatever the call's data — `range(99999)`, loops within loops over
    constants, `'a' * 10**9`, a macro that calls itself — shows up here; work that depends on
    a call's data is stopped on the call instead. Simple templates (names and filters only)
    cannot blow the budget and are not tried."""
    if expression:
        if _fast_expression(src) is not None:
            return None
    elif "{" not in src or _fast_template(src) is not None:
        return None
    from flowagent.flow.template_budget import TemplateBudgetError, budget

    env = _trial_environment()
    try:
        if expression:
            with budget():
                env.compile_expression(src, undefined_to_none=False)()
        else:
            env.from_string(src).render()
    except TemplateBudgetError as exc:
        return str(exc)
    except RecursionError:
        return "a macro in it calls itself without end"
    except Exception:  # other failures depend on the call's data; other checks name them
        return None
    return None


# filters and keyword arguments that read an attribute named by a text value
_ATTRIBUTE_FILTERS = frozenset({"attr", "map", "selectattr", "rejectattr", "sort", "groupby",
                                "sum", "unique", "min", "max"})
_FILE_TAGS = ("Include", "Import", "FromImport", "Extends")


@lru_cache(maxsize=4096)
def unsafe_part(src: str) -> tuple[str, str] | None:
    """What in this template the sandbox will refuse on every call, as (kind, text):
    ("name", "__class__") for an attribute or key starting with `_` however it is written
    (`x['\\x5f_class__']`, `x | attr('__class__')`, `map(attribute='__class__')`),
    ("computed", "attr") for `attr` given a name worked out at run time, ("file", "include")
    for a tag that reads another template file. None when there is nothing of the sort (and
    for templates that do not parse: `template_error` names those)."""
    if "{" not in src or _fast_template(src) is not None:
        return None
    ast = _parse_template(src)
    if isinstance(ast, Exception):
        return None
    from jinja2 import nodes

    for tag in _FILE_TAGS:
        if any(True for _ in ast.find_all(getattr(nodes, tag))):
            return "file", tag.lower().replace("fromimport", "from ... import")
    def private(node: nodes.Node) -> bool:
        return (isinstance(node, nodes.Const) and isinstance(node.value, str)
                and node.value.startswith("_"))

    for get in ast.find_all(nodes.Getattr):
        if get.attr.startswith("_"):
            return "name", get.attr
    for item in ast.find_all(nodes.Getitem):
        if private(item.arg):
            return "name", item.arg.value  # type: ignore[attr-defined]
    for flt in ast.find_all(nodes.Filter):
        if flt.name not in _ATTRIBUTE_FILTERS:
            continue
        names = [*flt.args[:1], *(kw.value for kw in flt.kwargs if kw.key == "attribute")]
        for arg in names:
            if private(arg):
                return "name", arg.value  # type: ignore[attr-defined]
            if not isinstance(arg, nodes.Const):
                return "computed", flt.name
    return None


def template_error(src: str) -> SyntaxProblem | None:
    """Why this template cannot be compiled, or None if it is fine."""
    if "{" not in src or _fast_template(src) is not None:
        return None
    ast = _parse_template(src)
    return _problem(ast, src) if isinstance(ast, Exception) else None


def expression_error(expr: str) -> SyntaxProblem | None:
    """Why this bare expression cannot be compiled, or None if it is fine."""
    if not expr.strip():
        return SyntaxProblem("the expression is empty", 1)
    if _fast_expression(expr) is not None:
        return None
    if "{{" in expr or "}}" in expr:
        return SyntaxProblem("write the expression without `{{ }}` braces", 1)
    ast = _parse_expr_cached(expr)
    if isinstance(ast, Exception):
        return SyntaxProblem((ast.message or "syntax error").strip(), max(int(ast.lineno or 1), 1))
    return None


def _chains(node: nodes.Node, bound: frozenset[str]) -> Iterator[str]:
    """Dotted names read by an AST: `slots.bedrooms`, `slots['x']` -> 'slots.x', `now` -> 'now'.
    At most two components (root and first attribute) — enough to check references."""
    from jinja2 import nodes

    if isinstance(node, nodes.Getattr | nodes.Getitem):
        # find the root of this chain
        chain: list[nodes.Node] = []
        cur: nodes.Node = node
        while isinstance(cur, nodes.Getattr | nodes.Getitem):
            chain.append(cur)
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.ctx == "load":
            if cur.name not in bound:
                first = chain[-1]
                if isinstance(first, nodes.Getattr):
                    yield f"{cur.name}.{first.attr}"
                elif (isinstance(first, nodes.Getitem) and isinstance(first.arg, nodes.Const)
                      and isinstance(first.arg.value, str)):
                    yield f"{cur.name}.{first.arg.value}"
                else:
                    yield cur.name
            # item arguments may read names too
            for link in chain:
                if isinstance(link, nodes.Getitem):
                    yield from _chains(link.arg, bound)
            return
        for link in chain:
            if isinstance(link, nodes.Getitem):
                yield from _chains(link.arg, bound)
        yield from _chains(cur, bound)
        return
    if isinstance(node, nodes.Name):
        if node.ctx == "load" and node.name not in bound:
            yield node.name
        return
    for child in node.iter_child_nodes():
        yield from _chains(child, bound)


def _bound_names(ast: nodes.Template) -> frozenset[str]:
    """Names the template defines itself ({% set %}, {% for x in %}, macros)."""
    from jinja2 import nodes

    out: set[str] = set()
    for n in ast.find_all(nodes.Name):
        if n.ctx in ("store", "param"):
            out.add(n.name)
    for m in ast.find_all(nodes.Macro):
        out.add(m.name)
    return frozenset(out)


@lru_cache(maxsize=4096)
def _template_names(src: str) -> frozenset[str]:
    ast = _template_ast(src)
    return frozenset(_chains(ast, _bound_names(ast) | {"loop", "range", "lipsum", "dict",
                                                      "cycler", "joiner", "namespace"}))


def template_names(src: str) -> set[str]:
    """Dotted names a template reads, e.g. {"slots.bedrooms", "context.company"}.
    Raises jinja2.TemplateSyntaxError if the template does not parse."""
    if "{" not in src:
        return set()
    fast = _fast_template(src)
    if fast is not None:
        return set(fast[0])
    return set(_template_names(src))


@lru_cache(maxsize=4096)
def _expression_names(expr: str) -> frozenset[str]:
    return frozenset(_chains(_expression_ast(expr), frozenset({"range", "dict", "namespace"})))


def expression_names(expr: str) -> set[str]:
    """Dotted names a bare expression reads. Raises jinja2.TemplateSyntaxError on bad syntax."""
    fast = _fast_expression(expr)
    if fast is not None:
        return set(fast)
    return set(_expression_names(expr))


@lru_cache(maxsize=4096)
def _calls_used(src: str, expression: bool) -> tuple[frozenset[str], frozenset[str]]:
    if not expression and "{" not in src:
        return frozenset(), frozenset()
    if expression and _fast_expression(src) is not None:
        return frozenset(), frozenset()
    fast = None if expression else _fast_template(src)
    if fast is not None:
        return fast[1], frozenset()
    from jinja2 import nodes

    ast: nodes.Node = _expression_ast(src) if expression else _template_ast(src)
    filters = frozenset(n.name for n in ast.find_all(nodes.Filter))
    tests = frozenset(n.name for n in ast.find_all(nodes.Test))
    return filters, tests


def filters_used(src: str, *, expression: bool = False) -> set[str]:
    """Filter names a template (or bare expression) uses, e.g. {"say_date", "upper"}."""
    return set(_calls_used(src, expression)[0])


def tests_used(src: str, *, expression: bool = False) -> set[str]:
    """Test names (`is defined`, `is number`...) a template or expression uses."""
    return set(_calls_used(src, expression)[1])
