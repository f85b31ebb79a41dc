"""The parser's one-frame fast path (`FrameParser.one_audio`) must never disagree with `feed()`.

The session tries the fast path first on every socket read, so a frame it wrongly accepted (a
bad kind, a wrong length, bytes held over from a split frame) would reach the VAD and ASR as
audio a caller never sent. Property: for any bytes and any held-over state, the fast path
either declines (and consumes nothing) or returns exactly the one audio payload `feed()`
would return.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flowagent.asterisk.audiosocket import (
    AUDIO_RATES,
    MAX_PAYLOAD,
    FrameParser,
    Kind,
    encode,
)

KINDS = [int(k) for k in Kind]


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    call_kind=st.sampled_from(list(AUDIO_RATES)),
    payload=st.binary(max_size=700),
    held=st.binary(max_size=5),
    extra=st.binary(max_size=4),
    fake_length=st.one_of(st.none(), st.integers(0, 0xFFFF)),
)
def test_fast_path_agrees_with_feed(
    kind: int, call_kind: Kind, payload: bytes, held: bytes, extra: bytes, fake_length: int | None
) -> None:
    data = encode(kind, payload) + extra
    if fake_length is not None:  # a header that lies about the length
        data = bytes([kind, fake_length >> 8, fake_length & 0xFF]) + data[3:]
    fast, slow = FrameParser(), FrameParser()
    if held:  # a partial frame held over from the previous read
        prefix = encode(call_kind, b"\x00\x00" * 4)[: min(len(held), 4)]
        fast.feed(prefix)
        slow.feed(prefix)
    got = fast.one_audio(data, call_kind)
    if got is None:
        return  # declined: the session falls back to feed(), which sees untouched state
    frames = slow.feed(data)
    assert len(frames) == 1
    assert frames[0].kind == call_kind
    assert frames[0].payload == got
    assert slow.pending == 0 and fast.pending == 0


def test_fast_path_takes_the_ordinary_frame_and_declines_the_rest() -> None:
    p = FrameParser()
    frame = encode(Kind.SLIN_8K, b"\x01\x02" * 160)
    assert p.one_audio(frame, Kind.SLIN_8K) == b"\x01\x02" * 160
    # another rate, two frames in one read, half a frame, control frames: all go to feed()
    assert p.one_audio(frame, Kind.SLIN_16K) is None
    assert p.one_audio(frame + frame, Kind.SLIN_8K) is None
    assert p.one_audio(frame[:100], Kind.SLIN_8K) is None
    assert p.one_audio(encode(Kind.HANGUP), Kind.HANGUP) is None
    assert p.one_audio(encode(Kind.SLIN_8K, bytes(MAX_PAYLOAD + 2)), Kind.SLIN_8K) is None
    # bytes held over from a split frame: the fast path must not jump the queue
    p.feed(frame[:10])
    assert p.one_audio(frame, Kind.SLIN_8K) is None
