"""Feed the live view from a running server without touching the call path.

The call session keeps everything the page shows — current state, record (transcript, slots),
per-turn latency rows — on plain attributes. `RuntimeWatcher` looks at `runtime.sessions` a few
times a second and turns what changed into `LiveHub` events. Why poll rather than have each
session push: it costs a call nothing (a few attribute reads and length comparisons per call per
tick, no allocation when nothing changed), a bug here can never break a call, and sessions need
no knowledge of the UI. 200 ms is well below what a person watching can notice.

Attributes read (of `runner.services.LiveCall`: a `PipelineCall` or `StsCall`): `state`,
`record` (`CallRecord`: `transcript`, `slots`, `outcome`), `info` (`caller`, `did`),
`entry.name`, `turns` (latency rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from flowagent.web.hub import LiveHub

log = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class _Seen:
    state: str = ""
    lines: int = 0
    turns: int = 0
    slots: dict[str, Any] = field(default_factory=dict)


class RuntimeWatcher:
    def __init__(self, runtime: Any, hub: LiveHub, interval_s: float = POLL_S) -> None:
        self.runtime = runtime
        self.hub = hub
        self.interval_s = interval_s
        self._seen: dict[str, _Seen] = {}
        self._outcomes: dict[str, Any] = {}

    def tick(self) -> None:
        """One look at every session; publish what changed since the last look."""
        sessions = dict(getattr(self.runtime, "sessions", {}) or {})
        for uuid, session in sessions.items():
            try:
                self._watch(uuid, session)
            except Exception:  # a half-built session: look again next tick
                log.debug("live view: session %s not readable yet", uuid, exc_info=True)
        for uuid in [u for u in self._seen if u not in sessions]:
            del self._seen[uuid]
            record = self._outcomes.pop(uuid, None)
            outcome = getattr(record, "outcome", "") if record is not None else ""
            self.hub.call_ended(uuid, outcome or "ended")

    def _watch(self, uuid: str, session: Any) -> None:
        record = getattr(session, "record", None)
        seen = self._seen.get(uuid)
        if seen is None:
            info = getattr(session, "info", None)
            entry = getattr(session, "entry", None)
            self.hub.call_started(
                uuid,
                flow=getattr(entry, "name", ""),
                caller=getattr(info, "caller", ""),
                did=getattr(info, "did", ""),
            )
            seen = self._seen[uuid] = _Seen()
        self._outcomes[uuid] = record
        if record is not None:
            transcript = record.transcript
            for entry in transcript[seen.lines :]:
                if entry.state and entry.state != seen.state:
                    seen.state = entry.state
                    self.hub.state_entered(uuid, entry.state)
                self.hub.transcript(uuid, entry.who, entry.text, state=entry.state)
            seen.lines = len(transcript)
            if record.slots != seen.slots:
                for name, value in record.slots.items():
                    if seen.slots.get(name, object()) != value:
                        self.hub.slot_filled(uuid, name, value)
                seen.slots = dict(record.slots)
        state = getattr(session, "state", "")
        if state and state != seen.state:
            seen.state = state
            self.hub.state_entered(uuid, state)
        turns = getattr(session, "turns", [])
        for row in turns[seen.turns :]:
            ms = row.get("first_frame_ms")
            self.hub.turn_latency(
                uuid,
                ms if isinstance(ms, (int, float)) else 0.0,
                state=str(row.get("state") or "") or None,
                **{k: v for k, v in row.items() if k.endswith("_ms") and k != "first_frame_ms"},
            )
        seen.turns = len(turns)

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s)


@contextlib.asynccontextmanager
async def watching(runtime: Any, hub: LiveHub, interval_s: float = POLL_S) -> Any:
    """Run a watcher for the duration of the block (the task is cancelled on exit)."""
    watcher = RuntimeWatcher(runtime, hub, interval_s)
    task = asyncio.create_task(watcher.run(), name="web-ui-watcher")
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
