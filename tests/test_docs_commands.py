"""The commands the documentation tells people to type still work.

Every fenced ```sh block of README.md and docs/*.md is read; each command in it (lines joined
at a trailing backslash) is run with bash, exit status 0 expected, in a scratch folder that
looks like the repository root (a copy of flows/ and .env.example, and `.venv` pointing at the
interpreter running the tests, so `. .venv/bin/activate` works). So a renamed option, a moved
file or a command that now fails makes this test fail, naming the file and line.

What is not run, and why (the markers):
- a block preceded by `<!-- docs-test: skip: REASON -->` in the Markdown (the reason is shown);
- single commands that cannot run here, by what they start with (`NOT_HERE` below): they need
  root, Asterisk or systemd, a running agent or a real call's id, install packages, or run
  until stopped. Each of those is covered elsewhere, as its reason says.
Blocks in other languages (yaml, ini, text, output) are examples, not commands.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.M | re.S)
MARKER = re.compile(r"<!--\s*docs-test:\s*skip:\s*(?P<why>.*?)\s*-->\s*$")

#: commands not run here: (how the command starts, why, where it is tested instead)
NOT_HERE: tuple[tuple[str, str], ...] = (
    ("sudo ", "needs root on a real server (docs/deploy.md)"),
    ("journalctl", "needs systemd"),
    ("systemctl", "needs systemd"),
    ("asterisk ", "needs Asterisk"),
    ("apt-get ", "installs system packages (.ci/run does)"),
    ("python3 -m venv", "installs everything: .ci/run runs the README's set-up verbatim"),
    ("pip install", "installs packages: tests/test_wheel.py installs the wheel"),
    ("pytest", "the test suite itself"),
    ("flowagent serve", "runs until stopped: tests/e2e/test_serve_process.py starts it"),
    ("flowagent demo", "takes ~2 minutes: tests/e2e/test_offline_voice_call.py runs it"),
    ("flowagent call", "needs a running agent: tests/e2e/test_serve_process.py calls one"),
    ("curl ", "needs a running agent"),
    ("flowagent --install-completion", "changes the shell's start-up file: "
     "tests/test_cli_options.py checks the completion script"),
    ("python -m flowagent.demo.removals_api", "runs until stopped (flowagent demo starts it)"),
    ("flowagent asterisk config --check", "reads a real Asterisk's files: "
     "tests/asterisk/test_config.py checks such files"),
)


@dataclass(frozen=True)
class DocCommand:
    file: str
    line: int
    command: str
    skip: str | None


def _commands(path: Path) -> list[DocCommand]:
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(ROOT))
    out: list[DocCommand] = []
    for fence in FENCE.finditer(text):
        if fence["lang"] not in ("sh", "bash", "shell"):
            continue
        before = text[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        first = text[: fence.start("body")].count("\n") + 1
        pending: list[str] = []
        start = first
        for i, raw in enumerate(fence["body"].splitlines()):
            line = raw.strip()
            if not pending:
                start = first + i
                if not line or line.startswith("#"):
                    continue
            pending.append(line.rstrip("\\").strip())
            if line.endswith("\\"):
                continue
            command = " ".join(pending)
            pending = []
            bare = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+", "", command)  # VAR=x cmd
            bare = bare.removeprefix(".venv/bin/")
            words = re.sub(r"\s+#.*$", "", bare) + " "  # without its comment
            why = marker["why"] if marker else next(
                (reason for prefix, reason in NOT_HERE
                 if words.startswith(prefix.rstrip() + " ") or f"| {prefix}" in words), None)
            if why is None and re.search(r"<[a-z-]+>|\.\.\.", words):
                why = "needs a real call's id (a placeholder in the docs)"
            out.append(DocCommand(rel, start, command, why))
    return out


COMMANDS = [c for doc in DOCS for c in _commands(doc)]


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_the_docs_have_commands_and_most_are_run() -> None:
    run = [c for c in COMMANDS if c.skip is None]
    assert len(COMMANDS) >= 30 and len(run) >= 15, (len(COMMANDS), len(run))
    assert any(c.file == "README.md" for c in run)


@pytest.mark.parametrize("doc", [c for c in COMMANDS if c.skip is None],
                         ids=[f"{c.file}:{c.line}" for c in COMMANDS if c.skip is None])
def test_a_documented_command_works(doc: DocCommand, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # ports of its own, so a doctor or a port check never meets another process's server
    env["FLOWAGENT_HTTP"] = _free_address()
    env["FLOWAGENT_AUDIOSOCKET"] = _free_address()
    env.pop("FLOWAGENT_AMI_HOST", None)
    result = subprocess.run(["bash", "-c", f"set -e -o pipefail\n{doc.command}"], cwd=tmp_path,
                            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, (
        f"{doc.file}:{doc.line}: `{doc.command}` exited {result.returncode}\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_the_markers_are_recognised() -> None:
    sample = ROOT / "README.md"
    assert MARKER.search("<!-- docs-test: skip: the reader's own flow -->")
    skipped = [c for c in COMMANDS if c.skip is not None]
    assert any(c.command.startswith("flowagent serve") for c in skipped)
    assert sample.is_file()
