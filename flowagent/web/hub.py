"""The live view's memory: what each call in progress looks like now, and a feed of changes.

The call session (runtime) tells the hub what happens — call started, state entered, a line
spoken or heard, a slot filled, a turn's latency, call ended — and the hub keeps one snapshot per
live call and fans every change out to the WebSocket clients of the web page. It is deliberately
dumb and synchronous: publishing never blocks and never raises, so a slow browser cannot slow a
call (a client whose queue is full is dropped and reconnects).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from flowagent.dialogue import actions as act

#: how many finished calls stay visible on the "live" page before only the records have them
RECENT_ENDED = 20
QUEUE_SIZE = 1000


class LiveHub:
    """Snapshots of live calls + a broadcast feed. Use from the event loop's thread only."""

    def __init__(self, records: Any = None) -> None:
        self._calls: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        #: optional object with `add(record_dict)`: finished calls are handed to it
        self.records = records

    # -- what the runtime calls -------------------------------------------------------------

    def call_started(
        self, uuid: str, *, flow: str, caller: str = "", did: str = "", **extra: Any
    ) -> None:
        self._calls[uuid] = {
            "uuid": uuid,
            "flow": flow,
            "caller": caller,
            "did": did,
            "started_at": time.time(),
            "state": "",
            "states": [],
            "transcript": [],
            "slots": {},
            "latency": [],
            "ended": False,
            "outcome": "",
            **extra,
        }
        self._trim()
        self.publish({"type": "call_started", "uuid": uuid, "call": self._calls[uuid]})

    def state_entered(self, uuid: str, state: str) -> None:
        call = self._calls.get(uuid)
        if call is not None:
            call["state"] = state
            call["states"].append(state)
        self.publish({"type": "state", "uuid": uuid, "state": state})

    def transcript(self, uuid: str, who: str, text: str, **extra: Any) -> None:
        """One line: `who` is caller | agent | system."""
        call = self._calls.get(uuid)
        line = {"who": who, "text": text, "at": time.time(), **extra}
        if call is not None:
            line.setdefault("state", call["state"])
            call["transcript"].append(line)
        self.publish({"type": "transcript", "uuid": uuid, "line": line})

    def slot_filled(self, uuid: str, name: str, value: Any) -> None:
        value = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        call = self._calls.get(uuid)
        if call is not None:
            call["slots"][name] = value
        self.publish({"type": "slot", "uuid": uuid, "name": name, "value": value})

    def turn_latency(self, uuid: str, ms: float, *, state: str | None = None,
                     **parts: float | None) -> None:
        """Latency of one turn (end of caller speech -> first audio), milliseconds. `state` is
        the state the turn was answered in (the call record's); without it, the call's state
        now (which may already be a later one)."""
        call = self._calls.get(uuid)
        entry: dict[str, Any] = {"ms": round(ms, 1), **parts}
        if call is not None:
            entry["turn"] = len(call["latency"]) + 1  # 1-based, as every page numbers turns
            entry["state"] = state or call["state"]
            call["latency"].append(entry)
        self.publish({"type": "latency", "uuid": uuid, "entry": entry})

    def call_ended(
        self, uuid: str, outcome: str = "", record: dict[str, Any] | None = None
    ) -> None:
        call = self._calls.get(uuid)
        if call is not None:
            call["ended"] = True
            call["outcome"] = outcome or call.get("outcome", "")
        if record is not None and self.records is not None and hasattr(self.records, "add"):
            self.records.add(record)
        self.publish({"type": "call_ended", "uuid": uuid, "outcome": outcome})

    def feed_actions(self, uuid: str, actions: Iterable[Any]) -> None:
        """Translate engine actions into hub updates (state, agent lines, end); slots are read from
        the record (`watch.py`)."""
        for action in actions:
            if isinstance(action, act.StateEntered):
                self.state_entered(uuid, action.state)
            elif isinstance(action, act.Say):
                self.transcript(uuid, "agent", action.text)
            elif isinstance(action, act.Transfer):
                self.transcript(uuid, "system", f"transfer to {action.target}")
            elif isinstance(action, act.EndCall):
                call = self._calls.get(uuid)
                if call is not None:
                    call["outcome"] = action.reason

    # -- what the web page reads ------------------------------------------------------------

    def live(self) -> list[dict[str, Any]]:
        """Calls in progress first (newest first), then recently ended ones."""
        calls = list(reversed(self._calls.values()))
        return [c for c in calls if not c["ended"]] + [c for c in calls if c["ended"]]

    def get(self, uuid: str) -> dict[str, Any] | None:
        return self._calls.get(uuid)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("at", time.time())
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a stalled browser: drop it, it will reconnect
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    def close(self) -> None:
        """Tell every WebSocket client to finish (server shutdown)."""
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._subscribers.clear()

    def _trim(self) -> None:
        ended = [u for u, c in self._calls.items() if c["ended"]]
        for uuid in ended[: max(0, len(ended) - RECENT_ENDED)]:
            del self._calls[uuid]
