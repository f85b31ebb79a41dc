"""Spoken digits and letters, shared by the phone, postcode and email parsers.

"oh seven seven double oh nine" -> "077009"; "L S one one" -> "LS11"; "jay oh aitch en" ->
"JOHN"-style letter names; optional NATO words ("alpha", "bravo"...).
"""

from __future__ import annotations

from flowagent.understanding.numbers import TEENS, TENS, UNITS

DIGIT_WORDS: dict[str, str] = {w: str(v) for w, v in UNITS.items()}
DIGIT_WORDS.update({"oh": "0", "o": "0"})
TEEN_DIGITS: dict[str, str] = {w: str(v) for w, v in TEENS.items()}
TENS_DIGITS: dict[str, str] = {w: str(v // 10) for w, v in TENS.items()}

LETTER_NAMES: dict[str, str] = {
    "ay": "a", "bee": "b", "be": "b", "see": "c", "sea": "c", "cee": "c", "dee": "d", "ee": "e",
    "eff": "f", "ef": "f", "gee": "g", "jee": "g", "aitch": "h", "haitch": "h", "eye": "i",
    "jay": "j", "kay": "k", "el": "l", "ell": "l", "em": "m", "en": "n", "pee": "p", "pea": "p",
    "queue": "q", "cue": "q", "ar": "r", "are": "r", "ess": "s", "es": "s", "tee": "t",
    "tea": "t", "you": "u", "yu": "u", "vee": "v", "doubleyou": "w", "ex": "x", "why": "y",
    "zed": "z", "zee": "z",
}
NATO: dict[str, str] = {
    "alpha": "a", "alfa": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e",
    "foxtrot": "f", "golf": "g", "hotel": "h", "india": "i", "juliet": "j", "juliett": "j",
    "kilo": "k", "lima": "l", "mike": "m", "november": "n", "oscar": "o", "papa": "p",
    "quebec": "q", "romeo": "r", "sierra": "s", "tango": "t", "uniform": "u", "victor": "v",
    "whiskey": "w", "whisky": "w", "xray": "x", "yankee": "y", "zulu": "z",
}


def digit_string(words: list[str]) -> str | None:
    """Digits of a run of spoken/written digit words, or None if a word is not a digit word.

    Handles "double"/"triple", teens ("eleven" -> 11), tens ("seventy seven" -> 77,
    "twenty" -> 20) and "hundred" (-> 00, as in "oh eight hundred").
    """
    out: list[str] = []
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        if w in ("double", "triple") and i + 1 < n:
            nxt = digit_string([words[i + 1]])
            if not nxt or len(nxt) != 1:
                return None
            out.append(nxt * (2 if w == "double" else 3))
            i += 2
            continue
        if w.isdigit():
            out.append(w)
        elif w in DIGIT_WORDS:
            out.append(DIGIT_WORDS[w])
        elif w in TEEN_DIGITS:
            out.append(TEEN_DIGITS[w])
        elif w in TENS_DIGITS:
            if i + 1 < n and words[i + 1] in UNITS and UNITS[words[i + 1]] > 0:
                out.append(TENS_DIGITS[w] + str(UNITS[words[i + 1]]))
                i += 1
            else:
                out.append(TENS_DIGITS[w] + "0")
        elif w == "hundred":
            out.append("00")
        elif w == "thousand":
            out.append("000")
        else:
            return None
        i += 1
    return "".join(out)


def is_digit_word(w: str) -> bool:
    """True for any word :func:`digit_string` accepts on its own (or as a prefix)."""
    return (
        w.isdigit()
        or w in DIGIT_WORDS
        or w in TEEN_DIGITS
        or w in TENS_DIGITS
        or w in ("double", "triple", "hundred", "thousand")
    )
