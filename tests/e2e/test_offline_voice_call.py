"""A whole removals booking by voice, on the embedded offline stack: `flowagent demo`.

`flowagent demo --json` runs as a real subprocess, exactly as the README's one line does: it
starts the removals company's fake API on loopback, runs `flowagent serve` (the packaged copy
of flows/removals.yaml) as its own subprocess with Whisper tiny.en, Piper and Silero (no
provider keys, no network: HF_HUB_OFFLINE=1 and a loopback-only socket guard loaded into every
subprocess), and plays the scripted caller: each line is synthesised by Piper, sent as 8 kHz
AudioSocket frames in real time, heard by the server's VAD, transcribed by Whisper, understood
by the slot parsers. Everything asserted comes from speech alone: the slots in the call record,
and the booking the API received.

Caller wording is chosen for what tiny.en transcribes reliably on a phone line (e.g. postcodes
spelt with digits Whisper does not turn into words: "two" becomes "to").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from pathlib import Path

import pytest
from e2e_proc import run_cli, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


async def test_removals_booking_by_voice_with_flowagent_demo(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    t0 = time.monotonic()
    code, out, err = await run_cli("demo", "--json", "--no-stay", "--workdir", str(work),
                                   env=subprocess_env(), cwd=tmp_path, timeout_s=400)
    call_s = time.monotonic() - t0
    log = (work / "serve.log").read_text("utf-8", errors="replace")
    assert code == 0, f"flowagent demo failed ({code}):\n{err[-3000:]}\n{log[-3000:]}"
    summary = json.loads(out.strip().splitlines()[-1])
    record, api = summary["record"], summary["api"]
    _keep_artifacts(log, summary, record, call_s)
    heard = [t["text"] for t in record["transcript"] if t.get("who") == "caller"]
    lines = [f"{t.get('who')}: {t['text']}" for t in record["transcript"]]
    context = (f"caller turns heard: {heard}\nslots: {record['slots']}\ncall took {call_s:.0f} s"
               f"\nend: {record.get('end_reason')} errors: {record.get('errors')}\n"
               + "\n".join(lines))

    # the caller heard the whole booking through to the goodbye, and the agent hung up
    assert summary["hangup_by"] == "agent", context
    assert record["outcome"] == "completed", context
    agent_lines = " ".join(t["text"] for t in record["transcript"] if t.get("who") == "agent")
    assert "You're booked for" in agent_lines and "Goodbye" in agent_lines, context

    # what the engine collected, from speech alone
    slots = record["slots"]
    assert slots["from_postcode"] == "LS6 1HT", context
    assert slots["to_postcode"] == "M1 3BJ", context
    assert int(slots["bedrooms"]) == 3, context
    move = dt.date.fromisoformat(str(slots["move_date"]))
    today = dt.date.today()
    assert move.weekday() == 4 and 1 <= (move - today).days <= 14, context  # "next Friday"
    assert slots["name"] == "Jane Smith", context
    assert re.sub(r"\D", "", str(slots["phone"])).endswith("1134960123"), context
    assert slots["accept_quote"] is True, context

    # the removals API got the quote request and the booking, with those values
    assert len(api["quotes"]) == 1 and len(api["bookings"]) == 1, api
    booking = api["bookings"][0]
    assert booking["from_postcode"] == "LS6 1HT" and booking["to_postcode"] == "M1 3BJ"
    assert booking["name"] == "Jane Smith"
    assert booking["date"] == move.isoformat()
    assert str(booking["bedrooms"]) == "3"
    assert booking["quote_id"] == "Q0001"
    assert re.sub(r"\D", "", booking["phone"]).endswith("1134960123")
    assert "SR1001" in agent_lines  # the reference the API gave is read back to the caller

    # offline: nothing beyond loopback was tried, no model download, a clean drained stop
    assert "NETWORK-BLOCKED" not in log and "NETWORK-BLOCKED" not in err, log[-3000:]
    assert not re.search(r"huggingface|Downloading|hf_hub", log, re.I), log[-3000:]
    assert "offline speech stack loaded" in log
    assert "Stopped; all call records written." in log  # a clean, drained stop
    # what the demo prints for the web view: the call's page, with the agent's token
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ui/calls/[0-9a-f-]{36}\?token=\S+",
                        summary["web"]), summary["web"]


def _keep_artifacts(log: str, summary: dict, record: dict, call_s: float) -> None:
    """With FLOWAGENT_ARTIFACTS set (CI), keep the server log, the caller's summary and the
    call record; always print the timings (shown with `pytest -s`)."""
    print(f"demo took {call_s:.1f} s; "
          f"per-turn latency (ms): {[t['latency_ms'] for t in summary['turns']]}")
    where = os.environ.get("FLOWAGENT_ARTIFACTS")
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e-serve.log").write_text(log, "utf-8")
    (out / "e2e-call.json").write_text(json.dumps(summary, indent=2), "utf-8")
    (out / "e2e-record.json").write_text(json.dumps(record, indent=2, default=str), "utf-8")
