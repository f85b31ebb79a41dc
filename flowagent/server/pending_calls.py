"""`POST /call` registrations waiting for their AudioSocket connection, in this process.

Why a class of its own: a registration is held until its call connects or `ttl_s` passes, and
an API client (or a dialplan in a loop) can register far faster than calls arrive. Without caps,
500 registrations of 200 KB each held 96 MB for five minutes and 20,000 were accepted (issue 16).
Here every registration's metadata is measured once (its JSON size), and a new one is refused —
never an old one dropped, which would lose a real caller's details — when it alone is larger than
`max_metadata_bytes`, or when the held ones already number `max_count` or weigh `max_bytes`.
Expired ones are swept from the front (the dict keeps arrival order), so a put is O(1) amortised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flowagent.asterisk.routes import RegistrationRefused


@dataclass(slots=True)
class PendingCall:
    metadata: dict[str, Any]
    at: float
    size: int  # bytes of its JSON


class PendingCalls:
    """Bounded, expiring registrations by lower-case UUID."""

    def __init__(self, *, ttl_s: float, max_count: int, max_bytes: int,
                 max_metadata_bytes: int, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_metadata_bytes = max_metadata_bytes
        self._clock = clock
        self._calls: dict[str, PendingCall] = {}
        self.bytes = 0

    def put(self, uuid: str, metadata: dict[str, Any]) -> None:
        """Hold `metadata` for `uuid` (replacing an earlier registration of it); raises
        RegistrationRefused (413 or 503) with one plain sentence when a cap stops it."""
        size = self.check_size(metadata)
        self.sweep()
        old = self._calls.pop(uuid, None)
        if old is not None:
            self.bytes -= old.size
        if len(self._calls) >= self.max_count or self.bytes + size > self.max_bytes:
            if old is not None:  # a refused re-registration leaves the first one in place
                self._calls[uuid] = old
                self.bytes += old.size
            raise RegistrationRefused(
                503, f"{len(self._calls)} calls are registered and not connected yet, the most "
                     "this server holds; try again when some have connected or expired.")
        self._calls[uuid] = PendingCall(metadata, self._clock(), size)
        self.bytes += size

    def check_size(self, metadata: dict[str, Any]) -> int:
        """The JSON size of `metadata`; raises RegistrationRefused (413) past the per-call cap
        (also used before a registration goes to the shared store)."""
        size = metadata_size(metadata)
        if size > self.max_metadata_bytes:
            raise RegistrationRefused(
                413, f"The call's metadata is {size // 1024 + 1} KB; at most "
                     f"{self.max_metadata_bytes // 1024} KB is kept per call.")
        return size

    def take(self, uuid: str) -> dict[str, Any] | None:
        """The metadata registered for `uuid`, removed (only one connection gets it)."""
        p = self._calls.pop(uuid, None)
        if p is None:
            return None
        self.bytes -= p.size
        if self._clock() - p.at > self.ttl_s:
            return None
        return p.metadata

    def sweep(self) -> None:
        """Forget registrations older than `ttl_s` (oldest first; stops at the first live one)."""
        cutoff = self._clock() - self.ttl_s
        while self._calls:
            uuid, first = next(iter(self._calls.items()))
            if first.at >= cutoff:
                return
            del self._calls[uuid]
            self.bytes -= first.size

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._calls

    def __getitem__(self, uuid: str) -> PendingCall:
        return self._calls[uuid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)


def metadata_size(metadata: dict[str, Any]) -> int:
    """Bytes of `metadata` as compact JSON: what it costs to hold and to store."""
    return len(json.dumps(metadata, default=str, separators=(",", ":")).encode())
