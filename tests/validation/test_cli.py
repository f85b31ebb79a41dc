"""`flowagent validate` and `flowagent schema` as a user runs them: real processes, exit codes,
human output with the offending line and a caret, and the JSON shape CI relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
REMOVALS = ROOT / "flows" / "removals.yaml"
BROKEN = ROOT / "tests" / "flows" / "broken"


def flowagent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("QUOTE_", "PLUMBER_"))}
    full_env.update(env or {})
    full_env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "flowagent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=full_env)


def test_clean_flow_exits_0() -> None:
    r = flowagent("validate", str(REMOVALS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no problems" in r.stdout
    assert "Traceback" not in r.stderr


def test_errors_exit_1_with_source_line_and_caret() -> None:
    r = flowagent("validate", str(BROKEN / "unknown_state_next.yaml"))
    assert r.returncode == 1
    out = r.stdout
    assert "unknown-state" in out and "menuu" in out and "Did you mean `menu`?" in out
    lines = out.splitlines()
    src = next(i for i, line in enumerate(lines) if "next: menuu" in line)
    caret_line = lines[src + 1]
    # the caret sits under the `m` of `menuu`
    assert caret_line.index("^") == lines[src].index("menuu")
    assert "1 error" in out


def test_warnings_alone_exit_0() -> None:
    r = flowagent("validate", str(BROKEN / "missing_env.yaml"))
    assert r.returncode == 0, r.stdout
    assert "missing-env" in r.stdout and "QUOTE_API_URL" in r.stdout
    r = flowagent("validate", "--no-env", str(BROKEN / "missing_env.yaml"))
    assert r.returncode == 0 and "missing-env" not in r.stdout


def test_unusable_input_exits_2(tmp_path: Path) -> None:
    assert flowagent("validate", str(tmp_path / "nope.yaml")).returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("states: [unclosed\n")
    r = flowagent("validate", str(bad))
    assert r.returncode == 2 and "yaml-syntax" in r.stdout
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert flowagent("validate", str(empty)).returncode == 2
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    r = flowagent("validate", str(binary))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # unusable beats plain errors when several files are given
    r = flowagent("validate", str(REMOVALS), str(BROKEN / "duplicate_key.yaml"),
                  str(tmp_path / "nope.yaml"))
    assert r.returncode == 2


def test_json_output_shape() -> None:
    r = flowagent("validate", "--format", "json", str(REMOVALS),
                  str(BROKEN / "duplicate_key.yaml"))
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert list(doc) == ["files"]
    clean, broken = doc["files"]
    assert clean == {"path": str(REMOVALS), "kind": "flow", "findings": []}
    assert broken["path"].endswith("duplicate_key.yaml")
    (finding,) = broken["findings"]
    assert set(finding) == {"severity", "code", "line", "column", "message", "suggestion"}
    assert finding["severity"] == "error" and finding["code"] == "duplicate-key"
    assert isinstance(finding["line"], int) and isinstance(finding["column"], int)


def test_schema_command_prints_a_valid_schema(tmp_path: Path) -> None:
    r = flowagent("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    Draft202012Validator.check_schema(schema)
    out = tmp_path / "flow.schema.json"
    assert flowagent("schema", "--output", str(out)).returncode == 0
    assert json.loads(out.read_text()) == schema


def test_validate_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['flowagent', 'validate', {str(REMOVALS)!r}]\n"
        "from flowagent.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('aiohttp', 'numpy', 'onnxruntime', 'faster_whisper', 'soxr',\n"
        "         'websockets', 'jsonschema', 'dateparser') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_run_rejects_unknown_format_and_no_files() -> None:
    from flowagent.commands.validate import run

    assert run([str(REMOVALS)], output_format="xml") == 2
    assert run([], output_format="text") == 2
    assert run([str(REMOVALS)], output_format="json", check_env=False) == 0
