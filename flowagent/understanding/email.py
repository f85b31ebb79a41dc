"""Email addresses, typed ("john.smith@gmail.com") or spoken ("john dot smith at gmail dot com",
"j o h n underscore smith at outlook dot co dot uk", "hyphen"/"dash").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean
from flowagent.understanding.spoken import DIGIT_WORDS

EMAIL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._%+'-]*[a-z0-9])?@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                      r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$")
_TYPED = re.compile(r"[a-z0-9._%+'-]+@[a-z0-9.-]+\.[a-z]{2,}")
_SYMBOLS: dict[str, str] = {
    "dot": ".", "period": ".", "point": ".", "underscore": "_", "under score": "_",
    "hyphen": "-", "dash": "-", "minus": "-", "plus": "+",
}
_CUE = re.compile(r"\b(?:e-?mail(?: address)?|address)(?: is|'s)?\b[ ,:]*")
_LEAD = re.compile(r"^(?:(?:yes|yeah|yep|sure|ok|okay|so|right|it's|it is|its|that's|that is|"
                   r"it'll be|use)\b[ ,:]*)+")
_TRAIL = re.compile(r"\b(?:thanks|thank you|please|cheers)\b.*$")
_KNOWN_DOMAINS = {"gmail": "gmail.com", "googlemail": "googlemail.com", "hotmail": "hotmail.com",
                  "outlook": "outlook.com", "yahoo": "yahoo.com", "icloud": "icloud.com"}


@dataclass(frozen=True, slots=True)
class EmailMatch:
    value: str
    start: int
    end: int


def _join(words: list[str]) -> str:
    out = []
    for w in words:
        if w in _SYMBOLS:
            out.append(_SYMBOLS[w])
        elif w in DIGIT_WORDS and w not in ("o",):
            out.append(DIGIT_WORDS[w] if w != "oh" else "o")
        else:
            out.append(w)
    return "".join(out)


def find_email(text: str) -> EmailMatch | None:
    """The email address in cleaned ``text`` (typed or spoken), or None."""
    m = _TYPED.search(text)
    if m:
        value = m.group().strip(".")
        return EmailMatch(value, m.start(), m.end()) if EMAIL_RE.match(value) else None
    if " at " not in f" {text} " and "@" not in text:
        return None
    t = text.replace("under score", "underscore")
    t = re.sub(r"\s*@\s*", " at ", t)
    t = _TRAIL.sub("", t)
    cues = list(_CUE.finditer(t))  # the last "email is" wins: the address follows it
    start = cues[-1].end() if cues else 0
    lead = _LEAD.match(t[start:])
    if lead:
        start += lead.end()
    body = t[start:]
    parts = re.split(r"\bat\b", body)
    if len(parts) < 2:
        return None
    local_words = re.findall(r"[a-z0-9'_.+-]+", " ".join(parts[:-1]))
    domain_words = re.findall(r"[a-z0-9_.-]+", parts[-1])
    if not local_words or not domain_words:
        return None
    local = _join(local_words).replace("'", "")
    if re.fullmatch(r"(?:[a-z0-9]-)+[a-z0-9]", local):  # spelled "J-O-H-N" -> "john"
        local = local.replace("-", "")
    domain = _join(domain_words)
    if "." not in domain and domain in _KNOWN_DOMAINS:
        domain = _KNOWN_DOMAINS[domain]
    value = f"{local}@{domain}"
    if not EMAIL_RE.match(value):
        return None
    return EmailMatch(value, start, len(text))


def parse_email(text: str) -> EmailMatch | None:
    return find_email(clean(text))
