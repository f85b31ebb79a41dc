"""The typed seam between a call and the pacing clock: what an outbound audio stream offers.

Two implementations keep this contract: `player.OutStream` (pure Python, one asyncio clock for
every call) and `native_player.NativeOutStream` (the C media loop, which also owns the socket's
reads and writes). A call only ever talks to these Protocols, so it never needs to know which
backend runs underneath — capabilities that differ (the native loop writes the hang-up frame and
reads the socket itself) are methods that say whether they did anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol


class AudioSink(Protocol):
    """Where synthesis writes an utterance's audio: the live stream, or audio held back."""

    def add(self, say_id: int, pcm: bytes) -> None: ...

    def end(self, say_id: int) -> None: ...


class OutStream(AudioSink, Protocol):
    """One call's outbound audio, paced at one 20 ms frame per 20 ms."""

    @property
    def sample_rate(self) -> int: ...

    #: called when the last queued frame has gone out (the line is ours to end or listen)
    on_idle: Callable[[], None] | None

    def flush(self) -> set[int]:
        """Barge-in: drop everything queued (a short fade-out follows). The say_ids cut."""
        ...

    def pause(self) -> None:
        """Silence the line now but keep the queue (a possible false barge-in)."""
        ...

    def resume(self) -> None: ...

    def set_gain(self, gain: float) -> None:
        """Scale our audio by `gain` (0..1; 1.0 = as made) from the next frame that leaves for
        the line, including frames already queued — ducking under a possible barge-in. A ramp
        across one frame avoids a click; `flush()` and a new rate return to 1.0. Costs nothing
        per frame while the gain is 1.0."""
        ...

    def sent_tail(self) -> list[tuple[float, bytes]]:
        """The frames last written to the caller (~640 ms), oldest first: (monotonic time it
        was written, s16le payload as sent, after any gain; b"" = silence). What the caller's
        line may echo back — the echo check's reference (`echo_guard`), read only when a check
        runs. Empty: this stream cannot tell (then nothing is judged to be echo)."""
        ...

    def close(self) -> None: ...

    @property
    def busy(self) -> bool:
        """Any of our audio is queued or still being framed."""
        ...

    @property
    def playing(self) -> bool:
        """Our audio is on the line or waiting to go out (a frame of an utterance was the last
        sent, or audio is queued) — what the caller hears as the agent talking."""
        ...

    @property
    def paused(self) -> bool: ...

    @property
    def current_say(self) -> int:
        """The say_id of the frame last sent (0: silence)."""
        ...

    @property
    def played(self) -> Mapping[int, int]:
        """say_id -> bytes of its audio actually written to the socket."""
        ...

    def queued_say(self) -> int:
        """The first utterance waiting in the queue (0: none) — the one on hold when paused."""
        ...

    @property
    def frames_sent(self) -> int: ...

    @property
    def underruns(self) -> int: ...

    def switch_rate(self, sample_rate: int) -> bool:
        """Follow a new call rate on the same stream. False: this backend cannot; the caller
        closes the stream and opens a new one at the new rate."""
        ...

    def send_hangup(self) -> bool:
        """Write the AudioSocket hang-up frame after any frame in progress and close. False:
        the stream does not own the socket; the caller writes the frame itself."""
        ...

    def start_reading(
        self,
        leftover: bytes,
        on_audio: Callable[[bytes], None],
        on_frame: Callable[[int, bytes], None],
        on_eof: Callable[[int, int], None],
        on_error: Callable[[str], None],
        on_fail: Callable[[BaseException], None] | None = None,
    ) -> bool:
        """Take over reading the socket (frames parsed off the event loop). False: not
        possible with this backend; the transport keeps feeding the call's parser."""
        ...


class Pacer(Protocol):
    """The shared pacing clock (`player.Player` or `native_player.NativePlayer`)."""

    def open(
        self,
        write: Callable[[bytes], None],
        sample_rate: int = 8000,
        on_done: Callable[[int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_first: Callable[[int, float], None] | None = None,
        keepalive_ms: int = 0,
        transport: asyncio.BaseTransport | None = None,
    ) -> OutStream: ...

    def close_stream(self, stream: OutStream) -> None: ...

    def poll(self) -> None: ...

    async def stop(self) -> None: ...
