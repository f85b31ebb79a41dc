"""`flowagent validate PATH...`: print findings for people (rich) or for CI (`--format json`).

A PATH is a file or a folder (every `.yaml` / `.yml` under it). Each file is checked as what
it is: `*.tests.yaml` as conversation tests, `*.tools.yaml` as canned tool answers (both by
`dialogue/file_checks.py`, against their flow when it is beside them), anything else as a flow.

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
        print("Give at least one flow file or folder, e.g. flowagent validate flows/",
              file=sys.stderr)
        return 2
    report = Report([_check(f, check_env) for f in expand(files)])
    if fmt == "json":
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_human(report)
    return report.exit_code


def expand(paths: Sequence[str | Path]) -> list[str | Path]:
    """Folders become the YAML files under them; files (and names that do not exist, so that
    they are reported as missing) stay as given. An empty folder stays, to be reported."""
    from flowagent.dialogue.file_checks import yaml_files

    out: list[str | Path] = []
    for given in paths:
        p = Path(given)
        found = yaml_files(p) if p.is_dir() else []
        out.extend(found or [given])
    return out


def _check(path: str | Path, check_env: bool) -> FileReport:
    if Path(path).is_dir():  # a folder with no YAML file in it
        name = str(path)
        return FileReport(name, [Finding(
            "error", "file-not-found", name, 1, 1, f"The folder {name} has no .yaml files.",
            "Give a folder that holds flows, or the flow files themselves.")], unusable=True)
    from flowagent.dialogue.file_checks import kind_of

    kind = kind_of(path)
    if kind == "flow":
        return validate_file(path, check_env=check_env)
    from flowagent.dialogue.file_checks import validate_companion

    return validate_companion(path, kind)


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


#: the most of a source line shown under a finding (a 22,000-character line is unreadable)
EXCERPT_WIDTH = 120


def source_excerpt(line: str, column: int, width: int = EXCERPT_WIDTH) -> tuple[str, int]:
    """(the part of `line` around `column`, the column within that part): long lines are cut
    to `width` characters around the finding, with `…` where text was left out."""
    if len(line) <= width:
        return line, column
    start = max(0, min(column - 1 - width // 3, len(line) - width))
    part = line[start:start + width]
    shown_column = column - start
    if start > 0:
        part, shown_column = "…" + part[1:], shown_column
    if start + width < len(line):
        part = part[:-1] + "…"
    return part, shown_column


def _print_finding(console: Console, f: Finding, lines: list[str]) -> None:
    from rich.markup import escape
    from rich.text import Text

    color = "red" if f.severity == "error" else "yellow"
    console.print(f"  [{color}]{f.severity}[/] [dim]{f.line}:{f.column}[/] [cyan]{f.code}[/]  "
                  f"{escape(f.message)}")
    if 0 < f.line <= len(lines):
        src, column = source_excerpt(lines[f.line - 1].replace("\t", " "), f.column)
        gutter = f"{f.line:>6} │ "
        console.print(Text(gutter + src, style="dim"))
        caret = " " * (len(gutter) - 2) + "│ " + " " * max(column - 1, 0) + "^"
        console.print(Text(caret, style=color))
    if f.suggestion:
        console.print(f"         [green]→[/] {escape(f.suggestion)}")
