"""The AMI client against a fake Asterisk speaking the real AMI text protocol."""

from __future__ import annotations

import asyncio

import pytest
from fake_ami import FakeAmi

from flowagent.asterisk.ami import (
    AmiActionError,
    AmiAuthError,
    AmiClient,
    AmiConnectionError,
    AmiTimeout,
    encode_action,
)

CHANNEL = "PJSIP/trunk-00000001"


def client(fake: FakeAmi, secret: str = "s3cret", **kw: object) -> AmiClient:
    opts: dict[str, object] = {"action_timeout": 2.0, "backoff_initial": 0.05,
                               "backoff_max": 0.2}
    opts.update(kw)
    return AmiClient("127.0.0.1", fake.port, "flowagent", secret, **opts)  # type: ignore[arg-type]


async def test_login_and_blind_transfer() -> None:
    async with FakeAmi() as fake, client(fake) as ami:
        assert ami.banner.startswith("Asterisk Call Manager/")
        await ami.setvar(CHANNEL, "FLOWAGENT_REASON", "caller asked for a person")
        await ami.redirect(CHANNEL, "flowagent-transfer", "1001")
        assert fake.variables[(CHANNEL, "FLOWAGENT_REASON")] == "caller asked for a person"
        assert fake.redirects == [(CHANNEL, "flowagent-transfer", "1001", "1")]
        login = fake.actions[0]
        assert login["Action"] == "Login" and login["Username"] == "flowagent"


async def test_wrong_secret_is_reported_at_once_and_not_retried() -> None:
    async with FakeAmi() as fake:
        ami = client(fake, secret="wrong")
        with pytest.raises(AmiAuthError, match="Authentication failed"):
            await ami.connect()
        await asyncio.sleep(0.3)  # several backoff periods: no retry storm
        assert fake.connections == 1
        assert "wrong" not in repr(ami)
        await ami.close()


async def test_refused_connection_is_a_clear_error() -> None:
    async with FakeAmi() as fake:
        port = fake.port
    ami = AmiClient("127.0.0.1", port, "flowagent", "s3cret")
    with pytest.raises(AmiConnectionError, match=f"127.0.0.1:{port}"):
        await ami.connect()


async def test_unknown_channel_is_an_action_error_with_asterisks_words() -> None:
    async with FakeAmi() as fake, client(fake) as ami:
        with pytest.raises(AmiActionError, match="No such channel"):
            await ami.hangup("PJSIP/gone-0000")


async def test_responses_out_of_order_reach_the_right_caller() -> None:
    async with FakeAmi(delays={"Setvar": 0.3}) as fake, client(fake) as ami:
        slow = asyncio.create_task(ami.setvar(CHANNEL, "A", "1"))
        await asyncio.sleep(0.05)
        fast = asyncio.create_task(ami.redirect(CHANNEL, "flowagent-transfer", "1001"))
        await asyncio.wait_for(fast, 2)
        assert not slow.done()  # the later action was answered first
        await asyncio.wait_for(slow, 2)
        assert fake.variables[(CHANNEL, "A")] == "1"


async def test_events_are_delivered_between_responses() -> None:
    async with FakeAmi() as fake, client(fake) as ami:
        seen: list[str] = []

        async def read() -> None:
            async for event in ami.events():
                seen.append(event["Event"])
                if event["Event"] == "Hangup":
                    return

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)
        await ami.ping()  # the fake sends an Event: Newexten before each response
        await fake.push_event("Hangup", Channel=CHANNEL, Cause="16")
        await asyncio.wait_for(reader, 2)
        assert seen[0] == "Newexten" and seen[-1] == "Hangup"


async def test_action_timeout() -> None:
    async with FakeAmi(silent={"Redirect"}) as fake, client(fake) as ami:
        with pytest.raises(AmiTimeout, match="Redirect"):
            await ami.action("Redirect", {"Channel": CHANNEL, "Context": "c", "Exten": "1",
                                          "Priority": 1}, timeout_s=0.2)
        await ami.ping()  # the connection is still usable


async def test_connection_drop_fails_in_flight_actions_then_reconnects() -> None:
    async with FakeAmi(silent={"Setvar"}) as fake, client(fake) as ami:
        in_flight = asyncio.create_task(ami.setvar(CHANNEL, "X", "1"))
        await asyncio.sleep(0.05)
        await fake.drop_all()
        with pytest.raises(AmiConnectionError):
            await asyncio.wait_for(in_flight, 2)
        assert await ami.wait_connected(5)
        assert fake.logins == 2 and ami.connections == 2
        await ami.redirect(CHANNEL, "flowagent-transfer", "1001")
        assert fake.redirects


async def test_reconnect_with_backoff_while_asterisk_is_down() -> None:
    async with FakeAmi() as fake, client(fake) as ami:
        outage = asyncio.create_task(fake.refuse_for(0.4))
        await asyncio.sleep(0.05)
        # an action issued during the outage waits for the reconnection, then goes through
        await ami.action("Ping", {}, timeout_s=5)
        await outage
        assert ami.connections == 2
        assert fake.logins == 2


async def test_line_breaks_in_values_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_action("Setvar", {"Channel": "x", "Value": "a\r\nAction: Hangup"})
    async with FakeAmi() as fake, client(fake) as ami:
        with pytest.raises(ValueError):
            await ami.setvar(CHANNEL, "R", "evil\nAction: Hangup")
        assert all(a["Action"] != "Hangup" for a in fake.actions)


async def test_close_logs_off_and_stops_reconnecting() -> None:
    async with FakeAmi() as fake:
        ami = client(fake)
        await ami.connect()
        await ami.close()
        await asyncio.sleep(0.3)
        assert fake.actions[-1]["Action"] == "Logoff"
        assert fake.connections == 1
        with pytest.raises(AmiConnectionError):
            await ami.ping()
