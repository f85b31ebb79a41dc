"""Transfers: target parsing, the AMI path against the fake AMI, the socket-ending path read back
over real HTTP exactly as the dialplan's CURL()/AGI does, and call registration parsing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from fake_ami import FakeAmi

from flowagent.asterisk.ami import AmiClient
from flowagent.asterisk.routes import add_routes, parse_call_registration
from flowagent.asterisk.transfer import (
    Destination,
    Transferer,
    TransferStore,
    parse_target,
)

CHANNEL = "PJSIP/trunk-00000001"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("1001", "flowagent-transfer,1001,1"),
        ("+44 (0)1632 960-000", "flowagent-transfer,+4401632960000,1"),
        ("queue:sales", "flowagent-queue,sales,1"),
        ("sales@support", "support,sales,1"),
    ],
)
def test_targets_become_dialplan_destinations(target: str, expected: str) -> None:
    assert parse_target(target).goto() == expected


@pytest.mark.parametrize(
    "target", ["", "1001,1)\nHangup(", "sales@bad context", "a b c", "queue:h"]
)
def test_unsafe_targets_are_refused_in_plain_english(target: str) -> None:
    with pytest.raises(ValueError, match=r"transfer target|context|queue name"):
        parse_target(target)


async def _serve(store: TransferStore, token: str | None) -> tuple[web.AppRunner, str]:
    app = web.Application()
    add_routes(app, store, token=token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def api() -> AsyncIterator[tuple[Transferer, str]]:
    store = TransferStore()
    runner, url = await _serve(store, "tok")
    yield Transferer(store=store), url
    await runner.cleanup()


async def _dialplan_reads(url: str, call_uuid: str, token: str = "tok") -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{url}/calls/{call_uuid}/transfer", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, await response.text()


async def test_socket_path_records_destination_for_the_dialplan(
    api: tuple[Transferer, str],
) -> None:
    transferer, url = api
    call_uuid = str(uuid.uuid4())
    result = await transferer.transfer(call_uuid, "", "queue:sales", "wants a quote")
    assert result.method == "socket"  # no AMI: the session must end the socket
    assert await _dialplan_reads(url, call_uuid) == (200, "flowagent-queue,sales,1")


async def test_no_transfer_reads_back_empty_so_the_dialplan_hangs_up(
    api: tuple[Transferer, str],
) -> None:
    _, url = api
    assert await _dialplan_reads(url, str(uuid.uuid4())) == (200, "")


async def test_transfer_route_needs_the_token(api: tuple[Transferer, str]) -> None:
    transferer, url = api
    call_uuid = str(uuid.uuid4())
    await transferer.transfer(call_uuid, "", "1001")
    status, body = await _dialplan_reads(url, call_uuid, token="wrong")
    assert status == 401 and body == ""


async def test_ami_path_sets_reason_and_redirects_the_callers_channel() -> None:
    async with FakeAmi() as fake:
        ami = AmiClient("127.0.0.1", fake.port, "flowagent", "s3cret", action_timeout=2)
        await ami.connect()
        transferer = Transferer(ami=ami)
        call_uuid = str(uuid.uuid4())
        result = await transferer.transfer(call_uuid, CHANNEL, "1001", "caller asked\nfor Bob")
        assert result.method == "ami"
        assert fake.variables[(CHANNEL, "FLOWAGENT_REASON")] == "caller asked for Bob"
        assert fake.redirects == [(CHANNEL, "flowagent-transfer", "1001", "1")]
        # recorded anyway, in case the dialplan does get to read it
        pending = transferer.store.get(call_uuid)
        assert pending is not None
        assert pending.destination == Destination("flowagent-transfer", "1001")
        await ami.close()


async def test_ami_failure_falls_back_to_ending_the_socket() -> None:
    async with FakeAmi(channels=set()) as fake:  # Asterisk no longer knows the channel
        ami = AmiClient("127.0.0.1", fake.port, "flowagent", "s3cret", action_timeout=2)
        await ami.connect()
        transferer = Transferer(ami=ami)
        result = await transferer.transfer(str(uuid.uuid4()), CHANNEL, "1001")
        assert result.method == "socket"
        assert "No such channel" in result.detail
        await ami.close()


async def test_hangup_through_ami_and_without() -> None:
    async with FakeAmi() as fake:
        ami = AmiClient("127.0.0.1", fake.port, "flowagent", "s3cret", action_timeout=2)
        await ami.connect()
        assert (await Transferer(ami=ami).hangup("u", CHANNEL)).method == "ami"
        assert fake.hangups == [CHANNEL]
        await ami.close()
    assert (await Transferer().hangup("u", CHANNEL)).method == "socket"


def test_store_is_bounded() -> None:
    store = TransferStore(max_entries=3)
    for i in range(5):
        store.put(f"u{i}", Destination("c", str(i)))
    assert len(store) == 3
    assert store.get("u0") is None and store.get("u4") is not None


def test_registration_from_curl_dialplan_form_body() -> None:
    call_uuid = str(uuid.uuid4())
    body = (f"uuid={call_uuid}&caller=%2B447700900123&caller_name=Jo%20Bloggs%2C%20Ltd"
            "&did=01632960000&channel=PJSIP%2Ftrunk-00000001&uniqueid=1700000000.42"
            "&flow=removals").encode()
    reg = parse_call_registration("application/x-www-form-urlencoded", body)
    assert (reg.uuid, reg.caller, reg.did, reg.channel, reg.flow) == (
        call_uuid, "+447700900123", "01632960000", "PJSIP/trunk-00000001", "removals")
    assert reg.metadata["caller_name"] == "Jo Bloggs, Ltd"


def test_registration_from_avr_json_body() -> None:
    call_uuid = str(uuid.uuid4())
    body = json.dumps({"uuid": call_uuid, "payload": {"caller": "123", "did": "456",
                                                       "channel": "SIP/x"}}).encode()
    reg = parse_call_registration("application/json", body)
    assert (reg.uuid, reg.caller, reg.did, reg.channel) == (call_uuid, "123", "456", "SIP/x")


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"uuid": "nope"}'])
def test_bad_registration_bodies_are_plain_errors(body: bytes) -> None:
    with pytest.raises(ValueError, match="registration"):
        parse_call_registration("application/json", body)


async def test_many_concurrent_transfers_share_one_ami_connection() -> None:
    async with FakeAmi() as fake:
        fake.channels.update(f"PJSIP/t-{i}" for i in range(50))
        ami = AmiClient("127.0.0.1", fake.port, "flowagent", "s3cret", action_timeout=5)
        await ami.connect()
        transferer = Transferer(ami=ami)
        results = await asyncio.gather(*(
            transferer.transfer(str(uuid.uuid4()), f"PJSIP/t-{i}", str(2000 + i))
            for i in range(50)))
        assert {r.method for r in results} == {"ami"}
        assert sorted(r[2] for r in fake.redirects) == [str(2000 + i) for i in range(50)]
        assert fake.connections == 1
        await ami.close()
