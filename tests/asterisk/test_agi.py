"""`flowagent-agi` against a fake AGI conversation (pipes) and a real local HTTP server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from agi_peer import run_agi


class FakeFlowagent:
    """A tiny stand-in for flowagent's control API: records requests, answers as configured."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.reply: dict[str, Any] = {"ok": True, "flow": "dental"}
        self.transfer = ""
        self.stall_s = 0.0
        self.trickle = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (the timeout test): that is the point

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outer.requests.append({"method": "POST", "path": self.path,
                                       "headers": dict(self.headers), "body": body})
                if outer.stall_s:
                    time.sleep(outer.stall_s)
                if outer.trickle:  # a sick server: one byte every 0.2 s, for ever
                    try:
                        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    return
                self._answer(outer.status, json.dumps(outer.reply).encode(), "application/json")

            def do_GET(self) -> None:
                outer.requests.append({"method": "GET", "path": self.path,
                                       "headers": dict(self.headers), "body": b""})
                self._answer(outer.status, outer.transfer.encode(), "text/plain")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeFlowagent:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeFlowagent]:
    with FakeFlowagent() as fake:
        yield fake


def test_setup_registers_the_call_and_sets_channel_variables(api: FakeFlowagent) -> None:
    run = run_agi(["setup", "removals"], {"FLOWAGENT_API": api.url, "FLOWAGENT_TOKEN": "s3cret",
                                          "FLOWAGENT_FALLBACK": "100"})
    assert run.returncode == 0, run.stderr
    call_uuid = run.variables["FLOWAGENT_UUID"]
    assert str(uuid.UUID(call_uuid)) == call_uuid
    assert run.variables["FLOWAGENT_FLOW"] == "dental"  # flowagent's choice for the DID wins
    assert run.variables["FLOWAGENT_STATUS"] == "ok"
    assert "FLOWAGENT_FALLBACK" not in run.variables
    [request] = api.requests
    assert request["path"] == "/call"
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    body = json.loads(request["body"])
    assert body["uuid"] == call_uuid
    assert body["payload"] == {
        "caller": "+447700900123", "caller_name": "Jo Bloggs", "did": "01632960000",
        "extension": "01632960000", "context": "flowagent-agi",
        "channel": "PJSIP/trunk-00000007", "uniqueid": "1700000000.42", "language": "en",
        "flow": "removals",
    }


def test_down_flowagent_sets_the_fallback_extension() -> None:
    # nothing listens on this port: connection refused at once
    with FakeFlowagent() as dead:
        url = dead.url
    run = run_agi(["setup"], {"FLOWAGENT_API": url, "FLOWAGENT_FALLBACK": "operator"})
    assert run.returncode == 0
    assert run.variables["FLOWAGENT_STATUS"] == "failed"
    assert run.variables["FLOWAGENT_FALLBACK"] == "operator"
    assert "FLOWAGENT_FLOW" not in run.variables
    assert any(c.startswith("VERBOSE") and "registration failed" in c for c in run.commands)


def test_slow_flowagent_does_not_hold_the_call(api: FakeFlowagent) -> None:
    api.stall_s = 1.5
    run = run_agi(["setup", "--timeout", "0.3"], {"FLOWAGENT_API": api.url,
                                                   "FLOWAGENT_FALLBACK": "100"})
    assert run.variables["FLOWAGENT_STATUS"] == "failed"
    assert run.variables["FLOWAGENT_FALLBACK"] == "100"


def test_trickling_flowagent_is_cut_off_by_the_overall_deadline(api: FakeFlowagent) -> None:
    api.trickle = True  # every byte arrives within urllib's per-read timeout
    run = run_agi(["setup", "--timeout", "0.5"], {"FLOWAGENT_API": api.url,
                                                   "FLOWAGENT_FALLBACK": "100"})
    assert run.variables["FLOWAGENT_STATUS"] == "failed"
    assert run.variables["FLOWAGENT_FALLBACK"] == "100"


def test_rejected_token_is_a_failure_not_a_call(api: FakeFlowagent) -> None:
    api.status = 401
    api.reply = {"error": "unauthorized"}
    run = run_agi(["setup"], {"FLOWAGENT_API": api.url, "FLOWAGENT_FALLBACK": "100"})
    assert run.variables["FLOWAGENT_STATUS"] == "failed"
    assert any("HTTP 401" in c for c in run.commands)


def test_settings_from_environment_when_dialplan_has_none(api: FakeFlowagent) -> None:
    run = run_agi(["setup", "removals"], {}, extra_env={
        "FLOWAGENT_API_URL": api.url, "FLOWAGENT_API_TOKEN": "from-env"})
    assert run.variables["FLOWAGENT_STATUS"] == "ok"
    assert api.requests[0]["headers"]["Authorization"] == "Bearer from-env"


def test_after_reads_back_the_transfer_destination(api: FakeFlowagent) -> None:
    api.transfer = "flowagent-transfer,1001,1"
    call_uuid = str(uuid.uuid4())
    run = run_agi(["after"], {"FLOWAGENT_API": api.url, "FLOWAGENT_UUID": call_uuid})
    assert run.variables["FLOWAGENT_DEST"] == "flowagent-transfer,1001,1"
    assert api.requests[0]["path"] == f"/calls/{call_uuid}/transfer"


def test_after_refuses_a_malformed_destination(api: FakeFlowagent) -> None:
    api.transfer = "flowagent-transfer,1001,1)\nHangup("
    run = run_agi(["after"], {"FLOWAGENT_API": api.url, "FLOWAGENT_UUID": str(uuid.uuid4())})
    assert run.variables["FLOWAGENT_DEST"] == ""


def test_caller_hangup_notice_does_not_confuse_the_script(api: FakeFlowagent) -> None:
    run = run_agi(["setup"], {"FLOWAGENT_API": api.url}, hangup_first=True)
    assert run.returncode == 0
    assert run.variables["FLOWAGENT_STATUS"] == "ok"


def test_shipped_wrapper_execs_the_console_script(tmp_path: Any, api: FakeFlowagent) -> None:
    import os
    import stat
    import subprocess
    import sys

    from flowagent.asterisk.config import AsteriskSettings, render

    # the wrapper runs whatever agi_command points at: here, this interpreter's module
    launcher = tmp_path / "flowagent-agi"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m flowagent.asterisk.agi \"$@\"\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    wrapper = tmp_path / "flowagent-setup.agi"
    wrapper.write_text(render("agi-script", AsteriskSettings(agi_command=str(launcher))))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWAGENT_")}
    env["FLOWAGENT_API_URL"] = api.url
    script = "agi_channel: PJSIP/x-1\nagi_callerid: 123\n\n" + "200 result=0\n" * 4 + \
        "200 result=1\n" * 4
    done = subprocess.run([str(wrapper), "setup"], input=script, capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert 'SET VARIABLE FLOWAGENT_STATUS "ok"' in done.stdout
    assert api.requests and api.requests[0]["path"] == "/call"
