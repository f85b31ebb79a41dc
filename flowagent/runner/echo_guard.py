"""Echo rejection for barge-in: is the "speech" the VAD hears over our audio only our own prompt
coming back down the line?

Why: a phone line echoes what we send (the hybrid, the handset) 0-300 ms later, 10-20 dB down and
phone-band filtered. A VAD cannot tell that echo from a caller, so before this our own prompt
stopped the agent (a false barge-in) on every line with audible echo. We know exactly what we
sent — the out stream keeps its last ~640 ms of frames with the time each was written
(`OutStream.sent_tail`, kept by the native media loop or the Python player as they write) — so a
window of inbound audio can be checked against it:

1. the inbound audio of the last `FIT_MS` up to the window's end is matched against what we sent
   in the `MAX_DELAY_MS` before it (normalised cross-correlation, one FFT): the echo's delay;
2. a short FIR (`TAPS` around that delay: the line's phone-band colouring and a fraction of a
   sample of delay) is fitted by least squares — the echo path, fitted again at each check (a
   9x9 solve), so a line whose echo changes is followed;
3. the echo that path predicts is subtracted: when what is left of the window is `MIN_ERLE_DB`
   under what came in (or plain quiet), the window was our echo, not the caller.

A caller talking over the echo is not explained by our audio (uncorrelated): the residual keeps
their speech and the window counts. The echo delay found is kept and tried first on the next
window (the cheap path: a search of +-`JITTER_MS` around it); the whole range is searched only
when that no longer explains the window. Nothing here runs per frame beyond keeping the inbound
frame (`heard`, a deque append): a check runs only for a VAD window that looks like speech while
our audio is audible, i.e. a suspected barge-in.

Why not an echo canceller library (speexdsp, WebRTC APM): none is installable as a maintained
wheel here (only sdists needing a system libspeexdsp or a WebRTC build, or an unmaintained
binary), and a canceller must adapt on every frame while we play — for 1,000 calls that is
every outbound frame, where this check costs nothing until a window looks like speech.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: how far back (ms) the inbound audio used for the fit reaches from the window's end
FIT_MS = 200
#: the longest echo delay looked for, on top of the lead below (line + far end + jitter)
MAX_DELAY_MS = 360
#: a frame's echo may seem to come back up to this early: inbound frames are stamped when they
#: arrive (the end of their audio), ours when they are written (the start of theirs)
LEAD_MS = 40
#: taps of the fitted echo path around the delay found (odd: centred; 3 ms at 8 kHz — the line's
#: phone-band colouring: 17 taps explained 87 % of -10 dB echo windows, 25 taps 94 %)
TAPS = 25
#: below this normalised correlation nothing we sent explains the audio: not echo
MIN_NCC = 0.4
#: the echo left after subtracting must be this far (dB) under the window for it to be echo
MIN_ERLE_DB = 12.0
#: a residual this quiet (RMS, full scale 1.0) is no caller speech whatever the ratio
QUIET_RMS = 10 ** (-55 / 20)
#: our frames' length (ms): one per tick of the pacing clock
FRAME_MS = 20
#: the least inbound audio (ms) a check needs
MIN_FIT_MS = 100
#: the fit's span (ms) when the delay found before is tried again (the cheap path)
SHORT_FIT_MS = 40
#: how far (ms) the delay may move between checks (inbound frames arrive in batches)
JITTER_MS = 4
#: inbound frames kept per call (20 ms each): the fit's span plus the VAD's delay in judging
IN_FRAMES = 24


@dataclass(slots=True)
class EchoStats:
    """What the checks cost and found (bench, logs)."""

    checks: int = 0
    echo: int = 0
    full_fits: int = 0
    seconds: float = 0.0


class EchoGuard:
    """One call's echo check. `heard(pcm)` for every inbound frame (the listener's `on_audio`);
    `explains(...)` for a VAD window that looks like speech while our audio plays."""

    __slots__ = ("_delay_s", "_in", "_rate", "_sent", "heard", "stats")

    def __init__(self, sample_rate: int, sent: Callable[[], list[tuple[float, bytes]]]) -> None:
        self._rate = sample_rate
        self._sent = sent
        self._in: deque[bytes] = deque(maxlen=IN_FRAMES)
        #: keep an inbound frame: the deque's own append, so a frame costs one C call
        self.heard: Callable[[bytes], None] = self._in.append
        #: the echo delay last found (s from our write to its arrival): searched first
        self._delay_s: float | None = None
        self.stats = EchoStats()

    def change_rate(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._in.clear()
        self._delay_s = None

    def explains(self, newest_at: float, back_ms: int, ms: int) -> bool:
        """Is the inbound window of `ms` that ends `back_ms` before the newest audio heard
        (which arrived at monotonic `newest_at`) our own echo? False when it cannot tell (too
        little audio, nothing of ours sent)."""
        t0 = time.perf_counter()
        try:
            return self._explains(newest_at - back_ms / 1000, back_ms, ms)
        finally:
            st = self.stats
            st.checks += 1
            st.seconds += time.perf_counter() - t0

    def _explains(self, end_at: float, back_ms: int, ms: int) -> bool:
        rate = self._rate
        sent = self._sent()
        if not sent:
            return False
        y = np.frombuffer(b"".join(self._in), dtype="<i2").astype(np.float32) / 32768.0
        back = rate * max(0, back_ms) // 1000
        if back:
            y = y[:-back]
        n_win = max(1, rate * ms // 1000)
        if y.size < max(n_win, rate * MIN_FIT_MS // 1000):
            return False
        # the fit uses up to FIT_MS of what was heard up to the window's end (`end_at`)
        y = y[-min(rate * FIT_MS // 1000, y.size):]
        half = TAPS // 2
        if self._delay_s is not None:  # the delay found before, give or take the jitter:
            j = rate * JITTER_MS // 1000  # fitted on the window itself (a short search)
            if self._check(y[-max(n_win, rate * SHORT_FIT_MS // 1000):], n_win, end_at,
                           self._delay_s + (j + half) / rate, 2 * (j + half), sent):
                return True
        self.stats.full_fits += 1
        lead = rate * LEAD_MS // 1000
        span = rate * MAX_DELAY_MS // 1000 + lead
        return self._check(y, n_win, end_at, MAX_DELAY_MS / 1000 + half / rate,
                           span + 2 * half, sent)

    def _check(self, y: np.ndarray, n_win: int, end_at: float, max_delay: float, lags: int,
               sent: list[tuple[float, bytes]]) -> bool:
        """Look for our audio in `y` at delays `max_delay` down to `max_delay - lags/rate`; fit
        the echo path there and say whether it explains the window (the last `n_win`)."""
        rate = self._rate
        n = y.size
        half = TAPS // 2
        t0 = end_at - n / rate - max_delay  # the time of ref[0]: lag k = delay max_delay - k
        ref = self._reference(sent, t0, n + lags)
        if ref is None:
            return False
        k = self._best_lag(y, ref, half, lags - half)
        if k is None:
            return False
        # the TAPS shifted copies of our audio around lag k, as rows (a strided view: no copy)
        step = ref.strides[0]
        cols = np.lib.stride_tricks.as_strided(ref[k - half:], shape=(TAPS, n),
                                               strides=(step, step), writeable=False)
        gram = cols @ cols.T
        gram.flat[:: TAPS + 1] += 1e-6 * (float(np.trace(gram)) / TAPS + 1e-9)
        w = np.linalg.solve(gram, cols @ y)  # y ≈ w @ cols
        residual = y[-n_win:] - w @ cols[:, -n_win:]
        if not self._small(y[-n_win:], residual):
            return False
        self._delay_s = max_delay - k / rate
        self.stats.echo += 1
        return True

    def _reference(self, sent: list[tuple[float, bytes]], start: float,
                   n: int) -> np.ndarray | None:
        """What we sent from monotonic time `start`, `n` samples, as float (zeros where nothing
        was sent). None when none of it was our audio.

        The frames went out one per 20 ms tick, back to back: they are laid end to end and the
        run is placed by the median of their write times (each is a tick's time, late by up to
        a millisecond or so — placing frames one by one would tear the waveform apart by a few
        samples at every frame and no fit could cancel it)."""
        rate = self._rate
        fs = rate * FRAME_MS // 1000
        fb = 2 * fs
        frame_s = FRAME_MS / 1000
        offs = sorted([t - k * frame_s for k, (t, _) in enumerate(sent)])
        j0 = round((start - offs[len(offs) // 2]) * rate)  # run sample at out[0]
        k0, k1 = max(0, j0 // fs), min(len(sent), -(-(j0 + n) // fs))
        if k0 >= k1:
            return None
        frames = [pcm for _, pcm in sent[k0:k1]]
        if not any(frames):
            return None
        x = np.frombuffer(b"".join([p if len(p) == fb else (p + bytes(fb))[:fb]
                                    for p in frames]), dtype="<i2")
        out = np.zeros(n, dtype=np.float32)
        i = k0 * fs - j0  # where x[0] goes
        a, b = max(0, i), min(n, i + x.size)
        if a >= b:
            return None
        out[a:b] = x[a - i: b - i]
        out *= 1 / 32768
        return out

    @staticmethod
    def _best_lag(y: np.ndarray, ref: np.ndarray, lo: int, hi: int) -> int | None:
        """The lag k in [lo, hi] where `ref[k:k+len(y)]` matches `y` best (normalised
        cross-correlation); None when nothing matches well enough to be its echo."""
        n = y.size
        ey = float(np.dot(y, y))
        if ey <= 0 or hi < lo:
            return None
        seg = ref[lo: hi + n]
        if (hi - lo) * n <= 40_000:  # a few lags over a short span: directly
            corr = np.correlate(seg, y, mode="valid")
        else:
            size = 1 << (seg.size + n - 1).bit_length()
            corr = np.fft.irfft(np.fft.rfft(seg, size) * np.conj(np.fft.rfft(y, size)),
                                size)[: hi - lo + 1]
        e = np.concatenate(([0.0], np.cumsum(seg.astype(np.float64) ** 2)))
        energy = e[n:] - e[:-n]
        ncc = np.abs(corr) / np.sqrt(energy * ey + 1e-12)
        k = int(np.argmax(ncc))
        return lo + k if ncc[k] >= MIN_NCC else None

    @staticmethod
    def _small(win: np.ndarray, residual: np.ndarray) -> bool:
        """What is left of the window after subtracting our echo is no caller speech: quiet,
        or `MIN_ERLE_DB` under what came in."""
        e_res = float(np.dot(residual, residual)) / win.size
        if e_res <= QUIET_RMS * QUIET_RMS:
            return True
        e_in = float(np.dot(win, win)) / win.size
        return e_res * 10 ** (MIN_ERLE_DB / 10) <= e_in
