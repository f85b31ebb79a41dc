"""Compiling flows: immutable, shared, validated first, ${ENV} expanded; context per number."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from engine_helpers import ROOT

from flowagent.dialogue.actions import CallTool
from flowagent.dialogue.engine import Engine
from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation, resolve_context
from flowagent.dialogue.tools import ToolRunner, close_shared_session
from flowagent.flow.compiler import CompiledFlow, FlowInvalid, load_flow

FLOWS = sorted(p for p in (ROOT / "flows").glob("*.yaml")
               if not p.name.endswith((".tests.yaml", ".tools.yaml")))


@pytest.mark.parametrize("path", FLOWS, ids=[p.stem for p in FLOWS])
def test_every_example_flow_compiles_and_is_immutable(path: Path) -> None:
    flow = load_flow(path)
    assert flow.start in flow.states
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.start = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        flow.states["x"] = flow.states[flow.start]  # type: ignore[index]
    with pytest.raises(TypeError):
        flow.context_data["company"] = "changed"  # type: ignore[index]
    for st in flow.states.values():
        assert st.kind in ("say", "ask", "collect", "call", "llm", "transfer", "end")
        for b in st.next:
            assert b.go in flow.states


def test_two_calls_share_the_flow_but_not_their_data(removals: CompiledFlow) -> None:
    a, b = Engine(removals), Engine(removals)
    a.start(CallInfo("a", did="+441134960000"))
    b.start(CallInfo("b"))
    ctx_a = a.flow.context_for("+441134960000")
    ctx_a["company"] = "Mutated"
    assert removals.context_for("+441134960000")["company"] == "Swift Removals Leeds"
    assert removals.context_for("")["company"] == "Swift Removals"


def test_load_flow_refuses_a_flow_with_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flowagent: 1\nname: bad\nstart: nowhere\nstates:\n  a:\n    say: hi\n"
                   "    end: true\n")
    with pytest.raises(FlowInvalid) as info:
        load_flow(bad)
    assert f"{bad}:3:" in str(info.value)
    assert info.value.report.errors


def test_env_references_are_expanded_at_load(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SHOP_API", "http://127.0.0.1:5555")
    monkeypatch.setenv("SHOP_TOKEN", "s3cret")
    path = tmp_path / "env.yaml"
    path.write_text("""
flowagent: 1
name: env
start: go
tools:
  ping:
    url: "${SHOP_API}/ping"
    headers: {Authorization: "Bearer ${SHOP_TOKEN}"}
states:
  go:
    call: ping
    next: bye
  bye:
    say: "Bye."
    end: true
""")
    eng = Engine(load_flow(path))
    call = next(a for a in eng.start(CallInfo("x")) if isinstance(a, CallTool))
    assert call.request["url"] == "http://127.0.0.1:5555/ping"
    assert call.request["headers"]["Authorization"] == "Bearer s3cret"
    # the stored record never holds the secret
    stored = eng.record.to_dict()["tool_calls"][0]["request"]
    assert stored["headers"]["Authorization"] == "[redacted]"


async def test_context_fetch_at_call_start(tmp_path: Path) -> None:
    async def context(request: web.Request) -> web.Response:
        return web.json_response({"company": f"Shop for {request.query['did']}"})

    app = web.Application()
    app.router.add_get("/context", context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    path = tmp_path / "ctx.yaml"
    path.write_text(f"""
flowagent: 1
name: ctx
start: hi
context:
  data: {{company: Static}}
  fetch:
    url: "http://127.0.0.1:{port}/context?did={{{{ call.did | urlencode }}}}"
    timeout_s: 2
states:
  hi:
    say: "Welcome to {{{{ context.company }}}}."
    end: true
""")
    try:
        flow = load_flow(path)
        call = CallInfo("c", did="+441130000000")
        ctx = await resolve_context(flow, call, ToolRunner())
        assert ctx["company"] == "Shop for +441130000000"
        lines = await Conversation(flow, ToolRunner()).start(call)
        assert lines == ["Welcome to Shop for +441130000000."]
    finally:
        await runner.cleanup()
        await close_shared_session()
    # the context API being down keeps the static data
    eng_lines = await Conversation(flow, ToolRunner()).start(CallInfo("d"))
    await close_shared_session()
    assert eng_lines == ["Welcome to Static."]
