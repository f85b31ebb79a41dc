"""Webhooks to an operator's URL, AVR-compatible in shape, signed, retried, never in the way.

Body (JSON): `{"uuid", "type", "timestamp", "payload"}` with `type` one of `call_initiated`,
`call_started`, `transcription`, `interruption`, `dtmf_digit`, `call_ended` (payload of
`call_ended` is the call record). Headers: `X-AVR-WEBHOOK-SECRET: <secret>` (the shared-secret
header AVR Core sends) and `X-Flowagent-Signature: sha256=<hex HMAC-SHA256 of the body keyed by
the secret>` so receivers can verify the body as well as the sender.

Why a bounded queue and worker tasks: a slow or dead receiver must never delay audio or a call's
end; events are queued (dropped and counted when the queue is full) and sent by a few workers
with a timeout and retries. Only `call_initiated` is awaited by the session — with a short
timeout — because its JSON answer may override the flow (`flow`) or the STS URL (`sts_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

SECRET_HEADER = "X-AVR-WEBHOOK-SECRET"
SIGNATURE_HEADER = "X-Flowagent-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


@dataclass
class WebhookConfig:
    url: str = ""
    secret: str = ""
    timeout_s: float = 3.0
    retries: int = 2
    backoff_s: float = 0.2
    queue_size: int = 10000
    workers: int = 4


class Webhooks:
    """`emit(uuid, type, payload)` queues an event; `call_initiated(...)` sends one and waits."""

    def __init__(self, config: WebhookConfig | None = None) -> None:
        self.config = config or WebhookConfig()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[bytes] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.config.url)

    def _body(self, uuid: str, type_: str, payload: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "uuid": uuid,
                "type": type_,
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "payload": payload,
            },
            default=str,
        ).encode()

    def _headers(self, body: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.config.secret:
            h[SECRET_HEADER] = self.config.secret
            h[SIGNATURE_HEADER] = sign(self.config.secret, body)
        return h

    def _ensure_started(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(self.config.queue_size)
            self._session = aiohttp.ClientSession()
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._worker(), name=f"webhook-{i}")
                for i in range(self.config.workers)
            ]

    def emit(self, uuid: str, type_: str, payload: dict[str, Any] | None = None) -> None:
        """Queue an event; never blocks and never raises."""
        if not self.enabled:
            return
        try:
            self._ensure_started()
            assert self._queue is not None
            self._queue.put_nowait(self._body(uuid, type_, payload or {}))
        except asyncio.QueueFull:
            self.dropped += 1
        except Exception as exc:  # webhooks never affect a call
            log.warning("webhook %s not queued: %s", type_, exc)

    async def call_initiated(self, uuid: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send `call_initiated` and return the receiver's JSON object answer (or {})."""
        if not self.enabled:
            return {}
        try:
            self._ensure_started()
            answer = await self._post(self._body(uuid, "call_initiated", payload), retries=0)
        except Exception as exc:
            log.warning("call_initiated webhook failed: %s", exc)
            return {}
        return answer if isinstance(answer, dict) else {}

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            body = await self._queue.get()
            try:
                await self._post(body, retries=self.config.retries)
            except Exception as exc:
                self.failed += 1
                log.warning("webhook to %s failed: %s", self.config.url, exc)
            finally:
                self._queue.task_done()

    async def _post(self, body: bytes, retries: int) -> Any:
        assert self._session is not None
        delay = self.config.backoff_s
        for attempt in range(retries + 1):
            try:
                async with self._session.post(
                    self.config.url,
                    data=body,
                    headers=self._headers(body),
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                ) as resp:
                    if resp.status >= 500 or resp.status == 429:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message="server error"
                        )
                    if resp.status >= 400:
                        self.failed += 1
                        log.warning("webhook rejected with HTTP %s", resp.status)
                        return None
                    self.sent += 1
                    text = await resp.text()
                    if not text.strip():
                        return None
                    with contextlib.suppress(ValueError):
                        return json.loads(text)
                    return None
            except (aiohttp.ClientError, TimeoutError):
                if attempt >= retries:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        return None

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Give queued events a chance to go out (used on shutdown)."""
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)

    async def close(self) -> None:
        for t in self._workers:
            t.cancel()
        for t in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._queue = None
