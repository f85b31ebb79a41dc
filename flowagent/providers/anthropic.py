"""Anthropic Messages API over SSE, with tool use.

Wire protocol followed:
- https://docs.anthropic.com/en/api/messages — `POST https://api.anthropic.com/v1/messages`,
  headers `x-api-key: <key>`, `anthropic-version: 2023-06-01`, `content-type: application/json`;
  body `{model, max_tokens, system, messages, tools:[{name, description, input_schema}],
  stream: true}`. The system prompt is a top-level field, not a message. Tool results go back as
  a `user` message with `{"type": "tool_result", "tool_use_id", "content"}` blocks; the
  assistant's own tool calls as `{"type": "tool_use", "id", "name", "input"}` blocks.
- https://docs.anthropic.com/en/api/messages-streaming — named SSE events `message_start`,
  `content_block_start` (`content_block.type` `text` or `tool_use` with `id`, `name`),
  `content_block_delta` (`delta.type` `text_delta` with `text`, or `input_json_delta` with
  `partial_json`), `content_block_stop`, `message_delta` (`delta.stop_reason`), `message_stop`,
  `ping`, and `error` (`{"type":"error","error":{"type":"overloaded_error","message":...}}`).
  A tool_use block's input is the concatenation of its `partial_json` pieces.
- https://docs.anthropic.com/en/api/errors — 401 authentication_error, 429 rate_limit_error
  (with `retry-after`), 500 api_error, 529 overloaded_error.

Same retry/timeout/cancel behaviour as `openai_chat` (retry only before the first token).
Residual uncertainty: none known for the fields we use; thinking blocks and server tools are not
requested and their events would be ignored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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
from flowagent.providers.openai_chat import SessionHolder

PROVIDER = "Anthropic"


@dataclass(slots=True)
class AnthropicOptions:
    api_key: str = ""
    model: str = "claude-3-5-haiku-latest"
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    max_tokens: int = 1024
    temperature: float | None = None
    timeout_s: float = 30.0
    first_token_timeout_s: float = 10.0
    idle_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    max_retries: int = 2


class AnthropicLlm:
    name = "anthropic"

    def __init__(self, options: AnthropicOptions) -> None:
        self.options = options
        self._sessions = SessionHolder()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AnthropicLlm:
        return cls(build_options(AnthropicOptions, options, PROVIDER))

    async def close(self) -> None:
        await self._sessions.close()

    def request_body(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...]
    ) -> dict[str, Any]:
        o = self.options
        system, msgs = to_anthropic_messages(messages)
        body: dict[str, Any] = {"model": o.model, "max_tokens": o.max_tokens, "messages": msgs,
                                "stream": True}
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description,
                              "input_schema": t.parameters or {"type": "object"}} for t in tools]
        if o.temperature is not None:
            body["temperature"] = o.temperature
        return body

    async def stream(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...] = ()
    ) -> AsyncIterator[LlmChunk]:
        o = self.options
        if not o.api_key:
            raise ProviderError("Anthropic needs an api_key (e.g. api_key: ${ANTHROPIC_API_KEY}).",
                                provider=PROVIDER)
        headers = {"x-api-key": o.api_key, "anthropic-version": o.anthropic_version,
                   "content-type": "application/json", "accept": "text/event-stream"}
        deadline = Deadline(o.timeout_s, o.first_token_timeout_s, o.idle_timeout_s)
        try:
            async with asyncio.timeout(o.first_token_timeout_s):
                resp = await post_stream(
                    self._sessions.get(), o.base_url.rstrip("/") + "/v1/messages",
                    provider=PROVIDER, headers=headers, body=self.request_body(messages, tools),
                    connect_timeout_s=o.connect_timeout_s, max_retries=o.max_retries,
                )
        except TimeoutError:
            raise ProviderTimeout(f"Anthropic sent no reply within {o.first_token_timeout_s:g} s.",
                                  provider=PROVIDER) from None
        blocks: dict[int, dict[str, Any]] = {}
        stop_reason = ""
        stopped = False
        try:
            async for event, data in sse_events(resp, deadline, PROVIDER):
                msg = parse_json(PROVIDER, data)
                kind = msg.get("type") or event
                if kind == "content_block_start":
                    block = msg.get("content_block") or {}
                    blocks[int(msg.get("index", len(blocks)))] = {
                        "type": block.get("type"), "id": block.get("id", ""),
                        "name": block.get("name", ""), "json": "",
                    }
                elif kind == "content_block_delta":
                    delta = msg.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        deadline.got_first = True
                        yield LlmChunk(text=delta["text"])
                    elif delta.get("type") == "input_json_delta":
                        deadline.got_first = True
                        idx = int(msg.get("index", 0))
                        if idx not in blocks:
                            raise ProviderError("Anthropic sent tool input for a block it never "
                                                "started.", provider=PROVIDER)
                        blocks[idx]["json"] += delta.get("partial_json", "")
                elif kind == "message_delta":
                    stop_reason = str((msg.get("delta") or {}).get("stop_reason") or stop_reason)
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    err = msg.get("error") or {}
                    etype = err.get("type", "error")
                    raise ProviderError(
                        f"Anthropic failed mid-reply ({etype}): {err.get('message', '')}.",
                        provider=PROVIDER)
                # message_start, content_block_stop, ping: nothing to do
        finally:
            resp.close()
        if not stopped:
            raise ProviderError("Anthropic ended the reply without message_stop (connection "
                                "dropped?).", provider=PROVIDER)
        calls = []
        for block in blocks.values():
            if block["type"] != "tool_use":
                continue
            try:
                args = json.loads(block["json"] or "{}")
            except ValueError:
                raise ProviderError(f"Anthropic asked for tool {block['name']!r} with input that "
                                    "is not valid JSON.", provider=PROVIDER) from None
            calls.append(LlmToolCall(id=block["id"], name=block["name"], arguments=args))
        yield LlmChunk(tool_calls=tuple(calls), finish_reason=_finish(stop_reason))


def _finish(stop_reason: str) -> str:
    """Map Anthropic stop reasons onto the OpenAI names the rest of flowagent uses."""
    return {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length",
            "stop_sequence": "stop"}.get(stop_reason, stop_reason or "stop")


#: the caller-side opening turn when the history has none (the LLM speaks first on entering an
#: `llm:` state, or the agent greeted before the caller said anything): Anthropic requires the
#: first message to be a user message, and at least one message
CALL_OPENED = "(The caller is on the line and has not said anything yet.)"


def to_anthropic_messages(
    messages: tuple[LlmMessage, ...],
) -> tuple[str, list[dict[str, Any]]]:
    """System text separate, and messages the Messages API accepts.

    The rules (https://docs.anthropic.com/en/api/messages and the tool-use guide; each breach is
    an HTTP 400 `invalid_request_error`): at least one message; the first one from the user;
    roles only user/assistant (consecutive same-role turns are merged here, as the API would);
    no empty content and no whitespace-only text block; every `tool_use` answered by a
    `tool_result` in the very next (user) message, results first in that message; no result
    without its call; a final assistant turn may not end in whitespace.
    """
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in paired(messages):
        if m.role == "system":
            if m.content.strip():
                system.append(m.content)
            continue
        if m.role == "tool":
            role = "user"
            blocks: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": m.tool_call_id,
                 "content": m.content if m.content.strip() else "(empty)"}]
        else:
            role = "assistant" if m.role == "assistant" else "user"
            blocks = [{"type": "text", "text": m.content}] if m.content.strip() else []
            for c in m.tool_calls:
                blocks.append({"type": "tool_use", "id": c.id, "name": c.name,
                               "input": c.arguments})
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": CALL_OPENED}]})
    for msg in out:  # tool results before any text in the same user turn
        if msg["role"] == "user":
            msg["content"].sort(key=lambda b: b["type"] != "tool_result")
    last = out[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
    return "\n\n".join(system), out
