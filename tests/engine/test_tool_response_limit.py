"""A tool's answer is read only up to the flow's limit (`settings.tool_response_limit_kb`),
against a real aiohttp server on 127.0.0.1: a body bigger than the limit — announced by its
Content-Length or streamed without one, even endlessly — fails the tool with a plain sentence
and the flow takes its failure path; nothing past the limit is kept in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from engine_helpers import flow_from_yaml
from loopback import serve_app

from flowagent.dialogue.actions import CallTool
from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import ToolRunner, close_shared_session


@dataclass
class Api:
    base: str = ""
    streamed: list[int] = field(default_factory=list)  # bytes the endless stream got out


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state = Api()

    async def sized(request: web.Request) -> web.Response:
        # a JSON string of n bytes in all, with a Content-Length
        n = int(request.match_info["n"])
        return web.Response(body=b'"' + b"a" * (n - 2) + b'"', content_type="application/json")

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)  # chunked: no Content-Length
        sent = 0
        try:
            await resp.write(b'"')
            while sent < 200 * 1024 * 1024:
                await resp.write(b"a" * 65536)
                sent += 65536
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            state.streamed.append(sent)
        return resp

    app = web.Application()
    app.router.add_get("/sized/{n}", sized)
    app.router.add_get("/endless", endless)
    async with serve_app(app) as url:
        state.base = url
        try:
            yield state
        finally:
            await close_shared_session()


def _call(url: str, limit: int) -> CallTool:
    return CallTool(1, "price_list", {"method": "GET", "url": url}, 5.0, 0, limit)


async def test_an_answer_at_the_limit_is_read(api: Api) -> None:
    res = await ToolRunner().run(_call(f"{api.base}/sized/{64 * 1024}", 64 * 1024))
    assert res.ok, res.error
    assert isinstance(res.data, str) and len(res.data) == 64 * 1024 - 2


async def test_a_bigger_answer_with_a_content_length_fails_in_plain_words(api: Api) -> None:
    res = await ToolRunner().run(_call(f"{api.base}/sized/{5 * 1024 * 1024}", 1024 * 1024))
    assert not res.ok and res.data is None
    assert res.error == ("The price_list tool's answer was larger than 1024 KB "
                         "(settings.tool_response_limit_kb), so it was not read.")


async def test_an_endless_streamed_answer_is_cut_off_at_the_limit(api: Api) -> None:
    res = await asyncio.wait_for(
        ToolRunner().run(_call(f"{api.base}/endless", 64 * 1024)), 10)
    assert not res.ok and "larger than 64 KB" in res.error
    for _ in range(100):  # the server notices the closed connection and stops sending
        if api.streamed:
            break
        await asyncio.sleep(0.05)
    # what got out before the connection closed is socket buffers, not the 200 MB on offer
    assert api.streamed and api.streamed[0] < 32 * 1024 * 1024


FLOW = """
flowagent: 1
name: limit-test
start: price
settings:
  tool_response_limit_kb: {limit_kb}
tools:
  prices:
    url: "{url}"
    save: {{list: response}}
    on_failure: failed
states:
  price:
    call: prices
    next: done
  done:
    say: "I have the price list."
    end: true
  failed:
    say: "Sorry, I cannot get the prices just now."
    end: true
"""


@pytest.mark.parametrize(("limit_kb", "said"), [
    (2, "Sorry, I cannot get the prices just now."),
    (4, "I have the price list."),
])
async def test_the_flow_setting_decides_and_a_too_big_answer_takes_the_failure_path(
    api: Api, limit_kb: int, said: str
) -> None:
    flow = flow_from_yaml(FLOW.format(limit_kb=limit_kb, url=f"{api.base}/sized/3000"))
    conv = Conversation(flow, ToolRunner())
    lines = await conv.start(CallInfo("c1"))
    assert lines[-1] == said
    failed = [t for t in conv.engine.record.tool_calls if not t.ok]
    assert bool(failed) == (limit_kb == 2)
    if failed:
        assert "larger than 2 KB" in (failed[0].error or "")
