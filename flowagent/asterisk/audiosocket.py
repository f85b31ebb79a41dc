"""AudioSocket wire protocol (Asterisk `res_audiosocket`): frame codec and incremental parser.

Each message is `kind (1 byte) | length (2 bytes, big-endian) | payload`. TCP delivers bytes, not
messages, so a read may hold half a frame or twenty frames; `FrameParser.feed()` keeps the tail and
returns whole frames only. The parser is strict because bad input must end *that* call with a
logged reason (a `ProtocolError`) and never disturb the server or another call.

What we send is restricted to what Asterisk accepts: a hang-up (0x00) or non-empty audio
(0x10..0x18). Asterisk hangs the call up on any other kind or on a zero-length audio frame, so
`encode_audio()` refuses those instead of trusting callers.
"""

from __future__ import annotations

import enum
import struct
import uuid as uuidlib
from typing import NamedTuple

HEADER = struct.Struct(">BH")
#: Largest payload we accept. 20 ms at 192 kHz is 7680 bytes; allow generous frames (~100 ms at
#: 48 kHz) but refuse anything that could only be garbage or an attack on memory.
MAX_PAYLOAD = 16384


class Kind(enum.IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    SLIN_8K = 0x10
    SLIN_12K = 0x11
    SLIN_16K = 0x12
    SLIN_24K = 0x13
    SLIN_32K = 0x14
    SLIN_44K = 0x15
    SLIN_48K = 0x16
    SLIN_96K = 0x17
    SLIN_192K = 0x18
    ERROR = 0xFF


#: Sample rate of each audio kind.
AUDIO_RATES: dict[Kind, int] = {
    Kind.SLIN_8K: 8000,
    Kind.SLIN_12K: 12000,
    Kind.SLIN_16K: 16000,
    Kind.SLIN_24K: 24000,
    Kind.SLIN_32K: 32000,
    Kind.SLIN_44K: 44100,
    Kind.SLIN_48K: 48000,
    Kind.SLIN_96K: 96000,
    Kind.SLIN_192K: 192000,
}
KIND_FOR_RATE: dict[int, Kind] = {rate: kind for kind, rate in AUDIO_RATES.items()}


class ErrorCode(enum.IntEnum):
    """Payload byte of an 0xFF error frame (from res_audiosocket)."""

    NONE = 0x00
    HANGUP = 0x01  # the Asterisk channel hung up
    FRAME_FORWARDING = 0x02  # Asterisk failed to forward a frame
    MEMORY = 0x04  # Asterisk ran out of memory


class ProtocolError(Exception):
    """The peer sent something that is not AudioSocket; `reason` is one loggable sentence.

    `parsed`: the whole frames `FrameParser.feed()` had read from the same bytes before the bad
    one. They are real (a UUID among them starts a call that must get its record), so the caller
    handles them first and then ends the call."""

    def __init__(self, reason: str, parsed: list[Frame] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parsed: list[Frame] = parsed or []


class Frame(NamedTuple):
    """One message. A NamedTuple because a call makes fifty of these a second."""

    kind: Kind
    payload: bytes = b""

    @property
    def is_audio(self) -> bool:
        return self.kind in AUDIO_RATES

    @property
    def sample_rate(self) -> int:
        return AUDIO_RATES.get(self.kind, 0)

    def uuid(self) -> str:
        """The call UUID of a 0x01 frame, as the canonical string."""
        if self.kind is not Kind.UUID or len(self.payload) != 16:
            raise ProtocolError("the UUID frame does not carry 16 bytes")
        return str(uuidlib.UUID(bytes=self.payload))

    def digit(self) -> str:
        if self.kind is not Kind.DTMF or len(self.payload) != 1:
            raise ProtocolError("the DTMF frame does not carry exactly one character")
        d = chr(self.payload[0])
        if d not in "0123456789*#ABCDabcd":
            raise ProtocolError(f"the DTMF frame carries {d!r}, which is not a keypad digit")
        return d.upper()

    def error_code(self) -> int:
        return self.payload[0] if self.payload else 0


def encode(kind: Kind | int, payload: bytes = b"") -> bytes:
    """Any frame (used by the test client playing Asterisk; the server uses the helpers below)."""
    if len(payload) > 0xFFFF:
        raise ValueError("AudioSocket payload longer than 65535 bytes")
    return HEADER.pack(int(kind), len(payload)) + payload


def encode_audio(pcm: bytes, kind: Kind = Kind.SLIN_8K) -> bytes:
    """An outbound audio frame. Refuses what would make Asterisk hang up the call."""
    if kind not in AUDIO_RATES:
        raise ValueError(f"{kind!r} is not an audio kind; Asterisk would hang up")
    if not pcm:
        raise ValueError("zero-length audio frame; Asterisk would hang up")
    if len(pcm) % 2:
        raise ValueError("odd-length s16 audio frame")
    return HEADER.pack(int(kind), len(pcm)) + pcm


def encode_hangup() -> bytes:
    return HEADER.pack(Kind.HANGUP, 0)


def encode_uuid(call_uuid: str) -> bytes:
    return encode(Kind.UUID, uuidlib.UUID(call_uuid).bytes)


def encode_dtmf(digit: str) -> bytes:
    return encode(Kind.DTMF, digit.encode("ascii"))


_KIND_OF: dict[int, Kind] = {int(k): k for k in Kind}  # faster than Kind(int) per frame


class FrameParser:
    """Incremental parser: `feed(data)` returns the whole frames completed by `data`.

    Raises `ProtocolError` on an unknown kind, an oversized length, or a malformed UUID/DTMF
    payload. After an error the parser is unusable (the call must end): there is no way to
    resynchronise a length-prefixed stream once a header is wrong.
    """

    __slots__ = ("_broken", "_buf", "max_payload")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self.max_payload = max_payload
        self._broken = False

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame (a truncated frame at hang-up)."""
        return len(self._buf)

    def take_pending(self) -> bytes:
        """Hand over the bytes of a partial frame held so far (the native media loop takes the
        socket over mid-stream and must start exactly where this parser stopped)."""
        held = bytes(self._buf)
        self._buf = bytearray()
        return held

    def one_audio(self, data: bytes, kind: int) -> bytes | None:
        """Fast path for the common read: `data` is exactly ONE whole audio frame of `kind`
        and nothing is held over. Returns its payload; None means "use `feed()`" (and nothing
        was consumed).

        Why: Asterisk sends one 20 ms frame per 20 ms per call, so almost every socket read is
        exactly one frame. At a thousand calls that is 50,000 reads a second, and the general
        loop (header unpack, checks, a `Frame` and a list per read) was the largest share of
        our Python time per inbound frame; this path is two comparisons and one slice. Only
        audio kinds are taken here, so every check `feed()` makes still applies to anything
        else.
        """
        n = len(data) - 3
        if (
            n < 0
            or self._buf
            or data[0] != kind
            or (data[1] << 8 | data[2]) != n
            or n > self.max_payload
            or self._broken
            or not 0x10 <= kind <= 0x18
        ):
            return None
        return data[3:]

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken:
            raise ProtocolError("the stream already failed to parse")
        # fast path: nothing held over, so parse straight from `data` without copying it
        src: bytes | bytearray = data
        if self._buf:
            self._buf += data
            src = self._buf
        frames: list[Frame] = []
        append = frames.append
        unpack = HEADER.unpack_from
        kinds = _KIND_OF
        limit = self.max_payload
        pos = 0
        n = len(src)
        try:
            while n - pos >= 3:
                kind_no, length = unpack(src, pos)
                kind = kinds.get(kind_no)
                if kind is None:
                    raise ProtocolError(f"unknown AudioSocket frame kind 0x{kind_no:02x}")
                if length > limit:
                    raise ProtocolError(
                        f"AudioSocket frame of {length} bytes is over the {limit} byte limit"
                    )
                if kind is Kind.UUID and length != 16:
                    raise ProtocolError(f"UUID frame of {length} bytes (expected 16)")
                if kind is Kind.DTMF and length != 1:
                    raise ProtocolError(f"DTMF frame of {length} bytes (expected 1)")
                end = pos + 3 + length
                if end > n:
                    break
                append(Frame(kind, bytes(src[pos + 3 : end])))
                pos = end
        except ProtocolError as exc:
            self._broken = True
            exc.parsed = frames
            raise
        if src is data:
            if pos < n:
                self._buf = bytearray(data[pos:])
        elif pos:
            del self._buf[:pos]
        return frames
