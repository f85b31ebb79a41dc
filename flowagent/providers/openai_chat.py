"""OpenAI-compatible chat completions over SSE (OpenAI, Groq, Ollama, vLLM, llama.cpp server).

Wire protocol followed:
- https://platform.openai.com/docs/api-reference/chat/create and
  https://platform.openai.com/docs/api-reference/chat-streaming — `POST {base_url}/chat/completions`
  with `Authorization: Bearer <key>`, body `{model, messages, stream: true, tools:[{type:
  "function", function:{name, description, parameters}}], temperature, max_tokens}`; the answer
  is `text/event-stream` of `data: {"choices":[{"index":0,"delta":{"content":...,"tool_calls":
  [{"index", "id", "type", "function":{"name","arguments"}}]},"finish_reason":...}]}` lines and a
  final `data: [DONE]`. Tool calls arrive in fragments keyed by `index`: the first fragment
  carries `id` and `function.name`, later ones append to `function.arguments` (a JSON string).
- https://platform.openai.com/docs/guides/error-codes and
  https://platform.openai.com/docs/guides/rate-limits — 401 bad key, 429 rate limit (with
  `Retry-After` where given), 500/503 server errors; error bodies are `{"error":{"message",...}}`.
  An error can also arrive mid-stream as `data: {"error": {...}}`.
- Compatible servers: https://console.groq.com/docs/openai (base `https://api.groq.com/openai/v1`),
  https://github.com/ollama/ollama/blob/main/docs/openai.md (`http://localhost:11434/v1`, key
  ignored), vLLM and llama.cpp `server` expose the same `/v1/chat/completions`.

Request rules kept (the service answers 400 otherwise): every assistant `tool_calls` message is
followed at once by one `tool` message per call id, and no `tool` message answers nothing
(`llm_history.paired` repairs a history the call moved on from).

Behaviour: retries (bounded, `max_retries`) on 429/5xx/unreachable only *before the first token*;
after that an error ends the reply with a ProviderError. `first_token_timeout_s` bounds the wait
for the first delta, `idle_timeout_s` any later gap, `timeout_s` the whole reply. Cancelling the
consuming task (or closing the generator) closes the HTTP response.

Residual uncertainty: some compatible servers send tool-call fragments without `index` (we then
key by `id`, falling back to position), and some omit `[DONE]` (end of body ends the reply).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from flowagent.providers.base import (
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
    ProviderTimeout,
)
from flowagent.providers.cloudutil import (
    Deadline,
    build_options,
    parse_json,
    post_stream,
    sse_events,
)
from flowagent.providers.llm_history import paired


@dataclass(slots=True)
class OpenAIChatOptions:
    model: str = "gpt-4o-mini"
    api_key: str = ""
    base_url: str = "https://api.openai.com/v1"
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 30.0
    first_token_timeout_s: float = 10.0
    idle_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_retries: int = 2
    headers: dict[str, str] = field(default_factory=dict)


class SessionHolder:
    """One aiohttp session per event loop, reused across requests (keeps TLS connections warm)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class OpenAIChatLlm:
    name = "openai"
    label = "The OpenAI-compatible LLM"
    default_base_url = "https://api.openai.com/v1"
    default_model = "gpt-4o-mini"

    def __init__(self, options: OpenAIChatOptions) -> None:
        self.options = options
        self._sessions = SessionHolder()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> OpenAIChatLlm:
        opts = dict(options)
        opts.setdefault("base_url", cls.default_base_url)
        opts.setdefault("model", cls.default_model)
        return cls(build_options(OpenAIChatOptions, opts, cls.name))

    async def close(self) -> None:
        await self._sessions.close()

    # -- request ----------------------------------------------------------------------------

    def request_body(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...]
    ) -> dict[str, Any]:
        o = self.options
        body: dict[str, Any] = {
            "model": o.model,
            "messages": [to_openai_message(m) for m in paired(messages)],
            "stream": True,
        }
        if tools:
            body["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}}
                for t in tools
            ]
        if o.temperature is not None:
            body["temperature"] = o.temperature
        if o.max_tokens is not None:
            body["max_tokens"] = o.max_tokens
        return body

    def request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.options.api_key:
            headers["Authorization"] = f"Bearer {self.options.api_key}"
        headers.update(self.options.headers)
        return headers

    async def stream(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...] = ()
    ) -> AsyncIterator[LlmChunk]:
        o = self.options
        label = self.label
        deadline = Deadline(o.timeout_s, o.first_token_timeout_s, o.idle_timeout_s)
        try:
            async with asyncio.timeout(o.first_token_timeout_s):
                resp = await post_stream(
                    self._sessions.get(),
                    o.base_url.rstrip("/") + "/chat/completions",
                    provider=label,
                    headers=self.request_headers(),
                    body=self.request_body(messages, tools),
                    connect_timeout_s=o.connect_timeout_s,
                    max_retries=o.max_retries,
                )
        except TimeoutError:
            raise ProviderTimeout(f"{label} sent no reply within {o.first_token_timeout_s:g} s.",
                                  provider=label) from None
        calls = ToolCallAssembler(label)
        finish = ""
        try:
            async for _event, data in sse_events(resp, deadline, label):
                if data.strip() == "[DONE]":
                    break
                msg = parse_json(label, data)
                if "error" in msg:
                    err = msg["error"]
                    text = err.get("message") if isinstance(err, dict) else str(err)
                    raise ProviderError(f"{label} failed mid-reply: {text}.", provider=label)
                for choice in msg.get("choices") or ():
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if delta.get("tool_calls"):
                        deadline.got_first = True
                        calls.add(delta["tool_calls"])
                    if content:
                        deadline.got_first = True
                        yield LlmChunk(text=content)
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        finally:
            resp.close()  # also what cancellation hits: the request is torn down, not drained
        yield LlmChunk(tool_calls=calls.result(), finish_reason=finish or "stop")


def to_openai_message(m: LlmMessage) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in m.tool_calls
        ]
    return out


class ToolCallAssembler:
    """Joins streamed tool-call fragments (`index` -> id, name, argument pieces)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._calls: dict[Any, dict[str, Any]] = {}

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for pos, frag in enumerate(fragments):
            key = frag.get("index")
            if key is None:
                key = frag.get("id") or f"pos{pos}"
            call = self._calls.setdefault(key, {"id": "", "name": "", "arguments": ""})
            if frag.get("id"):
                call["id"] = frag["id"]
            fn = frag.get("function") or {}
            if fn.get("name"):
                call["name"] += fn["name"]
            if fn.get("arguments"):
                call["arguments"] += fn["arguments"]

    def result(self) -> tuple[LlmToolCall, ...]:
        out = []
        for n, call in enumerate(self._calls.values()):
            raw = call["arguments"].strip() or "{}"
            try:
                args = json.loads(raw)
            except ValueError:
                raise ProviderError(
                    f"{self.label} asked for tool {call['name']!r} with arguments that are not "
                    "valid JSON.", provider=self.label) from None
            if not isinstance(args, dict):
                raise ProviderError(f"{self.label} gave tool {call['name']!r} arguments that are "
                                    "not a JSON object.", provider=self.label)
            out.append(LlmToolCall(id=call["id"] or f"call_{n}", name=call["name"], arguments=args))
        return tuple(out)


class GroqLlm(OpenAIChatLlm):
    name = "groq"
    label = "Groq"
    default_base_url = "https://api.groq.com/openai/v1"
    default_model = "llama-3.3-70b-versatile"


class OllamaLlm(OpenAIChatLlm):
    name = "ollama"
    label = "Ollama"
    default_base_url = "http://localhost:11434/v1"
    default_model = "llama3.2"
