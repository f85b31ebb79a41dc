"""The command line's own manners: `--version`, shell completion, on/off options shown as
flags in --help, and `flowagent doctor` with no arguments checking the flows it finds."""

from __future__ import annotations

import re
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowagent.cli import app
from flowagent.commands.doctor import default_flows

ROOT = Path(__file__).resolve().parents[1]


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"flowagent {version('flowagent')}"


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0
    assert "_FLOWAGENT_COMPLETE" in result.stdout


@pytest.mark.parametrize("command", [["call"], ["serve"], ["calls"], ["chat"], ["validate"]])
def test_help_shows_on_off_options_as_flags(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert re.search(r"--help\s+Show this message", result.stdout)


def test_options_that_take_values_still_say_what(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["call", "--help"], env={"COLUMNS": "120"})
    assert re.search(r"--to\s+<str>", result.stdout)


def test_doctor_without_flows_checks_the_flows_it_finds(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("removals.yaml", "removals.tests.yaml", "removals.tools.yaml"):
        shutil.copy(ROOT / "flows" / name, folder / name)
    assert default_flows([folder]) == [folder / "removals.yaml"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOWAGENT_AMI_HOST", raising=False)
    result = CliRunner().invoke(app, ["doctor", "--audiosocket", "127.0.0.1:0",
                                      "--http", "127.0.0.1:0"])
    assert "Checking the flows in flows/" in result.stdout
    assert re.search(r"pass\s+flow flows/removals\.yaml: valid", result.stdout), result.stdout
    assert "no flow files given" not in result.stdout
