"""Every finding code the validator can emit is explained in docs/authoring.md, and the spec's
stable codes are all implemented (a code that appears nowhere in the source is a spec gap)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "flowagent" / "flow"
SOURCES = [*sorted((FLOW / "checks").glob("*.py")), FLOW / "validate.py", FLOW / "loader.py"]
EMIT = re.compile(
    r"(?:\.(?:error|warn)\(\s*|_unusable\(\s*\w+,\s*|Finding\(\s*\"(?:error|warning)\",\s*"
    r"|\.add\(\s*\"(?:error|warning)\",\s*|code=)\"(?P<code>[a-z]+(?:-[a-z]+)+)\""
)


def emitted_codes() -> set[str]:
    codes: set[str] = set()
    for path in SOURCES:
        codes |= {m["code"] for m in EMIT.finditer(path.read_text(encoding="utf-8"))}
    return codes


def test_every_emitted_code_is_in_the_authoring_table() -> None:
    codes = emitted_codes()
    assert len(codes) >= 38
    guide = (ROOT / "docs" / "authoring.md").read_text(encoding="utf-8")
    guide = guide.split("## Every finding", 1)[1]
    table = set(re.findall(r"^\| `([a-z-]+)` \|", guide, flags=re.MULTILINE))
    assert codes - table == set(), "codes missing from docs/authoring.md"
    assert table - codes == set(), "documented codes the validator never emits"


def test_every_stable_code_in_the_spec_is_implemented() -> None:
    spec = (ROOT / "docs" / "flow-format.md").read_text(encoding="utf-8")
    section = spec.split("## Validation codes", 1)[1].split("## How the validator reads", 1)[0]
    stable = set(re.findall(r"`([a-z]+(?:-[a-z]+)+)`", section))
    assert len(stable) >= 30
    assert stable - emitted_codes() == set()
