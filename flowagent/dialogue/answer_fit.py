"""Whether the words heard so far already answer what the call is waiting for.

Why: the end of a caller's turn is decided by silence, and one silence length cannot suit every
answer. After "yes" or a whole postcode a 600 ms wait is dead air; after "L S six ..." or "my
name is ..." it cuts a slow talker off. The dialogue engine knows what the current state asks
for, so it can judge the words of the turn in progress (a partial transcript) and the listener
picks the silence that ends the turn from the verdict (`runner/listener.py`).
"""

from __future__ import annotations

from enum import Enum


class AnswerFit(Enum):
    #: the words answer the question (the engine would move on): a short silence ends the turn
    COMPLETE = "complete"
    #: nothing the question wants is in them yet (the engine would ask again): wait longer
    INCOMPLETE = "incomplete"
    #: any words may be an answer (an LLM conversation, or an LLM decides what they mean):
    #: the flow's usual end-of-turn silence
    OPEN = "open"
