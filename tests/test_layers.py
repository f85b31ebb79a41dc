"""The house rules, checked from the source: no import circles, and each layer imports only
the layers below it (docs/design.md).

Every import counts — module level, inside functions and under `TYPE_CHECKING` — because a
lazy import that closes a circle still ties two modules together for a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "flowagent"

#: what each folder may import from the package (besides itself and the shared helpers)
SHARED = {"flowagent", "flowagent.audio", "flowagent.logging", "flowagent.fsutil"}
ALLOWED: dict[str, set[str]] = {
    "understanding": set(),
    "demo": set(),  # the demo's fake removals API: aiohttp only
    "flow": {"understanding", "providers"},
    "providers": {"understanding"},
    "dialogue": {"flow", "understanding", "providers"},
    "asterisk": set(),
    "runner": {"dialogue", "flow", "understanding", "providers", "asterisk"},
    "server": {"runner", "dialogue", "flow", "understanding", "providers", "asterisk", "web"},
    "graph": {"flow"},
    "web": {"graph", "flow", "dialogue", "understanding", "server", "runner"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (a `from pkg import name` naming a submodule counts
    as importing that submodule)."""
    me = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("flowagent"):
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("flowagent"):
                continue
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
            found.update(subs or [mod])
    return {m for m in found if m in modules and m != me}


def _graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_walker_finds_a_circle() -> None:
    """The check above is worth something: a planted circle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    wrong = []
    for mod, deps in _graph().items():
        if _layer(mod) != layer:
            continue
        for dep in deps:
            dl = _layer(dep)
            if dep in SHARED or dl in ("", layer) or dl in ALLOWED[layer]:
                continue
            wrong.append(f"{mod} imports {dep}")
    assert wrong == []
