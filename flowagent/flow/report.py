"""What `flowagent validate` found: findings per file, and the exit code they add up to.

A finding is one thing a flow author must look at: severity, a stable code (documented in
docs/authoring.md, safe for CI scripts to match on), where it is (file:line:column, 1-based as
editors show), one plain-English sentence, and a suggestion when we can make one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from flowagent.flow.loader import LoadedFlow

Severity = Literal["error", "warning"]

__all__ = ["FileReport", "Finding", "Report", "Severity"]


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    file: str
    line: int
    column: int
    message: str
    suggestion: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of one finding (the file is given by the enclosing file entry)."""
        return {
            "severity": self.severity,
            "code": self.code,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "suggestion": self.suggestion,
        }

    def __str__(self) -> str:
        tail = f" {self.suggestion}" if self.suggestion else ""
        return f"{self.file}:{self.line}:{self.column}: {self.severity} [{self.code}] " \
               f"{self.message}{tail}"


@dataclass
class FileReport:
    """Findings for one file, plus the loaded flow so the compiler need not read it again.

    `unusable` is True when the file could not be read as a flow at all (missing, not YAML, not
    a mapping): the CLI exits with 2 for those.
    """

    path: str
    findings: list[Finding] = field(default_factory=list)
    flow: LoadedFlow | None = None
    unusable: bool = False
    #: what the file is: a flow, conversation tests or canned tool answers
    kind: str = "flow"

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is nothing of error severity (warnings are allowed)."""
        return not self.unusable and not self.errors

    @property
    def has_errors(self) -> bool:
        return not self.ok

    @property
    def data(self) -> Any:
        """The flow as plain data (dicts/lists), or None if it could not be loaded."""
        return self.flow.data if self.flow is not None else None

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (f.line, f.column, f.severity != "error", f.code))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind,
                "findings": [f.to_dict() for f in self.findings]}


@dataclass
class Report:
    """Several files' findings, as `flowagent validate a.yaml b.yaml` prints them."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for fr in self.files for f in fr.errors]

    @property
    def warnings(self) -> list[Finding]:
        return [f for fr in self.files for f in fr.warnings]

    @property
    def ok(self) -> bool:
        return all(fr.ok for fr in self.files)

    @property
    def exit_code(self) -> int:
        """0 = no errors (warnings allowed), 1 = errors, 2 = some input was unusable."""
        if any(fr.unusable for fr in self.files):
            return 2
        return 1 if self.errors else 0

    def to_dict(self) -> dict[str, Any]:
        return {"files": [fr.to_dict() for fr in self.files]}
