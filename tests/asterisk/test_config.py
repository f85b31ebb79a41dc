"""`flowagent asterisk config`: golden files for every part, value checks, the CLI output.

Regenerate the golden files after a deliberate template change with
`FLOWAGENT_UPDATE_GOLDEN=1 pytest tests/asterisk/test_config.py` and review the diff.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowagent.asterisk.config import ALL_PARTS, PARTS, AsteriskSettings, render

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = AsteriskSettings(host="10.0.0.5", port=9100, http_port=8081, did="01632960000",
                            flow="dental", fallback="200")


@pytest.mark.parametrize("part", ALL_PARTS)
def test_rendered_part_matches_golden(part: str) -> None:
    text = render(part, SETTINGS)
    path = GOLDEN / f"{part}.txt"
    if os.environ.get("FLOWAGENT_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_values_land_where_asterisk_reads_them() -> None:
    ext = render("extensions", SETTINGS)
    assert "FLOWAGENT_API=http://10.0.0.5:8081" in ext
    assert "FLOWAGENT_AUDIOSOCKET=10.0.0.5:9100" in ext
    assert "exten => 01632960000,1," in ext
    assert "&flow=dental)" in ext
    assert "AudioSocket(${FLOWAGENT_UUID},${FLOWAGENT_AUDIOSOCKET})" in ext
    wide = render("wideband", SETTINGS)
    assert "Dial(AudioSocket/${FLOWAGENT_AUDIOSOCKET}/${FLOWAGENT_UUID}/c(slin16),,g)" in wide
    unit = render("systemd", SETTINGS)
    assert "--audiosocket 0.0.0.0:9100 --http 0.0.0.0:8081" in unit
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)
    assert re.search(r"^User=flowagent$", unit, re.M)


@pytest.mark.parametrize("part", ["extensions", "agi", "wideband", "modules", "manager"])
def test_every_dialplan_line_is_explained(part: str) -> None:
    """Each configuration line has a comment just above it (or is inside a commented block)."""
    previous = ""
    for line in render(part, SETTINGS).splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(";") and not stripped.startswith("["):
            assert previous.startswith(";") or previous.startswith("same") \
                or previous.startswith("exten") or previous.startswith("load") \
                or "=" in previous, f"unexplained line in {part}: {line}"
        if stripped:
            previous = stripped


@pytest.mark.parametrize(
    ("field", "value"),
    [("host", "evil,host"), ("did", "1)\n same => n,System(rm"), ("flow", "a b"),
     ("port", 0), ("workdir", "relative/path")],
)
def test_unsafe_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        render("extensions", AsteriskSettings(**{field: value}))  # type: ignore[arg-type]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowagent.cli", "asterisk", "config", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_plain_text_when_redirected() -> None:
    done = run_cli("--part", "extensions", "--host", "10.0.0.5", "--port", "9100",
                   "--http-port", "8081", "--did", "01632960000", "--flow", "dental")
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # no colour codes in a file
    assert done.stdout == render("extensions", AsteriskSettings(
        host="10.0.0.5", port=9100, http_port=8081, did="01632960000", flow="dental"))


def test_cli_all_parts_with_headers_and_bad_value_exit_code() -> None:
    done = run_cli()
    assert done.returncode == 0
    for part in ALL_PARTS:
        assert f"# ===== {part}: {PARTS[part][2]} =====" in done.stdout
    bad = run_cli("--host", "a,b")
    assert bad.returncode == 2 and "cannot go into" in bad.stderr


def test_the_node_template_unit_runs_one_node_per_instance(tmp_path: Path) -> None:
    """`--part systemd-nodes`: flowagent@N.service, its ports from node-N.env, its own node id
    and state directory; systemd itself accepts the file where systemd-analyze exists."""
    import shutil

    unit = render("systemd-nodes", SETTINGS)
    assert "--audiosocket ${FLOWAGENT_AUDIOSOCKET} --http ${FLOWAGENT_HTTP}" in unit
    assert "--node-id %H-%i" in unit and "--db /var/lib/flowagent/node-%i/flowagent.db" in unit
    assert re.search(r"^EnvironmentFile=/etc/flowagent/node-%i\.env$", unit, re.M)
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)  # SIGTERM drains
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return
    path = tmp_path / "flowagent@.service"
    path.write_text(unit, encoding="utf-8")
    out = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True,
                         timeout=60)
    # the only complaint allowed: the venv of the example settings is not on this machine
    complaints = [line for line in (out.stdout + out.stderr).splitlines()
                  if line.strip() and "is not executable" not in line]
    assert not complaints, complaints
