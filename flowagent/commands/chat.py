"""`flowagent chat FLOW`: talk to a flow by typing, as a caller would speak.

Reads stdin one line at a time (so it can be driven by a pipe), prints the agent's lines, and
understands a few commands: `/dtmf 1`, `/silence`, `/state`, `/slots`, `/tools`, `/restart`,
`/quit` (also `/timer max_duration`, `/hangup`, `/help`). `--tools FILE` answers tools from canned
responses instead of their real URLs. Needs no API keys unless the flow configures an LLM (then
the flow's LLM provider is created from its `providers.llm` entry).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

HELP = (
    "Type what the caller says. Commands: /dtmf 123  /silence  /state  /slots  /tools  "
    "/timer NAME  /hangup  /restart  /quit"
)


def _make_llm(flow: Any, con: Console) -> Any:
    spec = flow.providers.get("llm")
    if not spec:
        return None
    try:
        from flowagent.providers import registry

        options = {k: v for k, v in dict(spec.get("options") or {}).items()}
        return registry.create("llm", str(spec.get("name")), options)
    except Exception as exc:
        con.print(f"[yellow]The flow's LLM ({escape(str(spec.get('name')))}) is not available: "
                  f"{escape(str(exc))}. Continuing without it.[/yellow]")
        return None


def run(flow: Path, *, tool_responses: Path | None = None, caller: str = "+447700900123",
        did: str = "", show_state: bool = False, console: Console | None = None,
        stdin: Any = None) -> int:
    from flowagent.dialogue.tools import CannedError, CannedTools, ToolRunner
    from flowagent.flow.compiler import FlowInvalid, load_flow

    con = console or Console(highlight=False, soft_wrap=True, emoji=False)
    try:
        compiled = load_flow(flow)
    except FlowInvalid as exc:
        con.print(f"[red]{escape(str(exc))}[/red]")
        con.print(f"Run `flowagent validate {flow}` to see every problem.")
        return 2
    except OSError as exc:
        reason = escape(exc.strerror or str(exc))
        con.print(f"[red]Cannot read {escape(str(flow))}: {reason}.[/red]")
        return 2
    try:
        runner: ToolRunner = (CannedTools.from_file(tool_responses) if tool_responses
                              else ToolRunner())
    except (OSError, CannedError) as exc:
        con.print(f"[red]Cannot use the tools file: {escape(str(exc))}[/red]")
        return 2
    llm = _make_llm(compiled, con)
    return asyncio.run(_chat(compiled, runner, llm, caller, did, show_state, con,
                             stdin or sys.stdin))


async def _chat(flow: Any, runner: Any, llm: Any, caller: str, did: str, show_state: bool,
                con: Console, stdin: Any) -> int:
    import uuid

    from flowagent.dialogue.events import CallInfo
    from flowagent.dialogue.text_driver import Conversation
    from flowagent.dialogue.tools import close_shared_session

    conv = Conversation(flow, runner, llm)
    interactive = hasattr(stdin, "isatty") and stdin.isatty()
    con.print(f"[dim]Talking to {escape(flow.name)}. {HELP}[/dim]")

    shown = 0

    def show(lines: list[str]) -> None:
        nonlocal shown
        for problem in conv.executor.problems[shown:]:
            con.print(f"[red]! {escape(problem.kind)} problem in {escape(problem.where)}: "
                      f"{escape(problem.error)}[/red] [dim]{escape(problem.source)}[/dim]")
        shown = len(conv.executor.problems)
        for line in lines:
            con.print(f"[bold green]agent:[/bold green] {escape(line)}")
        if show_state:
            _state(con, conv)
        if conv.ended:
            if conv.transferred_to is not None:
                con.print(f"[yellow]-- transferred to {escape(conv.transferred_to)} --[/yellow]")
            else:
                con.print(f"[yellow]-- call ended ({escape(conv.engine.record.outcome)}) --"
                          "[/yellow]")
            con.print("[dim]/restart for a new call, /quit to leave[/dim]")

    try:
        show(await conv.start(CallInfo(uuid=str(uuid.uuid4()), caller=caller, did=did)))
        loop = asyncio.get_running_loop()
        while True:
            if interactive:
                con.print("[bold cyan]you:[/bold cyan] ", end="")
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if not interactive:  # echo piped input so the output reads as a conversation
                con.print(f"[bold cyan]you:[/bold cyan] {escape(text)}")
            if not text.startswith("/"):
                if conv.ended:
                    con.print("[dim]The call has ended: /restart or /quit.[/dim]")
                    continue
                show(await conv.say(text))
                continue
            cmd, _, arg = text.partition(" ")
            arg = arg.strip()
            if cmd in ("/quit", "/exit", "/q"):
                break
            if cmd == "/help":
                con.print(HELP)
            elif cmd == "/restart":
                runner_reset = getattr(runner, "reset", None)
                if runner_reset:
                    runner_reset()
                shown = 0
                show(await conv.restart())
            elif cmd == "/state":
                _state(con, conv)
            elif cmd == "/slots":
                _slots(con, conv)
            elif cmd == "/tools":
                _tools(con, conv)
            elif conv.ended:
                con.print("[dim]The call has ended: /restart or /quit.[/dim]")
            elif cmd == "/dtmf":
                if not arg:
                    con.print("[red]Say which keys, e.g. /dtmf 1[/red]")
                    continue
                show(await conv.dtmf(arg))
            elif cmd == "/silence":
                show(await conv.silence())
            elif cmd == "/timer":
                show(await conv.timer(arg or "max_duration"))
            elif cmd == "/hangup":
                show(await conv.hangup())
            else:
                con.print(f"[red]Unknown command {escape(cmd)}.[/red] {HELP}")
    finally:
        if not conv.ended:
            await conv.hangup()
        await close_shared_session()
    return 0


def _state(con: Console, conv: Any) -> None:
    eng = conv.engine
    waiting = eng.listening or eng.waiting_for or ("ended" if eng.ended else "-")
    con.print(f"[magenta]state:[/magenta] {escape(conv.state)}  [dim](waiting for: "
              f"{escape(str(waiting))})[/dim]")


def _slots(con: Console, conv: Any) -> None:
    table = Table("slot", "value", title="slots", title_justify="left")
    for name in conv.flow.slots:
        value = conv.slots.get(name)
        table.add_row(name, "[dim]-[/dim]" if value is None else escape(repr(value)))
    for name, value in conv.vars.items():
        table.add_row(f"vars.{name}", escape(repr(value)))
    con.print(table)


def _tools(con: Console, conv: Any) -> None:
    if not conv.tools.log:
        con.print("[dim]No tools called yet.[/dim]")
        return
    table = Table("tool", "request", "result", title="tool calls", title_justify="left")
    for e in conv.tools.log:
        req = e.request.get("json") or e.request.get("args") or e.request.get("url", "")
        res = (f"ok {e.result.status or ''} {e.result.data!r}" if e.result.ok
               else f"failed: {e.result.error}")
        table.add_row(e.tool, escape(str(req)), escape(res))
    con.print(table)
