"""Lexical intent matching from example phrases: robust to word order, filler words and small
ASR slips, with a plug-in point for a sentence-embedding scorer.

Score of a caller's text against one example (0..1):
- content words (stop words removed) of the example found in the text, exactly or fuzzily
  (rapidfuzz ratio >= 80 for words of 4+ letters: "qoute" ~ "quote") -> recall;
- the share of the text's content words that the example explains -> precision;
- ``0.65 * recall + 0.35 * precision``, or rapidfuzz ``token_sort_ratio`` of the two content
  strings (word order ignored; catches "startover" ~ "start over"), whichever is higher;
- halved when the text negates what the example asks ("I don't want to speak to a person").
An intent's score is its best example's. Built-in ``yes``/``no`` also use the yes/no parser.
Everything that depends only on the flow is computed once in ``IntentMatcher.__init__``.

Other scorers (e.g. MiniLM embeddings, ``flowagent/understanding/embeddings.py``) implement
:class:`Scorer`; the matcher takes, per intent, the max of the lexical score and each scorer's
score. A scorer with a ``threshold`` attribute (its own "same meaning" cut-off) is rescaled so
that its threshold lands on the matcher's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rapidfuzz import fuzz, process

from flowagent.understanding.normalise import STOP_WORDS, clean, words
from flowagent.understanding.yes_no import parse_yes_no

BUILTIN_INTENTS: Mapping[str, tuple[str, ...]] = {
    "yes": ("yes", "yes please", "that's right", "correct", "yeah", "sure", "go ahead"),
    "no": ("no", "no thanks", "that's wrong", "not right", "nope"),
    "human": (
        "speak to a person", "talk to a human", "can I speak to someone",
        "put me through to a real person", "real person", "operator", "speak to an agent",
        "talk to someone", "speak to a human being", "can I talk to somebody",
        "get me a human", "customer service", "speak to the manager", "speak to a representative",
        "transfer me",
    ),
    "repeat": (
        "say that again", "can you repeat that", "pardon", "what did you say",
        "sorry I didn't catch that", "repeat", "what was that", "come again",
        "sorry what", "could you say that again", "I didn't hear you", "one more time",
    ),
    "restart": (
        "start again", "start over", "let's start from the beginning", "restart",
        "go back to the beginning", "begin again", "from the top",
    ),
    "goodbye": (
        "goodbye", "bye", "that's all thanks", "nothing else", "thanks bye", "bye bye",
        "see you", "cheers bye", "that's everything", "I'm done", "have a nice day",
    ),
}

DEFAULT_THRESHOLD = 0.72
_NEGATORS = frozenset({"not", "don't", "dont", "never", "doesn't", "didn't", "won't", "no"})
# "no", "yes", "again", "over", "bye" carry intent meaning; "after" is British for "want"
# ("I'm after a quote").
_INTENT_STOP = (STOP_WORDS - {"no", "yes", "again", "over", "bye"}) | {"after", "wondering"}
_FUZZY_WORD = 80


@runtime_checkable
class Scorer(Protocol):
    """Anything that can say how close a text is to a list of example phrases (0..1)."""

    def score(self, text: str, examples: Sequence[str]) -> float: ...


@dataclass(frozen=True, slots=True)
class IntentMatch:
    name: str
    score: float


@dataclass(frozen=True, slots=True)
class _Example:
    intent: str
    content: frozenset[str]  # content words (or all words if none survive)
    joined: str
    negated: bool


def _stem(w: str) -> str:
    """A light suffix stripper so "booked"/"booking"/"bookings" and "move"/"moving" meet."""
    if len(w) >= 4 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if len(w) >= len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    if len(w) >= 4 and w.endswith("e"):
        w = w[:-1]
    return w


def _content(ws: list[str]) -> list[str]:
    kept = [w for w in ws if w not in _INTENT_STOP]
    return list(dict.fromkeys(_stem(w) for w in (kept or ws)))


def _prepare(intent: str, example: str) -> _Example:
    ws = words(clean(example))
    content = _content(ws)
    return _Example(intent, frozenset(content), " ".join(content),
                    any(w in _NEGATORS for w in ws))


class IntentMatcher:
    """Built once per flow from ``{intent: [example, ...]}``; built-in intents are always in.

    ``match(text, allowed)`` returns the best intent among ``allowed`` (all when None) whose
    score reaches ``threshold``, else None. Ties go to the intent listed first in ``allowed``
    (so the state's own intents can win over global ones by being listed first).
    """

    def __init__(
        self,
        intents: Mapping[str, Sequence[str]],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        scorers: Sequence[Scorer] = (),
        builtins: bool = True,
    ) -> None:
        merged: dict[str, tuple[str, ...]] = {}
        if builtins:
            merged.update({k: tuple(v) for k, v in BUILTIN_INTENTS.items()})
        for name, examples in intents.items():
            merged[name] = tuple(dict.fromkeys((*merged.get(name, ()), *map(str, examples))))
        self.threshold = threshold
        self.examples: Mapping[str, tuple[str, ...]] = merged
        self._examples = [_prepare(k, e) for k, v in merged.items() for e in v]
        self._examples = [e for e in self._examples if e.content]
        self._joined = [e.joined for e in self._examples]
        self._nospace = [e.joined.replace(" ", "") for e in self._examples]
        vocab = {w for e in self._examples for w in e.content}
        self._index: dict[str, list[int]] = {}
        for i, e in enumerate(self._examples):
            for w in e.content:
                self._index.setdefault(w, []).append(i)
        # Examples are grouped by intent: per-intent maxima come from one numpy reduceat.
        self._group_names: list[str] = []
        starts: list[int] = []
        for i, e in enumerate(self._examples):
            if not self._group_names or self._group_names[-1] != e.intent:
                self._group_names.append(e.intent)
                starts.append(i)
        ends = [*starts[1:], len(self._examples)]
        self._groups = list(zip(self._group_names, starts, ends, strict=True))
        self._vocab = frozenset(vocab)
        self._vocab_long = sorted(w for w in vocab if len(w) >= 4)
        self.scorers: list[Scorer] = list(scorers)

    def add_scorer(self, scorer: Scorer) -> None:
        """Plug in another scorer (e.g. embeddings) after construction."""
        self.scorers.append(scorer)

    def _rescale(self, scorer: Scorer, raw: float) -> float:
        t = getattr(scorer, "threshold", None)
        if not t or not 0 < float(t) < 1:
            return raw
        t = float(t)
        if raw <= t:
            return raw / t * self.threshold
        return self.threshold + (raw - t) / (1 - t) * (1 - self.threshold)

    def _lexical(self, content: list[str], joined: str, negated: bool) -> dict[str, float]:
        """Best lexical score per intent (see the module docstring for the formula)."""
        if not content or not self._examples:
            return {}
        # Which vocabulary words each text word stands for (itself, or a near spelling).
        match: dict[str, frozenset[str]] = {}
        for t in content:
            if t in self._vocab:
                match[t] = frozenset((t,))
            elif len(t) >= 4:
                found = process.extract(t, self._vocab_long, scorer=fuzz.ratio,
                                        score_cutoff=_FUZZY_WORD, limit=None)
                match[t] = frozenset(f[0] for f in found)
            else:
                match[t] = frozenset()
        hit_words = frozenset().union(*match.values())
        # Word-order-free similarity with every example, in one C call (no numpy needed).
        score = [0.0] * len(self._examples)
        for _, sc, i in process.extract(joined, self._joined, scorer=fuzz.token_sort_ratio,
                                        limit=None, score_cutoff=40):
            score[i] = sc / 100.0
        if len(content) <= 2:  # ASR glued words: "startover" ~ "start over"
            for _, sc, i in process.extract("".join(content), self._nospace, scorer=fuzz.ratio,
                                            limit=None, score_cutoff=60):
                score[i] = max(score[i], sc / 100.0)
        n_text = len(content)
        touched = {i for w in hit_words for i in self._index.get(w, ())}
        for i in touched:
            ex = self._examples[i]
            recall = len(ex.content & hit_words) / len(ex.content)
            explained = sum(1 for t in content if not match[t].isdisjoint(ex.content))
            lex = 0.65 * recall + 0.35 * explained / n_text
            if lex > score[i]:
                score[i] = lex
            if negated and not ex.negated:
                score[i] *= 0.5
        return {name: max(score[a:b]) for name, a, b in self._groups}

    def scores(self, text: str, allowed: Collection[str] | None = None) -> dict[str, float]:
        """Score of every (allowed) intent for ``text``: for debugging and ``flowagent chat``."""
        t = clean(text)
        ws = words(t)
        content = _content(ws)
        joined = " ".join(content)
        negated = any(w in ("not", "don't", "dont", "never") for w in ws)
        names = list(allowed) if allowed is not None else list(self.examples)
        # The yes/no parser backs up the built-in yes/no intents: fully for short answers, a
        # little for a longer sentence that opens with yes/no ("yeah, I'm after a quote" must
        # still go to "quote"), and not at all when yes/no words only appear later on.
        yn: bool | None = None
        yn_score = 0.0
        if "yes" in names or "no" in names:
            if len(ws) <= 3:
                yn, yn_score = parse_yes_no(t), 0.9
            else:
                yn, yn_score = parse_yes_no(" ".join(ws[:3])), 0.75
        lexical = self._lexical(content, joined, negated)
        out: dict[str, float] = {}
        for name in names:
            if name not in self.examples:
                continue
            best = lexical.get(name, 0.0)
            if (name == "yes" and yn is True) or (name == "no" and yn is False):
                best = max(best, yn_score)
            elif name in ("yes", "no") and yn is not None:
                best = min(best, 0.5)  # "not right" must not score as yes via "right"
            for scorer in self.scorers:
                try:
                    raw = float(scorer.score(text, self.examples[name]))
                except Exception:  # a broken optional scorer must not break the call
                    continue
                best = max(best, self._rescale(scorer, raw))
            out[name] = min(1.0, best)
        return out

    def match(
        self,
        text: str,
        allowed: Collection[str] | None = None,
        *,
        candidates: Collection[str] | None = None,
    ) -> IntentMatch | None:
        """The best allowed intent at or above the threshold, else None.

        ``candidates`` is an alias of ``allowed``.
        """
        if allowed is None:
            allowed = candidates
        if not text or not text.strip():
            return None
        scored = self.scores(text, allowed)
        best_name: str | None = None
        best = 0.0
        long_text = len(words(clean(text))) > 3
        for name, s in scored.items():
            if long_text and name in ("yes", "no"):
                s *= 0.97  # a sentence that also names something specific is about that thing
            if s > best + 1e-9:
                best_name, best = name, s
        if best_name is None or best < self.threshold:
            return None
        return IntentMatch(best_name, round(best, 4))
