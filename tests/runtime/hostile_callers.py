"""Hostile and broken callers for an AudioSocket server, shared by the suite's bounded run
(test_hostile_callers.py beside it) and the long run in bench/bench_fuzz.py.

Each attack is one TCP connection that does one thing real networks and real attackers do:
malformed frames (unknown kinds, a length past the end, a zero-length audio frame, a header cut
short), a malformed frame in the same write as the UUID, a caller gone right after the UUID or
in the middle of the agent's answer, the same UUID many times at once (the nil UUID, as a
misconfigured dialplan sends), a connection that never sends its UUID, a UUID sent a byte at a
time and never finished (slowloris), random bytes. A seeded RNG picks them, so a failing run can
be replayed. `attack_batch` returns which connections sent a whole, valid UUID: each of those
must have exactly one call record, whatever happened next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field

from flowagent.asterisk.audiosocket import Kind, encode, encode_uuid

NIL = "00000000-0000-0000-0000-000000000000"
FRAME = 0.02
SILENCE = encode(Kind.SLIN_8K, bytes(320))
_VALID_KINDS = {0x00, 0x01, 0x03, *range(0x10, 0x19), 0xFF}
_BAD_KINDS = [k for k in range(256) if k not in _VALID_KINDS]

#: attack name -> does the connection send a whole, valid UUID (so it must get a record)?
ATTACKS: dict[str, bool] = {
    "uuid_and_garbage_in_one_write": True,
    "unknown_kind": True,
    "length_past_the_end": True,
    "zero_length_audio": True,
    "header_cut_short": True,
    "gone_after_uuid": True,
    "gone_mid_answer": True,
    "same_uuid_at_once": True,
    "polite": True,
    "bad_keypad_frame_before_audio": True,
    "second_uuid": True,
    "odd_length_audio": True,
    "asterisk_error_frame": True,
    "rate_changes_every_frame": True,
    "never_sends_uuid": False,
    "slowloris": False,
    "random_bytes": False,
    "closed_at_once": False,
}


@dataclass
class AttackResult:
    """What a batch did: every connection by attack, and the UUIDs sent whole (nil repeats)."""

    connections: Counter[str] = field(default_factory=Counter)
    uuids: Counter[str] = field(default_factory=Counter)  # uuid -> connections that sent it
    attack_of: dict[str, str] = field(default_factory=dict)  # uuid -> its attack (not nil)
    failed_to_connect: int = 0


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port), 5)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def _until_closed(reader: asyncio.StreamReader, timeout_s: float) -> None:
    """Read (and drop) what the server sends until it closes or the time is up."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            while await reader.read(65536):
                pass


async def _frames(writer: asyncio.StreamWriter, seconds: float) -> None:
    """Silence, 20 ms at a time, as Asterisk sends it (the first ~0.5 s after the UUID)."""
    await asyncio.sleep(0.5)
    for _ in range(int(seconds / FRAME)):
        if writer.is_closing():
            return
        writer.write(SILENCE)
        await asyncio.sleep(FRAME)


async def one_attack(host: str, port: int, name: str, rng: random.Random,
                     idle_s: float) -> str | None:
    """Run one attack; the UUID it sent whole (None if it sent none)."""
    call = NIL if name == "same_uuid_at_once" else str(uuidlib.UUID(int=rng.getrandbits(128),
                                                                      version=4))
    reader, writer = await _open(host, port)
    sent: str | None = call if ATTACKS[name] else None
    try:
        if name == "uuid_and_garbage_in_one_write":
            writer.write(encode_uuid(call) + bytes([rng.choice(_BAD_KINDS), 0, 1, 0]))
            await _until_closed(reader, 3)
        elif name == "unknown_kind":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0, 0.3))
            writer.write(bytes([rng.choice(_BAD_KINDS)]) + (4).to_bytes(2, "big") + b"abcd")
            await _until_closed(reader, 3)
        elif name == "length_past_the_end":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0, 0.3))
            writer.write(bytes([Kind.SLIN_8K]) + (0xFFFF).to_bytes(2, "big") + os.urandom(10))
            await asyncio.sleep(rng.uniform(0, 0.2))
        elif name == "zero_length_audio":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0, 0.3))
            writer.write(bytes([Kind.SLIN_8K, 0, 0]))
            await _until_closed(reader, 3)
        elif name == "header_cut_short":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0, 0.3))
            writer.write(bytes([Kind.SLIN_8K, 0x01]))
        elif name == "bad_keypad_frame_before_audio":  # held until the call starts
            writer.write(encode_uuid(call) + encode(Kind.DTMF, b"x"))
            await _until_closed(reader, 3)
        elif name == "second_uuid":
            writer.write(encode_uuid(call) + encode_uuid(call))
            await _until_closed(reader, 3)
        elif name == "odd_length_audio":  # "frames of other lengths happen"
            writer.write(encode_uuid(call))
            await asyncio.sleep(0.5)
            for _ in range(rng.randint(1, 20)):
                writer.write(encode(Kind.SLIN_8K, os.urandom(rng.choice([1, 3, 161, 319, 321]))))
                await asyncio.sleep(FRAME)
        elif name == "asterisk_error_frame":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0, 0.3))
            writer.write(encode(Kind.ERROR, bytes([rng.randint(0, 255)])))
            await _until_closed(reader, 3)
        elif name == "rate_changes_every_frame":
            writer.write(encode_uuid(call))
            await asyncio.sleep(0.5)
            for i in range(rng.randint(2, 30)):
                rate = Kind.SLIN_8K if i % 2 else Kind.SLIN_16K
                writer.write(encode(rate, bytes(320 if rate is Kind.SLIN_8K else 640)))
                await asyncio.sleep(FRAME)
        elif name == "gone_after_uuid":
            writer.write(encode_uuid(call))
        elif name == "gone_mid_answer":  # the agent greets at once: hang up while it speaks
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0.1, 1.0))
        elif name == "same_uuid_at_once":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0.1, 0.6))
        elif name == "polite":
            writer.write(encode_uuid(call))
            await _frames(writer, rng.uniform(0.2, 0.8))
            writer.write(encode(Kind.HANGUP, b""))
            await _until_closed(reader, 3)
        elif name == "never_sends_uuid":  # the server must close it after uuid_timeout_s
            await _until_closed(reader, idle_s)
        elif name == "slowloris":  # half a UUID frame, a byte at a time, never finished
            frame = encode_uuid(call)
            for b in frame[: rng.randint(1, len(frame) - 1)]:
                writer.write(bytes([b]))
                await asyncio.sleep(0.05)
            await _until_closed(reader, idle_s)
        elif name == "random_bytes":  # never a UUID frame: the first byte is not 0x01
            junk = bytes([rng.choice([k for k in range(256) if k != Kind.UUID])])
            writer.write(junk + os.urandom(rng.randint(0, 300)))
            await _until_closed(reader, 3)
        elif name == "closed_at_once":
            pass
        else:  # pragma: no cover - a name added to ATTACKS without its code
            raise ValueError(name)
        with contextlib.suppress(OSError, RuntimeError):
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # the server closed first: fine, the record is what we check
    finally:
        await _close(writer)
    return sent


async def attack_batch(host: str, port: int, connections: int, *, seed: int = 1,
                       concurrency: int = 50, idle_s: float = 2.0) -> AttackResult:
    """`connections` attacks, `concurrency` at a time, picked by a seeded RNG; the duplicate
    nil-UUID attack is sent in bursts so several are in progress at once."""
    rng = random.Random(seed)
    names = list(ATTACKS)
    plan = [rng.choice(names) for _ in range(connections)]
    result = AttackResult()
    gate = asyncio.Semaphore(concurrency)

    async def run(name: str, sub_seed: int) -> None:
        async with gate:
            result.connections[name] += 1
            try:
                sent = await one_attack(host, port, name, random.Random(sub_seed), idle_s)
            except (OSError, TimeoutError):
                result.failed_to_connect += 1
                return
            if sent is not None:
                result.uuids[sent] += 1
                if sent != NIL:
                    result.attack_of[sent] = name

    await asyncio.gather(*(run(n, rng.getrandbits(32)) for n in plan))
    return result


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def record_problems(sent: Counter[str], stored: Counter[str]) -> list[str]:
    """Every UUID sent whole must have as many records as connections that sent it (one each);
    nothing else may have a record."""
    out = []
    for uuid, n in sent.items():
        if stored.get(uuid, 0) != n:
            out.append(f"{uuid}: {n} connection(s), {stored.get(uuid, 0)} record(s)")
    for uuid in stored.keys() - sent.keys():
        out.append(f"{uuid}: a record but no connection sent it")
    return out
