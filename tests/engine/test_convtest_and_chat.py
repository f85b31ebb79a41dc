"""`flowagent test` on passing and failing test files, and `flowagent chat` driven by a pipe."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from engine_helpers import ROOT
from rich.console import Console

from flowagent.commands import test as test_cmd

REMOVALS = ROOT / "flows" / "removals.yaml"


def run_test_cmd(tests: Path, flow: Path = REMOVALS, **kw: object) -> tuple[int, str]:
    con = Console(record=True, width=200, force_terminal=False, color_system=None, emoji=False)
    code = test_cmd.run(flow, tests, console=con, **kw)  # type: ignore[arg-type]
    return code, con.export_text()


SHIPPED = sorted((ROOT / "flows").glob("*.tests.yaml"))


@pytest.mark.parametrize("tests", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_conversation_tests_pass_with_junit(tests: Path, tmp_path: Path) -> None:
    flow = tests.with_name(tests.name.replace(".tests.yaml", ".yaml"))
    junit = tmp_path / "junit.xml"
    code, out = run_test_cmd(tests, flow, junit=junit)
    assert code == 0, out
    assert "0 failed" in out and "FAIL" not in out
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0"
    assert int(suite.get("tests", "0")) >= 7


def test_every_example_flow_has_conversation_tests() -> None:
    flows = [p for p in (ROOT / "flows").glob("*.yaml")
             if not p.name.endswith((".tests.yaml", ".tools.yaml"))]
    missing = [p.name for p in flows
               if not p.with_name(p.name.replace(".yaml", ".tests.yaml")).exists()]
    assert not missing, f"example flows without conversation tests: {missing}"


FAILING = """
today: 2026-03-02
tools:
  get_quote: {response: {price: 450, quote_id: Q-1}}
tests:
  - name: greets correctly
    turns:
      - expect: {say_contains: Swift Removals}
  - name: wrong expectation about the postcode
    turns:
      - caller: I'd like a quote
      - caller: LS11 5AB
        expect: {slots: {from_postcode: LS12 9ZZ}}
  - name: expects a tool that is never called
    turns:
      - caller: I'd like a quote
        expect: {tool_called: {name: get_quote}}
"""


def test_failing_tests_show_the_conversation_and_the_failed_expectation(tmp_path: Path
                                                                         ) -> None:
    tests = tmp_path / "bad.tests.yaml"
    tests.write_text(FAILING)
    junit = tmp_path / "junit.xml"
    code, out = run_test_cmd(tests, junit=junit)
    assert code == 1
    assert "PASS greets correctly" in out
    assert "FAIL wrong expectation about the postcode" in out
    assert "caller: LS11 5AB" in out and "agent: And the postcode you're moving to?" in out
    assert "expected slot from_postcode to be 'LS12 9ZZ', but it is 'LS11 5AB'" in out
    assert "expected the get_quote tool to be called, but it was not" in out
    assert "1 passed, 2 failed" in out
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "2"
    failure = suite.find("testcase[@name='wrong expectation about the postcode']/failure")
    assert failure is not None and "LS12 9ZZ" in failure.get("message", "")


def test_name_filter_runs_only_matching_tests(tmp_path: Path) -> None:
    tests = tmp_path / "bad.tests.yaml"
    tests.write_text(FAILING)
    code, out = run_test_cmd(tests, name_filter="greets")
    assert code == 0 and "1 passed, 0 failed" in out


@pytest.mark.parametrize(("text", "message"), [
    ("tests:\n  - name: x\n    turns:\n      - caller: hi\n        expct: {state: a}\n",
     "5:9: Unknown key `expct`"),
    ("tests:\n  - name: x\n    turns:\n      - caller: hi\n        expect: {sate: a}\n",
     "5:18: Unknown expectation `sate`"),
    ("tests:\n  - name: x\n", "Test 'x' needs a list of `turns`"),
    ("tests: [\n", "not valid YAML"),
])
def test_broken_tests_file_is_reported_with_a_position(tmp_path: Path, text: str, message: str
                                                       ) -> None:
    tests = tmp_path / "broken.tests.yaml"
    tests.write_text(text)
    code, out = run_test_cmd(tests)
    assert code == 2
    assert message in out.replace("\n", "")


def test_cli_exit_code_through_the_console_script(tmp_path: Path) -> None:
    tests = tmp_path / "bad.tests.yaml"
    tests.write_text(FAILING)
    proc = subprocess.run(
        [sys.executable, "-m", "flowagent.cli", "test", str(REMOVALS), str(tests)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL wrong expectation about the postcode" in proc.stdout


def test_chat_by_pipe_with_canned_tools() -> None:
    script = "\n".join([
        "I'd like a quote",
        "from LS11 5AB to M1 1AE on the 14th of March, three bedrooms",
        "/state",
        "/slots",
        "yes",
        "/tools",
        "/dtmf 0",
        "/quit",
    ]) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "flowagent.cli", "chat", str(REMOVALS),
         "--tools", str(ROOT / "flows" / "removals.tools.yaml")],
        input=script, capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "agent: Hello, you're through to Swift Removals." in out
    assert "What's the postcode you're moving from?" in out
    assert "Is that right?" in out
    assert "state: details" in out
    assert "LS11 5AB" in out and "bedrooms" in out  # the /slots table
    assert "£450" in out
    assert "get_quote" in out  # the /tools table
    assert "Putting you through to the team." in out
    assert "transferred to 6001" in out


def test_chat_restart_and_silence() -> None:
    script = "/silence\n/silence\n/silence\n/restart\nhello\n/quit\n"
    proc = subprocess.run(
        [sys.executable, "-m", "flowagent.cli", "chat", str(REMOVALS),
         "--tools", str(ROOT / "flows" / "removals.tools.yaml")],
        input=script, capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(ROOT)},
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.count("You can say get a quote, or existing booking.") >= 2
    assert "trouble hearing you" in out
    assert out.count("Hello, you're through to Swift Removals.") == 2
