"""Freeing what ended calls leave behind, on a schedule the server chooses.

Why: a call is a web of objects that point at each other — the line, its listener hooks (bound
methods), the speaker and its tasks, a cancelled task's exception and traceback, the engine and
its record. When the call ends the whole web is garbage, but reference counting cannot free a
cycle: only Python's cyclic collector can. `tune_gc()` (runtime.py) makes young collections rare
to keep pauses out of the 20 ms media budget, and a call lives long enough (tens of seconds) to
reach the oldest generation, which Python collects only when it has grown by a quarter. A soak
of 200 calls for 30 minutes showed the result: 9,475 finished tasks, 37,030 transcript entries
of ended calls and 6,676 tracebacks still in memory with no call running, and RSS rising in
steps from 267 MB (5 min) to 333 MB (30 min) — each step a higher pile of garbage before
Python's own full collection came round.

So the server collects after every `every_calls` ended calls (and not more often than
`min_interval_s`): the garbage of at most that many calls is ever waiting, and RSS is flat.
The price is a pause that grows with the calls in progress (measured: 22 ms with 200 calls
and no garbage, 30-60 ms with it, on 2 busy cores), once per `every_calls` ended calls —
instead of Python's own, rarer full collections over a much larger pile (the soak's event
loop was blocked 22-27 ms at times before, too). `FLOWAGENT_GC_EVERY_CALLS` tunes it; 0 leaves
it to Python. The
collection runs from the event loop between two callbacks (never inside a call's own code), its
pause is measured and exported (`flowagent_gc_collections_total`, `flowagent_gc_pause_seconds`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

EVERY_CALLS = 200
MIN_INTERVAL_S = 10.0


@dataclass
class GcStats:
    """What `/metrics` shows of the collections this module ran."""

    collections: int = 0
    freed: int = 0
    pause_total_s: float = 0.0
    pause_max_s: float = 0.0
    pauses: list[float] = field(default_factory=list)  # the last 100, for the p99 in benches


class CallGarbage:
    """Counts ended calls and runs a full collection when enough have ended."""

    def __init__(self, every_calls: int = EVERY_CALLS,
                 min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.every_calls = max(0, every_calls)  # 0: leave it to Python's own schedule
        self.min_interval_s = min_interval_s
        self.stats = GcStats()
        self._ended = 0
        self._last = time.monotonic()
        self._scheduled = False

    def call_ended(self) -> None:
        """A call's record is written and its objects are let go: maybe collect soon."""
        if not self.every_calls:
            return
        self._ended += 1
        if self._ended < self.every_calls or self._scheduled:
            return
        wait = self.min_interval_s - (time.monotonic() - self._last)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._scheduled = True
        # never inside the code of the call that just ended: after the loop's current callbacks
        loop.call_later(max(0.0, wait), self.collect)

    def collect(self) -> None:
        self._scheduled = False
        self._ended = 0
        t0 = time.perf_counter()
        freed = gc.collect()
        pause = time.perf_counter() - t0
        self._last = time.monotonic()
        s = self.stats
        s.collections += 1
        s.freed += freed
        s.pause_total_s += pause
        s.pause_max_s = max(s.pause_max_s, pause)
        s.pauses.append(pause)
        del s.pauses[:-100]
        log.debug("collected the garbage of ended calls: %d objects in %.1f ms", freed,
                  pause * 1000)
