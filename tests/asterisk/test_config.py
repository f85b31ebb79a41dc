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
    assert "&flow=dental&reply=text)" in ext
    assert 'GotoIf($["${FLOWAGENT_REPLY}" != "registered"]?fallback)' in ext
    manager = render("manager", AsteriskSettings(ami_port=5039, ami_user="fa"))
    assert re.search(r"^port = 5039$", manager, re.M) and re.search(r"^\[fa\]$", manager, re.M)
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


#: where each dialplan function and application comes from (Asterisk's source tree); the ones
#: built into the core (pbx) need no module
PROVIDED_BY = {
    "CURL": "func_curl.so", "CURLOPT": "func_curl.so", "URIENCODE": "func_uri.so",
    "UUID": "func_uuid.so", "CALLERID": "func_callerid.so", "LEN": "func_strings.so",
    "AudioSocket": "app_audiosocket.so", "Dial": "app_dial.so", "Queue": "app_queue.so",
    "AGI": "res_agi.so",
}
CORE = {"NoOp", "Answer", "Set", "GotoIf", "Goto", "Hangup"}


@pytest.mark.parametrize(("dialplan", "modules"), [
    (("extensions", "wideband", "agi"), "modules"),
    (("websocket-dialplan",), "websocket-modules"),
])
def test_every_function_and_application_the_dialplan_uses_is_loaded(
        dialplan: tuple[str, ...], modules: str) -> None:
    """With autoload=no only what modules.conf names exists: every function and application
    our dialplan calls must come from a module our modules snippet loads."""
    loaded = set(re.findall(r"^load => (\S+)", render(modules, SETTINGS), re.M))
    used: set[str] = set()
    for part in dialplan:
        for line in render(part, SETTINGS).splitlines():
            if line.lstrip().startswith(";"):
                continue
            used |= set(re.findall(r"\$\{([A-Z]+)\(", line))  # functions: ${NAME(
            m = re.search(r"=>\s*[^,]+,[^,]+,([A-Za-z]+)\(", line)  # the application
            if m:
                used.add(m.group(1))
    unknown = used - set(PROVIDED_BY) - CORE
    assert unknown == set(), f"add these to PROVIDED_BY: {unknown}"
    missing = {name: PROVIDED_BY[name] for name in used - CORE
               if PROVIDED_BY[name] not in loaded}
    if modules == "websocket-modules":  # AudioSocket/AGI are not part of that transport
        missing.pop("AudioSocket", None)
    assert missing == {}
    assert "res_manager.so" not in loaded  # built into the core: loading it is an error


def test_snippets_paste_into_an_existing_modules_section() -> None:
    """No snippet carries its own [modules] header: pasted at the end of modules.conf it would
    be a second section, which Asterisk ignores."""
    for part in ("modules", "websocket-modules"):
        assert "[modules]" not in render(part, SETTINGS).replace(
            "existing [modules] section", "").replace("second [modules] header", "")


def test_check_says_what_to_add_where(tmp_path: Path) -> None:
    from flowagent.asterisk.config_check import check_file

    mods = tmp_path / "modules.conf"
    mods.write_text("[modules]\nautoload=no\nload => res_audiosocket.so\n"
                    "load => res_manager.so\nnoload => func_curl.so\n\n[modules]\n"
                    "load => func_uuid.so\n")
    out = [f.render() for f in check_file(mods)]
    text = "\n".join(out)
    assert f"{mods}:7: error: A second [modules] section" in text
    assert f"{mods}:4: error: `load => res_manager.so` names a module that does not exist" in text
    assert f"{mods}:5: error: `noload => func_curl.so`" in text
    assert "add `load => func_callerid.so`" in text and "add `load => func_uuid.so`" in text
    good = tmp_path / "good.conf"
    good.write_text("[modules]\nautoload=yes\n")
    assert check_file(good) == []
    ext = tmp_path / "extensions.conf"
    ext.write_text("[from-trunk]\nexten => _X.,1,AudioSocket(${UUID},127.0.0.1:9099)\n")
    out = [f.render() for f in check_file(ext)]
    assert any(f"{ext}:2: error: AudioSocket(${{UUID}},...)" in line for line in out)
    result = subprocess.run([sys.executable, "-m", "flowagent.cli", "asterisk", "config",
                             "--check", str(mods), "--check", str(good)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "nothing to change" in result.stdout


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
