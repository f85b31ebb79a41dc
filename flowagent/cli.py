"""The `flowagent` command line: a thin typer layer over library functions.

Each command only parses options and calls `flowagent.commands.<name>.run(...)`, imported lazily
so `flowagent validate` starts fast (no aiohttp, numpy or model imports unless the command needs
them). Every `run` returns the process exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="flowagent",
    help="Telephone voice agents on Asterisk from declarative YAML flow files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def validate(
    files: list[Path] = typer.Argument(..., help="Flow files to check."),
    format: str = typer.Option("text", "--format", "-f", help="text or json"),
    no_env: bool = typer.Option(False, "--no-env", help="Do not warn about unset ${ENV} variables."),
) -> None:
    """Check flow files: structure and meaning, with file:line:column for every finding."""
    from flowagent.commands import validate as cmd

    raise typer.Exit(cmd.run(files, output_format=format, check_env=not no_env))


@app.command()
def schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file."),
) -> None:
    """Print the JSON Schema of the flow file format (for editors and CI)."""
    from flowagent.commands import schema as cmd

    raise typer.Exit(cmd.run(output))


@app.command()
def chat(
    flow: Path = typer.Argument(..., help="The flow file to talk to."),
    tool_responses: Optional[Path] = typer.Option(
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


@app.command("test")
def test_cmd(
    flow: Path = typer.Argument(..., help="The flow file."),
    tests: Optional[Path] = typer.Argument(
        None, help="Conversation tests (default: FLOW with .tests.yaml)."
    ),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML here."),
    name: Optional[str] = typer.Option(None, "--name", "-k", help="Only tests whose name has this."),
) -> None:
    """Run a flow's conversation tests."""
    from flowagent.commands import test as cmd

    raise typer.Exit(cmd.run(flow, tests, junit=junit, name_filter=name))


@app.command()
def serve(
    flow_or_routes: Path = typer.Argument(
        Path("flows/removals.yaml"), help="A flow file, or a routes file mapping numbers to flows."
    ),
    audiosocket: str = typer.Option(
        "127.0.0.1:9099", "--audiosocket", help="HOST:PORT for Asterisk AudioSocket."
    ),
    http: str = typer.Option("127.0.0.1:8080", "--http", help="HOST:PORT for the control API."),
    db: Path = typer.Option(Path("flowagent.db"), "--db", help="SQLite file for call records."),
) -> None:
    """Run the voice agent: AudioSocket server + control API."""
    from flowagent.commands import serve as cmd

    raise typer.Exit(cmd.run(flow_or_routes, audiosocket=audiosocket, http=http, db=db))


@app.command()
def call(
    to: str = typer.Option("127.0.0.1:9099", "--to", help="AudioSocket HOST:PORT to call."),
    wav: Optional[list[Path]] = typer.Option(None, "--wav", help="A caller turn from a WAV file."),
    say: Optional[list[str]] = typer.Option(None, "--say", help="A caller turn, synthesised."),
    dtmf: Optional[str] = typer.Option(None, "--dtmf", help="DTMF digits to send."),
    uuid: Optional[str] = typer.Option(None, "--uuid", help="Call UUID (default: random)."),
    record: Optional[Path] = typer.Option(None, "--record", help="Record the agent to WAV."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary at the end."),
    http: Optional[str] = typer.Option(
        None, "--http", help="HOST:PORT of the control API, to show the agent's words."
    ),
) -> None:
    """Play a caller over AudioSocket: turns from WAV files or synthesised text."""
    from flowagent.commands import call as cmd

    raise typer.Exit(
        cmd.run(to=to, wavs=wav or [], says=say or [], dtmf=dtmf, uuid=uuid, record=record,
                json_out=json_out, http=http)
    )


@app.command()
def calls(
    uuid: Optional[str] = typer.Argument(None, help="Show one call in full."),
    db: Path = typer.Option(Path("flowagent.db"), "--db", help="SQLite file of call records."),
    limit: int = typer.Option(20, "--limit", "-n"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """List call records, or show one."""
    from flowagent.commands import calls as cmd

    raise typer.Exit(cmd.run(uuid=uuid, db=db, limit=limit, json_out=json_out))


@app.command()
def graph(
    flow: Path = typer.Argument(..., help="The flow file."),
    format: str = typer.Option("mermaid", "--format", "-f", help="mermaid, dot or html"),
    output: Optional[Path] = typer.Option(None, "--output", "-o"),
) -> None:
    """Draw the flow: states, transitions, handlers, tools."""
    from flowagent.commands import graph as cmd

    raise typer.Exit(cmd.run(flow, output_format=format, output=output))


asterisk_app = typer.Typer(help="Asterisk integration: dialplan, modules, systemd.")
app.add_typer(asterisk_app, name="asterisk")


@asterisk_app.command("config")
def asterisk_config(
    host: str = typer.Option("127.0.0.1", help="Where flowagent runs, as Asterisk reaches it."),
    port: int = typer.Option(9099, help="AudioSocket port."),
    http_port: int = typer.Option(8080, help="Control API port."),
    did: str = typer.Option("_X.", help="Number (or pattern) that reaches the agent."),
    flow: str = typer.Option("removals", help="Flow name for this number."),
    part: str = typer.Option(
        "all", help="all, modules, extensions, agi, agi-script, wideband, manager, systemd"
    ),
    http_host: str = typer.Option("", help="Control API host as Asterisk reaches it "
                                  "(default: --host)."),
    fallback: str = typer.Option("100", help="Extension callers reach when flowagent is down."),
) -> None:
    """Print the Asterisk configuration snippets with your values filled in."""
    from flowagent.commands import asterisk as cmd

    raise typer.Exit(
        cmd.run(host=host, port=port, http_port=http_port, did=did, flow=flow, part=part,
                http_host=http_host, fallback=fallback)
    )


@app.command()
def doctor(
    flows: Optional[list[Path]] = typer.Argument(None, help="Flows to check."),
    audiosocket: Optional[str] = typer.Option(
        None, "--audiosocket", help="HOST:PORT flowagent serves AudioSocket on "
        "(default: $FLOWAGENT_AUDIOSOCKET or 127.0.0.1:9099)."
    ),
    http: Optional[str] = typer.Option(
        None, "--http", help="HOST:PORT of the control API (default: $FLOWAGENT_HTTP or "
        "127.0.0.1:8080)."
    ),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds allowed per network check."),
) -> None:
    """The production checklist: flows, providers, models, ports, AMI, Asterisk."""
    from flowagent.commands import doctor as cmd

    raise typer.Exit(cmd.run(flows or [], audiosocket=audiosocket, http=http, timeout_s=timeout))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
