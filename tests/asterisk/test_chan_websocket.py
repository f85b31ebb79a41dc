"""chan_websocket: the protocol module on its own, then against the fake Asterisk over real
loopback WebSockets in both control formats (MEDIA_START, DTMF, flush, marks, flow control,
hang-up both ways, malformed control messages, an abrupt close)."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError

from flowagent import audio
from flowagent.asterisk import chan_websocket as cw
from flowagent.asterisk.chan_websocket import (
    AsteriskError,
    Command,
    ControlMessageError,
    DtmfEnd,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    Status,
)

from .fake_chan_websocket import FakeChanWebsocket

pytestmark = pytest.mark.timeout(30)

FORMATS: tuple[cw.ControlFormat, ...] = ("json", "plain-text")


# -- codecs -------------------------------------------------------------------------------------


def _audioop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")  # the stdlib reference, gone in Python 3.13


def test_g711_decoding_matches_the_reference_for_every_code() -> None:
    ref = _audioop()
    codes = bytes(range(256))
    assert audio.ulaw_to_pcm(codes) == ref.ulaw2lin(codes, 2)
    assert audio.alaw_to_pcm(codes) == ref.alaw2lin(codes, 2)


def test_g711_encoding_is_the_reference_for_alaw_and_within_a_step_for_ulaw() -> None:
    ref = _audioop()
    pcm = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert audio.pcm_to_alaw(pcm) == ref.lin2alaw(pcm, 2)
    ours = np.frombuffer(audio.pcm_to_ulaw(pcm), np.uint8).astype(int)
    theirs = np.frombuffer(ref.lin2ulaw(pcm, 2), np.uint8).astype(int)
    assert np.mean(ours == theirs) > 0.99  # the Sun and CCITT roundings differ at segment edges
    assert np.max(np.abs(ours - theirs)) <= 1


@pytest.mark.parametrize("name", ["ulaw", "alaw", "slin", "slin16", "slin48"])
def test_every_format_round_trips_speech_like_audio(name: str) -> None:
    fmt = cw.FORMATS[name]
    pcm = audio.tone(100, 440, fmt.sample_rate, amplitude=0.5)
    payload = fmt.encode(pcm)
    assert len(payload) == len(pcm) // 2 * fmt.bytes_per_sample
    back = np.frombuffer(fmt.decode(payload), "<i2").astype(float)
    orig = np.frombuffer(pcm, "<i2").astype(float)
    snr = 10 * np.log10(np.sum(orig ** 2) / max(1.0, np.sum((orig - back) ** 2)))
    assert snr > 30  # G.711 keeps ~38 dB on a loud tone; slin is exact
    assert fmt.frame_bytes() == {"ulaw": 160, "alaw": 160, "slin": 320, "slin16": 640,
                                 "slin48": 1920}[name]


def test_a_format_flowagent_cannot_carry_is_named_plainly() -> None:
    with pytest.raises(ControlMessageError, match=r"'opus'.*c\(\.\.\.\).*ulaw, alaw, slin"):
        cw.media_format("opus")


# -- events and commands ------------------------------------------------------------------------

EVENTS = [
    MediaStart("media_connection1", "WebSocket/media_connection1/0x5140001a0040",
               "1761245643.1", "ulaw", 160, 20),
    DtmfEnd("5", "1761245643.1"), DtmfEnd("#", "c1"), MediaXoff("c1"), MediaXon("c1"),
    cw.QueueDrained("c1"), MediaMarkProcessed("say-7", "c1"),
    cw.MediaBufferingCompleted("b1", "c1"),
    Status("c1", 12, 800, 900, False, True, False),
    AsteriskError("Unable to parse JSON command", "c1"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_reads_back_as_written(fmt: cw.ControlFormat, event: cw.Event) -> None:
    text = cw.format_event(event, fmt)
    assert "\n" not in text
    got = cw.parse_event(text, fmt)
    if fmt == "plain-text" and isinstance(event, (MediaMarkProcessed,
                                                  cw.MediaBufferingCompleted)):
        assert got == type(event)(event.correlation_id)  # plain text carries no channel id
    elif fmt == "plain-text" and isinstance(event, (MediaXoff, MediaXon, cw.QueueDrained)):
        assert got == type(event)()  # the bare event name
    else:
        assert got == event


def test_media_start_as_asterisk_documents_it() -> None:
    json_text = ('{"event":"MEDIA_START","connection_id":"media_connection1",'
                 '"channel":"WebSocket/media_connection1/0x5140001a0040",'
                 '"channel_id":"1761245643.1","format":"ulaw","optimal_frame_size":160,'
                 '"ptime":20,"channel_variables":{"DIALEDPEERNUMBER":"media_connection1/c(ulaw)",'
                 '"MEDIA_WEBSOCKET_CONNECTION_ID":"media_connection1",'
                 '"MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE":"160"}}')
    start = cw.parse_event(json_text, "json")
    assert isinstance(start, MediaStart)
    assert start.media == cw.FORMATS["ulaw"] and start.optimal_frame_size == 160
    assert start.channel_variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == "160"
    plain = cw.parse_event("MEDIA_START connection_id:c1 channel:WebSocket/c1/0x1 "
                           "channel_id:17.2 format:slin16 optimal_frame_size:640 ptime:20",
                           "plain-text")
    assert isinstance(plain, MediaStart) and plain.media.sample_rate == 16000
    assert plain.channel_variables == {}


def test_an_error_text_keeps_its_spaces() -> None:
    ev = cw.parse_event("ERROR channel_id:c1 error_text:FLUSH_MEDIA not supported in "
                        "passthrough mode", "plain-text")
    assert ev == AsteriskError("FLUSH_MEDIA not supported in passthrough mode", "c1")


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("", "json", "empty control message"),
    ("{not json", "json", "not valid JSON"),
    ('{"channel_id": "c1"}', "json", 'no "event"'),
    ("MEDIA_START connection_id:c1", "plain-text", "missing channel, format"),
    ("MEDIA_START connection_id:c1 channel:x format:g729 optimal_frame_size:20",
     "plain-text", "'g729'"),
    ("MEDIA_START connection_id:c1 channel:x format:ulaw optimal_frame_size:many",
     "plain-text", "not a whole number"),
    ('{"event":"MEDIA_START","connection_id":"c","channel":"x","format":"ulaw",'
     '"optimal_frame_size":160,"channel_variables":[1]}', "json", "not an object"),
    ("DTMF_END digit:Z channel_id:c1", "plain-text", "not a keypad digit"),
    ("STATUS channel_id:c1 queue_length:1 xon_level:800 xoff_level:900 queue_full:maybe "
     "bulk_media:false media_paused:false", "plain-text", "not true or false"),
    ("MEDIA_STOP", "plain-text", "unknown control event"),
    ('{"event": "MEDIA_XON"}', "plain-text", "JSON where plain-text"),
    ("MEDIA_XON", "json", "not valid JSON"),
    ("DTMF_END digit 5", "plain-text", "key:value"),
    (b"\xff\xfe", "json", "not UTF-8"),
    ("x" * 70000, "json", "refused"),
])
def test_malformed_events_are_refused_in_one_sentence(text: str | bytes, fmt: cw.ControlFormat,
                                                      message: str) -> None:
    with pytest.raises(ControlMessageError, match=message):
        cw.parse_event(text, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_commands_as_asterisk_reads_them(fmt: cw.ControlFormat) -> None:
    for name in cw.COMMANDS:
        cid = "say-12" if name in cw.COMMANDS_WITH_ID else ""
        text = cw.format_command(Command(name, cid), fmt)
        assert len(text.encode()) <= cw.MAX_COMMAND_BYTES
        assert cw.parse_command(text, fmt) == Command(name, cid)
    assert cw.format_command(Command("MARK_MEDIA", "m1"), "json") == (
        '{"command":"MARK_MEDIA","correlation_id":"m1"}')
    assert cw.format_command(Command("FLUSH_MEDIA"), "plain-text") == "FLUSH_MEDIA"


@pytest.mark.parametrize("cmd", [Command("FLUSH"), Command("MARK_MEDIA", "has space"),
                                 Command("MARK_MEDIA", "x" * 65), Command("HANGUP", "id")])
def test_commands_asterisk_would_drop_or_misread_are_refused(cmd: Command) -> None:
    with pytest.raises(ValueError):
        cw.format_command(cmd, "plain-text")


def test_the_call_id_and_metadata_come_from_the_upgrade_url() -> None:
    url = cw.parse_upgrade_url("/chan_websocket?uuid=5f0c9a1e-2b7d-4c1a-9e3f-0a1b2c3d4e5f"
                               "&caller=%2B447700900123&did=01632960000&flow=removals"
                               "&caller_name=Jane%20Smith")
    assert url.call_id == "5f0c9a1e-2b7d-4c1a-9e3f-0a1b2c3d4e5f"
    assert url.params["caller"] == "+447700900123" and url.params["caller_name"] == "Jane Smith"
    assert url.path == "/chan_websocket"
    start = MediaStart("c", "WebSocket/c/0x1", "17.3", "ulaw", 160)
    assert cw.call_id(url, start) == url.call_id
    assert cw.call_id(cw.parse_upgrade_url("/chan_websocket"), start) == "17.3"


@pytest.mark.parametrize(("target", "message"), [
    ("/ws?uuid=a&uuid=b", "twice"),
    ("/ws?uuid=not%20a%20uuid%0A", "call id"),
    ("/ws?uuid", "name=value"),
])
def test_a_bad_upgrade_url_is_refused_plainly(target: str, message: str) -> None:
    with pytest.raises(ControlMessageError, match=message):
        cw.parse_upgrade_url(target)


# -- the module against the fake Asterisk over real WebSockets ----------------------------------


@dataclass
class App:
    """A minimal app on chan_websocket, written with the protocol module only."""

    control: cw.ControlFormat
    url: cw.CallParams | None = None
    start: MediaStart | None = None
    caller: bytearray = field(default_factory=bytearray)  # decoded caller audio
    events: list[cw.Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # ControlMessageError sentences
    close_code: int | None = None  # Asterisk's close frame code (None: no close frame)
    dropped: bool = False  # the connection ended without a close frame
    ws: ServerConnection | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        self.ws = ws
        assert ws.request is not None
        self.url = cw.parse_upgrade_url(ws.request.path)
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    if self.start is not None:
                        self.caller += self.start.media.decode(msg)
                    continue
                try:
                    ev = cw.parse_event(msg, self.control)
                except ControlMessageError as exc:
                    self.errors.append(str(exc))
                    continue
                self.events.append(ev)
                if isinstance(ev, MediaStart):
                    self.start = ev
                    self.started.set()
        except ConnectionClosedError:
            self.dropped = True
        finally:
            self.close_code = ws.close_code
            self.done.set()

    async def command(self, name: str, cid: str = "") -> None:
        assert self.ws is not None
        await self.ws.send(cw.format_command(Command(name, cid), self.control))

    async def play(self, pcm: bytes) -> None:
        assert self.ws is not None and self.start is not None
        await self.ws.send(self.start.media.encode(pcm))

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def app_server(control: cw.ControlFormat) -> AsyncIterator[tuple[App, str]]:
    app = App(control)
    async with serve(app.handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield app, f"ws://127.0.0.1:{port}{cw.DEFAULT_PATH}"


async def wait_for(cond: Any) -> None:
    """Poll a condition over state two independent peers change (within 5 s)."""
    async with asyncio.timeout(5):
        while not cond():  # noqa: ASYNC110 - no single event covers both peers' state
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("control", FORMATS)
async def test_media_start_url_and_caller_audio_at_16khz(control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control, media="slin16",
            params={"uuid": "0b4c-77", "caller": "+447700900123"},
            channel_variables={"FLOWAGENT_FLOW": "removals"}) as ast:
        await wait_for(app.started.is_set)
        speech = audio.tone(200, 300, 16000, amplitude=0.4)
        ast.say(speech)
        await wait_for(lambda: len(app.caller) >= 640 * 12)
    assert app.url is not None and app.url.call_id == "0b4c-77"
    assert app.url.params["caller"] == "+447700900123"
    assert app.start is not None and app.start.media.sample_rate == 16000
    assert app.start.optimal_frame_size == 640
    if control == "json":  # channel variables travel only in JSON
        assert app.start.channel_variables["FLOWAGENT_FLOW"] == "removals"
    assert bytes(app.caller[:len(speech)]) == speech
    assert app.errors == []


@pytest.mark.parametrize("control", FORMATS)
async def test_ulaw_audio_both_ways_and_dtmf(control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control, media="ulaw") as ast:
        await wait_for(app.started.is_set)
        await ast.dtmf("7")
        reply = audio.tone(100, 500, 8000, amplitude=0.4)
        await app.play(reply)
        await wait_for(lambda: len(ast.heard) >= len(reply) and app.of(DtmfEnd))
    assert app.of(DtmfEnd)[0].digit == "7"
    heard = np.frombuffer(bytes(ast.heard[:len(reply)]), "<i2").astype(float)
    sent = np.frombuffer(reply, "<i2").astype(float)
    assert np.max(np.abs(heard - sent)) < 0.05 * 32768  # G.711 error only


@pytest.mark.parametrize("control", FORMATS)
async def test_flush_takes_back_queued_audio_at_once(control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control, media="slin16") as ast:
        await wait_for(app.started.is_set)
        await app.play(audio.tone(3000, 300, 16000, amplitude=0.3))  # 3 s sent ahead
        await asyncio.sleep(0.2)  # the caller barges in
        await app.command("FLUSH_MEDIA")
        await wait_for(lambda: ast.commands and ast.commands[-1].name == "FLUSH_MEDIA")
        heard_at_flush = len(ast.heard)
        await asyncio.sleep(0.2)
        heard_after = len(ast.heard)
    assert heard_after == heard_at_flush  # nothing stale reached the caller
    assert heard_at_flush < 640 * 25  # about 200 ms of the 3 s
    assert ast.flushed_frames > 100


@pytest.mark.parametrize("control", FORMATS)
async def test_a_mark_comes_back_when_the_audio_before_it_is_played(
        control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control, media="slin16") as ast:
        await wait_for(app.started.is_set)
        await app.play(audio.tone(200, 300, 16000, amplitude=0.3))
        await app.command("MARK_MEDIA", "say-1")
        await wait_for(lambda: app.of(MediaMarkProcessed))
        heard_at_mark = len(ast.heard)
    assert app.of(MediaMarkProcessed)[0].correlation_id == "say-1"
    assert heard_at_mark == 200 * 16 * 2  # all 200 ms played before the mark


@pytest.mark.parametrize("control", FORMATS)
async def test_flow_control_xoff_then_xon(control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control, media="slin16", queue_max=20, xoff=15, xon=10) as ast:
        await wait_for(app.started.is_set)
        await app.play(audio.tone(25 * 20, 300, 16000))  # 25 frames: past XOFF and the max
        await wait_for(lambda: app.of(MediaXoff))
        await wait_for(lambda: app.of(MediaXon))
        await app.command("GET_STATUS")
        await wait_for(lambda: app.of(Status))
    assert ast.dropped_frames == 0  # one message: queued up to the limit as one write
    assert app.of(Status)[0].xoff_level == 15


async def test_media_sent_while_the_queue_is_full_is_dropped() -> None:
    async with app_server("json") as (app, url), FakeChanWebsocket(
            url, media="slin16", queue_max=5, xoff=4, xon=2) as ast:
        await wait_for(app.started.is_set)
        for _ in range(10):
            await app.play(audio.tone(20, 300, 16000))
        await wait_for(lambda: ast.dropped_frames > 0)
    assert app.of(MediaXoff)


@pytest.mark.parametrize("control", FORMATS)
async def test_hangup_from_the_app(control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control) as ast:
        await wait_for(app.started.is_set)
        await app.command("HANGUP")
        await wait_for(app.done.is_set)
    assert ast.hung_up_by_app
    assert app.close_code == 1000 and not app.dropped


async def test_hangup_from_asterisk() -> None:
    async with app_server("json") as (app, url):
        ast = FakeChanWebsocket(url)
        await ast.__aenter__()
        await wait_for(app.started.is_set)
        await ast.hangup()
        await wait_for(app.done.is_set)
    assert app.close_code == 1000 and not app.dropped


async def test_a_malformed_json_command_gets_asterisks_error_event() -> None:
    async with app_server("json") as (app, url), FakeChanWebsocket(url) as ast:
        await wait_for(app.started.is_set)
        assert app.ws is not None
        await app.ws.send("{FLUSH_MEDIA")
        await app.ws.send("FLUSH_MEDIA " + "x" * 200)  # over 128 bytes: ignored
        await wait_for(lambda: app.of(AsteriskError))
    assert app.of(AsteriskError)[0].error_text == "Unable to parse JSON command"
    assert ast.commands == []


@pytest.mark.parametrize("control", FORMATS)
async def test_malformed_control_messages_from_asterisk_do_not_stop_the_call(
        control: cw.ControlFormat) -> None:
    async with app_server(control) as (app, url), FakeChanWebsocket(
            url, control=control, fault="malformed_control") as ast:
        await wait_for(lambda: len(app.errors) >= 4)
        await ast.dtmf("1")
        await wait_for(lambda: app.of(DtmfEnd))
    assert app.start is not None  # the good MEDIA_START before the junk still counts
    assert all(e.endswith(".") for e in app.errors)


async def test_an_abrupt_close_is_seen_as_a_dropped_connection() -> None:
    async with app_server("json") as (app, url), FakeChanWebsocket(
            url, fault="abrupt_close", abort_after_s=0.1):
        await wait_for(app.done.is_set)
    assert app.dropped  # no close frame: a dropped line, not a hang-up
    assert app.close_code == 1006


async def test_silence_suppression_sends_no_frames_between_words() -> None:
    async with app_server("json") as (app, url), FakeChanWebsocket(
            url, fault="silence_suppression") as ast:
        await wait_for(app.started.is_set)
        await asyncio.sleep(0.2)
        assert len(app.caller) == 0
        ast.say(audio.tone(100, 300, 16000))
        await wait_for(lambda: len(app.caller) >= 100 * 32)
