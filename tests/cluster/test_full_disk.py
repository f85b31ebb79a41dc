"""A full disk under the SQLite store: calls go on, their records are queued (a metric says how
many), written when space returns; at exit with the disk still full, the message says where
the unwritten records went, and the next start writes them.

The disk is a real 4 MB tmpfs filled with a real file (mounting one needs root, as CI has;
elsewhere the test skips with the reason)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flowagent.server.stores import open_store

from .conftest import Node, play_call

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({out.stderr.strip()}): needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("ab") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def queued(metrics: str) -> int:
    m = re.search(r'^flowagent_store_queue\{node="solo"\} (\d+)', metrics, re.M)
    assert m, metrics[:500]
    return int(m.group(1))


async def test_a_full_disk_queues_records_and_the_exit_tells_the_truth(
        tmp_path: Path, small_disk: Path, solo: Any) -> None:
    db = small_disk / "calls.db"
    node = solo("--db", str(db))
    await node.start()
    filler = fill(small_disk)
    played = await asyncio.gather(*(play_call(node.as_port) for _ in range(3)))
    assert all(p.completed for p in played)  # the calls did not notice
    text = ""
    for _ in range(50):
        text = await _metrics(node)
        if queued(text) == 3:
            break
        await asyncio.sleep(0.1)
    assert queued(text) == 3
    assert re.search(r'flowagent_store_write_failures_total\{node="solo"\} [1-9]', text)
    filler.unlink()  # space returns: the queued records are written
    store = await open_store(db)
    try:
        deadline = time.monotonic() + 30
        while len([r for r in await store.list(20) if r["status"] == "ended"]) < 3:
            assert time.monotonic() < deadline, "queued records not written once space returned"
            await asyncio.sleep(0.2)
        assert queued(await _metrics(node)) == 0
        for p in played:
            assert (await store.get(p.uuid))["outcome"] == "completed"  # type: ignore[index]
    finally:
        await store.close()

    fill(small_disk)  # full again, then two calls and a shutdown
    more = await asyncio.gather(*(play_call(node.as_port) for _ in range(2)))
    assert all(p.completed for p in more)
    code = await node.stop()
    log = node.log()
    assert code == 1, log[-2000:]
    spill = tmp_path / "unwritten-records-solo.jsonl"  # the disk under the store is full
    assert (f"Stopped; 2 call record(s) could not be written to the store (database or disk is"
            f" full). They are kept in {spill}") in " ".join(log.split())
    assert "all call records written" not in log.split("Draining:")[-1]
    (small_disk / "filler").unlink()
    await node.start()
    assert "2 call record(s) the last run could not write are queued again" in node.log()
    store = await open_store(db)
    try:
        deadline = time.monotonic() + 20
        while True:
            got = [await store.get(p.uuid) for p in more]
            if all(r is not None and r["outcome"] == "completed" for r in got):
                break
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.2)
        assert not spill.exists()
    finally:
        await store.close()
    assert await node.stop() == 0


async def _metrics(node: Node) -> str:
    import aiohttp

    from .conftest import TOKEN

    async with aiohttp.ClientSession() as s, s.get(
            f"{node.http}/metrics", headers={"X-Flowagent-Token": TOKEN}) as r:
        return await r.text()
