"""PCM helpers: resampling, WAV files, fades."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowagent import audio


def test_resample_changes_length_by_the_rate_ratio() -> None:
    pcm = audio.tone(1000, 440, 8000)
    up = audio.resample(pcm, 8000, 16000)
    assert abs(len(up) - 2 * len(pcm)) <= 8
    assert audio.resample(pcm, 8000, 8000) == pcm


def test_stream_resampler_matches_whole_buffer_without_seams() -> None:
    pcm = audio.tone(1000, 300, 16000)
    rs = audio.StreamResampler(16000, 8000)
    out = b"".join(rs.process(pcm[i : i + 333]) for i in range(0, len(pcm), 333))
    out += rs.process(b"", last=True)
    whole = audio.resample(pcm, 16000, 8000)
    assert abs(len(out) - len(whole)) <= 8
    a = audio.to_array(out)[200:-200].astype(float)
    assert np.max(np.abs(np.diff(a))) < 4000  # no clicks at chunk joins


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = audio.tone(200, 440, 16000)
    audio.write_wav(tmp_path / "a.wav", pcm, 16000)
    back, rate = audio.read_wav(tmp_path / "a.wav")
    assert rate == 16000 and back == pcm


def test_fade_ends_at_silence_and_tone_has_level() -> None:
    pcm = audio.tone(100, 440, 8000)
    assert audio.rms(pcm) > 0.1
    faded = audio.to_array(audio.fade(pcm, 8000))
    assert abs(int(faded[-1])) < 50
    assert audio.rms(audio.silence(20)) == 0.0
    assert audio.frame_bytes(8000) == 320
