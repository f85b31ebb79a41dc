"""Barge-in from onset, measured at the caller over real TCP AudioSocket with the shipped settings
(Silero VAD, `min_speech_ms: 250`, sensitivity 0.5):

- **speech**: the recorded caller lines (tests/data/speech, phone band + noise) spoken over our
  prompt; from the caller's speech onset (the recording's `speech_start_s`) to our audio
  **ducked** (the first agent frame at least 6 dB under its level before the onset) and
  **stopped** (the first silent frame after our last speech frame);
- **false barge-ins** (our audio stopped when it should not have been) on: line noise (-45 dBFS,
  phone band), echo of our own prompt (Piper's voice, fed back by the caller at -10/-15/-20 dB,
  live, one frame late), coughs (80-200 ms noise bursts) and back-channels ("mm-hm", "uh-huh",
  "yeah" from the local Piper voice, phone band). For each, also how often the audio ducked and
  whether it came back to full volume.

    .venv/bin/python bench/bench_barge_in.py --trials 30 [--duck-db 15] [--echo-rejection on]

`--echo-rejection on|off` sets `settings.barge_in.echo_rejection` (before/after on one build).
`--duck-db` omitted: the flow does not mention it (runs on code from before the setting existed,
with that code's default). No downloads: Silero's and Piper's model files come from packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowagent import audio
from flowagent.asterisk.caller import AGENT_SPEECH_RMS, AudioSocketCaller
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig
from flowagent.server.stores import open_store
from flowagent.server.webhooks import WebhookConfig, Webhooks

ROOT = Path(__file__).resolve().parents[1]
SPEECH_DIR = ROOT / "tests" / "data" / "speech"
RATE = 8000
FRAME_S = 0.02
DEBUG = False
PROMPT = ("Thanks for calling. I can help you book a removal, move a booking, or answer a "
          "question about prices, packing and storage, and if you would rather talk to a person "
          "I can put you through to the office as soon as someone is free to take the call.")


def flow_yaml(tts: str, duck_db: float | None, echo_rejection: bool | None = None) -> str:
    tts_line = ("{name: fake, options: {ms_per_word: 150}}" if tts == "tone"
                else "{name: piper}")
    duck = "" if duck_db is None else f", duck_db: {duck_db:g}"
    if echo_rejection is not None:
        duck += f", echo_rejection: {str(echo_rejection).lower()}"
    return f"""flowagent: 1
name: Bench barge-in from onset
start: talk
providers:
  asr: {{name: fake, options: {{transcripts: [""]}}}}
  tts: {tts_line}
  vad: {{name: silero}}
settings:
  barge_in: {{enabled: true, min_speech_ms: 250, sensitivity: 0.5{duck}}}
  end_of_turn_ms: 600
  no_input: {{timeout_s: 60}}
states:
  talk:
    ask: "{PROMPT}"
    next:
      - intent: goodbye
        go: bye
      - go: talk
  bye:
    say: Goodbye.
    end: true
"""


class Bench:
    def __init__(self, flow: Path) -> None:
        self.flow = flow

    async def __aenter__(self) -> Bench:
        flows = FlowSet(ProviderPool(), {})
        flows.load(self.flow)
        self.tmp = tempfile.TemporaryDirectory()
        self.store = await open_store(Path(self.tmp.name) / "calls.db")
        hooks = Webhooks(WebhookConfig(url="", secret="", timeout_s=2, retries=1,
                                       backoff_s=0.05, poll_s=0.2))
        self.rt = Runtime(flows, self.store, config=RuntimeConfig(), webhooks=hooks)
        self.server = AudioSocketServer(self.rt, "127.0.0.1", 0)
        await self.server.start()
        entry = flows.default
        await entry.prewarm()  # the prompt is cached, as in `serve`
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()
        await self.store.close()
        self.tmp.cleanup()

    @property
    def port(self) -> int:
        return int(self.server.address[1])


def band(pcm: np.ndarray) -> np.ndarray:
    """300-3400 Hz, as a phone line carries it (FFT mask: good enough for a stimulus)."""
    spec = np.fft.rfft(pcm)
    f = np.fft.rfftfreq(pcm.size, 1 / RATE)
    spec[(f < 300) | (f > 3400)] = 0
    return np.fft.irfft(spec, pcm.size)


def to_pcm(x: np.ndarray) -> bytes:
    return bytes(np.clip(x * 32767, -32768, 32767).astype("<i2").tobytes())


def line_noise(rng: random.Random, ms: int = 1500, dbfs: float = -45.0) -> bytes:
    n = RATE * ms // 1000
    x = band(np.random.default_rng(rng.randrange(1 << 30)).standard_normal(n))
    x *= 10 ** (dbfs / 20) / max(1e-9, float(np.sqrt(np.mean(x * x))))
    return to_pcm(x)


def cough(rng: random.Random) -> bytes:
    ms = rng.randrange(80, 201)
    n = RATE * ms // 1000
    x = band(np.random.default_rng(rng.randrange(1 << 30)).standard_normal(n))
    env = np.exp(-np.linspace(0, rng.uniform(2.5, 5.0), n))  # a burst that dies away
    env[: n // 10] *= np.linspace(0, 1, n // 10)
    x = x * env
    x *= rng.uniform(0.25, 0.6) / max(1e-9, float(np.max(np.abs(x))))
    return to_pcm(x)


def backchannels() -> list[bytes]:
    from flowagent.providers.local.piper import PiperTts
    tts = PiperTts()
    out = []
    for text in ("Mm-hm.", "Uh-huh.", "Yeah.", "Mm.", "Okay."):
        pcm = tts.synthesize_blocking(text, RATE)
        x = audio.to_float(pcm)
        nz = np.nonzero(np.abs(x) > 0.01)[0]
        x = x[nz[0]: nz[-1] + 1] if nz.size else x
        out.append(to_pcm(band(x)))
    return out


def speech_lines() -> list[tuple[bytes, float]]:
    meta = json.loads((SPEECH_DIR / "transcripts.json").read_text())
    return [(audio.read_wav(SPEECH_DIR / m["file"])[0], float(m["speech_start_s"]))
            for m in meta]


def last_audible(pcm: bytes) -> int:
    """Index of the stimulus's last frame the caller counts as sent speech (its send time is
    `last_speech_sent`; every frame before it went out 20 ms apart on the caller's clock)."""
    fb = audio.frame_bytes(RATE)
    idx = [i for i in range(0, len(pcm) // fb)
           if audio.rms(pcm[i * fb:(i + 1) * fb]) > AGENT_SPEECH_RMS]
    return idx[-1] if idx else -1


async def one_trial(b: Bench, stim: bytes | None, onset_s: float, *, echo_db: float | None,
                    rng: random.Random) -> dict[str, Any]:
    c = AudioSocketCaller("127.0.0.1", b.port)
    got: list[tuple[float, float]] = []

    def on_frame(at: float, pcm: bytes, speech: bool) -> None:
        got.append((at, audio.rms(pcm)))
        if echo_db is not None:  # our own audio, back down the line
            c.queue_audio(audio.from_array(audio.to_float(pcm) * 10 ** (echo_db / 20)))

    c.on_agent_frame.append(on_frame)
    before = b.rt.metrics.barge_ins_total
    await c.connect()
    start = await c.wait_agent_started(0, timeout_s=10)
    await asyncio.sleep(0.6 + rng.random() * 0.6)
    onset = time.monotonic()
    if stim is not None:
        fb = audio.frame_bytes(RATE)
        pad = len(stim) % fb
        stim = stim + bytes(fb - pad) if pad else stim
        k = last_audible(stim)
        await c.say_audio(stim)
        onset = c.last_speech_sent - (k - int(onset_s / FRAME_S)) * FRAME_S
    else:
        await asyncio.sleep(3.0)
    await asyncio.sleep(1.2)
    stopped_by = b.rt.metrics.barge_ins_total - before
    await c.hangup()
    await c.close()
    pre = [r for at, r in got if onset - 0.3 <= at < onset and r > AGENT_SPEECH_RMS]
    full = statistics.median(pre) if pre else 0.0
    after = [(at, r) for at, r in got if at >= onset]
    ducked_at = next((at for at, r in after if r < full * 0.5), None)
    stop_at = None
    if stopped_by:  # the end of our audio's run after the onset: a silent frame, or the
        # time the next frame was due when none came (keepalive: the line is then quiet)
        prev = onset
        for at, r in after:
            if at - prev > 0.1:  # no frame came: quiet from when the next was due
                stop_at = prev + FRAME_S
                break
            if r <= AGENT_SPEECH_RMS:
                stop_at = at
                break
            prev = at
    # back to full volume: a frame near the old level 0.4-0.8 s after the stimulus ended
    end = onset + len(stim or b"") / (2 * RATE)
    late = [r for at, r in got if end + 0.4 <= at < end + 0.8 and r > AGENT_SPEECH_RMS]
    if DEBUG:
        print(" ".join(f"{(at - onset) * 1000:.0f}:{r:.2f}" for at, r in after[:60]))
    return {"start": start, "barge_in": bool(stopped_by), "full": full,
            "ducked_ms": None if ducked_at is None else (ducked_at - onset) * 1000,
            "stopped_ms": None if stop_at is None else (stop_at - onset) * 1000,
            "restored": bool(late) and statistics.median(late) > full * 0.8}


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else float("nan")


async def run(trials: int, duck_db: float | None, seed: int, sets: float,
              echo_rejection: bool | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tone_flow = Path(d) / "tone.yaml"
        tone_flow.write_text(flow_yaml("tone", duck_db, echo_rejection))
        piper_flow = Path(d) / "piper.yaml"
        piper_flow.write_text(flow_yaml("piper", duck_db, echo_rejection))
        lines = speech_lines()
        bc = backchannels()
        async with Bench(tone_flow) as b:
            res = [await one_trial(b, *lines[i % len(lines)], echo_db=None, rng=rng)
                   for i in range(trials)]
            out["speech"] = res
            out["noise"] = [await one_trial(b, line_noise(rng), 0.0, echo_db=None, rng=rng)
                            for _ in range(round(10 * sets))]
            out["cough"] = [await one_trial(b, cough(rng), 0.0, echo_db=None, rng=rng)
                            for _ in range(round(25 * sets))]
            out["backchannel"] = [await one_trial(b, bc[i % len(bc)], 0.0, echo_db=None,
                                                  rng=rng) for i in range(round(25 * sets))]
        async with Bench(piper_flow) as b:
            out["echo"] = [await one_trial(b, None, 0.0, echo_db=(-10, -15, -20)[i % 3], rng=rng)
                           for i in range(round(12 * sets))]
    return out


def report(out: dict[str, Any], label: str) -> str:
    sp = out["speech"]
    ducked = [t["ducked_ms"] for t in sp if t["ducked_ms"] is not None]
    stopped = [t["stopped_ms"] for t in sp if t["stopped_ms"] is not None]
    lines = [f"### {label}", "",
             f"speech over our prompt, {len(sp)} trials: stopped {len(stopped)}/{len(sp)}",
             "",
             "| onset → at the caller | p50 ms | p90 ms | max ms | n |", "|---|---|---|---|---|",
             f"| our audio ducked (≥ 6 dB down) | {pct(ducked, 50):.0f} | {pct(ducked, 90):.0f} "
             f"| {max(ducked, default=float('nan')):.0f} | {len(ducked)} |",
             f"| our audio stopped | {pct(stopped, 50):.0f} | {pct(stopped, 90):.0f} "
             f"| {max(stopped, default=float('nan')):.0f} | {len(stopped)} |",
             "",
             "| set | trials | false barge-ins (stopped) | ducked | ducked and back to full |",
             "|---|---|---|---|---|"]
    for name in ("noise", "echo", "cough", "backchannel"):
        ts = out[name]
        duck_n = sum(1 for t in ts if t["ducked_ms"] is not None and not t["barge_in"])
        back = sum(1 for t in ts if t["ducked_ms"] is not None and not t["barge_in"]
                   and t["restored"])
        lines.append(f"| {name} | {len(ts)} | {sum(t['barge_in'] for t in ts)} | {duck_n} "
                     f"| {back} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--duck-db", type=float, default=None)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--sets", type=float, default=1.0,
                    help="scale of the false barge-in sets (1: 10 noise, 12 echo, 25 coughs, "
                         "25 back-channels)")
    ap.add_argument("--echo-rejection", choices=("on", "off"), default=None,
                    help="settings.barge_in.echo_rejection (omitted: the flow does not say)")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=None, help="append the table to this file")
    ap.add_argument("--json", type=Path, default=None, help="write every trial here")
    a = ap.parse_args()
    er = None if a.echo_rejection is None else a.echo_rejection == "on"
    out = asyncio.run(run(a.trials, a.duck_db, a.seed, a.sets, er))
    label = a.label or ("duck_db " + ("(not set)" if a.duck_db is None else f"{a.duck_db:g}"))
    text = report(out, label)
    print(text)
    if a.json is not None:
        a.json.write_text(json.dumps(out))
    if a.out is not None:
        with a.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
