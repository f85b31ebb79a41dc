"""Silero VAD + the call's turn rule (runner/turn_taking.py) on phone-quality speech with noise:
speech is found, noise alone is not, the end of the turn comes after the caller stops, barge-in
needs a clearer and longer signal while we play; batching many calls gives the same numbers as
one call alone."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from localhelpers import frames, to_float, to_pcm

from flowagent.providers.base import ProviderError
from flowagent.providers.local.linesim import active_rms, add_noise, noise, telephone_band
from flowagent.providers.local.silero import SileroVad
from flowagent.providers.local.webrtcvad import WebrtcVad
from flowagent.runner.turn_taking import TurnRules, TurnSignal, TurnTaker

#: a strict barge-in rule (as a flow with `barge_in: {min_speech_ms: 300, sensitivity: 0.4}`
#: and silero's `neg_threshold: 0.35`, `min_speech_ms: 200` would give)
RULES = TurnRules(threshold=0.5, neg_threshold=0.35, turn_start_ms=200, end_of_turn_ms=600,
                  barge_in_threshold=0.8, barge_in_min_ms=300)


async def events(vad: Any, x: np.ndarray, *, playing: bool = False,
                 rules: TurnRules | None = None) -> list[tuple[str, float]]:
    """Run a clip through the VAD and the turn rule as a call does: a barge-in opens the
    caller's turn and stops our audio (so the rest is heard with the ordinary rule)."""
    stream = vad.open_stream(8000)
    taker = TurnTaker(rules or RULES)
    out = []
    for i, frame in enumerate(frames(to_pcm(x))):
        signal = taker.update(await stream.probability(frame), 20, playing)
        if signal is None:
            continue
        if signal is TurnSignal.END_OF_TURN:
            taker.end()
        else:
            taker.begin()
            playing = False
        out.append((signal.value, (i + 1) * 0.02))
    return out


@pytest.mark.parametrize("snr_db", [10, 0])
async def test_turns_found_in_noise_and_noise_alone_is_silent(silero: Any, speech_set: list,
                                                              snr_db: float) -> None:
    rng = np.random.default_rng(11)
    for entry in speech_set[:6]:
        x = np.concatenate([to_float(entry["pcm"]), np.zeros(8000, np.float32)])
        ev = await events(silero, add_noise(x, 8000, snr_db, rng))
        assert [e for e, _ in ev] == ["speech_start", "end_of_turn"], (entry["file"], ev)
        start, end = ev[0][1], ev[1][1]
        assert entry["speech_start_s"] < start < entry["speech_end_s"]
        # end of turn: after the caller stopped: 600 ms of silence + model lag (more in noise)
        assert entry["speech_end_s"] + 0.5 < end < entry["speech_end_s"] + 1.5, (entry, ev)
        level = active_rms(x, 8000) * 10 ** (-snr_db / 20)
        only_noise = telephone_band(noise(x.size, rng), 8000)
        only_noise *= level / np.sqrt(np.mean(only_noise**2))
        assert await events(silero, only_noise) == [], entry["file"]


async def test_barge_in_needs_more_speech_while_playing(silero: Any, speech_set: list) -> None:
    entry = speech_set[0]
    x = to_float(entry["pcm"])
    start = int(entry["speech_start_s"] * 8000)
    rng = np.random.default_rng(5)

    def burst(ms: int) -> np.ndarray:
        snippet = np.concatenate([np.zeros(4000, np.float32), x[start : start + ms * 8],
                                  np.zeros(8000, np.float32)])
        return add_noise(snippet, 8000, 20, rng, level_rms=active_rms(x, 8000))

    # a short burst ("mm", a cough) opens a turn when we are quiet ...
    assert [e for e, _ in await events(silero, burst(250))][:1] == ["speech_start"]
    # ... but does not interrupt our audio ...
    assert await events(silero, burst(250), playing=True) == []
    # ... while the caller really talking over us does
    ev = await events(silero, add_noise(x, 8000, 10, rng), playing=True)
    assert ev[0][0] == "barge_in"
    # and the rule is configurable: a lenient one lets the short burst through
    lenient = TurnRules(barge_in_threshold=0.5, barge_in_min_ms=100)
    assert [e for e, _ in await events(silero, burst(250), playing=True, rules=lenient)][:1] == [
        "barge_in"]


async def test_batched_probabilities_equal_unbatched(speech_set: list) -> None:
    clips = [e["pcm"] for e in speech_set[:8]]
    alone = SileroVad(batch_ms=0)  # every window on its own
    expected = []
    for pcm in clips:
        s = alone.open_stream(8000)
        expected.append([p for f in frames(pcm) for p in await s.probabilities(f)])

    batched = SileroVad(batch_ms=5)
    model = batched.model
    windows0, batches0 = model.windows_run, model.batches_run

    async def run(pcm: bytes) -> list[float]:
        s = batched.open_stream(8000)
        out = []
        for f in frames(pcm):
            out.extend(await s.probabilities(f))
        return out

    got = await asyncio.gather(*(run(pcm) for pcm in clips))
    windows = model.windows_run - windows0
    batches = model.batches_run - batches0
    assert windows / batches > 4  # the 8 calls really shared inferences
    for g, e in zip(got, expected, strict=True):
        assert len(g) == len(e)
        np.testing.assert_allclose(g, e, atol=1e-5)


async def test_probability_accepts_any_length(silero: Any, speech_set: list) -> None:
    pcm = speech_set[0]["pcm"]
    s = silero.open_stream(8000)
    odd = [pcm[i : i + 222] for i in range(0, len(pcm) - 222, 222)]  # 13.9 ms pieces
    probs = [await s.probability(p) for p in odd]
    assert max(probs) > 0.9 and min(probs) < 0.2
    whole = silero.open_stream(8000)
    assert await whole.probability(pcm) > 0.9  # a whole clip at once: its loudest window


async def test_wideband_calls_are_resampled(silero: Any, speech_set: list) -> None:
    import soxr

    entry = speech_set[0]
    pcm48 = to_pcm(soxr.resample(to_float(entry["pcm"]), 8000, 48000))
    s = silero.open_stream(48000)  # AudioSocket 0x18 calls
    probs = [await s.probability(f) for f in frames(pcm48, 48000)]
    assert max(probs) > 0.9 and probs[5] < 0.2  # speech found, the leading quiet is not speech
    with pytest.raises(ProviderError, match="cannot use audio"):
        silero.open_stream(4000)


def test_silero_options_set_the_calls_turn_rule() -> None:
    """Options a flow gives the silero provider override its settings in the rule its calls
    use; options it does not give leave the flow's settings in charge."""
    from flowagent.flow.compiler import Settings
    from flowagent.providers import registry

    settings = Settings(end_of_turn_ms=800, barge_in_min_speech_ms=200)
    vad = registry.create("vad", "silero", {"barge_in_threshold": 0.9, "barge_in_min_ms": 500,
                                            "min_silence_ms": 700})
    rules = TurnRules.for_flow(settings, vad.turn_tuning)
    assert (rules.barge_in_threshold, rules.barge_in_min_ms, rules.end_of_turn_ms) == (
        0.9, 500, 700)
    plain = TurnRules.for_flow(settings, registry.create("vad", "silero", {}).turn_tuning)
    assert (plain.barge_in_min_ms, plain.end_of_turn_ms, plain.threshold) == (200, 800, 0.5)


async def test_webrtc_gate_tells_speech_from_silence(speech_set: list) -> None:
    entry = speech_set[0]
    x = to_float(entry["pcm"])
    s = WebrtcVad(2).open_stream(8000)
    a, b = int(entry["speech_start_s"] * 8000), int(entry["speech_end_s"] * 8000)
    speech = await s.probability(to_pcm(x[a + 1600 : b - 1600]))
    s.reset()
    quiet = await s.probability(b"\0" * 8000)
    assert speech > 0.6 and quiet == 0.0


async def test_silence_gate_skips_the_model_on_a_quiet_line_and_finds_the_same_turns(
        speech_set: list) -> None:
    """A quiet line (-70 dBFS noise) costs no inference, and the caller's turn is found at the
    same moments as with the model running on every window."""
    rng = np.random.default_rng(3)
    entry = speech_set[1]
    x = to_float(entry["pcm"])
    line = telephone_band(noise(8000 * 3 + x.size, rng), 8000)
    line *= 10 ** (-70 / 20) / np.sqrt(np.mean(line**2))
    call = line.copy()
    call[8000 : 8000 + x.size] += x  # 1 s of quiet line, the caller, 2 s of quiet line

    gated, ungated = SileroVad(batch_ms=0), SileroVad(batch_ms=0, silence_gate_dbfs=None)
    before, spared = gated.model.windows_run, gated.model.windows_gated
    quiet_only = await events(gated, line[:8000 * 2])
    assert quiet_only == []
    assert gated.model.windows_run == before  # 62 windows of quiet line: no inference at all
    assert gated.model.windows_gated - spared == 8000 * 2 // 256

    before = gated.model.windows_run
    with_gate = await events(gated, call)
    run_gated = gated.model.windows_run - before  # (the two share the process's one model)
    without = await events(ungated, call)
    assert [e for e, _ in with_gate] == [e for e, _ in without] == ["speech_start", "end_of_turn"]
    for (_, a), (_, b) in zip(with_gate, without, strict=True):
        # measured: the gate is 20-40 ms *earlier* (the model state was not walked through the
        # quiet line); never more than a frame later
        assert -0.061 <= a - b <= 0.021, (with_gate, without)
    windows = (call.size // 256)
    assert run_gated < windows * 0.6  # the quiet 3 s were skipped


async def test_silence_gate_never_hides_a_noisy_line_or_quiet_speech(speech_set: list) -> None:
    rng = np.random.default_rng(4)
    x = to_float(speech_set[2]["pcm"])
    quiet_caller = x * (10 ** (-45 / 20) / active_rms(x, 8000))  # a very quiet talker, -45 dBFS
    vad = SileroVad(batch_ms=0)
    assert [e for e, _ in await events(vad, quiet_caller)][:1] == ["speech_start"]
    # a noisy line (-40 dBFS) is above the gate: the model runs on every window
    loud = telephone_band(noise(8000, rng), 8000)
    loud *= 10 ** (-40 / 20) / np.sqrt(np.mean(loud**2))
    before = vad.model.windows_run
    await events(vad, loud)
    assert vad.model.windows_run - before == 8000 // 256


def test_silence_gate_option() -> None:
    from flowagent.providers import registry

    assert registry.create("vad", "silero", {}).gate_power == pytest.approx(1e-6)  # -60 dBFS
    assert registry.create("vad", "silero", {"silence_gate_dbfs": -50}).gate_power == \
        pytest.approx(1e-5)
    assert registry.create("vad", "silero", {"silence_gate_dbfs": "off"}).gate_power is None
    assert registry.create("vad", "silero", {"silence_gate_dbfs": False}).gate_power is None
    with pytest.raises(ProviderError, match="between -120 and 0"):
        registry.create("vad", "silero", {"silence_gate_dbfs": 6})


async def test_frames_fed_without_waiting_keep_each_calls_model_state_in_order(
        speech_set: list) -> None:
    """What the call session does: every frame goes in the moment it arrives (`feed`), without
    waiting for earlier windows, and results come back through the listener. A call's windows
    must still go through the model one after another, each with the state its predecessor
    left: the same numbers, in the same order, as awaiting each frame."""
    clips = [e["pcm"] for e in speech_set[:4]]
    awaited = []
    for pcm in clips:
        s = SileroVad(batch_ms=0, silence_gate_dbfs=None).open_stream(8000)
        awaited.append([await s.probability(f) for f in frames(pcm)])

    vad = SileroVad(batch_ms=2, silence_gate_dbfs=None, max_lag_ms=60_000)
    streams = [vad.open_stream(8000) for _ in clips]
    got: list[list[tuple[float, int]]] = [[] for _ in clips]
    for k, st in enumerate(streams):
        st.listener = lambda p, tag, k=k: got[k].append((p, tag))
    for i in range(max(len(frames(p)) for p in clips)):  # the calls' frames interleaved
        for k, pcm in enumerate(clips):
            fr = frames(pcm)
            if i < len(fr):
                streams[k].feed(fr[i], i)
    assert len(got[0]) < 10  # nothing was waited for while feeding: results still to come
    for _ in range(500):
        if all(len(g) == len(frames(c)) for g, c in zip(got, clips, strict=True)):
            break
        await asyncio.sleep(0.01)
    for g, e in zip(got, awaited, strict=True):
        assert [tag for _, tag in g] == list(range(len(e)))  # every frame, in order
        np.testing.assert_allclose([p for p, _ in g], e, atol=1e-5)


async def test_feed_answers_at_once_without_the_model(speech_set: list) -> None:
    vad = SileroVad(batch_ms=0)
    s = vad.open_stream(8000)
    heard: list[tuple[float, str]] = []
    s.listener = lambda p, tag: heard.append((p, tag))
    s.feed(b"\0" * 320, "a")  # completes no window yet
    s.feed(b"\0" * 320, "b")  # completes a silent window: the gate answers
    assert heard == [(0.0, "a"), (0.0, "b")]
    speech = to_float(speech_set[0]["pcm"])
    loud = to_pcm(speech[int(speech_set[0]["speech_start_s"] * 8000):][:2560])
    s.feed(loud[:640], "c")  # a window for the model
    s.feed(b"", "d")  # no new window: answered with "c"'s window, after it
    assert heard[2:] == []
    for _ in range(200):
        if len(heard) == 4:
            break
        await asyncio.sleep(0.01)
    assert [t for _, t in heard] == ["a", "b", "c", "d"]
    assert heard[2][0] == heard[3][0] == s.last


async def test_a_call_too_far_behind_the_model_sheds_windows_instead_of_queueing(
        speech_set: list) -> None:
    """Overload: a call may have at most `max_lag_ms` of windows waiting for the model; newer
    windows get its latest value at once, so the backlog (and every turn's delay) is bounded."""
    vad = SileroVad(batch_ms=2, silence_gate_dbfs=None, max_lag_ms=320)  # 10 windows
    s = vad.open_stream(8000)
    heard: list[float] = []
    s.listener = lambda p, tag: heard.append(p)
    shed0, run0 = vad.model.windows_shed, vad.model.windows_run
    fr = frames(speech_set[0]["pcm"])
    for f in fr:  # ~3 s of audio at once
        s.feed(f)
    assert vad.model.windows_shed - shed0 >= 60
    for _ in range(300):
        if len(heard) == len(fr):
            break
        await asyncio.sleep(0.01)
    assert len(heard) == len(fr)  # every frame still answered
    assert vad.model.windows_run - run0 <= 10
    # caught up: the next window goes to the model again
    s.feed(to_pcm(to_float(speech_set[0]["pcm"])[8000:8000 + 256]))
    await asyncio.sleep(0.2)
    assert vad.model.windows_run - run0 == 11 and len(heard) == len(fr) + 1


async def test_feed_ms_gives_one_result_per_window_covering_every_frame(
        speech_set: list) -> None:
    """The session's way in: a result per 32 ms window, carrying the duration of the frames
    that completed it, so the turn-taking clock still adds up to the audio's length, and the
    probabilities are the windows' own."""
    pcm = speech_set[0]["pcm"]
    s = SileroVad(batch_ms=0, silence_gate_dbfs=None).open_stream(8000)
    expected = [p for f in frames(pcm) for p in await s.probabilities(f)]
    t = SileroVad(batch_ms=0, silence_gate_dbfs=None, max_lag_ms=60_000).open_stream(8000)
    got: list[tuple[float, int]] = []
    t.listener = lambda p, ms: got.append((p, ms))
    fr = frames(pcm)
    for f in fr:
        t.feed_ms(f, 20)
    for _ in range(300):
        if len(got) == len(expected):
            break
        await asyncio.sleep(0.01)
    assert len(got) == len(expected) == len(pcm) // 512
    np.testing.assert_allclose([p for p, _ in got], expected, atol=1e-5)
    assert {ms for _, ms in got} <= {20, 40}
    assert abs(sum(ms for _, ms in got) - 20 * len(fr)) <= 20  # the last frame may still wait


async def test_metrics_count_the_windows_run_gated_and_shed(speech_set: list) -> None:
    from flowagent.server.metrics import Metrics

    def counts() -> dict[str, int]:
        out = {}
        for line in Metrics().render().splitlines():
            if line.startswith("flowagent_vad_windows_total{"):
                out[line.split('"')[1]] = int(line.split()[-1])
        return out

    before = counts()
    vad = SileroVad(batch_ms=0)
    s = vad.open_stream(8000)
    await s.probability(b"\0" * 512 * 3)  # three silent windows: the gate
    await s.probability(to_pcm(to_float(speech_set[0]["pcm"])[8000:8000 + 512]))  # two: model
    after = counts()
    assert after["gated"] - before["gated"] == 3
    assert after["model"] - before["model"] == 2
    assert after["shed"] == before["shed"]


async def test_a_failing_model_reaches_the_call_as_an_error_not_a_hang(speech_set: list) -> None:
    """onnxruntime raising mid-call (out of memory, a corrupted session): every call with a
    window in that batch gets the error through `on_error` (the session then logs it, counts
    it and carries on without the VAD); nothing waits forever."""
    from flowagent.providers.local.silero import SileroModel

    class BrokenModel(SileroModel):
        def step(self, rows: Any, states: Any, sample_rate: int, slot: int = 0) -> Any:
            raise RuntimeError("onnxruntime: bad allocation")

    base = SileroModel.shared()
    broken = BrokenModel.__new__(BrokenModel)
    broken.__dict__.update(base.__dict__)  # same sessions; only `step` fails
    vad = SileroVad(batch_ms=0, silence_gate_dbfs=None, model=broken)
    errors: list[BaseException] = []
    heard: list[float] = []
    streams = [vad.open_stream(8000) for _ in range(3)]
    for s in streams:
        s.listener = lambda p, tag: heard.append(p)
        s.on_error = errors.append
    speech = to_pcm(to_float(speech_set[0]["pcm"])[8000:8000 + 2560])
    for s in streams:
        for f in frames(speech):
            s.feed_ms(f, 20)
    for _ in range(100):
        if len(errors) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(errors) >= 3 and all(isinstance(e, ProviderError) for e in errors)
    assert "bad allocation" in str(errors[0])
    assert heard == []  # no made-up probability was delivered
    with pytest.raises(ProviderError, match="inference failed"):
        await streams[0].probability(speech[:512])
