"""One flow of a routes file that fails its checks (here: a template that would freeze every
call) is refused with its message at start-up; the other flows serve, and the refused one is
served once its file is fixed (hot reload) — a serve is never held up by one flow."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

FLOWS = Path(__file__).parent / "flows"

COSTLY = (FLOWS / "cough.yaml").read_text().replace(
    "ask: This is a fairly long question",
    'ask: "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}'
    'This is a fairly long question', 1).replace(
    "cough over it.", 'cough over it."', 1)


async def _call_flow(h: Any, did: str) -> str:
    c = h.caller()
    await h.http("POST", "/call", json={"uuid": c.uuid, "metadata": {"did": did}})
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    return str((await h.wait_record(c.uuid))["flow"])


async def test_a_flow_that_fails_is_refused_and_the_others_serve(harness: Any,
                                                                 tmp_path: Path) -> None:
    shutil.copy(FLOWS / "basic.yaml", tmp_path / "basic.yaml")
    (tmp_path / "cough.yaml").write_text(COSTLY)
    (tmp_path / "routes.yaml").write_text(
        'default: basic.yaml\nnumbers:\n  "+441134960000": cough.yaml\n')
    t0 = time.monotonic()
    h = await harness(tmp_path / "routes.yaml")
    assert time.monotonic() - t0 < 10  # before the budget: start-up never finished
    why = h.rt.flows.errors[(tmp_path / "cough.yaml").resolve()]
    assert "would be stopped on every call" in why and "cough.yaml" in why
    # the refused flow's number reaches the default flow meanwhile
    assert await _call_flow(h, "+441134960000") == "Runtime Test"

    # fixed on disk: the reload serves it, on its number
    (tmp_path / "cough.yaml").write_text((FLOWS / "cough.yaml").read_text())
    later = time.time() + 5
    os.utime(tmp_path / "cough.yaml", (later, later))
    messages = h.rt.flows.reload_changed()
    assert any("now serving cough.yaml" in m for m in messages), messages
    assert not h.rt.flows.errors
    assert await _call_flow(h, "+441134960000") == "Cough"
    assert await _call_flow(h, "+442079460000") == "Runtime Test"
