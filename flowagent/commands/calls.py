"""`flowagent calls [UUID]`: list call records from the store, or show one in full.

The store is a SQLite file (`--store flowagent.db`, the default) or the PostgreSQL database
several nodes share (`--store postgresql://...` or `FLOWAGENT_DATABASE_URL`): the list then
holds every node's calls, those in progress first (`--nodes` lists the nodes themselves).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _when(ts: Any) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def run(*, uuid: str | None, store: str | Path, limit: int, json_out: bool,
        nodes: bool = False) -> int:
    """List (or show) call records of every node sharing the store: live calls first, as
    their last written snapshots, then finished ones."""
    from flowagent.server.call_store import StoreUnavailable, is_postgres_url

    con = Console()
    text = str(store)
    if not is_postgres_url(text) and not Path(text).exists():
        # nothing recorded yet is not an error for a listing (the README's first-hour path
        # runs `flowagent calls` before any call); asking for one call that cannot be there is
        con.print(f"No call records in {escape(text)} yet: `flowagent serve` writes them there "
                  "as calls are made (--store chooses the file or database).")
        return 1 if uuid else 0
    try:
        return asyncio.run(_run(con, uuid, text, limit, json_out, nodes))
    except StoreUnavailable as exc:
        con.print(f"[red]{escape(str(exc))}[/red]")
        return 2


async def _run(con: Console, uuid: str | None, url: str, limit: int, json_out: bool,
               nodes: bool) -> int:
    from flowagent.server.stores import open_store

    store = await open_store(url)
    try:
        if nodes:
            rows = await store.nodes()
            if json_out:
                print(json.dumps(rows, indent=2, default=str))
                return 0
            table = Table(title=f"Nodes sharing {store.where}")
            for col in ("node", "status", "audiosocket", "calls", "last heart-beat"):
                table.add_column(col)
            for n in rows:
                ago = n.get("seconds_since_heartbeat")
                table.add_row(n["node_id"], n["status"], n["audiosocket"],
                              str(n["active_calls"]), "" if ago is None else f"{ago:.1f} s ago")
            con.print(table)
            return 0
        if uuid:
            rec = await store.get(uuid)
            if rec is None:
                con.print(f"[red]No call {escape(uuid)} in {escape(store.where)}.[/red]")
                return 1
            if json_out:
                print(json.dumps(rec, indent=2, default=str))
            else:
                _show(con, rec)
            return 0
        live = await store.list(1000, status="live")
        rows = live + [r for r in await store.list(limit + len(live)) if r["status"] != "live"
                       ][:limit]
        if json_out:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        table = Table(title=f"Calls in {store.where}")
        several = len({r["node"] for r in rows}) > 1
        cols = ["started", "uuid", "flow", "caller", "did", "secs", "turns", "outcome"]
        for col in (["node", *cols] if several else cols):
            table.add_column(col)
        for r in rows:
            outcome = "[bold]live[/bold]" if r["status"] == "live" else escape(r["outcome"])
            cells = [_when(r["started_at"]), r["uuid"], r["flow"], r["caller"], r["did"],
                     f"{r['duration_s']:.1f}" if r["duration_s"] is not None else "",
                     str(r["turns"]), outcome]
            table.add_row(*([r["node"], *cells] if several else cells))
        con.print(table)
        return 0
    finally:
        await store.close()


def _show(con: Console, rec: dict[str, Any]) -> None:
    con.print(f"[bold]{rec['uuid']}[/bold]  flow {escape(str(rec.get('flow')))}  "
              f"caller {rec.get('caller') or '-'}  did {rec.get('did') or '-'}")
    dur = rec.get("duration_s")
    line = f"started {_when(rec.get('started_at'))}"
    if dur is not None:
        line += f"  duration {dur:.1f}s"
    line += f"  outcome [bold]{escape(str(rec.get('outcome')))}[/bold]"
    if rec.get("transfer_target"):
        line += f"  transfer to {escape(str(rec['transfer_target']))}"
    if rec.get("end_reason"):
        line += f"  ({escape(str(rec['end_reason']))})"
    con.print(line)
    t = Table(show_header=True, header_style="bold")
    for col in ("at", "who", "text", "state"):
        t.add_column(col)
    for e in rec.get("transcript", []):
        text = escape(e["text"])
        if e.get("heard") is not None:
            text += f"  [dim](heard: {escape(e['heard'])})[/dim]"
        t.add_row(f"{e['at']:.2f}", e["who"], text, e.get("state", ""))
    con.print(t)
    if rec.get("slots"):
        con.print("slots: " + escape(json.dumps(rec["slots"], default=str)))
    for tc in rec.get("tool_calls", []):
        ok = {True: "ok", False: "failed"}.get(tc.get("ok"), "no answer")
        con.print(f"tool {tc['tool']}: {ok}, status {tc.get('status')} "
                  f"{escape(tc.get('error') or '')}")
    lat = rec.get("latency") or []
    if lat:
        lt = Table(title="per-turn latency (ms after end of speech)")
        # pipeline calls fill the ASR/LLM/TTS columns; speech-to-speech calls the STS one
        cols = [("asr_final_ms", "asr final"), ("llm_first_token_ms", "llm 1st token"),
                ("tts_first_audio_ms", "tts 1st audio"), ("sts_first_audio_ms", "sts 1st audio"),
                ("first_frame_ms", "1st frame"), ("runner_ms", "runner")]
        cols = [(k, t) for k, t in cols
                if k in ("first_frame_ms", "runner_ms") or any(r.get(k) is not None for r in lat)]
        for col in ("turn", "state", *(t for _, t in cols)):
            lt.add_column(col)
        if any(r.get("preemptive") for r in lat):
            lt.add_column("preemptive")
        for number, row in enumerate(lat, start=1):  # 1-based, as the web pages number turns
            cells = [str(number), str(row.get("state", ""))]
            cells += ["" if row.get(k) is None else f"{row[k]:.1f}" for k, _ in cols]
            if any(r.get("preemptive") for r in lat):
                cells.append(str(row.get("preemptive") or ""))
            lt.add_row(*cells)
        con.print(lt)
    for err in rec.get("errors", []):
        con.print(f"[yellow]error:[/yellow] {escape(err)}")
