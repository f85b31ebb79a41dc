"""Anthropic Messages (SSE, tool use) against a fake of the documented event stream."""

from __future__ import annotations

import asyncio

import pytest

from flowagent.providers.anthropic import AnthropicLlm
from flowagent.providers.base import (
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
)
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
