"""`flowagent call --to HOST:PORT [--wav F ...] [--say TEXT ...] [--dtmf DIGITS]`: be the caller.

Connects to an AudioSocket server exactly as Asterisk's `AudioSocket()` would (UUID first, then
a 20 ms frame every 20 ms), waits for the agent to finish speaking (silence on its audio), then
plays the next caller turn: a WAV file, text synthesised with the local TTS (piper, else espeak,
else — with a warning — the fake tone TTS), or DTMF digits. Turns are played in the order given
on the command line. Per turn it prints the latency the caller experiences: from the end of our
speech to the first agent audio (this includes the agent's end-of-turn silence wait).

What the agent said, as text, is only known to the server: with `--http HOST:PORT` (and the
API token, `--token` or `FLOWAGENT_API_TOKEN`) it is read from `GET /calls/{uuid}`; without it
the transcript shows how long the agent spoke instead of pretending to know its words. The
token is checked before the call starts: a wrong one stops with one sentence (exit 2) instead
of a transcript with no words.

`--json` prints one object at the end: `{"uuid", "turns": [{"caller", "agent", "latency_ms"}],
"hangup_by", "duration_s"}`. Exit 0 when the call ran to a hang-up by either side.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

#: agent silence that means "the agent has finished its turn"
AGENT_DONE_S = 0.8
#: how long to wait for the agent to hang up after the last turn before we do
LINGER_S = 8.0


@dataclass
class Turn:
    kind: str  # wav | say | dtmf
    value: str


def _ordered_turns(wavs: list[Path], says: list[str], dtmf: str | None) -> list[Turn]:
    """Typer gives each option as its own list; recover the command-line order from argv."""
    turns: list[Turn] = []
    wi = si = 0
    argv = sys.argv[1:]
    for arg in argv:
        name = arg.partition("=")[0]
        if name not in ("--wav", "--say", "--dtmf"):
            continue
        if name == "--wav" and wi < len(wavs):
            turns.append(Turn("wav", str(wavs[wi])))
            wi += 1
        elif name == "--say" and si < len(says):
            turns.append(Turn("say", says[si]))
            si += 1
        elif name == "--dtmf" and dtmf:
            turns.append(Turn("dtmf", dtmf))
    # anything argv did not show (called as a library): wavs, then says, then dtmf
    turns += [Turn("wav", str(w)) for w in wavs[wi:]]
    turns += [Turn("say", s) for s in says[si:]]
    if dtmf and not any(t.kind == "dtmf" for t in turns):
        turns.append(Turn("dtmf", dtmf))
    return turns


def _no_random_variation(tts: Any) -> None:
    """Piper adds random variation to every synthesis; the caller's lines are a script, so
    make them the same audio on every run (reproducible tests and benchmarks). The caller has
    its own voice instance (`registry.create` in this process), not the agent's."""
    config = getattr(tts, "syn_config", None)
    if config is not None and hasattr(config, "noise_scale"):
        config.noise_scale = 0.0
        config.noise_w_scale = 0.0


def _make_tts(con: Console) -> Any:
    from flowagent.providers import registry

    for name in ("piper", "espeak"):
        try:
            tts = registry.create("tts", name, {})
        except Exception as exc:
            last = exc
            continue
        _no_random_variation(tts)
        return tts
    con.print(f"[yellow]No local TTS available ({escape(str(last))}); --say turns will be"
              " tones from the fake TTS.[/yellow]")
    return registry.create("tts", "fake", {})


async def _synth(tts: Any, text: str, rate: int) -> bytes:
    return b"".join([c async for c in tts.synthesize(text, rate)])


def check_api(http: str, token: str) -> str | None:
    """None when the control API at `http` answers and takes `token`; else why not, as one
    sentence (run before the call, so a wrong token is not a silent transcript)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{http}/calls/00000000-0000-0000-0000-000000000000",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=3):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return (f"The control API at {http} refused the token"
                    + (f" {token!r}" if token else " (none given)")
                    + ": give the one `flowagent serve` printed, with --token or "
                      "FLOWAGENT_API_TOKEN.")
        return None  # 404: the token is right and there is no such call
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return (f"Nothing answers at http://{http} ({reason}); is `flowagent serve` running "
                "there? (--http is its control API address.)")


def run(*, to: str, wavs: list[Path], says: list[str], dtmf: str | None, uuid: str | None,
        record: Path | None, json_out: bool, http: str | None = None,
        token: str | None = None) -> int:
    con = Console(stderr=json_out)
    host, sep, port = to.rpartition(":")
    if not sep or not port.isdigit():
        con.print(f"[red]--to must be HOST:PORT (got {escape(to)}).[/red]")
        return 2
    for w in wavs:
        if not w.exists():
            con.print(f"[red]{escape(str(w))}: no such WAV file.[/red]")
            return 2
    if token is None:
        token = os.environ.get("FLOWAGENT_API_TOKEN", "")
    if http:
        problem = check_api(http, token)
        if problem is not None:
            con.print(f"[red]{escape(problem)}[/red]")
            return 2
    turns = _ordered_turns(wavs, says, dtmf)
    try:
        summary = asyncio.run(_call(con, host or "127.0.0.1", int(port), turns, uuid, record,
                                    http, token))
    except (ConnectionError, OSError, TimeoutError) as exc:
        con.print(f"[red]Could not call {escape(to)}: {escape(str(exc) or type(exc).__name__)}"
                  "[/red]")
        return 1
    if json_out:
        print(json.dumps(summary))
    return 0 if summary["hangup_by"] in ("agent", "caller") else 1


async def _fetch_record(http: str, uuid: str, token: str) -> dict[str, Any] | None:
    """The call's record (live snapshot or stored) from the control API, or None."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://{http}/calls/{uuid}", headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=2),
        ) as r:
            if r.status != 200:
                return None
            rec = await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


async def _agent_lines(http: str | None, uuid: str, token: str = "") -> list[str]:
    """The agent's lines so far, from the control API (empty without --http)."""
    if not http:
        return []
    rec = await _fetch_record(http, uuid, token)
    if rec is None:
        return []
    return [e["text"] for e in rec.get("transcript", []) if e.get("who") == "agent"]


async def _record_duration(http: str | None, uuid: str, token: str) -> float | None:
    """The call's duration as its record has it, once the record is closed (a second or two
    after the hang-up at most): the one figure `flowagent calls` and the web pages show."""
    if not http:
        return None
    for _ in range(10):
        rec = await _fetch_record(http, uuid, token)
        if rec is not None and isinstance(rec.get("duration_s"), int | float):
            return round(float(rec["duration_s"]), 1)
        await asyncio.sleep(0.2)
    return None


async def _call(con: Console, host: str, port: int, turns: list[Turn], uuid: str | None,
                record: Path | None, http: str | None, token: str = "") -> dict[str, Any]:
    from flowagent import audio
    from flowagent.asterisk.caller import AudioSocketCaller

    rate = 8000
    tts = _make_tts(con) if any(t.kind == "say" for t in turns) else None
    prepared: list[tuple[Turn, bytes]] = []
    for t in turns:
        if t.kind == "wav":
            pcm, r = audio.read_wav(t.value)
            prepared.append((t, audio.resample(pcm, r, rate)))
        elif t.kind == "say":
            prepared.append((t, await _synth(tts, t.value, rate)))
        else:
            prepared.append((t, b""))

    caller = AudioSocketCaller(host, port, call_uuid=uuid, sample_rate=rate, keep_frames=False)
    timeline = bytearray()  # the agent's audio on a real-time line (gaps filled with silence)
    t_start = time.monotonic()

    def on_frame(at: float, pcm: bytes, speech: bool) -> None:
        expected = int((at - t_start) * rate) * 2
        if expected - len(timeline) > 2 * audio.frame_bytes(rate):
            timeline.extend(bytes(expected - len(timeline) - len(pcm)))
        timeline.extend(pcm)

    caller.on_agent_frame.append(on_frame)
    await caller.connect()
    con.print(f"[dim]Calling {host}:{port} as {caller.uuid}[/dim]")
    seen = 0
    results: list[dict[str, Any]] = []

    async def agent_turn(after: float) -> str:
        nonlocal seen
        await caller.wait_agent_quiet(AGENT_DONE_S, timeout_s=30, after=after)
        lines = await _agent_lines(http, caller.uuid, token)
        new, seen = lines[seen:], len(lines)
        if new:
            text = " ".join(new)
        else:
            spoke = caller.last_agent_speech - max(after, caller.first_agent_speech)
            text = f"[{max(0.0, spoke):.1f} s of speech]" if caller.last_agent_speech > after \
                else ""
        if text:
            con.print(f"[bold cyan]agent:[/bold cyan] {escape(text)}")
        return text

    await agent_turn(0.0)
    for turn, pcm in prepared:
        if caller.closed.is_set():
            break
        label = turn.value if turn.kind != "wav" else Path(turn.value).name
        con.print(f"[bold green]caller:[/bold green] {escape(label)}"
                  + (" [dim](keypad)[/dim]" if turn.kind == "dtmf" else ""))
        if turn.kind == "dtmf":
            for d in turn.value:
                caller.send_dtmf(d)
                await asyncio.sleep(0.15)
            ended = time.monotonic()
        else:
            await caller.say_audio(pcm)
            ended = caller.last_speech_sent or time.monotonic()
        latency = None
        try:
            first = await caller.wait_agent_started(ended, timeout_s=15)
            latency = round((first - ended) * 1000, 1)
        except TimeoutError:
            pass
        agent = await agent_turn(ended)
        con.print(f"[dim]  latency {latency if latency is not None else '-'} ms[/dim]")
        results.append({"caller": turn.value if turn.kind != "wav" else label, "agent": agent,
                        "latency_ms": latency})
    if not caller.closed.is_set():
        try:
            await asyncio.wait_for(caller.closed.wait(), LINGER_S)
        except TimeoutError:
            await caller.hangup()
    await caller.close()
    # the record's duration when the agent's API is at hand (the same figure `flowagent calls`
    # and the web pages show); else what this caller measured
    duration = await _record_duration(http, caller.uuid, token) or round(
        time.monotonic() - t_start, 1)
    con.print(f"[dim]Call ended by {caller.hangup_by or 'unknown'} after {duration} s.[/dim]")
    if record is not None:
        audio.write_wav(record, bytes(timeline), rate)
        con.print(f"[dim]Agent audio written to {escape(str(record))}[/dim]")
    return {"uuid": caller.uuid, "turns": results, "hangup_by": caller.hangup_by,
            "duration_s": duration}
