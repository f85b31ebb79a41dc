"""Structured logs: one JSON object per line, the call UUID on every line, caller data redacted.

Why contextvars: a server runs hundreds of calls in one event loop; the call UUID must follow
each call's tasks without being passed to every function. `call_context(uuid)` sets it for the
current task; tasks created inside inherit it (asyncio copies the context), so a log line from a
provider or a tool call deep inside a call still carries `"call": "<uuid>"`.

Settings (environment, read by `setup_logging()` unless given as arguments):
- `FLOWAGENT_LOG_LEVEL`: DEBUG, INFO (default), WARNING, ERROR
- `FLOWAGENT_LOG_FORMAT`: `json` (default when not a terminal) or `text`
- `FLOWAGENT_REDACT`: `1` replaces phone numbers, emails and UK postcodes in messages and
  string fields with `[phone]`, `[email]`, `[postcode]`.
Secrets are masked always, redaction or not: `Bearer <token>`, `Secret: ...`, `api_key=...`,
and `sk-...`-style keys.

API for the runtime:
    setup_logging(level=None, fmt=None, redact=None, stream=None) -> None
    with call_context(call_uuid): ...          # sync or async code
    current_call() -> str | None
    redact_text(text) -> str                   # the same rules, for call records if wanted
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

_CALL: contextvars.ContextVar[str | None] = contextvars.ContextVar("flowagent_call", default=None)

# --- redaction rules --------------------------------------------------------------------------
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# UK postcodes, with or without the space (e.g. "SW1A 1AA", "m11ae", "EC1V 9HQ")
_POSTCODE = re.compile(
    r"\b(?:GIR ?0AA|[A-PR-UWYZ](?:[0-9][0-9A-HJKPSTUW]?|[A-HK-Y][0-9][0-9ABEHMNPRVWXY]?)"
    r" ?[0-9][ABD-HJLNP-UW-Z]{2})\b",
    re.IGNORECASE,
)
# phone numbers: 7+ digits, allowing a leading + and spaces/dashes/dots/brackets between groups
_PHONE = re.compile(r"(?<![\w\-.])\+?\(?\d(?:[\s\-()]{0,2}\d){6,}(?![\w\-])")
_SECRETS = [
    (re.compile(r"(?i)\b(Bearer|Token)\s+[A-Za-z0-9._~+/=\-]{6,}"), r"\1 [secret]"),
    (re.compile(r"(?i)\b(secret|password|api[_-]?key|token|authorization)(\"?\s*[:=]\s*\"?)"
                r"[^\s\",;&]+"), r"\1\2[secret]"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "[secret]"),
]

_REDACT = False


def redact_text(text: str) -> str:
    """Caller data out of `text`: emails, UK postcodes, phone numbers (in that order, so an
    email's digits are not mistaken for a phone number)."""
    text = _EMAIL.sub("[email]", text)
    text = _POSTCODE.sub("[postcode]", text)
    return _PHONE.sub("[phone]", text)


def mask_secrets(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any, redact: bool) -> Any:
    if isinstance(value, str):
        value = mask_secrets(value)
        return redact_text(value) if redact else value
    if isinstance(value, dict):
        return {k: _clean(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, redact) for v in value]
    return value


# --- call context -----------------------------------------------------------------------------


@contextlib.contextmanager
def call_context(call_uuid: str) -> Iterator[None]:
    """Every log line inside this block (and in tasks started inside it) carries the call UUID."""
    token = _CALL.set(call_uuid)
    try:
        yield
    finally:
        _CALL.reset(token)


def current_call() -> str | None:
    return _CALL.get()


# --- formatters -------------------------------------------------------------------------------

#: LogRecord attributes that are not user `extra=` fields
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                           "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, call, then `extra=` fields."""

    def __init__(self, redact: bool | None = None) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        redact = _REDACT if self.redact is None else self.redact
        extras = _extras(record)
        call = _CALL.get() or extras.pop("call", None)
        extras.pop("call", None)
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _clean(record.getMessage(), redact),
        }
        if call:
            entry["call"] = call
        for key, value in extras.items():
            entry[key] = _clean(value if _jsonable(value) else repr(value), redact)
        if record.exc_info:
            entry["exc"] = _clean(self.formatException(record.exc_info), redact)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human lines for a terminal: time level logger [call] message key=value..."""

    def __init__(self, redact: bool | None = None) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        redact = _REDACT if self.redact is None else self.redact
        extras = _extras(record)
        call = _CALL.get() or extras.pop("call", None)
        extras.pop("call", None)
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        parts = [when, f"{record.levelname:<7}", record.name]
        if call:
            parts.append(f"[{str(call)[:8]}]")
        parts.append(_clean(record.getMessage(), redact))
        parts.extend(f"{k}={_clean(str(v), redact)}" for k, v in extras.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + _clean(self.formatException(record.exc_info), redact)
        return line


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | dict | list | tuple)


# --- setup ------------------------------------------------------------------------------------

_HANDLER_FLAG = "_flowagent_handler"


def setup_logging(
    level: str | None = None,
    fmt: str | None = None,
    redact: bool | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Configure the root logger once (idempotent: replaces our own handler, keeps others)."""
    global _REDACT
    level_name = (level or os.environ.get("FLOWAGENT_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    stream = stream if stream is not None else sys.stderr
    fmt = (fmt or os.environ.get("FLOWAGENT_LOG_FORMAT") or "").lower()
    if fmt not in ("json", "text"):
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    if redact is None:
        redact = os.environ.get("FLOWAGENT_REDACT", "").strip().lower() in ("1", "true", "yes")
    _REDACT = redact
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # chatty libraries stay at WARNING unless we debug
    for name in ("aiohttp.access", "websockets", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG
                                         else logging.WARNING)
