"""`flowagent validate FILE...`: print findings for people (rich) or for CI (`--format json`).

Exit codes: 0 no errors (warnings allowed), 1 errors, 2 unusable input (missing file, not YAML,
not a flow). Only the validator and rich are imported, so the command starts quickly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flowagent.flow.report import FileReport, Finding, Report
from flowagent.flow.validate import validate_file

if TYPE_CHECKING:
    from rich.console import Console


def run(files: Sequence[str | Path], output_format: str = "text", check_env: bool = True) -> int:
    fmt = (output_format or "text").lower()
    if fmt not in ("text", "json"):
        print(f"Unknown --format {output_format!r}; use text or json.", file=sys.stderr)
        return 2
    if not files:
        print("Give at least one flow file, e.g. flowagent validate flows/removals.yaml",
              file=sys.stderr)
        return 2
    report = Report([validate_file(f, check_env=check_env) for f in files])
    if fmt == "json":
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_human(report)
    return report.exit_code


def _source_lines(fr: FileReport) -> list[str]:
    if fr.flow is not None:
        return fr.flow.text.splitlines()
    try:
        return Path(fr.path).read_text("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def print_human(report: Report) -> None:
    if not any(fr.findings for fr in report.files):
        # the common case in CI and editors: skip importing rich (a third of start-up)
        tick = "\033[32m✓\033[0m" if sys.stdout.isatty() else "✓"
        for fr in report.files:
            print(f"{tick} {fr.path} — no problems found")
        n = len(report.files)
        print(f"{tick} {n} file{'s' if n != 1 else ''} checked: no errors.")
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for fr in report.files:
        lines = _source_lines(fr)
        if not fr.findings:
            console.print(f"[green]✓[/] [bold]{escape(fr.path)}[/] — no problems found")
            continue
        console.print(f"[bold]{escape(fr.path)}[/]")
        for f in fr.findings:
            _print_finding(console, f, lines)
        console.print()
    n_err, n_warn = len(report.errors), len(report.warnings)
    files = len(report.files)
    plural = "" if files == 1 else "s"
    if report.exit_code == 0:
        extra = f" ({n_warn} warning{'s' if n_warn != 1 else ''})" if n_warn else ""
        console.print(f"[green]✓ {files} file{plural} checked: no errors{extra}.[/]")
    else:
        console.print(
            f"[red]✗ {n_err} error{'s' if n_err != 1 else ''}[/], "
            f"{n_warn} warning{'s' if n_warn != 1 else ''} in {files} file{plural}."
        )


def _print_finding(console: Console, f: Finding, lines: list[str]) -> None:
    from rich.markup import escape
    from rich.text import Text

    color = "red" if f.severity == "error" else "yellow"
    console.print(f"  [{color}]{f.severity}[/] [dim]{f.line}:{f.column}[/] [cyan]{f.code}[/]  "
                  f"{escape(f.message)}")
    if 0 < f.line <= len(lines):
        src = lines[f.line - 1].replace("\t", " ")
        gutter = f"{f.line:>6} │ "
        console.print(Text(gutter + src, style="dim"))
        caret = " " * (len(gutter) - 2) + "│ " + " " * max(f.column - 1, 0) + "^"
        console.print(Text(caret, style=color))
    if f.suggestion:
        console.print(f"         [green]→[/] {escape(f.suggestion)}")
