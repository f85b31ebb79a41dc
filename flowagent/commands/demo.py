"""`flowagent demo`: a whole removals booking by voice, offline, in one command.

What the README's "Try it" did in three terminals: start the removals company's pricing and
booking API (faked on loopback, `flowagent.demo.removals_api`), serve the removals flow on the
embedded offline stack (`flowagent serve` as a child process, on free loopback ports, with a
fresh API token and its call records in a temporary folder), play the scripted caller over a
real AudioSocket connection (the same code as `flowagent call`: Piper speaks each line, the
server hears it through Silero and Whisper), then print the transcript as it happens, the call
record (slots, tool calls, outcome), what the API received, and the address of the call's web
page with its token.

On a terminal the agent keeps running afterwards so the web pages can be opened (Ctrl-C stops
it); elsewhere (CI, a pipe) it stops at once (`--stay` / `--no-stay` choose). `--json` prints
one object at the end instead of the tables. Exit 0 when the call ran to a hang-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

#: the caller's lines: words Whisper tiny.en hears reliably on an 8 kHz line (docs/demo.md)
SCRIPT = (
    "I'd like a quote please.",
    "L S six, one H T.",
    "M one, three B J.",
    "Next Friday.",
    "Three bedrooms.",
    "Yes.",
    "Yes please.",
    "Jane Smith.",
    "Oh one one three, four nine six, oh one two three.",
)
#: how long the agent may take to load its models and prepare its prompts
READY_WITHIN_S = 300.0


def demo_flow() -> Path:
    """flows/removals.yaml when run from the repository, else the copy in the package."""
    here = Path("flows") / "removals.yaml"
    if here.is_file():
        return here
    from flowagent.demo import DEMO_FLOW

    return DEMO_FLOW


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _wait_ready(con: Console, proc: subprocess.Popen[bytes], http: str, log: Path) -> str | None:
    """None once the agent answers /healthz; else why it did not."""
    deadline = time.monotonic() + READY_WITHIN_S
    with con.status("Starting the agent: loading the offline models and preparing its "
                    "prompts (about 20-60 s the first time)..."):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text("utf-8", errors="replace")[-3000:]
                return f"the agent stopped at start-up (exit {proc.returncode}):\n{tail}"
            with contextlib.suppress(urllib.error.URLError, OSError, TimeoutError), \
                    urllib.request.urlopen(f"http://{http}/healthz", timeout=2) as r:
                if r.status == 200:
                    return None
            time.sleep(0.5)
    return f"the agent was not ready after {READY_WITHIN_S:.0f} s (its log: {log})"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(*, flow: Path | None = None, json_out: bool = False, stay: bool | None = None,
        http: str | None = None, keep: Path | None = None) -> int:
    from flowagent.commands.call import Turn, _call
    from flowagent.demo.removals_api import ApiThread

    con = Console(stderr=json_out)
    flow = flow or demo_flow()
    if not flow.is_file():
        con.print(f"[red]{escape(str(flow))}: no such flow file.[/red]")
        return 2
    if stay is None:
        stay = sys.stdin.isatty() and sys.stdout.isatty() and not json_out
    token = secrets.token_urlsafe(12)
    work = Path(tempfile.mkdtemp(prefix="flowagent-demo-")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    http = http or f"127.0.0.1:{_free_port()}"
    audiosocket = f"127.0.0.1:{_free_port()}"
    api = ApiThread()
    api_port = api.start()
    env = dict(os.environ, FLOWAGENT_API_TOKEN=token,
               REMOVALS_API_URL=f"http://127.0.0.1:{api_port}")
    log = work / "serve.log"
    con.print(f"[dim]The removals company's API (a loopback fake): http://127.0.0.1:{api_port}"
              f"\nThe agent: {escape(str(flow))}, AudioSocket {audiosocket}, control API "
              f"http://{http} (log: {escape(str(log))})[/dim]")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowagent", "serve", str(flow.resolve()), "--audiosocket",
             audiosocket, "--http", http, "--db", str(work / "calls.db")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=work)
    try:
        problem = _wait_ready(con, proc, http, log)
        if problem is not None:
            con.print(f"[red]Demo stopped: {escape(problem)}[/red]")
            return 1
        host, _, port = audiosocket.rpartition(":")
        con.print("[bold]The call[/bold] (the caller's lines are spoken by Piper and heard "
                  "by the agent through Silero and Whisper):")
        summary = asyncio.run(_call(con, host, int(port), [Turn("say", s) for s in SCRIPT],
                                    None, None, http, token))
        record = _get_json(f"http://{http}/calls/{summary['uuid']}", token)
        web = f"http://{http}/ui/calls/{summary['uuid']}?token={token}"
        if json_out:
            print(json.dumps({**summary, "record": record, "web": web,
                              "api": {"quotes": api.api.quotes,
                                      "bookings": api.api.bookings}}, default=str))
        else:
            _print_record(con, record, api)
            con.print(f"\n[bold]Watch it on the web:[/bold] {escape(web)}", soft_wrap=True)
        if stay:
            con.print("The agent keeps running so the web pages work; Ctrl-C stops it.")
            with contextlib.suppress(KeyboardInterrupt):
                while proc.poll() is None:
                    time.sleep(0.5)
        return 0 if summary["hangup_by"] in ("agent", "caller") else 1
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(proc)
        api.stop()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _print_record(con: Console, record: dict[str, Any], api: Any) -> None:
    """The call record as `flowagent calls UUID` shows it, shortened, and what the API got."""
    con.print(f"\n[bold]The call record[/bold] ({escape(str(record.get('uuid', '')))}):")
    con.print(f"  outcome: {escape(str(record.get('outcome')))}, "
              f"{record.get('duration_s') or 0:.1f} s")
    heard = [t["text"] for t in record.get("transcript", []) if t.get("who") == "caller"]
    con.print("  what the agent heard: " + " · ".join(escape(h) for h in heard))
    con.print("  slots: " + escape(json.dumps(record.get("slots", {}), default=str)))
    for tool in record.get("tool_calls", []):
        con.print(f"  tool {escape(str(tool.get('tool')))}: "
                  f"{'ok' if tool.get('ok') else 'failed'}, HTTP {tool.get('status')}")
    con.print(f"  the removals API received {len(api.api.quotes)} quote request(s) and "
              f"{len(api.api.bookings)} booking(s)"
              + (f": {escape(json.dumps(api.api.bookings[-1]))}" if api.api.bookings else ""))
