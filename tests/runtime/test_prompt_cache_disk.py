"""The persistent prompt-audio cache: a restart reads static prompts from disk instead of
synthesising them, a changed prompt is the only one made again, broken entries heal, the size
cap holds and processes sharing the directory never leave a broken entry.

Synthesis is counted on a real provider: `CountingTts` is the fake TTS plus a counter,
registered under its own name so flows select it like any provider."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from flowagent.providers import registry
from flowagent.providers.fake import FakeTts
from flowagent.runner.prompt_cache import PromptDiskCache, prompt_key, tts_identity
from flowagent.server.runtime import FlowEntry, FlowSet, ProviderPool

ROOT = Path(__file__).resolve().parents[2]


class CountingTts(FakeTts):
    """The fake TTS, recording every text it is asked to synthesise (all instances)."""

    made: ClassVar[list[str]] = []

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> CountingTts:
        base = FakeTts.from_options(options)
        return cls(first_audio_ms=base.first_audio_ms, ms_per_word=base.ms_per_word,
                   tone_hz=base.tone_hz, fail=base.fail, name="counting")

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        CountingTts.made.append(text)
        async for chunk in super().synthesize(text, sample_rate):
            yield chunk


@pytest.fixture(autouse=True)
def counting_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    spec = registry.ProviderSpec(
        "tts", "counting", f"{__name__}:CountingTts",
        {"ms_per_word": "number", "tone_hz": "number", "first_audio_ms": "number",
         "fail": "boolean"}, "Fake TTS that counts syntheses (tests).")
    monkeypatch.setitem(registry._BY_KEY, ("tts", "counting"), spec)
    CountingTts.made.clear()
    yield
    CountingTts.made.clear()


FLOW = """\
flowagent: 1
name: Cache Test
language: en-GB
start: greet

providers:
  asr: {{name: fake}}
  tts: {{name: counting, options: {tts}}}
  vad: {{name: fake}}

states:
  greet:
    say: {greet}
    next: ask
  ask:
    ask: Which day suits you best?
    next: thanks
  thanks:
    say: "Thank you, {{{{ call.caller }}}}."
    next: bye
  bye:
    say: That is everything. Goodbye!
    end: true
    outcome: completed
"""
STATIC = ["Hello, this is the cache test.", "Which day suits you best?",
          "That is everything. Goodbye!"]


def write_flow(path: Path, *, greet: str = STATIC[0], tts: str = "{ms_per_word: 50}") -> Path:
    path.write_text(FLOW.format(greet=greet, tts=tts), encoding="utf-8")
    return path


def load(flow: Path, cache_dir: Path | None, max_bytes: int = 2**30) -> FlowSet:
    """What `flowagent serve` does at start-up, up to the prompt warm-up (a fresh process:
    new provider pool, empty memory)."""
    flows = FlowSet(ProviderPool())
    if cache_dir is not None:
        flows.prompt_disk = PromptDiskCache(cache_dir, max_bytes)
    flows.load(flow)
    return flows


async def start(flow: Path, cache_dir: Path | None, max_bytes: int = 2**30) -> FlowEntry:
    entry = load(flow, cache_dir, max_bytes).default
    assert entry is not None
    await entry.prewarm()
    return entry


async def test_second_start_reads_every_prompt_from_disk(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.yaml")
    cache = tmp_path / "prompt-cache"
    first = await start(flow, cache)
    assert sorted(CountingTts.made) == sorted(STATIC)
    assert first.warm_stats.synthesised == 3 and first.warm_stats.from_disk == 0
    assert len(list(cache.glob("*.wav"))) == 3

    CountingTts.made.clear()
    second = await start(flow, cache)
    assert CountingTts.made == []  # nothing synthesised on the second start
    assert second.warm_stats.from_disk == 3
    assert second.prompt_cache == first.prompt_cache  # the very same audio, keyed for calls
    voice = second.providers.tts.voice_id
    assert (voice, 8000, "Which day suits you best?") in second.prompt_cache


async def test_changed_prompt_text_is_the_only_one_synthesised_again(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.yaml")
    cache = tmp_path / "prompt-cache"
    await start(flow, cache)
    write_flow(flow, greet="Hello, this is the edited greeting.")
    CountingTts.made.clear()
    entry = await start(flow, cache)
    assert CountingTts.made == ["Hello, this is the edited greeting."]
    assert entry.warm_stats.from_disk == 2


async def test_reload_synthesises_only_the_changed_prompt_even_without_disk(
        tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.yaml")
    flows = load(flow, None)
    assert flows.default is not None
    await flows.default.prewarm()
    write_flow(flow, greet="Hello again, this flow was reloaded.")
    st = flow.stat()
    os.utime(flow, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a visibly newer file
    CountingTts.made.clear()
    assert any(m.startswith("reloaded") for m in flows.reload_changed())
    assert flows.default is not None
    await flows.default.prewarm()  # what the server does after a reload
    assert CountingTts.made == ["Hello again, this flow was reloaded."]


async def test_corrupt_entry_is_resynthesised_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = write_flow(tmp_path / "flow.yaml")
    cache = tmp_path / "prompt-cache"
    first = await start(flow, cache)
    files = sorted(cache.glob("*.wav"))
    files[0].write_bytes(files[0].read_bytes()[:50])  # truncated (e.g. copied by hand)
    files[1].write_bytes(b"not a wav file at all")
    CountingTts.made.clear()
    with caplog.at_level(logging.WARNING, logger="flowagent.runner.prompt_cache"):
        second = await start(flow, cache)
    assert len(CountingTts.made) == 2
    assert second.warm_stats.from_disk == 1 and second.warm_stats.synthesised == 2
    assert second.prompt_cache == first.prompt_cache
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2
    CountingTts.made.clear()
    await start(flow, cache)  # healed: the rewritten entries are good
    assert CountingTts.made == []


async def test_options_that_change_the_sound_change_the_key(tmp_path: Path) -> None:
    cache = tmp_path / "prompt-cache"
    await start(write_flow(tmp_path / "a.yaml", tts="{ms_per_word: 50}"), cache)
    CountingTts.made.clear()
    await start(write_flow(tmp_path / "b.yaml", tts="{ms_per_word: 50, tone_hz: 330}"), cache)
    assert sorted(CountingTts.made) == sorted(STATIC)  # another voice: its own entries
    CountingTts.made.clear()
    # latency is not sound: the same entries serve a slower provider
    await start(write_flow(tmp_path / "c.yaml", tts="{ms_per_word: 50, first_audio_ms: 5}"),
                cache)
    assert CountingTts.made == []
    assert len(list(cache.glob("*.wav"))) == 6


def test_key_covers_provider_rate_text_and_leaves_secrets_out() -> None:
    tts = FakeTts(ms_per_word=50)
    base = tts_identity(tts, "fake", {"ms_per_word": 50, "api_key": "sk-secret"})
    assert "sk-secret" not in base
    assert base == tts_identity(tts, "fake", {"ms_per_word": 50, "api_key": "other"})
    assert base != tts_identity(tts, "other", {"ms_per_word": 50})
    k = prompt_key(base, 8000, "Hello.")
    assert k != prompt_key(base, 16000, "Hello.")
    assert k != prompt_key(base, 8000, "Hello!")
    assert k == prompt_key(base, 8000, "Hello.")


async def test_eviction_keeps_the_cache_under_its_cap(tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompt-cache"
    await start(write_flow(tmp_path / "a.yaml"), cache_dir)
    sizes = sorted(p.stat().st_size for p in cache_dir.glob("*.wav"))
    cap = sum(sizes) + 100  # room for about one flow's prompts
    entry = await start(write_flow(tmp_path / "b.yaml", tts="{ms_per_word: 50, tone_hz: 300}"),
                        cache_dir, max_bytes=cap)
    disk = PromptDiskCache(cache_dir, cap)
    assert disk.size_bytes() <= cap
    # the prompts just used survive; the older flow's were evicted
    for text in STATIC:
        assert disk.load(prompt_key(entry.tts_identity, 8000, text), 8000) is not None


def test_store_is_atomic_and_read_back_exactly(tmp_path: Path) -> None:
    disk = PromptDiskCache(tmp_path / "c")
    pcm = bytes(range(256)) * 40
    assert disk.store("k1", 8000, pcm)
    assert disk.load("k1", 8000) == pcm
    assert disk.load("k1", 16000) is None  # wrong rate: treated as broken, made again
    assert not list((tmp_path / "c").glob(".tmp-*"))
    with wave.open(str(tmp_path / "c" / "k2.wav"), "wb") as w:  # a foreign WAV
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 100)
    assert disk.load("k2", 8000) is None


def test_unwritable_directory_only_warns(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    disk = PromptDiskCache(blocker / "sub")  # cannot be created: a file is in the way
    with caplog.at_level(logging.WARNING):
        assert disk.store("k", 8000, b"\1\0" * 10) is False
        assert disk.store("k", 8000, b"\1\0" * 10) is False
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1
    assert disk.load("k", 8000) is None


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from flowagent.runner.prompt_cache import PromptDiskCache
    from flowagent.server.runtime import FlowSet, ProviderPool

    async def main() -> None:
        for _round in range(4):
            flows = FlowSet(ProviderPool())
            flows.prompt_disk = PromptDiskCache(Path(sys.argv[2]), int(sys.argv[3]))
            flows.load(Path(sys.argv[1]))
            await flows.default.prewarm()
    asyncio.run(main())
""")


async def test_concurrent_starts_sharing_a_directory_leave_only_good_entries(
        tmp_path: Path) -> None:
    cache = tmp_path / "prompt-cache"
    flows = []
    for i in range(3):
        flow = tmp_path / f"f{i}.yaml"
        flow.write_text(FLOW.format(greet=STATIC[0], tts=f"{{ms_per_word: 40, tone_hz: {300 + i}}}")
                        .replace("name: counting", "name: fake"), encoding="utf-8")
        flows.append(flow)
    cap = 12_000  # about one flow's prompts of three: evictions race with writes and reads
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, str(flows[i % 3]), str(cache), str(cap),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for i in range(4)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 120)
    for p, (out, _) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out.decode()
        assert b"unreadable" not in out, out.decode()
    assert not list(cache.glob(".tmp-*"))
    disk = PromptDiskCache(cache)
    files = list(cache.glob("*.wav"))
    assert files
    for f in files:
        assert disk.load(f.stem, 8000), f"{f.name} is broken"


async def test_real_piper_voice_is_read_back_from_disk(tmp_path: Path) -> None:
    pytest.importorskip("piper")
    flow = tmp_path / "piper.yaml"
    flow.write_text(textwrap.dedent("""\
        flowagent: 1
        name: Piper Cache
        language: en-GB
        start: greet
        providers:
          asr: {name: fake}
          tts: {name: piper}
          vad: {name: fake}
        states:
          greet:
            say: Hello there.
            next: bye
          bye:
            say: Goodbye.
            end: true
            outcome: completed
        """), encoding="utf-8")
    cache = tmp_path / "prompt-cache"
    first = await start(flow, cache)
    assert first.warm_stats.synthesised == 2
    assert "piper" in first.tts_identity
    second = await start(flow, cache)
    assert second.warm_stats.from_disk == 2 and second.warm_stats.synthesised == 0
    assert second.prompt_cache == first.prompt_cache
    assert all(len(pcm) > 8000 for pcm in second.prompt_cache.values())  # > 0.5 s of speech


def test_doctor_reports_the_prompt_cache(tmp_path: Path) -> None:
    from flowagent.commands.doctor import DoctorConfig, check_prompt_cache

    folder = tmp_path / "prompt-cache"
    PromptDiskCache(folder).store("k", 8000, b"\1\0" * 8000)
    [ok] = check_prompt_cache(DoctorConfig(environ={"FLOWAGENT_PROMPT_CACHE_DIR": str(folder)}))
    assert ok.status == "pass" and "1 prompt(s) cached" in ok.detail
    (tmp_path / "file").write_text("x")
    [bad] = check_prompt_cache(DoctorConfig(
        environ={"FLOWAGENT_PROMPT_CACHE_DIR": str(tmp_path / "file" / "cache")}))
    assert bad.status == "fail" and "not writable" in bad.detail
    [skip] = check_prompt_cache(DoctorConfig(environ={}))
    assert skip.status == "skip"


async def test_prompt_a_call_made_before_the_warm_up_is_kept_on_disk(tmp_path: Path) -> None:
    """--warm background: a call may synthesise a prompt first (into memory); the warm-up that
    follows writes it to disk, so the next start does not synthesise it again."""
    flow = write_flow(tmp_path / "flow.yaml")
    cache = tmp_path / "prompt-cache"
    entry = load(flow, cache).default
    assert entry is not None
    tts = entry.providers.tts
    pcm = b"".join([c async for c in tts.synthesize(STATIC[1], 8000)])  # what the call did
    entry.prompt_cache[(tts.voice_id, 8000, STATIC[1])] = pcm
    await entry.prewarm()
    assert entry.warm_stats.from_memory == 1 and entry.warm_stats.synthesised == 2
    CountingTts.made.clear()
    assert (await start(flow, cache)).warm_stats.from_disk == 3
    assert CountingTts.made == []


async def _serve_once(flow: Path, workdir: Path, *extra: str) -> str:
    """Run `flowagent serve` until its start-up summary is printed, then SIGTERM; its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWAGENT_API_TOKEN": "t", "COLUMNS": "250",
           "FLOWAGENT_LOG_FORMAT": "text"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowagent.cli", "serve", str(flow), "--audiosocket",
        "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", str(workdir / "calls.db"),
        "--reload-interval", "0", *extra,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    assert proc.stdout is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    break
                out.append(line)
                if line.startswith("Static prompts:"):
                    break
    finally:
        proc.terminate()
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    return "".join(out) + rest.decode()


async def test_serve_restart_reads_prompts_from_the_cache_beside_the_database(
        tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.yaml", tts="{ms_per_word: 50}").read_text()
    (tmp_path / "flow.yaml").write_text(flow.replace("name: counting", "name: fake"))
    first = await _serve_once(tmp_path / "flow.yaml", tmp_path)
    assert "Static prompts: 3 prompts (0 from disk, 3 synthesised)" in first, first
    assert len(list((tmp_path / "prompt-cache").glob("*.wav"))) == 3
    second = await _serve_once(tmp_path / "flow.yaml", tmp_path)
    assert "Static prompts: 3 prompts (3 from disk, 0 synthesised)" in second, second
    off = await _serve_once(tmp_path / "flow.yaml", tmp_path, "--prompt-cache", "off")
    assert "(0 from disk, 3 synthesised)" in off and "disk cache off" in off, off


async def test_serve_warm_up_cut_off_by_its_time_limit_says_what_is_left(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from flowagent.commands.serve import _prewarm_prompts

    flows = load(write_flow(tmp_path / "flow.yaml", tts="{first_audio_ms: 2000}"),
                 tmp_path / "prompt-cache")
    stats = await _prewarm_prompts(Console(file=io.StringIO()), flows, limit_s=0.3)
    assert stats.prompts == 3 and stats.synthesised == 0
    assert "3 still being made in the background" in stats.describe()
