"""Checking a per-call speech-to-speech URL (`sts_url` from the `call_initiated` webhook).

Why a check at all: AVR Core lets the webhook that answers `call_initiated` point one call at
another STS service. That URL comes from outside the flow file, at run time, so it gets the
checks a flow author would otherwise have done by eye: a WebSocket (or http(s), which we map to
ws(s) as AVR's services accept both spellings) URL with a host — never `file:`, `javascript:` or
a bare word — and, for providers that send a secret with the handshake (OpenAI's API key), not
in clear text to another machine unless the flow's own URL is clear text too. A rejected URL is
never fatal: the caller gets the flow's own provider, and the reason is logged and recorded.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_sts_url(url: object, *, flow_url: str = "", sends_secret: bool = False) -> str:
    """The WebSocket URL to use for `url`, or ValueError with a one-sentence reason.

    `flow_url` is the flow's own URL for the provider; `sends_secret` says the provider puts a
    credential in the handshake (then a clear-text override to another host is refused unless
    the flow itself already uses clear text)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("sts_url must be a non-empty string")
    text = url.strip()
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError("sts_url contains spaces or control characters")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"sts_url is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        shown = f"{scheme}:" if scheme else "no scheme"
        raise ValueError(f"sts_url must start with ws://, wss://, http:// or https:// "
                         f"(got {shown})")
    host = parts.hostname or ""
    if not host:
        raise ValueError("sts_url has no host name")
    if parts.username or parts.password:
        raise ValueError("sts_url must not carry a user name or password")
    ws_scheme = _SCHEMES[scheme]
    if sends_secret and ws_scheme == "ws" and not _loopback(host):
        flow_clear = urlsplit(flow_url).scheme.lower() in ("ws", "http") if flow_url else False
        if not flow_clear:
            raise ValueError("sts_url uses clear text (ws:// or http://) to another machine, "
                             "which would send the provider's API key unencrypted")
    return urlunsplit((ws_scheme, parts.netloc, parts.path, parts.query, ""))
