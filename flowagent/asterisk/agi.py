"""AGI bootstrap: register a call with flowagent from the dialplan (`flowagent-agi`).

Asterisk runs this script with `AGI(flowagent-setup.agi,setup,<flow>)` before `AudioSocket()`,
and again with `AGI(flowagent-setup.agi,after)` when the socket has ended. The AGI protocol is
plain text on stdin/stdout: Asterisk first sends `agi_name: value` lines ended by a blank line;
then each command we write (`GET VARIABLE X`, `SET VARIABLE X "v"`) is answered by one line
`200 result=<n> [(data)]`.

Why a script at all when the dialplan can use CURL(): it sends real JSON (CURL() can't: Asterisk
strips double quotes from function arguments), it needs no func_curl, and its failure handling is
code rather than dialplan. It is stdlib-only and bounded by one short timeout, so a down or slow
flowagent costs the caller at most that long before the dialplan's fallback runs.

Settings, first found wins: command-line options, then channel/global variables read over AGI
(`FLOWAGENT_API`, `FLOWAGENT_TOKEN`, `FLOWAGENT_FALLBACK` — the dialplan's [globals]), then the
environment (`FLOWAGENT_API_URL`, `FLOWAGENT_API_TOKEN`, `FLOWAGENT_AGI_FALLBACK`,
`FLOWAGENT_AGI_TIMEOUT`).

Channel variables set:
- setup: `FLOWAGENT_UUID`, `FLOWAGENT_FLOW` (the flow flowagent chose for the number),
  `FLOWAGENT_STATUS` (`ok` or `failed`), and on failure `FLOWAGENT_FALLBACK`.
- after: `FLOWAGENT_DEST` (`context,extension,priority` to Goto, or empty to hang up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_API = "http://127.0.0.1:8080"
#: what a transfer answer must look like before the dialplan may Goto it
_DEST = re.compile(r"^[A-Za-z0-9_\-]+,[A-Za-z0-9_+*#.\-]+,[0-9]+$")


class AgiHangup(Exception):
    """Asterisk told us the channel hung up (or closed stdin): stop quietly."""


@dataclass
class AgiChannel:
    """The script's side of one AGI conversation."""

    stdin: IO[str]
    stdout: IO[str]
    env: dict[str, str]

    @classmethod
    def start(cls, stdin: IO[str], stdout: IO[str]) -> AgiChannel:
        """Read the `agi_*` block that Asterisk sends first (ends with an empty line)."""
        env: dict[str, str] = {}
        while True:
            line = stdin.readline()
            if not line:
                break  # EOF before the blank line: use what we have
            line = line.rstrip("\r\n")
            if not line:
                break
            name, sep, value = line.partition(":")
            if sep:
                env[name.strip()] = value.strip()
        return cls(stdin, stdout, env)

    def command(self, text: str) -> tuple[int, str, str]:
        """Send one command; returns (code, result, data) from `200 result=1 (data)`."""
        self.stdout.write(text + "\n")
        self.stdout.flush()
        while True:
            line = self.stdin.readline()
            if not line:
                raise AgiHangup("Asterisk closed the AGI connection")
            line = line.rstrip("\r\n")
            if line == "HANGUP":  # sent once when the caller hangs up; the reply still follows
                continue
            break
        code_text, _, rest = line.partition(" ")
        try:
            code = int(code_text)
        except ValueError:
            return 0, "", line
        if code == 511:
            raise AgiHangup("the channel is gone")
        result, data = "", ""
        if rest.startswith("result="):
            value, _, tail = rest[len("result="):].partition(" ")
            result = value
            tail = tail.strip()
            if tail.startswith("(") and tail.endswith(")"):
                data = tail[1:-1]
        return code, result, data

    def get_variable(self, name: str) -> str | None:
        code, result, data = self.command(f"GET VARIABLE {name}")
        return data if code == 200 and result == "1" else None

    def set_variable(self, name: str, value: str) -> bool:
        quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        code, _, _ = self.command(f'SET VARIABLE {name} "{quoted}"')
        return code == 200

    def verbose(self, message: str, level: int = 1) -> None:
        quoted = message.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        self.command(f'VERBOSE "{quoted}" {level}')


def _setting(option: str | None, agi: AgiChannel, var: str, env: str, default: str) -> str:
    if option:
        return option
    value = agi.get_variable(var)
    if value:
        return value
    return os.environ.get(env, "") or default


def call_metadata(agi: AgiChannel) -> dict[str, str]:
    """What flowagent wants to know about the call, from the `agi_*` block."""
    e = agi.env
    return {
        "caller": e.get("agi_callerid", "") if e.get("agi_callerid") != "unknown" else "",
        "caller_name": e.get("agi_calleridname", "")
        if e.get("agi_calleridname") != "unknown" else "",
        "did": e.get("agi_dnid", "") if e.get("agi_dnid") not in ("", "unknown")
        else e.get("agi_extension", ""),
        "extension": e.get("agi_extension", ""),
        "context": e.get("agi_context", ""),
        "channel": e.get("agi_channel", ""),
        "uniqueid": e.get("agi_uniqueid", ""),
        "language": e.get("agi_language", ""),
    }


def post_call(
    api: str, token: str, call_uuid: str, metadata: dict[str, str], flow: str, timeout: float
) -> dict[str, object]:
    """`POST {api}/call` (AVR-compatible body); returns the decoded JSON reply (or {})."""
    payload = dict(metadata)
    if flow:
        payload["flow"] = flow
    body = json.dumps({"uuid": call_uuid, "payload": payload}).encode()
    request = urllib.request.Request(
        api.rstrip("/") + "/call", data=body, method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 "User-Agent": "flowagent-agi"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read(65536)
    try:
        reply = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}


def get_transfer(api: str, token: str, call_uuid: str, timeout: float) -> str:
    """`GET {api}/calls/{uuid}/transfer` -> `context,exten,priority` or ''."""
    url = f"{api.rstrip('/')}/calls/{urllib.parse.quote(call_uuid)}/transfer"
    request = urllib.request.Request(url, headers={"User-Agent": "flowagent-agi"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read(1024)
        return body.decode("utf-8", "replace").strip()


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="flowagent-agi", description="flowagent AGI bootstrap (run by Asterisk's AGI())."
    )
    parser.add_argument("mode", nargs="?", default="setup", choices=["setup", "after"])
    parser.add_argument("flow", nargs="?", default="", help="flow to ask for (setup)")
    parser.add_argument("--api", default=None, help="flowagent control API base URL")
    parser.add_argument("--token", default=None, help="API token")
    parser.add_argument("--fallback", default=None, help="extension used if flowagent is down")
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default 2)")
    return parser.parse_args(list(argv))


def run(argv: Sequence[str], stdin: IO[str], stdout: IO[str]) -> int:
    """One AGI invocation. Always exits 0 so Asterisk continues with the dialplan."""
    args = _parse_args(argv)
    agi = AgiChannel.start(stdin, stdout)
    try:
        api = _setting(args.api, agi, "FLOWAGENT_API", "FLOWAGENT_API_URL", DEFAULT_API)
        token = _setting(args.token, agi, "FLOWAGENT_TOKEN", "FLOWAGENT_API_TOKEN", "")
        if token == "CHANGE-ME":
            token = os.environ.get("FLOWAGENT_API_TOKEN", "")
        timeout_text = str(args.timeout or os.environ.get("FLOWAGENT_AGI_TIMEOUT", "") or "")
        try:
            timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT_S
        except ValueError:
            timeout = DEFAULT_TIMEOUT_S
        if args.mode == "after":
            return _after(agi, api, token, timeout)
        fallback = _setting(args.fallback, agi, "FLOWAGENT_FALLBACK", "FLOWAGENT_AGI_FALLBACK", "")
        return _setup(agi, api, token, timeout, args.flow, fallback)
    except AgiHangup:
        return 0


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """A hard bound on the whole HTTP exchange: urllib's timeout is per socket operation, so a
    server trickling bytes could otherwise hold the caller for several timeouts in a row."""
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is \
        threading.main_thread()
    if not use_alarm:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _setup(agi: AgiChannel, api: str, token: str, timeout: float, flow: str,
           fallback: str) -> int:
    call_uuid = str(uuidlib.uuid4())
    agi.set_variable("FLOWAGENT_UUID", call_uuid)
    metadata = call_metadata(agi)
    try:
        with _deadline(timeout):
            reply = post_call(api, token, call_uuid, metadata, flow, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        status = getattr(exc, "code", None)
        why = f"HTTP {status}" if status else str(reason)
        agi.verbose(f"flowagent: registration failed ({why}); fallback {fallback or '(none)'}")
        agi.set_variable("FLOWAGENT_STATUS", "failed")
        if fallback:
            agi.set_variable("FLOWAGENT_FALLBACK", fallback)
        return 0
    chosen = reply.get("flow") if isinstance(reply.get("flow"), str) else ""
    agi.set_variable("FLOWAGENT_FLOW", str(chosen or flow))
    agi.set_variable("FLOWAGENT_STATUS", "ok")
    return 0


def _after(agi: AgiChannel, api: str, token: str, timeout: float) -> int:
    call_uuid = agi.get_variable("FLOWAGENT_UUID") or ""
    dest = ""
    if call_uuid:
        try:
            with _deadline(timeout):
                dest = get_transfer(api, token, call_uuid, timeout)
        except (urllib.error.URLError, OSError, TimeoutError):
            dest = ""
    if dest and not _DEST.match(dest):
        agi.verbose(f"flowagent: ignoring malformed transfer destination {dest[:60]!r}")
        dest = ""
    agi.set_variable("FLOWAGENT_DEST", dest)
    return 0


def main() -> None:
    """Console script `flowagent-agi`."""
    sys.exit(run(sys.argv[1:], sys.stdin, sys.stdout))


if __name__ == "__main__":
    main()
