"""What a real Asterisk and its trunks do, emulated over real TCP and HTTP: DIDs with and
without the +, the form post the CURL() dialplan sends (and what it can read of the answer),
the transfer reason on the socket path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowagent.phone_numbers import to_e164

FLOWS = Path(__file__).parent / "flows"
TOKEN = "test-token"  # tests/runtime/conftest.py

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize("did", ["+441134960000", "441134960000", "01134960000",
                                 "0113 496 0000"])
async def test_a_number_matches_however_the_trunk_writes_it(harness: Any, tmp_path: Path,
                                                            did: str) -> None:
    """The routes file says +441134960000; a trunk may send 44... or 0... instead."""
    h = await harness(FLOWS / "routes.yaml")
    c = h.caller()
    await h.http("POST", "/call", json={"uuid": c.uuid,
                                        "metadata": {"did": did, "caller": "07700 900123"}})
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert rec["flow"] == "Cough"
    # stored as one number, whatever form it came in
    assert rec["did"] == "+441134960000" and rec["caller"] == "+447700900123"


def test_by_number_context_matches_every_form(tmp_path: Path) -> None:
    from flowagent.flow.compiler import load_flow

    flow = tmp_path / "flow.yaml"
    flow.write_text((FLOWS / "basic.yaml").read_text().replace(
        "context:\n  data:\n", "context:\n  by_number:\n    '01134960000': {company: Leeds Moves}\n"
        "  data:\n"))
    compiled = load_flow(flow)
    for did in ("+441134960000", "441134960000", "01134960000"):
        assert compiled.context_for(did)["company"] == "Leeds Moves", did
    assert compiled.context_for("+442079460000")["company"] == "Test Removals"
    assert to_e164("6001") == "6001"  # an extension is not a telephone number


async def test_the_dialplan_can_tell_a_registration_from_a_refusal(harness: Any) -> None:
    """CURL() gives the dialplan the body only: a 401's JSON error is not empty, so the
    dialplan asks for a plain answer and compares it with the one word "registered"."""
    h = await harness()
    call = "0f8b7a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b"
    body = f"uuid={call}&caller=%2B447700900123&did=%2B441134960000&reply=text"
    status, text = await h.http("POST", "/asterisk/call", data=body,
                                headers={"Authorization": f"Bearer {TOKEN}",
                                         "Content-Type": FORM})
    assert (status, text) == (200, "registered")
    assert "reply" not in h.rt.pending[call].metadata  # not call metadata
    status, text = await h.http("POST", "/asterisk/call", data=body,
                                headers={"Authorization": "Bearer wrong", "Content-Type": FORM})
    assert status == 401 and text != "registered" and text  # not empty: LEN() would pass it


async def test_the_socket_transfer_path_tells_the_dialplan_why(harness: Any) -> None:
    """Without AMI the dialplan reads the destination and, for FLOWAGENT_REASON, the reason."""
    h = await harness()
    c = h.caller()
    await c.connect()
    await c.wait_agent_quiet(0.3, timeout_s=10)
    c.send_dtmf("0")  # the flow's "0 -> a person" handler: a transfer
    await c.closed.wait()
    await h.wait_record(c.uuid)
    status, dest = await h.http("GET", f"/calls/{c.uuid}/transfer")
    assert status == 200 and dest.startswith("flowagent-transfer,6001,")
    status, reason = await h.http("GET", f"/calls/{c.uuid}/transfer/reason")
    assert status == 200 and reason == "transferred to 6001" and "," not in reason
    status, none = await h.http("GET", "/calls/11111111-2222-4333-8444-555555555555"
                                       "/transfer/reason")
    assert (status, none) == (200, "")


@pytest.mark.parametrize("wait_s", [0.0, 0.05, 0.6])
async def test_a_caller_gone_right_after_the_uuid_is_a_caller_hang_up(
        harness: Any, caplog: pytest.LogCaptureFixture, wait_s: float) -> None:
    """Asterisk connects, sends the UUID, and the caller has already hung up: the record says
    so (not "internal error"), and nothing is logged at ERROR."""
    import asyncio

    from flowagent.asterisk.audiosocket import encode_uuid

    h = await harness()
    call = "6a1f8a3e-9c2d-4e5f-8a9b-0c1d2e3f4a5b"
    _reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(encode_uuid(call))
    await writer.drain()
    await asyncio.sleep(wait_s)
    writer.close()
    rec = await h.wait_record(call)
    assert rec["hangup_by"] == "caller" and rec["outcome"] == "hangup_by_caller", rec
    assert rec["end_reason"] == "caller hung up"
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_a_slow_webhook_receiver_does_not_delay_the_greeting(harness: Any) -> None:
    """The receiver takes 2 s to answer call_initiated: the greeting still starts right after
    the caller's first audio frame (0.5 s after the UUID, as real Asterisk sends it)."""
    import asyncio
    import time

    from aiohttp import web
    from loopback import serve_app

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body["type"] == "call_initiated":
            await asyncio.sleep(2.0)
            return web.json_response({"flow": "Cough"})
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_app(app) as url:
        h = await harness(FLOWS / "routes.yaml", webhook_url=f"{url}/hook")
        c = h.caller(first_audio_after_s=0.5)
        t0 = time.monotonic()
        await c.connect()
        started = await c.wait_agent_started(0, timeout_s=5)
        await c.hangup()
        rec = await h.wait_record(c.uuid)
    assert started - t0 < 0.5 + 0.1 + 0.25, started - t0
    assert rec["flow"] == "Runtime Test"  # the late answer was not waited for
