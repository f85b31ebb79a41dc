"""`flowagent schema`: print (or write) the JSON Schema of the flow format.

Editors use it through the `# yaml-language-server: $schema=...` line at the top of a flow; CI
can use it with any JSON Schema validator.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def schema_text() -> str:
    return resources.files("flowagent.schemas").joinpath("flow.schema.json").read_text("utf-8")


def run(output: Path | None = None) -> int:
    text = schema_text()
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"Cannot write {output}: {exc.strerror}.", file=sys.stderr)
        return 2
    print(f"Wrote the flow schema to {output}.", file=sys.stderr)
    return 0
