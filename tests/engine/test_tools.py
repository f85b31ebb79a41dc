"""ToolRunner against a real aiohttp server on 127.0.0.1: success, timeouts, retries, 5xx, 4xx,
bad JSON; python tools; canned responses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from flowagent.dialogue.actions import CallTool
from flowagent.dialogue.tools import (
    CannedTools,
    ToolRunner,
    close_shared_session,
    parse_canned,
    register_tool,
)


@pytest.fixture(autouse=True)
async def _close_shared_session() -> Any:
    yield
    await close_shared_session()


@pytest.fixture
async def server() -> Any:
    hits: dict[str, int] = {}
    seen: list[dict[str, Any]] = []

    async def quote(request: web.Request) -> web.Response:
        hits["quote"] = hits.get("quote", 0) + 1
        seen.append({"json": await request.json(), "auth": request.headers.get("Authorization")})
        return web.json_response({"price": 450, "quote_id": "Q-1"})

    async def flaky(request: web.Request) -> web.Response:
        hits["flaky"] = hits.get("flaky", 0) + 1
        if hits["flaky"] < 3:
            return web.Response(status=503, text="busy")
        return web.json_response({"ok": True})

    async def always500(request: web.Request) -> web.Response:
        hits["500"] = hits.get("500", 0) + 1
        return web.Response(status=500, text="boom")

    async def notfound(request: web.Request) -> web.Response:
        hits["404"] = hits.get("404", 0) + 1
        return web.json_response({"error": "no such booking"}, status=404)

    async def slow(request: web.Request) -> web.Response:
        hits["slow"] = hits.get("slow", 0) + 1
        await asyncio.sleep(2)
        return web.json_response({})

    async def badjson(request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>", content_type="text/html")

    async def query(request: web.Request) -> web.Response:
        return web.json_response(dict(request.query))

    app = web.Application()
    app.router.add_post("/quote", quote)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/500", always500)
    app.router.add_post("/500", always500)
    app.router.add_get("/404", notfound)
    app.router.add_get("/slow", slow)
    app.router.add_get("/bad", badjson)
    app.router.add_get("/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", hits, seen
    await runner.cleanup()


def _call(url: str, method: str = "GET", body: Any = None, retries: int = 0,
          timeout: float = 2.0) -> CallTool:
    req: dict[str, Any] = {"method": method, "url": url, "headers": {"Authorization": "Bearer t"}}
    if body is not None:
        req["json"] = body
    return CallTool(1, "get_quote", req, timeout, retries)


async def test_success_posts_json_and_parses_answer(server: Any) -> None:
    base, _, seen = server
    res = await ToolRunner().run(_call(base + "/quote", "POST", {"bedrooms": 3}))
    assert res.ok and res.status == 200
    assert res.data == {"price": 450, "quote_id": "Q-1"}
    assert seen == [{"json": {"bedrooms": 3}, "auth": "Bearer t"}]


async def test_retries_with_backoff_until_success(server: Any) -> None:
    base, hits, _ = server
    res = await ToolRunner(backoff_s=0.01).run(_call(base + "/flaky", retries=3))
    assert res.ok and res.data == {"ok": True}
    assert hits["flaky"] == 3


async def test_500_without_retries_is_a_plain_failure(server: Any) -> None:
    base, hits, _ = server
    res = await ToolRunner().run(_call(base + "/500", "POST", {}))
    assert not res.ok and res.status == 500
    assert "HTTP 500" in res.error and "get_quote" in res.error
    assert hits["500"] == 1


async def test_500_retried_then_gives_up(server: Any) -> None:
    base, hits, _ = server
    res = await ToolRunner(backoff_s=0.01).run(_call(base + "/500", retries=2))
    assert not res.ok and "tried 3 times" in res.error
    assert hits["500"] == 3


async def test_4xx_is_not_retried(server: Any) -> None:
    base, hits, _ = server
    res = await ToolRunner(backoff_s=0.01).run(_call(base + "/404", retries=2))
    assert not res.ok and res.status == 404 and hits["404"] == 1
    assert res.data == {"error": "no such booking"}


async def test_timeout_is_a_failure_in_plain_english(server: Any) -> None:
    base, hits, _ = server
    res = await ToolRunner(backoff_s=0.01).run(_call(base + "/slow", timeout=0.2, retries=1))
    assert not res.ok
    assert "did not answer within 0.2 seconds" in res.error
    assert hits["slow"] == 2


async def test_invalid_json_is_a_failure(server: Any) -> None:
    base, _, _ = server
    res = await ToolRunner().run(_call(base + "/bad"))
    assert not res.ok and "not valid JSON" in res.error


async def test_get_body_goes_in_the_query_string(server: Any) -> None:
    base, _, _ = server
    res = await ToolRunner().run(_call(base + "/query", "GET", {"postcode": "LS1 1AA", "n": 3}))
    assert res.ok and res.data == {"postcode": "LS1 1AA", "n": "3"}


async def test_connection_refused_and_bad_url() -> None:
    res = await ToolRunner().run(_call("http://127.0.0.1:9/x", timeout=1))
    assert not res.ok and "Could not reach" in res.error
    res = await ToolRunner().run(_call("ftp://example/x"))
    assert not res.ok and "http://" in res.error


@register_tool("tests:lookup")
async def _lookup(args: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    return {"found": True, "ref": args.get("ref"), "caller": ctx["call"]["caller"]}


SYNC_TOOL = """
def add(args, ctx):
    if args.get("explode"):
        raise ValueError("kaboom")
    return {"sum": args["a"] + args["b"]}
"""


async def test_python_tools_registered_and_by_module_path(tmp_path: Any, monkeypatch: Any
                                                          ) -> None:
    (tmp_path / "mycompany_tools.py").write_text(SYNC_TOOL)
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = ToolRunner()
    res = await runner.run(CallTool(2, "lookup", {
        "python": "tests:lookup", "args": {"ref": "SR1"},
        "context": {"call": {"caller": "+44"}}}))
    assert res.ok and res.data == {"found": True, "ref": "SR1", "caller": "+44"}
    res = await runner.run(CallTool(3, "add", {
        "python": "mycompany_tools:add", "args": {"a": 1, "b": 2}}))
    assert res.ok and res.data == {"sum": 3}
    res = await runner.run(CallTool(4, "add", {
        "python": "mycompany_tools:add", "args": {"explode": True}}))
    assert not res.ok and "kaboom" in res.error
    res = await runner.run(CallTool(5, "nope", {"python": "not_registered"}))
    assert not res.ok and "register_tool" in res.error
    assert [e.tool for e in runner.log] == ["lookup", "add", "add", "nope"]


async def test_canned_sequence_status_and_fail_modes() -> None:
    canned = CannedTools(parse_canned({
        "get_quote": [{"status": 500}, {"response": {"price": 99}}],
        "book": {"fail": "timeout"},
        "plain": {"reference": "SR-1"},
    }))
    first = await canned.run(_call("http://x/quote"))
    second = await canned.run(_call("http://x/quote"))
    third = await canned.run(_call("http://x/quote"))
    assert not first.ok and first.status == 500
    assert second.ok and second.data == {"price": 99}
    assert third.ok and third.data == {"price": 99}  # the last entry repeats
    book = await canned.run(CallTool(9, "book", {"url": "http://x"}, 3.0))
    assert not book.ok and "within 3 seconds" in book.error
    plain = await canned.run(CallTool(10, "plain", {"url": "http://x"}))
    assert plain.ok and plain.data == {"reference": "SR-1"}
    missing = await canned.run(CallTool(11, "other", {"url": "http://x"}))
    assert not missing.ok and "no canned response" in missing.error
