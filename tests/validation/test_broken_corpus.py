"""Every file in tests/flows/broken/ holds one mistake a flow author could make, and says in its
first line what `flowagent validate` must report:

    # expect: unknown-state 12:11 mentions=bokk [severity=warning] [suggests=book]

The finding must be there with that code, line and column, and its sentence must name the thing
the author has to change; with `suggests=`, its suggestion must hold that text (spaces ignored:
`suggests=intent:human` matches "write `intent: human`"). No other *error* may be reported
(one mistake -> one error), so
findings do not cascade into noise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowagent.flow.validate import validate_file

BROKEN = Path(__file__).resolve().parents[1] / "flows" / "broken"
HEADER = re.compile(
    r"^# expect: (?P<code>[a-z-]+) (?P<line>\d+):(?P<col>\d+) mentions=(?P<mentions>\S+)"
    r"(?: severity=(?P<severity>error|warning))?(?: suggests=(?P<suggests>\S+))?\s*$"
)
FILES = sorted(BROKEN.glob("*.yaml"))


def test_corpus_is_big_enough() -> None:
    assert len(FILES) >= 45
    codes = {HEADER.match(f.read_text().splitlines()[0])["code"] for f in FILES}  # type: ignore[index]
    assert len(codes) >= 35


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_broken_flow_reports_its_mistake(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = HEADER.match(first)
    assert m, f"{path.name}: first line must be an `# expect:` header"
    code, line, col = m["code"], int(m["line"]), int(m["col"])
    severity = m["severity"] or "error"

    report = validate_file(path, check_env=True, environ={})
    found = [f for f in report.findings if f.code == code]
    assert found, f"{path.name}: expected {code}, got " + "; ".join(map(str, report.findings))
    at = [f for f in found if (f.line, f.column) == (line, col)]
    assert at, f"{path.name}: {code} expected at {line}:{col}, got " + "; ".join(
        f"{f.line}:{f.column}" for f in found)
    finding = at[0]
    assert finding.severity == severity
    assert m["mentions"].lower() in finding.message.lower(), finding.message
    assert finding.message.strip().endswith((".", "?", ")")), finding.message
    assert "Traceback" not in finding.message
    if m["suggests"]:
        said = "".join((finding.suggestion or "").split()).lower()
        assert m["suggests"].lower() in said, finding.suggestion

    other_errors = [f for f in report.errors if f.code != code]
    assert not other_errors, f"{path.name}: unexpected extra errors: " + "; ".join(
        map(str, other_errors))
    if severity == "warning":
        assert report.ok  # warnings alone never fail a flow
    else:
        assert not report.ok
