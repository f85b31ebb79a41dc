"""`flowagent graph FLOW`: draw a flow as Mermaid, Graphviz DOT or a self-contained HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

from flowagent.graph.render import RENDERERS
from flowagent.graph.status import inspect_flow

FORMATS = ("mermaid", "dot", "html", "svg")


def run(flow: Path, output_format: str = "mermaid", output: Path | None = None) -> int:
    """Exit 0 with the diagram; 2 when the flow cannot be drawn (same code as `validate` uses
    for unusable input), after printing each reason as one line with file:line:column."""
    fmt = output_format.lower()
    if fmt not in FORMATS:
        print(
            f"Unknown format `{output_format}`: use one of {', '.join(FORMATS)}.", file=sys.stderr
        )
        return 2
    status = inspect_flow(flow)
    if status.blocking or status.graph is None:
        for line in status.blocking:
            print(line, file=sys.stderr)
        print(
            "The flow has errors, so it cannot be drawn; fix them (see `flowagent validate`) "
            "and run `flowagent graph` again.",
            file=sys.stderr,
        )
        return 2
    text = RENDERERS[fmt](status.graph)
    for name in status.graph.unreachable:
        print(f"note: state `{name}` is unreachable (marked on the diagram).", file=sys.stderr)
    if output is None:
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        print(f"Wrote {output}.", file=sys.stderr)
    return 0
