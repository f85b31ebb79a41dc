"""Speech-to-speech calls: per-call `sts_url`, per-turn latency, and barge-in truncation.

Whole calls over real TCP AudioSocket against the real server, with the OpenAI Realtime and AVR
fakes speaking their wire protocols on loopback (see `fakes/fake_openai_realtime.py`), a real
control API, a real SQLite store and a loopback `call_initiated` webhook receiver. Nothing on
our side is mocked; waits have timeouts but nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from loopback import serve_app

from flowagent import audio
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.providers.base import StsEvent
from flowagent.providers.openai_realtime import OpenAIRealtimeSts
from flowagent.providers.sts_url import check_sts_url
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.runtime import Runtime, RuntimeConfig
from flowagent.server.store_sqlite import SqliteStore
from flowagent.server.webhooks import WebhookConfig, Webhooks
from flowagent.web.hub import LiveHub
from flowagent.web.watch import RuntimeWatcher
from providers.fakes import FakeAvr, FakeOpenAIRealtime
from providers.records import wait_record
from providers.serving import serve_flow, speech_runs

pytestmark = pytest.mark.timeout(60)

FLOW = Path(__file__).resolve().parent / "flows" / "removals_sts.yaml"
SPEECH = audio.tone(400, 300, 8000, amplitude=0.4)  # "the caller talks"
GREETING = "Hello, you're through to Swift Removals. How can I help?"
TOKEN = "sts-gaps-token"
DEAD_URL = "ws://127.0.0.1:9/v1/realtime"  # the discard port: nothing listens there


class Served:
    def __init__(self, rt: Runtime, server: AudioSocketServer, store: SqliteStore,
                 http_port: int) -> None:
        self.rt, self.server, self.store, self.http_port = rt, server, store, http_port

    def caller(self) -> AudioSocketCaller:
        return AudioSocketCaller("127.0.0.1", self.server.address[1])

    async def get_call(self, uuid: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{self.http_port}/calls/{uuid}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as r:
            assert r.status == 200, await r.text()
            return await r.json()


@contextlib.asynccontextmanager
async def serve(sts: dict[str, Any], tmp: Path, monkeypatch: pytest.MonkeyPatch,
                webhook_url: str = "") -> AsyncIterator[Served]:
    monkeypatch.setenv("FLOWAGENT_API_TOKEN", TOKEN)
    hooks = Webhooks(WebhookConfig(url=webhook_url, timeout_s=2, retries=0))
    async with serve_flow(FLOW, {"sts": sts}, tmp, webhooks=hooks, api=True,
                          config=RuntimeConfig(call_initiated_timeout_s=3.0)) as served:
        yield Served(served.rt, served.server, served.store, served.http_port or 0)


@contextlib.asynccontextmanager
async def call_initiated_answers(answers: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A webhook receiver on loopback: answers each `call_initiated` with the next of
    `answers` (the last one repeats); other events get an empty 200."""
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") != "call_initiated":
            return web.Response(text="")
        seen.append(body["uuid"])
        return web.json_response(answers[min(len(seen), len(answers)) - 1])

    app = web.Application()
    app.add_routes([web.post("/hook", hook)])
    async with serve_app(app) as url:
        yield f"{url}/hook"


def realtime(fake: FakeOpenAIRealtime, url: str | None = None) -> dict[str, Any]:
    return {"name": "openai-realtime",
            "options": {"api_key": fake.api_key, "url": fake.url if url is None else url}}


async def greeted_then_hang_up(s: Served) -> dict[str, Any]:
    c = s.caller()
    await c.connect()
    assert await c.wait_agent_quiet(0.3, timeout_s=10)
    await c.hangup()
    rec = await wait_record(s.store, c.uuid)
    return rec


def lines(rec: dict[str, Any], who: str) -> list[str]:
    return [e["text"] for e in rec["transcript"] if e["who"] == who]


# ---------------------------------------------------------------------------------------------
# 1. per-call sts_url
# ---------------------------------------------------------------------------------------------


def test_sts_url_check_accepts_websocket_urls_and_refuses_the_rest() -> None:
    assert check_sts_url("wss://sts.example.com/v1/realtime") == "wss://sts.example.com/v1/realtime"
    assert check_sts_url("https://sts.example.com/rt?x=1") == "wss://sts.example.com/rt?x=1"
    assert check_sts_url("http://avr-sts:6033") == "ws://avr-sts:6033"
    for bad, why in [("file:///etc/passwd", "must start with ws://"),
                     ("javascript:alert(1)", "must start with ws://"),
                     ("avr-sts:6033", "must start with ws://"),
                     ("ws://", "no host"),
                     ("wss://user:pw@sts.example.com", "user name or password"),
                     ("ws://sts.example.com/a b", "spaces"),
                     ("", "non-empty"), (42, "non-empty")]:
        with pytest.raises(ValueError, match=why):
            check_sts_url(bad)
    # an API key never goes in clear text to another machine (unless the flow already does so)
    with pytest.raises(ValueError, match="unencrypted"):
        check_sts_url("ws://sts.example.com/v1/realtime",
                      flow_url="wss://api.openai.com/v1/realtime", sends_secret=True)
    assert check_sts_url("ws://127.0.0.1:8000/rt", flow_url="wss://api.openai.com/v1/realtime",
                         sends_secret=True) == "ws://127.0.0.1:8000/rt"
    assert check_sts_url("ws://avr-sts:6033", flow_url="wss://x", sends_secret=False)


def test_realtime_override_keeps_the_model_query_and_the_flow_instance() -> None:
    flow = OpenAIRealtimeSts.from_options({"api_key": "k", "url": "wss://api.openai.com/v1/realtime"})
    one = flow.with_url("https://proxy.example.com/v1/realtime?tenant=7")
    assert one.endpoint() == "wss://proxy.example.com/v1/realtime?tenant=7&model=gpt-realtime"
    pinned = flow.with_url("wss://proxy.example.com/rt?model=gpt-realtime-mini")
    assert pinned.endpoint() == "wss://proxy.example.com/rt?model=gpt-realtime-mini"
    assert flow.endpoint() == "wss://api.openai.com/v1/realtime?model=gpt-realtime"  # unchanged


async def test_webhook_sts_url_points_only_that_call_at_another_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (FakeOpenAIRealtime([GREETING], turns="energy") as flows_own,
                FakeOpenAIRealtime(["Hello from the other endpoint."], turns="energy") as other,
                call_initiated_answers([{"sts_url": other.url}, {}]) as hook,
                serve(realtime(flows_own), tmp_path, monkeypatch, hook) as s):
        first = await greeted_then_hang_up(s)
        assert len(other.connections) == 1 and flows_own.connections == []
        second = await greeted_then_hang_up(s)
    assert len(flows_own.connections) == 1 and len(other.connections) == 1
    assert lines(first, "agent") == ["Hello from the other endpoint."]
    assert lines(second, "agent") == [GREETING]
    assert first["errors"] == [] and second["errors"] == []
    # the other endpoint got the whole session set-up, with the flow's key and the model
    assert other.session["instructions"] and "model=gpt-realtime" in other.requests[0][0]


@pytest.mark.parametrize(("bad", "reason"), [
    ("ftp://sts.example.com/rt", "must start with ws://"),
    ("javascript:alert(1)", "must start with ws://"),
])
async def test_unacceptable_sts_url_is_logged_and_the_flows_url_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    bad: str, reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="flowagent.runner.sts_call")
    async with (FakeOpenAIRealtime([GREETING], turns="energy") as flows_own,
                call_initiated_answers([{"sts_url": bad}]) as hook,
                serve(realtime(flows_own), tmp_path, monkeypatch, hook) as s):
        rec = await greeted_then_hang_up(s)
    assert len(flows_own.connections) == 1
    assert lines(rec, "agent") == [GREETING]  # the call went on, on the flow's own URL
    assert any("sts_url ignored" in e and reason in e for e in rec["errors"])
    assert any("sts_url" in r.getMessage() and reason in r.getMessage() for r in caplog.records)


async def test_webhook_sts_url_works_for_an_avr_sts_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (FakeAvr(sts_script=["Hi, AVR here."]) as avr,
                call_initiated_answers([{"sts_url": avr.sts_url}]) as hook,
                serve({"name": "avr", "options": {"url": DEAD_URL}}, tmp_path, monkeypatch,
                      hook) as s):
        c = s.caller()
        await c.connect()
        await c.wait_agent_started(0.0, timeout_s=10)  # the AVR service's audio reached us
        await c.hangup()
        rec = await wait_record(s.store, c.uuid)
    assert any(m.get("type") == "init" for m in avr.sts_received)
    assert not any(e.startswith("sts:") for e in rec["errors"])  # the dead flow URL unused


# ---------------------------------------------------------------------------------------------
# 2. per-turn latency
# ---------------------------------------------------------------------------------------------


async def test_sts_turns_get_latency_rows_in_the_api_the_store_and_the_live_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    callers = ["I'd like a quote please", "Three bedrooms"]
    script = [GREETING, "Of course. Where are you moving from?", "Lovely, and when?"]
    hub = LiveHub()
    async with (FakeOpenAIRealtime(script, user_transcripts=callers, turns="energy") as fake,
                serve(realtime(fake), tmp_path, monkeypatch) as s):
        watcher = RuntimeWatcher(s.rt, hub)
        c = s.caller()
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=10)
        watcher.tick()
        await c.say_audio(SPEECH)
        spoke = time.monotonic()
        await c.wait_agent_started(spoke, timeout_s=10)
        live = await s.get_call(c.uuid)  # GET /calls/{uuid} while the call is on
        watcher.tick()
        live_view = [dict(e) for e in (hub.get(c.uuid) or {}).get("latency", [])]
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=spoke)
        await c.say_audio(SPEECH)
        spoke = time.monotonic()
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=spoke)
        await c.hangup()
        rec = await wait_record(s.store, c.uuid)

    assert live["live"] is True and len(live["latency"]) == 1
    assert live_view and live_view[0]["ms"] == round(live["latency"][0]["first_frame_ms"], 1)
    assert live_view[0]["sts_first_audio_ms"] == live["latency"][0]["sts_first_audio_ms"]
    rows = rec["latency"]  # the SQLite record
    assert [r["index"] for r in rows] == [0, 1]
    for row in rows:
        assert row["end_of_speech_by"] == "provider"
        assert 0 <= row["sts_first_audio_ms"] <= row["first_frame_ms"]
        assert row["runner_ms"] == pytest.approx(row["first_frame_ms"] - row["sts_first_audio_ms"],
                                                 abs=0.02)
        assert row["caller_transcript_ms"] is not None
    assert rows[0]["end_of_speech_s"] < rows[1]["end_of_speech_s"]
    turns = rec["turns"]
    assert len(turns) == 2 and all(t["end_of_speech"] < t["first_frame"] for t in turns)
    # the transcript: each caller line timed at its end of speech, before the reply it got
    tr = rec["transcript"]
    assert [e["at"] for e in tr] == sorted(e["at"] for e in tr)
    assert [e["text"] for e in tr if e["who"] in ("caller", "agent")] == [
        GREETING, callers[0], script[1], callers[1], script[2]]
    for caller_line, row in zip([e for e in tr if e["who"] == "caller"], rows, strict=True):
        assert caller_line["at"] == pytest.approx(row["end_of_speech_s"], abs=0.002)


async def test_avr_sts_turns_are_timed_by_our_own_end_of_speech_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AVR STS service reports neither ends of speech nor ends of replies: our energy
    detector times the caller's turn, and each reply (split on the provider's quiet gaps) gets
    its own say, transcript line and latency row."""
    async with (FakeAvr(sts_script=["Hi, AVR here."], bytes_per_utterance=24000) as avr,
                serve({"name": "avr", "options": {"url": avr.sts_url}}, tmp_path,
                      monkeypatch) as s):
        c = s.caller()
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=10)  # the service's first reply
        await c.say_audio(SPEECH)
        session = s.rt.sessions[c.uuid]
        for _ in range(300):  # up to 15 s for a reply after our speech
            if session.turns:
                break
            await asyncio.sleep(0.05)
        live = await s.get_call(c.uuid)
        await c.hangup()
        rec = await wait_record(s.store, c.uuid)
    rows = live["latency"]
    assert rows and rows[0]["end_of_speech_by"] == "local_vad"
    assert 0 <= rows[0]["sts_first_audio_ms"] <= rows[0]["first_frame_ms"]
    assert rec["latency"][: len(rows)] == rows
    agent = lines(rec, "agent")
    assert len(agent) >= 2 and set(agent) == {"Hi, AVR here."}  # one line per reply

# ---------------------------------------------------------------------------------------------
# 3. barge-in truncation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_s", [0.0, 0.05], ids=["reply-all-sent", "reply-still-streaming"])
async def test_interrupting_mid_reply_truncates_to_what_the_caller_heard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_s: float
) -> None:
    long_text = ("We move homes and offices all over Yorkshire and the North West, and we can "
                 "pack everything for you, store it, and take it anywhere in the country.")
    script: list[Any] = [GREETING, {"say": long_text, "audio_ms": 5000}, "Sure, go ahead."]
    async with (FakeOpenAIRealtime(script, user_transcripts=["what do you do", "one thing"],
                                   turns="energy", chunk_s=chunk_s) as fake,
                serve(realtime(fake), tmp_path, monkeypatch) as s):
        c = s.caller()
        levels: list[tuple[float, float]] = []  # every frame the caller got: (arrival, RMS)
        c.on_agent_frame.append(lambda at, pcm, speech: levels.append((at, audio.rms(pcm))))
        await c.connect()
        assert await c.wait_agent_quiet(0.3, timeout_s=10)
        await c.say_audio(SPEECH)
        spoke = time.monotonic()
        started = await c.wait_agent_started(spoke, timeout_s=10)  # the 5 s answer begins
        heard = asyncio.Event()
        c.on_agent_frame.append(
            lambda at, pcm, speech: heard.set() if c.agent_speech_frames >= before + 50 else None)
        before = c.agent_speech_frames
        await asyncio.wait_for(heard.wait(), 10)  # about a second of it has played
        barge = time.monotonic()
        c.queue_audio(SPEECH)  # the caller talks over it
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=started)
        await c.wait_agent_started(barge + 0.4, timeout_s=10)  # the answer to the interruption
        assert await c.wait_agent_quiet(0.3, timeout_s=10, after=barge + 0.4)
        await c.hangup()
        rec = await wait_record(s.store, c.uuid)

    # what our socket sent of the long reply: the frames of its unbroken run of speech at the
    # reply's level (the quiet 5 ms fade-out frame after the flush is ours, not the reply's)
    run = next(r for r in speech_runs(c) if r[0] >= started - 1e-6)
    full = 0.1  # RMS of a full-level frame: the fake's tone is about 0.17
    sent_ms = 20 * sum(1 for at, level in levels if run[0] <= at <= run[-1] and level >= full)
    assert fake.truncate_errors == []
    assert len(fake.truncations) == 1
    cut = fake.truncations[0]
    assert cut["item_id"] == "item_out2" and cut["content_index"] == 0
    # within one 20 ms frame
    assert abs(cut["audio_end_ms"] - sent_ms) <= 20, (cut, sent_ms)
    assert cut["audio_end_ms"] < 5000 / 2
    for cancel in fake.cancel_requests:  # if we cancelled, it named the reply being made
        assert cancel.get("response_id") == "resp_2"
    # the reply is in the record as cut: its words so far (all of them if it had been fully
    # sent), and what the caller heard of them
    line = next(e for e in rec["transcript"] if e["who"] == "agent" and e["text"]
                and long_text.startswith(e["text"]))
    assert line["heard"] is not None and len(line["heard"]) < len(long_text) / 2
    assert line["text"].startswith(line["heard"])
    assert "caller interrupted" in lines(rec, "system")
    assert lines(rec, "agent")[-1] == "Sure, go ahead."
    assert not any("OpenAI Realtime reported" in e for e in rec["errors"])


async def test_barge_in_during_a_reply_cancels_it_then_truncates() -> None:
    """The provider client on its own: a reply still streaming gets `response.cancel` naming it,
    then `conversation.item.truncate` with our milliseconds; the server confirms both."""
    async with FakeOpenAIRealtime(["A long reply."], audio_ms=3000, chunk_ms=100,
                                  chunk_s=0.05) as fake:
        sts = OpenAIRealtimeSts.from_options({"api_key": fake.api_key, "url": fake.url})
        session = await sts.connect("Be brief.", (), 8000)
        try:
            await session.respond()
            events = session.events()
            first: StsEvent | None = None
            async with asyncio.timeout(10):
                async for e in events:
                    if e.kind == "audio":
                        first = e
                        break
            assert first is not None and first.data["item_id"] == "item_out1"
            await session.barge_in(first.data["item_id"], first.data["content_index"], 80)
            statuses: list[str] = []
            async with asyncio.timeout(10):
                async for e in events:
                    if e.kind == "done":
                        statuses.append(e.data["status"])
                        break
        finally:
            await session.close()
    assert statuses == ["cancelled"]
    assert fake.cancel_requests == [{"type": "response.cancel", "response_id": "resp_1",
                                     "was_active": True}]
    assert fake.truncations == [{"item_id": "item_out1", "content_index": 0, "audio_end_ms": 80,
                                 "audio_sent_ms": pytest.approx(fake.item_audio_ms["item_out1"])}]
    kinds = [m["type"] for m in fake.received]
    assert kinds.index("response.cancel") < kinds.index("conversation.item.truncate")


def test_local_end_of_speech_for_providers_that_report_none() -> None:
    """AVR STS says nothing about turns: our energy detector marks the caller's last loud frame
    as the end of speech (after 500 ms of quiet, or sooner when the reply starts), and ignores
    a click."""
    from flowagent.runner.sts_latency import LocalEndpointer

    loud, quiet = audio.tone(20, 300, 8000, amplitude=0.4), bytes(320)
    ep = LocalEndpointer()
    t = 100.0
    assert ep.feed(loud, 20, t) is None  # a 20 ms click...
    for _ in range(30):
        t += 0.02
        assert ep.feed(quiet, 20, t) is None  # ...is not a turn
    ends: list[float] = []
    for _ in range(20):  # 400 ms of speech
        t += 0.02
        assert ep.feed(loud, 20, t) is None
    last_loud = t
    while not ends:
        t += 0.02
        eos = ep.feed(quiet, 20, t)
        if eos is not None:
            ends.append(eos)
    assert ends == [last_loud] and t - last_loud == pytest.approx(0.5, abs=0.021)
    # a fast reply after a short pause ends the turn at once (same end of speech)
    for _ in range(10):
        t += 0.02
        ep.feed(loud, 20, t)
    last_loud = t
    assert ep.claim() is None  # still talking: the reply does not end the turn
    for _ in range(4):
        t += 0.02
        ep.feed(quiet, 20, t)
    assert ep.claim() == last_loud
    assert ep.claim() is None  # that turn is over
