"""Keypad tones in the audio (AudioSocket cannot carry DTMF from us): the standard dual tones."""

from __future__ import annotations

import numpy as np

from flowagent import audio

_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}


def tone(digit: str, rate: int) -> bytes:
    """100 ms of one digit's two tones, then 80 ms of silence ("" for a non-keypad character)."""
    freqs = _FREQS.get(digit.upper())
    if freqs is None:
        return b""
    a = audio.to_array(audio.tone(100, freqs[0], rate, 0.25)).astype(np.int32)
    b = audio.to_array(audio.tone(100, freqs[1], rate, 0.25)).astype(np.int32)
    return audio.from_array((a + b).astype(np.int16)) + audio.silence(80, rate)


def tones(digits: str, rate: int) -> bytes:
    return b"".join(tone(d, rate) for d in digits)
