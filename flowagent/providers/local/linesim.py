"""A telephone line in numpy: 300-3400 Hz band, noise at a chosen SNR, word error rate.

Why here: the offline stack's tests and benchmarks need speech that sounds like a phone call
(made with the local TTS, so no recordings of people and no downloads), and one agreed way to
score recognition. Used by `bench/make_speech_data.py`, `bench/bench_local.py`, tests/local.
"""

from __future__ import annotations

import re

import numpy as np


def telephone_band(samples: np.ndarray, sample_rate: int, low: float = 300.0,
                   high: float = 3400.0, taper: float = 100.0) -> np.ndarray:
    """Zero-phase band-pass (FFT mask with raised-cosine edges `taper` Hz wide)."""
    n = samples.size
    if n == 0:
        return samples.astype(np.float32)
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    gain = np.ones_like(freqs)
    lo_edge = np.clip((freqs - (low - taper)) / taper, 0.0, 1.0)
    hi_edge = np.clip(((high + taper) - freqs) / taper, 0.0, 1.0)
    gain = np.minimum(gain, 0.5 - 0.5 * np.cos(np.pi * lo_edge))
    gain = np.minimum(gain, 0.5 - 0.5 * np.cos(np.pi * hi_edge))
    return np.fft.irfft(spectrum * gain, n).astype(np.float32)


def active_rms(samples: np.ndarray, sample_rate: int) -> float:
    """RMS over the louder half of 20 ms frames (speech level, ignoring pauses)."""
    frame = sample_rate // 50
    n = samples.size // frame
    if n == 0:
        return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
    energy = (samples[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(axis=1)
    loud = energy[energy >= np.median(energy)]
    return float(np.sqrt(loud.mean()))


def noise(n: int, rng: np.random.Generator, kind: str = "pink") -> np.ndarray:
    """Unit-RMS noise: "white" or "pink" (1/f, like line and room noise)."""
    white = rng.standard_normal(n)
    if kind == "pink" and n > 1:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1]
        white = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    out: np.ndarray = (white / (np.sqrt(np.mean(white**2)) + 1e-12)).astype(np.float32)
    return out


def add_noise(samples: np.ndarray, sample_rate: int, snr_db: float, rng: np.random.Generator,
              kind: str = "pink", level_rms: float | None = None) -> np.ndarray:
    """Speech + band-limited noise at `snr_db` below the speech's active level (or level_rms)."""
    level = level_rms if level_rms is not None else active_rms(samples, sample_rate)
    n = telephone_band(noise(samples.size, rng, kind), sample_rate)
    n = n / (np.sqrt(np.mean(n.astype(np.float64) ** 2)) + 1e-12)
    out: np.ndarray = (samples + n * level * 10 ** (-snr_db / 20.0)).astype(np.float32)
    return out


_SMALL = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen", "twenty"]


def normalise_words(text: str) -> list[str]:
    """Lower case, no punctuation, numbers 0-20 as words ("3" == "three"), "ok" == "okay"."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    out = []
    for w in words:
        w = w.strip("'")
        if w.isdigit() and int(w) <= 20:
            w = _SMALL[int(w)]
        if w == "ok":
            w = "okay"
        if w:
            out.append(w)
    return out


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + insertions + deletions, reference word count)."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)
