"""Whole answers that are commands to the agent, not values: "cancel that", "never mind",
"forget it", "say that again", "can I speak to someone".

Why: a free-text or code slot takes almost any words, so without this check "Hmm, cancel that,
please" became the value `HMMCANCELTHATPLEASE`. The engine asks the flow's intents first; this
is the parsers' own guard, for flows that answer no such intent.
"""

from __future__ import annotations

import re

from flowagent.understanding.normalise import clean

_POLITE = (r"(?: ?(?:hmm|oh|ah|ok|okay|right|actually|sorry|no|please|just|um|erm|look|wait|"
           r"hang on|hold on|one sec|one moment|thanks|thank you)\b ?)*")
_COMMANDS = (
    r"cancel(?: (?:that|it|this|everything|all that|the whole thing))?",
    r"never ?mind(?: (?:then|that))?", r"forget (?:it|that|about it|the whole thing)",
    r"scrap (?:it|that|this)", r"stop(?: (?:it|that|there))?", r"leave it",
    r"don't worry(?: about it)?", r"start (?:again|over)", r"go back",
    r"(?:can you |could you )?(?:repeat|say) (?:that|it)(?: again)?", r"repeat",
    r"(?:can i |could i |i want to |i'd like to )?(?:speak|talk) to (?:a |an |the |some)"
    r"(?:one|body|person|human|agent|operator|manager)\w*",
)
_COMMAND_RE = re.compile(rf"^{_POLITE}(?:{'|'.join(_COMMANDS)}){_POLITE}$")
_PUNCT = re.compile(r"[,.!?;:]")


def is_command(text: str) -> bool:
    """Is the whole answer a command (cancel, never mind, repeat, a person...) rather than a
    value? Only the whole answer counts: "the toilet won't stop running" is a value."""
    t = " ".join(_PUNCT.sub(" ", clean(text)).split())
    return bool(_COMMAND_RE.match(t))


# A question opens with a question word or an auxiliary verb before "you"/"we"/"there"/"it"
# ("do you have vegetarian pizzas", "is there parking", "what sizes do you do"); a request
# opens otherwise ("can I get two large pepperonis", "two hawaiians please").
_QUESTION_RE = re.compile(
    r"^(?:(?:hi|hello|yeah|yes|ok|okay|right|so|and|oh|um|erm|sorry)\s+)*"
    r"(?:what|which|how|why|when|where|who|whose|"
    r"(?:do|does|did|is|are|was|were|have|has|will|would|could|can)\s+"
    r"(?:you|ye|we|there|it|they|that|this|these|those|the|your|any)\b)"
)


def is_question(text: str) -> bool:
    """Does the answer ask something rather than say something? A question about a value
    ("do you have vegetarian pizzas") does not give that value."""
    t = " ".join(_PUNCT.sub(" ", clean(text)).split())
    return t.endswith("?") or bool(_QUESTION_RE.match(t)) or text.rstrip().endswith("?")
