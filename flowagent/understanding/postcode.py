"""UK postcodes, typed or spoken: "LS11 5AB", "ls115ab", "L S one one, five A B",
"el ess eleven five ay bee", NATO words ("lima sierra one one..."); normalised "LS11 5AB".

Validated against the UK postcode format (outward code: area + district; inward code: sector
digit + two unit letters, which never use C I K M O V). An outward code alone ("LS1") is
recognised but is not a full postcode.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean
from flowagent.understanding.numbers import UNITS
from flowagent.understanding.spoken import LETTER_NAMES, NATO, TEEN_DIGITS, TENS_DIGITS

# The letters allowed in each position (Royal Mail / gov.uk bulk data transfer standard).
_OUTWARD = (
    r"(?:[A-PR-UWYZ][0-9]{1,2}|[A-PR-UWYZ][A-HK-Y][0-9]{1,2}|[A-PR-UWYZ][0-9][A-HJKPS-UW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRV-Y])"
)
_INWARD = r"[0-9][ABD-HJLNP-UW-Z]{2}"
FULL_RE = re.compile(rf"^(?:{_OUTWARD}{_INWARD}|GIR0AA)$")
OUTWARD_RE = re.compile(rf"^{_OUTWARD}$")
_TYPED_RE = re.compile(rf"\b({_OUTWARD}) ?({_INWARD})\b", re.IGNORECASE)

_DIGITISH = re.compile(
    r"\d|\b(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|"
    r"fifty|sixty|seventy|eighty|ninety|double|nought)\b"
)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # "it's" is one word, not "it" + "s"
_MAX_CHARS = 7


@dataclass(frozen=True, slots=True)
class PostcodeMatch:
    """A postcode found in cleaned text; ``full`` is False for an outward code alone."""

    value: str
    start: int
    end: int
    full: bool = True


def normalise_postcode(raw: str) -> str | None:
    """"ls115ab" / "LS11 5AB" / "ls11  5ab" -> "LS11 5AB"; None if it is not a valid postcode."""
    s = re.sub(r"\s+", "", raw).upper()
    if not FULL_RE.match(s):
        return None
    return f"{s[:-3]} {s[-3:]}"


def is_valid_postcode(raw: str) -> bool:
    return normalise_postcode(raw) is not None


def _options(tok: str, nxt: str | None) -> tuple[list[str], int] | None:
    """What one spoken token can stand for (upper-case chars), and how many tokens it uses."""
    if tok == "double" and nxt is not None:
        inner = _options(nxt, None)
        if inner and all(len(o) == 1 for o in inner[0]):
            return [o * 2 for o in inner[0]], 2
        return None
    if tok in ("oh", "o"):
        return ["0", "O"], 1
    if tok in UNITS:
        return [str(UNITS[tok])], 1
    if tok in TEEN_DIGITS:
        return [TEEN_DIGITS[tok]], 1
    if tok in TENS_DIGITS:
        if nxt in UNITS and UNITS[nxt] > 0:
            return [TENS_DIGITS[tok] + str(UNITS[nxt])], 2
        return [TENS_DIGITS[tok] + "0"], 1
    if tok in LETTER_NAMES:
        return [LETTER_NAMES[tok].upper()], 1
    if tok in NATO:
        return [NATO[tok].upper()], 1
    if tok == "double" or len(tok) > _MAX_CHARS:
        return None
    if len(tok) <= 2 and tok.isalpha():
        return [tok.upper()], 1
    if any(c.isdigit() for c in tok):
        return [tok.upper()], 1
    return None


def find_postcodes(text: str, *, partial: bool = False) -> list[PostcodeMatch]:
    """Full postcodes in cleaned ``text`` (longest, leftmost, not overlapping).

    With ``partial``, outward codes alone ("LS1") are reported too, as ``full=False``.
    """
    out: list[PostcodeMatch] = []
    for m in _TYPED_RE.finditer(text):
        norm = normalise_postcode(m.group(1) + m.group(2))
        if norm:
            out.append(PostcodeMatch(norm, m.start(), m.end()))
    if not _DIGITISH.search(text):
        return out  # no digit, said or written: no postcode
    toks = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    units: list[tuple[list[str], int, int]] = []  # options, start char, end char
    i = 0
    while i < len(toks):
        got = _options(toks[i][0], toks[i + 1][0] if i + 1 < len(toks) else None)
        if got is None:
            units.append(([], toks[i][1], toks[i][2]))
            i += 1
            continue
        opts, used = got
        units.append((opts, toks[i][1], toks[i + used - 1][2]))
        i += used
    # A postcode has a digit in its first four characters, so it starts at most three units
    # before a unit that holds a digit.
    near_digit: set[int] = set()
    for j, u in enumerate(units):
        if any(c.isdigit() for o in u[0] for c in o):
            near_digit.update(range(max(0, j - 3), j + 1))
    i = 0
    while i < len(units):
        # A postcode starts with a letter; most words cannot start one.
        if i not in near_digit or not any(o[0].isalpha() for o in units[i][0]) or any(
            o.start <= units[i][1] < o.end for o in out
        ):
            i += 1
            continue
        best: tuple[str, int, bool] | None = None  # value, last unit index, full
        prefixes = [""]
        for j in range(i, len(units)):
            opts = units[j][0]
            if not opts:
                break
            prefixes = [
                p + o for p, o in itertools.product(prefixes, opts) if len(p + o) <= _MAX_CHARS
            ]
            if not prefixes:
                break
            for p in prefixes:
                if FULL_RE.match(p):
                    best = (f"{p[:-3]} {p[-3:]}", j, True)
                elif partial and OUTWARD_RE.match(p) and (best is None or not best[2]):
                    best = (p, j, False)
        start, end = units[i][1], units[best[1]][2] if best is not None else 0
        if best is not None and (best[2] or _outward_is_plausible(best[0])) and not any(
            o.start < end and start < o.end for o in out  # a typed match wins ("a M1 5AB")
        ):
            out.append(PostcodeMatch(best[0], start, end, best[2]))
            i = best[1] + 1
        else:
            i += 1
    out.sort(key=lambda p: p.start)
    return out


def _outward_is_plausible(code: str) -> bool:
    """An outward code on its own must look deliberate: letters then a digit ("LS1", "M1")."""
    return bool(re.match(r"^[A-Z]{1,2}[0-9]", code))


def parse_postcode(text: str) -> PostcodeMatch | None:
    """The postcode in an answer: a full one if said, else an outward code (``full=False``)."""
    found = find_postcodes(clean(text), partial=True)
    full = [p for p in found if p.full]
    if full:
        return full[0]
    return found[0] if found else None
