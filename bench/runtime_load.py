"""Runtime benchmarks: a flowagent server in one process, a load generator in another.

    python bench/runtime_load.py latency  --calls 1,100,1000   # runner-added latency
    python bench/runtime_load.py capacity --calls 250,500,750,1000
    python bench/runtime_load.py barge                          # barge-in reaction time
    python bench/runtime_load.py cloud                          # simulated cloud latencies
    python bench/runtime_load.py cloud --mismatch 0.2           # ...20% interims != final
    python bench/runtime_load.py cloud --no-preemptive          # ...no preemptive generation
    python bench/runtime_load.py capacity --transport websocket # the same over chan_websocket
    python bench/runtime_load.py barge --transport websocket    # barge-in by FLUSH_MEDIA

The server is the real runtime (AudioSocket server + sessions + paced player + control API) with
the fake providers chosen by the flows in bench/flows/, plus one extra read-only route
(`GET /bench/stats`, mounted through `api.create_app(extra_routes=...)`) that reports the pacing
clock's tick times, the per-turn latency rows of finished and live calls, and the process RSS.
The load generator plays N callers exactly as Asterisk would: UUID, then one 20 ms frame every
20 ms (silence, with a 300 ms tone every few seconds as "speech", so the VAD runs on every
inbound frame and turns happen), and measures what arrives.

Figures (what each scenario prints):
- runner-added latency: end of the caller's turn (VAD end of speech) -> first audio frame of the
  answer written to the socket, with instant fake providers (server-side timestamps).
- frame spacing jitter: |spacing - 20 ms| of outbound frames; from the server's tick log (first
  and last stream written in each tick) and, as a cross-check, from probe callers' arrival times
  (which include the load generator's own scheduling delays).
- memory per call: (RSS with N calls - RSS idle) / N.

`--transport websocket` plays the callers as Asterisk's chan_websocket does instead (an HTTP
upgrade to /chan_websocket with the call id in the URL, MEDIA_START, one BINARY 20 ms frame
every 20 ms) against the same server's WebSocket listener. Asterisk keeps the playout clock
there, so each fake channel plays out what it is sent on its own 20 ms clock (answering
MARK_MEDIA when playout reaches it, dropping its queue on FLUSH_MEDIA) and the figures are taken
on that clock: barge-in is the last of our speech the caller hears after their onset, and an
underrun is the channel's queue running dry inside an utterance. The load generator frames
WebSocket messages itself (pre-built, zero mask key) so that a thousand channels cost it what
the AudioSocket ones do.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowagent import audio  # noqa: E402
from flowagent.asterisk.audiosocket import (  # noqa: E402
    HEADER,
    Kind,
    encode,
    encode_uuid,
)

FLOWS = ROOT / "bench" / "flows"
FRAME = 0.02


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# =============================================================================================
# server process
# =============================================================================================


async def serve(flow: Path, keepalive_ms: int) -> None:
    from aiohttp import web

    from flowagent.server.audiosocket_server import AudioSocketServer
    from flowagent.server.control_api import RUNTIME_KEY, create_app, start_api
    from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig, tune_gc
    from flowagent.server.stores import open_store

    os.environ.setdefault("FLOWAGENT_API_TOKEN", "bench")
    flows = FlowSet(ProviderPool())
    flows.load(flow)
    # the call-record store: in memory unless BENCH_STORE names a file or postgresql:// URL
    # (bench/bench_store.py compares them)
    store = await open_store(os.environ.get("BENCH_STORE", ":memory:"))
    config = RuntimeConfig(keepalive_ms=keepalive_ms)
    if os.environ.get("BENCH_UUID_TIMEOUT_S"):  # bench_fuzz.py: idle connections end sooner
        config.uuid_timeout_s = float(os.environ["BENCH_UUID_TIMEOUT_S"])
    if os.environ.get("BENCH_CHECKPOINT_S"):  # bench_store.py: records written only at the end
        config.checkpoint_s = float(os.environ["BENCH_CHECKPOINT_S"])
    rt = Runtime(flows, store, config=config)
    tune_gc()
    server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
    await server.start()
    from flowagent.server.websocket_server import WebSocketServer

    ws_server = WebSocketServer(rt, "127.0.0.1", 0)
    await ws_server.start()

    async def stats(request: web.Request) -> web.Response:
        r = request.app[RUNTIME_KEY]
        rows: list[dict[str, Any]] = []
        for rec in list(r.recent.values()):
            rows += rec.get("latency", [])
        for s in list(r.sessions.values()):
            rows += s.turns
        body = {
            "ticks": list(r.player.tick_log),
            "late_ticks": r.player.late_ticks,
            "reanchors": r.player.reanchors,
            "turns": rows,
            "rss_kb": rss_kb(),
            "cpu_s": time.process_time(),
            "now": time.monotonic(),
            "frames_in": r.metrics.frames_received
            + sum(s.line.frames_in for s in list(r.sessions.values())),
            "active": len(r.sessions),
            "streams": r.player.active,
            "barge_ins": r.metrics.barge_ins_total,
            "errors": dict(r.metrics.errors),
            "store_rows": r.metrics.store_rows, "store_writes": r.metrics.store_writes,
            "store_failures": r.metrics.store_write_failures,
            "store_queue": r.records.pending,
            "underruns": r.metrics.underruns + sum(
                s.line.out.underruns for s in list(r.sessions.values())
                if s.line.out is not None),
            # which media path ran (FLOWAGENT_MEDIA) and whether its thread got real-time
            "backend": getattr(r.player, "backend", "python"),
            "realtime": (r.player._engine.stats()["realtime"]
                         if hasattr(r.player, "_engine") else 0),
            **vad_work(),
        }
        return web.json_response(body)

    async def objects(request: web.Request) -> web.Response:
        """Live objects by type (bench_soak.py diffs two of these to find what grows) and the
        sizes of the runtime's own collections."""
        import collections
        import gc

        r = request.app[RUNTIME_KEY]
        if request.query.get("collect"):  # only what is really kept, not garbage waiting
            gc.collect()
        everything = gc.get_objects()
        counts = collections.Counter(type(o).__qualname__ for o in everything)
        g = r.garbage.stats
        pauses = sorted(g.pauses)
        return web.json_response({
            "types": dict(counts.most_common(300)),
            "sizes": {"sessions": len(r.sessions), "recent": len(r.recent),
                      "claimed": len(r.claimed), "pending": len(r.pending),
                      "tasks": len(asyncio.all_tasks())},
            "tracked": len(everything),
            "tracked_in_recent": len(gc.get_referents(*r.recent.values())) if r.recent else 0,
            "rss_kb": rss_kb(),
            "gc": {"collections": g.collections, "freed": g.freed,
                   "pause_max_ms": round(g.pause_max_s * 1000, 1),
                   "pause_p50_ms": round(pauses[len(pauses) // 2] * 1000, 1) if pauses else 0}})

    async def collect(request: web.Request) -> web.Response:
        """A full garbage collection now: how long it paused the loop and what it freed (the
        soak tells garbage that waits for a collection from memory that is really kept)."""
        import gc

        before = rss_kb()
        t0 = time.perf_counter()
        freed = gc.collect()
        return web.json_response({"pause_ms": round((time.perf_counter() - t0) * 1000, 1),
                                  "freed": freed, "rss_kb_before": before, "rss_kb": rss_kb(),
                                  "counts": gc.get_count()})

    async def reset(request: web.Request) -> web.Response:
        r = request.app[RUNTIME_KEY]
        r.player.tick_log.clear()
        r.recent.clear()
        for s in list(r.sessions.values()):
            s.turns.clear()
        return web.json_response({"ok": True})

    app = create_app(rt, extra_routes=[web.get("/bench/stats", stats),
                                       web.get("/bench/objects", objects),
                                       web.post("/bench/gc", collect),
                                       web.post("/bench/reset", reset)])
    runner, http_port = await start_api(app, "127.0.0.1", 0)
    print(f"READY {server.address[1]} {http_port} {ws_server.address[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await ws_server.close()
    await server.close()
    await runner.cleanup()
    await store.close()


def vad_work() -> dict[str, int]:
    """Silero windows run by the model / spared by the silence gate (0 with other VADs)."""
    silero = sys.modules.get("flowagent.providers.local.silero")
    models = list(silero._MODELS.values()) if silero is not None else []
    return {"vad_windows_run": sum(m.windows_run for m in models),
            "vad_batches_run": sum(m.batches_run for m in models),
            "vad_windows_gated": sum(m.windows_gated for m in models),
            "vad_windows_shed": sum(m.windows_shed for m in models)}


# =============================================================================================
# load generator process
# =============================================================================================


class Caller(asyncio.Protocol):
    """One fake Asterisk channel; cheap enough for a thousand in one process."""

    def __init__(self, probe: bool) -> None:
        self.probe = probe
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.arrivals: list[float] = []  # probes: arrival time of every audio frame
        self.speech: list[float] = []  # probes: arrival times of non-silent frames
        self.frames = 0
        self.closed = False
        self.hangup = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(encode_uuid(str(uuidlib.uuid4())))

    def data_received(self, data: bytes) -> None:
        if not self.probe:
            # only the probes' arrivals are measured: the other callers read (the kernel work
            # of receiving is still done) but do not parse in Python, so the load generator,
            # which shares the server's two cores, takes as little CPU from it as it can
            return
        now = time.monotonic()
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 3:
            kind, length = HEADER.unpack_from(buf, pos)
            if n - pos - 3 < length:
                break
            if kind == Kind.HANGUP:
                self.hangup = True
            else:
                self.frames += 1
                if self.probe:
                    self.arrivals.append(now)
                    payload = bytes(buf[pos + 3 : pos + 3 + length])
                    if payload.count(0) < len(payload):
                        self.speech.append(now)
            pos += 3 + length
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


# -- chan_websocket channels ------------------------------------------------------------------

#: what the fake channels announce in MEDIA_START: slin (8 kHz), 20 ms frames, as AudioSocket's
WS_FRAME_BYTES = 320
#: channels gaps up to this long inside our audio count as underruns (longer: between replies)
WS_UNDERRUN_GAP_S = 0.15


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One client-to-server WebSocket frame: FIN, masked with an all-zero key (RFC 6455 requires
    a mask, not a random one), so the payload goes as it is and frames can be built once."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def ws_event(event: str, **fields: Any) -> bytes:
    return ws_frame(0x1, json.dumps({"event": event, "channel_id": "bench", **fields},
                                    separators=(",", ":")).encode())


class WsCaller(asyncio.Protocol):
    """One fake chan_websocket channel: the upgrade, MEDIA_START, then media in; it plays what
    it is sent on its own 20 ms clock, answers MARK_MEDIA when playout reaches the mark and
    drops its queue on FLUSH_MEDIA. Cheap: the work is per message received, not per frame."""

    def __init__(self, probe: bool) -> None:
        self.probe = probe
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.closed = False
        self.hangup = False
        self.call_id = str(uuidlib.uuid4())
        self.play_end = 0.0  # when the channel's queue runs dry (monotonic)
        self.frames = 0
        self.underruns = 0
        self.speech: list[float] = []  # probes: when each of our speech frames plays
        self._marks: dict[str, asyncio.TimerHandle] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((
            f"GET /chan_websocket?uuid={self.call_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
            assert self.transport is not None
            self.transport.write(ws_event(
                "MEDIA_START", connection_id="bench", channel="WebSocket/bench/1",
                format="slin", optimal_frame_size=WS_FRAME_BYTES, ptime=20,
                channel_variables={}))
        now = time.monotonic()
        pos, n = 0, len(buf)
        while n - pos >= 2:
            op, size, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos - head < size:
                break
            start = pos + head
            if op == 0x2:
                self._media(now, buf, start, size)
            elif op == 0x1:
                self._command(now, bytes(buf[start:start + size]))
            elif op == 0x8:
                self.closed = True
            pos = start + size
        del buf[:pos]

    def _media(self, now: float, buf: bytearray, start: int, size: int) -> None:
        frames = size // WS_FRAME_BYTES
        if now - WS_UNDERRUN_GAP_S < self.play_end < now - FRAME:
            self.underruns += 1  # the queue ran dry for a moment inside our audio
        begin = max(self.play_end, now)
        if self.probe:
            for i in range(frames):
                seg = buf[start + i * WS_FRAME_BYTES:start + (i + 1) * WS_FRAME_BYTES]
                if seg.count(0) < WS_FRAME_BYTES:
                    self.speech.append(begin + i * FRAME)
        self.play_end = begin + frames * FRAME
        self.frames += frames

    def _command(self, now: float, text: bytes) -> None:
        cmd = json.loads(text)
        name = cmd.get("command")
        if name == "MARK_MEDIA":
            loop = asyncio.get_running_loop()
            cid = str(cmd.get("correlation_id", ""))
            self._marks[cid] = loop.call_at(loop.time() + max(0.0, self.play_end - now),
                                            self._mark, cid)
        elif name == "FLUSH_MEDIA":
            self.play_end = now
            for h in self._marks.values():
                h.cancel()
            self._marks.clear()
            if self.probe:  # what was queued never plays
                self.speech = [t for t in self.speech if t <= now]
        elif name == "HANGUP":
            self.hangup = True
            if self.transport is not None:
                self.transport.close()

    def _mark(self, correlation_id: str) -> None:
        self._marks.pop(correlation_id, None)
        if self.transport is not None and not self.closed:
            self.transport.write(ws_event("MEDIA_MARK_PROCESSED",
                                          correlation_id=correlation_id))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for h in self._marks.values():
            h.cancel()


def caller_frames(speech_raw: str, line_dbfs: float | None) -> tuple[list[bytes], list[bytes]]:
    """(speech frames, line frames) as bench/loadgen.c makes them: the tone or a speech file,
    over Gaussian line noise at `line_dbfs` (None: digital silence)."""
    import numpy as np

    rng = np.random.default_rng()
    level = 0.0 if line_dbfs is None else 32767.0 * 10 ** (line_dbfs / 20)
    noise = rng.normal(0.0, 1.0, 64 * 160) * level
    if speech_raw != "-":
        voice = np.frombuffer(Path(speech_raw).read_bytes(), dtype="<i2").astype(np.float64)
    else:
        voice = np.frombuffer(audio.tone(300, 300, 8000, amplitude=0.4), "<i2").astype(float)
    voice = voice[: voice.size // 160 * 160]
    voice = voice + np.resize(noise, voice.size)

    def frames(x: Any) -> list[bytes]:
        pcm = np.clip(x, -32768, 32767).astype("<i2").tobytes()
        return [encode(Kind.SLIN_8K, pcm[i : i + 320]) for i in range(0, len(pcm), 320)]

    return frames(voice), frames(noise)


def speech_file(kind: str) -> str:
    """"-" (the tone) or a raw s16le 8 kHz file of a real caller's sentence (the speech part of
    tests/data/speech/yes_right.wav, "Yes, that is right.", ~1.6 s) for VADs a tone does not
    fool."""
    if kind == "tone":
        return "-"
    from flowagent.audio import read_wav

    meta = {e["file"]: e for e in json.loads(
        (ROOT / "tests/data/speech/transcripts.json").read_text("utf-8"))}["yes_right.wav"]
    pcm, rate = read_wav(ROOT / "tests/data/speech/yes_right.wav")
    assert rate == 8000
    a = int((meta["speech_start_s"] - 0.1) * rate) * 2
    b = int((meta["speech_end_s"] + 0.1) * rate) * 2
    out = ROOT / "bench" / ".speech_8k.raw"
    out.write_bytes(pcm[max(0, a) : b])
    return str(out)


async def load(port: int, calls: int, duration: float, cycle_s: float, probes: int,
               ramp_s: float, speak: bool, speech_raw: str = "-",
               line_dbfs: float | None = None, transport: str = "audiosocket"
               ) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    speech_frames, line_frames = caller_frames(speech_raw, line_dbfs)
    websocket = transport == "websocket"
    if websocket:  # the same audio as chan_websocket BINARY messages
        speech_frames = [ws_frame(0x2, f[3:]) for f in speech_frames]
        line_frames = [ws_frame(0x2, f[3:]) for f in line_frames]
    make: Any = WsCaller if websocket else Caller
    cycle = int(cycle_s / FRAME)
    clients: list[tuple[Any, int]] = []
    failed = 0
    connect_gap = ramp_s / max(1, calls)
    for i in range(calls):
        try:
            _, proto = await loop.create_connection(lambda i=i: make(i < probes), "127.0.0.1",
                                                    port)
            clients.append((proto, random.randrange(cycle)))
        except OSError:
            failed += 1
        if connect_gap:
            await asyncio.sleep(connect_gap)
    print("SENDING", flush=True)  # the orchestrator's steady-state window starts from here
    t0 = time.monotonic()
    cpu0 = time.process_time()
    n = 0
    late_sends = 0
    while time.monotonic() - t0 < duration:
        n += 1
        delay = t0 + n * FRAME - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -FRAME:
            late_sends += 1
        for c, offset in clients:
            if c.closed or c.transport is None or (websocket and not c.open):
                continue
            pos = (n + offset) % cycle
            if speak and pos < len(speech_frames):
                c.transport.write(speech_frames[pos])
            else:
                c.transport.write(line_frames[(pos + offset) % len(line_frames)])
    jitter: list[float] = []
    for c, _ in clients:
        if not websocket and c.probe and len(c.arrivals) > 10:
            a = c.arrivals[len(c.arrivals) // 5 :]  # skip the start (greeting, ramp)
            # gaps over 100 ms are idle periods (keepalive mode sends no silence), not pacing
            jitter += [abs((b - x) - FRAME) * 1000 for x, b in itertools.pairwise(a)
                       if b - x < 0.1]
    alive = sum(1 for c, _ in clients if not c.closed)
    load_cores = (time.process_time() - cpu0) / (time.monotonic() - t0)
    for c, _ in clients:
        if c.transport is not None:
            c.transport.close()
    out = {"connected": len(clients), "failed": failed, "alive_at_end": alive,
           "probe_jitter_p50_ms": pct(jitter, 50), "probe_jitter_p99_ms": pct(jitter, 99),
           "load_late_sends": late_sends, "load_gen_cores": round(load_cores, 3)}
    if websocket:  # Asterisk keeps the clock: what its queues saw instead of our spacing
        out["channel_underruns"] = sum(c.underruns for c, _ in clients)
        out["channel_frames_played"] = sum(c.frames for c, _ in clients)
        out["upgraded"] = sum(1 for c, _ in clients if c.open)
    return out


async def barge_load(port: int, trials: int) -> dict[str, Any]:
    """Interrupt the agent's long prompt `trials` times; time from our first speech frame to the
    last agent speech frame we receive."""
    loop = asyncio.get_running_loop()
    silence = encode(Kind.SLIN_8K, bytes(320))
    tone = audio.tone(400, 300, 8000, amplitude=0.4)
    speech = [encode(Kind.SLIN_8K, tone[i : i + 320]) for i in range(0, len(tone), 320)]
    _, c = await loop.create_connection(lambda: Caller(True), "127.0.0.1", port)
    reactions: list[float] = []
    t0 = time.monotonic()
    n = 0
    queue: list[bytes] = []
    onset = 0.0
    state = "wait_speech"
    wait_until = t0 + 1.0
    while len(reactions) < trials and time.monotonic() - t0 < 120:
        n += 1
        delay = t0 + n * FRAME - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        if state == "wait_speech" and now > wait_until and c.speech and now - c.speech[-1] < 0.05:
            queue = list(speech)
            onset = now + 0.0
            state = "speaking"
        frame = queue.pop(0) if queue else silence
        if c.closed or c.transport is None:
            break
        c.transport.write(frame)
        if state == "speaking" and not queue:
            state = "measure"
        # measure before the agent's next answer can start (speech 400 ms + end of turn 300 ms)
        if state == "measure" and now - onset > 0.55:
            last = max((t for t in c.speech if t >= onset), default=onset)
            reactions.append((last - onset) * 1000)
            state = "wait_speech"
            wait_until = now + 1.0 + random.random() * 0.5
    if c.transport is not None:
        c.transport.close()
    return {"trials": len(reactions), "reaction_p50_ms": pct(reactions, 50),
            "reaction_p99_ms": pct(reactions, 99), "reaction_max_ms": max(reactions, default=0)}


async def barge_load_ws(port: int, trials: int) -> dict[str, Any]:
    """`barge_load` over chan_websocket: from our first speech frame to the last frame of the
    agent's speech the channel plays (FLUSH_MEDIA takes back what we had queued ahead)."""
    loop = asyncio.get_running_loop()
    silence = ws_frame(0x2, bytes(WS_FRAME_BYTES))
    tone = audio.tone(400, 300, 8000, amplitude=0.4)
    speech = [ws_frame(0x2, tone[i:i + WS_FRAME_BYTES])
              for i in range(0, len(tone), WS_FRAME_BYTES)]
    _, c = await loop.create_connection(lambda: WsCaller(True), "127.0.0.1", port)
    reactions: list[float] = []
    ahead: list[float] = []  # audio queued at the channel at the caller's onset
    t0 = time.monotonic()
    n = 0
    queue: list[bytes] = []
    onset = 0.0
    state = "wait_speech"
    wait_until = t0 + 1.0
    while len(reactions) < trials and time.monotonic() - t0 < 120:
        n += 1
        delay = t0 + n * FRAME - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        playing = any(now - 0.05 < t <= now for t in c.speech[-100:])
        if state == "wait_speech" and now > wait_until and playing:
            queue = list(speech)
            onset = now
            ahead.append((c.play_end - now) * 1000)
            state = "speaking"
        frame = queue.pop(0) if queue else silence
        if c.closed or c.transport is None:
            break
        if c.open:
            c.transport.write(frame)
        if state == "speaking" and not queue:
            state = "measure"
        if state == "measure" and now - onset > 0.55:
            last = max((t for t in c.speech if onset <= t <= now), default=onset)
            reactions.append((last - onset) * 1000)
            state = "wait_speech"
            wait_until = now + 1.0 + random.random() * 0.5
    if c.transport is not None:
        c.transport.close()
    return {"trials": len(reactions), "reaction_p50_ms": pct(reactions, 50),
            "reaction_p99_ms": pct(reactions, 99), "reaction_max_ms": max(reactions, default=0),
            "queued_ahead_at_onset_p50_ms": pct(ahead, 50),
            "queued_ahead_at_onset_max_ms": max(ahead, default=0)}


# =============================================================================================
# orchestration
# =============================================================================================


class Server:
    def __init__(self, flow: Path, keepalive_ms: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_serve", str(flow), "--keepalive-ms", str(keepalive_ms)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.proc.kill()
            raise RuntimeError("bench server did not start")
        self.port, self.http, self.ws_port = int(line[1]), int(line[2]), int(line[3])

    def port_for(self, transport: str) -> int:
        return self.ws_port if transport == "websocket" else self.port

    def get(self, path: str, method: str = "GET") -> Any:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", method=method,
                                     headers={"Authorization": "Bearer bench"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


#: which load generator plays the callers: "python" (the `_load` sub-command, uvloop) or "c"
#: (bench/loadgen.c: kernel cost only, probes read by their own thread, so their arrival
#: spacing is the spacing on the wire rather than the load generator's own loop delay)
LOADGEN = "python"


def loadgen_binary() -> Path:
    """Build bench/loadgen from bench/loadgen.c when missing or older than its source."""
    src = ROOT / "bench" / "loadgen.c"
    exe = ROOT / "bench" / "loadgen"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(exe), str(src), "-lm"], check=True)
    return exe


def start_load(port: int, **kw: Any) -> subprocess.Popen[str]:
    if LOADGEN == "c" and not kw.get("barge") and kw.get("transport") != "websocket":
        args = [str(loadgen_binary()), str(port), str(kw.get("calls", 1)),
                str(kw.get("duration", 10)), str(kw.get("cycle_s", 2.0)),
                str(kw.get("probes", 0)), str(kw.get("ramp_s", 0)), str(int(kw.get("speak", 1))),
                str(kw.get("speech_raw", "-")),
                "-" if kw.get("line_dbfs") is None else str(kw["line_dbfs"])]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
    args = [sys.executable, __file__, "_load", "--port", str(port)]
    for k, v in kw.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def finish_load(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return json.loads(out.strip().splitlines()[-1])


def run_load(port: int, **kw: Any) -> dict[str, Any]:
    return finish_load(start_load(port, **kw))


def tick_jitter(ticks: list[list[float]]) -> dict[str, float]:
    starts = [t[0] for t in ticks]
    ends = [t[1] for t in ticks]
    first = [abs((b - a) - FRAME) * 1000 for a, b in itertools.pairwise(starts)]
    last = [abs((b - a) - FRAME) * 1000 for a, b in itertools.pairwise(ends)]
    cost = [(e - s) * 1000 for s, e in ticks]
    return {"first_stream_p99_ms": pct(first, 99), "last_stream_p99_ms": pct(last, 99),
            "jitter_p99_ms": max(pct(first, 99), pct(last, 99)),
            "tick_cost_p50_ms": pct(cost, 50), "tick_cost_p99_ms": pct(cost, 99)}


def scenario_latency(counts: list[int], duration: float) -> list[dict[str, Any]]:
    results = []
    for n in counts:
        srv = Server(FLOWS / "runtime_turns.yaml", keepalive_ms=500)
        try:
            st0 = srv.get("/bench/stats")
            idle = st0["rss_kb"]
            # calls connect over 20% of the run; turns every 2 s per call (300 ms of speech)
            res = run_load(srv.port, calls=n, duration=duration, cycle_s=2.0, probes=min(n, 10),
                           ramp_s=min(5.0, n * 0.005), speak=1)
            st = srv.get("/bench/stats")
            rows = [r for r in st["turns"] if r.get("first_frame_ms") is not None]
            ff = [r["first_frame_ms"] for r in rows]
            results.append({
                "calls": n, "turns": len(ff), **res,
                "runner_p50_ms": pct(ff, 50), "runner_p99_ms": pct(ff, 99),
                "runner_max_ms": max(ff, default=float("nan")),
                "rss_idle_kb": idle, "rss_kb": st["rss_kb"],
                "kb_per_call": (st["rss_kb"] - idle) / n if n >= 100 else None,
                **tick_jitter(st["ticks"]), "late_ticks": st["late_ticks"],
                "errors": st["errors"],
                "server_cpu_s": round(st["cpu_s"] - st0["cpu_s"], 2),
                "us_per_inbound_frame": round((st["cpu_s"] - st0["cpu_s"]) * 1e6
                                              / max(1, st["frames_in"] - st0["frames_in"]), 1),
            })
        finally:
            srv.stop()
        print(json.dumps(results[-1]), flush=True)
    return results


def vad_flow(vad: str) -> Path:
    """runtime_turns.yaml with another VAD: `fake` (energy), `webrtc`, `silero` (with its
    silence gate), `silero-nogate` (the model on every window)."""
    base = FLOWS / "runtime_turns.yaml"
    if vad == "fake":
        return base
    spec: dict[str, Any] = {"name": vad.split("-")[0]}
    if vad == "silero-nogate":
        spec["options"] = {"silence_gate_dbfs": "off"}
    return flow_variant(base, lambda flow: flow["providers"].__setitem__("vad", spec))


def scenario_capacity(counts: list[int], duration: float, vad: str = "fake",
                      speech: str = "tone", line_dbfs: float | None = None,
                      cycle_s: float = 3.0, transport: str = "audiosocket"
                      ) -> list[dict[str, Any]]:
    """Continuous outbound audio on every call (silence frames every tick: the worst case for
    the pacing clock), VAD on every inbound frame, turns every 3 s per call."""
    results = []
    flow = vad_flow(vad)
    speech_raw = speech_file(speech)
    for n in counts:
        srv = Server(flow, keepalive_ms=0)
        try:
            idle = srv.get("/bench/stats")["rss_kb"]
            load_avg = os.getloadavg()[0]  # the machine is shared: say how busy it was
            ramp = min(5.0, n * 0.005)
            proc = start_load(srv.port_for(transport), calls=n, duration=duration,
                              cycle_s=cycle_s, probes=min(n, 10), ramp_s=ramp, speak=1,
                              speech_raw=speech_raw, line_dbfs=line_dbfs, transport=transport)
            # steady state only: from 2 s after every call is connected and sending to ~2 s
            # before the end; CPU, frames and ticks are taken between these two snapshots
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and not line.startswith("SENDING"):
                pass
            time.sleep(2.0)
            st0 = srv.get("/bench/stats")
            time.sleep(max(1.0, duration - 4.0))
            st1 = srv.get("/bench/stats")
            res = finish_load(proc)
            st = srv.get("/bench/stats")
            ff = [r["first_frame_ms"] for r in st["turns"] if r.get("first_frame_ms") is not None]
            cpu = st1["cpu_s"] - st0["cpu_s"]
            wall = st1["now"] - st0["now"]
            frames = max(1, st1["frames_in"] - st0["frames_in"])
            ticks = [t for t in st1["ticks"] if t[0] >= st0["now"]]
            vad_windows = st1["vad_windows_run"] - st0["vad_windows_run"]
            vad_gated = st1["vad_windows_gated"] - st0["vad_windows_gated"]
            vad_batches = max(1, st1["vad_batches_run"] - st0["vad_batches_run"])
            vad_shed = st1["vad_windows_shed"] - st0["vad_windows_shed"]
            results.append({"calls": n, "transport": transport, "backend": st["backend"],
                            "realtime": st["realtime"],
                            "vad": vad, "speech": speech, "line_dbfs": line_dbfs,
                            "cycle_s": cycle_s,
                            "vad_model_share": round(vad_windows / max(1, vad_windows
                                                                       + vad_gated), 3),
                            "vad_batch_mean": round(vad_windows / vad_batches, 1),
                            # windows the model could not take in time (0 = VAD kept up)
                            "vad_shed_share": round(vad_shed / max(1, vad_windows + vad_gated
                                                                   + vad_shed), 4),
                            **res, **tick_jitter(ticks),
                            "late_ticks": st["late_ticks"], "reanchors": st["reanchors"],
                            "underruns": st1["underruns"] - st0["underruns"],
                            "turns": len(ff), "runner_p99_ms": pct(ff, 99),
                            "kb_per_call": (st["rss_kb"] - idle) / n, "errors": st["errors"],
                            # server CPU per call-frame (one frame in + one out, VAD, turns):
                            # the figure that does not depend on the machine's other load
                            "server_cores": round(cpu / wall, 3),
                            "server_us_per_call_frame": round(cpu * 1e6 / frames, 2),
                            "inbound_fps_per_call": round(frames / wall / n, 1),
                            "load_avg_before": load_avg})
        finally:
            srv.stop()
        print(json.dumps(results[-1]), flush=True)
    if flow.parent != FLOWS:
        flow.unlink()
    return results


def scenario_barge(trials: int, transport: str = "audiosocket") -> dict[str, Any]:
    srv = Server(FLOWS / "runtime_barge.yaml", keepalive_ms=500)
    try:
        res = {"transport": transport,
               **run_load(srv.port_for(transport), barge=trials, transport=transport)}
    finally:
        srv.stop()
    print(json.dumps(res), flush=True)
    return res


def flow_variant(base: Path, edit: Any) -> Path:
    """A temporary copy of a bench flow with `edit(flow_dict)` applied (the caller unlinks it)."""
    import tempfile

    import yaml

    flow = yaml.safe_load(base.read_text())
    edit(flow)
    fd, name = tempfile.mkstemp(prefix=f"{base.stem}_", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(flow, f, sort_keys=False)
    return Path(name)


def cloud_flow(mismatch: float, preemptive: bool) -> Path:
    """runtime_cloud.yaml, or a variant of it (interim/final mismatch rate, preemptive off)."""
    base = FLOWS / "runtime_cloud.yaml"
    if mismatch == 0 and preemptive:
        return base

    def edit(flow: dict[str, Any]) -> None:
        flow["providers"]["asr"]["options"]["interim_mismatch"] = mismatch
        flow.setdefault("settings", {})["preemptive_generation"] = preemptive

    return flow_variant(base, edit)


def scenario_cloud(calls: int, duration: float, mismatch: float = 0.0,
                   preemptive: bool = True) -> dict[str, Any]:
    flow = cloud_flow(mismatch, preemptive)
    srv = Server(flow, keepalive_ms=500)
    try:
        res = run_load(srv.port, calls=calls, duration=duration, cycle_s=4.0, probes=0,
                       ramp_s=1.0, speak=1)
        st = srv.get("/bench/stats")
    finally:
        srv.stop()
        if flow.parent != FLOWS:
            flow.unlink()
    rows = [r for r in st["turns"] if r.get("first_frame_ms") is not None]

    def col(k: str, which: str | None = None) -> list[float]:
        return [r[k] for r in rows if r.get(k) is not None
                and (which is None or r.get("preemptive") == which)]

    hits, misses = col("first_frame_ms", "hit"), col("first_frame_ms", "miss")
    out = {"calls": calls, "turns": len(rows), "interim_mismatch": mismatch,
           "preemptive_generation": preemptive, **res,
           "preemptive_hits": len(hits), "preemptive_misses": len(misses),
           "hit_rate": round(len(hits) / max(1, len(hits) + len(misses)), 3),
           "hit_first_audio_p50_ms": pct(hits, 50), "hit_first_audio_p99_ms": pct(hits, 99),
           "miss_first_audio_p50_ms": pct(misses, 50),
           "miss_first_audio_p99_ms": pct(misses, 99),
           "miss_reasons": {why: sum(1 for r in rows if r.get("preemptive_miss") == why)
                            for why in {r.get("preemptive_miss") for r in rows} if why},
           # hits whose audio was not ready when the final came (LLM + TTS slower than the ASR)
           "hits_audio_after_final": sum(
               1 for r in rows if r.get("preemptive") == "hit"
               and (r.get("tts_first_audio_ms") or 0) > (r.get("asr_final_ms") or 0)),
           "asr_final_p99_ms": pct(col("asr_final_ms"), 99),
           "end_of_speech_to_first_audio_p50_ms": pct(col("first_frame_ms"), 50),
           "end_of_speech_to_first_audio_p99_ms": pct(col("first_frame_ms"), 99),
           "asr_final_p50_ms": pct(col("asr_final_ms"), 50),
           "llm_first_token_p50_ms": pct(col("llm_first_token_ms"), 50),
           "tts_first_audio_p50_ms": pct(col("tts_first_audio_ms"), 50),
           "runner_share_p50_ms": pct(col("runner_ms"), 50),
           "runner_share_p99_ms": pct(col("runner_ms"), 99)}
    # the providers alone, at the middle of each published range: 175 + 40 + 65
    out["provider_latency_sum_mean_ms"] = sum(statistics.mean(r) for r in
                                              ((150, 200), (30, 50), (50, 80)))
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("_serve")
    s.add_argument("flow", type=Path)
    s.add_argument("--keepalive-ms", type=int, default=500)
    ld = sub.add_parser("_load")
    ld.add_argument("--port", type=int, required=True)
    ld.add_argument("--calls", type=int, default=1)
    ld.add_argument("--duration", type=float, default=10)
    ld.add_argument("--cycle-s", type=float, default=2.0)
    ld.add_argument("--probes", type=int, default=0)
    ld.add_argument("--ramp-s", type=float, default=0)
    ld.add_argument("--speak", type=int, default=1)
    ld.add_argument("--barge", type=int, default=0)
    ld.add_argument("--speech-raw", default="-")
    ld.add_argument("--line-dbfs", type=float, default=None)
    ld.add_argument("--transport", default="audiosocket")
    for name in ("latency", "capacity"):
        sp = sub.add_parser(name)
        sp.add_argument("--calls", default="1,100,1000" if name == "latency" else "500,750,1000")
        sp.add_argument("--duration", type=float, default=15)
        sp.add_argument("--loadgen", choices=["python", "c"], default="python",
                        help="who plays the callers: the Python `_load` or bench/loadgen.c")
    cap = sub.choices["capacity"]
    cap.add_argument("--vad", choices=["fake", "webrtc", "silero", "silero-nogate"],
                     default="fake", help="the VAD on every inbound frame (fake: energy)")
    cap.add_argument("--speech", choices=["tone", "voice"], default="tone",
                     help="what callers say: a 300 ms tone, or a recorded sentence (~1.6 s)")
    cap.add_argument("--cycle-s", type=float, default=3.0,
                     help="each caller speaks once every this many seconds (default 3)")
    cap.add_argument("--line-dbfs", type=float, default=None,
                     help="Gaussian line noise under everything, in dBFS (default: none)")
    b = sub.add_parser("barge")
    b.add_argument("--trials", type=int, default=20)
    for sp in (cap, b):
        sp.add_argument("--transport", choices=["audiosocket", "websocket"],
                        default="audiosocket",
                        help="how the fake Asterisk hands calls over (websocket: chan_websocket;"
                        " always the Python load generator)")
    c = sub.add_parser("cloud")
    c.add_argument("--calls", type=int, default=20)
    c.add_argument("--duration", type=float, default=20)
    c.add_argument("--mismatch", type=float, default=0.0,
                   help="probability that the final transcript differs from the interim")
    c.add_argument("--no-preemptive", action="store_true",
                   help="settings.preemptive_generation: false")
    a = p.parse_args()
    global LOADGEN
    LOADGEN = getattr(a, "loadgen", None) or LOADGEN
    if a.cmd == "_serve":
        if os.environ.get("BENCH_PROFILE"):
            import cProfile

            cProfile.runctx("asyncio.run(serve(a.flow, a.keepalive_ms))", globals(),
                            {"a": a, "serve": serve, "asyncio": asyncio},
                            os.environ["BENCH_PROFILE"])
        else:
            from flowagent.server.runtime import new_event_loop

            with asyncio.Runner(loop_factory=new_event_loop) as r:
                r.run(serve(a.flow, a.keepalive_ms))
    elif a.cmd == "_load":
        from flowagent.server.runtime import new_event_loop

        with asyncio.Runner(loop_factory=new_event_loop) as r:
            if a.barge:
                res = r.run(barge_load_ws(a.port, a.barge) if a.transport == "websocket"
                            else barge_load(a.port, a.barge))
            else:
                res = r.run(load(a.port, a.calls, a.duration, a.cycle_s, a.probes, a.ramp_s,
                                 bool(a.speak), a.speech_raw, a.line_dbfs, a.transport))
        print(json.dumps(res))
    elif a.cmd == "latency":
        scenario_latency([int(x) for x in a.calls.split(",")], a.duration)
    elif a.cmd == "capacity":
        scenario_capacity([int(x) for x in a.calls.split(",")], a.duration, a.vad, a.speech,
                          a.line_dbfs, a.cycle_s, a.transport)
    elif a.cmd == "barge":
        scenario_barge(a.trials, a.transport)
    elif a.cmd == "cloud":
        scenario_cloud(a.calls, a.duration, a.mismatch, not a.no_preemptive)


if __name__ == "__main__":
    main()
