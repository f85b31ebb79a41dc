"""The web UI over real HTTP and WebSocket (aiohttp server on 127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import json
import re
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from flowagent.web import LiveHub, MemoryRecords, create_ui_app

from .conftest import TOKEN

HTML = {"Accept": "text/html"}
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/html"}


async def test_every_page_needs_the_token(ui) -> None:
    client, _ = ui
    for path in ("/", "/flows/removals", "/records", "/records/rec-1", "/records/rec-1/audio"):
        r = await client.get(path, headers=HTML, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login?next="), path
        r = await client.get(path, allow_redirects=False)  # a script, not a browser
        assert r.status == 401, path
    r = await client.get("/?token=wrong", allow_redirects=False)
    assert r.status == 401
    r = await client.post("/flows/removals/tests", allow_redirects=False)
    assert r.status == 401
    # static assets hold no data and stay open (the login page needs its stylesheet)
    r = await client.get("/static/ui.css")
    assert r.status == 200


async def test_token_in_url_becomes_a_cookie_and_leaves_the_url(ui) -> None:
    client, _ = ui
    r = await client.get(f"/records?caller=07700&token={TOKEN}", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/records?caller=07700"
    cookie = r.cookies["flowagent_token"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    r = await client.get("/records?caller=07700", headers=HTML)
    assert r.status == 200 and "Call records" in await r.text()


async def test_login_form(ui) -> None:
    client, _ = ui
    r = await client.get("/login?next=/records")
    page = await r.text()
    assert r.status == 200 and '<label for="token">Access token</label>' in page
    r = await client.post("/login", data={"token": "nope", "next": "/records"})
    assert r.status == 401 and "not right" in await r.text()
    r = await client.post(
        "/login", data={"token": TOKEN, "next": "https://evil.example/"}, allow_redirects=False
    )
    assert r.status == 303 and r.headers["Location"] == "/"  # no open redirect
    r = await client.get("/", headers=HTML)
    assert r.status == 200


async def test_home_lists_flows_with_validation_status(ui) -> None:
    client, hub = ui
    hub.call_started("live-1", flow="Swift Removals", caller="+447700900555")
    hub.state_entered("live-1", "how_can_we_help")
    page = await (await client.get("/", headers=AUTH)).text()
    assert re.search(r'href="/flows/removals">Swift Removals</a>.*badge-(valid|warnings|errors)',
                     page)
    assert re.search(r'href="/flows/broken">.*cannot be loaded', page)
    assert 'href="/calls/live-1"' in page and "how_can_we_help" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


async def test_flow_page_shows_graph_and_findings(ui) -> None:
    client, _ = ui
    page = await (await client.get("/flows/removals", headers=AUTH)).text()
    for state in ("greet", "how_can_we_help", "get_quote", "to_human", "goodbye"):
        assert f'data-state="{state}"' in page
    assert "Run conversation tests" in page
    broken = await (await client.get("/flows/broken", headers=AUTH)).text()
    assert re.search(r"broken\.yaml:\d+:\d+: The file is not valid YAML", broken)
    assert "cannot be drawn" in broken
    r = await client.get("/flows/nothing", headers=AUTH)
    assert r.status == 404
    svg = await client.get("/flows/removals/graph.svg", headers=AUTH)
    assert svg.content_type == "image/svg+xml" and "<svg" in await svg.text()


async def test_run_tests_from_the_page(ui) -> None:
    client, _ = ui
    r = await client.post("/flows/removals/tests",
                          headers={**AUTH, "Accept": "application/json"})
    body = await r.json()
    assert [t["passed"] for t in body["results"]] == [True, False]
    assert "1 passed, 1 failed" in body["html"] and "books &lt;a&gt; move" in body["html"]
    # without JavaScript the form posts and the whole page comes back with the results
    page = await (await client.post("/flows/removals/tests", headers=AUTH)).text()
    assert "expected state booked, got offer" in page and "<h1>Swift Removals" in page
    page = await (await client.post("/flows/broken/tests", headers=AUTH)).text()
    assert "no conversation tests file" in page


async def test_records_search_detail_and_audio(ui) -> None:
    client, _ = ui
    page = await (await client.get("/records", headers=AUTH)).text()
    assert "2 calls found" in page
    page = await (await client.get("/records?caller=07700900123", headers=AUTH)).text()
    assert "1 call found" in page and "rec-1" in page and "rec-2" not in page
    page = await (await client.get("/records?outcome=Transferred", headers=AUTH)).text()
    assert "rec-2" in page and "rec-1" not in page
    page = await (await client.get("/records?date=2026-03-14", headers=AUTH)).text()
    assert "rec-1" in page and "rec-2" not in page
    detail = await (await client.get("/records/rec-1", headers=AUTH)).text()
    assert '<audio controls preload="none" src="/records/rec-1/audio">' in detail
    assert "I&#x27;d like a quote &lt;please&gt;" in detail  # caller text is escaped
    assert "<td>250.0</td>" in detail  # per-turn latency from the record
    audio = await client.get("/records/rec-1/audio", headers=AUTH)
    assert audio.status == 200 and (await audio.read()).startswith(b"RIFF")
    other = await (await client.get("/records/rec-2", headers=AUTH)).text()
    assert "<audio" not in other and "No recording" in other
    assert (await client.get("/records/rec-2/audio", headers=AUTH)).status == 404
    assert (await client.get("/records/../etc/audio", headers=AUTH)).status == 404


async def _next(ws, kind: str) -> dict:
    while True:
        msg = json.loads((await ws.receive(timeout=10)).data)
        if msg["type"] == kind:
            return msg


async def test_websocket_streams_a_call_as_it_happens(ui) -> None:
    client, hub = ui
    async with client.ws_connect("/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        hello = json.loads((await ws.receive(timeout=10)).data)
        assert hello == {"type": "hello", "calls": []}
        hub.call_started("c-1", flow="Swift Removals", caller="+447700900777")
        hub.state_entered("c-1", "greet")
        hub.transcript("c-1", "agent", "Hello, you're through to Swift Removals.")
        hub.transcript("c-1", "caller", "a quote please")
        hub.slot_filled("c-1", "bedrooms", 3)
        hub.turn_latency("c-1", 181.25)
        hub.call_ended("c-1", "completed", record={"uuid": "c-1", "caller": "+447700900777",
                                                   "outcome": "completed", "started_at": 1.0})
        started = await _next(ws, "call_started")
        assert started["call"]["caller"] == "+447700900777"
        assert (await _next(ws, "state"))["state"] == "greet"
        line = await _next(ws, "transcript")
        assert line["line"]["who"] == "agent" and line["line"]["state"] == "greet"
        assert (await _next(ws, "transcript"))["line"]["text"] == "a quote please"
        assert (await _next(ws, "slot"))["value"] == 3
        assert (await _next(ws, "latency"))["entry"]["ms"] == 181.2
        assert (await _next(ws, "call_ended"))["outcome"] == "completed"
    # the finished call went to the records
    page = await (await client.get("/records?outcome=completed", headers=AUTH)).text()
    assert "c-1" in page


async def test_websocket_for_one_call_starts_with_its_snapshot(ui) -> None:
    client, hub = ui
    hub.call_started("c-2", flow="Swift Removals", caller="+447700900888")
    hub.call_started("c-3", flow="Swift Removals", caller="+447700900889")
    hub.state_entered("c-2", "details")
    hub.slot_filled("c-2", "from_postcode", "LS11 5AB")
    page = await (await client.get("/calls/c-2", headers=AUTH)).text()
    assert '<strong id="current-state" aria-live="polite">details</strong>' in page
    assert "<dt>from_postcode</dt><dd>LS11 5AB</dd>" in page
    assert 'data-state="details"' in page
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with client.ws_connect("/ws?call=c-2", headers=bearer) as ws:
        hello = json.loads((await ws.receive(timeout=10)).data)
        assert [c["uuid"] for c in hello["calls"]] == ["c-2"]
        assert hello["calls"][0]["slots"] == {"from_postcode": "LS11 5AB"}
        hub.state_entered("c-3", "greet")  # another call: filtered out
        hub.state_entered("c-2", "get_quote")
        assert (await _next(ws, "state")) | {"at": 0} == {
            "type": "state", "uuid": "c-2", "state": "get_quote", "at": 0}
    assert (await client.get("/calls/none", headers=AUTH)).status == 404
    r = await client.get("/calls/rec-1", headers=AUTH, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/records/rec-1"


async def test_websocket_needs_the_token_and_our_own_origin(ui) -> None:
    client, _ = ui
    r = await client.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert r.status == 401
    r = await client.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                         "Sec-WebSocket-Version": "13",
                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                         "Origin": "https://evil.example",
                                         "Authorization": f"Bearer {TOKEN}"})
    assert r.status == 403


async def test_mounted_under_ui_prefix_of_another_app(tmp_path) -> None:
    """How `serve` uses it: a sub-app at /ui of the control API, links and cookie under /ui."""
    from .conftest import ROOT

    hub = LiveHub()
    api = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    api.router.add_get("/health", health)
    api.add_subapp("/ui", create_ui_app(flows=[ROOT / "flows/removals.yaml"], hub=hub,
                                        records=MemoryRecords(), token=TOKEN, prefix="/ui"))
    client = TestClient(TestServer(api, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        r = await client.get(f"/ui/?token={TOKEN}", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/ui/"
        assert r.cookies["flowagent_token"]["path"] == "/ui"
        page = await (await client.get("/ui/", headers=HTML)).text()
        assert 'href="/ui/flows/removals"' in page and 'src="/ui/static/ui.js"' in page
        assert (await client.get("/health")).status == 200
        js = await client.get("/ui/static/ui.js")
        assert js.status == 200 and "WebSocket" in await js.text()
    finally:
        await client.close()


async def test_a_slow_browser_never_blocks_publishing() -> None:
    hub = LiveHub()
    queue = hub.subscribe()
    started = time.monotonic()
    for i in range(5000):
        hub.transcript("x", "agent", f"line {i}")
    assert time.monotonic() - started < 5  # generous: publishing must not wait on readers
    assert queue.qsize() > 0
    assert hub._subscribers == set()  # the stalled client was dropped, it will reconnect
    await asyncio.sleep(0)


async def test_the_api_token_header_opens_the_pages(ui) -> None:
    """Scripts and proxies that already send the control API's header get the pages too."""
    client, _ = ui
    r = await client.get("/records", headers={"X-Flowagent-Token": TOKEN, **HTML},
                         allow_redirects=False)
    assert r.status == 200 and "Call records" in await r.text()
    r = await client.get("/records", headers={"X-Flowagent-Token": "wrong", **HTML},
                         allow_redirects=False)
    assert r.status == 303  # to the sign-in page


async def test_a_wrong_token_in_the_address_shows_the_sign_in_page(ui) -> None:
    client, _ = ui
    r = await client.get("/records?caller=07700&token=demo", allow_redirects=False)
    page = await r.text()
    assert r.status == 401
    assert "That token is not right" in page and '<label for="token">' in page
    assert 'name="next" value="/records?caller=07700"' in page  # back where they were going


async def test_ended_calls_leave_live_calls_and_stay_apart(ui) -> None:
    client, hub = ui
    hub.call_started("call-aaaaaaaa", flow="Removals")
    hub.call_started("call-bbbbbbbb", flow="Removals")
    hub.call_ended("call-aaaaaaaa", "hangup_by_caller")
    page = await (await client.get("/", headers=AUTH)).text()
    live = page.split('id="live-calls"', 1)[1].split("</ul>", 1)[0]
    recent = page.split('id="recent-calls"', 1)[1].split("</ul>", 1)[0]
    assert "call-bbb" in live and "call-aaa" not in live
    assert "call-aaa" in recent and "ended (hangup_by_caller)" in recent
    rows = re.findall(r"<li data-uuid[^\n]*?</li>", page)
    assert len(rows) == len(set(rows)) == 2  # two unknown callers, two different lines


async def test_booleans_are_written_the_same_everywhere(ui) -> None:
    client, hub = ui
    hub.call_started("call-bool", flow="Removals")
    hub.slot_filled("call-bool", "accept_quote", True)
    live = await (await client.get("/calls/call-bool", headers=AUTH)).text()
    assert "<dt>accept_quote</dt><dd>true</dd>" in live
    hub.call_ended("call-bool", "completed", record={
        "uuid": "call-bool", "flow": "Removals", "caller": "", "outcome": "completed",
        "started_at": time.time(), "transcript": [], "slots": {"accept_quote": True},
        "tool_calls": [], "turns": []})
    record = await (await client.get("/records/call-bool", headers=AUTH)).text()
    assert "<dt>accept_quote</dt><dd>true</dd>" in record and "True" not in record


def test_a_turns_latency_keeps_the_state_it_was_answered_in() -> None:
    """The watcher reports a turn after the call may have moved on: the row keeps the state
    the record gives it, so the call page and the record page agree."""
    hub = LiveHub()
    hub.call_started("c1", flow="Removals")
    hub.state_entered("c1", "details")
    hub.state_entered("c1", "get_quote")  # the call moved on before the row was reported
    hub.turn_latency("c1", 420.0, state="details")
    hub.turn_latency("c1", 380.0)
    rows = hub.get("c1")["latency"]
    assert [(r["turn"], r["state"]) for r in rows] == [(1, "details"), (2, "get_quote")]
