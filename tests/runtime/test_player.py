"""The paced player's per-call stream: framing, joins, tails, flush and what was heard."""

from __future__ import annotations

import numpy as np

from flowagent import audio
from flowagent.asterisk.audiosocket import FrameParser, Kind
from flowagent.runner.player import PyOutStream


def _stream() -> tuple[PyOutStream, list[bytes], list[int]]:
    sent: list[bytes] = []
    done: list[int] = []
    return PyOutStream(sent.append, 8000, on_done=done.append), sent, done


def _payloads(sent: list[bytes]) -> list[bytes]:
    return [f.payload for f in FrameParser().feed(b"".join(sent))]


def test_chunks_of_one_utterance_join_without_gaps() -> None:
    s, sent, done = _stream()
    pcm = audio.tone(200, 440, 8000)  # 3200 bytes = 10 frames
    for i in range(0, len(pcm), 333):  # odd-sized TTS chunks
        s.add(7, pcm[i : i + 333])
    s.end(7)
    for k in range(12):
        s.tick(float(k))
    frames = _payloads(sent)
    assert b"".join(frames[:10]) == pcm
    assert all(len(f) == 320 for f in frames)
    assert done == [7]
    assert s.played[7] == len(pcm)


def test_partial_last_frame_is_faded_and_padded() -> None:
    s, sent, _ = _stream()
    s.add(1, b"\x10\x27" * 240)  # 30 ms: one whole frame and half of another
    s.end(1)
    s.tick(0.0)
    s.tick(1.0)
    frames = _payloads(sent)
    assert len(frames[1]) == 320
    tail = audio.to_array(frames[1])
    assert tail[80:].tolist() == [0] * 80  # padding
    assert abs(int(tail[79])) < abs(int(tail[40]))  # faded, not cut


def test_flush_stops_within_one_frame_with_a_fade() -> None:
    s, sent, _ = _stream()
    s.add(3, b"\x10\x27" * 8000)  # 1 s of a loud constant
    s.end(3)
    s.tick(0.0)
    cut = s.flush()
    assert cut == {3}
    for k in range(1, 4):
        s.tick(float(k))
    frames = [audio.to_array(f) for f in _payloads(sent)]
    assert np.all(frames[1][40:] == 0) and abs(int(frames[1][39])) < 10000
    assert all(np.all(f == 0) for f in frames[2:])
    assert s.played[3] == 320


def test_idle_stream_sends_silence_keepalive_only_when_configured() -> None:
    sent: list[bytes] = []
    s = PyOutStream(sent.append, 8000, keepalive_ms=500)
    s.tick(0.0)
    s.tick(0.02)
    s.tick(0.6)
    frames = FrameParser().feed(b"".join(sent))
    assert len(frames) == 2 and all(f.kind is Kind.SLIN_8K and f.payload for f in frames)
