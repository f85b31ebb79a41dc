"""Free-text addresses with a light clean-up: lead-ins stripped ("my address is"), words
title-cased, a postcode inside normalised ("flat 2, 14 high street, leeds ls11 5ab" ->
"Flat 2, 14 High Street, Leeds LS11 5AB") and reported separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowagent.understanding.normalise import clean
from flowagent.understanding.postcode import find_postcodes

_LEAD = re.compile(
    r"^(?:(?:yes|yeah|ok|okay|sure|so|right|well|it's|it is|its|that's|my address is|"
    r"the address is|address is|my address|we live at|i live at|we're at|i'm at|we are at|"
    r"it's at|moving from|moving to|from|to)\b[ ,:]*)+"
)
_KEEP_UPPER = re.compile(r"^[a-z]?\d+[a-z]?$")  # house numbers like 14a stay lower+digit


@dataclass(frozen=True, slots=True)
class AddressMatch:
    value: str
    postcode: str | None


def parse_address(text: str) -> AddressMatch | None:
    """A tidied address; None unless it has a house number/name word plus another word."""
    t = _LEAD.sub("", clean(text)).strip(" ,.")
    if not t:
        return None
    postcode = None
    pcs = find_postcodes(t)
    if pcs:
        p = pcs[-1]
        postcode = p.value
        t = t[: p.start] + p.value + t[p.end :]
    ws = t.split()
    if len(ws) < 2 and not postcode:
        return None
    out = []
    for w in ws:
        core = w.strip(",.")
        if postcode and core.upper() in postcode.split():
            out.append(w.upper())
        elif _KEEP_UPPER.match(core):
            out.append(w.upper() if core[-1].isalpha() else w)
        else:
            out.append(w[:1].upper() + w[1:])
    return AddressMatch(" ".join(out), postcode)
