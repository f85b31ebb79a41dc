"""`flowagent asterisk config`: print the Asterisk snippets with the operator's values filled in.

Colour (rich syntax highlighting) only on a terminal: when the output is redirected into a file
(`> /etc/asterisk/...`) it must be the exact file text, byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flowagent.asterisk.config import PARTS, AsteriskSettings, expand, render


def run(
    *,
    host: str = "127.0.0.1",
    port: int = 9099,
    http_port: int = 8080,
    did: str = "_[+0-9].",
    flow: str = "removals",
    part: str = "all",
    http_host: str = "",
    fallback: str = "100",
    ws_port: int = 9098,
    ami_port: int = 5038,
    ami_user: str = "flowagent",
) -> int:
    settings = AsteriskSettings(
        host=host, port=port, http_port=http_port, http_host=http_host, did=did, flow=flow,
        fallback=fallback, ws_port=ws_port, ami_port=ami_port, ami_user=ami_user,
    )
    try:
        texts = [(p, render(p, settings)) for p in expand(part)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty()
    for i, (name, text) in enumerate(texts):
        if len(texts) > 1:
            header = f"# ===== {name}: {PARTS[name][2]} ====="
            if i:
                sys.stdout.write("\n")
            sys.stdout.write(header + "\n")
        if tty:
            from rich.console import Console
            from rich.syntax import Syntax

            Console(soft_wrap=True).print(
                Syntax(text, PARTS[name][1], word_wrap=False, theme="ansi_dark"), soft_wrap=True
            )
        else:
            sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def check(paths: list[Path]) -> int:
    """`--check FILE...`: what an operator's existing files need for flowagent, as sentences
    with file:line (exit 1 when something must change, 2 when a file cannot be read)."""
    from flowagent.asterisk.config_check import check_file

    status = 0
    for path in paths:
        try:
            findings = check_file(path)
        except OSError as exc:
            print(f"{path}: cannot be read ({exc.strerror or exc}).", file=sys.stderr)
            status = 2
            continue
        for f in findings:
            print(f.render())
            if f.severity == "error" and status == 0:
                status = 1
        if not findings:
            print(f"{path}: nothing to change for flowagent.")
    return status
