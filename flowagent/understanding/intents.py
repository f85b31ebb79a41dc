"""Lexical intent matching from example phrases: robust to word order, filler words and small
ASR slips, with a plug-in point for a sentence-embedding scorer.

Words first: stop words out, a light stemmer ("booking" ~ "book"), a few spoken synonyms
("cost"/"charge" ~ "price", "somebody"/"human" ~ "person", weekdays ~ "day"), phrases folded
("what time" -> "when", "how much" -> "price"), glued/split ASR words repaired ("startover",
"good bye"). A text word matches a vocabulary word exactly or, for words of 4+ letters, by
rapidfuzz ratio >= 80 on the spoken forms ("qoute" ~ "quote"; "wait" is not "what").

Weak words ("what", "please", "thanks", "time", "need"...) count 0.3 of a content word, so a
question word or a politeness never carries a match on its own ("what would you charge" is
not "what was that"); an example's weak word the text lacks costs 0.6.

Score of the text against one example: weighted recall (the example's words the text has)
and precision (the text's words the example explains), combined as F-beta with beta^2 = 2 —
recall counts more, yet one stray word next to a one-word example ("I'm done with the
packing" vs "I'm done") falls below the threshold. Halved when the text negates and the
example does not ("I don't want to speak to a person").

Coverage: when every strong word of the text belongs to exactly one intent's vocabulary
(spread over several of its examples), that intent scores 0.74 + 0.04 per word ("what time do
you shut on Saturday" -> opening_hours). A lone word must recur in two of the intent's examples
("price"), so a stray verb ("when can you start", "say Friday") triggers nothing.

An intent's name counts as one more example of it ("book", "change booking"): authors name
intents after what callers ask for, so "booking" alone is `book`.

Destructive intents (``strict``; by default ``restart`` and ``goodbye``, which flows answer by
starting again or hanging up) need a higher bar, because a false match throws the call away:
every strong word of one of their examples must be said ("go back" is not "go back to the
beginning"), the coverage score never picks them, a key word followed by "my"/"the"/... and a
word their examples never use is about something else ("restart my boiler"), and a scorer
alone needs a raw score well above its own threshold plus one of the intent's words in the
text ("thanks" is not `goodbye` by embedding similarity).

An intent's score is the best of these. Built-in ``yes``/``no`` also use the yes/no parser.
Everything that depends only on the flow is computed once in ``IntentMatcher.__init__``; a
turn only scores the examples that share a word with the text (inverted index), so there is
no whole-string fuzzy pass over every example (that pass gave "it can wait" 0.75 as repeat).

Other scorers (e.g. MiniLM embeddings, ``flowagent/understanding/embeddings.py``) implement
:class:`Scorer`; the matcher takes, per intent, the max of the lexical score and each scorer's
score. A scorer with a ``threshold`` attribute (its own "same meaning" cut-off) is rescaled so
that its threshold lands on the matcher's.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

from rapidfuzz import fuzz, process

from flowagent.understanding.normalise import STOP_WORDS, clean, words, wordset
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
    # Live only where a flow answers it (a handler for `cancel`): the engine then drops the
    # details of the task in hand (docs/flow-format.md, "Cancelling a task").
    "cancel": (
        "cancel", "cancel that", "cancel it", "never mind", "forget it", "forget about it",
        "scrap that", "stop", "don't worry about it", "I've changed my mind",
        "I don't want to do this any more", "leave it", "take me back to the main menu",
        "go back to the menu", "forget the whole thing",
    ),
}

#: What callers say to hold the line ("one moment", "hang on"): no request at all. Scored like
#: an intent that is never returned: when it fits a text as well as the best intent does, the
#: text matches nothing. Without it, "one second" reads as `repeat` ("one more time") to the
#: embeddings and "one moment" fills an amount elsewhere.
HOLD = "~hold"
HOLD_EXAMPLES: tuple[str, ...] = (
    "hold on", "hang on", "hang on a second", "one moment", "one second", "one sec",
    "just a sec", "just a minute", "one minute", "give me a second", "wait a moment",
    "bear with me", "let me check", "let me have a look", "let me find it", "I'm just looking",
    "just a moment please", "give me a minute", "wait a sec",
)

DEFAULT_THRESHOLD = 0.72
#: Intents whose usual handler throws the call's progress away (start again, hang up). They
#: need a higher bar: see ``IntentMatcher(strict=...)``.
DESTRUCTIVE_INTENTS: frozenset[str] = frozenset({"restart", "goodbye", "cancel"})
# How far above its own threshold a scorer's raw score must be (as a share of the way to 1.0)
# to match a strict intent on its own: MiniLM's 0.5 becomes 0.7, so "go back" (0.63 to
# "go back to the beginning") and "thanks" (0.55 to "thanks bye") are not destructive matches.
_STRICT_LIFT = 0.4
# "restart my boiler", "start the car": a key word of a destructive intent followed by one of
# these and a word the intent's examples never use is about that thing, not about the call.
_OBJECT_DETERMINERS = frozenset({"my", "the", "your", "our", "his", "her", "their"})
_NEGATORS = frozenset({"not", "don't", "dont", "never", "doesn't", "didn't", "won't", "no"})
# "no", "yes", "again", "over", "bye" carry intent meaning; "after" is British for "want"
# ("I'm after a quote").
_INTENT_STOP = (STOP_WORDS - {"no", "yes", "again", "over", "bye"}) | {
    "after", "wondering", "you're", "we're", "they're", "i'll", "we'll", "you'll", "let's",
    "let", "gonna", "could", "might", "must", "mate", "love", "sir", "madam", "from",
}
# Words that say little on their own: question words, politeness, vague verbs. They count a
# third of a content word, so "what would you charge" is not `repeat` ("what was that") and
# "thank you" is not `goodbye` ("that's all thanks").
_WEAK = frozenset({
    "what", "how", "where", "who", "why", "which", "thank", "thanks", "cheers", "sorry", "please",
    "need", "tell", "know", "much", "many", "about", "now", "any", "anything", "something",
    "time", "go", "got", "have", "has", "had", "make", "take", "give", "call", "calling",
    "ring", "ringing", "phone", "here", "there", "one", "right", "later", "soon", "then",
    "done", "yes", "no", "yeah", "yep", "nope", "nah", "made", "all",
})
# Phrases read as one word before tokenising: "what time" asks "when", "how much" a price.
# "from the top" is the idiom, not "from the top floor". One regex, one pass.
_PHRASES: Mapping[str, str] = {
    "what time": "when", "how much": "price", "human being": "human", "from the top": "fromthetop",
}
_PHRASE_RE = re.compile(
    r"\b(?:what time|how much|human being|"
    r"from the top(?!\s+(?:floor|flat|of|room|bit|part|shelf)\b))\b"
)
_WEAK_WEIGHT = 0.3
# ...but an example's weak word that the text lacks still costs more than a weak word said:
# "booking" alone is not "it's about my booking" (the same word is in "book a move").
_MISSING_WEAK = 0.6
# Words said for the same thing in caller speech: stem -> the stem it stands for.
_SYNONYMS: Mapping[str, str] = {
    **dict.fromkeys(("cost", "charg", "pric", "fee", "pricing"), "price"),
    # (not "scrap" -> "cancel": rarer words are the embedding scorer's job, see
    # tests/local/test_embeddings.py)
    **dict.fromkeys(("cancell",), "cancel"),
    # changing a booking, in the words callers use for it
    **dict.fromkeys(("reschedul", "rearrang", "postpon", "amend", "alter"), "chang"),
    **dict.fromkeys(("estimat", "quotation"), "price"),
    "cheer": "thank",
    **dict.fromkeys(("shut", "clos"), "open"),
    # (not "anyone": "is anyone there?" checks the line, it does not ask for a person; not
    # "people": "it's for two people")
    **dict.fromkeys(("human", "somebody", "someon"), "person"),
    **dict.fromkeys(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                     "sunday", "weekend", "weekday"), "day"),
}
_FUZZY_WORD = 80
# An intent short of the threshold by at most this much still matches when it leads every
# other intent by ``_CLEAR_LEAD`` (never for strict intents).
_CLEAR_LEAD_BELOW, _CLEAR_LEAD = 0.1, 0.3
# Entity masking (``IntentMatcher.mask_entities``): one cheap test decides whether a text can
# hold a value at all (a digit, a currency sign, a capital after the first letter, a number
# word); most answers skip the rest.
_NUMBER_WORDS = wordset(
    """two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
    hundred thousand million"""
)
_AMOUNT_WORDS = wordset(
    "pounds pound quid euros euro dollars dollar bucks grand pence tenner fiver"
)
# Day and month words are values too, unless the flow's examples use them ("are you open on
# Sunday" keeps its day: weekdays stand for "day" there)
_DATE_WORDS = wordset(
    """monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays
    thursdays fridays saturdays sundays today tomorrow tonight january february march april
    june july august september october november december weekend"""
)
_ENTITY_GATE = re.compile(
    r"\d|[£€$@]|.[A-Z]|\b(?:" + "|".join(sorted(_NUMBER_WORDS | _AMOUNT_WORDS | _DATE_WORDS))
    + r")\b",
    re.IGNORECASE,
)
# Words written with a capital that are not names ("I", "OK", days and months are meaning)
_NOT_NAME_CAPS = wordset(
    """i i'm i'd i've i'll ok okay hi hello yes no yeah mr mrs ms dr monday tuesday wednesday
    thursday friday saturday sunday january february march april may june july august
    september october november december christmas easter"""
)
# Stand-ins for sentence embeddings: one ordinary value per kind, so "pay Sam 30" and "pay
# Priya 45 pounds" read alike (not "someone": that word means the `human` intent).
_STAND_INS = {"number": "three", "money": "ten pounds", "name": "John", "date": "tomorrow"}

# Clause boundaries: where a command said with a reason beside it ends ("cancel, I'm not ...")
_CLAUSE_GATE = re.compile(r"[,;.!?]|\s[-–]\s")
_CLAUSE_SPLIT = re.compile(r"[,;.!?]+|\s[-–]\s")

# The general words of an example that a value said stands for (stems): "pay Sam 30" says
# the "someone" of "I'd like to pay someone", "send twenty quid" the "money" of "send money".
_VALUE_WORDS: Mapping[str, frozenset[str]] = {
    "name": frozenset({"person", "friend"}),
    "money": frozenset({"money", "cash", "amount"}),
    "date": frozenset({"day", "dat"}),  # (stems: "date" -> "dat")
}

# Recall counts more than precision: an utterance that says every key word of an example
# with a few extra words is still that example. F-beta with beta^2 = 2.
_BETA2 = 2.0
# "I want X" where every strong word belongs to one intent: scored by how many there are.
_COVER_BASE, _COVER_STEP, _COVER_MAX = 0.74, 0.04, 0.9
# Two kinds of evidence for the same intent: when the lexical score and a scorer's both put
# one intent first and both reach the floor, the intent gets part of the way from the better
# of the two towards 1 ("pay Sam 30": lexical 0.66 from "pay", MiniLM 0.55; neither alone is
# sure, both together are). Never for strict intents or yes/no.
_AGREE_FLOOR, _AGREE_SHARE = 0.4, 0.5
# Two intents both past the threshold and this close: the text fits both ("how long until my
# pizza gets here": order 0.76, track_order 0.71 by embeddings) and a guess is as likely wrong
# as right, so none is chosen (a flow with `settings.clarify` asks "did you mean X or Y?").
# An example said outright (0.99+) is not ambiguous.
_AMBIGUOUS_MARGIN, _OUTRIGHT = 0.04, 0.99
# ...unless the words said decide: the lexical score of the first is this far ahead
_WORDS_DECIDE = 0.15


@runtime_checkable
class Scorer(Protocol):
    """Anything that can say how close a text is to a list of example phrases (0..1)."""

    def score(self, text: str, examples: Sequence[str]) -> float: ...


@dataclass(frozen=True, slots=True)
class IntentMatch:
    """The chosen intent, its score (the confidence, 0..1), and the intent that came second
    with its score, so a flow can ask "did you mean X or Y?" when the two are close."""

    name: str
    score: float
    runner_up: str | None = None
    runner_up_score: float = 0.0

    @property
    def margin(self) -> float:
        return self.score - self.runner_up_score


@dataclass(frozen=True, slots=True)
class _Example:
    intent: str
    content: frozenset[str]  # content words (or all words if none survive)
    total: float  # summed weight of the content words
    missing: float  # what the content words cost when the text lacks them
    negated: bool
    strong: int = 0  # how many of the content words are strong (not weak) words
    # A several-word example reduced to one content word ("see you" -> "see", "I'm done" ->
    # "done"): its other words. A strict intent needs one of them said too ("let me see").
    context: frozenset[str] = frozenset()


@lru_cache(maxsize=8192)
def _stem(w: str) -> str:
    """A light suffix stripper so "booked"/"booking"/"bookings" and "move"/"moving" meet."""
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) >= 4 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if len(w) >= len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    if len(w) >= 4 and w.endswith("e"):
        w = w[:-1]
    return _SYNONYMS.get(w, w)


_WEAK_STEMS = frozenset(_stem(w) for w in _WEAK)


def _weight(w: str) -> float:
    return _WEAK_WEIGHT if w in _WEAK_STEMS else 1.0


def _miss(w: str) -> float:
    return _MISSING_WEAK if w in _WEAK_STEMS else 1.0


def _tokens(text: str) -> list[str]:
    """Words of ``text`` with the multi-word phrases of ``_PHRASES`` folded into one."""
    return words(_PHRASE_RE.sub(_phrase, clean(text)))


def _phrase(m: re.Match[str]) -> str:
    return _PHRASES[m.group()]


def _raw_content(ws: list[str]) -> list[str]:
    """Content words as said (stop words out), for fuzzy matching of ASR slips."""
    kept = [w for w in ws if w not in _INTENT_STOP]
    return kept or ws


def _content(ws: list[str]) -> list[str]:
    stems = (_stem(w) for w in _raw_content(ws))
    return list(dict.fromkeys(w for w in stems if w not in _INTENT_STOP))


def _prepare(intent: str, example: str, idf: Mapping[str, float] | None = None) -> _Example:
    idf = idf or {}
    ws = _tokens(example)
    content = frozenset(_content(ws))
    context = frozenset(w for w in ws if _stem(w) not in content) if len(content) == 1 else ()
    return _Example(intent, content, sum(_weight(w) * idf.get(w, 1.0) for w in content),
                    sum(_miss(w) * idf.get(w, 1.0) for w in content),
                    any(w in _NEGATORS for w in ws),
                    sum(1 for w in content if _weight(w) == 1.0), frozenset(context))


def _idf(contents: Sequence[tuple[str, frozenset[str]]]) -> dict[str, float]:
    """How well each word separates intents: 1 for a word only one intent's examples use,
    1/sqrt(n) for a word n intents share ("show" in "show me my balance" and "show me my
    recent payments" counts 0.71), so shared words decide less."""
    uses: dict[str, set[str]] = {}
    for intent, words_ in contents:
        for w in words_:
            uses.setdefault(w, set()).add(intent)
    return {w: 1.0 / len(v) ** 0.35 for w, v in uses.items() if len(v) > 1}


def name_example(name: str) -> str | None:
    """The words of an intent's name as one more example: authors name an intent after what
    callers ask for (`book`, `change_booking`, `opening_hours`), so "booking" alone is `book`.

    None for names that are not plain words ("q1", "intent_2", "x"): a code says nothing.
    """
    parts = [p for p in re.split(r"[_\-\s.]+", name.lower()) if p]
    if not parts or not all(p.isalpha() and len(p) >= 3 for p in parts):
        return None
    return " ".join(parts)


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
        strict: Collection[str] = DESTRUCTIVE_INTENTS,
        name_keywords: bool = True,
    ) -> None:
        merged: dict[str, tuple[str, ...]] = {}
        if builtins:
            merged.update({k: tuple(v) for k, v in BUILTIN_INTENTS.items()})
        for name, examples in intents.items():
            merged[name] = tuple(dict.fromkeys((*merged.get(name, ()), *map(str, examples))))
        self.threshold = threshold
        self.examples: Mapping[str, tuple[str, ...]] = merged
        #: intents that need the higher bar (see the module docstring, "Destructive intents")
        self.strict: frozenset[str] = frozenset(strict)
        lexical = {k: list(v) for k, v in merged.items()}
        if name_keywords:
            # the flow's own intent names (not the built-ins': those have their examples)
            for name in intents:
                said = name_example(str(name))
                if said is not None and name not in BUILTIN_INTENTS and said not in lexical[name]:
                    lexical[name].append(said)
        lexical[HOLD] = list(HOLD_EXAMPLES)
        pre = [(k, frozenset(_content(_tokens(e)))) for k, v in lexical.items() for e in v]
        #: word -> weight below 1 for words several intents share (see `_idf`)
        self._idf: dict[str, float] = _idf(pre)
        self._examples = [_prepare(k, e, self._idf) for k, v in lexical.items() for e in v]
        self._examples = [e for e in self._examples if e.content]
        # Inverted index word -> examples: only examples sharing a word with the text are scored.
        self._index: dict[str, list[int]] = {}
        # word -> intent -> in how many of that intent's examples it appears
        self._word_intents: dict[str, dict[str, int]] = {}
        for i, e in enumerate(self._examples):
            for w in e.content:
                self._index.setdefault(w, []).append(i)
                per = self._word_intents.setdefault(w, {})
                per[e.intent] = per.get(e.intent, 0) + 1
        self._vocab = frozenset(self._index)
        #: the words of the flow's own intents (not the built-ins'): a day said to a flow whose
        #: examples never name one is a value ("pay Sam on Friday"), not part of the request
        self._flow_vocab = frozenset(
            w for e in self._examples if e.intent not in BUILTIN_INTENTS and e.intent != HOLD
            for w in e.content)
        # Spoken forms of the vocabulary: fuzzy matching compares what was said with what the
        # examples say ("qoute" ~ "quote", "mover" ~ "move"), not with the stems.
        self._spoken: dict[str, str] = {}
        for v in lexical.values():
            for example in v:
                for w in _raw_content(_tokens(example)):
                    stem = _stem(w)
                    if stem in self._vocab and len(w) >= 4:
                        self._spoken.setdefault(w, stem)
        self._spoken_list = sorted(self._spoken)
        # each strict intent's vocabulary (stems), for the "restart my boiler" check
        self._strict_vocab: dict[str, frozenset[str]] = {
            name: frozenset(w for e in self._examples if e.intent == name for w in e.content)
            for name in self.strict if name in merged
        }
        self._fuzzy_cache: dict[str, frozenset[str]] = {}
        self.scorers: list[Scorer] = list(scorers)
        #: what a scorer compares a text with: the examples, and the intent's name in words
        self._scored_examples: dict[str, tuple[str, ...]] = {
            k: tuple(lexical[k]) for k in (*merged, HOLD)
        }

    def add_scorer(self, scorer: Scorer) -> None:
        """Plug in another scorer (e.g. embeddings) after construction."""
        self.scorers.append(scorer)

    def _rescale(self, scorer: Scorer, raw: float, strict: bool = False) -> float:
        t = getattr(scorer, "threshold", None)
        if not t or not 0 < float(t) < 1:
            if strict:  # no calibration known: only a near-certain score may match
                return raw if raw >= 1 - (1 - self.threshold) * (1 - _STRICT_LIFT) else 0.0
            return raw
        t = float(t)
        if strict:
            t += (1 - t) * _STRICT_LIFT
        if raw <= t:
            return raw / t * self.threshold
        return self.threshold + (raw - t) / (1 - t) * (1 - self.threshold)

    def _near(self, t: str, said: str) -> frozenset[str]:
        """Vocabulary words the stem ``t`` (spoken as ``said``) stands for: itself, a near
        spelling ("qoute" ~ "quote"), or none.

        Only words of 4+ letters are matched fuzzily: "by"/"bye" and "wait"/"what" differ in
        meaning, not in spelling. Cached per matcher (callers repeat the same words).
        """
        if t in self._vocab:
            return frozenset((t,))
        hit = self._fuzzy_cache.get(said)
        if hit is None:
            hit = frozenset()
            if len(said) >= 4:
                found = process.extract(said, self._spoken_list, scorer=fuzz.ratio,
                                        score_cutoff=_FUZZY_WORD, limit=None)
                # within one letter of the same length: "qoute" ~ "quote", but "second"
                # is not "send" (ratio 80 too, from the shared letters)
                hit = frozenset(self._spoken[f[0]] for f in found
                                if abs(len(f[0]) - len(said)) <= 1)
            if len(self._fuzzy_cache) < 4096:
                self._fuzzy_cache[said] = hit
        return hit

    def _words(self, ws: list[str]) -> dict[str, str]:
        """The text's content words: stem -> as said. ASR glues and splits words: "startover"
        becomes "start" + "over" and "good bye" becomes "goodbye" when the result is known."""
        said = _raw_content(ws)
        out: dict[str, str] = {}
        i = 0
        while i < len(said):
            w = said[i]
            t = _stem(w)
            if t in _INTENT_STOP:
                i += 1
                continue
            if t not in self._vocab:
                if i + 1 < len(said) and (j := _stem(w + said[i + 1])) in self._vocab:
                    out.setdefault(j, w + said[i + 1])
                    i += 2
                    continue
                if len(w) >= 6:
                    for k in range(2, len(w) - 1):
                        a, b = _stem(w[:k]), _stem(w[k:])
                        if a in self._vocab and b in self._vocab:
                            out.setdefault(a, a)
                            out.setdefault(b, b)
                            break
                    else:
                        out.setdefault(t, w)
                    i += 1
                    continue
            out.setdefault(t, w)
            i += 1
        return out

    def _about_something_else(self, tokens: list[str]) -> frozenset[str]:
        """Strict intents the text uses as a verb on some other thing: a key word of the
        intent, then "my"/"the"/..., then a word none of its examples use ("restart my boiler",
        "start the car"; not "go back to the beginning")."""
        out: set[str] = set()
        for name, vocab in self._strict_vocab.items():
            for i in range(len(tokens) - 2):
                if (tokens[i + 1] in _OBJECT_DETERMINERS and _stem(tokens[i]) in vocab
                        and tokens[i + 2] not in _INTENT_STOP
                        and _stem(tokens[i + 2]) not in vocab):
                    out.add(name)
                    break
        return frozenset(out)

    def _lexical(
        self, said: Mapping[str, str], negated: bool, names: Collection[str] | None = None,
        tokens: Collection[str] = (), filled: frozenset[str] = frozenset(),
    ) -> dict[str, float]:
        """Best lexical score per intent (see the module docstring for the formula).

        Only examples that share a word with the text are scored (inverted index), and only
        those of ``names`` when given.
        """
        if not said or not self._examples:
            return {}
        content = list(said)
        match = {t: self._near(t, w) for t, w in said.items()}
        idf = self._idf
        weight = {t: _weight(t) * min((idf.get(w, 1.0) for w in match[t]), default=1.0)
                  for t in content}
        n_text = sum(weight.values())
        examples, index = self._examples, self._index
        # One pass over the index: weight of each touched example's words the text has
        # (recall) and weight of the text's words each example explains (precision).
        found: dict[int, float] = {}
        covered: dict[int, float] = {}
        strong: dict[int, int] = {}
        for w in frozenset().union(*match.values()):
            base = _weight(w)
            ww, wm = base * idf.get(w, 1.0), _miss(w) * idf.get(w, 1.0)
            for i in index[w]:
                found[i] = found.get(i, 0.0) + ww
                covered[i] = covered.get(i, 0.0) + wm
                if base == 1.0:
                    strong[i] = strong.get(i, 0) + 1
        if filled:
            # the values said fill the example's general words: "pay Sam 30" says the
            # "someone" of "I'd like to pay someone" (only in examples a said word found)
            for i in list(found):
                for w in examples[i].content & filled:
                    if w in match or any(w in m for m in match.values()):
                        continue
                    found[i] += idf.get(w, 1.0)
                    covered[i] += idf.get(w, 1.0)
                    strong[i] = strong.get(i, 0) + 1
        explained: dict[int, float] = {}
        for t in content:
            m = match[t]
            ids = index[next(iter(m))] if len(m) == 1 else {i for w in m for i in index[w]}
            wt = weight[t]
            for i in ids:
                explained[i] = explained.get(i, 0.0) + wt
        best: dict[str, float] = {}
        for i, hit in found.items():
            ex = examples[i]
            if names is not None and ex.intent not in names:
                continue
            if ex.intent in self.strict and strong.get(i, 0) < ex.strong:
                # a destructive intent needs every key word of one example: "go back" is
                # not "go back to the beginning"
                continue
            if ex.context and (ex.strong or ex.intent in self.strict) \
                    and ex.context.isdisjoint(tokens):
                # a one-word example keeps its other words: "let me see" is not "see you",
                # "transfer fifty pounds to Leo" is not "transfer me" (a weak word alone,
                # "what" of "what was that", is judged by its weight instead)
                continue
            recall = hit / (hit + ex.missing - covered[i])
            precision = explained[i] / n_text
            lex = (1 + _BETA2) * recall * precision / (_BETA2 * precision + recall)
            if negated and not ex.negated:
                lex *= 0.5
            if lex > best.get(ex.intent, 0.0):
                best[ex.intent] = lex
        # Coverage: every word the caller said belongs to one intent, though no single example
        # holds them all ("please scrap the booking" -> existing_booking, from "cancel my move"
        # and "it's about my booking"; "what would you charge" -> quote).
        cover = self._coverage(content, match, weight)
        if cover is not None and cover[0] not in self.strict:
            name, n_words = cover
            score = min(_COVER_MAX, _COVER_BASE + _COVER_STEP * n_words)
            if negated:
                score *= 0.5
            if score > best.get(name, 0.0):
                best[name] = score
        return best

    def _coverage(
        self, content: list[str], match: Mapping[str, frozenset[str]],
        weight: Mapping[str, float],
    ) -> tuple[str, int] | None:
        """The one intent whose vocabulary holds every meaningful word of the text, and how
        many words that is; None when no intent or several do.

        Strong words must all be in the intent's vocabulary; weak words ("what", "please",
        "time") narrow the choice when they can and are ignored when they cannot. A lone strong
        word must recur in two of the intent's examples ("price"), so a stray verb ("say
        Friday", "when can you start") does not trigger an intent.
        """
        strong = [t for t in content if _weight(t) == 1.0]
        if not strong or not all(match[t] for t in strong):
            return None
        intents: set[str] | None = None
        for t in strong:
            these = {n for w in match[t] for n in self._word_intents[w]}
            intents = these if intents is None else intents & these
            if not intents:
                return None
        assert intents is not None
        used = len(strong)
        for t in content:
            if _weight(t) == 1.0 or not match[t]:
                continue
            these = intents & {n for w in match[t] for n in self._word_intents[w]}
            if these:
                intents = these
                used += 1
        if len(intents) != 1:
            return None
        (name,) = intents
        # (counted in strong words: "go" + "back" is one key word, not two)
        if len(strong) == 1 and not any(
            self._word_intents[w].get(name, 0) >= 2 for w in match[strong[0]]
        ):
            return None
        return name, used

    def scores(self, text: str, allowed: Collection[str] | None = None) -> dict[str, float]:
        """Score of every (allowed) intent for ``text``: for debugging and ``flowagent chat``."""
        return self._scores(text, allowed)[0]

    def mask_entities(self, text: str) -> tuple[str, str]:
        """``text`` without the values in it, for matching: numbers, amounts, codes and names
        written with a capital, unless the flow's examples use the word ("pay Sam 30" ->
        "pay"). Returns (masked, generic): ``generic`` puts a plain stand-in where each value
        was ("pay someone some money"), for sentence embeddings, which read whole phrases."""
        masked, generic, _ = self._mask(text)
        return masked, generic

    def _mask(self, text: str) -> tuple[str, str, frozenset[str]]:
        """``mask_entities`` and the kinds of value it took out."""
        if not _ENTITY_GATE.search(text):
            return text, text, frozenset()
        kinds: set[str] = set()
        kept: list[str] = []
        generic: list[str] = []
        for tok in text.split():
            kind = self._entity_kind(tok)
            if kind is None:
                kept.append(tok)
                generic.append(tok)
                continue
            kinds.add(kind)
            tail = tok[-1] if tok[-1] in ",.?!" else ""
            stand_in = _STAND_INS[kind] + tail
            last = generic[-1].rstrip(",.?!") if generic else ""
            if kind == "money" and last == _STAND_INS["number"]:
                generic[-1] = stand_in  # "twenty quid": one amount, not "three ten pounds"
            elif last != _STAND_INS[kind]:
                generic.append(stand_in)
            if tail:
                kept.append(tail)
        return " ".join(kept), " ".join(generic), frozenset(kinds)

    def _entity_kind(self, tok: str) -> str | None:
        w = tok.strip(",.?!;:'\"()").lower()
        if not w:
            return None
        if any(c.isdigit() for c in w) or w[0] in "£€$@":
            return "money" if w[0] in "£€$" else "number"
        stem = _stem(w)
        if w in _DATE_WORDS and stem not in self._flow_vocab:
            return "date"
        if stem in self._vocab:
            return None
        if w in _AMOUNT_WORDS:
            return "money"
        if w in _NUMBER_WORDS:
            return "number"
        core = tok.strip(",.?!;:'\"()")
        if core[:1].isupper() and w not in _NOT_NAME_CAPS and w not in _INTENT_STOP \
                and w not in STOP_WORDS and stem not in _WEAK_STEMS:
            return "name"
        return None

    def _scores(
        self, text: str, allowed: Collection[str] | None,
    ) -> tuple[dict[str, float], int, Mapping[str, float]]:
        """``scores``, the number of words said and the lexical scores (``match`` needs
        them all)."""
        text, generic, kinds = self._mask(text)
        t = clean(text)
        # a scorer is asked only when words other than the values are left ("Jane Smith" alone
        # is an answer, not a request)
        score_text = generic if t.strip(" ,.?!") else ""
        ws = words(t)
        tokens = words(_PHRASE_RE.sub(_phrase, t)) if _PHRASE_RE.search(t) else ws
        content = self._words(tokens)
        negated = any(w in ("not", "don't", "dont", "never") for w in ws) or "no need" in t
        names = list(allowed) if allowed is not None else list(self.examples)
        names.append(HOLD)
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
        filled = frozenset(w for k in kinds for w in _VALUE_WORDS.get(k, ()))
        lexical = self._lexical(content, negated, set(names), frozenset(tokens), filled)
        elsewhere = self._about_something_else(tokens) if self._strict_vocab else frozenset()
        out: dict[str, float] = {}
        models: dict[str, float] = {}
        for name in names:
            if name not in self.examples and name != HOLD:
                continue
            if name in elsewhere:
                out[name] = 0.0
                continue
            best = lexical.get(name, 0.0)
            if (name == "yes" and yn is True) or (name == "no" and yn is False):
                best = max(best, yn_score)
            elif name in ("yes", "no") and yn is not None:
                best = min(best, 0.5)  # "not right" must not score as yes via "right"
            if name in self._strict_vocab and not self._strict_vocab[name] & content.keys():
                # a destructive intent needs at least one of its own words said: a scorer's
                # similarity alone ("from the top flat" ~ "from the top") is not enough
                out[name] = min(1.0, best)
                continue
            for scorer in self.scorers:
                try:
                    raw = float(scorer.score(score_text, self._scored_examples[name]))
                except Exception:  # a broken optional scorer must not break the call
                    continue
                # (holding the line takes the strict bar too: it turns a request into none)
                model = self._rescale(scorer, raw, name in self.strict or name == HOLD)
                models[name] = max(models.get(name, 0.0), model)
                best = max(best, model)
            out[name] = min(1.0, best)
        if models and lexical:
            self._agree(out, lexical, models)
        self._command_clause(text, names, out)
        return out, len(ws), lexical

    def _command_clause(self, text: str, names: Sequence[str], out: dict[str, float]) -> None:
        """A destructive command said as a clause of its own, first or last, with a reason
        beside it: "cancel, I'm not moving after all", "never mind, it's come back on",
        "actually, that's all, bye". The whole sentence is too long for their strict bar;
        the clause alone is judged by it. A first clause followed by a correction ("scrap
        that, make it Tom") is not judged alone: the correction wins."""
        strict = [n for n in names if n in self.strict and n in self.examples]
        if not strict or not _CLAUSE_GATE.search(text):
            return
        parts = [p.strip() for p in _CLAUSE_SPLIT.split(text) if p.strip(" ,.;!?-")]
        if len(parts) < 2:
            return
        from flowagent.understanding.corrections import is_correction

        # (a command then a correction changes the answer: "stop, I meant Tuesday"; the last
        # clause ends the call whatever came before: "actually, that's all, bye")
        clauses = [parts[-1]] if is_correction(" ".join(parts[1:])) else [parts[0], parts[-1]]
        for clause in dict.fromkeys(clauses):
            scored = self._scores(clause, strict)[0]
            hold = scored.get(HOLD, 0.0)
            for name in strict:
                got = scored.get(name, 0.0)
                if got > hold and got > out.get(name, 0.0):
                    out[name] = got

    def _agree(self, out: dict[str, float], lexical: Mapping[str, float],
               models: Mapping[str, float]) -> None:
        """Raise the intent that the lexical score and the scorers both put first (see
        ``_AGREE_FLOOR``)."""
        top_lex = max(lexical, key=lexical.__getitem__)
        top_model = max(models, key=models.__getitem__)
        if top_lex != top_model or top_lex in self.strict or top_lex in ("yes", "no"):
            return
        if top_lex not in out:
            return
        lo, hi = sorted((lexical[top_lex], models[top_model]))
        if lo >= _AGREE_FLOOR:
            out[top_lex] = min(1.0, max(out[top_lex], hi + (1 - hi) * lo * _AGREE_SHARE))

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
        ranked, hold, lexical = self._ranked(text, allowed)
        if not ranked or hold > ranked[0][1]:
            return None  # nothing asked, or "one moment" (see ``HOLD``)
        rivals = [x for x in ranked[1:] if x[0] not in ("yes", "no")]
        if (rivals and ranked[0][1] < _OUTRIGHT and rivals[0][1] >= self.threshold
                and ranked[0][1] - rivals[0][1] < _AMBIGUOUS_MARGIN
                and not self._words_decide(lexical, ranked[0][0], rivals[0][0])):
            return None
        (best_name, best), (second, second_score) = ranked[0], (
            ranked[1] if len(ranked) > 1 else (None, 0.0))
        if best < self.threshold and not (
            # clearly ahead of every other intent, though short of the threshold: the
            # embeddings' paraphrases land here ("I can't make it on Thursday")
            best_name not in self.strict and best_name not in BUILTIN_INTENTS
            and best >= self.threshold - _CLEAR_LEAD_BELOW * (1 - self.threshold) / (
                1 - DEFAULT_THRESHOLD)
            # (yes/no do not compete: "I'd like to get a takeaway" is no answer to a
            # yes/no question, whatever "I'd like" scores as yes)
            and best - (rivals[0][1] if rivals else 0.0) >= _CLEAR_LEAD
        ):
            return None
        return IntentMatch(best_name, round(best, 4), second, round(second_score, 4))

    @staticmethod
    def _words_decide(lexical: Mapping[str, float], first: str, second: str) -> bool:
        """The words said break a near tie: the lexical score puts ``first`` clearly ahead of
        ``second`` ("can I move my booking to another day" shares words with its intent)."""
        a = lexical.get(first, 0.0)
        return a >= _AGREE_FLOOR and a - lexical.get(second, 0.0) >= _WORDS_DECIDE

    def ranked(self, text: str, allowed: Collection[str] | None = None
               ) -> list[tuple[str, float]]:
        """Every allowed intent with its score, best first (ties: the order of ``allowed``)."""
        return self._ranked(text, allowed)[0]

    def _ranked(self, text: str, allowed: Collection[str] | None
                ) -> tuple[list[tuple[str, float]], float, Mapping[str, float]]:
        """``ranked``, how well the text fits holding the line (``HOLD``) and the lexical
        scores."""
        if not text or not text.strip():
            return [], 0.0, {}
        scored, n_words, lexical = self._scores(text, allowed)
        hold = scored.pop(HOLD, 0.0)
        long_text = n_words > 3
        out = []
        for i, (name, s) in enumerate(scored.items()):
            if long_text and name in ("yes", "no"):
                s *= 0.97  # a sentence that also names something specific is about that thing
            out.append((-s, i, name))
        out.sort()
        return [(name, -neg) for neg, _, name in out], hold, lexical
