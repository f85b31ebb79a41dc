"""`flowagent test FLOW [TESTS.yaml]`: run a flow's conversation tests.

Prints one line per test (PASS/FAIL) and, for each failure, the conversation so far and the
expectation that failed. Exit code: 0 all passed, 1 a test failed, 2 the flow or the tests file
could not be used (with file:line:column). `--junit FILE` writes JUnit XML for CI.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape


def default_tests_path(flow: Path) -> Path:
    name = flow.name
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else flow.stem
    return flow.with_name(f"{stem}.tests.yaml")


def run(flow: Path, tests: Path | None = None, *, junit: Path | None = None,
        name_filter: str | None = None, console: Console | None = None) -> int:
    from flowagent.dialogue.conversation_tests import (
        TestFileError,
        junit_xml,
        load_tests,
        run_tests,
    )
    from flowagent.flow.compiler import FlowInvalid, load_flow

    con = console or Console(highlight=False, soft_wrap=True, emoji=False)
    tests = tests or default_tests_path(flow)
    try:
        compiled = load_flow(flow)
    except FlowInvalid as exc:
        con.print(f"[red]{escape(str(exc))}[/red]")
        con.print(f"Run `flowagent validate {flow}` to see every problem.")
        return 2
    except OSError as exc:
        reason = escape(exc.strerror or str(exc))
        con.print(f"[red]Cannot read {escape(str(flow))}: {reason}.[/red]")
        return 2
    try:
        specs, _ = load_tests(tests)
    except OSError as exc:
        con.print(f"[red]Cannot read the tests file {escape(str(tests))}: "
                  f"{escape(exc.strerror or str(exc))}.[/red]")
        return 2
    except TestFileError as exc:
        con.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    results = run_tests(compiled, specs, name_filter)
    for r in results:
        if r.passed:
            con.print(f"[green]PASS[/green] {escape(r.name)}")
            continue
        con.print(f"[red]FAIL[/red] {escape(r.name)}")
        con.print("  conversation so far:")
        for line in r.conversation:
            who, _, text = line.partition(": ")
            style = {"caller": "cyan", "agent": "white", "tool": "magenta"}.get(who, "dim")
            con.print(f"    [{style}]{escape(who)}:[/{style}] {escape(text)}")
        con.print(f"  [red]{escape(r.failure)}[/red]")
    failed = sum(not r.passed for r in results)
    con.print(f"{len(results) - failed} passed, {failed} failed")
    if junit is not None:
        junit.write_text(junit_xml(results, compiled.name or flow.stem), encoding="utf-8")
    if not results:
        con.print("[yellow]No tests matched.[/yellow]")
        return 1 if name_filter else 0
    return 1 if failed else 0
