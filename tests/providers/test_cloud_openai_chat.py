"""OpenAI-compatible chat completions (SSE) against a fake of the documented protocol."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from flowagent.providers.base import (
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
)
from flowagent.providers.llm_history import NO_RESULT
from flowagent.providers.openai_chat import GroqLlm, OpenAIChatLlm
from providers.fakes import FakeOpenAIChat

pytestmark = pytest.mark.timeout(30)

MESSAGES = (LlmMessage("system", "You book removals."), LlmMessage("user", "I'm moving."))
QUOTE_TOOL = LlmToolSpec("get_quote", "Price a move",
                         {"type": "object", "properties": {"bedrooms": {"type": "integer"}}})


def make(fake: FakeOpenAIChat, **opts: object) -> OpenAIChatLlm:
    return OpenAIChatLlm.from_options({"api_key": fake.api_key, "base_url": fake.url,
                                       "model": "test-model", "first_token_timeout_s": 2,
                                       "idle_timeout_s": 2, **opts})


async def run(llm: OpenAIChatLlm, messages: tuple[LlmMessage, ...] = MESSAGES,
              tools: tuple[LlmToolSpec, ...] = ()) -> list[LlmChunk]:
    try:
        return [c async for c in llm.stream(messages, tools)]
    finally:
        await llm.close()


async def test_text_streams_token_by_token() -> None:
    async with FakeOpenAIChat(["Happy to help with your move."]) as fake:
        chunks = await run(make(fake, temperature=0.2, max_tokens=50))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == 6
    assert "".join(texts) == "Happy to help with your move."
    assert chunks[-1].finish_reason == "stop" and not chunks[-1].tool_calls
    body = fake.requests[0]["body"]
    assert body["stream"] is True and body["model"] == "test-model"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert body["messages"][0] == {"role": "system", "content": "You book removals."}


async def test_tool_calls_are_assembled_from_fragments() -> None:
    reply = {"tool_calls": [{"name": "get_quote", "arguments": {"bedrooms": 3}},
                            {"name": "check_date", "arguments": {"date": "2026-12-01"}}]}
    async with FakeOpenAIChat([reply]) as fake:
        chunks = await run(make(fake), tools=(QUOTE_TOOL,))
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert last.tool_calls == (
        LlmToolCall("call_0abc", "get_quote", {"bedrooms": 3}),
        LlmToolCall("call_1abc", "check_date", {"date": "2026-12-01"}),
    )
    tools = fake.requests[0]["body"]["tools"]
    assert tools[0]["type"] == "function" and tools[0]["function"]["name"] == "get_quote"


async def test_tool_history_is_sent_in_openai_shape() -> None:
    history = (*MESSAGES,
               LlmMessage("assistant", "", tool_calls=(LlmToolCall("c1", "get_quote",
                                                                   {"bedrooms": 2}),)),
               LlmMessage("tool", '{"price": 450}', tool_call_id="c1"))
    async with FakeOpenAIChat(["It will be 450 pounds."]) as fake:
        await run(make(fake), messages=history)
    sent = fake.requests[0]["body"]["messages"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "get_quote",
                                                    "arguments": '{"bedrooms": 2}'}
    assert sent[2]["content"] is None
    assert sent[3] == {"role": "tool", "tool_call_id": "c1", "content": '{"price": 450}'}


async def test_429_then_success_is_retried_before_the_first_token() -> None:
    async with FakeOpenAIChat(["Done."], fault="http_429") as fake:
        fake.fault_times = 1
        chunks = await run(make(fake))
    assert "".join(c.text for c in chunks) == "Done."
    assert len(fake.requests) == 2


async def test_500_every_time_gives_up_after_the_retry_budget() -> None:
    async with FakeOpenAIChat(fault="http_500") as fake:
        with pytest.raises(ProviderError, match=r"server error .HTTP 500."):
            await run(make(fake, max_retries=2))
    assert len(fake.requests) == 3


async def test_persistent_429_is_a_rate_limit_error() -> None:
    async with FakeOpenAIChat(fault="http_429") as fake:
        with pytest.raises(ProviderError, match=r"rate limiting"):
            await run(make(fake, max_retries=1))


async def test_wrong_key_is_not_retried() -> None:
    async with FakeOpenAIChat() as fake:
        llm = OpenAIChatLlm.from_options({"api_key": "wrong", "base_url": fake.url})
        with pytest.raises(ProviderError, match=r"rejected the API key.*Incorrect API key"):
            await run(llm)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("fault", "exc", "message"), [
    ("drop", ProviderError, "dropped the connection|connection failed"),
    ("malformed", ProviderError, "not valid JSON"),
    ("error_event", ProviderError, "failed mid-reply: model overloaded"),
    ("stall", ProviderTimeout, "sent no reply within 0.3 s"),
    ("stall_headers", ProviderTimeout, "sent no reply within 0.3 s"),
    ("stall_mid", ProviderTimeout, "stalled for 0.3 s"),
    ("bad_args", ProviderError, "not valid JSON"),
    ("http_400", ProviderError, "refused the request .HTTP 400."),
])
async def test_faults_become_plain_provider_errors(fault: str, exc: type, message: str) -> None:
    reply = ({"tool_calls": [{"name": "get_quote", "arguments": {"bedrooms": 1}}]}
             if fault == "bad_args" else "one two three")
    async with FakeOpenAIChat([reply], fault=fault) as fake:
        llm = make(fake, first_token_timeout_s=0.3, idle_timeout_s=0.3, max_retries=0)
        with pytest.raises(exc, match=message):
            await run(llm)


async def test_whole_reply_timeout_is_enforced() -> None:
    async with FakeOpenAIChat(["a b c d e f g h"], token_s=0.1) as fake:
        with pytest.raises(ProviderTimeout, match=r"did not finish its reply within 0.35 s"):
            await run(make(fake, timeout_s=0.35))


async def test_cancelling_the_consumer_closes_the_request() -> None:
    async with FakeOpenAIChat(["w " * 200], token_s=0.02) as fake:
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
        for _ in range(100):  # the server sees the client go away
            if fake.cancelled:
                break
            await asyncio.sleep(0.02)
        await llm.close()
    assert fake.cancelled == 1
    assert len(got) < 50


async def test_groq_defaults_point_at_groq() -> None:
    llm = GroqLlm.from_options({"api_key": "k"})
    assert llm.options.base_url == "https://api.groq.com/openai/v1"
    assert llm.name == "groq"


async def test_unreachable_server_is_explained() -> None:
    llm = OpenAIChatLlm.from_options({"base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    with pytest.raises(ProviderError, match=r"Could not reach"):
        await run(llm)


# -- chat completions' request rules (the fake refuses what the real service refuses) ----------


async def _send(history: tuple[LlmMessage, ...]) -> dict[str, Any]:
    async with FakeOpenAIChat(["Fine."]) as fake:
        chunks = await run(make(fake, max_retries=0), messages=history)
    assert fake.rejected == [] and "".join(c.text for c in chunks) == "Fine."
    return fake.requests[-1]["body"]


def _call(id_: str) -> LlmToolCall:
    return LlmToolCall(id_, "get_quote", {"bedrooms": 2})


async def test_a_tool_call_the_call_moved_on_from_gets_a_no_result_tool_message() -> None:
    history = (*MESSAGES,
               LlmMessage("assistant", "", tool_calls=(_call("call_a"), _call("call_b"))),
               LlmMessage("tool", '{"price": 450}', tool_call_id="call_a"),
               LlmMessage("user", "Hello?"))
    body = await _send(history)
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert msgs[2]["content"] is None
    assert [m["tool_call_id"] for m in msgs[3:5]] == ["call_a", "call_b"]
    assert json.loads(msgs[4]["content"]) == json.loads(NO_RESULT)


async def test_a_tool_message_that_answers_no_call_is_left_out() -> None:
    history = (*MESSAGES, LlmMessage("tool", "{}", tool_call_id="call_gone"),
               LlmMessage("user", "Well?"))
    body = await _send(history)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "user"]


async def test_the_callers_words_during_a_tool_call_go_after_its_answer() -> None:
    history = (*MESSAGES, LlmMessage("assistant", "Checking.", tool_calls=(_call("call_a"),)),
               LlmMessage("user", "Two bedrooms."),
               LlmMessage("tool", '{"price": 450}', tool_call_id="call_a"))
    body = await _send(history)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool",
                                                     "user"]


@pytest.mark.parametrize(("body", "message"), [
    ({"messages": []}, "too short"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "c1", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "user", "content": "hi"}]}, "did not have response messages: c1"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "tool", "tool_call_id": "c9", "content": "x"}]},
     "must be a response to a preceeding message with 'tool_calls'"),
    ({"messages": [{"role": "user", "content": None}]}, "expected a string, got null"),
    ({"tools": [{"type": "function", "function": {"name": "get quote", "parameters": {}}}]},
     "does not match pattern"),
    ({"temperature": 2.5}, "Expected a value <= 2"),
])
async def test_the_fake_refuses_what_the_service_refuses(body: dict[str, Any],
                                                         message: str) -> None:
    full = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}], **body}
    async with (FakeOpenAIChat() as fake, aiohttp.ClientSession() as http,
                http.post(fake.url + "/chat/completions", json=full,
                          headers={"Authorization": "Bearer test-key"}) as resp):
        assert resp.status == 400
        err = await resp.json()
    assert err["error"]["type"] == "invalid_request_error"
    assert message in err["error"]["message"]
