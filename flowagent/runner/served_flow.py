"""A flow ready to serve: compiled, with its providers and its prompt-audio cache.

Why here (the call runner) and not in the server: a call reads its flow entry on every turn —
the compiled flow, the provider instances, the static prompt audio — while the server only builds
entries (`server.runtime.FlowSet`) and swaps them on reload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flowagent.providers.base import AsrProvider, LlmProvider, StsProvider, TtsProvider, VadProvider

if TYPE_CHECKING:
    from flowagent.flow.compiler import CompiledFlow, Template
    from flowagent.runner.prompt_cache import PromptDiskCache, WarmStats

log = logging.getLogger(__name__)


@dataclass
class Providers:
    """The provider instances one flow uses (shared with every flow naming the same ones)."""

    asr: AsrProvider | None
    tts: TtsProvider | None
    vad: VadProvider | None
    llm: LlmProvider | None = None
    names: dict[str, str] = field(default_factory=dict)
    #: speech-to-speech provider; when set, calls run as `runner.sts_call.StsCall`
    sts: StsProvider | None = None


@dataclass
class FlowEntry:
    """A loaded flow ready to serve (compiled + its providers + its prompt-audio cache)."""

    path: Path
    compiled: CompiledFlow
    providers: Providers
    mtime: float
    #: static prompt audio in memory, by `prompt_cache.memory_key(voice, rate, text)`
    prompt_cache: dict[tuple[str, int, str], bytes] = field(default_factory=dict)
    #: persistent prompt audio shared by the FlowSet (None: memory only, e.g. in tests)
    disk_cache: PromptDiskCache | None = None
    #: what decides the sound of this flow's TTS (provider, sound options, voice, model file)
    tts_identity: str = ""
    #: what the last `prewarm` did, for the start-up summary
    warm_stats: WarmStats | None = None
    _warm_lock: asyncio.Lock | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.compiled.name

    def static_prompts(self) -> list[str]:
        """Every text of this flow that never changes (no template variables): what the
        prompt-audio cache can hold before the first call."""
        texts: list[str] = []
        c = self.compiled

        def add(t: Template | None) -> None:
            if t is not None and t.static and t.source.strip():
                texts.append(t.source)

        for st in c.states.values():
            for t in (st.say, st.ask, st.reprompt, st.confirm):
                add(t)
            for h in st.handlers.values():
                add(h.say)
        for slot in c.slots.values():
            add(slot.prompt)
            add(slot.reprompt)
            add(slot.invalid)
        return list(dict.fromkeys(texts))

    async def prewarm(self, sample_rate: int = 8000, *,
                      on_progress: Callable[[WarmStats], None] | None = None) -> int:
        """Fill the prompt-audio cache with the static prompts (from the disk cache when it has
        them, else synthesised and written there), so entering a `say` state starts audio at
        once even on the first call. Returns how many prompts were added to memory. Two warm-ups
        of one entry (serve's and the server's background one) run one after the other."""
        from flowagent.runner.prompt_cache import WarmStats, warm_prompts

        tts = self.providers.tts
        if tts is None:
            self.warm_stats = WarmStats()
            return 0
        if self._warm_lock is None:
            self._warm_lock = asyncio.Lock()
        async with self._warm_lock:
            stats = await warm_prompts(
                self.static_prompts(), tts, self.prompt_cache,
                identity=self.tts_identity or tts.voice_id,
                disk=self.disk_cache, sample_rate=sample_rate, on_progress=on_progress,
            )
        self.warm_stats = stats
        log.info("%s: %s", self.name, stats.describe())
        return stats.from_disk + stats.synthesised
