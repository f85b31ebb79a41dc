"""What an ended call leaves behind is freed on the server's schedule (server/call_garbage.py):
a call is a web of objects pointing at each other, which only the cyclic collector can free, and
the server keeps that collector's automatic runs rare (pauses). Without this, a 30-minute soak
kept thousands of ended calls' objects and RSS rose in steps (267 -> 333 MB)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from flowagent.runner.lifecycle import CallLifecycle
from flowagent.server.runtime import RuntimeConfig


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """As in production after `tune_gc()`, only more so: Python never collects on its own."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _ended_calls_in_memory() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is CallLifecycle)


async def _calls(h: Any, n: int) -> None:
    async def one() -> None:
        c = h.caller()
        await c.connect()
        await c.wait_agent_started(0)
        await c.hangup()
        await h.wait_record(c.uuid)

    await asyncio.gather(*(one() for _ in range(n)))


async def test_ended_calls_are_freed_after_every_n_calls(harness: Any,
                                                         no_automatic_gc: None) -> None:
    h = await harness(config=RuntimeConfig(gc_every_calls=6, gc_min_interval_s=0))
    await _calls(h, 5)
    await asyncio.sleep(0.2)
    assert _ended_calls_in_memory() == 5  # the garbage of 5 ended calls, waiting
    assert h.rt.garbage.stats.collections == 0
    await _calls(h, 1)

    async def collected() -> bool:
        return h.rt.garbage.stats.collections == 1

    for _ in range(50):
        if await collected():
            break
        await asyncio.sleep(0.1)
    assert h.rt.garbage.stats.collections == 1
    assert _ended_calls_in_memory() == 0
    assert h.rt.garbage.stats.freed > 6 * 50  # each call is hundreds of objects
    status, text = await h.http("GET", "/metrics")
    assert status == 200 and "flowagent_gc_collections_total 1" in text


async def test_collections_are_spaced(harness: Any, no_automatic_gc: None) -> None:
    h = await harness(config=RuntimeConfig(gc_every_calls=2, gc_min_interval_s=30))
    await _calls(h, 2)
    await asyncio.sleep(0.5)
    await _calls(h, 2)
    await asyncio.sleep(0.5)
    # the first collection waits out the interval from the runtime's start; none has run yet
    assert h.rt.garbage.stats.collections == 0
    assert _ended_calls_in_memory() == 4
