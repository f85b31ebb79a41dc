"""Call audio recording: real AudioSocket calls over TCP (fake providers) with recording on/off,
the `GET /calls/{uuid}/recording` route, the web view's player, and the recorder's file
handling (a 30-minute call, a killed process, retention).

Audio checks are per 20 ms frame of the WAV: a frame is "loud" when its RMS is above the
caller's silence, and its pitch (FFT peak) tells the caller's 1 kHz test tone from the fake
TTS's 440 Hz words.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import uuid as uuidlib
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from flowagent import audio
from flowagent.runner import audio_recording as recording
from flowagent.runner.audio_recording import CallRecorder, repair_wav, sweep
from flowagent.server.control_api import create_app, start_api
from flowagent.server.runtime import RuntimeConfig
from flowagent.web.mount import ui_for_runtime

pytestmark = pytest.mark.timeout(60)

FLOWS = Path(__file__).parent / "flows"
STS_FLOW = Path(__file__).resolve().parents[1] / "providers" / "flows" / "removals_sts.yaml"
TOKEN = "test-token"
CALLER_HZ = 1000.0
TTS_HZ = 440.0
CALLER_TONE = audio.tone(400, CALLER_HZ, 8000, amplitude=0.4)  # 20 frames of caller "speech"
FRAME = 160  # samples per 20 ms at 8 kHz


# -- helpers -----------------------------------------------------------------------------------


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, wave.Wave_read]:
    with wave.open(str(path), "rb") as w:
        raw = w.readframes(w.getnframes())
        params = w
    a = np.frombuffer(raw, dtype="<i2").reshape(-1, 2)
    return a[:, 0].astype(np.float32), a[:, 1].astype(np.float32), params


def frames_of(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    return x[: n * FRAME].reshape(n, FRAME)


def loud(x: np.ndarray, rms: float = 0.01) -> np.ndarray:
    """Per 20 ms frame: louder than `rms` (full scale 1.0)?"""
    f = frames_of(x) / 32768.0
    return np.sqrt((f * f).mean(axis=1)) > rms


def pitch(frame: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(frame * np.hanning(len(frame)), n=8000))
    return float(np.argmax(spec))  # 1 Hz bins at 8 kHz


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame index ranges where mask is True."""
    out: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(mask):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(mask)))
    return out


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as s, s.get(
        url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=5)
    ) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def recorded_flow(tmp_path: Path) -> Path:
    """basic.yaml with `settings.recording: true` (the flow opts in by itself)."""
    text = (FLOWS / "basic.yaml").read_text(encoding="utf-8")
    text = text.replace("settings:\n", "settings:\n  recording: true\n", 1)
    path = tmp_path / "recorded.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- whole calls over TCP ----------------------------------------------------------------------


async def test_recorded_call_has_both_sides_time_aligned(harness: Any, tmp_path: Path) -> None:
    h = await harness(recorded_flow(tmp_path))  # recording from the flow, not the server
    c = h.caller()
    await c.connect()
    assert await c.wait_agent_quiet(0.4, timeout_s=15)  # greeting + question played
    agent_end = c.last_agent_speech
    tone_at = time.monotonic()
    c.queue_audio(CALLER_TONE)
    await asyncio.sleep(0.7)
    await c.hangup()
    rec = await h.wait_record(c.uuid)

    info = rec["recording"]
    assert info["path"] == f"recordings/{c.uuid}.wav"
    path = tmp_path / info["path"]  # beside the SQLite store (tmp_path/calls0.db)
    caller, agent, w = read_stereo(path)
    assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
    n_frames = len(caller) // FRAME
    # as long as the call: every caller frame the server received is in it, nothing more
    assert abs(n_frames - h.rt.metrics.frames_received) <= 10, (n_frames,
                                                               h.rt.metrics.frames_received)
    assert info["duration_s"] == pytest.approx(len(caller) / 8000, abs=0.01)

    # the agent channel holds exactly the speech the caller received, at 440 Hz
    a_loud = loud(agent)
    assert abs(int(a_loud.sum()) - c.agent_speech_frames) <= 2, (a_loud.sum(),
                                                                 c.agent_speech_frames)
    a_frames = frames_of(agent)
    assert all(abs(pitch(a_frames[i]) - TTS_HZ) < 15 for i in np.flatnonzero(a_loud)[2:-2])

    # the caller channel holds the caller's 1 kHz tone (20 frames) and otherwise silence
    c_loud = loud(caller)
    tone_runs = runs(c_loud)
    assert len(tone_runs) == 1, tone_runs
    start, end = tone_runs[0]
    assert 18 <= end - start <= 21
    c_frames = frames_of(caller)
    assert abs(pitch(c_frames[start + 5]) - CALLER_HZ) < 15
    assert not c_loud[: start].any()  # no agent audio leaks into the caller side

    # time alignment: the silence between the agent's last word and the caller's tone is the
    # one the caller heard (within a few frames of network and loop jitter)
    last_agent = int(np.flatnonzero(a_loud)[-1])
    gap_wav = (start - last_agent) * 0.02
    gap_heard = tone_at - agent_end
    assert abs(gap_wav - gap_heard) < 0.1, (gap_wav, gap_heard)
    assert not a_loud[start:end].any()  # the agent was quiet while the caller spoke


async def test_barge_in_the_agent_channel_stops_where_playback_stopped(
    harness: Any, tmp_path: Path
) -> None:
    h = await harness(FLOWS / "llm_talk.yaml", config=RuntimeConfig(record_audio=True))
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0, timeout_s=5)
    await asyncio.sleep(0.5)  # well into the long reply
    c.queue_audio(audio.tone(600, CALLER_HZ, 8000, amplitude=0.4))
    await asyncio.sleep(0.8)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert any(e["text"] == "caller interrupted" for e in rec["transcript"])

    caller, agent, _ = read_stereo(tmp_path / rec["recording"]["path"])
    a_loud, c_loud = loud(agent), loud(caller)
    onset = int(np.flatnonzero(c_loud)[0])
    agent_runs = runs(a_loud)
    # the reply (about 2 s of audio) was cut: what is in the file is what was sent
    assert abs(int(a_loud.sum()) - c.agent_speech_frames) <= 2
    assert a_loud.sum() < 60
    cut = agent_runs[-1][1]
    assert onset < cut <= onset + 8, (onset, cut)  # decided in 3 frames + in flight + fade
    assert not a_loud[cut:].any()  # nothing flushed by the barge-in is in the file


async def test_over_chan_websocket_the_agent_channel_is_what_asterisk_played(
    harness: Any, tmp_path: Path
) -> None:
    """Asterisk plays our audio from its own queue: the file gets each frame when it plays, so
    the up-to-a-second sent ahead and then flushed by a barge-in is not in it."""
    from asterisk.fake_chan_websocket import SPEECH_PEAK

    h = await harness(FLOWS / "llm_talk.yaml", config=RuntimeConfig(record_audio=True))
    call_id = str(uuidlib.uuid4())
    async with h.ws_caller(params={"uuid": call_id}, media="slin") as c:
        await c.wait_agent_started(0, timeout_s=5)
        await asyncio.sleep(0.5)
        c.say(audio.tone(600, CALLER_HZ, 8000, amplitude=0.4))
        await asyncio.sleep(0.8)
        assert c.flushed_frames >= 10  # audio sent ahead was taken back
        played = sum(1 for _, peak in c.play_log if peak > SPEECH_PEAK)
    rec = await h.wait_record(call_id)
    caller, agent, _ = read_stereo(tmp_path / rec["recording"]["path"])
    a_loud, c_loud = loud(agent), loud(caller)
    assert abs(int(a_loud.sum()) - played) <= 3, (a_loud.sum(), played)
    onset = int(np.flatnonzero(c_loud)[0])
    cut = runs(a_loud)[-1][1]
    assert onset < cut <= onset + 8, (onset, cut)
    assert not a_loud[cut:].any()


async def test_recording_off_leaves_no_file_and_no_field(harness: Any, tmp_path: Path) -> None:
    h = await harness()
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    assert "recording" not in rec
    assert not (tmp_path / "recordings").exists()
    status, body = await h.http("GET", f"/calls/{c.uuid}/recording")
    assert status == 404 and "no recording" in body["error"]


async def test_api_serves_the_recording_with_the_token_only(harness: Any,
                                                            tmp_path: Path) -> None:
    h = await harness(config=RuntimeConfig(record_audio=True))
    c = h.caller()
    await c.connect()
    await c.wait_agent_started(0)
    await asyncio.sleep(0.3)
    await c.hangup()
    rec = await h.wait_record(c.uuid)
    path = tmp_path / rec["recording"]["path"]
    url = f"{h.base}/calls/{c.uuid}/recording"

    status, ctype, body = await get(url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and ctype == "audio/wav"
    assert body == path.read_bytes() and body[:4] == b"RIFF"
    status, _, _ = await get(f"{h.base}/calls/{c.uuid.upper()}/recording",
                             {"X-Flowagent-Token": TOKEN})
    assert status == 200  # UUIDs are case-insensitive
    status, ctype, body = await get(url)
    assert status == 401 and b"token" in body
    status, _, _ = await get(url, {"Authorization": "Bearer wrong"})
    assert status == 401

    # nothing outside the recordings directory, and nothing not named by a UUID
    (tmp_path / "recordings" / "notes.wav").write_bytes(b"RIFF secret")
    (tmp_path / "secret.wav").write_bytes(b"RIFF secret")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for bad in ["notes", "..%2Fsecret", "%2E%2E%2Fsecret", "..%2F..%2Fetc%2Fpasswd",
                f"{c.uuid}.wav", f"..%2Frecordings%2F{c.uuid}", "%2Fetc%2Fpasswd"]:
        status, ctype, body = await get(f"{h.base}/calls/{bad}/recording", auth)
        assert status == 404, (bad, status)
        assert b"RIFF" not in body
    status, ctype, body = await get(f"{h.base}/calls/../../secret.wav/recording", auth)
    assert status == 404 and b"RIFF" not in body


async def test_web_record_page_plays_the_recording(harness: Any, tmp_path: Path) -> None:
    h = await harness(config=RuntimeConfig(record_audio=True))
    runner, port = await start_api(
        create_app(h.rt, subapps={"/ui": ui_for_runtime(h.rt)}, public_prefixes=("/ui",)),
        "127.0.0.1", 0)
    try:
        c = h.caller()
        await c.connect()
        await c.wait_agent_started(0)
        await c.hangup()
        await h.wait_record(c.uuid)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        base = f"http://127.0.0.1:{port}/ui"
        status, _, page = await get(f"{base}/records/{c.uuid}", auth)
        assert status == 200
        html = page.decode()
        assert f'<audio controls preload="none" src="/ui/records/{c.uuid}/audio">' in html
        assert "No recording" not in html
        status, ctype, body = await get(f"{base}/records/{c.uuid}/audio", auth)
        assert status == 200 and ctype == "audio/wav" and body[:4] == b"RIFF"
        status, _, _ = await get(f"{base}/records/{c.uuid}/audio")
        assert status in (401, 403) or status == 302
    finally:
        await runner.cleanup()


# -- the recorder on its own: long calls, crashes, retention -------------------------------------


class Clock:
    """A monotonic clock the test advances (a 30-minute call in a second of CPU)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def header_sizes(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:44]
    return struct.unpack_from("<I", head, 4)[0], struct.unpack_from("<I", head, 40)[0]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def _wait_size(path: Path, size: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _size(path) >= size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never reached {size} bytes")


async def test_a_30_minute_call_is_written_as_it_goes(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "long.wav"
    rec = CallRecorder(path, "long.wav", 8000, clock=clock)
    write = rec.wrap_write(lambda data: None, 8000)
    speech = audio.tone(20, TTS_HZ, 8000)
    caller = audio.tone(20, CALLER_HZ, 8000)
    frames = 30 * 60 * 50
    most_buffered = 0
    for i in range(frames):
        clock.t += 0.02
        rec.caller(caller if i % 100 < 20 else bytes(320))
        if i % 200 < 50:  # the agent talks 1 s in every 4 s, then is idle (nothing sent)
            write(b"\x10\x01\x40" + speech)
        if i % 500 == 0:
            await asyncio.sleep(0)  # let the loop run the flushes the agent side scheduled
        most_buffered = max(most_buffered, len(rec._c), len(rec._a))
    assert most_buffered <= 3 * 16000  # never more than ~3 s of audio in memory
    await rec.close()
    data_bytes = frames * FRAME * 4
    assert path.stat().st_size == 44 + data_bytes
    assert header_sizes(path) == (36 + data_bytes, data_bytes)
    caller_ch, agent_ch, w = read_stereo(path)
    assert w.getnframes() == frames * FRAME
    a_loud = loud(agent_ch)
    # the agent's words are where they were sent, at the end of the call as at the start
    assert a_loud[:50].all() and not a_loud[52:199].any()
    # (a frame sent at t plays from t: one frame after the caller frame that arrived at t)
    assert a_loud[frames - 199 : frames - 149].all() and not a_loud[frames - 147 :].any()
    assert int(loud(caller_ch).sum()) == frames // 100 * 20
    assert rec.info() == {"path": "long.wav", "duration_s": frames * 0.02, "sample_rate": 8000,
                          "channels": 2, "layout": "left=caller,right=agent"}


async def test_a_killed_process_leaves_a_playable_file(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / f"{uuidlib.uuid4()}.wav"
    rec = CallRecorder(path, path.name, 8000, clock=clock)
    for _ in range(175):  # 3.5 s of caller audio, then the process "dies" (no close)
        clock.t += 0.02
        rec.caller(audio.tone(20, CALLER_HZ, 8000))
    await _wait_size(path, 44 + 16000 * 4)  # handed to the disk about once a second
    await asyncio.sleep(0.05)
    # the header is kept up to date as the file grows: already playable
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getnframes() >= 16000
    # killed between an append and its header update: repair fixes the sizes from the length
    _append(path, bytes(4 * 800 + 3))  # 100 ms more, and a torn sample
    size = _size(path)
    assert repair_wav(path)
    data = (size - 44) // 4 * 4
    assert header_sizes(path) == (36 + data, data)
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == data // 4
    assert not repair_wav(path)  # idempotent
    rec.stop()  # (tidy: the writer thread closes the file)


def test_retention_deletes_old_recordings_only(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    old, new = folder / f"{uuidlib.uuid4()}.wav", folder / f"{uuidlib.uuid4()}.wav"
    for p in (old, new):
        p.write_bytes(recording.wav_header(8000, 0))
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert sweep(folder, 0) == (0, 0)  # 0 = keep forever
    assert sweep(folder, 7) == (1, 0)
    assert not old.exists() and new.exists()


def test_serve_options_come_from_flags_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWAGENT_RECORD_AUDIO", raising=False)
    monkeypatch.delenv("FLOWAGENT_RECORDING_RETENTION_DAYS", raising=False)
    assert recording.serve_options(None, None) == (False, 0.0)
    monkeypatch.setenv("FLOWAGENT_RECORD_AUDIO", "1")
    monkeypatch.setenv("FLOWAGENT_RECORDING_RETENTION_DAYS", "30")
    assert recording.serve_options(None, None) == (True, 30.0)
    assert recording.serve_options(False, 7) == (False, 7.0)
    monkeypatch.setenv("FLOWAGENT_RECORD_AUDIO", "maybe")
    with pytest.raises(ValueError, match="FLOWAGENT_RECORD_AUDIO"):
        recording.serve_options(None, None)


# -- speech to speech --------------------------------------------------------------------------


async def test_speech_to_speech_calls_are_recorded_too(tmp_path: Path) -> None:
    """An STS flow (the OpenAI Realtime fake over its wire protocol) records the same way:
    the model's audio as sent to the caller on the right, the caller on the left."""
    from providers.fakes import FakeOpenAIRealtime

    from flowagent.asterisk.caller import AudioSocketCaller
    from flowagent.server.audiosocket_server import AudioSocketServer
    from flowagent.server.runtime import FlowSet, ProviderPool, Runtime
    from flowagent.server.store_sqlite import SqliteStore
    from flowagent.server.webhooks import WebhookConfig, Webhooks

    flow = STS_FLOW
    script: list[Any] = ["Hello, you're through to Swift Removals. How can I help?",
                         "Of course."]
    async with FakeOpenAIRealtime(script, user_transcripts=["a quote please"],
                                  turns="energy") as fake:
        overrides = {"sts": {"name": "openai-realtime",
                             "options": {"api_key": fake.api_key, "url": fake.url}}}
        flows = FlowSet(ProviderPool(), overrides)
        flows.load(flow)
        store = SqliteStore(tmp_path / "calls.db")
        rt = Runtime(flows, store, config=RuntimeConfig(record_audio=True),
                     webhooks=Webhooks(WebhookConfig(url="")))
        server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
        await server.start()
        try:
            c = AudioSocketCaller("127.0.0.1", server.address[1])
            await c.connect()
            assert await c.wait_agent_quiet(0.3, timeout_s=10)
            await c.say_audio(audio.tone(400, CALLER_HZ, 8000, amplitude=0.4))
            assert await c.wait_agent_quiet(0.3, timeout_s=10, after=time.monotonic())
            await c.hangup()
            deadline = time.monotonic() + 10
            rec = None
            while (rec is None or rec.get("live")) and time.monotonic() < deadline:
                rec = await store.get(c.uuid)
                await asyncio.sleep(0.05)
        finally:
            await server.close()
            await store.close()
    assert rec is not None and rec["recording"]["path"] == f"recordings/{c.uuid}.wav"
    caller, agent, w = read_stereo(tmp_path / rec["recording"]["path"])
    assert w.getnchannels() == 2
    a_loud = loud(agent)
    assert a_loud.sum() > 10
    assert abs(int(a_loud.sum()) - c.agent_speech_frames) <= 2
    tone = runs(loud(caller))
    assert len(tone) == 1 and 18 <= tone[0][1] - tone[0][0] <= 21
