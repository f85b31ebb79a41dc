"""Anthropic Messages (SSE, tool use) against a fake of the documented event stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools
from flowagent.flow.compiler import load_flow
from flowagent.providers.anthropic import CALL_OPENED, AnthropicLlm
from flowagent.providers.base import (
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
)
from flowagent.providers.llm_history import NO_RESULT
from providers.fakes import FakeAnthropic

pytestmark = pytest.mark.timeout(30)

MESSAGES = (LlmMessage("system", "You book removals."), LlmMessage("user", "How much?"))
QUOTE = LlmToolSpec("get_quote", "Price a move",
                    {"type": "object", "properties": {"bedrooms": {"type": "integer"}}})


def make(fake: FakeAnthropic, **opts: object) -> AnthropicLlm:
    return AnthropicLlm.from_options({"api_key": fake.api_key, "base_url": fake.url,
                                      "first_token_timeout_s": 2, "idle_timeout_s": 2, **opts})


async def run(llm: AnthropicLlm, messages: tuple[LlmMessage, ...] = MESSAGES,
              tools: tuple[LlmToolSpec, ...] = ()) -> list[LlmChunk]:
    try:
        return [c async for c in llm.stream(messages, tools)]
    finally:
        await llm.close()


async def test_text_deltas_stream_and_system_prompt_is_top_level() -> None:
    async with FakeAnthropic(["Three bedrooms is 600 pounds."]) as fake:
        chunks = await run(make(fake, max_tokens=200))
    assert "".join(c.text for c in chunks) == "Three bedrooms is 600 pounds."
    assert len([c for c in chunks if c.text]) == 5
    assert chunks[-1].finish_reason == "stop"
    req = fake.requests[0]
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert req["body"]["system"] == "You book removals."
    assert req["body"]["messages"] == [{"role": "user",
                                        "content": [{"type": "text", "text": "How much?"}]}]
    assert req["body"]["max_tokens"] == 200 and req["body"]["stream"] is True


async def test_tool_use_is_assembled_from_partial_json() -> None:
    reply = {"text": "Let me check.", "tool_use": [{"name": "get_quote",
                                                     "input": {"bedrooms": 3, "lift": True}}]}
    async with FakeAnthropic([reply]) as fake:
        chunks = await run(make(fake), tools=(QUOTE,))
    assert "".join(c.text for c in chunks) == "Let me check."
    assert chunks[-1].tool_calls == (LlmToolCall("toolu_0", "get_quote",
                                                 {"bedrooms": 3, "lift": True}),)
    assert chunks[-1].finish_reason == "tool_calls"
    assert fake.requests[0]["body"]["tools"][0]["input_schema"]["type"] == "object"


async def test_tool_results_go_back_as_user_tool_result_blocks() -> None:
    history = (*MESSAGES,
               LlmMessage("assistant", "Checking.", tool_calls=(LlmToolCall("toolu_1", "get_quote",
                                                                            {"bedrooms": 2}),)),
               LlmMessage("tool", '{"price": 450}', tool_call_id="toolu_1"))
    async with FakeAnthropic(["450 pounds."]) as fake:
        await run(make(fake), messages=history)
    msgs = fake.requests[0]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"][1] == {"type": "tool_use", "id": "toolu_1", "name": "get_quote",
                                     "input": {"bedrooms": 2}}
    assert msgs[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1",
                                   "content": '{"price": 450}'}]


@pytest.mark.parametrize("fault", ["http_429", "http_529", "http_500"])
async def test_retryable_statuses_are_retried_once_then_succeed(fault: str) -> None:
    async with FakeAnthropic(["ok"], fault=fault) as fake:
        fake.fault_times = 1
        chunks = await run(make(fake))
    assert "".join(c.text for c in chunks) == "ok"
    assert len(fake.requests) == 2


async def test_overloaded_every_time_is_a_plain_error() -> None:
    async with FakeAnthropic(fault="http_529") as fake:
        with pytest.raises(ProviderError, match=r"server error .HTTP 529.: Overloaded"):
            await run(make(fake, max_retries=1))


async def test_wrong_key() -> None:
    async with FakeAnthropic() as fake:
        llm = AnthropicLlm.from_options({"api_key": "bad", "base_url": fake.url})
        with pytest.raises(ProviderError, match=r"rejected the API key.*invalid x-api-key"):
            await run(llm)


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("error_event", ProviderError, r"failed mid-reply \(overloaded_error\): Overloaded"),
    ("drop", ProviderError, "dropped the connection|connection failed|without message_stop"),
    ("malformed", ProviderError, "not valid JSON"),
    ("truncated", ProviderError, "without message_stop"),
    ("stall", ProviderTimeout, "sent no reply within 0.3 s"),
])
async def test_stream_faults(fault: str, exc: type, message: str) -> None:
    async with FakeAnthropic(["one two three"], fault=fault) as fake:
        with pytest.raises(exc, match=message):
            await run(make(fake, first_token_timeout_s=0.3, max_retries=0))


async def test_cancel_mid_reply_stops_reading() -> None:
    async with FakeAnthropic(["w " * 300], token_s=0.02) as fake:
        llm = make(fake)
        got: list[str] = []

        async def consume() -> None:
            async for c in llm.stream(MESSAGES):
                got.append(c.text)

        task = asyncio.create_task(consume())
        for _ in range(500):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await llm.close()
    assert len(got) < 100


async def test_missing_key() -> None:
    with pytest.raises(ProviderError, match=r"needs an api_key"):
        await run(AnthropicLlm.from_options({}))


# -- the Messages API's request rules (the fake refuses what the real service refuses) ---------

FLOWS = Path(__file__).resolve().parent / "flows"
SYSTEM = LlmMessage("system", "You book removals.")


def _call(id_: str, name: str = "get_quote") -> LlmToolCall:
    return LlmToolCall(id_, name, {"bedrooms": 2})


async def _send(history: tuple[LlmMessage, ...], reply: str = "Fine.") -> dict[str, Any]:
    """Send `history`; the request body the fake accepted (the test fails on a 400)."""
    async with FakeAnthropic([reply]) as fake:
        chunks = await run(make(fake, max_retries=0), messages=history)
    assert "".join(c.text for c in chunks) == reply, fake.rejected
    assert fake.rejected == []
    return fake.requests[-1]["body"]


async def test_an_llm_state_entered_before_the_caller_spoke_sends_an_opening_user_turn() -> None:
    # The engine's first request in an `llm:` state is the system prompt alone: sent as
    # `"messages": []` it is refused ("at least one message is required").
    body = await _send((SYSTEM,))
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": CALL_OPENED}]}]
    assert body["system"] == "You book removals."


async def test_a_history_that_begins_with_the_agents_greeting_starts_with_a_user_turn() -> None:
    body = await _send((SYSTEM, LlmMessage("assistant", "Hello, Acme Removals."),
                        LlmMessage("user", "How much for two bedrooms?")))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][0]["text"] == CALL_OPENED


async def test_a_tool_call_the_call_moved_on_from_is_answered_with_no_result() -> None:
    history = (SYSTEM, LlmMessage("user", "Quote me."),
               LlmMessage("assistant", "", tool_calls=(_call("toolu_a"), _call("toolu_b"))),
               LlmMessage("tool", '{"price": 450}', tool_call_id="toolu_a"),
               LlmMessage("user", "Hello?"))
    body = await _send(history)
    answer = body["messages"][2]["content"]
    assert [b.get("tool_use_id") for b in answer] == ["toolu_a", "toolu_b", None]
    assert json.loads(answer[1]["content"]) == json.loads(NO_RESULT)
    assert answer[2] == {"type": "text", "text": "Hello?"}


async def test_a_tool_result_whose_call_is_not_in_the_previous_turn_is_left_out() -> None:
    history = (SYSTEM, LlmMessage("user", "Quote me."),
               LlmMessage("tool", '{"price": 450}', tool_call_id="toolu_gone"),
               LlmMessage("user", "Well?"))
    body = await _send(history)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Quote me."}, {"type": "text", "text": "Well?"}]}]


async def test_the_callers_words_after_a_tool_call_come_after_its_result() -> None:
    # the caller spoke while the tool ran: their words were recorded before the tool's answer
    history = (SYSTEM, LlmMessage("user", "Quote me."),
               LlmMessage("assistant", "Checking.", tool_calls=(_call("toolu_a"),)),
               LlmMessage("user", "Two bedrooms."),
               LlmMessage("tool", '{"price": 450}', tool_call_id="toolu_a"))
    body = await _send(history)
    assert [b["type"] for b in body["messages"][2]["content"]] == ["tool_result", "text"]


async def test_empty_and_whitespace_turns_are_not_sent() -> None:
    history = (SYSTEM, LlmMessage("user", "Hi."), LlmMessage("assistant", "  \n"),
               LlmMessage("user", ""), LlmMessage("assistant", ""),
               LlmMessage("user", "Are you there?"))
    body = await _send(history)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Hi."}, {"type": "text", "text": "Are you there?"}]}]


async def test_a_final_assistant_turn_is_sent_without_trailing_whitespace() -> None:
    body = await _send((SYSTEM, LlmMessage("user", "Quote me."),
                        LlmMessage("assistant", "The price is ")))
    assert body["messages"][-1]["content"][-1]["text"] == "The price is"


async def test_a_whole_llm_state_driven_by_the_engine_is_accepted() -> None:
    """The dialogue engine's own histories (LLM speaks first, then the caller, then a reply)."""
    flow = load_flow(FLOWS / "llm_opens.yaml")
    async with FakeAnthropic(["Hello, Acme Removals here.", "We move houses in Leeds."]) as fake:
        llm = make(fake, max_retries=0)
        try:
            conv = Conversation(flow, CannedTools({}), llm)
            opening = await conv.start()
            answer = await conv.say("What do you do?")
        finally:
            await llm.close()
    assert fake.rejected == []
    assert opening == ["Hello, Acme Removals here."]
    assert answer == ["We move houses in Leeds."]
    second = fake.requests[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]


@pytest.mark.parametrize(("body", "message"), [
    ({"messages": []}, "at least one message is required"),
    ({"messages": [{"role": "assistant", "content": "Hi"}]}, 'first message must use the "user"'),
    ({"messages": [{"role": "system", "content": "x"}]}, 'Unexpected role "system"'),
    ({"messages": [{"role": "user", "content": []}]}, "must have non-empty content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]},
     "must contain non-whitespace text"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": "hi"}]}, "`tool_use` ids were found without"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t9", "content": "x"}]}]},
     "unexpected `tool_use_id`"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a "}]},
     "trailing whitespace"),
    ({"temperature": 1.5}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
])
async def test_the_fake_refuses_what_the_service_refuses(body: dict[str, Any],
                                                         message: str) -> None:
    """The fake's rules themselves, with the service's error shape (HTTP 400)."""
    full = {"model": "m", "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "hi"}], **body}
    headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    async with (FakeAnthropic() as fake, aiohttp.ClientSession() as http,
                http.post(fake.url + "/v1/messages", json=full, headers=headers) as resp):
        assert resp.status == 400
        err = await resp.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert message in err["error"]["message"]
