"""Whether the words heard so far already answer what the call is waiting for.

Why: the end of a caller's turn is decided by silence, and one silence length cannot suit every
answer. After "yes" or a whole postcode a 600 ms wait is dead air; after "L S six ..." or "my
name is ..." it cuts a slow talker off. The dialogue engine knows what the current state asks
for, so it can judge the words of the turn in progress (a partial transcript) and the listener
picks the silence that ends the turn from the verdict (`runner/listener.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class AnswerFit(Enum):
    #: the words answer the question (the engine would move on): a short silence ends the turn
    COMPLETE = "complete"
    #: nothing the question wants is in them yet (the engine would ask again): wait longer
    INCOMPLETE = "incomplete"
    #: any words may be an answer (an LLM conversation, or an LLM decides what they mean):
    #: the flow's usual end-of-turn silence
    OPEN = "open"


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: words after which a caller usually goes on ("the fifth of ...", "to ...", "um ...")
_GOES_ON = _set("""
a an and the of to on at in for from by with or but so then um uh er erm hmm mm like my is
it's its it was be about around
""")
#: number words that usually start a longer number ("twenty ... five", "two hundred and ...")
_NUMBER_HEADS = _set("""
twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million point oh
""")
#: ordinals: a date said as "the fifth ..." usually goes on "... of March"
_ORDINALS = _set("""
first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth
fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth
""")
#: slot types whose value may grow with more words after a valid start ("Jane" -> "Jane Smith")
_OPEN_ENDED = frozenset({"name", "text", "address"})


def may_go_on(text: str, filled: Mapping[str, Any]) -> bool:
    """Words that make a valid answer but are often only its start: then the turn ends after
    the flow's usual silence, not the short one (a slow talker is not cut off after "my name
    is Jane" or "twenty"). `filled`: slot type -> the value the words would give it."""
    filled_types = frozenset(filled)
    words = [w.strip(".,!?;:\"'").lower() for w in text.split()]
    words = [w for w in words if w]
    if not words:
        return False
    last = words[-1]
    if last in _GOES_ON:
        return True
    numeric = {"integer", "number", "money", "digits", "phone", "date", "time"}
    if filled_types & numeric and last in _NUMBER_HEADS:
        return True
    if "date" in filled_types and (last in _ORDINALS or (last[:-2].isdigit()
                                   and last[-2:] in ("st", "nd", "rd", "th"))):
        return True
    # a name, an address or free text of one word may be the first of several
    return any(len(str(filled[t]).split()) == 1 for t in filled_types & _OPEN_ENDED)
