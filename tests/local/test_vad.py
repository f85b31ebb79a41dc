"""Silero VAD (+ turn rules) on phone-quality speech with noise: speech is found, noise alone
is not, the end of the turn comes after the caller stops, barge-in needs a clearer and longer
signal while we play; batching many calls gives the same numbers as one call alone."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from localhelpers import frames, to_float, to_pcm

from flowagent.providers.base import ProviderError
from flowagent.providers.local_linesim import active_rms, add_noise, noise, telephone_band
from flowagent.providers.local_silero import SileroVad
from flowagent.providers.local_turns import TurnDetector, VadRules
from flowagent.providers.local_webrtcvad import WebrtcVad


async def events(vad: Any, x: np.ndarray, *, playing: bool = False,
                 rules: VadRules | None = None) -> list[tuple[str, float]]:
    stream = vad.open_stream(8000)
    detector = TurnDetector(rules or VadRules())
    out = []
    for i, frame in enumerate(frames(to_pcm(x))):
        event = detector.update(await stream.probability(frame), 20, playing=playing)
        if event:
            out.append((event, (i + 1) * 0.02))
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
    lenient = VadRules(barge_in_threshold=0.5, barge_in_min_ms=100)
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


def test_registry_options_set_the_barge_in_rule() -> None:
    from flowagent.providers import registry

    vad = registry.create("vad", "silero", {"barge_in_threshold": 0.9, "barge_in_min_ms": 500,
                                            "min_silence_ms": 700})
    assert vad.rules.barge_in_threshold == 0.9
    assert vad.rules.barge_in_min_ms == 500
    assert vad.rules.min_silence_ms == 700


async def test_webrtc_gate_tells_speech_from_silence(speech_set: list) -> None:
    entry = speech_set[0]
    x = to_float(entry["pcm"])
    s = WebrtcVad(2).open_stream(8000)
    a, b = int(entry["speech_start_s"] * 8000), int(entry["speech_end_s"] * 8000)
    speech = await s.probability(to_pcm(x[a + 1600 : b - 1600]))
    s.reset()
    quiet = await s.probability(b"\0" * 8000)
    assert speech > 0.6 and quiet == 0.0
