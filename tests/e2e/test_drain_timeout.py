"""SIGTERM stops `flowagent serve` within its drain timeout, whatever the calls do: calls still
running then are ended with their records written; a second SIGTERM ends them at once.
(Before: the two listeners drained one after the other, 600 s each, past systemd's
TimeoutStopSec=300 — so systemd's SIGKILL came first.)"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path

from e2e_proc import ROOT, start_serve, subprocess_env

from flowagent.asterisk.caller import AudioSocketCaller

FLOW = ROOT / "tests" / "runtime" / "flows" / "basic.yaml"


def _patient_flow(tmp: Path) -> Path:
    """basic.yaml, but a silent caller is waited for two minutes: the call outlives the drain."""
    text = FLOW.read_text().replace("timeout_s: 1\n", "timeout_s: 120\n", 1)
    assert "timeout_s: 120" in text
    path = tmp / "patient.yaml"
    path.write_text(text)
    return path


async def _calls_in_progress(tmp: Path, n: int, drain_s: float
                             ) -> tuple[object, list[AudioSocketCaller]]:
    served = await start_serve(_patient_flow(tmp), tmp, env=subprocess_env(),
                               args=("--drain-timeout", str(drain_s), "--prompt-cache", "off"))
    host, port = served.audiosocket.split(":")
    callers = [AudioSocketCaller(host, int(port)) for _ in range(n)]
    for c in callers:
        await c.connect()
    for c in callers:
        await c.wait_agent_started(0)
    return served, callers


def _records(tmp: Path) -> dict[str, dict[str, object]]:
    with sqlite3.connect(tmp / "calls.db") as db:
        rows = db.execute("SELECT uuid, status, record FROM calls").fetchall()
    return {u: {"status": st, **json.loads(r)} for u, st, r in rows}


async def test_sigterm_ends_calls_at_the_drain_timeout_with_their_records(tmp_path: Path) -> None:
    served, callers = await _calls_in_progress(tmp_path, 3, 1.5)
    t0 = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    await asyncio.wait_for(served.proc.wait(), 30)  # type: ignore[attr-defined]
    took = time.monotonic() - t0
    for c in callers:
        await c.close()
    assert 1.4 < took < 12, took  # waited for the calls, then ended them
    assert served.proc.returncode == 0, served.log()  # type: ignore[attr-defined]
    records = _records(tmp_path)
    for c in callers:
        rec = records[c.uuid]
        assert rec["status"] == "ended", rec
        assert (rec["outcome"], rec["hangup_by"], rec["end_reason"]) == (
            "server_stopped", "server", "server shutting down"), rec


async def test_a_second_sigterm_ends_the_calls_at_once(tmp_path: Path) -> None:
    served, callers = await _calls_in_progress(tmp_path, 2, 120)
    served.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    await asyncio.wait_for(served.proc.wait(), 30)  # type: ignore[attr-defined]
    took = time.monotonic() - t0
    for c in callers:
        await c.close()
    assert "Second signal" in served.log()  # type: ignore[attr-defined]
    assert took < 6, took  # not the 120 s drain
    records = _records(tmp_path)
    assert all(records[c.uuid]["status"] == "ended" for c in callers)
    assert {records[c.uuid]["outcome"] for c in callers} == {"server_stopped"}
