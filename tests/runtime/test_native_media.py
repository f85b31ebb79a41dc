"""The native media loop (flowagent._medialoop via native_player): real TCP sockets on loopback.

Pacing is checked by counting frames against the native clock's own tick count (never by
wall-clock time): one frame per call per tick, and a long utterance never arrives as a burst.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowagent import audio
from flowagent.asterisk.audiosocket import FrameParser, Kind, ProtocolError, encode, encode_dtmf
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.runner import native_player
from flowagent.runner.native_player import NativeOutStream, NativePlayer
from flowagent.runner.player import PyOutStream

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not native_player.available(), reason="flowagent._medialoop not built"),
]
FLOWS = Path(__file__).parent / "flows"


def numbered(frames: int, rate: int = 8000, start: int = 1000) -> bytes:
    """Audio whose k-th 20 ms frame is the constant start + k: order and gaps are visible."""
    n = audio.frame_bytes(rate) // 2
    return b"".join(struct.pack("<h", start + k) * n for k in range(frames))


def frame_no(payload: bytes, start: int = 1000) -> int:
    return struct.unpack_from("<h", payload)[0] - start


class Peer:
    """Asterisk's side of one AudioSocket connection: a plain non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = FrameParser()
        self.frames: list[tuple[int, bytes]] = []

    def read_now(self) -> int:
        """Read what is there right now (no waiting); returns the frames that came."""
        got = 0
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return got
            if not data:
                return got
            for f in self.parser.feed(data):
                self.frames.append((int(f.kind), f.payload))
                got += 1

    async def read_until(self, cond: Callable[[], bool], timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "timed out waiting for frames"
            self.read_now()
            await asyncio.sleep(0.005)

    def audio(self) -> list[bytes]:
        return [p for k, p in self.frames if 0x10 <= k <= 0x18]


class Rig:
    """A real asyncio TCP server (its transports are what sessions get) + NativePlayer."""

    def __init__(self) -> None:
        self.player = NativePlayer()
        self.server: asyncio.base_events.Server | None = None
        self.accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rig = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                rig.accepted.put_nowait(transport)  # type: ignore[arg-type]

        self.server = await loop.create_server(Proto, "127.0.0.1", 0)

    async def call(self, rate: int = 8000, keepalive_ms: int = 0, **kw: Any
                   ) -> tuple[NativeOutStream, Peer, asyncio.Transport]:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        transport = await asyncio.wait_for(self.accepted.get(), 5)
        transport.pause_reading()  # as the session does before the native side reads
        out = self.player.open(transport.write, rate, keepalive_ms=keepalive_ms,
                               transport=transport, **kw)
        assert isinstance(out, NativeOutStream)
        return out, Peer(sock), transport

    async def close(self) -> None:
        await self.player.stop()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.start()
    yield r
    await r.close()


async def wait_for(cond: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------
# outbound
# ---------------------------------------------------------------------------------------------


async def test_an_utterance_is_paced_one_frame_per_tick_and_counted(rig: Rig) -> None:
    done: list[int] = []
    first: list[tuple[int, float]] = []
    out, peer, _ = await rig.call(on_done=done.append,
                                  on_first=lambda sid, at: first.append((sid, at)))
    pcm = numbered(50)  # 1 s
    out.add(7, pcm[:1000])  # odd-sized chunks, as TTS delivers them
    out.add(7, pcm[1000:])
    out.end(7)
    assert peer.read_now() <= 2, "an utterance must not arrive as a burst"
    ticks0 = rig.player.ticks
    await wait_for(lambda: done == [7])
    ticks = rig.player.ticks - ticks0
    await peer.read_until(lambda: len(peer.audio()) >= 50)
    speech = [p for p in peer.audio() if any(p)]
    assert [frame_no(p) for p in speech] == list(range(50))  # in order, none lost or doubled
    assert out.played == {7: len(pcm)}
    assert first and first[0][0] == 7
    # one frame per tick: the 50 frames took (about) 50 ticks of the native clock
    assert 48 <= ticks <= 53
    # with keepalive 0, silence fills every tick in between, so frames == ticks
    frames_before = out.frames_sent
    t0 = rig.player.ticks
    await wait_for(lambda: rig.player.ticks - t0 >= 20)
    assert abs((out.frames_sent - frames_before) - (rig.player.ticks - t0)) <= 1


async def test_flush_cuts_with_one_fade_frame_then_silence(rig: Rig) -> None:
    out, peer, _ = await rig.call()
    out.add(3, b"\x10\x27" * 8000)  # 1 s of a loud constant
    out.end(3)
    await wait_for(lambda: out.current_say == 3)
    cut = out.flush()
    assert cut == {3}
    assert not out.busy or out.queued_ms() <= 20
    played = out.played[3]
    await peer.read_until(lambda: sum(1 for p in peer.audio() if not any(p)) >= 3)
    frames = [audio.to_array(p) for p in peer.audio()]
    loud = [i for i, f in enumerate(frames) if int(f[-1]) == 10000]
    fade = frames[loud[-1] + 1]
    assert abs(int(fade[0])) > 9000 and abs(int(fade[39])) < 10000 and not fade[40:].any()
    assert all(not f.any() for f in frames[loud[-1] + 2 :])
    assert played == len(loud) * 320 < 16000


async def test_pause_then_resume_continues_where_it_stopped(rig: Rig) -> None:
    out, peer, _ = await rig.call()
    out.add(1, numbered(30))
    out.end(1)
    await wait_for(lambda: out.played.get(1, 0) >= 5 * 320)
    out.pause()
    assert out.paused
    t0 = rig.player.ticks
    await wait_for(lambda: rig.player.ticks - t0 >= 5)
    out.resume()
    await peer.read_until(lambda: sum(1 for p in peer.audio() if any(p)) >= 31)
    speech = [p for p in peer.audio() if any(p)]
    nums = [frame_no(p) for p in speech]
    # 30 numbered frames in order, plus the one fade-out frame of the pause (not numbered:
    # only its first 5 ms carry sound)
    real = [n for n, p in zip(nums, speech, strict=True) if audio.to_array(p)[-1] != 0]
    assert real == list(range(30))
    assert out.played[1] == 30 * 320


async def test_keepalive_sends_silence_only_at_its_interval(rig: Rig) -> None:
    out, peer, _ = await rig.call(keepalive_ms=200)
    t0, f0 = rig.player.ticks, out.frames_sent
    await wait_for(lambda: rig.player.ticks - t0 >= 40)
    sent = out.frames_sent - f0
    ticks = rig.player.ticks - t0
    assert 1 <= sent <= ticks // 10 + 2  # one per 10 ticks, not one per tick
    peer.read_now()
    assert all(not any(p) for p in peer.audio())


async def test_idle_line_first_frame_goes_out_at_once_even_right_after_a_keepalive(
    rig: Rig,
) -> None:
    out, peer, _ = await rig.call(keepalive_ms=500)
    await wait_for(lambda: out.frames_sent >= 1)  # the first keepalive went out
    peer.read_now()
    n = len(peer.frames)
    out.add(1, numbered(2))  # written synchronously by add(): no tick awaited
    peer.read_now()
    assert [frame_no(p) for p in peer.audio()[n:]] == [0]


def test_python_stream_also_kicks_right_after_a_keepalive_frame() -> None:
    sent: list[bytes] = []
    s = PyOutStream(sent.append, 8000, keepalive_ms=500)
    now = time.monotonic()
    s.tick(now)  # a keepalive silence frame, just now
    assert len(sent) == 1
    s.add(1, numbered(1))
    assert len(sent) == 2 and frame_no(sent[1][3:]) == 0


async def test_a_peer_that_does_not_read_gets_whole_frames_later(rig: Rig) -> None:
    out, peer, transport = await rig.call()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    total = 400  # 8 s: far more than both socket buffers hold
    out.add(1, numbered(total))
    out.end(1)
    conn = out._conn
    await wait_for(lambda: conn.state()[6] > 0)  # ticks where the socket was full
    assert out.queued_ms() > 0  # the audio waits; nothing was dropped
    await peer.read_until(lambda: sum(1 for p in peer.audio() if any(p)) >= total, 30)
    nums = [frame_no(p) for p in peer.audio() if any(p)]
    assert nums == list(range(total))  # every frame whole, in order (the parser is strict)


async def test_write_error_is_reported_when_the_peer_resets(rig: Rig) -> None:
    errors: list[BaseException] = []
    out, peer, _ = await rig.call(on_error=errors.append)
    out.add(1, numbered(100))
    await wait_for(lambda: out.frames_sent >= 2)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()  # RST
    await wait_for(lambda: bool(errors))
    assert isinstance(errors[0], OSError)
    rig.player.close_stream(out)


# ---------------------------------------------------------------------------------------------
# inbound
# ---------------------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.audio: list[bytes] = []
        self.frames: list[tuple[int, bytes]] = []
        self.eof: list[tuple[int, int]] = []
        self.errors: list[str] = []

    def attach(self, out: NativeOutStream, leftover: bytes = b"") -> None:
        assert out.start_reading(
            leftover, self.audio.append, lambda k, p: self.frames.append((k, p)),
            lambda e, pending: self.eof.append((e, pending)), self.errors.append)


async def test_inbound_frames_dtmf_and_a_rate_change_are_delivered_in_order(rig: Rig) -> None:
    out, peer, _ = await rig.call()
    box = Inbox()
    first = encode(Kind.SLIN_8K, numbered(1))
    box.attach(out, first[:100])  # the Python parser held a partial frame: it is continued
    peer.sock.send(first[100:] + encode(Kind.SLIN_8K, numbered(1, start=2000)))
    peer.sock.send(encode_dtmf("5") + encode(Kind.SLIN_16K, bytes(640))[:10])
    peer.sock.send(encode(Kind.SLIN_16K, bytes(640))[10:])
    await wait_for(lambda: len(box.frames) >= 2)
    assert [frame_no(p) for p in box.audio] == [0, 1000]
    assert box.frames == [(0x03, b"5"), (0x12, bytes(640))]
    assert not box.errors and not box.eof


async def test_16khz_stream_frames_are_640_bytes_of_kind_0x12(rig: Rig) -> None:
    out, peer, _ = await rig.call(rate=16000)
    box = Inbox()
    box.attach(out)
    out.add(1, numbered(5, rate=16000))
    out.end(1)
    peer.sock.send(encode(Kind.SLIN_16K, numbered(1, rate=16000)))
    await peer.read_until(lambda: sum(1 for p in peer.audio() if any(p)) >= 5)
    assert {k for k, _ in peer.frames} == {0x12}
    assert {len(p) for p in peer.audio()} == {640}
    await wait_for(lambda: len(box.audio) == 1)
    assert len(box.audio[0]) == 640
    # the caller's rate changes: the same socket carries 8 kHz frames from now on
    out.switch_rate(8000)
    n = len(peer.frames)
    await peer.read_until(lambda: len(peer.frames) > n + 2)
    assert {k for k, _ in peer.frames[n + 1 :]} == {0x10}


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x42\x00\x01x", "unknown AudioSocket frame kind 0x42"),
        (b"\x10\xff\xff", "AudioSocket frame of 65535 bytes is over the 16384 byte limit"),
        (b"\x03\x00\x02ab", "DTMF frame of 2 bytes (expected 1)"),
        (b"\x01\x00\x03abc", "UUID frame of 3 bytes (expected 16)"),
    ],
)
async def test_malformed_inbound_reports_the_parser_reason(
    rig: Rig, garbage: bytes, reason: str
) -> None:
    out, peer, _ = await rig.call()
    box = Inbox()
    box.attach(out)
    peer.sock.send(encode(Kind.SLIN_8K, bytes(320)) + garbage)
    await wait_for(lambda: bool(box.errors))
    assert box.errors == [reason]
    with pytest.raises(ProtocolError) as exc:  # the Python parser says the same
        FrameParser().feed(garbage)
    assert exc.value.reason == reason
    assert len(box.audio) == 1


async def test_peer_reset_mid_frame_is_an_eof_with_the_truncated_bytes(rig: Rig) -> None:
    out, peer, _ = await rig.call()
    box = Inbox()
    box.attach(out)
    peer.sock.send(encode(Kind.SLIN_8K, bytes(320))[:50])
    await asyncio.sleep(0.05)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()
    await wait_for(lambda: bool(box.eof))
    assert box.eof[0][1] == 50
    assert box.audio == []


# ---------------------------------------------------------------------------------------------
# fds, threads, reuse
# ---------------------------------------------------------------------------------------------


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    """Media threads of this process (by name: other tests' executor or writer threads come and
    go on their own schedule and must not make this test flaky)."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                n += f.read().strip() == "flowagent-media"
        except OSError:
            continue  # the thread ended while we looked
    return n


async def test_fd_numbers_reused_by_new_calls_never_get_old_calls_frames(rig: Rig) -> None:
    players = [await rig.call() for _ in range(3)]
    for i, (out, _, _) in enumerate(players):
        out.add(i + 1, numbered(60, start=1000 * (i + 1)))
        out.end(i + 1)
    churn_frames = 0
    for k in range(60):
        out, peer, transport = await rig.call()
        out.add(100 + k, numbered(3, start=5000))
        if k % 2:
            await asyncio.sleep(0.01)
        rig.player.close_stream(out)
        transport.close()  # the original fd number is free for the next connection now
        await asyncio.sleep(0)
        peer.read_now()
        churn_frames += len(peer.frames)
        assert all(k2 in (0x00, 0x10) for k2, _ in peer.frames)
        for _, p in peer.frames:
            assert not any(p) or 5000 <= frame_no(p, 0) < 5003
        peer.sock.close()
    for i, (_out, peer, _) in enumerate(players):
        start = 1000 * (i + 1)
        await peer.read_until(lambda p=peer: sum(1 for x in p.audio() if any(x)) >= 60)
        assert [frame_no(p, start) for p in peer.audio() if any(p)] == list(range(60))


async def test_no_thread_or_fd_is_left_after_the_calls_and_stop() -> None:
    threads0, fds0 = threads(), fds()
    r = Rig()
    await r.start()
    calls = [await r.call() for _ in range(20)]
    for out, _, _ in calls:
        out.add(1, numbered(2))
    assert threads() == threads0 + 1  # ONE media thread for all calls
    await wait_for(lambda: all(o.frames_sent >= 2 for o, _, _ in calls))
    for out, peer, transport in calls:
        r.player.close_stream(out)
        transport.close()
        peer.sock.close()
    assert threads() == threads0  # the last call closed: the thread is gone
    await r.close()
    # no fd of ours left (others' sockets may close a little later: wait, never more than before)
    await wait_for(lambda: fds() <= fds0, timeout_s=5)
    assert threads() == threads0


# ---------------------------------------------------------------------------------------------
# whole calls through the server
# ---------------------------------------------------------------------------------------------


def need_native_default() -> None:
    if native_player.backend_name() != "native":
        pytest.skip("FLOWAGENT_MEDIA=python: the server runs the pure-Python path")


async def test_a_malformed_call_ends_alone_and_the_other_call_carries_on(harness: Any) -> None:
    need_native_default()
    h = await harness(FLOWS / "basic.yaml")
    assert isinstance(h.rt.player, NativePlayer)
    good = h.caller()
    bad = h.caller()
    await good.connect()
    await bad.connect()
    await good.wait_agent_started(0, timeout_s=5)
    await bad.wait_agent_started(0, timeout_s=5)
    session = h.rt.sessions[good.uuid]
    assert isinstance(session.line.out, NativeOutStream)
    assert not session.line.transport.is_reading()  # the native loop reads this socket
    bad.send_raw(b"\x42\x00\x00")
    await asyncio.wait_for(bad.closed.wait(), 5)
    rec = None
    for _ in range(200):
        rec = await h.record(bad.uuid)
        if rec is not None:
            break
        await asyncio.sleep(0.02)
    assert rec is not None
    assert "unknown AudioSocket frame kind 0x42" in str(rec)
    before = len(good.stats.frames)
    await asyncio.sleep(0.2)
    assert len(good.stats.frames) > before and not good.closed.is_set()
    good.send_dtmf("1")  # DTMF still reaches the good call (the flow may ignore it)
    await asyncio.sleep(0.1)
    assert not good.closed.is_set()
    await good.hangup()


async def test_a_16khz_call_is_answered_at_16khz(harness: Any) -> None:
    need_native_default()
    h = await harness(FLOWS / "basic.yaml")
    c: AudioSocketCaller = h.caller(sample_rate=16000)
    await c.connect()
    await c.wait_agent_started(0, timeout_s=5)
    assert {f.kind for f in c.stats.frames} == {int(Kind.SLIN_16K)}
    assert isinstance(h.rt.sessions[c.uuid].line.out, NativeOutStream)
    await c.hangup()


def test_flowagent_media_python_switches_the_native_loop_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowagent.runner.player import Player

    monkeypatch.setenv("FLOWAGENT_MEDIA", "python")
    assert type(native_player.make_player()) is Player
    monkeypatch.setenv("FLOWAGENT_MEDIA", "native")
    assert isinstance(native_player.make_player(), NativePlayer)
    monkeypatch.delenv("FLOWAGENT_MEDIA")
    assert isinstance(native_player.make_player(), NativePlayer)


async def test_a_call_on_the_python_path_when_switched_off(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWAGENT_MEDIA", "python")
    h = await harness(FLOWS / "basic.yaml")
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0, timeout_s=5)
    out = h.rt.sessions[c.uuid].line.out
    assert isinstance(out, PyOutStream)
    assert h.rt.sessions[c.uuid].line.transport.is_reading()
    await c.hangup()


# ---------------------------------------------------------------------------------------------
# the native parser against the Python one (fuzz)
# ---------------------------------------------------------------------------------------------

_chunks = st.lists(
    st.one_of(
        st.binary(max_size=400).map(lambda b: encode(Kind.SLIN_8K, b)),
        st.tuples(st.sampled_from([0, 1, 3, 0x10, 0x12, 0x18, 0xFF, 0x02, 0x42]),
                  st.integers(0, 20000), st.binary(max_size=40)).map(
            lambda t: bytes([t[0]]) + min(t[1], 0xFFFF).to_bytes(2, "big") + t[2]),
        st.binary(max_size=12),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_chunks)
def test_native_parser_agrees_with_the_python_parser(data: bytes) -> None:
    from flowagent import _medialoop  # type: ignore[attr-defined]

    expected: list[tuple[int, bytes]] = []
    reason = ""
    parser = FrameParser()
    try:
        expected = [(int(f.kind), f.payload) for f in parser.feed(data)]
    except ProtocolError as exc:
        reason = exc.reason
        # frames before the bad header are delivered too: re-parse up to the failure
        expected = []
        p2 = FrameParser()
        pos = 0
        while len(data) - pos >= 3:
            try:
                got = p2.feed(data[pos : pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])])
            except ProtocolError:
                break
            expected += [(int(f.kind), f.payload) for f in got]
            pos += 3 + ((data[pos + 1] << 8) | data[pos + 2])
    eng = _medialoop.Engine()
    evfd = eng.start()
    a, b = socket.socketpair()
    conn = eng.open(os.dup(a.fileno()), 0x10, 320, 0)
    try:
        assert conn.start_reading(b"")
        b.sendall(data)
        b.shutdown(socket.SHUT_WR)
        frames: list[tuple[int, bytes]] = []
        end: tuple[int, Any] | None = None
        deadline = time.monotonic() + 10
        while end is None:
            assert time.monotonic() < deadline
            select.select([evfd], [], [], 0.05)
            for _cid, typ, x, y in eng.take_events():
                if typ == native_player.EV_FRAME:
                    frames.append((x, y))
                elif typ in (native_player.EV_EOF, native_player.EV_PROTO):
                    end = (typ, y)
        assert frames == expected
        if reason:
            assert end == (native_player.EV_PROTO, reason)
        else:
            assert end[0] == native_player.EV_EOF
    finally:
        conn.close()
        eng.stop()
        a.close()
        b.close()
