"""A bounded hostile-caller run against the real server (the long run is bench/bench_fuzz.py):
malformed frames, garbage in the UUID's own write, callers gone at every moment, the same UUID
at once, idle and slowloris connections, random bytes. What must hold afterwards:

* every connection that sent a whole UUID has exactly one record (a repeated UUID: one per
  connection), and nothing else has one;
* no ERROR-level log line — garbage and hang-ups are the caller's doing, not our failures;
* the server's open files are back to what they were, and its memory near it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from typing import Any

import pytest
from hostile_callers import attack_batch, open_fds, record_problems, rss_mb

from flowagent.server.runtime import RuntimeConfig

pytestmark = pytest.mark.timeout(120)


async def _settled(h: Any, fds_before: int, timeout_s: float = 10) -> int:
    """Open files once every call has ended and its record is written."""
    for _ in range(int(timeout_s / 0.1)):
        if not h.rt.claimed and not h.rt.sessions and h.rt.metrics.store_queue == 0:
            break
        await asyncio.sleep(0.1)
    await h.rt.records.flush(5.0)
    fds = open_fds()
    for _ in range(int(timeout_s / 0.1)):
        if fds <= fds_before:
            break
        await asyncio.sleep(0.1)
        fds = open_fds()
    return fds


async def test_hostile_callers_each_end_only_their_own_call(
        harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flowagent")
    h = await harness(config=RuntimeConfig(uuid_timeout_s=0.5))
    # warm: the first calls load what every later call shares (caches, pools)
    warm = await attack_batch("127.0.0.1", h.port, 20, seed=7, concurrency=20, idle_s=1.5)
    await _settled(h, open_fds())
    gc.collect()
    fds_before, rss_before = open_fds(), rss_mb()

    result = await attack_batch("127.0.0.1", h.port, 400, seed=2026, concurrency=60,
                                idle_s=1.5)
    fds_after = await _settled(h, fds_before)

    assert result.failed_to_connect == 0
    assert set(result.connections) >= {"uuid_and_garbage_in_one_write", "same_uuid_at_once",
                                       "slowloris", "never_sends_uuid", "gone_after_uuid"}
    rows = await h.store.list(5000)
    stored = Counter(r["uuid"] for r in rows)
    problems = record_problems(warm.uuids + result.uuids, stored)
    assert not problems, problems[:10]
    assert sum(result.uuids.values()) > 250  # most attacks send a UUID; the check covered them
    assert all(r["status"] == "ended" for r in rows)
    # each ended as what it was: garbage as a protocol error, a caller gone as a caller hang-up
    outcomes: dict[str, Counter[str]] = {}
    for r in rows:
        attack = result.attack_of.get(r["uuid"])
        if attack is not None:
            full = await h.store.get(r["uuid"])
            assert full is not None
            why = "protocol" if "protocol error" in (full.get("end_reason") or "") else ""
            outcomes.setdefault(attack, Counter())[f"{full['outcome']} {why}".strip()] += 1
    for attack in ("uuid_and_garbage_in_one_write", "unknown_kind",
                   "bad_keypad_frame_before_audio", "second_uuid"):
        assert set(outcomes[attack]) == {"error protocol"}, (attack, outcomes[attack])
    # (an empty audio frame from Asterisk is ignored: the call goes on until the caller leaves)
    for attack in ("gone_after_uuid", "gone_mid_answer", "polite", "zero_length_audio"):
        assert set(outcomes[attack]) == {"hangup_by_caller"}, (attack, outcomes[attack])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
    assert fds_after <= fds_before, (fds_before, fds_after)
    gc.collect()
    assert rss_mb() - rss_before < 25, (rss_before, rss_mb())
