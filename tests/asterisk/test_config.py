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

from flowagent.asterisk.config import ALL_PARTS, GROUPS, PARTS, AsteriskSettings, render

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = AsteriskSettings(host="10.0.0.5", port=9100, http_port=8081, did="01632960000",
                            flow="dental", fallback="200")


@pytest.mark.parametrize("part", list(PARTS))
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


@pytest.mark.parametrize("part", ["extensions", "agi", "wideband", "modules", "manager",
                                  "websocket-modules", "websocket-channel", "websocket-client",
                                  "websocket-dialplan"])
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


def test_websocket_parts_fit_together() -> None:
    """The dial string names the websocket_client.conf connection, its v(...) carries the call
    id the protocol module reads, and res_websocket_client's dependency is loaded first."""
    modules = render("websocket-modules", SETTINGS)
    loads = re.findall(r"^load => (\S+)$", modules, re.M)
    assert loads.index("res_sorcery_config.so") < loads.index("res_websocket_client.so") \
        < loads.index("chan_websocket.so")
    client = render("websocket-client", SETTINGS)
    assert re.search(r"^\[flowagent\]$", client, re.M)
    assert "uri = ws://10.0.0.5:9098/chan_websocket" in client
    assert "type = websocket_client" in client
    assert "control_message_format = json" in render("websocket-channel", SETTINGS)
    dial = render("websocket-dialplan", SETTINGS)
    line = next(x for x in dial.splitlines() if "Dial(WebSocket/" in x)
    assert "Dial(WebSocket/flowagent/c(slin16)f(json)v(uuid=${FLOWAGENT_UUID}," in line
    assert "flow=dental)" in line and line.endswith(",,g)")
    assert "exten => 01632960000,1," in dial


def test_cli_websocket_prints_every_file_chan_websocket_needs() -> None:
    done = run_cli("--part", "websocket", "--host", "10.0.0.5", "--ws-port", "9200")
    assert done.returncode == 0, done.stderr
    for part in GROUPS["websocket"]:
        assert f"# ===== {part}: {PARTS[part][2]} =====" in done.stdout
    assert "uri = ws://10.0.0.5:9200/chan_websocket" in done.stdout
    assert "flowagent serve --websocket 0.0.0.0:9200" in done.stdout
    assert run_cli("--part", "websockets").returncode == 2
