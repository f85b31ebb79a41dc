"""Personal names: "my name is Sarah Jones", "it's Dave", "Sarah", "this is Mr O'Brien" ->
"Sarah Jones", "Dave", "Sarah", "Mr O'Brien". Fillers and lead-ins are stripped, the result is
title-cased (keeping O'Brien, McDonald, Smith-Jones), and answers that are clearly not names
("I don't know", "why", "no") are rejected.

The value, not the sentence: carrier words around a name are not part of it ("to Dave",
"right, pay it to Ana", "the payment's for Chloe", "my friend Lucy", "put it under Mrs
O'Neill" -> "Dave", "Ana", "Chloe", "Lucy", "Mrs O'Neill"). When the whole answer is not a
name, the name is the run of one to three name-like words that the carrier words leave; with
capitals in the text (typed chat, or a recogniser that capitalises names) only capitalised
words count. A command ("cancel that", "never mind") is never a name.
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
    bedroom bedrooms house flat move moving postcode date today tomorrow sure maybe
    work works working worked suit suits suited either neither that this these those them
    fine good great free busy available monday tuesday wednesday thursday friday saturday
    sunday morning afternoon evening week weekend instead other another different time
    times slot slots day days"""
)
_NAME_WORD = re.compile(r"^(?![a-z']*n't$)[a-z][a-z'-]*$")  # "doesn't", "won't": never a name
# Words around a name in an answer that are never part of it: verbs of paying and sending,
# people's roles, politeness, commands. A name is looked for among the words left.
_CARRIER = wordset(
    """pay paid paying send sending sent give transfer put under for to from called named
    name name's names is it it's its that's the a an my our his her their your payment
    payment's money cash friend mate pal buddy landlord landlady brother sister mum mom dad
    mother father son daughter wife husband partner boyfriend girlfriend boss builder plumber
    cleaner neighbour colleague uncle auntie aunt cousin nan gran grandma grandad please
    thanks thank cheers right okay ok alright yes yeah no erm er um hmm so well oh and but
    also just actually sorry meant mean said should be make wait hang hold on one sec moment
    minute same last time thing one's order account person people someone somebody cancel
    never mind forget scrap stop leave back menu start again repeat what who how back him her
    them he she they we us me i i'm im you as at in on of with by about than like if or all
    any some there here this that these those then now later soon today tomorrow up down out
    off over not don't do does did can could would will was were are be been have has had
    get got go going gone come coming see know think sure fine good great lovely much many
    more less other another new old mobile number phone email address postcode code details
    bank card bill account amount pounds quid euros dollars lot bit little big small"""
)
_COMMAND = re.compile(
    r"\b(?:cancel|never ?mind|forget (?:it|that|about it)|scrap (?:it|that)|stop|"
    r"start (?:again|over)|go back|speak to|talk to|repeat|say that again)\b"
)
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


def capitalised_words(text: str) -> frozenset[str]:
    """Lower-cased words written with a capital in ``text`` (not "I"): a hint of names when
    the text has casing (typed, or a recogniser that capitalises names). Empty when the text
    is all lower case (no hint either way)."""
    out = set()
    for m in _CAPS.finditer(text):
        w = m.group().lower().replace("\u2019", "'")
        if w not in ("i", "i'm", "i'd", "i've", "i'll"):
            out.add(w)
    return frozenset(out)


_CAPS = re.compile(r"(?<![\w'@])[A-Z][A-Za-z'\u2019-]*")


def parse_name(text: str, *, max_words: int = 4, caps: frozenset[str] | None = None
               ) -> str | None:
    """A caller's name from an answer, title-cased; None if it does not look like a name.

    ``caps``: words written with a capital in the caller's own text (default: read from
    ``text``), preferred when the name has to be picked out of carrier words."""
    if caps is None:
        caps = capitalised_words(text)
    t = clean(text)
    if _COMMAND.search(t):
        return None
    whole = _parse_whole(t, max_words)
    if whole is not None and not any(
        w.lower() in _CARRIER and w.lower() not in _TITLES for w in whole.split()
    ):
        return whole
    return _name_among_carriers(t, caps)


def _name_among_carriers(t: str, caps: frozenset[str]) -> str | None:
    """The one run of 1-3 name-like words left when carrier words are set aside: "right, pay
    it to Ana" -> "Ana". None when there is none or more than one."""
    ws = re.findall(r"[\w'@-]+|[^\w\s]", t)
    runs: list[list[str]] = []
    cur: list[str] = []
    for w in ws:
        ok = (bool(_NAME_WORD.match(w)) and w not in _CARRIER and w not in _NOT_NAMES
              and not is_number_word(w)) or (w in _TITLES)
        if ok and caps and w not in caps and w not in _TITLES:
            ok = False
        if ok:
            cur.append(w)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    runs = [r for r in runs if not all(w in _TITLES for w in r)]
    if len(runs) != 1 or len(runs[0]) > 3:
        return None
    return " ".join(_title_word(w) for w in runs[0])


def _parse_whole(t: str, max_words: int) -> str | None:
    """The whole answer as a name once lead-ins and trailers are stripped, else None."""
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
    r"(?P<name>[a-z][a-z'-]*(?:\s+[a-z][a-z'-]*){0,2})"
)


_WEAK_CUE = re.compile(r"\b(?:to|for|called|named|pay|paying|under|payee)\s+(?P<name>[a-z])")


def find_name(text: str, caps: frozenset[str] = frozenset()) -> tuple[str, int, int] | None:
    """A name introduced by a cue inside a longer utterance ("hi, my name is Sarah, I need...").

    Only cue phrases count, so a name is never guessed from arbitrary words; the second word is
    kept only if it also reads as a name. With ``caps`` (the caller's words written with a
    capital, see :func:`capitalised_words`) a name after "to", "for", "pay", "called" counts
    too, when it is written with a capital ("pay Sam 30", "some money to Priya").
    """
    found = _find_cued(text)
    if found is not None or not caps:
        return found
    for m in _WEAK_CUE.finditer(text):
        # "pay my mate Kev": carrier words may stand between the cue and the name
        kept: list[tuple[str, int, int]] = []
        for w in re.finditer(r"[a-z][a-z'-]*", text[m.start("name"):]):
            word = w.group()
            named = (word in caps and word not in _CARRIER and word not in _NOT_NAMES
                     and not is_number_word(word))
            if named and len(kept) < 2:
                kept.append((word, m.start("name") + w.start(), m.start("name") + w.end()))
                continue
            if kept or word not in _CARRIER or w.start() > 24:
                break
        if kept:
            return " ".join(_title_word(w) for w, _, _ in kept), kept[0][1], kept[-1][2]
    return None


def _find_cued(text: str) -> tuple[str, int, int] | None:
    for m in _CUE.finditer(text):
        words = m.group("name").split()
        lead = 0
        while lead < len(words) - 1 and words[lead] in ("for", "to", "under", "called"):
            lead += 1  # "it's for Anna"
        kept: list[str] = []
        for w in words[lead:]:
            if w in _CARRIER and w not in _TITLES:
                break
            if w in _NOT_NAMES or w in ("looking", "calling", "ringing", "moving", "trying"):
                break
            kept.append(w)
        if kept:
            weak_cue = m.group(0).startswith(("i'm", "i am", "it's"))
            if weak_cue and not _looks_like_name_after_im(kept[0]):
                continue
            name = " ".join(_title_word(w) for w in kept)
            start = m.start("name") + len(" ".join(words[:lead])) + (1 if lead else 0)
            return name, start, start + len(" ".join(kept))
    return None


_NOT_AFTER_IM = wordset(
    """a an the in at on from moving calling looking trying going just not so very
    sorry fine good okay ok about after interested wondering hoping after planning
    ringing phoning"""
)


def _looks_like_name_after_im(w: str) -> bool:
    """After "I'm"/"it's", only a word that is not a common adjective/verb counts as a name."""
    return w not in _NOT_AFTER_IM and not w.endswith(("ing", "ed", "ly")) and len(w) > 1
