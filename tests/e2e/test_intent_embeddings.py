"""With the offline stack, each flow's intent matcher also gets the MiniLM `EmbeddingScorer`
(examples embedded when the flow loads, not during a call): paraphrases that share no words with
the flow's examples still reach the right state."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowagent.dialogue import nlu
from flowagent.server.runtime import FlowSet, ProviderPool

ROOT = Path(__file__).resolve().parents[2]
FAKE = {"asr": {"name": "fake"}, "tts": {"name": "fake"}, "vad": {"name": "fake"}}
INTENTS = ("quote", "existing_booking", "opening_hours")


@pytest.fixture(scope="module")
def scorer():  # type: ignore[no-untyped-def]
    from flowagent.understanding.embeddings import EmbeddingScorer

    return EmbeddingScorer()


def test_paraphrases_match_with_embeddings_only(scorer) -> None:  # type: ignore[no-untyped-def]
    plain = FlowSet(ProviderPool(), FAKE)
    plain.load(ROOT / "flows" / "removals.yaml")
    local = FlowSet(ProviderPool(), FAKE)
    local.intent_scorer = scorer
    local.load(ROOT / "flows" / "removals.yaml")
    assert plain.default is not None and local.default is not None
    for text, intent in [("could you tell me the cost of moving my furniture", "quote"),
                         ("I have a reservation with you already", "existing_booking")]:
        assert nlu.match_intent(plain.default.compiled, text, INTENTS) is None
        assert nlu.match_intent(local.default.compiled, text, INTENTS) == intent
    # unrelated answers stay a no-match, and the lexical matches still work
    assert nlu.match_intent(local.default.compiled, "L S six, one H T", INTENTS) is None
    assert nlu.match_intent(local.default.compiled, "I'd like a quote", INTENTS) == "quote"
