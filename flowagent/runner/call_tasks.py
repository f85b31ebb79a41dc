"""Every task and timer one call starts, owned in one place and cancelled together at hang-up.

Why: a call runs many small concurrent jobs (the recogniser's reader, synthesis, an LLM stream,
a tool request, the no-input and max-duration timers). If any of them outlived the call it would
hold a socket, a model slot or memory for nobody. So nothing in a call uses
`asyncio.create_task` or `loop.call_later` directly: it asks its `CallTasks`, which keeps them,
reports a job that failed with an exception (that is a bug: the call's fallback is spoken), and
cancels them all when the call ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class CallTasks:
    def __init__(self, label: Callable[[], str],
                 on_failure: Callable[[str, BaseException], None]) -> None:
        self._label = label  # the call's UUID (for task names and log lines), read when used
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self._label()[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self.closed:
            log.error("call %s: task %s failed: %r", self._label(), task.get_name(), exc)
            self._on_failure(task.get_name(), exc)

    def timer(self, name: str, seconds: float, fn: Callable[[], None]) -> None:
        """Run `fn` after `seconds` (restarting a timer of the same name)."""
        self.cancel_timer(name)
        if self.closed:
            return

        def fire() -> None:
            self._timers.pop(name, None)
            if not self.closed:
                fn()

        self._timers[name] = asyncio.get_running_loop().call_later(seconds, fire)

    def cancel_timer(self, name: str) -> None:
        t = self._timers.pop(name, None)
        if t is not None:
            t.cancel()

    def has_timer(self, name: str) -> bool:
        return name in self._timers

    def stop_timers(self) -> None:
        self.closed = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()

    async def cancel_all(self, timeout_s: float = 2.0) -> None:
        """The call is over: no timer fires, every task is cancelled (and awaited, briefly)."""
        self.stop_timers()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
