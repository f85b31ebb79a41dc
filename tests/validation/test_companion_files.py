"""`flowagent validate PATH...` takes folders and checks each file as what it is: flows,
conversation tests (*.tests.yaml) and canned tool answers (*.tools.yaml), each with its own
schema, at file:line:column, and against the flow beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flowagent.commands.validate import run

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "flows"


def _json(capsys, *paths: str | Path) -> tuple[int, dict]:
    code = run([str(p) for p in paths], output_format="json", check_env=False)
    return code, json.loads(capsys.readouterr().out)


def test_a_folder_checks_every_file_by_its_kind(capsys) -> None:
    code, out = _json(capsys, FLOWS)
    kinds = {Path(f["path"]).name: f["kind"] for f in out["files"]}
    assert kinds["removals.yaml"] == "flow"
    assert kinds["removals.tests.yaml"] == "tests"
    assert kinds["removals.tools.yaml"] == "tools"
    assert len(out["files"]) == len(list(FLOWS.rglob("*.yaml")))
    assert code == 0, out


def test_a_shell_glob_of_the_folder_is_clean_too(capsys) -> None:
    code, out = _json(capsys, *sorted(FLOWS.glob("*.yaml")))
    assert code == 0
    assert not [f for fr in out["files"] for f in fr["findings"] if f["code"] == "not-a-flow"]


def _broken_folder(tmp_path: Path) -> Path:
    shutil.copy(FLOWS / "removals.yaml", tmp_path / "removals.yaml")
    (tmp_path / "removals.tests.yaml").write_text(
        "today: 2026-3-02\n"
        "tools:\n"
        "  get_qoute: {response: {price: 450}}\n"
        "  book_move: {respnse: {reference: X}}\n"
        "tests:\n"
        "  - name: a\n"
        "    turns:\n"
        "      - caller: hi\n"
        "        expect: {state: detials, say_contain: hello}\n"
        "      - silence: false\n"
        "  - name: b\n"
        "    turns: []\n", encoding="utf-8")
    (tmp_path / "removals.tools.yaml").write_text(
        "get_quote:\n  status: abc\nbook_move: []\n", encoding="utf-8")
    return tmp_path


def test_tests_and_tools_files_get_their_own_findings_at_their_lines(
        tmp_path: Path, capsys) -> None:
    code, out = _json(capsys, _broken_folder(tmp_path))
    assert code == 1
    found = {(Path(fr["path"]).name, f["code"], f["line"], f["column"]): f
             for fr in out["files"] for f in fr["findings"]}
    tests, tools = "removals.tests.yaml", "removals.tools.yaml"
    assert "YYYY-MM-DD" in found[(tests, "bad-value", 1, 8)]["message"]
    assert found[(tests, "unknown-tool", 3, 3)]["suggestion"] == "Did you mean `get_quote`?"
    assert found[(tests, "unknown-key", 4, 15)]["severity"] == "warning"  # respnse
    assert found[(tests, "unknown-state", 9, 25)]["suggestion"] == "Did you mean `details`?"
    assert found[(tests, "unknown-key", 9, 34)]["suggestion"] == "Did you mean `say_contains`?"
    assert "`silence` in turn 2 of test 1" in found[(tests, "bad-value", 10, 18)]["message"]
    assert "`turns` in test 2" in found[(tests, "wrong-type", 12, 12)]["message"]
    assert "whole number" in found[(tools, "wrong-type", 2, 11)]["message"]
    assert "empty list" in found[(tools, "wrong-type", 3, 12)]["message"]
    # the flow itself is untouched and clean
    assert not [k for k in found if k[0] == "removals.yaml"]


def test_the_human_output_names_each_file(tmp_path: Path, capsys) -> None:
    code = run([str(_broken_folder(tmp_path))], check_env=False)
    text = capsys.readouterr().out
    assert code == 1
    assert "removals.tests.yaml" in text and "removals.tools.yaml" in text
    assert "Did you mean `details`?" in text


def test_a_folder_without_yaml_and_a_missing_path_are_unusable(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _json(capsys, empty, tmp_path / "nope.yaml")
    assert code == 2
    assert [f["findings"][0]["code"] for f in out["files"]] == ["file-not-found"] * 2


def test_a_tests_file_that_is_not_yaml_is_reported_at_its_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.tests.yaml"
    bad.write_text("tests:\n  - name: a\n    turns:\n      - caller: 'unclosed\n", "utf-8")
    code, out = _json(capsys, bad)
    assert code == 2
    finding = out["files"][0]["findings"][0]
    assert (finding["code"], finding["line"]) == ("yaml-syntax", 4)


def test_a_very_long_line_is_cut_around_the_finding(tmp_path: Path, capsys) -> None:
    flow = (FLOWS / "removals.yaml").read_text(encoding="utf-8")
    long_say = "word " * 4400  # a 22,000-character line
    broken = tmp_path / "long.yaml"
    broken.write_text(flow.replace("states:\n", "states:\n  extra_state:\n    say: "
                                   + long_say + "{{ slots.nope }}\n    next: goodbye\n", 1),
                      encoding="utf-8")
    code = run([str(broken)], check_env=False)
    out = capsys.readouterr().out
    assert code == 1
    assert max(len(line) for line in out.splitlines()) < 400
    shown = [line for line in out.splitlines() if "│ " in line and "word" in line]
    assert shown and "…" in shown[0] and "slots.nope" in shown[0]
    caret = next(line for line in out.splitlines() if line.rstrip().endswith("^"))
    # the caret sits under the finding's column within the excerpt
    assert shown[0][len(caret.rstrip()) - 1] != " "
