"""Run a flow's conversation tests for the web page, through the engine's test runner.

The runner is `flowagent.dialogue.conversation_tests`; this adapter only finds the tests file
beside the flow, runs the tests in a worker thread (they may be CPU-bound and must not stall
live calls) and turns whatever result objects come back into `{"name", "passed", "message"}`
dicts for the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

TestRunner = Callable[[Path, Path], Awaitable[list[dict[str, Any]]]]


def tests_file_for(flow_path: str | Path) -> Path | None:
    """`flows/removals.yaml` -> `flows/removals.tests.yaml` (the `flowagent test` default)."""
    p = Path(flow_path)
    for candidate in (p.with_suffix(".tests.yaml"), p.with_suffix(".tests.yml")):
        if candidate.is_file():
            return candidate
    return None


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def normalise(results: Any) -> list[dict[str, Any]]:
    """Accept a list of result objects/dicts, or an object holding them in `.results`/`.tests`."""
    items = _field(results, "results", "tests", default=results)
    out = []
    for item in items or []:
        passed = _field(item, "passed", "ok", "success", default=None)
        if passed is None:
            passed = not _field(item, "failures", "errors", default=[])
        message = _field(item, "message", "error", "failure", "reason", default="") or ""
        if isinstance(message, (list, tuple)):
            message = "; ".join(str(m) for m in message)
        out.append({"name": str(_field(item, "name", "title", default="test")),
                    "passed": bool(passed), "message": str(message)})
    return out


async def default_test_runner(flow_path: Path, tests_path: Path) -> list[dict[str, Any]]:
    """Compile the flow and run its tests file with `flowagent.dialogue.conversation_tests` (the
    same code as `flowagent test`), in a worker thread: the runner drives its own event loop."""
    from flowagent.dialogue import conversation_tests as convtest
    from flowagent.flow.compiler import FlowInvalid, load_flow

    def work() -> Any:
        try:
            flow = load_flow(flow_path)
        except FlowInvalid as exc:
            raise RuntimeError(f"the flow has errors ({exc})") from None
        try:
            specs, _ = convtest.load_tests(tests_path, flow.timezone)
        except convtest.TestFileError as exc:
            raise RuntimeError(str(exc)) from None
        return convtest.run_tests(flow, specs)

    return normalise(await asyncio.to_thread(work))
