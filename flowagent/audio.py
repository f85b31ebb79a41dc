"""PCM helpers: s16le <-> numpy, resampling (soxr), WAV files, tones, silence and fades.

Audio everywhere in flowagent is little-endian signed 16-bit mono PCM in `bytes` at an explicit
sample rate. These helpers are the only place that converts it, so every stage agrees on the
format. Resampling uses soxr (a real band-limited resampler): naive decimation aliases badly on
8 kHz telephone audio and ruins ASR.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

try:  # audioop (stdlib until 3.13) computes RMS ~10x faster than numpy for one 20 ms frame
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop as _audioop
except ImportError:  # pragma: no cover - Python 3.13+
    _audioop = None  # type: ignore[assignment]

#: `rms_raw(pcm, 2)`: the RMS of s16 audio in sample units, in C (audioop) — the per-frame
#: level for code that runs on every frame of every call; None where audioop is gone (3.13+:
#: use `rms`)
rms_raw: Callable[[bytes, int], int] | None = _audioop.rms if _audioop is not None else None

SAMPLE_WIDTH = 2
FADE_MS = 5


# ---------------------------------------------------------------------------------------------
# G.711 μ-law and A-law (ITU-T G.711): numpy lookup tables. `audioop` did this until Python 3.13
# removed it; a 256-entry decode table and a 65536-entry encode table are exact and one numpy
# gather per frame. Cloud TTS (`ulaw_8000`, `audio/pcmu`) and Asterisk's chan_websocket
# (`ulaw`/`alaw` media) use them.
# ---------------------------------------------------------------------------------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -sample, sample).astype(np.int16)


def _ulaw_encode_table() -> np.ndarray:
    """Indexed by sample + 32768."""
    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    mag = np.minimum(np.abs(samples), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    table: np.ndarray = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return table


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    sample = np.where(exponent == 0, (mantissa << 4) + 8,
                      ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, sample, -sample).astype(np.int16)


def _alaw_encode_table() -> np.ndarray:
    """Indexed by sample + 32768 (13-bit A-law: the low 3 bits of s16 are dropped)."""
    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples >= 0, 0x80, 0)
    mag = np.where(samples >= 0, samples, -samples - 1) >> 3  # 0..4095
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    table: np.ndarray = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return table


_ULAW_DECODE = _ulaw_decode_table()
_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_DECODE = _alaw_decode_table()
_ALAW_ENCODE = _alaw_encode_table()


def ulaw_to_pcm(data: bytes) -> bytes:
    """G.711 μ-law bytes -> s16le PCM (same sample rate)."""
    if not data:
        return b""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """s16le PCM -> G.711 μ-law bytes (a trailing odd byte is dropped)."""
    n = len(pcm) // 2 * 2
    if not n:
        return b""
    samples = np.frombuffer(pcm[:n], dtype="<i2").astype(np.int32)
    return _ULAW_ENCODE[samples + 32768].tobytes()


def alaw_to_pcm(data: bytes) -> bytes:
    """G.711 A-law bytes -> s16le PCM (same sample rate)."""
    if not data:
        return b""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def pcm_to_alaw(pcm: bytes) -> bytes:
    """s16le PCM -> G.711 A-law bytes (a trailing odd byte is dropped)."""
    n = len(pcm) // 2 * 2
    if not n:
        return b""
    samples = np.frombuffer(pcm[:n], dtype="<i2").astype(np.int32)
    return _ALAW_ENCODE[samples + 32768].tobytes()


def frame_bytes(sample_rate: int, ms: int = 20) -> int:
    """Bytes in `ms` of s16 mono audio (320 for 20 ms at 8 kHz)."""
    return sample_rate * ms // 1000 * SAMPLE_WIDTH


def to_array(pcm: bytes) -> np.ndarray:
    """s16le bytes -> int16 array (a trailing odd byte is dropped)."""
    if len(pcm) % 2:
        pcm = pcm[:-1]
    return np.frombuffer(pcm, dtype="<i2")


def to_float(pcm: bytes) -> np.ndarray:
    return to_array(pcm).astype(np.float32) / 32768.0


def from_array(samples: np.ndarray) -> bytes:
    """int16 or float (-1..1) array -> s16le bytes, clipping floats."""
    if samples.dtype.kind == "f":
        samples = np.clip(samples * 32767.0, -32768, 32767)
    return samples.astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    """Root-mean-square level of s16 audio in 0..1 (the fake VAD's measure)."""
    if _audioop is not None:
        if len(pcm) % 2:
            pcm = pcm[:-1]
        return _audioop.rms(pcm, 2) / 32768.0 if pcm else 0.0
    a = to_array(pcm)
    n = a.size
    if n == 0:
        return 0.0
    f = a.astype(np.float32)
    return math.sqrt(float(np.dot(f, f)) / n) / 32768.0  # one C call: runs on every frame


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole buffer (for streams use `StreamResampler`, which keeps filter state)."""
    if from_rate == to_rate or not pcm:
        return pcm
    out = soxr.resample(to_array(pcm), from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


class StreamResampler:
    """Chunk-by-chunk resampling without seams between chunks (soxr keeps the filter state)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._odd = b""
        self._rs = (
            None
            if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        pcm = self._odd + pcm
        if len(pcm) % 2:
            self._odd, pcm = pcm[-1:], pcm[:-1]
        else:
            self._odd = b""
        if self._rs is None:
            return pcm
        out = self._rs.resample_chunk(np.frombuffer(pcm, dtype="<i2"), last=last)
        return np.asarray(out, dtype="<i2").tobytes()


def silence(ms: float, sample_rate: int = 8000) -> bytes:
    return bytes(int(sample_rate * ms / 1000) * SAMPLE_WIDTH)


def tone(ms: float, freq: float = 440.0, sample_rate: int = 8000, amplitude: float = 0.3) -> bytes:
    """A sine tone with 5 ms fades at both ends (so tone-based test audio does not click)."""
    n = int(sample_rate * ms / 1000)
    t = np.arange(n, dtype=np.float32) / sample_rate
    samples = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return fade(from_array(samples), sample_rate, fade_in=True, fade_out=True)


def fade(
    pcm: bytes,
    sample_rate: int = 8000,
    ms: float = FADE_MS,
    *,
    fade_in: bool = False,
    fade_out: bool = True,
) -> bytes:
    """Linear fade over `ms` at the end (and/or start): a cut mid-waveform clicks audibly."""
    a = to_array(pcm).astype(np.float32)
    n = min(a.size, int(sample_rate * ms / 1000))
    if n == 0:
        return pcm[: a.size * 2]
    ramp = np.linspace(1.0, 0.0, n, dtype=np.float32)
    if fade_out:
        a[-n:] *= ramp
    if fade_in:
        a[:n] *= ramp[::-1]
    return a.astype("<i2").tobytes()


def ramp_gain(pcm: bytes, start: float, end: float) -> bytes:
    """Scale s16 audio by a gain moving linearly from `start` to `end` across it (ducking our
    audio under a possible barge-in: a ramp, because a gain step mid-waveform clicks)."""
    a = to_array(pcm).astype(np.float32)
    if a.size == 0:
        return pcm
    g = np.linspace(start, end, a.size + 1, dtype=np.float32)[1:]
    return bytes(np.clip(a * g, -32768, 32767).astype("<i2").tobytes())


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a WAV file as mono s16 (channels are averaged; 8/24/32-bit converted)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        width = w.getsampwidth()
        channels = w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width == 2:
        a = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 1:
        a = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 4:
        a = np.frombuffer(raw, dtype="<i4").astype(np.int64) >> 16
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        a = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 16
    else:
        raise ValueError(f"{path}: unsupported WAV sample width {width}")
    if channels > 1:
        a = a.reshape(-1, channels).mean(axis=1)
    return np.asarray(a, dtype="<i2").tobytes(), rate


def write_wav(path: str | Path, pcm: bytes, sample_rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
