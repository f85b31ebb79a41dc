"""The chan_websocket out stream against a model of Asterisk's playout queue (one frame per
20 ms tick, marks confirmed when playout reaches them, FLUSH_MEDIA / PAUSE_MEDIA as
chan_websocket.c does them): what it reports as heard and done matches what played, and it
never stalls, whatever order audio, marks, pauses and flushes come in."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

import pytest

from flowagent.asterisk.chan_websocket import FORMATS, Command
from flowagent.runner.websocket_out import WebSocketOutStream

pytestmark = pytest.mark.timeout(60)

SLIN = FORMATS["slin"]
FRAME = 320  # 20 ms at 8 kHz


class Playout:
    """Asterisk's side: the queue of frames and marks, played on a 20 ms clock."""

    def __init__(self, confirm_marks: bool = True) -> None:
        self.confirm_marks = confirm_marks
        self.queue: deque[Any] = deque()
        self.stream: WebSocketOutStream | None = None
        self.paused = False
        self.played: list[tuple[float, bytes]] = []
        self.commands: list[str] = []
        self._task = asyncio.get_running_loop().create_task(self._clock())

    def media(self, payload: bytes) -> None:
        assert len(payload) % FRAME == 0, "only whole frames (Asterisk drops a partial one)"
        for i in range(0, len(payload), FRAME):
            self.queue.append(payload[i:i + FRAME])

    def command(self, command: Command) -> None:
        self.commands.append(command.name)
        if command.name == "MARK_MEDIA":
            self.queue.append(("mark", command.correlation_id))
        elif command.name == "FLUSH_MEDIA":
            self.queue.clear()
        elif command.name == "PAUSE_MEDIA":
            self.paused = True
        elif command.name == "CONTINUE_MEDIA":
            self.paused = False

    async def _clock(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.02 - time.monotonic()))
            if self.paused:
                continue
            while self.queue and isinstance(self.queue[0], tuple):
                _, cid = self.queue.popleft()
                assert self.stream is not None
                if self.confirm_marks:
                    self.stream.mark_processed(cid)
            if self.queue:
                self.played.append((time.monotonic(), self.queue.popleft()))

    def stop(self) -> None:
        self._task.cancel()


def utterance(say_id: int, frames: int) -> bytes:
    """Audio whose every sample says which utterance it belongs to."""
    return say_id.to_bytes(2, "little", signed=True) * (FRAME // 2) * frames


async def test_it_never_stalls_and_what_it_counts_as_heard_is_what_played() -> None:
    rng = random.Random(21)
    for _round in range(12):
        peer = Playout()
        done: list[int] = []
        idle = asyncio.Event()
        stream = WebSocketOutStream(peer, SLIN, FRAME, on_done=done.append)
        stream.on_idle = idle.set
        peer.stream = stream
        cut: set[int] = set()
        said: list[int] = []
        for say_id in range(1, 5):
            pcm = utterance(say_id, rng.randint(5, 60)) + bytes(rng.randrange(0, FRAME, 2))
            said.append(say_id)
            while pcm:  # in TTS-sized pieces, at TTS-like pace
                n = rng.randrange(2, 4000, 2)
                stream.add(say_id, pcm[:n])
                pcm = pcm[n:]
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() * 0.05)
            stream.end(say_id)
            roll = rng.random()
            await asyncio.sleep(rng.random() * 0.4)
            if roll < 0.25:  # the caller cut in: whatever is not heard by now never plays
                heard = dict(stream.played)
                cut |= stream.flush()
                played_now = {sid: 0 for sid in said}
                for _, frame in peer.played:
                    sid = int.from_bytes(frame[:2], "little", signed=True)
                    if sid > 0:
                        played_now[sid] += FRAME
                for sid in cut:  # what we say was heard is what Asterisk played (+/- 3 frames)
                    assert abs(heard.get(sid, 0) - played_now.get(sid, 0)) <= 3 * FRAME
            elif roll < 0.4:  # a cough: paused, then resumed
                stream.pause()
                await asyncio.sleep(rng.random() * 0.2)
                stream.resume()
        deadline = time.monotonic() + 8
        while stream.busy and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the stream
            await asyncio.sleep(0.02)
        assert not stream.busy, "the stream stalled with audio of ours still queued"
        await asyncio.sleep(0.05)
        assert idle.is_set()  # ... and said so
        assert set(done) == set(said) - cut  # every utterance not cut ended, once
        assert len(done) == len(set(done))
        stream.close()
        peer.stop()


async def test_marks_that_never_come_back_are_given_up_and_the_utterance_still_ends() -> None:
    peer = Playout(confirm_marks=False)  # a peer that loses every MEDIA_MARK_PROCESSED
    done: list[int] = []
    stream = WebSocketOutStream(peer, SLIN, FRAME, on_done=done.append, mark_timeout_s=0.5)
    peer.stream = stream
    stream.add(1, utterance(1, 60))  # 1.2 s: sent in two top-ups, each followed by a mark
    stream.end(1)
    deadline = time.monotonic() + 5
    while (stream.busy or not done) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert done == [1] and not stream.busy
    # the clock never ran ahead of an unconfirmed mark by more than its slack: the utterance
    # ended no sooner than it played
    assert len(peer.played) == 60
    stream.close()
    peer.stop()
