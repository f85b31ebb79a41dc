"""Offline turn latency measured AT THE CALLER (issue 20): the shipped removals demo flow
(flowagent/demo/removals.yaml, what `flowagent serve` runs by default) on the embedded offline
stack (Whisper tiny.en, Piper, Silero, MiniLM intents: the default providers, models from their
packages, no network), served in-process by the real `Runtime` + `AudioSocketServer` on
127.0.0.1, with the demo's fake removals API (flowagent.demo.removals_api) on loopback.

Each caller speaks AudioSocket like Asterisk: the UUID frame, the first audio frame 0.5 s later,
then a 320-byte slin 8 kHz frame every 20 ms in real time, line noise (~-65 dBFS, phone band)
when it says nothing and under its speech. Its lines are synthesised once at start with the
local Piper voice (no random variation), phone band, a little noise (SNR 25 dB), and walk the
demo's happy path. Before each line the caller waits for the agent's question to be over: agent
audio back to silence (AGENT_SPEECH_RMS) for 400 ms and its last line a question (read from the
live call, as a caller knows it was asked something; 3 s of silence otherwise).

Per turn: the caller's last speech sample sent -> the first agent frame above silence received
(what the caller waits through: end of turn, recognition, reply). At the end every slot in the
call record (`Runtime.find_call`) is compared with the script's.

Scripts: `demo` (plain answers) and `slow` (a slow talker: answers with a 700-900 ms pause in
the middle: "L S six" ... "four A B"). A turn is CUT OFF when agent speech arrives after the
first part of the answer and before its last part is sent, or when the agent asked for that slot
again (its prompt or reprompt said more than once).

    .venv/bin/python bench/bench_offline_turns.py --script demo --calls 1
    .venv/bin/python bench/bench_offline_turns.py --script demo --calls 4
    .venv/bin/python bench/bench_offline_turns.py --script slow --calls 1 [--runs 2] [--json]
        [--out bench/results/offline_turns.md]

Goals (issue 20): p50 <= 450 ms, p90 <= 600 ms with 1 call; p50 <= 550 ms with 4 calls; every
slot right; no turn cut off on the slow script. Only public entry points are used, so the
bench runs unchanged on newer end-of-turn code. The machine's load is printed with the figures
(other jobs may share the cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from flowagent.asterisk.audiosocket import (
    FrameParser,
    Kind,
    ProtocolError,
    encode,
    encode_uuid,
)
from flowagent.asterisk.caller import AGENT_SPEECH_RMS

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
FRAME = 160  # samples in 20 ms
FRAME_S = 0.02
FIRST_AUDIO_AFTER_S = 0.5  # Asterisk's first audio frame comes ~0.5 s after the UUID
LINE_NOISE_DBFS = -65.0
SPEECH_SNR_DB = 25.0
AGENT_DONE_S = 0.4  # agent silence that ends its prompt
NOT_A_QUESTION_S = 3.0  # ...when its last line was not a question, wait this long instead
STAGGER_S = 0.3

# ---------------------------------------------------------------------------------------------
# the scripts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One caller turn: spoken parts with pauses (ms) between them, and the slots it fills."""

    parts: tuple[str, ...]
    pauses_ms: tuple[int, ...] = ()
    slots: tuple[tuple[str, Any], ...] = ()


def _march(day: int) -> str:
    """The next March `day` from tomorrow on (the flow books up to a year ahead)."""
    today = dt.date.today()
    d = dt.date(today.year, 3, day)
    return (d if d > today else dt.date(today.year + 1, 3, day)).isoformat()


def scripts() -> dict[str, list[Line]]:
    phone = ("phone", "+441134960123")
    return {
        "demo": [
            Line(("I'd like a quote please.",)),
            Line(("L S six, one H T.",), slots=(("from_postcode", "LS6 1HT"),)),
            Line(("M one, three B. J.",), slots=(("to_postcode", "M1 3BJ"),)),
            Line(("The twentieth of March.",), slots=(("move_date", _march(20)),)),
            Line(("It's a three bedroom house.",), slots=(("bedrooms", 3),)),
            Line(("Yes.",)),
            Line(("Yes please.",), slots=(("accept_quote", True),)),
            Line(("Jane Smith.",), slots=(("name", "Jane Smith"),)),
            Line(("Oh one one three, four nine six, oh one two three.",), slots=(phone,)),
        ],
        "slow": [
            Line(("I'd like a quote please.",)),
            Line(("L S six,", "one H T."), (800,), (("from_postcode", "LS6 1HT"),)),
            Line(("M one,", "one A E."), (750,), (("to_postcode", "M1 1AE"),)),
            Line(("The fifth,", "of March."), (700,), (("move_date", _march(5)),)),
            Line(("Um, it's a", "three bedroom house."), (850,), (("bedrooms", 3),)),
            Line(("Yes.",)),
            Line(("Yes please.",), slots=(("accept_quote", True),)),
            Line(("My name is", "Sarah Jones."), (800,), (("name", "Sarah Jones"),)),
            Line(("Oh one one three,", "four nine six, oh one two three."), (900,),
                 (phone,)),
        ],
    }


# ---------------------------------------------------------------------------------------------
# the caller's voice and line
# ---------------------------------------------------------------------------------------------


def _to_i16(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.round(x * 32767), -32768, 32767), dtype=np.int16)


def line_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Phone-band pink noise at LINE_NOISE_DBFS, int16 (looped by the sender)."""
    from flowagent.providers.local.linesim import noise, telephone_band

    n = telephone_band(noise(int(seconds * RATE), rng), RATE)
    n = n / (np.sqrt(np.mean(n.astype(np.float64) ** 2)) + 1e-12) * 10 ** (LINE_NOISE_DBFS / 20)
    return _to_i16(n)


@dataclass
class Spoken:
    """A line as int16 samples (line noise not included: the sender adds it) and the sample
    index where each part's speech ends and the next part's starts."""

    pcm: np.ndarray
    part_ends: list[int]
    part_starts: list[int]


class Voice:
    """The caller's voice: the local Piper voice (espeak-ng if Piper is missing), without
    Piper's random variation, so every run speaks the same audio."""

    def __init__(self, rng: np.random.Generator) -> None:
        from flowagent.providers import registry

        try:
            self.tts = registry.create("tts", "piper", {})
            self.name = "piper"
            config = self.tts.syn_config  # piper's SynthesisConfig
            config.noise_scale = 0.0
            config.noise_w_scale = 0.0
        except Exception:
            self.tts = registry.create("tts", "espeak", {})
            self.name = "espeak"
        self.rng = rng

    async def part(self, text: str) -> np.ndarray:
        from flowagent.providers.local.linesim import add_noise, telephone_band

        pcm = b"".join([c async for c in self.tts.synthesize(text, RATE)])
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        loud = np.nonzero(np.abs(x) > 0.01)[0]
        x = x[loud[0]: loud[-1] + 1] if loud.size else x  # speech only: the end is its end
        x = telephone_band(x * 0.5, RATE)
        return add_noise(x, RATE, SPEECH_SNR_DB, self.rng)

    async def line(self, line: Line) -> Spoken:
        chunks: list[np.ndarray] = []
        starts: list[int] = []
        ends: list[int] = []
        at = 0
        for i, text in enumerate(line.parts):
            if i:
                pause = np.zeros(RATE * line.pauses_ms[i - 1] // 1000, np.float32)
                chunks.append(pause)
                at += pause.size
            x = await self.part(text)
            starts.append(at)
            chunks.append(x)
            at += x.size
            ends.append(at - 1)
        return Spoken(_to_i16(np.concatenate(chunks)), ends, starts)


@dataclass
class Heard:
    at: float
    speech: bool


@dataclass
class LineCaller:
    """Asterisk's side of one AudioSocket call, paced in real time on the monotonic clock.

    Not `flowagent.asterisk.caller.AudioSocketCaller`: that one sends exact zeros when the
    caller is quiet and says when the queue drained, not when a given sample went out; this
    one sends line noise under everything and stamps the frames that carry the end of each
    part of a line."""

    host: str
    port: int
    noise: np.ndarray
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    heard: list[Heard] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    hangup_by: str = ""
    last_agent_speech: float = 0.0

    def __post_init__(self) -> None:
        self._queue: deque[tuple[np.ndarray, list[int]]] = deque()  # (frame, marks in it)
        self._marks: dict[int, float] = {}  # mark id -> when the frame carrying it was sent
        self._mark_seq = 0
        self._noise_at = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), 5)
        self._writer = writer
        writer.write(encode_uuid(self.uuid))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send(writer)),
                       loop.create_task(self._recv(reader))]

    def speak(self, spoken: Spoken) -> list[int]:
        """Queue a line; returns mark ids for [each part's last sample] + [each part's first
        sample] (`sent(mark)` is when that frame went out)."""
        pcm = spoken.pcm
        pad = (-pcm.size) % FRAME
        pcm = np.concatenate([pcm, np.zeros(pad, np.int16)])
        where = [*spoken.part_ends, *spoken.part_starts]
        ids = []
        frame_marks: dict[int, list[int]] = {}
        for sample in where:
            self._mark_seq += 1
            ids.append(self._mark_seq)
            frame_marks.setdefault(sample // FRAME, []).append(self._mark_seq)
        for i in range(pcm.size // FRAME):
            self._queue.append((pcm[i * FRAME:(i + 1) * FRAME], frame_marks.get(i, [])))
        return ids

    def sent(self, mark: int) -> float | None:
        return self._marks.get(mark)

    async def wait_sent(self, mark: int, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while mark not in self._marks:
            if self.closed.is_set() or time.monotonic() > deadline:
                raise TimeoutError("the line was not sent")
            await asyncio.sleep(0.01)
        return self._marks[mark]

    def _noise_frame(self) -> np.ndarray:
        n = self.noise
        if self._noise_at + FRAME > n.size:
            self._noise_at = 0
        out = n[self._noise_at:self._noise_at + FRAME]
        self._noise_at += FRAME
        return out

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        t0 = time.monotonic() + FIRST_AUDIO_AFTER_S
        n = 0
        while not self.closed.is_set():
            delay = t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            if writer.transport.is_closing():
                return
            frame = self._noise_frame().astype(np.int32)
            marks: list[int] = []
            if self._queue:
                speech, marks = self._queue.popleft()
                frame = frame + speech
            pcm = np.clip(frame, -32768, 32767).astype("<i2").tobytes()
            writer.write(encode(Kind.SLIN_8K, pcm))
            now = time.monotonic()
            for m in marks:
                self._marks[m] = now

    async def _recv(self, reader: asyncio.StreamReader) -> None:
        parser = FrameParser()
        with contextlib.suppress(ConnectionError, ProtocolError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                now = time.monotonic()
                done = False
                for f in parser.feed(data):
                    if f.kind == Kind.HANGUP:
                        done = True
                    elif f.kind == Kind.SLIN_8K and f.payload:
                        x = np.frombuffer(f.payload, dtype="<i2").astype(np.float64) / 32768
                        speech = float(np.sqrt(np.mean(x * x))) > AGENT_SPEECH_RMS
                        self.heard.append(Heard(now, speech))
                        if speech:
                            self.last_agent_speech = now
                if done:
                    break
        self.hangup_by = self.hangup_by or "agent"
        self.closed.set()

    def first_speech_after(self, after: float) -> float | None:
        return next((h.at for h in self.heard if h.at > after and h.speech), None)

    def spoke_between(self, start: float, end: float) -> bool:
        return any(h.speech and start < h.at < end for h in self.heard)

    async def close(self) -> None:
        self.hangup_by = self.hangup_by or "caller"
        self.closed.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


# ---------------------------------------------------------------------------------------------
# the agent: the demo flow served in-process as `flowagent serve` does
# ---------------------------------------------------------------------------------------------


def demo_flow() -> Path:
    from flowagent.demo import DEMO_FLOW

    return Path(DEMO_FLOW)


class Agent:
    """Runtime + AudioSocketServer on 127.0.0.1 with the offline models loaded the way
    `flowagent serve` loads them (LocalModels: Whisper, Piper, Silero, MiniLM intents), the
    prompts prepared before calls (kept on disk between runs, as serve's prompt cache), the
    demo's removals API on loopback."""

    def __init__(self, flow: Path, cache: Path) -> None:
        self.flow = flow
        self.cache = cache

    async def __aenter__(self) -> Agent:
        from flowagent.demo.removals_api import FakeRemovalsApi
        from flowagent.providers.local.stack import LocalModels
        from flowagent.runner.prompt_cache import cache_from_settings
        from flowagent.runner.services import RuntimeConfig
        from flowagent.server.audiosocket_server import AudioSocketServer
        from flowagent.server.runtime import FlowSet, ProviderPool, Runtime
        from flowagent.server.stores import open_store
        from flowagent.server.webhooks import WebhookConfig, Webhooks
        from flowagent.understanding.embedding_cache import cache_beside_prompts

        self.api = FakeRemovalsApi()
        port = await self.api.start()
        os.environ["REMOVALS_API_URL"] = f"http://127.0.0.1:{port}"
        config = RuntimeConfig()
        config.provider_timeout_s = max(config.provider_timeout_s, 4.0)  # serve's, offline
        flows = FlowSet(ProviderPool(), config.provider_overrides)
        flows.prompt_disk = cache_from_settings(self.cache / "prompts", 200)
        flows.local_models = LocalModels(embedding_disk=cache_beside_prompts(flows.prompt_disk))
        t = time.monotonic()
        await asyncio.to_thread(flows.load, self.flow)
        self.load_s = time.monotonic() - t
        assert flows.default is not None
        t = time.monotonic()
        await flows.default.prewarm()
        self.prewarm_s = time.monotonic() - t
        self.tmp = tempfile.TemporaryDirectory()
        self.store = await open_store(Path(self.tmp.name) / "calls.db")
        hooks = Webhooks(WebhookConfig(url="", secret="", timeout_s=2, retries=1,
                                       backoff_s=0.05, poll_s=0.2))
        self.rt = Runtime(flows, self.store, config=config, webhooks=hooks)
        self.server = AudioSocketServer(self.rt, "127.0.0.1", 0, reload_interval_s=0)
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
        await self.store.close()
        await self.api.stop()
        self.tmp.cleanup()

    @property
    def port(self) -> int:
        return int(self.server.address[1])

    async def record(self, uuid: str, final: bool, timeout_s: float = 20) -> dict[str, Any]:
        """The call as the API shows it (`Runtime.find_call`); `final`: wait for the finished
        record."""
        deadline = time.monotonic() + timeout_s
        while True:
            rec = await self.rt.find_call(uuid)
            if rec is not None and (not final or not rec.get("live")):
                return rec
            if time.monotonic() > deadline:
                return rec or {}
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# one call
# ---------------------------------------------------------------------------------------------


def agent_lines(rec: dict[str, Any]) -> list[str]:
    return [str(e.get("text", "")) for e in rec.get("transcript", []) if e.get("who") == "agent"]


async def wait_question(agent: Agent, c: LineCaller, after: float, timeout_s: float = 40) -> None:
    """Until the agent has spoken since `after`, then been quiet AGENT_DONE_S with its last
    line a question (or NOT_A_QUESTION_S quiet), or the call ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not c.closed.is_set():
        quiet = time.monotonic() - c.last_agent_speech
        if c.last_agent_speech > after and quiet >= AGENT_DONE_S:
            if quiet >= NOT_A_QUESTION_S:
                return
            lines = agent_lines(await agent.record(c.uuid, final=False))
            if lines and lines[-1].rstrip().endswith("?"):
                return
        await asyncio.sleep(0.02)


def slot_prompts(flow: Path) -> dict[str, list[str]]:
    slots = (yaml.safe_load(flow.read_text("utf-8")) or {}).get("slots") or {}
    return {k: [str(v[p]) for p in ("prompt", "reprompt") if v.get(p)]
            for k, v in slots.items()}


async def say_line(agent: Agent, c: LineCaller, line: Line, sp: Spoken) -> dict[str, Any]:
    """Speak one line, time the reply at the caller, wait for the agent's next question."""
    said_before = len(agent_lines(await agent.record(c.uuid, final=False)))
    marks = c.speak(sp)
    k = len(sp.part_ends)
    ends = marks[:k]
    end = await c.wait_sent(ends[-1], timeout_s=sp.pcm.size / RATE + 7)
    first_end = c.sent(ends[0]) or end
    first = None
    deadline = time.monotonic() + 15
    while first is None and time.monotonic() < deadline and not c.closed.is_set():
        first = c.first_speech_after(end)
        if first is None:
            await asyncio.sleep(0.005)
    await wait_question(agent, c, end)
    rec = await agent.record(c.uuid, final=False)
    return {"caller": " / ".join(line.parts), "pauses_ms": list(line.pauses_ms),
            "latency_ms": None if first is None else round((first - end) * 1000, 1),
            # agent speech after the first part's end, before the whole answer was out
            "agent_in_pause": k > 1 and c.spoke_between(first_end, end),
            "agent": " ".join(agent_lines(rec)[said_before:]),
            "unfilled": [n for n, _ in line.slots if (rec.get("slots") or {}).get(n) is None]}


async def one_call(agent: Agent, script: list[Line], spoken: list[Spoken], noise: np.ndarray,
                   delay_s: float, prompts: dict[str, list[str]]) -> dict[str, Any]:
    """One caller through the script. A line whose slot is still empty after the agent's
    reply is said once more (as a caller repeats an answer that was not taken), so one
    mishearing does not put the rest of the script out of step."""
    await asyncio.sleep(delay_s)
    rng = np.random.default_rng(int(delay_s * 1000) + 1)
    c = LineCaller("127.0.0.1", agent.port, np.roll(noise, int(rng.integers(noise.size))))
    turns: list[dict[str, Any]] = []
    try:
        await c.connect()
        await wait_question(agent, c, 0.0)
        for i, (line, sp) in enumerate(zip(script, spoken, strict=True)):
            for attempt in range(2):
                if c.closed.is_set():
                    break
                turn = await say_line(agent, c, line, sp)
                turns.append({"line": i, "retry": attempt > 0, **turn})
                if not turn["unfilled"]:
                    break
        if not c.closed.is_set():  # the agent says goodbye and hangs up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.closed.wait(), 15)
    finally:
        await c.close()
    rec = await agent.record(c.uuid, final=True)
    slots = rec.get("slots") or {}
    said = agent_lines(rec)
    mismatches = [{"slot": name, "want": want, "got": slots.get(name)}
                  for line in script for name, want in line.slots
                  if slots.get(name) != want and str(slots.get(name)) != str(want)]
    for turn in turns:
        line = script[turn["line"]]
        turn["asked_again"] = [name for name, _ in line.slots
                               if sum(any(p in s for p in prompts.get(name, []))
                                      for s in said) > 1] if not turn["retry"] else []
        # the slow talker's answer was cut: the agent spoke in the pause, or asked again
        turn["cut_off"] = len(line.parts) > 1 and not turn["retry"] and (
            turn["agent_in_pause"] or bool(turn["asked_again"]))
    return {"uuid": c.uuid, "turns": turns, "mismatches": mismatches,
            "outcome": rec.get("outcome"), "hangup_by": c.hangup_by,
            "heard": [str(e.get("text", "")) for e in rec.get("transcript", [])
                      if e.get("who") == "caller"],
            "rows": rec.get("latency") or []}


# ---------------------------------------------------------------------------------------------
# runs and reports
# ---------------------------------------------------------------------------------------------


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    turns = [t for c in calls for t in c["turns"]]
    # a reply that began in the slow talker's pause has no wait after the answer to time
    lat = [t["latency_ms"] for t in turns
           if t["latency_ms"] is not None and not t["agent_in_pause"]]
    return {"calls": len(calls), "turns": len(turns), "measured": len(lat),
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "max_ms": max(lat, default=None),
            "no_reply": sum(t["latency_ms"] is None for t in turns),
            "cut_off": sum(bool(t["cut_off"]) for t in turns),
            "agent_in_pause": sum(bool(t["agent_in_pause"]) for t in turns),
            "asked_again": sum(bool(t["asked_again"]) for t in turns),
            "retries": sum(bool(t["retry"]) for t in turns),
            "slot_mismatches": sum(len(c["mismatches"]) for c in calls),
            "completed": sum(c["outcome"] == "completed" for c in calls)}


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min), {os.cpu_count()} CPUs"


async def bench(script_name: str, calls: int, runs: int, cache: Path,
                verbose: bool) -> dict[str, Any]:
    script = scripts()[script_name]
    rng = np.random.default_rng(20)
    voice = Voice(rng)
    spoken = [await voice.line(line) for line in script]
    noise = line_noise(30.0, rng)
    flow = demo_flow()
    prompts = slot_prompts(flow)
    out: dict[str, Any] = {"script": script_name, "calls": calls, "voice": voice.name,
                           "flow": str(flow), "runs": []}
    async with Agent(flow, cache) as agent:
        out["load_s"], out["prewarm_s"] = round(agent.load_s, 1), round(agent.prewarm_s, 1)
        for r in range(runs):
            load_before = load_note()
            t = time.monotonic()
            results = await asyncio.gather(*(
                one_call(agent, script, spoken, noise, i * STAGGER_S, prompts)
                for i in range(calls)))
            run = {"run": r + 1, "seconds": round(time.monotonic() - t, 1),
                   "load_before": load_before, "load_after": load_note(),
                   "summary": summary(list(results)), "calls": list(results)}
            out["runs"].append(run)
            print_run(run, verbose)
    return out


def fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else f"{v:.0f}"


def print_run(run: dict[str, Any], verbose: bool) -> None:
    s = run["summary"]
    print(f"run {run['run']}: {s['calls']} call(s), {s['turns']} turns, at the caller "
          f"p50 {fmt(s['p50_ms'])} / p90 {fmt(s['p90_ms'])} / max {fmt(s['max_ms'])} ms; "
          f"cut off {s['cut_off']} (agent in the pause {s['agent_in_pause']}, asked again "
          f"{s['asked_again']}), retries {s['retries']}, slot mismatches {s['slot_mismatches']}, "
          f"no reply {s['no_reply']}, completed {s['completed']}/{s['calls']} "
          f"({run['seconds']} s; {run['load_after']})", file=sys.stderr)
    for c in run["calls"]:
        for m in c["mismatches"]:
            print(f"  {c['uuid'][:8]} slot {m['slot']}: want {m['want']!r}, got {m['got']!r}",
                  file=sys.stderr)
        for t in c["turns"]:
            if t["cut_off"] or verbose:
                flag = " CUT OFF" if t["cut_off"] else ""
                print(f"  {c['uuid'][:8]} {t['caller']!r}: {fmt(t['latency_ms'])} ms{flag}"
                      + (" [retry]" if t["retry"] else "")
                      + (f" (asked again: {', '.join(t['asked_again'])})"
                         if t["asked_again"] else "")
                      + (f" -> {t['agent']!r}" if verbose else ""), file=sys.stderr)
        if verbose or c["mismatches"]:
            print(f"  {c['uuid'][:8]} heard: {' | '.join(c['heard'])}", file=sys.stderr)


def markdown(out: dict[str, Any], command: str) -> str:
    lines = [f"### `--script {out['script']} --calls {out['calls']}` "
             f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"    {command}", "",
             f"Caller voice {out['voice']}; models loaded in {out['load_s']} s, prompts ready "
             f"in {out['prewarm_s']} s.", "",
             "| run | turns timed / all (retries) | p50 ms | p90 ms | max ms "
             "| cut off (agent in pause, asked again) | slots wrong | completed "
             "| load before → after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in out["runs"]:
        s = run["summary"]
        lines.append(f"| {run['run']} | {s['measured']}/{s['turns']} ({s['retries']}) "
                     f"| {fmt(s['p50_ms'])} | {fmt(s['p90_ms'])} | {fmt(s['max_ms'])} "
                     f"| {s['cut_off']} ({s['agent_in_pause']}, {s['asked_again']}) "
                     f"| {s['slot_mismatches']} | {s['completed']}/{s['calls']} "
                     f"| {run['load_before']} → {run['load_after']} |")
    bad = [f"- run {run['run']}, call {c['uuid'][:8]}: `{m['slot']}` want {m['want']!r}, "
           f"got {m['got']!r} (heard: {' · '.join(c['heard'])})"
           for run in out["runs"] for c in run["calls"] for m in c["mismatches"]]
    cut = [f"- run {run['run']}, call {c['uuid'][:8]}: {t['caller']!r}"
           + (f" (asked again: {', '.join(t['asked_again'])})" if t["asked_again"] else
              " (agent audio during the pause)")
           for run in out["runs"] for c in run["calls"] for t in c["turns"] if t["cut_off"]]
    if bad:
        lines += ["", "Slots wrong:", *bad]
    if cut:
        lines += ["", "Turns cut off:", *cut]
    per_turn: dict[str, list[float]] = {}
    for run in out["runs"]:
        for c in run["calls"]:
            for t in c["turns"]:
                if t["latency_ms"] is not None:
                    per_turn.setdefault(t["caller"], []).append(t["latency_ms"])
    lines += ["", "| caller's line | at the caller, ms (every call and run) |", "|---|---|"]
    lines += [f"| {k} | {', '.join(fmt(v) for v in vs)} |" for k, vs in per_turn.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--script", choices=("demo", "slow"), default="demo")
    ap.add_argument("--calls", type=int, default=1, help="concurrent callers")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print every turn as JSON on stdout")
    ap.add_argument("--out", type=Path, default=None,
                    help="append a markdown section here (bench/results/offline_turns.md)")
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "flowagent-bench-offline-turns",
                    help="prompt and embedding cache kept between runs (as serve's)")
    ap.add_argument("-v", "--verbose", action="store_true", help="every turn and transcript")
    a = ap.parse_args()
    out = asyncio.run(bench(a.script, a.calls, a.runs, a.cache, a.verbose))
    command = ".venv/bin/python bench/bench_offline_turns.py " + shlex.join(sys.argv[1:])
    if a.json:
        print(json.dumps(out, default=str))
    else:
        print(markdown(out, command))
    if a.out is not None:
        with a.out.open("a", encoding="utf-8") as f:
            f.write(markdown(out, command) + "\n")


if __name__ == "__main__":
    main()
