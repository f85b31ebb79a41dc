"""A flow that goes wrong on a live call (real AudioSocket caller): the caller hears the flow's
`error` handler, the operator gets one WARNING naming the state, the text and the error, and
/metrics counts it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

PROVIDERS = """
providers:
  asr: {name: fake, options: {latency_ms: 0}}
  tts: {name: fake, options: {ms_per_word: 20}}
  vad: {name: fake, options: {threshold: 0.01}}
"""


async def test_a_template_failure_is_heard_logged_and_counted(
        harness: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("flowagent: 1\nname: tpl\nstart: a\n" + PROVIDERS + """
slots:
  n: {type: integer, prompt: "Number?"}
handlers:
  - event: error
    say: Sorry about that.
    do: hangup
states:
  a:
    say: "Twice is {{ slots.n * 2 }} and {{ slots.n.nope() }}."
    end: true
""")
    caplog.set_level(logging.WARNING)
    h = await harness(flow)
    c = h.caller()
    await c.connect()
    await c.closed.wait()
    rec = await h.wait_record(c.uuid)
    assert [e["text"] for e in rec["transcript"] if e["who"] == "agent"] == ["Sorry about that."]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "template problem" in r.getMessage()]
    assert len(warnings) == 1 and c.uuid in warnings[0]
    assert "state `a`, say" in warnings[0] and "slots.n * 2" in warnings[0]
    _, metrics = await h.http("GET", "/metrics")
    assert 'flowagent_errors_total{kind="flow_problem"} 1' in metrics
