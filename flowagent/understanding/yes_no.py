"""Yes or no, the many ways people say it: "yeah", "go ahead", "that's right", "nope",
"not really", "that's wrong", "I don't think so"...

Negation-aware ("not right" is a no, "not sure" is neither) and conservative: an answer that
holds both a yes and a no ("yeah, no...", "no, that's fine") or a hedge ("maybe") is None, so the
engine asks again instead of booking on a guess.
"""

from __future__ import annotations

import re

from flowagent.understanding.normalise import clean, strip_punctuation

# Phrases are matched on word boundaries in punctuation-free text; longer phrases first.
_YES = """yes please|yes|yeah|yea|yah|ya|yep|yup|yes yes|aye|sure|sure thing|certainly|absolutely|
definitely|of course|correct|that's correct|that is correct|right|that's right|that is right|
exactly|ok|okay|o k|alright|all right|fine|that's fine|go ahead|go on|please do|do it|
sounds good|sounds great|sounds fine|perfect|great|lovely|brilliant|indeed|affirmative|i do|
it is|that is it|that's it|spot on|uh huh|mhm|mm hmm|why not|i think so|i guess so|agreed|
you got it|yes it is|it does|i would|i will|please go ahead|confirmed|confirm|correct yes|
yes that's right|by all means|that works|works for me|true|lovely jubbly|bang on|
that'll do|happy with that|i am|we are|we do|it's right|is right|good|book it|go for it|
let's do it|let's do that""".replace("\n", "")

_NO = """no|nope|nah|na|no thanks|no thank you|not really|wrong|that's wrong|that is wrong|
incorrect|that's incorrect|negative|i don't think so|i do not think so|don't|do not|not at all|
never|no way|i don't|it isn't|it's not|it is not|that isn't|that's not it|not quite|
not exactly|nothing|no it isn't|don't want|do not want|rather not|i'd rather not|
no need|not now|not today|not that|false|cancel that|isn't|doesn't|it doesn't|i won't|
i wouldn't|not interested|none|no it's not|not yet|no that's wrong|absolutely not|
forget it|forget that|call it off|don't bother|
definitely not|certainly not|of course not""".replace("\n", "")

_UNSURE = """not sure|i'm not sure|unsure|don't know|do not know|dunno|no idea|maybe|perhaps|
possibly|might|not certain|i guess|let me think|hang on|hold on|wait|depends|
it depends|kind of|sort of|no rush|no hurry|in no rush|in no hurry|take your time|
one moment|one sec|one second|just a sec|just a second|just a minute""".replace("\n", "")

# "Cancel" / "scrap it" as the whole answer is a no; "scrap my reservation" names what to
# cancel, which is a request (an intent), not an answer.
_CANCEL_RE = re.compile(r"(?:(?:no|please) )?(?:cancel|scrap)(?: (?:it|that|this))?(?: please)?")

# Politeness that means yes only when it is the whole answer: "please" / "cheers" to "shall I
# book it?" is a yes, "please scrap the booking" and "that's all, cheers" are not.
_POLITE_YES = frozenset({"please", "cheers", "ta", "thanks", "thank", "you", "ok", "okay"})
_POLITE_YES_CORE = frozenset({"please", "cheers", "ta"})

# A yes-word right after one of these flips to no ("not right", "isn't correct").
_NEGATORS = r"(?:not|isn't|aren't|wasn't|don't|doesn't|didn't|no longer|never|hardly)"


def _alternation(phrases: str) -> str:
    items = sorted({p.strip() for p in phrases.split("|") if p.strip()}, key=len, reverse=True)
    return "|".join(re.escape(p) for p in items)


_YES_RE = re.compile(rf"\b(?:{_alternation(_YES)})\b")
_NO_RE = re.compile(rf"\b(?:{_alternation(_NO)})\b")
_UNSURE_RE = re.compile(rf"\b(?:{_alternation(_UNSURE)})\b")
_NEGATED_YES_RE = re.compile(
    rf"\b{_NEGATORS} (?:(?:quite|really|very|totally|exactly|that|it|so|at all) )?"
    rf"(?:{_alternation(_YES)})\b"
)
# Idioms that read as "no" word by word but mean "yes"/"go on" ("no problem", "why not").
_YES_IDIOMS = re.compile(
    r"\b(?:no problem|no worries|not a problem|no bother|can't complain|couldn't be better|"
    r"that's no problem|not wrong|no doubt)\b"
)
_NO_IDIOMS = re.compile(
    r"\b(?:not correct|not right|not true|not ok|not okay|not fine|"
    r"(?:definitely|certainly|absolutely|of course|really|sure|please) not)\b"
)
# Assent noises that the filler remover would otherwise erase.
_ASSENT_NOISES = re.compile(r"^\W*(?:uh[ -]?huh|mm[ -]?hmm|mhm|mm+)\W*$")


def _phrase_words(*phrase_lists: str) -> frozenset[str]:
    return frozenset(w for pl in phrase_lists for p in pl.split("|") for w in p.split())


# Every word that can make an answer yes or no: an answer without one is None at once (most
# utterances the intent matcher sees are not yes/no answers; this skips the regexes).
_TRIGGERS = _phrase_words(_YES, _NO, "no problem|no worries|not a problem|no bother|"
                          "can't complain|couldn't be better|not wrong|no doubt|"
                          "cancel scrap please cheers ta")


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no, None when neither (or both, or unsure)."""
    if _ASSENT_NOISES.match(text.lower()):
        return True
    t = strip_punctuation(clean(text))
    if not t or _TRIGGERS.isdisjoint(t.split()) or _UNSURE_RE.search(t):
        return None
    # Remove idioms first so their words are not counted again.
    yes_idiom = bool(_YES_IDIOMS.search(t))
    t = _YES_IDIOMS.sub(" ", t)
    negated = bool(_NO_IDIOMS.search(t) or _NEGATED_YES_RE.search(t))
    t = _NO_IDIOMS.sub(" ", _NEGATED_YES_RE.sub(" ", t))
    no = negated or bool(_NO_RE.search(t)) or bool(_CANCEL_RE.fullmatch(t.strip()))
    yes = yes_idiom or bool(_YES_RE.search(t))
    if not yes and not no:
        ws = t.split()
        yes = set(ws) <= _POLITE_YES and not _POLITE_YES_CORE.isdisjoint(ws)
    if yes and no:
        return None
    if yes:
        return True
    if no:
        return False
    return None


def dtmf_yes_no(digits: str) -> bool | None:
    """Keypad yes/no: 1 = yes, 2 = no (the convention flow-format.md documents)."""
    d = digits.strip().rstrip("#")
    if d == "1":
        return True
    if d == "2":
        return False
    return None
