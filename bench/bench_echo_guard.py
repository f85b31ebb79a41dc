"""Echo rejection (runner/echo_guard.py) offline: what one check costs and how often it is right.

Our prompt (recorded lines of tests/data/speech, -20 dBFS) goes out frame by frame with its write
time (as `OutStream.sent_tail` keeps it, ticks late by up to 0.3 ms); the inbound line carries its
echo (delay 0-300 ms, -10/-15/-20 dB, an echo path: phone band 300-3400 Hz + a short dispersive
FIR), -60 dBFS noise, and optionally a caller (other recorded lines at -20/-26/-32 dBFS) talking
over it; inbound frames arrive up to 1.5 ms late. A 32 ms window (Silero's at 8 kHz) is checked
every 40 ms. Reported: the share of windows judged echo (echo only: want 1; with a caller: want 0),
and the cost per check (median, p90) on this machine — one check runs only for a window that
looks like speech while our audio plays.

    .venv/bin/python bench/bench_echo_guard.py [--rate 8000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit
from pathlib import Path

import numpy as np

from flowagent import audio
from flowagent.runner.echo_guard import EchoGuard

SPEECH = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"


def lines(rate: int) -> list[np.ndarray]:
    meta = json.loads((SPEECH / "transcripts.json").read_text())
    out = []
    for m in meta:
        pcm, r = audio.read_wav(SPEECH / m["file"])
        if r != rate:
            pcm = audio.resample(pcm, r, rate)
        out.append(audio.to_float(pcm))
    return out


def echo_path(x: np.ndarray, rate: int) -> np.ndarray:
    spec = np.fft.rfft(np.concatenate([x, np.zeros(256)]))
    f = np.fft.rfftfreq(x.size + 256, 1 / rate)
    spec[(f < 300) | (f > 3400)] = 0
    y = np.fft.irfft(spec, x.size + 256)[: x.size]
    return np.convolve(y, [0.6, 0.3, -0.1, 0.05])[: x.size]


def trial(prompt: np.ndarray, caller: np.ndarray | None, rate: int, delay_ms: int,
          echo_db: float, caller_db: float, seed: int) -> tuple[float, list[float]]:
    rng = np.random.default_rng(seed)
    fs = rate // 50
    d = rate * delay_ms // 1000
    inbound = np.zeros(prompt.size)
    e = echo_path(prompt, rate) * 10 ** (echo_db / 20)
    inbound[d:] += e[: prompt.size - d]
    if caller is not None:
        c = caller[: prompt.size] * 10 ** (caller_db / 20) / np.sqrt(np.mean(caller ** 2))
        inbound[: c.size] += c
    inbound += rng.standard_normal(inbound.size) * 1e-3
    pin = audio.from_array(np.clip(inbound, -1, 1))
    sent: list[tuple[float, bytes]] = []
    g = EchoGuard(rate, lambda: sent)
    verdicts, costs = [], []
    for i in range(prompt.size // fs):
        t = i * 0.02
        sent.append((t + rng.uniform(0, 0.0003), audio.from_array(prompt[i * fs:(i + 1) * fs])))
        del sent[:-32]
        g.heard(pin[i * 2 * fs:(i + 1) * 2 * fs])
        if i >= 10 and i % 2 == 0:
            arrived = t + 0.02 + rng.uniform(0, 0.0015)
            t0 = time.perf_counter()
            verdicts.append(g.explains(arrived, 8, 32))
            costs.append(time.perf_counter() - t0)
    return float(np.mean(verdicts)), costs


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=8000)
    a = ap.parse_args()
    rate = a.rate
    ls = lines(rate)
    prompt = np.concatenate(ls[:4])
    prompt *= 0.1 / np.sqrt(np.mean(prompt ** 2))
    caller = np.concatenate(ls[5:10])
    print(f"rate {rate} Hz, prompt {prompt.size / rate:.1f} s, a check every 40 ms\n")
    print("| inbound | echo-explained windows | cost p50 µs | p90 µs |")
    print("|---|---|---|---|")
    all_costs: dict[str, list[float]] = {"echo": [], "caller": []}
    for echo_db in (-10, -15, -20):
        frac, costs = [], []
        for delay in (0, 20, 60, 150, 300):
            f, c = trial(prompt, None, rate, delay, echo_db, 0, delay)
            frac.append(f)
            costs += c
        all_costs["echo"] += costs
        print(f"| echo {echo_db} dB only (delays 0-300 ms) | {statistics.mean(frac):.3f} "
              f"| {pct(costs, 50) * 1e6:.0f} | {pct(costs, 90) * 1e6:.0f} |")
    for caller_db in (-20, -26, -32):
        frac, costs = [], []
        for echo_db in (-10, -15, -20):
            f, c = trial(prompt, caller, rate, 60, echo_db, caller_db, int(-caller_db))
            frac.append(f)
            costs += c
        all_costs["caller"] += costs
        print(f"| caller {caller_db} dBFS over echo -10/-15/-20 dB | {statistics.mean(frac):.3f} "
              f"| {pct(costs, 50) * 1e6:.0f} | {pct(costs, 90) * 1e6:.0f} |")
    # what every inbound frame pays (listener.on_audio): keeping the frame
    g = EchoGuard(rate, lambda: [])
    frame = bytes(rate // 25)
    n = 200_000
    per_frame = timeit.timeit(lambda: g.heard(frame), number=n) / n
    print(f"\nper inbound frame (keeping it): {per_frame * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
