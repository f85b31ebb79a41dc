"""`context.fetch` on a live call (real AudioSocket caller, real HTTP context API on 127.0.0.1):
the fetched values reach the greeting; an answer bigger than the flow's
`settings.tool_response_limit_kb` is not read, and the call goes on with the static context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loopback import serve_app

FLOWS = Path(__file__).parent / "flows"


@pytest.mark.parametrize(("padding_kb", "company"), [
    (0, "Fetched Removals"),
    (8, "Test Removals"),  # over the 4 KB limit: the static context instead
])
async def test_the_context_api_answer_is_used_within_its_limit(
        harness: Any, tmp_path: Path, padding_kb: int, company: str) -> None:
    asked: list[str] = []

    async def context_api(request: web.Request) -> web.Response:
        asked.append(request.match_info["did"])
        return web.json_response({"company": "Fetched Removals",
                                  "padding": "x" * (padding_kb * 1024)})

    app = web.Application()
    app.router.add_get("/ctx/{did}", context_api)
    async with serve_app(app) as base:
        flow = tmp_path / "flow.yaml"
        flow.write_text((FLOWS / "basic.yaml").read_text()
                        .replace("settings:\n", "settings:\n  tool_response_limit_kb: 4\n", 1)
                        .replace("context:\n", "context:\n  fetch:\n"
                                 f"    url: \"{base}/ctx/{{{{ call.did }}}}\"\n", 1))
        h = await harness(flow)
        c = h.caller()
        await h.http("POST", "/call", json={"uuid": c.uuid,
                                            "metadata": {"did": "+441134960000"}})
        await c.connect()
        await c.wait_agent_quiet(0.3, timeout_s=10)
        await c.hangup()
        rec = await h.wait_record(c.uuid)
    assert asked == ["+441134960000"]
    greeting = next(e["text"] for e in rec["transcript"] if e["who"] == "agent")
    assert greeting.startswith(f"Hello, you're through to {company},")
