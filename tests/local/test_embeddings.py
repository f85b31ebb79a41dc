"""MiniLM sentence embeddings (int8 ONNX on onnxruntime): the model's published reference
similarities, and intent matching through the understanding package's IntentMatcher with the
embedding scorer plugged in.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from flowagent.understanding.embeddings import EmbeddingScorer, MiniLM
from flowagent.understanding.intents import IntentMatcher


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return MiniLM.shared()


def test_matches_the_published_reference_similarities(minilm: MiniLM) -> None:
    # sentence-transformers' quick-start output for all-MiniLM-L6-v2 (sbert.net):
    # [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]];
    # the int8 model agrees to 0.01 (a tokenizer or pooling mistake moves these by 0.1 or more)
    e = minilm.encode(["The weather is lovely today.", "It's so sunny outside!",
                       "He drove to the stadium."])
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    np.testing.assert_allclose(sims[0, 1], 0.6660, atol=0.01)
    np.testing.assert_allclose(sims[0, 2], 0.1046, atol=0.01)
    np.testing.assert_allclose(sims[1, 2], 0.1411, atol=0.01)
    assert "torch" not in sys.modules


def test_batching_and_padding_do_not_change_an_embedding(minilm: MiniLM) -> None:
    short = "Book a van."
    alone = minilm.encode([short])[0]
    in_batch = minilm.encode([short, "A much longer sentence that forces padding in the batch."])
    np.testing.assert_allclose(alone, in_batch[0], atol=1e-5)


def test_paraphrases_score_high_and_unrelated_low() -> None:
    scorer = EmbeddingScorer()
    human = ["speak to a person", "talk to a human", "put me through to a real person"]
    assert scorer.score("is there somebody I could actually talk to", human) > 0.5
    assert scorer.score("my postcode is LS1 4AB", human) < 0.45
    # embeddings barely see "not": the scorer halves negated matches
    assert scorer.score("I don't want to speak to a person", human) < scorer.threshold


def test_intent_matching_through_the_matcher() -> None:
    intents = {
        "quote": ["how much will it cost", "can I get a price", "I'd like a quote"],
        "book": ["I want to book a move", "book a removal", "we're moving house"],
        # (not `cancel`: that is the built-in "never mind" of the task in hand, strict)
        "cancel_booking": ["cancel my booking", "I want to cancel", "call it off"],
    }
    lexical = IntentMatcher(intents)
    matcher = IntentMatcher(intents, scorers=[EmbeddingScorer()])
    said = {
        "we need a hand relocating next month": "book",
        "scrap my reservation": "cancel_booking",
        "please scrap the booking": "cancel_booking",
        "is there a real human I can chat with": "human",
    }
    found = {text: (m.name if (m := matcher.match(text)) else None) for text in said}
    assert found == said
    # the embeddings find meanings the words alone miss
    assert lexical.match("we need a hand relocating next month") is None
    assert lexical.match("scrap my reservation") is None
    # and answers to other questions stay a no-match
    for other in ("it's a three bedroom semi with a garage", "Sarah Jones", "next Tuesday morning"):
        assert matcher.match(other) is None, other
