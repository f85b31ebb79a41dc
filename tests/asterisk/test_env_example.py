"""`.env.example` lists every variable flowagent reads and every secret the shipped flows use.

This test fails when someone adds an `os.environ.get("FLOWAGENT_...")` or a `${NAME}` in a
shipped flow without documenting it — which is the point of an environment reference.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV_READ = re.compile(
    r"""(?:environ|env|getenv)\s*(?:\.get\(|\[|\()\s*["']((?:FLOWAGENT|AVR|WEBHOOK)_[A-Z0-9_]+)["']""")
FLOW_REF = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))


def test_every_variable_the_code_reads_is_documented() -> None:
    read: set[str] = set()
    for path in (ROOT / "flowagent").rglob("*.py"):
        read |= set(ENV_READ.findall(path.read_text(encoding="utf-8")))
    assert read, "the scan found nothing: the pattern is wrong"
    missing = sorted(read - documented())
    assert not missing, f"add these to .env.example: {missing}"


def test_every_secret_the_shipped_flows_use_is_documented() -> None:
    used: set[str] = set()
    for path in (ROOT / "flows").glob("*.yaml"):
        used |= set(FLOW_REF.findall(path.read_text(encoding="utf-8")))
    missing = sorted(used - documented())
    assert not missing, f"add these to .env.example: {missing}"
