"""OpenAI-compatible chat completions (SSE) against a fake of the documented protocol."""

from __future__ import annotations

import asyncio

import pytest

from flowagent.providers.base import (
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
)
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
        with pytest.raises(ProviderError, match=r"server error .HTTP 500.") as info:
            await run(make(fake, max_retries=2))
    assert len(fake.requests) == 3
    assert info.value.retryable


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
