"""`flowagent serve [FLOW_OR_ROUTES]`: the AudioSocket server and the control API in one process.

With `--websocket HOST:PORT` (or FLOWAGENT_WEBSOCKET) the same process also takes calls from
Asterisk's chan_websocket (`Dial(WebSocket/flowagent/...)`, path /chan_websocket, port 9098 in
the templates of `flowagent asterisk config --part websocket`); the dialplan chooses the
transport per call, and both run the same flows.

FLOW_OR_ROUTES is a flow file, or a routes file:

    default: flows/removals.yaml          # calls whose number has no route
    numbers:
      "+441134960000": flows/leeds.yaml    # DID -> flow (paths relative to this file)

Providers come from each flow's `providers:` section, else the embedded offline stack (whisper +
piper + silero). Webhooks: `FLOWAGENT_WEBHOOK_URL` / `FLOWAGENT_WEBHOOK_SECRET` (AVR's
`WEBHOOK_URL` / `WEBHOOK_SECRET` are read too). API token: `FLOWAGENT_API_TOKEN`, else one is
generated and printed. Logs go to stderr (`flowagent.logging`: JSON lines with the call UUID
unless stderr is a terminal; FLOWAGENT_LOG_LEVEL / FLOWAGENT_LOG_FORMAT). SIGTERM/SIGINT drain:
no new calls, running calls finish, records and webhooks are flushed, then the process exits.
SIGHUP reloads changed flow files at once (they are also polled every `--reload-interval`
seconds, default 2; 0 = only on SIGHUP).

The offline models the served flows need (`stack.models_for`: whisper / piper / silero when
named or left as the default, MiniLM with whisper) are loaded and warmed up once before the
first call, and no other (a Deepgram + Cartesia flow never imports Whisper, Piper or MiniLM);
a hot reload that brings a flow needing one more loads it then (`LocalModels`). With MiniLM,
flows' intents get its embedding scorer. AMI
(FLOWAGENT_AMI_HOST...) is connected when configured, for transfers by redirect.

Static prompts are made ready before calls are accepted (`--warm before`, the default) or while
serving (`--warm background`). Their audio is kept on disk (`runner/prompt_cache.py`, default
`prompt-cache/` beside `--db`), so a restart or reload synthesises only prompts it has never
made; the summary says how many came from disk. The vectors of intent examples are kept in
`embeddings/` inside that directory (`understanding/embedding_cache.py`; off with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from flowagent.asterisk.ami import AmiClient
    from flowagent.runner.prompt_cache import PromptDiskCache, WarmStats

log = logging.getLogger("flowagent.serve")


def _hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what} must be HOST:PORT, for example 127.0.0.1:9099 (got {value!r}).")
    return host or "127.0.0.1", int(port)


#: one sentence, with the README's install command
MISSING_STACK = (
    "The offline speech stack is not installed (missing: {missing}); install it with the README"
    " command: pip install -e '.[local]' (from the clone) or pip install 'flowagent-*.whl[local]'"
)
#: provider deadline with the offline stack. The runtime's 1.5 s is for cloud providers that may
#: hang; local Whisper/Piper never hang, they only slow down when the CPU is busy (measured: Piper
#: took ~2.2 s for a long confirmation while a load test ran on this 2-core machine), and
#: sending the caller to a person for that is worse than a second more of waiting.
LOCAL_PROVIDER_TIMEOUT_S = 4.0


#: `--warm` values: prompts ready before the first call is accepted, or made while serving
WARM_MODES = ("before", "background")


@dataclass
class PromptSettings:
    """Where static prompt audio is kept between runs, how big it may grow, and whether calls
    wait for it (see `flowagent.runner.prompt_cache`)."""

    directory: Path | None
    max_mb: float
    warm: str = "before"


def prompt_settings(db: Path, directory: str | None = None, max_mb: float | None = None,
                    warm: str | None = None) -> PromptSettings:
    """Options win over the environment (FLOWAGENT_PROMPT_CACHE_DIR, _MB, FLOWAGENT_PROMPT_WARM);
    the default directory is `prompt-cache/` beside the call-record database."""
    from flowagent.runner.prompt_cache import DEFAULT_MAX_MB

    raw_dir = directory if directory is not None else os.environ.get(
        "FLOWAGENT_PROMPT_CACHE_DIR", "")
    if raw_dir.strip().lower() in ("off", "none", "0"):
        folder: Path | None = None
    elif raw_dir.strip():
        folder = Path(raw_dir.strip()).expanduser()
    else:
        folder = db.expanduser().parent / "prompt-cache"
    if max_mb is None:
        env_mb = os.environ.get("FLOWAGENT_PROMPT_CACHE_MB", "").strip()
        try:
            max_mb = float(env_mb) if env_mb else DEFAULT_MAX_MB
        except ValueError:
            raise ValueError(f"FLOWAGENT_PROMPT_CACHE_MB must be a number of megabytes"
                             f" (got {env_mb!r}).") from None
    mode = (warm or os.environ.get("FLOWAGENT_PROMPT_WARM", "") or "before").strip().lower()
    if mode not in WARM_MODES:
        raise ValueError(f"--warm must be 'before' or 'background' (got {mode!r}).")
    return PromptSettings(folder, max(0.0, float(max_mb)), mode)


def run(flow_or_routes: Path, *, audiosocket: str, http: str, db: Path,
        store: str | None = None, node_id: str | None = None,
        drain_timeout_s: float | None = None,
        websocket: str | None = None, reload_interval_s: float = 2.0,
        prompt_cache: str | None = None,
        prompt_cache_mb: float | None = None, warm: str | None = None,
        record_audio: bool | None = None, retention_days: float | None = None) -> int:
    from flowagent.logging import setup_logging

    con = Console(stderr=True)
    setup_logging()
    try:
        http_host, http_port = _hostport(http, "--http")
        ws = _hostport(websocket, "--websocket") if websocket else None
        as_addr = None if audiosocket.strip().lower() == "off" else _hostport(
            audiosocket, "--audiosocket")
        if as_addr is None and ws is None:
            raise ValueError("--audiosocket off needs --websocket HOST:PORT, or flowagent would "
                             "take no calls.")
        prompts = prompt_settings(db, prompt_cache, prompt_cache_mb, warm)
        from flowagent.runner.audio_recording import serve_options

        recording = serve_options(record_audio, retention_days)  # (all calls?, retention days)
        cluster = cluster_settings(store, db, node_id, _node_port(as_addr, ws))
        if drain_timeout_s is not None:
            if drain_timeout_s < 0:
                raise ValueError(f"--drain-timeout must be 0 or more seconds, not "
                                 f"{drain_timeout_s:g}.")
            cluster = dataclasses.replace(cluster, drain_timeout_s=drain_timeout_s)
    except ValueError as exc:
        con.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    if not flow_or_routes.exists():
        con.print(f"[red]{escape(str(flow_or_routes))}: no such file. Give a flow file or a routes"
                  " file (default flows/removals.yaml).[/red]")
        return 2
    from flowagent.server.runtime import new_event_loop

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(
                _serve(con, flow_or_routes, as_addr, http_host, http_port, db,
                       max(0.0, reload_interval_s), prompts, recording, cluster, ws)
            )
    except KeyboardInterrupt:
        return 0


@dataclass
class ClusterSettings:
    """Where records go and who this node is among those sharing the store."""

    store: str
    node_id: str
    heartbeat_s: float
    lost_after_s: float
    #: records the store could not take at shutdown are kept in the first of these that can
    #: be written (beside --db, else the working directory: a full disk under the database
    #: must not take them too), and queued again at the next start
    spill: tuple[Path, ...]
    #: how long SIGTERM waits for calls in progress before ending them (a second SIGTERM or
    #: Ctrl-C ends them at once); below systemd's TimeoutStopSec=300 in our unit files, so
    #: serve ends the calls (records written) before systemd would SIGKILL it
    drain_timeout_s: float = 270.0


def cluster_settings(store: str | None, db: Path, node_id: str | None,
                     as_port: int) -> ClusterSettings:
    """`--store`, else FLOWAGENT_DATABASE_URL, else `--db`; `--node-id`, else
    FLOWAGENT_NODE_ID, else host:port. FLOWAGENT_HEARTBEAT_S / FLOWAGENT_NODE_LOST_AFTER_S
    tune the heart-beat (defaults 2 s and 10 s)."""
    from flowagent.server.cluster import (
        HEARTBEAT_S,
        LOST_AFTER_S,
        default_node_id,
        env_seconds,
    )

    where = (store or os.environ.get("FLOWAGENT_DATABASE_URL", "") or str(db)).strip()
    node = (node_id or "").strip() or default_node_id(as_port)
    if not all(c.isalnum() or c in "-_.:@" for c in node):
        raise ValueError(f"--node-id may use letters, digits and - _ . : @ (got {node!r}).")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)
    state_dir = db.expanduser().parent
    return ClusterSettings(where, node, env_seconds("FLOWAGENT_HEARTBEAT_S", HEARTBEAT_S),
                           env_seconds("FLOWAGENT_NODE_LOST_AFTER_S", LOST_AFTER_S),
                           tuple(dict.fromkeys(d.resolve() / f"unwritten-records-{safe}.jsonl"
                                               for d in (state_dir, Path.cwd()))))


async def _serve(con: Console, source: Path, audiosocket: tuple[str, int] | None, http_host: str,
                 http_port: int, db: Path, reload_interval_s: float = 2.0,
                 prompts: PromptSettings | None = None,
                 recording: tuple[bool, float] = (False, 0.0),
                 cluster: ClusterSettings | None = None,
                 websocket: tuple[str, int] | None = None) -> int:
    from flowagent.server.call_store import StoreUnavailable, display_url
    from flowagent.server.stores import open_store

    cluster = cluster or cluster_settings(None, db, None, _node_port(audiosocket, websocket))
    try:  # an unreachable database stops start-up here, with one sentence
        with con.status(f"Opening the call-record store {display_url(cluster.store)}..."):
            store = await open_store(cluster.store)
    except StoreUnavailable as exc:
        con.print(f"[red]Cannot serve:[/red] {escape(str(exc))}")
        return 1
    try:
        return await _serve_with_store(con, source, audiosocket, http_host, http_port, db,
                                       reload_interval_s, prompts, recording, cluster, store,
                                       websocket)
    finally:
        await store.close()


def _node_port(audiosocket: tuple[str, int] | None, websocket: tuple[str, int] | None) -> int:
    """The port that names this node by default: AudioSocket's, else chan_websocket's."""
    return (audiosocket or websocket or ("", 0))[1]


async def _serve_with_store(con: Console, source: Path, audiosocket: tuple[str, int] | None,
                            http_host: str, http_port: int, db: Path, reload_interval_s: float,
                            prompts: PromptSettings | None, recording: tuple[bool, float],
                            cluster: ClusterSettings, store: Any,
                            websocket: tuple[str, int] | None = None) -> int:
    from flowagent.runner.prompt_cache import cache_from_settings
    from flowagent.runner.services import RuntimeConfig
    from flowagent.server.audiosocket_server import AudioSocketServer
    from flowagent.server.call_store import StoreUnavailable
    from flowagent.server.control_api import create_app, ensure_token, start_api
    from flowagent.server.runtime import (
        FlowLoadError,
        FlowSet,
        ProviderPool,
        Runtime,
        tune_gc,
    )
    from flowagent.server.webhooks import WebhookConfig, Webhooks

    # what can be wrong in a second is checked before the models load (2-5 s): a broken flow
    # or a port already taken is said at once
    problem = await asyncio.to_thread(preflight, source, audiosocket,
                                      (http_host, http_port), websocket)
    if problem is not None:
        con.print(f"[red]Cannot serve:[/red] {escape(problem)}")
        return 1
    dates_warm = asyncio.create_task(asyncio.to_thread(_warm_dates))
    flows = FlowSet(ProviderPool())
    prompts = prompts or prompt_settings(db)
    flows.prompt_disk = cache_from_settings(prompts.directory, prompts.max_mb)
    config = RuntimeConfig()
    with contextlib.suppress(ValueError):  # how often ended calls are freed (call_garbage.py)
        config.gc_every_calls = int(os.environ.get("FLOWAGENT_GC_EVERY_CALLS",
                                                   config.gc_every_calls))
    needs = _local_needs(source)
    if needs:
        from flowagent.providers.local.stack import LocalModels, missing_packages
        from flowagent.understanding.embedding_cache import cache_beside_prompts

        missing = missing_packages(needs)
        if missing:
            con.print(f"[red]{escape(MISSING_STACK.format(missing=', '.join(missing)))}.[/red]")
            return 2
        models = LocalModels(embedding_disk=cache_beside_prompts(flows.prompt_disk))
        try:
            names = ", ".join(m for m in ("whisper", "piper", "silero", "minilm") if m in needs)
            with con.status(f"Loading the offline speech stack ({names})..."):
                stack = await asyncio.to_thread(models.ensure, needs)
        except Exception as exc:
            con.print(f"[red]The offline speech stack could not start: {escape(str(exc))}[/red]")
            return 2
        if stack is not None:
            log.info("%s", stack.summary())
            con.print(stack.summary())
        flows.local_models = models
        flows.intent_scorer = models.scorer
        if needs & {"whisper", "piper"}:
            config.provider_timeout_s = max(config.provider_timeout_s, LOCAL_PROVIDER_TIMEOUT_S)
    else:
        from flowagent.providers.local.stack import LocalModels
        from flowagent.understanding.embedding_cache import cache_beside_prompts

        # a reload may bring a flow that hears or speaks offline: its models load then
        flows.local_models = LocalModels(embedding_disk=cache_beside_prompts(flows.prompt_disk))
    try:
        with con.status("Loading flows and providers..."):
            await asyncio.to_thread(flows.load, source)
    except FlowLoadError as exc:
        con.print(f"[red]Cannot serve:[/red] {escape(str(exc))}")
        return 1
    for path, why in flows.errors.items():  # a routes file's flow that failed; others serve
        log.warning("not serving %s: %s", path, why)
        con.print(f"[yellow]Not serving {escape(path.name)}[/yellow] (its calls go to the "
                  f"default flow): {escape(why)}")
    ami = None
    try:
        ami = await _connect_ami()
    except Exception as exc:
        con.print(f"[red]Cannot connect to the Asterisk manager (AMI): {escape(str(exc))}[/red]")
        return 1
    hooks = Webhooks(WebhookConfig(
        url=os.environ.get("FLOWAGENT_WEBHOOK_URL") or os.environ.get("WEBHOOK_URL", ""),
        secret=os.environ.get("FLOWAGENT_WEBHOOK_SECRET") or os.environ.get("WEBHOOK_SECRET", ""),
        timeout_s=float(os.environ.get("WEBHOOK_TIMEOUT", "3000")) / 1000,
        retries=int(os.environ.get("WEBHOOK_RETRY", "2")),
    ))
    config.record_audio = recording[0]  # flows may still opt in with settings.recording
    config.heartbeat_s = cluster.heartbeat_s
    config.node_lost_after_s = cluster.lost_after_s
    rt = Runtime(flows, store, webhooks=hooks, config=config, node_id=cluster.node_id)
    for spilled in cluster.spill:
        replayed = rt.records.load_spill(spilled)
        if replayed:
            con.print(f"{replayed} call record(s) the last run could not write are queued"
                      f" again from {spilled}")
    from flowagent.runner import audio_recording as rec

    # start-up repair of recordings a killed process left, then the retention sweep (daily)
    sweeper = asyncio.create_task(rec.retention_loop(rec.recordings_dir(rt), recording[1]))
    if recording[0]:
        con.print(f"Recording every call's audio to {rec.recordings_dir(rt)}")
    from flowagent.asterisk.transfer import Transferer

    rt.transferer = Transferer.from_env(ami)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(dates_warm, 10)
    warm_stats = None
    if prompts.warm == "before":
        warm_stats = await _prewarm_prompts(con, flows)
    # (with --warm background the server's pre-warm task fills the cache while calls are served;
    # a prompt not ready yet is synthesised by the call that needs it)
    tune_gc()
    token, generated = ensure_token(rt)
    as_host, as_port = audiosocket or ("127.0.0.1", 0)
    # off (--audiosocket off): it listens for nothing but still reloads flows and drains
    server = AudioSocketServer(rt, as_host, as_port, prewarm=True, listen=audiosocket is not None,
                               reload_interval_s=reload_interval_s)
    try:
        await server.start()
    except StoreUnavailable as exc:
        con.print(f"[red]Cannot serve:[/red] {escape(str(exc))}")
        await _close_ami(ami)
        return 1
    except OSError as exc:
        con.print(f"[red]Cannot listen for AudioSocket on {as_host}:{as_port}: "
                  f"{escape(exc.strerror or str(exc))}[/red]")
        await _close_ami(ami)
        return 1
    ws_server = None
    if websocket is not None:
        from flowagent.server.websocket_server import WebSocketServer

        ws_server = WebSocketServer(rt, *websocket)
        try:
            await ws_server.start()
        except OSError as exc:
            con.print(f"[red]Cannot listen for chan_websocket on {websocket[0]}:{websocket[1]}: "
                      f"{escape(exc.strerror or str(exc))}[/red]")
            await server.close()
            await _close_ami(ami)
            return 1
    subapps = _web_ui(rt)
    try:
        from flowagent.asterisk.routes import add_routes

        # the web UI checks the token itself (its pages are opened in a browser)
        app = create_app(rt, subapps=subapps, public_prefixes=("/ui",))
        add_routes(app, rt)  # POST /asterisk/call (CURL dialplan), GET /calls/{uuid}/transfer
        runner, bound_http = await start_api(app, http_host, http_port)
    except OSError as exc:
        if ws_server is not None:
            await ws_server.close()
        await server.close()
        await _close_ami(ami)
        con.print(f"[red]Cannot listen for HTTP on {http_host}:{http_port}: "
                  f"{escape(exc.strerror or str(exc))}[/red]")
        return 1

    _summary(con, rt, server.address if audiosocket else None, (http_host, bound_http),
             store.where, token, generated, subapps,
             ws_server.address if ws_server is not None else None)
    _prompt_summary(con, flows.prompt_disk, prompts, warm_stats)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    await stop.wait()
    in_progress = server.active_calls + (ws_server.active_calls if ws_server else 0)
    con.print(f"Draining: {in_progress} call(s) in progress; no new calls accepted (up to "
              f"{cluster.drain_timeout_s:g} s; a second Ctrl-C or SIGTERM ends them now).")
    await _drain(con, stop, cluster.drain_timeout_s,
                 [server] if ws_server is None else [server, ws_server])
    if ws_server is not None:
        await ws_server.close()
    await server.close()
    await runner.cleanup()
    await _close_ami(ami)
    sweeper.cancel()
    return _stopped(con, rt, server.unwritten, cluster.spill)


async def _drain(con: Console, stop: asyncio.Event, timeout_s: float, servers: list[Any]) -> None:
    """Both listeners drain at once under one deadline (calls still running then are ended,
    their records written); a second signal ends them at once."""
    stop.clear()
    drained = asyncio.ensure_future(asyncio.gather(*(s.drain(timeout_s) for s in servers)))
    again = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({drained, again}, return_when=asyncio.FIRST_COMPLETED)
        if not drained.done():
            con.print("Second signal: ending the calls in progress now (their records are "
                      "written).")
            drained.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drained
    finally:
        again.cancel()


def _stopped(con: Console, rt: Any, unwritten: int, spill: tuple[Path, ...]) -> int:
    """The last line says what happened to the records (and webhooks); exit 0 only when every
    call record reached the store."""
    outbox = ""
    delivery = rt.webhooks.delivery
    if delivery is not None and delivery.last_error:
        outbox = " Webhook events not yet delivered stay in the store's outbox for any node."
    if unwritten == 0:
        con.print("Stopped; all call records written." + outbox)
        return 0
    reason = rt.records.last_error or "the store did not answer"
    failures: list[str] = []
    for path in spill:
        try:
            rt.records.spill(path)
        except OSError as exc:
            failures.append(f"{path}: {exc.strerror or exc}")
            continue
        con.print(f"[yellow]Stopped; {unwritten} call record(s) could not be written to the"
                  f" store ({reason}). They are kept in {path} and written at the next"
                  " start.[/yellow]")
        return 1
    con.print(f"[red]Stopped; {unwritten} call record(s) could NOT be written ({reason}), nor"
              f" kept on disk ({'; '.join(failures)}): they are lost.[/red]")
    return 1


def preflight(source: Path, audiosocket: tuple[str, int] | None, http: tuple[str, int],
              websocket: tuple[str, int] | None = None) -> str | None:
    """Why serving cannot start, checked in well under a second, or None: each flow compiles
    (validation included) and both listening ports are free. Run before the offline models
    load, so a typo or a second `serve` on the same port is reported at once."""
    import socket

    from flowagent.flow.compiler import FlowInvalid, load_flow

    for path in _flow_files(source):
        try:
            load_flow(path)
        except FlowInvalid as exc:
            return str(exc)
        except OSError as exc:
            return f"{path}: cannot read the flow file ({exc.strerror})."
    listeners = [("HTTP", http)]
    if audiosocket is not None:
        listeners.insert(0, ("AudioSocket", audiosocket))
    if websocket is not None:
        listeners.append(("WebSocket", websocket))
    for what, (host, port) in listeners:
        if port == 0:
            continue
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"Cannot listen for {what} on {host}:{port}: {exc.strerror or exc}."
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                hint = (" (is another `flowagent serve` running? Stop it, or choose another port"
                        f" with --{what.lower()} or FLOWAGENT_{what.upper()}.)"
                        if exc.errno in (98, 48) else "")
                return f"Cannot listen for {what} on {host}:{port}: {exc.strerror or exc}{hint}"
    return None


def web_address(http_addr: tuple[str, int], token: str, show_token: bool) -> str:
    """The exact address of the web view to open in a browser. The token is in it when it was
    generated or the output is a terminal; otherwise (a log) its place is named instead."""
    host = http_addr[0]
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    shown = token if show_token else "$FLOWAGENT_API_TOKEN"
    return f"http://{host}:{http_addr[1]}/ui/?token={shown}"


async def _prewarm_prompts(con: Console, flows: object, limit_s: float = 60.0) -> WarmStats:
    """Make every flow's static prompts ready before the first call is accepted (from the disk
    cache when possible; the rest synthesised, concurrently where the provider allows): done in
    the background instead, it competed with the first calls for the (one) TTS thread and their
    prompts missed the provider deadline. Past `limit_s` the rest is left to the server's
    background pre-warm. Returns the summed `WarmStats`."""
    import time

    from flowagent.runner.prompt_cache import WarmStats

    started = time.monotonic()
    total = WarmStats()
    entries = list(getattr(flows, "by_path", {}).values())
    latest: dict[int, WarmStats] = {}  # per flow: its warm-up's figures so far (even if cut off)
    with con.status("Preparing the flows' static prompts...") as status:
        for i, entry in enumerate(entries):
            left = limit_s - (time.monotonic() - started)
            if left <= 0:
                break
            flow = f" for {entry.name}" if len(entries) > 1 else ""

            def show(st: WarmStats, flow: str = flow, i: int = i) -> None:
                latest[i] = st
                status.update(
                    f"Preparing static prompts{flow}: {st.done}/{st.prompts}"
                    f" ({st.from_disk} from disk, {st.synthesised} synthesised,"
                    f" {st.seconds:.1f} s)" + (f" [flow {i + 1}/{len(entries)}]"
                                               if len(entries) > 1 else ""))

            try:
                await asyncio.wait_for(entry.prewarm(on_progress=show), left)
            except TimeoutError:
                log.warning("prompt pre-warm still running after %.0f s; continuing in the"
                            " background", limit_s)
            except Exception:
                log.exception("prompt pre-warm failed for %s", entry.name)
            if i in latest:
                total.add(latest[i])
    total.seconds = time.monotonic() - started
    log.info("static prompts ready: %s", total.describe())
    return total


def _prompt_summary(con: Console, disk: PromptDiskCache | None, prompts: PromptSettings,
                    stats: WarmStats | None) -> None:
    """One line of the start-up summary: how the prompts were made and where they are kept."""
    if disk is None:
        where = "disk cache off"
    else:
        size = disk.size_bytes() / 2**20
        where = f"cache {disk.dir} ({size:.1f} of {prompts.max_mb:g} MB)"
    if stats is None:
        con.print(f"Static prompts: prepared in the background while serving; {where}")
    else:
        con.print(f"Static prompts: {stats.describe()}; {where}")


def _warm_dates() -> None:
    """Import dateparser now, so the first unusual date on a live call does not stall."""
    try:
        from flowagent.understanding.dates import warm_up

        warm_up()
    except Exception as exc:
        log.warning("date parser warm-up failed: %s", exc)


async def _connect_ami() -> AmiClient | None:
    """The AMI client when FLOWAGENT_AMI_HOST is set (a wrong secret stops start-up)."""
    from flowagent.asterisk.ami import ami_from_env

    ami = ami_from_env()
    if ami is None:
        return None
    await ami.connect()
    log.info("connected to the Asterisk manager interface (transfers by AMI redirect)")
    return ami


async def _close_ami(ami: AmiClient | None) -> None:
    if ami is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ami.close(), 5)


def _flow_files(source: Path) -> list[Path]:
    """The flow file, or the flows a routes file names."""
    from flowagent.server.runtime import _maybe_routes

    data = _maybe_routes(source)
    if data is None:
        return [source]
    files = [data.get("default"), *(data.get("numbers") or {}).values()]
    return [source.parent / str(f) for f in files if f]


def _local_needs(source: Path) -> set[str]:
    """The offline models (whisper, piper, silero, minilm) the served flows need, from their
    `providers:` sections (`stack.models_for`): a flow that only uses cloud providers needs none,
    and nothing it does not use is imported or loaded."""
    import yaml

    from flowagent.providers.local.stack import models_for

    needs: set[str] = set()
    for path in _flow_files(source):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # flows.load reports it with file:line:column
        section = (data.get("providers") or {}) if isinstance(data, dict) else {}
        if isinstance(section, dict):
            needs |= models_for(section, intents=bool(isinstance(data, dict)
                                                       and data.get("intents")))
    return needs


def _web_ui(rt: object) -> dict[str, Any]:
    """Mount the live web view at /ui (`flowagent.web.create_app`)."""
    try:
        from flowagent import web as webui

        return {"/ui": webui.create_app(rt)}
    except Exception as exc:  # the UI is optional; the agent must serve without it
        log.warning("web UI not mounted: %s", exc)
        return {}


def audiosocket_line(host: str, port: int) -> str:
    """The one dialplan line that sends a call to this server. `${UUID()}` is Asterisk's UUID
    function; `${UUID}` would be an unset variable, and AudioSocket() hangs up without one."""
    return f"same => n,AudioSocket(${{UUID()}},{host}:{port})"


def _summary(con: Console, rt: object, as_addr: tuple[str, int] | None,
             http_addr: tuple[str, int], db: str, token: str, generated: bool,
             subapps: dict[str, Any], ws_addr: tuple[str, int] | None = None) -> None:
    from flowagent.server.runtime import Runtime

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
    shown = f"{as_addr[0]}:{as_addr[1]}" if as_addr is not None else "off"
    con.print(f"AudioSocket: [bold]{shown}[/bold]   "
              f"HTTP API: [bold]http://{http_addr[0]}:{http_addr[1]}[/bold]")
    if ws_addr is not None:
        from flowagent.asterisk.chan_websocket import DEFAULT_PATH

        con.print(f"chan_websocket: [bold]ws://{ws_addr[0]}:{ws_addr[1]}{DEFAULT_PATH}[/bold]"
                  "   (flowagent asterisk config --part websocket)")
    con.print(f"Call records: {db}   Node: {rt.node_id}   Webhooks:"
              f" {rt.webhooks.config.url or 'off'}")
    if generated:
        con.print(f"API token (set FLOWAGENT_API_TOKEN to choose one): [bold]{token}[/bold]")
    if subapps:
        url = web_address(http_addr, token, generated or con.is_terminal)
        con.print(f"Watch calls live: [bold]{escape(url)}[/bold]", soft_wrap=True)
    if as_addr is not None:
        con.print(f"Dialplan: {audiosocket_line(as_addr[0], as_addr[1])}   "
                  "Ctrl-C or SIGTERM drains and stops.", markup=False, highlight=False)
    else:
        con.print("Ctrl-C or SIGTERM drains and stops.")
