"""`flowagent validate` / `schema` skip typer for speed but must behave exactly like the typer
commands (same output, same exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flowagent.cli import _fast_path, app

ROOT = Path(__file__).resolve().parents[1]


def test_validate_command_module_is_light() -> None:
    code = (
        "import sys\n"
        "from flowagent.commands import validate\n"
        "rc = validate.run(['flows/removals.yaml'], output_format='json', check_env=True)\n"
        "heavy = [m for m in ('typer', 'pydantic', 'aiohttp', 'numpy', 'onnxruntime') "
        "if m in sys.modules]\n"
        "print(rc, ','.join(heavy) or 'none')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    last = res.stdout.strip().splitlines()[-1].split()
    assert last == ["0", "none"]


def test_fast_path_and_typer_give_the_same_json_and_exit_code(tmp_path: Path,
                                                             capsys) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "flows/removals.yaml").read_text().replace(
        "next: how_can_we_help\n", "next: how_can_we_hlep\n", 1))
    rc_fast = _fast_path(["validate", str(broken), "--format", "json"])
    fast_out = capsys.readouterr().out
    result = CliRunner().invoke(app, ["validate", str(broken), "--format", "json"])
    assert rc_fast == result.exit_code == 1
    assert json.loads(fast_out) == json.loads(result.stdout)
    codes = [f["code"] for f in json.loads(fast_out)["files"][0]["findings"]]
    assert "unknown-state" in codes


def test_unusual_arguments_fall_back_to_typer() -> None:
    assert _fast_path(["validate"]) is None  # missing files: typer words the error
    assert _fast_path(["validate", "--help"]) is None
    assert _fast_path(["validate", "x.yaml", "--bogus"]) is None
    assert _fast_path(["serve"]) is None
