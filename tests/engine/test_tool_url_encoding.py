"""Values rendered into a tool's URL are percent-encoded for where they land, checked against a
real aiohttp server on 127.0.0.1 that records the raw request line it received.

A caller's answer with spaces, `&`, `#` or `/` must reach the API as the same text, in the
same query parameter; a base URL taken from the flow's context must still work; a flow that
already wrote `| urlencode` must not be double-encoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from engine_helpers import flow_from_yaml
from loopback import serve_app

from flowagent.dialogue.actions import CallTool
from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import ToolRunner, close_shared_session
from flowagent.flow.urls import render_url

NASTY = "Flat 2, 10 High St & Co #3 / rear 50%+"


@dataclass
class Recorder:
    base: str
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def raw_path(self) -> str:
        return self.seen[-1][0]

    @property
    def query(self) -> dict[str, str]:
        return self.seen[-1][1]


@pytest.fixture
async def api() -> AsyncIterator[Recorder]:
    rec = Recorder("")

    async def handler(request: web.Request) -> web.Response:
        rec.seen.append((request.raw_path, dict(request.query)))
        return web.json_response({"price": 450, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url:
        rec.base = url
        try:
            yield rec
        finally:
            await close_shared_session()


async def _send(url: str) -> Any:
    result = await ToolRunner().run(CallTool(1, "t", {"method": "GET", "url": url}, 3.0))
    assert result.ok, result.error
    return result


FLOW = """
flowagent: 1
name: url-test
start: ask
context:
  data:
    api: "{base}"
slots:
  from_postcode: {{type: uk_postcode, prompt: "Where from?"}}
  notes: {{type: text, prompt: "Anything else?"}}
tools:
  quote:
    url: "{url}"
    needs: [from_postcode, notes]
    save: {{price: response.price}}
    on_failure: failed
states:
  ask:
    collect: [from_postcode, notes]
    next: price
  price:
    call: quote
    next: done
  done:
    say: "It is {{{{ vars.price }}}} pounds."
    end: true
  failed:
    say: "Sorry."
    end: true
"""


async def _call_flow(url: str, base: str) -> Conversation:
    flow = flow_from_yaml(FLOW.format(base=base, url=url))
    conv = Conversation(flow, ToolRunner())
    await conv.start(CallInfo("c1", caller="+447700900123", did="+441130000000"))
    await conv.say("LS11 5AB")
    lines = await conv.say(NASTY)
    assert lines[-1] == "It is 450 pounds.", lines
    return conv


async def test_a_caller_answer_in_the_query_arrives_intact(api: Recorder) -> None:
    url = "{{ context.api }}/quote?from={{ slots.from_postcode }}&notes={{ slots.notes }}"
    conv = await _call_flow(url, api.base)
    notes = conv.slots["notes"]
    assert "&" in notes and "#" in notes  # the awkward characters reached the slot
    assert api.query == {"from": "LS11 5AB", "notes": notes}
    # (aiohttp's URL normaliser may show "," and "/" plainly in a query: both are legal there)
    assert api.raw_path.startswith("/quote?from=LS11%205AB&notes=")
    assert "%26" in api.raw_path and "%23" in api.raw_path and "%25%2B" in api.raw_path
    assert " " not in api.raw_path and "#" not in api.raw_path


async def test_a_value_in_the_path_is_one_segment(api: Recorder) -> None:
    url = "{{ context.api }}/notes/{{ slots.notes }}/price"
    conv = await _call_flow(url, api.base)
    notes = conv.slots["notes"]
    assert api.raw_path.endswith("/price") and api.raw_path.count("/") == 3
    assert api.query == {}
    from urllib.parse import unquote

    assert unquote(api.raw_path.split("/")[2]) == notes


async def test_urlencode_in_the_flow_is_not_encoded_twice(api: Recorder) -> None:
    url = ("{{ context.api }}/quote?from={{ slots.from_postcode | urlencode }}"
           "&did={{ call.did | urlencode }}&notes={{ slots.notes | urlencode }}")
    conv = await _call_flow(url, api.base)
    assert api.query == {"from": "LS11 5AB", "did": "+441130000000",
                         "notes": conv.slots["notes"]}
    assert "%25" not in api.raw_path.split("notes=")[0]  # no %2520-style double encoding


async def test_rendered_urls_reach_the_server_as_rendered(api: Recorder) -> None:
    ctx = {"slots": {"q": NASTY, "ref": "AB/12"},
           "context": {"api": api.base, "host": api.base.split("://")[1], "prefix": "v1/x"}}
    await _send(render_url("{{ context.api }}/search?q={{ slots.q }}&n=1", ctx))
    assert api.query == {"q": NASTY, "n": "1"}
    await _send(render_url("{{ context.api }}/bookings/{{ slots.ref }}", ctx))
    assert api.raw_path == "/bookings/AB%2F12"
    await _send(render_url("http://{{ context.host }}/h?q={{ slots.q }}", ctx))
    assert api.query == {"q": NASTY}
    await _send(render_url("{{ context.api }}/{{ context.prefix | safe }}/y", ctx))
    assert api.raw_path == "/v1/x/y"
    await _send(render_url("{{ context.api }}/d?{{ {'a': 'x y', 'b': '&'} | urlencode }}", ctx))
    assert api.query == {"a": "x y", "b": "&"}


@pytest.mark.parametrize(("template", "expected"), [
    ("https://api.example/quote?from={{ slots.p }}", "https://api.example/quote?from=LS11%205AB"),
    ("{{ context.base }}/quote", "https://api.example/v2/quote"),
    ("{{ context.base }}/quote?q={{ slots.q }}", "https://api.example/v2/quote?q=a%26b%3Dc%20%23d"),
    ("https://api.example/q?p={{ slots.p | urlencode }}", "https://api.example/q?p=LS11%205AB"),
    ("https://api.example/q?p={{ slots.p | replace(' ', '') }}", "https://api.example/q?p=LS115AB"),
    ("https://api.example/q?x={{ slots.missing }}", "https://api.example/q?x="),
    ("https://api.example/q?n={{ slots.n }}", "https://api.example/q?n=3"),
    ("https://{{ context.host }}/q", "https://api.example:8443/q"),
    ("https://{{ slots.q }}.example/q", "https://a%26b%3Dc%20%23d.example/q"),
    ("https://api.example/q#{{ slots.q }}", "https://api.example/q#a%26b%3Dc%20%23d"),
])
def test_the_rule(template: str, expected: str) -> None:
    ctx = {"slots": {"p": "LS11 5AB", "q": "a&b=c #d", "n": 3},
           "context": {"base": "https://api.example/v2", "host": "api.example:8443"}}
    assert render_url(template, ctx) == expected


def test_plain_and_env_urls_are_untouched() -> None:
    flow = flow_from_yaml(FLOW.format(base="http://127.0.0.1:9", url="http://127.0.0.1:9/a?b=c"))
    assert flow.tools["quote"].url is not None
    assert flow.tools["quote"].url.render({}) == "http://127.0.0.1:9/a?b=c"
