"""Make the offline stack's test recordings: caller lines spoken by the local TTS, as a phone
line would carry them (8 kHz, 300-3400 Hz band, a little noise), plus their transcripts.

    /work/venv/bin/python bench/make_speech_data.py [--out tests/data/speech]

Reproducible (fixed seed and voice settings; Piper itself samples a little noise, so bytes differ
between runs, not words). The set
stays small (< 1 MB) because it is committed and used by tests/local and bench/bench_local.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flowagent.audio import write_wav
from flowagent.providers.local.linesim import add_noise, telephone_band
from flowagent.providers.local.piper import PiperTts

RATE = 8000

#: (file stem, transcript, piper length_scale (speed), SNR dB)
LINES: list[tuple[str, str, float, float]] = [
    ("book_removal", "I would like to book a removal for next Friday.", 1.0, 20),
    ("three_bedrooms", "It is a three bedroom house with a garden shed.", 1.1, 20),
    ("yes_right", "Yes, that is right.", 1.0, 25),
    ("no_thanks", "No thanks, that is everything.", 0.9, 20),
    ("piano", "We have a piano and two large sofas.", 1.0, 15),
    ("moving_leeds", "We are moving from Leeds to Manchester.", 1.05, 20),
    ("my_name", "My name is Sarah Jones.", 1.0, 20),
    ("saturday", "Actually, can we make that Saturday instead?", 0.95, 20),
    ("quote", "How much would that cost roughly?", 1.0, 15),
    ("speak_person", "Can I speak to a person please?", 1.0, 20),
    ("parking", "There is parking right outside the front door.", 1.1, 20),
    ("morning", "The morning would be best for us.", 1.0, 25),
]


def make(out: Path) -> list[dict[str, object]]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    entries = []
    voices: dict[float, PiperTts] = {}
    for stem, text, speed, snr in LINES:
        tts = voices.setdefault(speed, PiperTts(length_scale=speed, threads=2))
        pcm = tts.synthesize_blocking(text, RATE)
        speech = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0 * 0.5
        lead = np.zeros(int(RATE * rng.uniform(0.25, 0.45)), np.float32)
        tail = np.zeros(int(RATE * 0.4), np.float32)
        audio = telephone_band(np.concatenate([lead, speech, tail]), RATE)
        audio = add_noise(audio, RATE, snr, rng)
        write_wav(out / f"{stem}.wav", (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(),
                  RATE)
        entries.append({"file": f"{stem}.wav", "text": text, "snr_db": snr,
                        "speech_start_s": round(lead.size / RATE, 3),
                        "speech_end_s": round((lead.size + speech.size) / RATE, 3)})
    (out / "transcripts.json").write_text(json.dumps(entries, indent=1) + "\n", "utf-8")
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "tests/data/speech")
    args = parser.parse_args()
    entries = make(args.out)
    size = sum((args.out / e["file"]).stat().st_size for e in entries)  # type: ignore[operator]
    print(f"wrote {len(entries)} recordings, {size / 1024:.0f} KiB, to {args.out}")


if __name__ == "__main__":
    main()
