"""A call's line: how its audio, keypad digits and hang-up travel between Asterisk and us.

Two transports carry calls: AudioSocket (`audiosocket_line.AudioSocketLine`: a TCP stream of
typed frames, paced by us) and Asterisk's chan_websocket (`websocket_line.WebSocketLine`:
binary media and JSON or text control messages, buffered by Asterisk). A call (`session`,
`sts_call`, `lifecycle`, `call_start`) only ever talks to this `Line` Protocol, so the same
flows and call code run on either, and a new transport is one module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flowagent.runner.audio_recording import CallRecorder
from flowagent.runner.out_stream import OutStream


async def first_of(event: asyncio.Event, ended: asyncio.Event, timeout_s: float) -> None:
    """Wait until `event` is set, the line has `ended`, or `timeout_s` passed (every
    transport waits for its UUID and its first audio this way)."""
    if event.is_set() or ended.is_set():
        return
    waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(ended.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class LineError(Exception):
    """The far end broke its protocol before the call could start (one loggable sentence)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LineHooks(Protocol):
    """What the line tells its owner (the call)."""

    @property
    def on_audio(self) -> Callable[[bytes], None]:
        """Where each inbound audio frame goes (at the call's rate, even length). Read once by
        the line and then called for every frame: a call may hand over its listener's own
        method, so a frame costs no forwarding call."""

    def on_dtmf(self, digit: str) -> None: ...

    def on_rate_change(self, sample_rate: int) -> None:
        """The caller's audio kind changed mid-call; the out stream already follows it."""

    def on_line_ended(self, by: str, reason: str) -> None:
        """The far end went away (`by`: "caller" | "error") or the line failed."""

    def on_first_frame(self, say_id: int, at: float) -> None:
        """The first frame of utterance `say_id` was written to the socket at `at`."""

    def on_say_done(self, say_id: int) -> None:
        """Every frame of `say_id` has been written (the caller heard it all)."""

    def on_idle(self) -> None:
        """Nothing of ours is queued any more."""


class Line(Protocol):
    """One call's connection, whatever carries it."""

    uuid: str
    #: the call's sample rate (what the far end's audio says)
    sample_rate: int
    #: inbound audio frames so far (metrics)
    frames_in: int
    #: set when the connection is over (either side)
    ended: asyncio.Event

    @property
    def closed(self) -> bool: ...

    @property
    def failed(self) -> bool:
        """The far end broke the protocol (the call ends in error)."""

    @property
    def out(self) -> OutStream | None: ...

    @property
    def recorder(self) -> CallRecorder | None: ...

    @property
    def end_by(self) -> str:
        """Who ended the connection as the line saw it ("caller" | "error"; "" while open or
        when we ended it)."""

    @property
    def end_reason(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What the transport itself says about the call, read like `POST /call` metadata
        (chan_websocket: the upgrade URL's `v(...)` values and the channel variables;
        AudioSocket: nothing). Known once `wait_for_uuid` has returned."""

    async def wait_for_uuid(self, timeout_s: float) -> str:
        """The call's id ("" when the far end left first). Raises `LineError`."""

    async def wait_for_rate(self, timeout_s: float) -> int:
        """The call's sample rate, once the far end has said it (bounded)."""

    def open_output(self, recorder: CallRecorder | None = None) -> OutStream:
        """Our audio's way out, at the call's rate."""

    def start(self, hooks: LineHooks) -> None:
        """From now on the line reports to `hooks` (what came before the call started too)."""

    def fail(self, reason: str) -> None:
        """End the call for a protocol fault."""

    def hang_up(self, send_frame: bool = True) -> None:
        """End the call from our side (the dialplan continues)."""

    def close(self) -> None:
        """Release the connection (after the call is over)."""
