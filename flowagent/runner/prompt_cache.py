"""Static prompt audio that survives restarts: a content-addressed WAV cache on disk.

Why: with the offline stack, synthesising a flow's ~30 static prompts with Piper took 20-35 s
on 2 cores, and `flowagent serve` refuses calls until they are ready (so the first caller hears
cached prompts). Operators restart and reload often; the audio of an unchanged prompt never
changes, so it is made once and read back from disk (a few ms for a whole flow).

Key: SHA-256 of everything that changes the sound — the cache format version, the TTS provider
name, its options that affect sound (timeouts, threads and credentials are left out), its
`voice_id`, the identity of its model file (path, size, mtime) when it has one, the output sample
rate and the exact prompt text. Value: a mono 16-bit WAV file at that rate, named `<key>.wav`.

Safety: entries are written to a temporary file, fsynced and renamed into place, so a crash or
a second process writing the same key never leaves a truncated entry; an entry that cannot be
read or does not match its header is deleted, logged as a warning and synthesised again. Size
is capped: least recently used entries (by mtime, which a read refreshes) are deleted first.
Several processes may share one directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import time
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowagent.fsutil import write_atomically
from flowagent.providers.base import TtsProvider

log = logging.getLogger(__name__)

#: bump when the key recipe or the file format changes: old entries are then never read again
#: (and age out through eviction)
CACHE_FORMAT_VERSION = 1
DEFAULT_MAX_MB = 256.0
#: prompts warmed at once; a provider may lower it with a `max_concurrency` attribute. Cloud
#: TTS gets real parallelism. Piper queues them on its one synthesis thread (one synthesis with
#: 2 intra-op threads already fills both cores; a second worker would not be faster and would
#: compete with Whisper during calls), so for it this only overlaps disk writes with synthesis.
DEFAULT_CONCURRENCY = 4
#: temporary files older than this are leftovers of a crashed writer
_STALE_TMP_S = 600.0
_TMP_PREFIX = ".tmp-"

#: provider options that never change the sound (latency, threads, credentials, failure tests)
_NOT_SOUND_EXACT = {"threads", "fail", "fail_after", "first_audio_ms", "first_audio_ms_max"}
_NOT_SOUND_PARTS = ("timeout", "api_key", "secret", "token", "password", "latency")


def sound_options(options: dict[str, Any]) -> dict[str, Any]:
    """The provider options that can change the audio (the rest must not invalidate the cache,
    and secrets must not be part of anything written to disk)."""
    return {
        k: v for k, v in sorted(options.items())
        if k not in _NOT_SOUND_EXACT and not any(p in k.lower() for p in _NOT_SOUND_PARTS)
    }


def _model_identity(tts: TtsProvider) -> list[Any]:
    path = tts.capabilities.model_file
    if not path:
        return []
    try:
        st = Path(path).stat()
    except OSError:
        return [str(path)]
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def tts_identity(tts: TtsProvider, name: str, options: dict[str, Any]) -> str:
    """Everything about a TTS provider instance that decides how a text sounds."""
    return json.dumps(
        [CACHE_FORMAT_VERSION, name, sound_options(options), tts.voice_id,
         _model_identity(tts)],
        sort_keys=True, default=str,
    )


def memory_key(voice_id: str, sample_rate: int, text: str) -> tuple[str, int, str]:
    """The key of a prompt's audio in a flow's in-memory cache (calls and the warm-up both use
    it, so a prompt warmed at start-up is found by the first call)."""
    return (voice_id, sample_rate, text)


def prompt_key(identity: str, sample_rate: int, text: str) -> str:
    """The file name (without .wav) of one prompt's audio."""
    h = hashlib.sha256()
    h.update(identity.encode("utf-8"))
    h.update(f"\0{int(sample_rate)}\0".encode())
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def _wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


class CorruptEntry(Exception):
    """A cache file that is not the WAV it should be."""


def _read_wav(path: Path, sample_rate: int) -> bytes:
    data = path.read_bytes()
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, sample_rate):
                raise CorruptEntry(f"unexpected format {w.getparams()}")
            frames = w.getnframes()
            pcm = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise CorruptEntry(str(exc) or type(exc).__name__) from exc
    if len(pcm) != frames * 2 or not pcm:
        raise CorruptEntry(f"{len(pcm)} bytes of audio where the header says {frames * 2}")
    return pcm


class PromptDiskCache:
    """One directory of `<key>.wav` files, capped at `max_bytes`. Methods are blocking (file
    I/O): call them from a thread (`warm_entry` does)."""

    def __init__(self, directory: Path | str, max_bytes: int = int(DEFAULT_MAX_MB * 2**20)) -> None:
        self.dir = Path(directory)
        self.max_bytes = max(0, int(max_bytes))
        self._warned_write = False

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.wav"

    def load(self, key: str, sample_rate: int) -> bytes | None:
        """The cached audio, or None (absent, or unreadable: then deleted with a warning)."""
        path = self.path(key)
        try:
            pcm = _read_wav(path, sample_rate)
        except FileNotFoundError:
            return None
        except (OSError, CorruptEntry) as exc:
            log.warning("prompt cache entry %s is unreadable (%s); synthesising it again",
                        path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):  # recently used: evicted last
            os.utime(path)
        return pcm

    def store(self, key: str, sample_rate: int, pcm: bytes) -> bool:
        """Write atomically (temp file, fsync, rename). A full or read-only disk is logged once
        and otherwise ignored: the cache is an optimisation, never a reason to fail."""
        if not pcm or self.max_bytes == 0:
            return False
        data = _wav_bytes(pcm, sample_rate)
        try:
            write_atomically(self.path(key), lambda f: f.write(data), tmp_prefix=_TMP_PREFIX)
            return True
        except OSError as exc:
            if not self._warned_write:
                self._warned_write = True
                log.warning("cannot write the prompt cache in %s (%s); prompts will be"
                            " synthesised again at the next start", self.dir, exc)
            return False

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, mtime) of every entry (temporary files excluded)."""
        out: list[tuple[Path, int, float]] = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            if not name.endswith(".wav") or name.startswith(_TMP_PREFIX):
                continue
            p = self.dir / name
            try:
                st = p.stat()
            except OSError:  # deleted meanwhile by another process
                continue
            out.append((p, st.st_size, st.st_mtime))
        return out

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: Iterable[str] = ()) -> int:
        """Delete least recently used entries until the total is under the cap (entries in
        `keep`, the ones just used, go last), and leftovers of crashed writers. Returns the
        number of entries deleted."""
        now = time.time()
        with contextlib.suppress(OSError):
            for name in os.listdir(self.dir):
                if name.startswith(_TMP_PREFIX):
                    p = self.dir / name
                    with contextlib.suppress(OSError):
                        if now - p.stat().st_mtime > _STALE_TMP_S:
                            p.unlink()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return 0
        kept = {f"{k}.wav" for k in keep}
        entries.sort(key=lambda e: (e[0].name in kept, e[2]))
        removed = 0
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
            removed += 1
        if removed:
            log.info("prompt cache: %d least recently used entries deleted (cap %.0f MB)",
                     removed, self.max_bytes / 2**20)
        return removed


@dataclass
class WarmStats:
    """What one warm-up did (shown in the start-up summary)."""

    prompts: int = 0
    from_memory: int = 0
    from_disk: int = 0
    synthesised: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.from_memory + self.from_disk + self.synthesised + self.failed

    def add(self, other: WarmStats) -> None:
        self.prompts += other.prompts
        self.from_memory += other.from_memory
        self.from_disk += other.from_disk
        self.synthesised += other.synthesised
        self.failed += other.failed
        self.seconds += other.seconds

    def describe(self) -> str:
        parts = [f"{self.from_disk} from disk", f"{self.synthesised} synthesised"]
        if self.from_memory:
            parts.insert(0, f"{self.from_memory} already in memory")
        if self.failed:
            parts.append(f"{self.failed} failed (made on first use)")
        if self.prompts > self.done:
            parts.append(f"{self.prompts - self.done} still being made in the background")
        took = f"{self.seconds:.2f}" if self.seconds < 10 else f"{self.seconds:.0f}"
        return f"{self.prompts} prompts ({', '.join(parts)}) in {took} s"


Progress = Callable[[WarmStats], None]


async def warm_prompts(
    texts: list[str],
    tts: TtsProvider,
    memory: dict[tuple[str, int, str], bytes],
    *,
    identity: str,
    disk: PromptDiskCache | None,
    sample_rate: int = 8000,
    concurrency: int | None = None,
    on_progress: Progress | None = None,
) -> WarmStats:
    """Put the audio of every text in `memory` (the session's key: voice_id, rate, text): from
    memory, else from disk, else synthesised (and written to disk). Failures are counted and
    left for the call that needs the prompt."""
    started = time.monotonic()
    stats = WarmStats(prompts=len(texts))
    voice = tts.voice_id

    def progress() -> None:
        stats.seconds = time.monotonic() - started
        if on_progress is not None:
            on_progress(stats)

    todo: list[str] = []
    in_memory: dict[str, bytes] = {}
    for text in texts:
        pcm = memory.get(memory_key(voice, sample_rate, text))
        if pcm is not None:
            stats.from_memory += 1
            in_memory[prompt_key(identity, sample_rate, text)] = pcm
        else:
            todo.append(text)
    if disk is not None and in_memory:
        # made by a call before this warm-up reached it (--warm background): keep it for the
        # next start too
        await asyncio.to_thread(_store_missing, disk, in_memory, sample_rate)
    keys = {t: prompt_key(identity, sample_rate, t) for t in todo}
    if disk is not None and todo:
        found = await asyncio.to_thread(
            lambda: {t: disk.load(keys[t], sample_rate) for t in todo})
        missing = []
        for t in todo:
            pcm = found.get(t)
            if pcm is None:
                missing.append(t)
            else:
                memory.setdefault(memory_key(voice, sample_rate, t), pcm)
                stats.from_disk += 1
        todo = missing
    progress()

    limit = max(1, int(concurrency or tts.capabilities.max_concurrency or DEFAULT_CONCURRENCY))
    gate = asyncio.Semaphore(limit)

    async def one(text: str) -> None:
        async with gate:
            try:
                pcm = b"".join([c async for c in tts.synthesize(text, sample_rate)])
            except Exception as exc:  # a prompt that fails now is tried again on a call
                log.warning("could not synthesise the prompt %r now: %s", text[:60], exc)
                stats.failed += 1
                progress()
                return
            memory.setdefault(memory_key(voice, sample_rate, text), pcm)
            stats.synthesised += 1
            progress()
            if disk is not None:
                await asyncio.to_thread(disk.store, keys[text], sample_rate, pcm)

    if todo:
        await asyncio.gather(*(one(t) for t in todo))
    if disk is not None:  # also after a lowered cap; one directory scan (~ms)
        used = [prompt_key(identity, sample_rate, t) for t in texts]
        await asyncio.to_thread(disk.evict, used)
    progress()
    return stats


def _store_missing(disk: PromptDiskCache, audio: dict[str, bytes], sample_rate: int) -> None:
    for key, pcm in audio.items():
        if not disk.path(key).exists():
            disk.store(key, sample_rate, pcm)


def cache_from_settings(
    directory: str | Path | None, max_mb: float | None
) -> PromptDiskCache | None:
    """The disk cache serve uses: None when `directory` is empty or "off"."""
    if directory is None or str(directory).strip().lower() in ("", "off", "none", "0"):
        return None
    mb = DEFAULT_MAX_MB if max_mb is None else float(max_mb)
    return PromptDiskCache(Path(directory).expanduser(), int(mb * 2**20))
