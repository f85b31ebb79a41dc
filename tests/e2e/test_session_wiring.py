"""The call session's wiring to the other parts, on a real in-process server (fake providers):
- a Transfer goes through the runtime's `Transferer`: with AMI, Asterisk is told to redirect the
  caller's channel (no 0x00 frame); without, the socket path (0x00 frame, dialplan reads back);
- static prompts are served from the prompt cache on the first call after the pre-warm;
- `POST /call` metadata `flow` picks the flow (over the DID route);
- Whisper-style ASR streams hear `speech_started(ms)` at the start of the caller's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowagent import audio
from flowagent.asterisk.ami import AmiClient
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.asterisk.routes import add_routes
from flowagent.asterisk.transfer import Transferer
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.control_api import create_app, start_api
from flowagent.server.runtime import FlowSet, ProviderPool, Runtime
from flowagent.server.store_sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "asterisk"))
from fake_ami import FakeAmi

FLOWS = Path(__file__).parent / "flows"
TOKEN = "wiring-token"
CHANNEL = "PJSIP/trunk-00000042"


class Live:
    def __init__(self, rt: Runtime, server: AudioSocketServer, http_port: int) -> None:
        self.rt, self.server, self.http_port = rt, server, http_port

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{self.http_port}{path}", json=body,
                headers={"X-Flowagent-Token": TOKEN},
                timeout=aiohttp.ClientTimeout(total=5)) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def call(self, call_uuid: str) -> AudioSocketCaller:
        caller = AudioSocketCaller("127.0.0.1", self.server.address[1], call_uuid=call_uuid)
        await caller.connect()
        return caller

    async def record(self, call_uuid: str) -> dict[str, Any]:
        for _ in range(200):
            rec = self.rt.recent.get(call_uuid)
            if rec is not None:
                return rec
            await asyncio.sleep(0.05)
        raise AssertionError("no call record")


@pytest.fixture
async def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("FLOWAGENT_API_TOKEN", TOKEN)
    made: list[tuple[AudioSocketServer, Any, SqliteStore]] = []

    async def make(flow: Path) -> Live:
        flows = FlowSet(ProviderPool())
        flows.load(flow)
        store = SqliteStore(tmp_path / f"calls{len(made)}.db")
        rt = Runtime(flows, store)
        server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
        await server.start()
        app = create_app(rt)
        add_routes(app, rt)
        runner, http_port = await start_api(app, "127.0.0.1", 0)
        made.append((server, runner, store))
        return Live(rt, server, http_port)

    yield make
    for server, runner, store in made:
        with contextlib.suppress(Exception):
            await server.close()
        await runner.cleanup()
        await store.close()


async def test_transfer_with_ami_redirects_the_channel_after_the_reason_is_spoken(
        live: Any) -> None:
    lv: Live = await live(FLOWS / "greet_transfer.yaml")
    async with FakeAmi(channels={CHANNEL}) as fake:
        ami = AmiClient("127.0.0.1", fake.port, "flowagent", "s3cret", action_timeout=2)
        await ami.connect()
        lv.rt.transferer = Transferer(ami=ami)
        call_uuid = str(uuid.uuid4())
        await lv.post("/call", {"uuid": call_uuid, "payload": {"channel": CHANNEL}})
        caller = await lv.call(call_uuid)
        try:
            await asyncio.wait_for(caller.closed.wait(), 20)
            # the caller heard the line first, then Asterisk was asked to move the channel
            assert caller.agent_speech_frames > 0
            assert fake.redirects == [(CHANNEL, "flowagent-transfer", "6001", "1")]
            assert fake.variables[(CHANNEL, "FLOWAGENT_REASON")] == "caller asked for a person"
            assert not caller.stats.hangup_frame  # AMI moved the call: no socket hang-up frame
        finally:
            await caller.close()
            await ami.close()
    rec = await lv.record(call_uuid)
    assert rec["transfer_target"] == "6001" and rec["outcome"] == "transferred"


async def test_transfer_without_ami_ends_the_socket_for_the_dialplan(live: Any) -> None:
    lv: Live = await live(FLOWS / "greet_transfer.yaml")
    lv.rt.transferer = Transferer.from_env(None, environ={})
    call_uuid = str(uuid.uuid4())
    caller = await lv.call(call_uuid)
    try:
        await asyncio.wait_for(caller.closed.wait(), 20)
        assert caller.agent_speech_frames > 0
        assert caller.stats.hangup_frame  # 0x00: AudioSocket() returns, the dialplan goes on
    finally:
        await caller.close()
    # what the dialplan reads back after the socket ends
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{lv.http_port}/calls/{call_uuid}/transfer",
            headers={"X-Flowagent-Token": TOKEN}) as r:
        assert (r.status, await r.text()) == (200, "flowagent-transfer,6001,1")


class CountingTts:
    """Wraps the flow's (fake) TTS provider and notes every text it is asked to speak."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.voice_id = inner.voice_id
        self.texts: list[str] = []

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        self.texts.append(text)
        async for chunk in self.inner.synthesize(text, sample_rate):
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_static_prompts_come_from_the_cache_on_the_first_call(live: Any) -> None:
    lv: Live = await live(FLOWS / "static_prompts.yaml")
    entry = lv.rt.flows.default
    assert entry is not None
    made = await entry.prewarm()  # what serve does before it accepts calls
    assert made == 2
    counting = CountingTts(entry.providers.tts)
    entry.providers.tts = counting
    call_uuid = str(uuid.uuid4())
    caller = await lv.call(call_uuid)
    try:
        await asyncio.wait_for(caller.closed.wait(), 20)
        assert caller.agent_speech_frames > 0  # both prompts were heard...
    finally:
        await caller.close()
    assert counting.texts == []  # ...and none of them was synthesised during the call
    rec = await lv.record(call_uuid)
    assert rec["outcome"] == "completed"


async def test_post_call_flow_key_overrides_the_number_route(live: Any) -> None:
    lv: Live = await live(FLOWS / "routes.yaml")
    call_uuid = str(uuid.uuid4())
    # the DID routes to the transfer flow, but the dialplan/AGI asked for "other"
    await lv.post("/call", {"uuid": call_uuid,
                            "payload": {"to": "+441134960000", "flow": "Other Flow"}})
    caller = await lv.call(call_uuid)
    try:
        await asyncio.wait_for(caller.closed.wait(), 20)
    finally:
        await caller.close()
    rec = await lv.record(call_uuid)
    assert rec["flow"] == "Other Flow"
    # and FLOWAGENT_FLOW (as the AGI script's variable) with a file name works too
    call_uuid = str(uuid.uuid4())
    await lv.post("/call", {"uuid": call_uuid, "metadata": {"FLOWAGENT_FLOW": "other.yaml"}})
    caller = await lv.call(call_uuid)
    try:
        await asyncio.wait_for(caller.closed.wait(), 20)
    finally:
        await caller.close()
    assert (await lv.record(call_uuid))["flow"] == "Other Flow"


class PrerollAsr:
    """Wraps the fake ASR's streams and notes `speech_started(ms)` calls (as Whisper gets)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.onsets: list[int] = []

    async def open_stream(self, sample_rate: int, language: str = "en") -> Any:
        stream = await self.inner.open_stream(sample_rate, language)
        outer = self

        class Stream:
            # the fake's own ways in, plus the speech onset Whisper declares
            capabilities = replace(stream.capabilities, speech_onset=True)

            def __getattr__(self, name: str) -> Any:
                return getattr(stream, name)

            def speech_started(self, ms: int = 0) -> None:
                outer.onsets.append(ms)

        return Stream()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_asr_stream_hears_speech_onset(live: Any) -> None:
    lv: Live = await live(FLOWS / "ask_name.yaml")
    entry = lv.rt.flows.default
    assert entry is not None
    asr = PrerollAsr(entry.providers.asr)
    entry.providers.asr = asr
    caller = await lv.call(str(uuid.uuid4()))
    try:
        await caller.wait_agent_quiet(0.3, 10)
        await caller.say_audio(audio.tone(600, 300, 8000))  # the caller speaks over the end
        for _ in range(100):
            if asr.onsets:
                break
            await asyncio.sleep(0.05)
    finally:
        await caller.close()
    assert asr.onsets and all(ms > 0 for ms in asr.onsets)
