"""`flowagent serve [FLOW_OR_ROUTES]`: the AudioSocket server and the control API in one process.

FLOW_OR_ROUTES is a flow file, or a routes file:

    default: flows/removals.yaml          # calls whose number has no route
    numbers:
      "+441134960000": flows/leeds.yaml    # DID -> flow (paths relative to this file)

Providers come from each flow's `providers:` section, else the embedded offline stack (whisper +
piper + silero). Webhooks: `FLOWAGENT_WEBHOOK_URL` / `FLOWAGENT_WEBHOOK_SECRET` (AVR's
`WEBHOOK_URL` / `WEBHOOK_SECRET` are read too). API token: `FLOWAGENT_API_TOKEN`, else one is
generated and printed. Logs go to stderr. SIGTERM/SIGINT drain: no new calls, running calls
finish, records and webhooks are flushed, then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

log = logging.getLogger("flowagent.serve")


def _hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what} must be HOST:PORT, for example 127.0.0.1:9099 (got {value!r}).")
    return host or "127.0.0.1", int(port)


def run(flow_or_routes: Path, *, audiosocket: str, http: str, db: Path) -> int:
    con = Console(stderr=True)
    logging.basicConfig(
        level=os.environ.get("FLOWAGENT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        as_host, as_port = _hostport(audiosocket, "--audiosocket")
        http_host, http_port = _hostport(http, "--http")
    except ValueError as exc:
        con.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    if not flow_or_routes.exists():
        con.print(f"[red]{escape(str(flow_or_routes))}: no such file. Give a flow file or a routes"
                  " file (default flows/removals.yaml).[/red]")
        return 2
    from flowagent.runner.runtime import new_event_loop

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(
                _serve(con, flow_or_routes, as_host, as_port, http_host, http_port, db)
            )
    except KeyboardInterrupt:
        return 0


async def _serve(con: Console, source: Path, as_host: str, as_port: int, http_host: str,
                 http_port: int, db: Path) -> int:
    from flowagent.runner.api import create_app, ensure_token, start_api
    from flowagent.runner.runtime import FlowLoadError, FlowSet, ProviderPool, Runtime, tune_gc
    from flowagent.runner.server import AudioSocketServer
    from flowagent.runner.store import CallStore
    from flowagent.runner.webhooks import WebhookConfig, Webhooks

    flows = FlowSet(ProviderPool())
    try:
        with con.status("Loading flows and providers..."):
            await asyncio.to_thread(flows.load, source)
    except FlowLoadError as exc:
        con.print(f"[red]Cannot serve:[/red] {escape(str(exc))}")
        return 1
    hooks = Webhooks(WebhookConfig(
        url=os.environ.get("FLOWAGENT_WEBHOOK_URL") or os.environ.get("WEBHOOK_URL", ""),
        secret=os.environ.get("FLOWAGENT_WEBHOOK_SECRET") or os.environ.get("WEBHOOK_SECRET", ""),
        timeout_s=float(os.environ.get("WEBHOOK_TIMEOUT", "3000")) / 1000,
        retries=int(os.environ.get("WEBHOOK_RETRY", "2")),
    ))
    store = CallStore(db)
    rt = Runtime(flows, store, webhooks=hooks)
    tune_gc()
    token, generated = ensure_token(rt)
    server = AudioSocketServer(rt, as_host, as_port)
    try:
        await server.start()
    except OSError as exc:
        con.print(f"[red]Cannot listen for AudioSocket on {as_host}:{as_port}: "
                  f"{escape(exc.strerror or str(exc))}[/red]")
        return 1
    subapps = _web_ui(rt)
    try:
        runner, bound_http = await start_api(create_app(rt, subapps=subapps), http_host,
                                             http_port)
    except OSError as exc:
        await server.close()
        con.print(f"[red]Cannot listen for HTTP on {http_host}:{http_port}: "
                  f"{escape(exc.strerror or str(exc))}[/red]")
        return 1

    _summary(con, rt, server.address, (http_host, bound_http), db, token, generated, subapps)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    con.print(f"Draining: {server.active_calls} call(s) in progress; no new calls accepted.")
    await server.drain()
    await server.close()
    await runner.cleanup()
    store.close()
    con.print("Stopped; all call records written.")
    return 0


def _web_ui(rt: object) -> dict:
    """Mount the live web view at /ui when the graph work ships one (`flowagent.web.create_app`)."""
    try:
        from flowagent import web as webui

        factory = getattr(webui, "create_app", None)
        if factory is None:
            return {}
        return {"/ui": factory(rt)}
    except Exception as exc:  # the UI is optional; the agent must serve without it
        log.warning("web UI not mounted: %s", exc)
        return {}


def _summary(con: Console, rt: object, as_addr: tuple[str, int], http_addr: tuple[str, int],
             db: Path, token: str, generated: bool, subapps: dict) -> None:
    from flowagent.runner.runtime import Runtime

    assert isinstance(rt, Runtime)
    table = Table(title="flowagent serve", show_header=True, header_style="bold")
    table.add_column("number")
    table.add_column("flow")
    table.add_column("file")
    table.add_column("providers")
    flows = rt.flows
    rows = [("(default)", flows.default)] if flows.default else []
    rows += list(flows.routes.items())
    for number, entry in rows:
        if entry is None:
            continue
        prov = ", ".join(f"{k}={v}" for k, v in entry.providers.names.items())
        table.add_row(number, entry.name, str(entry.path), prov)
    con.print(table)
    con.print(f"AudioSocket: [bold]{as_addr[0]}:{as_addr[1]}[/bold]   "
              f"HTTP API: [bold]http://{http_addr[0]}:{http_addr[1]}[/bold]"
              + ("  (web view at /ui)" if subapps else ""))
    con.print(f"Call records: {db}   Webhooks: {rt.webhooks.config.url or 'off'}")
    if generated:
        con.print(f"API token (set FLOWAGENT_API_TOKEN to choose one): [bold]{token}[/bold]")
    con.print("Dialplan: same => n,AudioSocket(${UUID},"
              f"{as_addr[0]}:{as_addr[1]})   Ctrl-C or SIGTERM drains and stops.")
