# ruff: noqa: E501  (the fake console output below is as wide as Asterisk prints it)
"""`flowagent doctor`: each check made to fail once, against real servers and a fake `asterisk`.

Everything the doctor talks to is real and local: a provider API (aiohttp on 127.0.0.1 speaking
HTTP with 401 for a bad key), an occupied TCP port, the fake AMI, and an `asterisk` executable on
PATH that answers `-rx` commands the way Asterisk's console does.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from fake_ami import FakeAmi
from live_runtime import Live

from flowagent.commands.doctor import Check, DoctorConfig, run_checks

GOOD_FLOW = """\
flowagent: 1
name: Doctor Test
language: en-GB
start: greet
providers:
  asr: {name: fake, options: {}}
  tts: {name: fake, options: {}}
  vad: {name: fake, options: {}}
states:
  greet:
    say: Hello.
    end: true
"""

MODULES_OK = """\
Module                         Description                              Use Count  Status      Support Level
app_audiosocket.so             AudioSocket Application                  0          Running              extended
chan_audiosocket.so            AudioSocket Channel                      0          Running              extended
res_audiosocket.so             AudioSocket support                      2          Running              extended
3 modules loaded
"""
MODULES_MISSING = """\
Module                         Description                              Use Count  Status      Support Level
0 modules loaded
"""
DIALPLAN = """\
[ Context 'flowagent' created by 'pbx_config' ]
  '_X.' =>          1. NoOp(flowagent: call from ${CALLERID(num)} to ${EXTEN}) [extensions.conf:22]
                    2. Answer()                                   [extensions.conf:24]
                    3. Set(FLOWAGENT_UUID=${UUID()})              [extensions.conf:26]
                    8. Set(FLOWAGENT_REPLY=${CURL(${FLOWAGENT_API}/call,uuid=${FLOWAGENT_UUID})}) [extensions.conf:37]
                    10. AudioSocket(${FLOWAGENT_UUID},${FLOWAGENT_AUDIOSOCKET}) [extensions.conf:41]

-= 1 extension (13 priorities) in 1 context. =-
"""
NO_CONTEXT = "There is no existence of 'flowagent' context\n"


def globals_text(audiosocket: str, api: str) -> str:
    return (f"   FLOWAGENT_API={api}\n   FLOWAGENT_AUDIOSOCKET={audiosocket}\n"
            "   FLOWAGENT_TOKEN=CHANGE-ME\n\n    -- 3 variable(s)\n")


def fake_asterisk(tmp: Path, modules: str, dialplan: str, globals_: str) -> dict[str, str]:
    """An `asterisk` on PATH answering `-rx` like the real console; returns the environment."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    for name, text in (("modules", modules), ("dialplan", dialplan), ("globals", globals_)):
        (tmp / f"{name}.txt").write_text(text)
    script = bindir / "asterisk"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        cmd = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "-rx" else ""
        files = {{"module show like audiosocket": "modules",
                  "dialplan show flowagent": "dialplan", "dialplan show globals": "globals"}}
        if cmd not in files:
            print("No such command '" + cmd + "'")
            sys.exit(1)
        sys.stdout.write(open({str(tmp)!r} + "/" + files[cmd] + ".txt").read())
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_FLOW)
    return path


def config(tmp_path: Path, flows: list[Path], env: dict[str, str] | None = None,
           **kw: object) -> DoctorConfig:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWAGENT_")}
    base["PATH"] = str(tmp_path / "empty-bin")  # no asterisk unless a test provides one
    base.update(env or {})
    opts: dict[str, object] = {"audiosocket": f"127.0.0.1:{free_port()}",
                               "http": f"127.0.0.1:{free_port()}", "timeout_s": 3.0}
    opts.update(kw)
    return DoctorConfig(flows=flows, environ=base, **opts)  # type: ignore[arg-type]


def by_name(checks: list[Check], prefix: str) -> list[Check]:
    found = [c for c in checks if c.name.startswith(prefix)]
    assert found, f"no check named {prefix!r} in {[c.name for c in checks]}"
    return found


async def test_everything_fine_or_skipped_with_a_reason(tmp_path: Path, flow: Path) -> None:
    checks = await run_checks(config(tmp_path, [flow]))
    assert not [c for c in checks if c.status == "fail"], checks
    for c in checks:
        if c.status == "skip":
            assert c.detail.startswith("skipped: ")
    assert by_name(checks, "AudioSocket modules")[0].status == "skip"
    assert "not on PATH" in by_name(checks, "AudioSocket modules")[0].detail


async def test_broken_flow_fails_with_file_line_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(GOOD_FLOW.replace("end: true", "next: nowhere"))
    [check] = by_name(await run_checks(config(tmp_path, [broken])), "flow ")
    assert check.status == "fail"
    assert f"{broken}:" in check.detail and "nowhere" in check.detail


@pytest.fixture
async def provider_api() -> AsyncIterator[str]:
    """An OpenAI-compatible `GET /v1/models` that accepts only the key `good-key`."""
    async def models(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer good-key":
            return web.json_response({"error": {"message": "Incorrect API key provided"}},
                                     status=401)
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


def llm_flow(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "llm.yaml"
    path.write_text(GOOD_FLOW.replace(
        "  vad: {name: fake, options: {}}\n",
        "  vad: {name: fake, options: {}}\n"
        f"  llm: {{name: openai, options: {{base_url: \"{base_url}\", "
        "api_key: \"${DOCTOR_LLM_KEY}\", model: m}}\n"))
    return path


async def test_provider_key_rejected(tmp_path: Path, provider_api: str) -> None:
    path = llm_flow(tmp_path, provider_api)
    bad = await run_checks(config(tmp_path, [path], {"DOCTOR_LLM_KEY": "wrong-key"}))
    [check] = by_name(bad, "provider llm:openai")
    assert check.status == "fail" and "key rejected" in check.detail and "401" in check.detail
    good = await run_checks(config(tmp_path, [path], {"DOCTOR_LLM_KEY": "good-key"}))
    [check] = by_name(good, "provider llm:openai")
    assert check.status == "pass" and "key accepted" in check.detail


async def test_provider_unreachable_and_key_unset(tmp_path: Path) -> None:
    path = llm_flow(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    [check] = by_name(await run_checks(config(tmp_path, [path], {"DOCTOR_LLM_KEY": "k"})),
                      "provider llm:openai")
    assert check.status == "fail" and "cannot reach" in check.detail
    [check] = by_name(await run_checks(config(tmp_path, [path])), "provider llm:openai")
    assert check.status == "fail" and "api_key is empty" in check.detail


async def test_missing_local_model(tmp_path: Path) -> None:
    path = tmp_path / "whisper.yaml"
    path.write_text(GOOD_FLOW.replace("asr: {name: fake, options: {}}",
                                      "asr: {name: whisper, options: {model: small}}"))
    [check] = by_name(await run_checks(config(tmp_path, [path])), "model asr:whisper")
    assert check.status == "fail" and "'small' is not installed" in check.detail


async def test_occupied_port(tmp_path: Path, flow: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        checks = await run_checks(config(tmp_path, [flow], audiosocket=f"127.0.0.1:{port}"))
    [check] = by_name(checks, "AudioSocket port")
    assert check.status == "fail" and f"127.0.0.1:{port} is already in use" in check.detail
    assert by_name(checks, "HTTP port")[0].status == "pass"


async def test_ami_wrong_secret(tmp_path: Path, flow: Path) -> None:
    async with FakeAmi() as fake:
        env = {"FLOWAGENT_AMI_HOST": "127.0.0.1", "FLOWAGENT_AMI_PORT": str(fake.port),
               "FLOWAGENT_AMI_USERNAME": "flowagent", "FLOWAGENT_AMI_SECRET": "wrong"}
        [check] = by_name(await run_checks(config(tmp_path, [flow], env)), "AMI login")
        assert check.status == "fail" and "Authentication failed" in check.detail
        env["FLOWAGENT_AMI_SECRET"] = "s3cret"
        [check] = by_name(await run_checks(config(tmp_path, [flow], env)), "AMI login")
        assert check.status == "pass" and "Asterisk Call Manager" in check.detail


async def test_asterisk_without_audiosocket_modules(tmp_path: Path, flow: Path) -> None:
    env = fake_asterisk(tmp_path, MODULES_MISSING, DIALPLAN, globals_text("x:1", "http://x:1"))
    [check] = by_name(await run_checks(config(tmp_path, [flow], env)), "AudioSocket modules")
    assert check.status == "fail"
    assert "res_audiosocket.so, app_audiosocket.so not loaded" in check.detail


async def test_dialplan_matches_or_not(tmp_path: Path, flow: Path) -> None:
    as_port, http_port = free_port(), free_port()
    cfg_kw = {"audiosocket": f"127.0.0.1:{as_port}", "http": f"127.0.0.1:{http_port}"}
    good = fake_asterisk(tmp_path, MODULES_OK, DIALPLAN, globals_text(
        f"127.0.0.1:{as_port}", f"http://127.0.0.1:{http_port}"))
    checks = await run_checks(config(tmp_path, [flow], good, **cfg_kw))
    assert by_name(checks, "AudioSocket modules")[0].status == "pass"
    [check] = by_name(checks, "dialplan")
    assert check.status == "pass" and f"127.0.0.1:{as_port}" in check.detail

    wrong = fake_asterisk(tmp_path, MODULES_OK, DIALPLAN, globals_text(
        "127.0.0.1:9000", f"http://127.0.0.1:{http_port}"))
    [check] = by_name(await run_checks(config(tmp_path, [flow], wrong, **cfg_kw)), "dialplan")
    assert check.status == "fail"
    assert f"AudioSocket goes to 127.0.0.1:9000 but flowagent listens on 127.0.0.1:{as_port}" \
        in check.detail

    missing = fake_asterisk(tmp_path, MODULES_OK, NO_CONTEXT, "")
    [check] = by_name(await run_checks(config(tmp_path, [flow], missing, **cfg_kw)), "dialplan")
    assert check.status == "fail" and "is not loaded" in check.detail


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWAGENT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"
    env["FLOWAGENT_AUDIOSOCKET"] = f"127.0.0.1:{free_port()}"
    env["FLOWAGENT_HTTP"] = f"127.0.0.1:{free_port()}"
    yield env


def test_cli_prints_one_line_per_check_and_exit_status(tmp_path: Path, flow: Path,
                                                        cli_env: dict[str, str]) -> None:
    ok = subprocess.run([sys.executable, "-m", "flowagent.cli", "doctor", str(flow)],
                        capture_output=True, text=True, env=cli_env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"pass flow {flow}: valid" in ok.stdout
    assert "skip AMI login: skipped:" in ok.stdout
    assert "0 failed" in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("not: [a flow")
    bad = subprocess.run([sys.executable, "-m", "flowagent.cli", "doctor", str(broken)],
                         capture_output=True, text=True, env=cli_env, timeout=120)
    assert bad.returncode == 1
    assert f"FAIL flow {broken}" in bad.stdout


async def test_wideband_dial_variant_is_understood(tmp_path: Path, flow: Path) -> None:
    as_port, http_port = free_port(), free_port()
    dialplan = DIALPLAN.replace(
        "10. AudioSocket(${FLOWAGENT_UUID},${FLOWAGENT_AUDIOSOCKET})",
        "10. Dial(AudioSocket/${FLOWAGENT_AUDIOSOCKET}/${FLOWAGENT_UUID}/c(slin16),,g)")
    env = fake_asterisk(tmp_path, MODULES_OK, dialplan, globals_text(
        f"127.0.0.1:{as_port}", f"http://127.0.0.1:{http_port + 1}"))
    [check] = by_name(await run_checks(config(
        tmp_path, [flow], env, audiosocket=f"127.0.0.1:{as_port}",
        http=f"127.0.0.1:{http_port}")), "dialplan")
    assert check.status == "fail"  # the AudioSocket target is right, the API port is not
    assert "FLOWAGENT_API is http://127.0.0.1:" in check.detail
    assert "AudioSocket goes to" not in check.detail


async def test_asterisk_not_running_is_a_skip_with_the_reason(tmp_path: Path,
                                                              flow: Path) -> None:
    env = fake_asterisk(tmp_path, MODULES_OK, DIALPLAN, "")
    script = tmp_path / "bin" / "asterisk"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint('Unable to connect to remote "
                      "asterisk (does /var/run/asterisk/asterisk.ctl exist?)')\nsys.exit(1)\n")
    checks = await run_checks(config(tmp_path, [flow], env))
    for name in ("AudioSocket modules", "dialplan"):
        [check] = by_name(checks, name)
        assert check.status == "skip" and "Unable to connect" in check.detail


async def test_ports_held_by_a_running_flowagent_pass(tmp_path: Path, flow: Path,
                                                      live: Live) -> None:
    http_port = int(live.base.rsplit(":", 1)[1])
    as_port = live.server.address[1]
    checks = await run_checks(config(tmp_path, [flow], audiosocket=f"127.0.0.1:{as_port}",
                                     http=f"127.0.0.1:{http_port}"))
    for name in ("HTTP port", "AudioSocket port"):
        [check] = by_name(checks, name)
        assert check.status == "pass" and "in use by a running flowagent (ok)" in check.detail
