"""The live hub fed by the real dialogue engine (text driver), as the page will show it."""

from __future__ import annotations

from flowagent.web import LiveHub, MemoryRecords

from .engine_call import TextCall


async def test_engine_actions_become_what_the_page_shows() -> None:
    records = MemoryRecords()
    hub = LiveHub(records)
    feed = hub.subscribe()
    call = TextCall(hub, "hub-1", "+447700900123")
    await call.start()
    await call.say("I'd like a quote for a move")
    await call.say("LS11 5AB")
    snapshot = hub.get("hub-1")
    assert snapshot is not None
    assert snapshot["states"][:3] == ["greet", "how_can_we_help", "details"]
    assert snapshot["state"] == "details"
    whos = [line["who"] for line in snapshot["transcript"]]
    assert whos[:2] == ["agent", "agent"] and "caller" in whos
    assert "Swift Removals" in snapshot["transcript"][0]["text"]
    assert snapshot["slots"]["from_postcode"] == "LS11 5AB"
    assert [e["turn"] for e in snapshot["latency"]] == [1, 2]
    await call.hangup()
    assert hub.get("hub-1")["ended"]
    kinds = []
    while not feed.empty():
        kinds.append(feed.get_nowait()["type"])
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended"
    assert {"state", "transcript", "slot", "latency"} <= set(kinds)
