"""Being one node of several: heart-beats, and closing the calls of a node that died.

Why heart-beats in the shared store rather than a membership protocol: the store is the one
thing every node already talks to, and what must happen when a node dies is a change in the
store (its live calls closed as `node_lost`, keeping the turns already written; their
`call_ended` webhooks put in the outbox). So every node writes its row in `nodes` every
`heartbeat_s` (status up / draining / stopped, calls in progress), and after each beat closes
the live calls of any node silent for `lost_after_s`. Several nodes may sweep at once: the
store's row locks let only one close each call. A node restarted with the same id closes its
previous run's calls itself at start-up (`recover()`), before it takes a call — so a single
node with SQLite gets the same guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from flowagent.server.call_store import NodeInfo, OutboxEvent, StoreBackend

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
LOST_AFTER_S = 10.0


def default_node_id(audiosocket_port: int) -> str:
    """`FLOWAGENT_NODE_ID`, else host name and AudioSocket port: stable across restarts (so a
    restarted node finds its previous run's calls) and distinct for several nodes per host."""
    return os.environ.get("FLOWAGENT_NODE_ID", "").strip() or \
        f"{socket.gethostname()}:{audiosocket_port}"


def env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds (got {raw!r}).") from None
    if value <= 0:
        raise ValueError(f"{name} must be more than 0 seconds (got {raw!r}).")
    return value


class NodeKeeper:
    def __init__(self, store: StoreBackend, node: NodeInfo, *,
                 active_calls: Callable[[], int], accepting: Callable[[], bool],
                 call_ended: Callable[[dict[str, Any]], OutboxEvent | None] | None = None,
                 heartbeat_s: float = HEARTBEAT_S, lost_after_s: float = LOST_AFTER_S,
                 on_lost: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.store = store
        self.node = node
        self.active_calls = active_calls
        self.accepting = accepting
        self.call_ended = call_ended
        self.heartbeat_s = heartbeat_s
        self.lost_after_s = max(lost_after_s, 2 * heartbeat_s)
        self.on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self.beats = 0
        self.failures = 0
        #: since when this node's heart-beats have succeeded without a gap (monotonic)
        self._writing_since: float | None = None

    async def recover(self) -> list[dict[str, Any]]:
        """At start-up, before any call: close the calls this node's previous run left live,
        then say this node is up."""
        lost = await self.store.mark_lost(
            self.lost_after_s, own_node=self.node.node_id,
            event=self._event if self.call_ended is not None else None)
        if lost:
            log.warning("%d call(s) left in progress by this node's previous run are closed"
                        " as node_lost (their records keep what was written)", len(lost))
        await self.beat()
        return lost

    def _event(self, record: dict[str, Any]) -> OutboxEvent | None:
        return None if self.call_ended is None else self.call_ended(record)

    async def beat(self, status: str | None = None) -> None:
        self.node.status = status or ("up" if self.accepting() else "draining")
        self.node.active_calls = self.active_calls()
        await self.store.heartbeat(self.node)
        self.beats += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
                now = time.monotonic()
                if self._writing_since is None:
                    self._writing_since = now
                # judge others only after writing our own beats for a whole silence period:
                # when the database comes back, the others need that long to beat again too
                if now - self._writing_since < self.lost_after_s:
                    continue
                lost = await self.store.mark_lost(
                    self.lost_after_s,
                    event=self._event if self.call_ended is not None else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: calls go on, records are queued
                self.failures += 1
                self._writing_since = None
                log.debug("heart-beat failed: %s", exc)
                continue
            if lost:
                nodes = sorted({str(r.get("node", "")) for r in lost})
                log.warning("%d call(s) of node(s) %s closed as node_lost: the node stopped"
                            " heart-beating", len(lost), ", ".join(nodes))
                if self.on_lost is not None:
                    self.on_lost(lost)

    async def stop(self, final_status: str = "stopped") -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.beat(final_status), 5)
