"""Personal names: "my name is Sarah Jones", "it's Dave", "Sarah", "this is Mr O'Brien" ->
"Sarah Jones", "Dave", "Sarah", "Mr O'Brien". Fillers and lead-ins are stripped, the result is
title-cased (keeping O'Brien, McDonald, Smith-Jones), and answers that are clearly not names
("I don't know", "why", "no") are rejected.
"""

from __future__ import annotations

import re

from flowagent.understanding.normalise import clean, wordset
from flowagent.understanding.numbers import is_number_word

_LEAD = re.compile(
    r"^(?:(?:yes|yeah|yep|ok|okay|sure|hi|hello|hiya|right|so|well|oh|um|erm|it's|it is|its|"
    r"this is|that's|that is|i'm|i am|im|my name is|my name's|name's|the name's|name is|"
    r"my full name is|call me|you can call me|they call me|it's called|speaking to|"
    r"you're speaking to|you're speaking with|my first name is|first name|surname|"
    r"my surname is|last name)\b[ ,.:]*)+"
)
_TRAIL = re.compile(
    r"[ ,.]*\b(?:speaking|here|thanks|thank you|please|cheers|mate|love)\b.*$|[ ,.!?]+$"
)
_NOT_NAMES = wordset(
    """i me you he she it we they what why who how when where no not don't dont know yes yeah
    sorry pardon the a an and or but is are was be do does did can could would should will
    have has had my your our their please thanks thank okay ok hello hi bye goodbye nothing
    none nobody someone person human agent operator quote booking want need like just really
    bedroom bedrooms house flat move moving postcode date today tomorrow sure maybe"""
)
_NAME_WORD = re.compile(r"^[a-z][a-z'-]*$")
_TITLES = {"mr": "Mr", "mrs": "Mrs", "ms": "Ms", "miss": "Miss", "dr": "Dr", "doctor": "Dr"}


def _title_word(w: str) -> str:
    if w in _TITLES:
        return _TITLES[w]
    parts = re.split(r"([-'])", w)
    out = []
    for p in parts:
        if p in ("-", "'"):
            out.append(p)
        elif p.startswith("mc") and len(p) > 3:
            out.append("Mc" + p[2:].capitalize())
        else:
            out.append(p.capitalize())
    s = "".join(out)
    # "o'brien" -> "O'Brien", but "d'arcy" too; a trailing "'s" stays lower-case.
    return re.sub(r"'S$", "'s", s)


def parse_name(text: str, *, max_words: int = 4) -> str | None:
    """A caller's name from an answer, title-cased; None if it does not look like a name."""
    t = clean(text)
    t = _LEAD.sub("", t)
    t = _TRAIL.sub("", t)
    t = t.replace(".", " ").replace(",", " ")
    ws = t.split()
    if not ws:
        return None
    # Spelled out: "s a r a h" -> "sarah".
    if len(ws) >= 3 and all(len(w) == 1 for w in ws):
        ws = ["".join(ws)]
    if len(ws) > max_words:
        return None
    if any(not _NAME_WORD.match(w) for w in ws):
        return None
    if any(w in _NOT_NAMES for w in ws if w not in _TITLES):
        return None
    if any(is_number_word(w) for w in ws):
        return None
    return " ".join(_title_word(w) for w in ws)


_CUE = re.compile(
    r"\b(?:my name is|my name's|name's|this is|i'm|i am|it's|call me)\s+"
    r"(?P<name>[a-z][a-z'-]*(?:\s+[a-z][a-z'-]*)?)"
)


def find_name(text: str) -> tuple[str, int, int] | None:
    """A name introduced by a cue inside a longer utterance ("hi, my name is Sarah, I need...").

    Only cue phrases count, so a name is never guessed from arbitrary words; the second word is
    kept only if it also reads as a name.
    """
    for m in _CUE.finditer(text):
        words = m.group("name").split()
        kept: list[str] = []
        for w in words:
            if w in _NOT_NAMES or w in ("looking", "calling", "ringing", "moving", "trying"):
                break
            kept.append(w)
        if kept:
            weak_cue = m.group(0).startswith(("i'm", "i am", "it's"))
            if weak_cue and not _looks_like_name_after_im(kept[0]):
                continue
            name = " ".join(_title_word(w) for w in kept)
            end = m.start("name") + len(" ".join(kept))
            return name, m.start("name"), end
    return None


_NOT_AFTER_IM = wordset(
    """a an the in at on from moving calling looking trying going just not so very
    sorry fine good okay ok about after interested wondering hoping after planning
    ringing phoning"""
)


def _looks_like_name_after_im(w: str) -> bool:
    """After "I'm"/"it's", only a word that is not a common adjective/verb counts as a name."""
    return w not in _NOT_AFTER_IM and not w.endswith(("ing", "ed", "ly")) and len(w) > 1
