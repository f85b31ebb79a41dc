"""A transfer during a live AudioSocket test call, on the real runtime (server + control API).

The call is registered with `POST /call` (channel name included, as the dialplan sends it), a
caller connects over AudioSocket, the flow says its line and transfers. Then:
- socket path: flowagent ends the socket and the dialplan's read-back (`GET /calls/{uuid}/
  transfer`, exactly what CURL()/flowagent-agi request) answers the Goto destination;
- AMI path: the transfer is carried out with the channel from the live call's own metadata
  against the fake AMI (what the session's transfer hook does when AMI is configured).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
from fake_ami import FakeAmi
from live_runtime import Live

from flowagent.asterisk.ami import AmiClient
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.asterisk.transfer import Transferer

CHANNEL = "PJSIP/trunk-00000042"


async def _call(live: Live, call_uuid: str, *, form: bool = False) -> AudioSocketCaller:
    if form:  # exactly what the CURL() dialplan sends (URIENCODE'd values, form-encoded)
        body = (f"uuid={call_uuid}&caller=%2B447700900123&caller_name=Jo%20Bloggs"
                f"&did=01632960000&channel=PJSIP%2Ftrunk-00000042&uniqueid=1700000000.42"
                "&flow=transfer")
        status, text = await live.http(
            "POST", "/asterisk/call", data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, text
        assert json.loads(text)["flow"] == "Transfer Test"
    else:  # the AVR-compatible JSON registration (flowagent-agi sends this)
        status, text = await live.http("POST", "/call", json={
            "uuid": call_uuid, "payload": {"caller": "+447700900123", "did": "01632960000",
                                           "channel": CHANNEL}})
        assert status == 200, text
    caller = AudioSocketCaller("127.0.0.1", live.server.address[1], call_uuid=call_uuid)
    await caller.connect()
    return caller


async def test_agent_ends_the_socket_and_the_dialplan_reads_the_destination(live: Live) -> None:
    call_uuid = str(uuid.uuid4())
    caller = await _call(live, call_uuid)
    try:
        await asyncio.wait_for(caller.closed.wait(), 20)
        assert caller.stats.hangup_frame  # flowagent ended the AudioSocket (0x00)
        assert caller.agent_speech_frames > 0  # the reason was spoken first
        # what Step 9 of the dialplan (or `flowagent-agi after`) asks, right after the socket ends
        for _ in range(50):
            status, body = await live.http("GET", f"/calls/{call_uuid}/transfer")
            if body:
                break
            await asyncio.sleep(0.05)
        assert (status, body) == (200, "flowagent-transfer,6001,1")
        # without the token the dialplan learns nothing
        async with aiohttp.ClientSession() as s, s.get(
                f"{live.base}/calls/{call_uuid}/transfer") as r:
            assert r.status == 401
    finally:
        await caller.close()


async def test_ami_redirects_the_live_calls_channel(live: Live) -> None:
    call_uuid = str(uuid.uuid4())
    async with FakeAmi(channels={CHANNEL}) as fake:
        ami = AmiClient("127.0.0.1", fake.port, "flowagent", "s3cret", action_timeout=2)
        await ami.connect()
        transferer = Transferer(ami=ami)
        caller = await _call(live, call_uuid, form=True)
        try:
            session = None
            for _ in range(400):
                session = live.rt.sessions.get(call_uuid)
                if session is not None and session.transfer_target:
                    break
                await asyncio.sleep(0.025)
            assert session is not None and session.transfer_target == "6001"
            assert session.info is not None and session.info.channel == CHANNEL
            assert session.info.caller == "+447700900123"
            result = await transferer.transfer(call_uuid, session.info.channel,
                                               session.transfer_target, "caller asked")
            assert result.method == "ami"
            assert fake.redirects == [(CHANNEL, "flowagent-transfer", "6001", "1")]
            assert fake.variables[(CHANNEL, "FLOWAGENT_REASON")] == "caller asked"
        finally:
            await caller.close()
            await ami.close()


async def test_bad_registration_is_a_400_with_a_reason(live: Live) -> None:
    status, text = await live.http(
        "POST", "/asterisk/call", data="uuid=not-a-uuid&caller=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "no valid `uuid`" in json.loads(text)["error"]
    assert not live.rt.pending
