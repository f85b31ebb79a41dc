"""Drive the real dialogue engine by text and report it to a LiveHub like a live session does.

Shared by the hub test and the browser test (not a test module itself: no test functions).
"""

from __future__ import annotations

import time
from typing import Any

from flowagent.web import LiveHub

from .conftest import ROOT


def compiled_removals() -> Any:
    """The real engine's compiled flow (compile_flow works without the validator)."""
    from flowagent.flow import envrefs
    from flowagent.flow.compiler import compile_flow
    from flowagent.flow.loader import load_file

    path = ROOT / "flows/removals.yaml"
    return compile_flow(envrefs.expand(load_file(path).data), path=str(path))


class TextCall:
    """A call through the real engine by text, reported to the hub like a live session does."""

    def __init__(self, hub: LiveHub, uuid: str, caller: str) -> None:
        from flowagent.dialogue.text_driver import Conversation
        from flowagent.dialogue.tools import CannedTools, parse_canned

        tools = CannedTools(
            parse_canned({"get_quote": {"response": {"price": 450, "quote_id": "Q-1"}}}, "tools")
        )
        self.conv = Conversation(compiled_removals(), tools)
        self.hub, self.uuid, self.caller = hub, uuid, caller
        self._seen = 0
        self._slots: dict[str, Any] = {}

    def _report(self) -> None:
        actions = self.conv.executor.actions
        self.hub.feed_actions(self.uuid, actions[self._seen :])
        self._seen = len(actions)
        if self.conv.state and self.hub.get(self.uuid)["state"] != self.conv.state:
            self.hub.state_entered(self.uuid, self.conv.state)
        for name, value in self.conv.slots.items():
            if self._slots.get(name) != value:
                self._slots[name] = value
                self.hub.slot_filled(self.uuid, name, value)

    async def start(self) -> None:
        from flowagent.dialogue.events import CallInfo

        self.hub.call_started(self.uuid, flow=self.conv.flow.name, caller=self.caller)
        await self.conv.start(CallInfo(self.uuid, self.caller))
        self._report()

    async def say(self, text: str) -> None:
        self.hub.transcript(self.uuid, "caller", text)
        began = time.perf_counter()
        await self.conv.say(text)
        self.hub.turn_latency(self.uuid, (time.perf_counter() - began) * 1000)
        self._report()

    async def hangup(self) -> None:
        await self.conv.hangup()
        self._report()
        self.hub.call_ended(self.uuid, "hangup_by_caller")
