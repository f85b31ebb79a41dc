"""Issue 7's end-to-end test: a whole removals booking by voice, on the embedded offline stack.

`flowagent serve flows/removals.yaml` runs as a real subprocess with Whisper tiny.en, Piper and
Silero (no provider keys, no network: HF_HUB_OFFLINE=1 and a loopback-only socket guard loaded
into the subprocess). `flowagent call` — another subprocess — is the caller: each `--say` line
is synthesised by Piper, sent as 8 kHz AudioSocket frames in real time, heard by the server's
VAD, transcribed by Whisper, understood by the slot parsers. The removals company's API is a
fake on loopback that records what the agent sent. Everything asserted comes from speech alone:
the slots in the call record, and the booking the API received.

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
from e2e_proc import ROOT, run_cli, start_serve, subprocess_env
from fake_removals_api import FakeRemovalsApi

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CALLER = [
    "I'd like a quote please.",
    "L S six, one H T.",
    "M one, three B J.",
    "Next Friday.",
    "Three bedrooms.",
    "Yes.",
    "Yes please.",
    "Jane Smith.",
    "Oh one one three, four nine six, oh one two three.",
]


async def test_removals_booking_by_voice_on_the_offline_stack(tmp_path: Path) -> None:
    api = FakeRemovalsApi()
    api_port = await api.start()
    env = subprocess_env(REMOVALS_API_URL=f"http://127.0.0.1:{api_port}")
    t0 = time.monotonic()
    served = await start_serve(ROOT / "flows" / "removals.yaml", tmp_path, env=env)
    try:
        says = [a for line in CALLER for a in ("--say", line)]
        code, out, err = await run_cli(
            "call", "--to", served.audiosocket, "--http", served.http, "--json", *says,
            env=env, cwd=tmp_path,
        )
        call_s = time.monotonic() - t0 - served.started_s
        assert code == 0, f"flowagent call failed ({code}):\n{err[-3000:]}\n{served.log()[-3000:]}"
        summary = json.loads(out.strip().splitlines()[-1])
        record = await served.get_json(f"/calls/{summary['uuid']}")
    finally:
        rc = await served.stop()
        await api.stop()
    log = served.log()
    _keep_artifacts(log, summary, record, call_s, served.started_s)
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
    assert len(api.quotes) == 1 and len(api.bookings) == 1, (api.quotes, api.bookings)
    booking = api.bookings[0]
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
    assert rc == 0, log[-3000:]


def _keep_artifacts(log: str, summary: dict, record: dict, call_s: float,
                    start_s: float) -> None:
    """With FLOWAGENT_ARTIFACTS set (CI), keep the server log, the caller's summary and the
    call record; always print the timings (shown with `pytest -s`)."""
    print(f"serve ready in {start_s:.1f} s; call took {call_s:.1f} s; "
          f"per-turn latency (ms): {[t['latency_ms'] for t in summary['turns']]}")
    where = os.environ.get("FLOWAGENT_ARTIFACTS")
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e-serve.log").write_text(log, "utf-8")
    (out / "e2e-call.json").write_text(json.dumps(summary, indent=2), "utf-8")
    (out / "e2e-record.json").write_text(json.dumps(record, indent=2, default=str), "utf-8")
