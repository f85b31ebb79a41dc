"""A flow file -> its graph and validation status, for `flowagent graph` and the web view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowagent.graph.model import FlowGraph, GraphError, build_graph

#: findings the diagram itself shows, so they do not stop it being drawn
DRAWABLE_CODES = frozenset({"unreachable-state", "no-way-forward", "no-exit-loop"})


@dataclass
class FlowStatus:
    """What the web page and the CLI need to know about one flow file."""

    path: str
    graph: FlowGraph | None = None
    #: "file:line:column: sentence" for each finding, split by severity
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: errors that stop the diagram (everything but DRAWABLE_CODES)
    blocking: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.graph.name if self.graph else self.path

    @property
    def status(self) -> str:
        if self.blocking or self.graph is None:
            return "invalid"
        if self.errors:
            return "errors"
        if self.warnings:
            return "warnings"
        return "valid"


def _finding_line(path: str, finding: Any) -> tuple[str, str, str]:
    """(severity, code, text) from a validator finding, read by attribute or key."""

    def get(name: str, default: Any = "") -> Any:
        if isinstance(finding, dict):
            return finding.get(name, default)
        return getattr(finding, name, default)

    where = f"{get('file') or path}:{get('line', 1)}:{get('column', 1)}"
    text = f"{where}: {get('message')}"
    if get("suggestion"):
        text += f" ({get('suggestion')})"
    return str(get("severity", "error")), str(get("code")), text


def inspect_flow(path: str | Any) -> FlowStatus:
    """Load, validate (when the validator is present) and draw one flow file. Never raises for a
    bad file: the reason lands in `blocking` as one sentence with file:line:column."""
    from flowagent.flow.loader import FlowYamlError, load_file

    status = FlowStatus(str(path))
    try:
        loaded = load_file(path)
    except FlowYamlError as exc:
        status.blocking.append(f"{path}:{exc.line}:{exc.column}: {exc.message}")
        return status
    except OSError as exc:
        status.blocking.append(f"{path}:1:1: The file cannot be read ({exc.strerror or exc}).")
        return status
    from flowagent.flow.validate import validate_file

    report = validate_file(path)
    for finding in report.findings:
        severity, code, text = _finding_line(str(path), finding)
        if severity == "error":
            status.errors.append(text)
            if code not in DRAWABLE_CODES:
                status.blocking.append(text)
        else:
            status.warnings.append(text)
    try:
        status.graph = build_graph(loaded.data)
    except GraphError as exc:
        status.blocking.append(f"{path}:1:1: {exc}")
        return status
    return status
