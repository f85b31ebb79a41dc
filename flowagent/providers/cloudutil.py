"""Plumbing shared by the cloud providers: G.711 μ-law, error wording, WebSocket connect, SSE.

Why one module: every cloud provider must turn the same handful of failures (key rejected, rate
limited, server error, unreachable, stalled, dropped, malformed) into one plain-English
`ProviderError` sentence, and must do it the same way so the runtime's fallback and the logs read
alike. μ-law lives here because `audioop` is gone in Python 3.13 and two providers need it
(ElevenLabs `ulaw_8000`, OpenAI Realtime `audio/pcmu`); the tables themselves are in
`flowagent.audio` (Asterisk's chan_websocket carries G.711 too).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from flowagent.audio import pcm_to_ulaw, ulaw_to_pcm
from flowagent.providers.base import ProviderError, ProviderTimeout

__all__ = ["pcm_to_ulaw", "ulaw_to_pcm"]  # G.711 lives in flowagent.audio; re-exported here

# ---------------------------------------------------------------------------------------------
# Error wording
# ---------------------------------------------------------------------------------------------


def status_error(provider: str, status: int, detail: str = "", what: str = "") -> ProviderError:
    """One sentence for an HTTP status (handshake or request)."""
    label = what or provider
    detail = _short(detail)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        return ProviderError(
            f"{label} rejected the API key (HTTP {status}){suffix}; check the key in the flow's "
            "providers block or its environment variable.",
            provider=provider,
        )
    if status == 429:
        return ProviderError(
            f"{label} is rate limiting us (HTTP 429){suffix}.", provider=provider)
    if status == 404:
        return ProviderError(
            f"{label} answered HTTP 404{suffix}; check the URL, model or voice id.",
            provider=provider,
        )
    if status >= 500:
        return ProviderError(
            f"{label} had a server error (HTTP {status}){suffix}.", provider=provider,
        )
    return ProviderError(f"{label} refused the request (HTTP {status}){suffix}.", provider=provider)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_detail(body: str) -> str:
    """Pull a human message out of a JSON error body ({"error": {"message": ...}} and kin)."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return _short(body)
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            for key in ("message", "description", "detail", "err_msg", "title"):
                if isinstance(err.get(key), str):
                    return _short(err[key])
        elif isinstance(err, str):
            return _short(err)
        for key in ("message", "description", "detail", "err_msg"):
            if isinstance(data.get(key), str):
                return _short(data[key])
    return _short(body)


def closed_error(
    provider: str, exc: ConnectionClosed, meanings: Mapping[int, str]
) -> ProviderError:
    """A WebSocket that closed under us, with the provider's documented close-code meaning."""
    rcvd = exc.rcvd
    if rcvd is None:
        return ProviderError(
            f"{provider} dropped the connection without a close frame.",
            provider=provider,
        )
    meaning = meanings.get(rcvd.code, "")
    reason = _short(rcvd.reason)
    parts = [f"{provider} closed the connection (code {rcvd.code}"]
    parts.append(f", {reason})" if reason else ")")
    if meaning:
        parts.append(f": {meaning}")
    return ProviderError("".join(parts) + ".", provider=provider)


async def ws_connect(
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
    max_size: int | None = 16 * 1024 * 1024,
) -> ClientConnection:
    """Open a WebSocket with the failure modes worded for people (no proxies, bounded wait)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await connect(
                url,
                additional_headers=dict(headers or {}),
                proxy=None,
                open_timeout=None,
                max_size=max_size,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                compression=None,
            )
    except TimeoutError:
        raise ProviderTimeout(
            f"{provider} did not accept the connection within {timeout_s:g} s.",
            provider=provider,
        ) from None
    except InvalidStatus as exc:
        resp = exc.response
        body = resp.body.decode("utf-8", "replace") if resp.body else ""
        raise status_error(provider, resp.status_code, error_detail(body)) from None
    except InvalidHandshake as exc:
        raise ProviderError(
            f"{provider} answered with something that is not a WebSocket ({exc}).",
            provider=provider,
        ) from None
    except OSError as exc:
        raise ProviderError(
            f"Could not reach {provider} ({exc.strerror or exc}).", provider=provider,
        ) from None


# ---------------------------------------------------------------------------------------------
# HTTP streaming (SSE) with a bounded retry before the first byte
# ---------------------------------------------------------------------------------------------


def retry_after_s(headers: Mapping[str, str], default: float) -> float:
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        return default


async def post_stream(
    session: aiohttp.ClientSession,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    body: dict[str, Any],
    connect_timeout_s: float,
    max_retries: int,
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504, 529),
    max_retry_wait_s: float = 4.0,
) -> aiohttp.ClientResponse:
    """POST and return a 200 response whose body is still streaming.

    Retries 429/5xx/unreachable up to `max_retries` times (Retry-After honoured, capped) — only
    here, before any token reached the caller, so a retry can never repeat words already spoken.
    """
    attempt = 0
    while True:
        delay = 0.25 * (2**attempt)
        try:
            resp = await session.post(
                url,
                json=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
            )
        except (aiohttp.ClientConnectionError, OSError) as exc:
            err: ProviderError = ProviderError(
                f"Could not reach {provider} ({exc}).", provider=provider)
        else:
            if resp.status == 200:
                return resp
            try:
                async with asyncio.timeout(connect_timeout_s):
                    text = await resp.text()
            except (TimeoutError, aiohttp.ClientError):
                text = ""
            resp.release()
            err = status_error(provider, resp.status, error_detail(text))
            if resp.status not in retry_statuses:
                raise err
            delay = retry_after_s(resp.headers, delay)
        if attempt >= max_retries:
            raise err
        if delay > max_retry_wait_s:
            raise err
        attempt += 1
        await asyncio.sleep(delay)


class Deadline:
    """Per-read deadlines: a first-token limit, then an idle limit, all inside a total limit."""

    def __init__(self, total_s: float, first_s: float, idle_s: float) -> None:
        self.start = time.monotonic()
        self.total_s = total_s
        self.first_s = first_s
        self.idle_s = idle_s
        self.got_first = False

    def next_wait(self) -> tuple[float, str]:
        now = time.monotonic()
        left_total = self.start + self.total_s - now
        if not self.got_first:
            left = min(self.start + self.first_s - now, left_total)
            why = "first_token" if left < left_total else "total"
        else:
            left = min(self.idle_s, left_total)
            why = "idle" if left < left_total else "total"
        return max(0.0, left), why


async def sse_events(
    resp: aiohttp.ClientResponse, deadline: Deadline, provider: str
) -> AsyncIterator[tuple[str, str]]:
    """Yield (event, data) pairs from a text/event-stream body, each read under `deadline`.

    Follows the WHATWG EventSource parsing rules we need: `event:`/`data:` fields, multi-line
    data joined with newlines, comments (`:`) ignored, a blank line dispatches."""
    event, data_lines = "", list[str]()
    while True:
        wait, why = deadline.next_wait()
        try:
            async with asyncio.timeout(wait):
                raw = await resp.content.readline()
        except TimeoutError:
            raise _timeout(provider, why, deadline) from None
        except aiohttp.ClientPayloadError as exc:
            raise ProviderError(
                f"{provider} dropped the connection mid-reply ({exc.__class__.__name__}).",
                provider=provider,
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"{provider} connection failed mid-reply ({exc}).", provider=provider,
            ) from None
        if not raw:
            if data_lines:
                yield event or "message", "\n".join(data_lines)
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data_lines:
                yield event or "message", "\n".join(data_lines)
            event, data_lines = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data_lines.append(value)


def _timeout(provider: str, why: str, deadline: Deadline) -> ProviderTimeout:
    if why == "first_token":
        msg = f"{provider} sent no reply within {deadline.first_s:g} s."
    elif why == "idle":
        msg = f"{provider} stalled for {deadline.idle_s:g} s in the middle of a reply."
    else:
        msg = f"{provider} did not finish its reply within {deadline.total_s:g} s."
    return ProviderTimeout(msg, provider=provider)


def parse_json(provider: str, text: str | bytes) -> dict[str, Any]:
    """json.loads for a provider message; anything but a JSON object is a ProviderError."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        raise ProviderError(
            f"{provider} sent a message that is not valid JSON: {_short(str(text)[:80])!r}.",
            provider=provider,
        ) from None
    if not isinstance(data, dict):
        raise ProviderError(f"{provider} sent a JSON message that is not an object.",
                            provider=provider)
    return data


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a task we own and wait for it, swallowing its outcome (cleanup path)."""
    if task is None or task.done():
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # mark retrieved
        return
    task.cancel()
    try:
        await task
    except BaseException:  # cleanup: the task's fate is already decided
        pass


def build_options(cls: type[Any], options: Mapping[str, Any], provider: str) -> Any:
    """Options dataclass from a flow's `providers:` block: unknown names are an error, and
    strings from `${ENV}` expansion are coerced to the field's type ("true", "300", "0.5")."""
    import dataclasses

    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{provider} has no option {', '.join(unknown)}; known options: "
            f"{', '.join(sorted(known))}."
        )
    values: dict[str, Any] = {}
    for name, value in options.items():
        f = known[name]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        values[name] = _coerce(value, default, provider, name)
    return cls(**values)


def _coerce(value: Any, default: Any, provider: str, name: str) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if isinstance(default, bool):
            low = value.strip().lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            return [v.strip() for v in value.split(",") if v.strip()]
    except ValueError:
        kind = {bool: "true/false value", int: "whole number", float: "number"}.get(
            type(default), type(default).__name__)
        raise ValueError(f"{provider} option {name} has value {value!r}, which is not a "
                         f"{kind}.") from None
    return value


#: Put on a provider's output queue to end the stream its reader feeds.
END_OF_STREAM = object()


async def drain(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """Yield what a provider's reader task puts on `queue` until `END_OF_STREAM`.

    Why one helper: every WebSocket provider has a reader task that turns server messages into
    items for the caller; a failure is delivered in-band (the exception is queued and raised
    here, in the consumer's task) so it reaches the call session as a `ProviderError`.
    """
    while True:
        item = await queue.get()
        if item is END_OF_STREAM:
            return
        if isinstance(item, BaseException):
            raise item
        yield item

