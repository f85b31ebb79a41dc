"""Intent example embeddings kept on disk across restarts (`understanding/embedding_cache.py`):
a restart of serve reads the vectors back instead of running MiniLM over every example again.

Each "start" is a fresh `EmbeddingScorer` (empty memory cache, as in a new process) over the
same real MiniLM weights; a `MiniLM` subclass counts the sentences the model really encodes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from flowagent.understanding.embedding_cache import EmbeddingDiskCache, cache_beside_prompts
from flowagent.understanding.embeddings import EmbeddingScorer, MiniLM
from flowagent.understanding.intents import BUILTIN_INTENTS

FLOW_INTENTS = {
    "book": ["I'd like to book a removal", "can you move my furniture", "I need a van"],
    "price": ["how much does it cost", "what's the price", "give me a quote"],
}


class CountingMiniLM(MiniLM):
    """The real model, counting the sentences it embeds (what a cache hit must avoid)."""

    encoded: list[str]

    def encode(self, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.encoded.extend(sentences)
        return super().encode(sentences, batch_size)


@pytest.fixture(scope="module")
def model() -> CountingMiniLM:
    m = CountingMiniLM()
    m.encoded = []
    return m


@pytest.fixture
def counting(model: CountingMiniLM) -> CountingMiniLM:
    model.encoded = []
    return model


def start(model: MiniLM, folder: Path) -> EmbeddingScorer:
    """What a new serve process does: a fresh scorer with the disk cache in `folder`."""
    return EmbeddingScorer(model=model, disk=EmbeddingDiskCache(folder))


def test_a_second_start_embeds_nothing_and_reads_the_same_vectors(
    counting: CountingMiniLM, tmp_path: Path
) -> None:
    intents = {**dict(BUILTIN_INTENTS), **FLOW_INTENTS}
    examples = [e for ex in intents.values() for e in ex]
    first = start(counting, tmp_path)
    first.prepare(intents)
    computed = len(counting.encoded)
    assert computed == len({" ".join(e.lower().split()) for e in examples}) > 10
    assert len(list(tmp_path.glob("*.npy"))) == computed

    counting.encoded = []
    second = start(counting, tmp_path)
    second.prepare(intents)
    assert counting.encoded == []  # nothing embedded at the second start
    assert second.disk is not None and second.disk.hits == computed

    cached = second.embed_examples(examples)
    assert counting.encoded == []
    fresh = EmbeddingScorer(model=counting).embed_examples(examples)  # no disk: recomputed
    np.testing.assert_allclose(cached, fresh, atol=1e-5)
    # and the scorer gives a caller the same answer as without the cache
    text = "could I get a quote for moving please"
    assert second.score(text, FLOW_INTENTS["price"]) == pytest.approx(
        EmbeddingScorer(model=counting).score(text, FLOW_INTENTS["price"]), abs=1e-5)


def test_an_edited_example_is_the_only_one_embedded_again(
    counting: CountingMiniLM, tmp_path: Path
) -> None:
    start(counting, tmp_path).prepare(FLOW_INTENTS)
    edited = {**FLOW_INTENTS, "price": ["how much does it cost", "what's the price",
                                        "what would you charge me"]}
    counting.encoded = []
    start(counting, tmp_path).prepare(edited)
    assert counting.encoded == ["what would you charge me"]


def test_a_corrupt_entry_is_recomputed_with_a_warning(
    counting: CountingMiniLM, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = start(counting, tmp_path)
    first.prepare(FLOW_INTENTS)
    good = first.embed_examples(["give me a quote"])[0]
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 6
    # one truncated, one garbage, one a vector of the wrong width
    files[0].write_bytes(files[0].read_bytes()[:40])
    files[1].write_bytes(b"not a numpy file at all")
    np.save(files[2], np.ones(10, dtype=np.float32))

    counting.encoded = []
    with caplog.at_level(logging.WARNING, logger="flowagent.understanding.embedding_cache"):
        second = start(counting, tmp_path)
        second.prepare(FLOW_INTENTS)
    assert len(counting.encoded) == 3  # only the three broken ones
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 3
    np.testing.assert_allclose(second.embed_examples(["give me a quote"])[0], good, atol=1e-5)

    counting.encoded = []  # rewritten whole: the next start reads all six
    start(counting, tmp_path).prepare(FLOW_INTENTS)
    assert counting.encoded == []


def test_an_unwritable_cache_directory_only_costs_the_cache(
    counting: CountingMiniLM, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    scorer = start(counting, blocker / "embeddings")
    scorer.prepare(FLOW_INTENTS)  # no exception
    assert len(counting.encoded) == 6
    assert scorer.score("I need a van", FLOW_INTENTS["book"]) > 0.9


def test_another_model_does_not_read_these_vectors(
    counting: CountingMiniLM, tmp_path: Path
) -> None:
    start(counting, tmp_path).prepare(FLOW_INTENTS)
    other = CountingMiniLM(max_tokens=16)  # a different truncation: different vectors possible
    other.encoded = []
    start(other, tmp_path).prepare(FLOW_INTENTS)
    assert len(other.encoded) == 6


def test_serve_keeps_the_vectors_inside_the_prompt_cache_and_off_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWAGENT_PROMPT_CACHE_DIR", raising=False)
    from flowagent.commands.serve import prompt_settings
    from flowagent.runner.prompt_cache import cache_from_settings

    on = prompt_settings(tmp_path / "calls.db")
    disk = cache_beside_prompts(cache_from_settings(on.directory, on.max_mb))
    assert disk is not None and disk.dir == tmp_path / "prompt-cache" / "embeddings"
    off = prompt_settings(tmp_path / "calls.db", "off")
    assert cache_beside_prompts(cache_from_settings(off.directory, off.max_mb)) is None
