"""Telephone numbers as one canonical string (E.164) wherever they are compared or stored.

Why: a trunk may deliver the number dialled as `+441134960000`, `441134960000` or
`01134960000`, and a flow author may write any of those in `context.by_number` or a routes
file. To a string comparison they are three numbers; to the caller they are one. So every DID
and caller ID is read with `phonenumbers` (Google's libphonenumber), in the region of the
flow's locale (`en-GB` -> GB), and written `+441134960000`. What is not a telephone number
(an extension such as `6001`, Asterisk's `s`, "anonymous") is left as it was.
"""

from __future__ import annotations

import re

import phonenumbers

_DIALLABLE = re.compile(r"\+?[0-9]{5,17}")
_SEPARATORS = re.compile(r"[\s\-().]")


def region_of(language: str) -> str:
    """"en-GB" -> "GB" (phone numbers and dates are read with this region's conventions)."""
    lang = language or "en-GB"
    return lang.split("-", 1)[1].upper() if "-" in lang else "GB"


def to_e164(raw: str, region: str = "GB") -> str:
    """`raw` as +CCNNN... when it is a valid telephone number (national or international,
    with or without the +); otherwise `raw` unchanged."""
    text = (raw or "").strip()
    digits = _SEPARATORS.sub("", text)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not _DIALLABLE.fullmatch(digits):
        return text
    candidates = [digits] if digits.startswith("+") else [digits, "+" + digits]
    parsed = []
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        parsed.append(number)
    # a number of the right shape in a range not yet assigned (e.g. Ofcom's drama numbers,
    # 07700 900xxx): still one number however it was written
    if parsed and len(digits.lstrip("+")) >= 10 and phonenumbers.is_possible_number(parsed[0]):
        return phonenumbers.format_number(parsed[0], phonenumbers.PhoneNumberFormat.E164)
    return text
