"""AudioSocket codec and incremental parser: what Asterisk sends, split any way TCP likes."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowagent.asterisk.audiosocket import (
    AUDIO_RATES,
    MAX_PAYLOAD,
    ErrorCode,
    Frame,
    FrameParser,
    Kind,
    ProtocolError,
    encode,
    encode_audio,
    encode_dtmf,
    encode_hangup,
    encode_uuid,
)


def test_every_kind_round_trips() -> None:
    u = str(uuidlib.uuid4())
    data = (
        encode_uuid(u)
        + encode_dtmf("5")
        + b"".join(encode_audio(b"\x01\x00" * 160, k) for k in AUDIO_RATES)
        + encode(Kind.ERROR, bytes([ErrorCode.HANGUP]))
        + encode_hangup()
    )
    frames = FrameParser().feed(data)
    assert frames[0].uuid() == u
    assert frames[1].digit() == "5"
    audio = frames[2:-2]
    assert [f.kind for f in audio] == list(AUDIO_RATES)
    assert [f.sample_rate for f in audio] == list(AUDIO_RATES.values())
    assert frames[-2].error_code() == ErrorCode.HANGUP
    assert frames[-1] == Frame(Kind.HANGUP, b"")


def test_frames_split_across_reads_and_many_per_read() -> None:
    stream = b"".join(encode_audio(bytes([i]) * 320) for i in range(1, 6))
    p = FrameParser()
    got: list[Frame] = []
    for i in range(0, len(stream), 7):  # 7-byte reads cut headers and payloads anywhere
        got += p.feed(stream[i : i + 7])
    assert [f.payload[0] for f in got] == [1, 2, 3, 4, 5]
    assert p.pending == 0
    assert len(FrameParser().feed(stream)) == 5


def test_any_audio_length_is_accepted() -> None:
    lengths = [2, 160, 318, 320, 321, 640, 1000]
    data = b"".join(encode(Kind.SLIN_8K, b"\x00" * n) for n in lengths)
    assert [len(f.payload) for f in FrameParser().feed(data)] == lengths


def test_truncated_frame_is_held_not_returned() -> None:
    p = FrameParser()
    data = encode_audio(b"\x00" * 320)
    assert p.feed(data[:100]) == []
    assert p.pending == 100


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes([0x02, 0, 0]), "unknown AudioSocket frame kind 0x02"),
        (bytes([0x42, 0, 1, 0]), "unknown AudioSocket frame kind 0x42"),
        (bytes([0x10, 0xFF, 0xFF]), "over the"),
        (bytes([0x01, 0, 3]) + b"abc", "UUID frame of 3 bytes"),
        (bytes([0x03, 0, 2]) + b"12", "DTMF frame of 2 bytes"),
    ],
)
def test_bad_input_raises_protocol_error_with_reason(data: bytes, reason: str) -> None:
    p = FrameParser()
    with pytest.raises(ProtocolError) as exc:
        p.feed(data)
    assert reason in exc.value.reason
    with pytest.raises(ProtocolError):
        p.feed(b"")  # a broken stream stays broken


def test_we_never_encode_what_makes_asterisk_hang_up() -> None:
    with pytest.raises(ValueError):
        encode_audio(b"")
    with pytest.raises(ValueError):
        encode_audio(b"\x00" * 320, Kind.DTMF)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_audio(b"\x00" * 3)


def test_bad_dtmf_character_is_a_protocol_error() -> None:
    (f,) = FrameParser().feed(encode(Kind.DTMF, b"x"))
    with pytest.raises(ProtocolError):
        f.digit()


frames_strategy = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=700).map(lambda b: encode(Kind.SLIN_8K, b)),
        st.sampled_from("0123456789*#").map(encode_dtmf),
        st.just(encode_hangup()),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(min_value=1, max_value=900), max_size=40))
def test_fuzz_any_split_gives_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frames)
    whole = FrameParser().feed(data)
    p = FrameParser()
    got: list[Frame] = []
    pos = 0
    for c in cuts:
        got += p.feed(data[pos : pos + c])
        pos += c
    got += p.feed(data[pos:])
    assert got == whole
    assert len(whole) == len(frames)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_garbage_only_ever_raises_protocol_error(data: bytes) -> None:
    p = FrameParser()
    try:
        frames = p.feed(data)
    except ProtocolError:
        return
    for f in frames:
        assert len(f.payload) <= MAX_PAYLOAD
