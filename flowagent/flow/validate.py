"""Validate flow files: structure (JSON Schema) and meaning, as a list of findings.

    report = validate_file("flows/removals.yaml")
    report.ok, report.errors, report.warnings, report.to_dict()
    report.flow            # the LoadedFlow (data + positions), reusable by the compiler

Order of work: read the text (tabs are found on the raw text, because YAML's own message about
them is cryptic), parse YAML keeping positions and duplicate keys, then the schema, then the
semantic checks. Each semantic check only trusts parts of the flow whose type is right, so every
problem is reported once. Nothing here may raise for any input: an unexpected failure becomes an
`internal-error` finding instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from flowagent.flow.loader import FlowYamlError, LoadedFlow, Mark, load_text, no_cyclic_gc
from flowagent.flow.report import FileReport, Finding, Report

__all__ = ["validate_file", "validate_files", "validate_loaded", "validate_text"]


def validate_file(path: str | Path, *, check_env: bool = True,
                  environ: Mapping[str, str] | None = None) -> FileReport:
    """Validate one flow file. Missing/unreadable files give an `unusable` report, not an
    exception."""
    name = str(path)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return _unusable(name, "file-not-found", f"There is no file called {name}.",
                         "Check the file name and the folder you are running the command in.")
    except IsADirectoryError:
        return _unusable(name, "file-unreadable", f"{name} is a folder, not a flow file.",
                         f"Give the flow files inside it, e.g. {name.rstrip('/')}/*.yaml.")
    except OSError as exc:
        return _unusable(name, "file-unreadable", f"{name} cannot be read: {exc.strerror}.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return _unusable(name, "yaml-syntax", "The file is not UTF-8 text.",
                         "Save it as UTF-8 in your editor.", line, col)
    return validate_text(text, name, check_env=check_env, environ=environ)


def validate_text(text: str, path: str = "<string>", *, check_env: bool = True,
                  environ: Mapping[str, str] | None = None) -> FileReport:
    """Validate flow text (the file name is only used in findings). The cyclic collector is
    paused meanwhile (`loader.no_cyclic_gc`): it made validation time grow faster than the
    flow."""
    try:
        with no_cyclic_gc():
            return _validate_text(text, path, check_env=check_env, environ=environ)
    except Exception as exc:  # the promise: never a traceback for any input
        report = FileReport(path)
        report.findings.append(Finding(
            "error", "internal-error", path, 1, 1,
            f"flowagent could not finish checking this file ({type(exc).__name__}: {exc}).",
            "Please report this with the file attached."))
        return report


def validate_files(paths: Iterable[str | Path], *, check_env: bool = True,
                   environ: Mapping[str, str] | None = None) -> Report:
    return Report([validate_file(p, check_env=check_env, environ=environ) for p in paths])


def _unusable(path: str, code: str, message: str, suggestion: str | None = None,
              line: int = 1, column: int = 1) -> FileReport:
    return FileReport(path, [Finding("error", code, path, line, column, message, suggestion)],
                      unusable=True)


def _tab_findings(text: str, path: str) -> list[Finding]:
    """Tabs in indentation: YAML forbids them, and editors hide them."""
    out: list[Finding] = []
    if "\t" not in text:
        return out
    for n, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent and line.strip() and not line.lstrip().startswith("#"):
            out.append(Finding(
                "error", "tab-indent", path, n, indent.index("\t") + 1,
                "This line is indented with a tab character; flow files must be indented with "
                "spaces only.",
                "Replace the tab with spaces (set your editor to insert spaces for Tab)."))
    return out


def _validate_text(text: str, path: str, *, check_env: bool,
                   environ: Mapping[str, str] | None) -> FileReport:
    tabs = _tab_findings(text, path)
    try:
        loaded = load_text(text, path)
    except FlowYamlError as exc:
        if tabs:
            return FileReport(path, tabs, unusable=True)
        return _unusable(path, exc.code, exc.message, _yaml_hint(exc), exc.line, exc.column)

    report = FileReport(path, list(tabs), flow=loaded)
    if loaded.data is None or not isinstance(loaded.data, dict):
        what = "empty" if loaded.data is None else (
            "a list" if isinstance(loaded.data, list) else "a single value")
        report.findings.append(Finding(
            "error", "not-a-flow", path, 1, 1,
            f"This file is {what}, not a flow: a flow is a set of `key: value` lines starting "
            "with `flowagent: 1`.", "Start from one of the example flows in flows/."))
        report.unusable = True
        return report

    if "flowagent" not in loaded.data and "states" not in loaded.data:
        report.findings.append(Finding(
            "error", "not-a-flow", path, 1, 1,
            "This file does not look like a flow: it has neither `flowagent:` nor `states:`.",
            "If it holds conversation tests or canned tool answers, name it NAME.tests.yaml "
            "or NAME.tools.yaml and `flowagent validate` checks it as one."))
        report.unusable = True
        return report

    run_checks(report, loaded, check_env=check_env, environ=environ)
    return report


def _yaml_hint(exc: FlowYamlError) -> str | None:
    if exc.code == "tab-indent":
        return "Replace the tab with spaces."
    if exc.message.startswith("The file is not valid YAML here"):
        return "Check this line and the one above it: YAML cares about indentation and quotes."
    return None


def run_checks(report: FileReport, loaded: LoadedFlow, *, check_env: bool = True,
               environ: Mapping[str, str] | None = None) -> None:
    """All checks on a loaded flow, appending to `report`. Each group is isolated, so one failing
    unexpectedly still leaves the others' findings."""
    from flowagent.flow.checks import (
        graph,
        loops,
        providers,
        references,
        slots,
        structure,
        subflows,
        values,
        version,
    )
    from flowagent.flow.checks import template_checks as templates
    from flowagent.flow.checks.context import CheckContext, describe

    ctx = CheckContext(loaded, check_env=check_env,
                       environ=dict(environ) if environ is not None else None,
                       validate_other=lambda path: validate_file(path, check_env=check_env,
                                                                 environ=environ))
    for dup in loaded.duplicates:
        where = describe(dup.path)
        ctx.add("error", "duplicate-key", dup.second,
                f"`{dup.key}` is written twice in {where} (first on line {dup.first.line}); only "
                "one of them would be used.", "Remove or rename one of them.")
    steps = (
        structure.check_structure,
        version.check_version,
        subflows.check_subflows,
        references.check_references,
        values.check_values,
        graph.check_graph,
        loops.check_loops,
        slots.check_slots,
        slots.check_intents,
        templates.check_templates,
        providers.check_providers,
        providers.check_secrets_in_headers,
        providers.check_env,
        providers.check_defaults,
        providers.check_preemptive,
        providers.check_expected_answer,
    )
    for step in steps:
        try:
            step(ctx)
        except Exception as exc:
            ctx.add("error", "internal-error", Mark(1, 1),
                    f"flowagent could not finish the {step.__name__.removeprefix('check_')} "
                    f"check ({type(exc).__name__}: {exc}).",
                    "Please report this with the file attached.")
    report.findings.extend(ctx.findings)
    report.sort()


def validate_loaded(loaded: LoadedFlow, *, check_env: bool = True,
                    environ: Mapping[str, str] | None = None) -> FileReport:
    """Validate an already loaded flow (e.g. from a routes file)."""
    report = FileReport(loaded.path, _tab_findings(loaded.text, loaded.path), flow=loaded)
    if not isinstance(loaded.data, dict):
        report.findings.append(Finding("error", "not-a-flow", loaded.path, 1, 1,
                                       "This file is not a flow (a set of `key: value` lines)."))
        report.unusable = True
        return report
    run_checks(report, loaded, check_env=check_env, environ=environ)
    return report
