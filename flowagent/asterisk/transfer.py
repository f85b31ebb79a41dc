"""Carry out the engine's `Transfer` (and `EndCall`) on a live Asterisk call.

Two ways, chosen per call:
- **AMI** (when an `AmiClient` is configured and the call's channel name is known from
  `POST /call`): `Setvar FLOWAGENT_REASON`, then `Redirect` the caller's channel to the dialplan
  destination. Asterisk takes the channel out of `AudioSocket()` itself and closes our socket.
- **Socket ending** (no AMI, no channel, or AMI failed): the destination is recorded in a
  `TransferStore`; the session ends the AudioSocket (0x00 frame or close); the dialplan continues
  after `AudioSocket()` and reads the destination back with
  `GET /calls/{uuid}/transfer` (see `routes.py`), then `Goto`s it.

The destination is always recorded, so the dialplan finds it even if an AMI redirect was lost.

Targets (what a flow's `transfer:` renders to):
    "1001", "+441632960000"   -> flowagent-transfer,<target>,1
    "queue:sales"             -> flowagent-queue,sales,1
    "sales@support-context"   -> support-context,sales,1
Anything else is refused with a plain-English `ValueError`: the target ends up in a dialplan
`Goto`, so it must be a plain extension. Spaces, dashes and brackets in phone numbers are removed.

The reason is *spoken* by the session before it calls `transfer()` (the engine emits `Say` then
`Transfer`): wait for that playback to finish, then transfer.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from flowagent.asterisk.ami import AmiClient, AmiError

log = logging.getLogger("flowagent.transfer")

DEFAULT_CONTEXT = "flowagent-transfer"
QUEUE_CONTEXT = "flowagent-queue"

_EXTEN = re.compile(r"^[A-Za-z0-9+*#_.\-]{1,80}$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")
_PHONEISH = re.compile(r"^\+?[0-9 ()\-]{3,40}$")


@dataclass(frozen=True, slots=True)
class Destination:
    """A place in the dialplan."""

    context: str
    exten: str
    priority: int = 1

    def goto(self) -> str:
        """`context,exten,priority`, as the dialplan's `Goto()` / `GotoIf()` take it."""
        return f"{self.context},{self.exten},{self.priority}"


def parse_target(
    target: str, *, default_context: str = DEFAULT_CONTEXT, queue_context: str = QUEUE_CONTEXT
) -> Destination:
    """Turn a flow's transfer target into a dialplan destination (see module docstring)."""
    text = (target or "").strip()
    if not text:
        raise ValueError("The transfer target is empty; give an extension, number or queue.")
    context = default_context
    if text.lower().startswith("queue:"):
        context, text = queue_context, text[len("queue:"):].strip()
    elif "@" in text:
        text, _, context = text.partition("@")
        text, context = text.strip(), context.strip()
    if _PHONEISH.match(text):
        text = re.sub(r"[ ()\-]", "", text)
    if not _EXTEN.match(text):
        raise ValueError(
            f"The transfer target {target!r} is not a plain extension, number or queue name "
            "(letters, digits and + * # . _ - only)."
        )
    if context == queue_context and len(text) < 2:
        raise ValueError(f"The queue name in {target!r} must be at least two characters long.")
    if not _CONTEXT.match(context):
        raise ValueError(f"The dialplan context {context!r} in {target!r} is not a valid name.")
    return Destination(context, text)


@dataclass(frozen=True, slots=True)
class PendingTransfer:
    destination: Destination
    reason: str
    at: float  # monotonic seconds


class TransferStore:
    """Transfer destinations by call UUID, for the dialplan to read back after the socket ends.

    Bounded (oldest dropped first) and entries expire, so an API that is never asked cannot grow
    memory: the dialplan reads within milliseconds of the socket ending."""

    def __init__(self, *, max_entries: int = 10000, ttl_s: float = 3600.0) -> None:
        self._items: OrderedDict[str, PendingTransfer] = OrderedDict()
        self.max_entries = max_entries
        self.ttl_s = ttl_s

    def put(self, call_uuid: str, destination: Destination, reason: str = "") -> None:
        self._items.pop(call_uuid, None)
        self._items[call_uuid] = PendingTransfer(destination, reason, time.monotonic())
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def get(self, call_uuid: str) -> PendingTransfer | None:
        item = self._items.get(call_uuid)
        if item is not None and time.monotonic() - item.at > self.ttl_s:
            del self._items[call_uuid]
            return None
        return item

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What happened: `method` tells the session what to do next.
    - "ami": Asterisk already moved the channel; just wait for the socket to close (or close it).
    - "socket": end the AudioSocket now (0x00 frame, then close); the dialplan does the rest.
    """

    method: Literal["ami", "socket"]
    destination: Destination | None
    detail: str = ""


class Transferer:
    """Transfers and hang-ups for live calls; one per server, shared by all calls."""

    def __init__(
        self,
        *,
        ami: AmiClient | None = None,
        store: TransferStore | None = None,
        default_context: str = DEFAULT_CONTEXT,
        queue_context: str = QUEUE_CONTEXT,
    ) -> None:
        self.ami = ami
        self.store = store if store is not None else TransferStore()
        self.default_context = default_context
        self.queue_context = queue_context

    @classmethod
    def from_env(cls, ami: AmiClient | None = None,
                 environ: Mapping[str, str] | None = None) -> Transferer:
        """Contexts from `FLOWAGENT_TRANSFER_CONTEXT` / `FLOWAGENT_QUEUE_CONTEXT`."""
        env = os.environ if environ is None else environ
        return cls(ami=ami,
                   default_context=env.get("FLOWAGENT_TRANSFER_CONTEXT") or DEFAULT_CONTEXT,
                   queue_context=env.get("FLOWAGENT_QUEUE_CONTEXT") or QUEUE_CONTEXT)

    def resolve(self, target: str) -> Destination:
        return parse_target(target, default_context=self.default_context,
                            queue_context=self.queue_context)

    async def transfer(self, call_uuid: str, channel: str, target: str,
                       reason: str = "") -> TransferResult:
        """Blind-transfer the caller. Raises ValueError only for a malformed target (the flow's
        error path should handle it); Asterisk-side failures fall back to the socket path."""
        destination = self.resolve(target)
        self.store.put(call_uuid, destination, reason)
        if self.ami is None or not channel:
            why = "no AMI configured" if self.ami is None else "channel name unknown"
            return TransferResult("socket", destination, why)
        try:
            if reason:
                await self.ami.setvar(channel, "FLOWAGENT_REASON", _one_line(reason))
            await self.ami.redirect(channel, destination.context, destination.exten,
                                    destination.priority)
        except AmiError as exc:
            log.warning("AMI transfer failed, ending the socket instead: %s", exc,
                        extra={"call": call_uuid})
            return TransferResult("socket", destination, str(exc))
        log.info("transferred through AMI to %s", destination.goto(), extra={"call": call_uuid})
        return TransferResult("ami", destination, "redirected")

    async def hangup(self, call_uuid: str, channel: str) -> TransferResult:
        """End the call. Through AMI when possible (works for the Dial(AudioSocket) variant
        too); otherwise the session closes the socket and the dialplan's `Hangup()` runs."""
        if self.ami is not None and channel:
            try:
                await self.ami.hangup(channel)
                return TransferResult("ami", None, "hung up")
            except AmiError as exc:
                log.warning("AMI hangup failed, ending the socket instead: %s", exc,
                            extra={"call": call_uuid})
                return TransferResult("socket", None, str(exc))
        return TransferResult("socket", None, "no AMI" if self.ami is None else "no channel")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
