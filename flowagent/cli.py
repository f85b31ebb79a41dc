"""The `flowagent` command line: a thin typer layer over library functions.

Each command only parses options and calls `flowagent.commands.<name>.run(...)`, imported lazily
so `flowagent validate` starts fast (no aiohttp, numpy or model imports unless the command needs
them). Every `run` returns the process exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def _flags_without_type(params: list[Any]) -> list[Any]:
    """On/off options show as flags in --help: typer (>= 0.29) labels every option with its
    type, so `--json` read `--json <bool>`, as if it took a value."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
    return params


class FlagCommand(TyperCommand):
    """A command whose --help shows on/off options as plain flags."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return _flags_without_type(super().get_params(ctx))


class FlagGroup(TyperGroup):
    """The same for the top level and `flowagent asterisk`."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return _flags_without_type(super().get_params(ctx))


app = typer.Typer(
    name="flowagent",
    help="Telephone voice agents on Asterisk from declarative YAML flow files.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    cls=FlagGroup,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"flowagent {version('flowagent')}")
        except PackageNotFoundError:  # run from a tree that was never installed
            print("flowagent (not installed)")
        raise typer.Exit(0)


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True,
        help="Print the version and exit."),
) -> None:
    """Telephone voice agents on Asterisk from declarative YAML flow files."""


@app.command(cls=FlagCommand)
def validate(
    files: list[Path] = typer.Argument(
        ..., help="Flow files, conversation tests (*.tests.yaml), tool answers (*.tools.yaml) "
        "or folders of them."),
    format: str = typer.Option("text", "--format", "-f", help="text or json"),
    no_env: bool = typer.Option(
        False, "--no-env", help="Do not warn about unset ${ENV} variables."
    ),
) -> None:
    """Check flows and their tests and tool answers, with file:line:column for every finding."""
    from flowagent.commands import validate as cmd

    raise typer.Exit(cmd.run(files, output_format=format, check_env=not no_env))


@app.command(cls=FlagCommand)
def schema(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to a file."),
) -> None:
    """Print the JSON Schema of the flow file format (for editors and CI)."""
    from flowagent.commands import schema as cmd

    raise typer.Exit(cmd.run(output))


@app.command(cls=FlagCommand)
def chat(
    flow: Path = typer.Argument(..., help="The flow file to talk to."),
    tool_responses: Path | None = typer.Option(
        None, "--tools", help="YAML file of canned tool responses (instead of real URLs)."
    ),
    caller: str = typer.Option("+447700900123", help="Caller ID to pretend to be."),
    did: str = typer.Option("", help="Number dialled (selects per-number context)."),
    show_state: bool = typer.Option(False, "--show-state", help="Show state and slots each turn."),
) -> None:
    """Talk to a flow by typing (/dtmf 1, /silence, /state, /slots, /restart, /quit)."""
    from flowagent.commands import chat as cmd

    raise typer.Exit(
        cmd.run(flow, tool_responses=tool_responses, caller=caller, did=did, show_state=show_state)
    )


@app.command("test", cls=FlagCommand)
def test_cmd(
    flow: Path = typer.Argument(..., help="The flow file."),
    tests: Path | None = typer.Argument(
        None, help="Conversation tests (default: FLOW with .tests.yaml)."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here."),
    name: str | None = typer.Option(None, "--name", "-k", help="Only tests whose name has this."),
) -> None:
    """Run a flow's conversation tests."""
    from flowagent.commands import test as cmd

    raise typer.Exit(cmd.run(flow, tests, junit=junit, name_filter=name))


@app.command(cls=FlagCommand)
def serve(
    flow_or_routes: Path = typer.Argument(
        Path("flows/removals.yaml"), help="A flow file, or a routes file mapping numbers to flows."
    ),
    audiosocket: str = typer.Option(
        "127.0.0.1:9099", "--audiosocket", envvar="FLOWAGENT_AUDIOSOCKET",
        help="HOST:PORT for Asterisk AudioSocket ('off': chan_websocket only, with --websocket)."
    ),
    http: str = typer.Option("127.0.0.1:8080", "--http", envvar="FLOWAGENT_HTTP",
                             help="HOST:PORT for the control API and the web view."),
    websocket: str | None = typer.Option(
        None, "--websocket", envvar="FLOWAGENT_WEBSOCKET",
        help="HOST:PORT to also accept calls from Asterisk's chan_websocket (Asterisk 20.18+ /"
        " 22.8+; path /chan_websocket; default port 9098). Off unless given.",
    ),
    db: Path = typer.Option(Path("flowagent.db"), "--db", help="SQLite file for call records."),
    store: str | None = typer.Option(
        None, "--store",
        help="Where call records go: a SQLite file, or postgresql://USER:PASSWORD@HOST/DB shared"
        " by several nodes (default: $FLOWAGENT_DATABASE_URL, else --db).",
    ),
    node_id: str | None = typer.Option(
        None, "--node-id",
        help="This node's name among those sharing the store (default: $FLOWAGENT_NODE_ID,"
        " else HOSTNAME:AUDIOSOCKET_PORT).",
    ),
    drain_timeout: float | None = typer.Option(
        None, "--drain-timeout", envvar="FLOWAGENT_DRAIN_TIMEOUT",
        help="Seconds SIGTERM waits for calls in progress before ending them (default 270; a"
        " second SIGTERM or Ctrl-C ends them at once).",
    ),
    reload_interval: float = typer.Option(
        2.0, "--reload-interval",
        help="Seconds between checks for changed flow files (0: only on SIGHUP).",
    ),
    prompt_cache: str | None = typer.Option(
        None, "--prompt-cache",
        help="Directory of synthesised prompt audio kept between runs ('off' to disable; "
        "default: $FLOWAGENT_PROMPT_CACHE_DIR or prompt-cache/ beside --db).",
    ),
    prompt_cache_mb: float | None = typer.Option(
        None, "--prompt-cache-mb",
        help="Size cap of the prompt cache in MB (default: $FLOWAGENT_PROMPT_CACHE_MB or 256).",
    ),
    warm: str | None = typer.Option(
        None, "--warm",
        help="'before': static prompts are ready before calls are accepted (default); "
        "'background': accept calls at once and prepare them meanwhile ($FLOWAGENT_PROMPT_WARM).",
    ),
    record_audio: bool | None = typer.Option(
        None, "--record-audio/--no-record-audio",
        help="Record every call's audio to recordings/ beside --db (default: "
        "$FLOWAGENT_RECORD_AUDIO, else off; a flow can opt in with settings.recording).",
    ),
    retention_days: float | None = typer.Option(
        None, "--recording-retention-days",
        help="Delete recordings older than this many days, at start-up and daily (default: "
        "$FLOWAGENT_RECORDING_RETENTION_DAYS, else keep them).",
    ),
) -> None:
    """Run the voice agent: AudioSocket server (+ chan_websocket listener) + control API."""
    from flowagent.commands import serve as cmd

    raise typer.Exit(cmd.run(flow_or_routes, audiosocket=audiosocket, http=http, db=db,
                             store=store, node_id=node_id, websocket=websocket,
                             drain_timeout_s=drain_timeout,
                             reload_interval_s=reload_interval, prompt_cache=prompt_cache,
                             prompt_cache_mb=prompt_cache_mb, warm=warm,
                             record_audio=record_audio, retention_days=retention_days))


@app.command(cls=FlagCommand)
def call(
    to: str = typer.Option("127.0.0.1:9099", "--to", help="AudioSocket HOST:PORT to call."),
    wav: list[Path] | None = typer.Option(None, "--wav", help="A caller turn from a WAV file."),
    say: list[str] | None = typer.Option(None, "--say", help="A caller turn, synthesised."),
    dtmf: str | None = typer.Option(None, "--dtmf", help="DTMF digits to send."),
    uuid: str | None = typer.Option(None, "--uuid", help="Call UUID (default: random)."),
    record: Path | None = typer.Option(None, "--record", help="Record the agent to WAV."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary at the end."),
    http: str | None = typer.Option(
        None, "--http", help="HOST:PORT of the control API, to show the agent's words."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="FLOWAGENT_API_TOKEN",
        help="The control API's token (the one serve printed), for --http."),
) -> None:
    """Play a caller over AudioSocket: turns from WAV files or synthesised text."""
    from flowagent.commands import call as cmd

    raise typer.Exit(
        cmd.run(to=to, wavs=wav or [], says=say or [], dtmf=dtmf, uuid=uuid, record=record,
                json_out=json_out, http=http, token=token)
    )


@app.command(cls=FlagCommand)
def demo(
    flow: Path | None = typer.Argument(
        None, help="The flow to serve (default: flows/removals.yaml, else the packaged copy)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary at the end."),
    stay: bool | None = typer.Option(
        None, "--stay/--no-stay",
        help="Keep the agent running after the call so its web pages work (default: on a "
        "terminal)."),
    http: str | None = typer.Option(
        None, "--http", help="HOST:PORT for the agent's control API and web view (default: a "
        "free loopback port)."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Keep the agent's log and call records in this folder "
        "(default: a temporary one, removed at the end)."),
) -> None:
    """A whole removals booking by voice, offline: fake pricing API, agent and caller in one."""
    from flowagent.commands import demo as cmd

    raise typer.Exit(cmd.run(flow=flow, json_out=json_out, stay=stay, http=http, keep=workdir))


@app.command(cls=FlagCommand)
def calls(
    uuid: str | None = typer.Argument(None, help="Show one call in full."),
    store: str | None = typer.Option(
        None, "--store", "--db",
        help="The call-record store: a SQLite file or a postgresql:// URL (default:"
        " $FLOWAGENT_DATABASE_URL, else flowagent.db).",
    ),
    limit: int = typer.Option(20, "--limit", "-n"),
    json_out: bool = typer.Option(False, "--json"),
    nodes: bool = typer.Option(False, "--nodes", help="List the nodes sharing the store."),
) -> None:
    """List call records of every node (those in progress first), or show one."""
    from flowagent.commands import calls as cmd

    raise typer.Exit(cmd.run(uuid=uuid, store=store or _default_store(), limit=limit,
                             json_out=json_out, nodes=nodes))


def _default_store() -> str:
    import os

    return os.environ.get("FLOWAGENT_DATABASE_URL", "").strip() or "flowagent.db"


@app.command(cls=FlagCommand)
def graph(
    flow: Path = typer.Argument(..., help="The flow file."),
    format: str = typer.Option("mermaid", "--format", "-f", help="mermaid, dot or html"),
    output: Path | None = typer.Option(None, "--output", "-o"),
) -> None:
    """Draw the flow: states, transitions, handlers, tools."""
    from flowagent.commands import graph as cmd

    raise typer.Exit(cmd.run(flow, output_format=format, output=output))


deploy_app = typer.Typer(help="Running several nodes: the load balancer's configuration.",
                         cls=FlagGroup)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("haproxy")
def deploy_haproxy(
    node: list[str] = typer.Option(
        ..., "--node", help="A serve node: [NAME=]HOST:AUDIOSOCKET_PORT:HTTP_PORT (repeat)."),
    listen: str = typer.Option("0.0.0.0:9099", "--listen",
                               help="Where HAProxy takes AudioSocket connections."),
    check_interval_ms: int = typer.Option(1000, "--check-interval-ms",
                                          help="How often each node's /healthz is checked."),
    fall: int = typer.Option(2, "--fall", help="Failed checks before a node gets no calls."),
    rise: int = typer.Option(2, "--rise", help="Passed checks before it gets calls again."),
    stats_socket: str = typer.Option("", "--stats-socket",
                                     help="An HAProxy admin socket path (optional)."),
    maxconn: int = typer.Option(20000, "--maxconn",
                                help="Most calls at once (HAProxy needs twice as many files)."),
) -> None:
    """Print an HAProxy config spreading AudioSocket calls over several serve nodes."""
    from flowagent.commands import deploy as cmd

    raise typer.Exit(cmd.run(node, listen=listen, check_ms=check_interval_ms, fall=fall,
                             rise=rise, stats=stats_socket, maxconn=maxconn))


asterisk_app = typer.Typer(help="Asterisk integration: dialplan, modules, systemd.",
                           cls=FlagGroup)
app.add_typer(asterisk_app, name="asterisk")


@asterisk_app.command("config", cls=FlagCommand)
def asterisk_config(
    host: str = typer.Option("127.0.0.1", help="Where flowagent runs, as Asterisk reaches it."),
    port: int = typer.Option(9099, help="AudioSocket port."),
    http_port: int = typer.Option(8080, help="Control API port."),
    did: str = typer.Option("_[+0-9].", help="Number (or pattern) that reaches the agent; the "
                            "default takes numbers with or without a leading +."),
    flow: str = typer.Option("removals", help="Flow name for this number."),
    part: str = typer.Option(
        "all", help="all, websocket (chan_websocket: modules, chan_websocket.conf, "
        "websocket_client.conf, dialplan), modules, extensions, agi, agi-script, wideband, "
        "manager, systemd, systemd-nodes, websocket-modules, websocket-channel, "
        "websocket-client, websocket-dialplan"
    ),
    http_host: str = typer.Option("", help="Control API host as Asterisk reaches it "
                                  "(default: --host)."),
    fallback: str = typer.Option("100", help="Extension callers reach when flowagent is down."),
    ws_port: int = typer.Option(9098, help="chan_websocket listener port (--part websocket)."),
    ami_port: int = typer.Option(5038, help="Manager interface (AMI) port (--part manager)."),
    ami_user: str = typer.Option("flowagent", help="AMI login name (--part manager)."),
    check: list[Path] | None = typer.Option(
        None, "--check", help="Read your existing modules.conf / extensions.conf and say what "
        "to add where (repeat for several files); prints nothing else."),
) -> None:
    """Print the Asterisk configuration snippets with your values filled in."""
    from flowagent.commands import asterisk as cmd

    if check:
        raise typer.Exit(cmd.check(check))
    raise typer.Exit(
        cmd.run(host=host, port=port, http_port=http_port, did=did, flow=flow, part=part,
                http_host=http_host, fallback=fallback, ws_port=ws_port, ami_port=ami_port,
                ami_user=ami_user)
    )


@app.command(cls=FlagCommand)
def doctor(
    flows: list[Path] | None = typer.Argument(None, help="Flows to check."),
    audiosocket: str | None = typer.Option(
        None, "--audiosocket", help="HOST:PORT flowagent serves AudioSocket on "
        "(default: $FLOWAGENT_AUDIOSOCKET or 127.0.0.1:9099)."
    ),
    http: str | None = typer.Option(
        None, "--http", help="HOST:PORT of the control API (default: $FLOWAGENT_HTTP or "
        "127.0.0.1:8080)."
    ),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds allowed per network check."),
) -> None:
    """The production checklist: flows, providers, models, ports, AMI, Asterisk."""
    from flowagent.commands import doctor as cmd

    raise typer.Exit(cmd.run(flows or [], audiosocket=audiosocket, http=http, timeout_s=timeout))


def _fast_path(argv: list[str]) -> int | None:
    """Run `validate` / `schema` without importing typer.

    Why: typer (>= 0.29) imports pydantic to coerce parameters, which costs ~250 ms on every run;
    `flowagent validate` runs in editors and CI on every save and must stay well under 0.5 s
    (PRODUCT.md §7). For plain invocations we parse the few options with argparse and call the
    same `run()` the typer command calls; anything unusual (--help, unknown options, a parse
    error) returns None and is handled by typer, so help and error messages stay identical.
    """
    if not argv or argv[0] not in ("validate", "schema"):
        return None
    if any(a in ("-h", "--help") for a in argv[1:]):
        return None
    import argparse

    class _QuietParser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:  # let typer word the error instead
            raise ValueError(message)

    parser = _QuietParser(prog=f"flowagent {argv[0]}", add_help=False)
    if argv[0] == "validate":
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--format", "-f", default="text")
        parser.add_argument("--no-env", action="store_true")
    else:
        parser.add_argument("--output", "-o", type=Path, default=None)
    try:
        ns, unknown = parser.parse_known_args(argv[1:])
    except (ValueError, SystemExit):
        return None
    if unknown:
        return None
    if argv[0] == "validate":
        from flowagent.commands import validate as validate_cmd

        return validate_cmd.run(ns.files, output_format=ns.format, check_env=not ns.no_env)
    from flowagent.commands import schema as schema_cmd

    return schema_cmd.run(ns.output)


def main() -> None:
    import sys

    code = _fast_path(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    app()


if __name__ == "__main__":
    main()
