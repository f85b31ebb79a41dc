"""Webhooks to an operator's URL, AVR-compatible in shape, signed, retried, never in the way.

Body (JSON): `{"uuid", "type", "timestamp", "payload"}` with `type` one of `call_initiated`,
`call_started`, `transcription`, `interruption`, `dtmf_digit`, `call_ended` (payload of
`call_ended` is the call record). Headers: `X-AVR-WEBHOOK-SECRET: <secret>` (the shared-secret
header AVR Core sends) and `X-Flowagent-Signature: sha256=<hex HMAC-SHA256 of the body keyed by
the secret>` so receivers can verify the body as well as the sender.

Every event carries an `Idempotency-Key` header: the same event delivered twice (after a
crash, or a receiver that answered too late) has the same key and the same body, so a receiver
can drop the second.

Why an outbox: a slow or dead receiver must never delay audio or a call's end, and an event must
not die with the node that made it. Once a runtime attaches its store (`attach()`), events are
written to the store's `webhook_outbox` table by the record writer (in the same transactions
as the records), and `OutboxDelivery` — on every node — claims due events for a lease, sends
them with a timeout and marks them delivered, or schedules them again with a growing pause
(4xx other than 429: given up at once). A node killed mid-delivery leaves its events to the
others when their lease runs out: each event is delivered at least once. Without a store
(a bare `Webhooks()` in a test) events go through a bounded in-memory queue, as before.
Only `call_initiated` is awaited by the session — with a short timeout — because its JSON
answer may override the flow (`flow`) or the STS URL (`sts_url`); it is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from flowagent.server.call_store import OutboxEvent

if TYPE_CHECKING:
    from flowagent.server.call_store import StoreBackend
    from flowagent.server.record_writer import RecordWriter

log = logging.getLogger(__name__)

SECRET_HEADER = "X-AVR-WEBHOOK-SECRET"
SIGNATURE_HEADER = "X-Flowagent-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


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
    #: outbox: how long a node keeps events it claimed before others may take them, how often
    #: idle nodes look for due events, and how many attempts before an event is given up
    lease_s: float = 30.0
    poll_s: float = 1.0
    max_attempts: int = 12
    max_pause_s: float = 300.0


class Webhooks:
    """`emit(uuid, type, payload)` queues an event; `call_initiated(...)` sends one and waits."""

    def __init__(self, config: WebhookConfig | None = None) -> None:
        self.config = config or WebhookConfig()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[bytes, str]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._writer: RecordWriter | None = None
        self.delivery: OutboxDelivery | None = None

    def attach(self, writer: RecordWriter, store: StoreBackend, node: str,
               metrics: Any = None) -> None:
        """Send events through the store's outbox (written by `writer`, delivered by every
        node's `OutboxDelivery`)."""
        if not self.enabled:
            return
        self._writer = writer
        self.delivery = OutboxDelivery(self, store, node, metrics)
        writer.on_events_written = self.delivery.poke

    def event(self, uuid: str, type_: str, payload: dict[str, Any] | None = None,
              key: str = "") -> OutboxEvent:
        """The event as the outbox keeps it (its body is final: a re-delivery is identical)."""
        return OutboxEvent(key or uuidlib.uuid4().hex, uuid, type_,
                           self._body(uuid, type_, payload or {}))

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

    def _headers(self, body: bytes, key: str = "") -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if key:
            h[IDEMPOTENCY_HEADER] = key
        if self.config.secret:
            h[SECRET_HEADER] = self.config.secret
            h[SIGNATURE_HEADER] = sign(self.config.secret, body)
        return h

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _ensure_started(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(self.config.queue_size)
            self._ensure_session()
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._worker(), name=f"webhook-{i}")
                for i in range(self.config.workers)
            ]

    def emit(self, uuid: str, type_: str, payload: dict[str, Any] | None = None,
             key: str = "") -> None:
        """Queue an event; never blocks and never raises. `key` is its idempotency key (one
        is made when not given)."""
        if not self.enabled:
            return
        try:
            event = self.event(uuid, type_, payload, key)
            if self._writer is not None:
                self._writer.add_event(event)
                return
            self._ensure_started()
            assert self._queue is not None
            self._queue.put_nowait((event.body, event.key))
        except asyncio.QueueFull:
            self.dropped += 1
        except Exception as exc:  # webhooks never affect a call
            log.warning("webhook %s not queued: %s", type_, exc)

    async def call_initiated(self, uuid: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send `call_initiated` and return the receiver's JSON object answer (or {})."""
        if not self.enabled:
            return {}
        try:
            self._ensure_session()
            answer = await self.post(self._body(uuid, "call_initiated", payload), retries=0,
                                      key=uuidlib.uuid4().hex)
        except Exception as exc:
            log.warning("call_initiated webhook failed: %s", exc)
            return {}
        return answer if isinstance(answer, dict) else {}

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            body, key = await self._queue.get()
            try:
                await self.post(body, retries=self.config.retries, key=key)
            except Exception as exc:
                self.failed += 1
                log.warning("webhook to %s failed: %s", self.config.url, exc)
            finally:
                self._queue.task_done()

    async def post(self, body: bytes, retries: int, key: str = "") -> Any:
        session = self._ensure_session()
        delay = self.config.backoff_s
        for attempt in range(retries + 1):
            try:
                async with session.post(
                    self.config.url,
                    data=body,
                    headers=self._headers(body, key),
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                ) as resp:
                    if resp.status >= 500 or resp.status == 429:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message="server error"
                        )
                    if resp.status >= 400:
                        log.warning("webhook rejected with HTTP %s", resp.status)
                        raise Rejected(resp.status)
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
        if self.delivery is not None:
            await self.delivery.drain(timeout_s)
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)

    async def close(self) -> None:
        if self.delivery is not None:
            await self.delivery.stop()
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


class Rejected(Exception):
    """The receiver answered 4xx (not 429): sending the same body again cannot help."""

    def __init__(self, status: int) -> None:
        super().__init__(f"rejected with HTTP {status}")
        self.status = status


class OutboxDelivery:
    """Delivers the outbox's due events from this node: claims a batch for a lease, sends them
    (a few at a time), marks them delivered or schedules them again. Woken at once when this
    node's own events are written; otherwise looks every `poll_s` for events other nodes left."""

    BATCH = 50
    PARALLEL = 8

    def __init__(self, hooks: Webhooks, store: StoreBackend, node: str,
                 metrics: Any = None) -> None:
        self.hooks = hooks
        self.store = store
        self.node = node
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.last_error = ""

    def poke(self) -> None:
        if self._stopped:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="webhook-outbox")
        self._wake.set()

    def start(self) -> None:
        self.poke()

    async def _run(self) -> None:
        cfg = self.hooks.config
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), cfg.poll_s)
            self._wake.clear()
            try:
                while await self.deliver_due():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: the record writer says so too
                self.last_error = str(exc) or exc.__class__.__name__
                log.debug("webhook outbox: %s", self.last_error)

    async def deliver_due(self) -> int:
        """One batch: claim, send, settle. Returns how many events were claimed."""
        cfg = self.hooks.config
        events = await self.store.outbox_claim(self.node, self.BATCH, cfg.lease_s)
        if not events:
            return 0
        gate = asyncio.Semaphore(self.PARALLEL)
        results = await asyncio.gather(*(self._send(e, gate) for e in events))
        done = [e.id for e, ok in zip(events, results, strict=True) if ok]
        if done:
            await self.store.outbox_delivered(done)
        return len(events)

    async def _send(self, event: OutboxEvent, gate: asyncio.Semaphore) -> bool:
        cfg = self.hooks.config
        async with gate:
            try:
                await self.hooks.post(event.body, retries=0, key=event.key)
                if self.metrics is not None:
                    self.metrics.webhooks_delivered += 1
                return True
            except Exception as exc:
                give_up = isinstance(exc, Rejected) or event.attempts + 1 >= cfg.max_attempts
                pause = min(cfg.max_pause_s, cfg.backoff_s * 5 * 2 ** event.attempts)
                reason = str(exc) or exc.__class__.__name__
                if self.metrics is not None:
                    if give_up:
                        self.metrics.webhooks_given_up += 1
                    else:
                        self.metrics.webhooks_retried += 1
                if give_up:
                    log.warning("webhook %s for %s given up after %d attempt(s): %s",
                                event.type, event.uuid, event.attempts + 1, reason)
                await self.store.outbox_retry(event.id, pause, reason, give_up)
                return False

    async def drain(self, timeout_s: float) -> None:
        """Deliver what is due now (shutdown), for at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(Exception):
            while time.monotonic() < deadline:
                left = deadline - time.monotonic()
                if not await asyncio.wait_for(self.deliver_due(), max(0.1, left)):
                    break

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
