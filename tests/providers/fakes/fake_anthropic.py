"""Fake Anthropic Messages API (`POST /v1/messages`, `stream: true`), per Anthropic's docs.

Checks `x-api-key` (401 `authentication_error` otherwise) and `anthropic-version`, that `system`
is top level and no message has role "system". Streams the documented event sequence:
`message_start`, then per block `content_block_start` / `content_block_delta` (`text_delta` or
`input_json_delta`) / `content_block_stop`, a `ping`, `message_delta` (stop_reason), `message_stop`.
A scripted reply is a string (one text block) or `{"text": ..., "tool_use": [{"name", "input"}]}`.

Faults: `http_429` (retry-after 0), `http_529` (overloaded), `http_500`, `error_event`
(`event: error` overloaded_error mid-stream), `drop`, `stall`, `malformed`, `truncated` (body ends
without message_stop).

Request rules (each refused with HTTP 400 `{"type": "error", "error": {"type":
"invalid_request_error", "message": ...}}` worded as the real service words it), from
https://docs.anthropic.com/en/api/messages ("messages": alternating user/assistant turns, the
first from the user; a final assistant turn is a prefill), the tool-use guide
https://docs.anthropic.com/en/docs/build-with-claude/tool-use ("handle tool calls": each
`tool_result` in the user message right after its `tool_use`, results first in that message) and
https://docs.anthropic.com/en/api/errors (400 `invalid_request_error`); the messages' wording is
what the service returns (quoted in public bug reports of other projects):
- `max_tokens` an integer >= 1, `model` a string, `temperature` within 0..1;
- at least one message; roles only "user"/"assistant", the first "user";
- non-empty content except a final assistant turn; no empty or whitespace-only text block;
- every `tool_use` id answered by a `tool_result` at the start of the next message, and no
  `tool_result` whose id the previous message did not use;
- a final assistant turn may not end with whitespace;
- tool names match `^[a-zA-Z0-9_-]{1,64}$` and `input_schema.type` is "object".
`rejected` counts the requests refused by these rules.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from .base import FakeHttpServer


class FakeAnthropic(FakeHttpServer):
    def __init__(self, replies: list[Any] | None = None, *, first_token_s: float = 0.0,
                 token_s: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.replies = list(replies or ["Hello there."])
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.index = 0
        self.rejected: list[str] = []  # the 400 messages sent for broken requests

    @property
    def url(self) -> str:
        return self.base_url

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)

    @staticmethod
    def _error(status: int, etype: str, message: str, **headers: str) -> web.Response:
        return web.json_response({"type": "error", "error": {"type": etype, "message": message}},
                                 status=status, headers=headers)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version header required")
        problem = request_problem(body)
        if problem:
            self.rejected.append(problem)
            return self._error(400, "invalid_request_error", problem)
        fault = self.take_fault()
        if fault == "http_429":
            return self._error(429, "rate_limit_error", "Number of requests has exceeded your "
                               "rate limit", **{"retry-after": "0"})
        if fault == "http_529":
            return self._error(529, "overloaded_error", "Overloaded")
        if fault == "http_500":
            return self._error(500, "api_error", "Internal server error")
        reply = self.replies[self.index % len(self.replies)]
        self.index += 1
        if isinstance(reply, str):
            reply = {"text": reply}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        if fault == "stall":
            await asyncio.sleep(3600)
        await self.sleep(self.first_token_s)
        await event("message_start", {"type": "message_start", "message": {
            "id": f"msg_{self.index}", "type": "message", "role": "assistant", "content": [],
            "model": body.get("model"), "stop_reason": None,
            "usage": {"input_tokens": 10, "output_tokens": 1}}})
        idx = 0
        if reply.get("text"):
            await event("content_block_start", {"type": "content_block_start", "index": idx,
                                                "content_block": {"type": "text", "text": ""}})
            await event("ping", {"type": "ping"})
            for n, word in enumerate(reply["text"].split(" ")):
                if n:
                    await self.sleep(self.token_s)
                await event("content_block_delta", {
                    "type": "content_block_delta", "index": idx,
                    "delta": {"type": "text_delta", "text": (" " if n else "") + word}})
                if fault == "drop":
                    self.drop(request)
                    return resp
                if fault == "malformed":
                    await resp.write(b"event: content_block_delta\ndata: {oops\n\n")
                if fault == "error_event":
                    await event("error", {"type": "error", "error": {
                        "type": "overloaded_error", "message": "Overloaded"}})
                    return resp
            await event("content_block_stop", {"type": "content_block_stop", "index": idx})
            idx += 1
        for n, tool in enumerate(reply.get("tool_use", [])):
            await event("content_block_start", {"type": "content_block_start", "index": idx,
                                                "content_block": {"type": "tool_use",
                                                                  "id": f"toolu_{n}",
                                                                  "name": tool["name"],
                                                                  "input": {}}})
            args = json.dumps(tool["input"])
            third = max(1, len(args) // 3)
            for piece in (args[:third], args[third:2 * third], args[2 * third:]):
                await event("content_block_delta", {
                    "type": "content_block_delta", "index": idx,
                    "delta": {"type": "input_json_delta", "partial_json": piece}})
            await event("content_block_stop", {"type": "content_block_stop", "index": idx})
            idx += 1
        if fault == "truncated":
            await resp.write_eof()
            return resp
        stop = "tool_use" if reply.get("tool_use") else "end_turn"
        await event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": 15}})
        await event("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def request_problem(body: dict[str, Any]) -> str:
    """The 400 message the Messages API would give for this body, or "" when it is valid."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    mt = body.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool):
        return "max_tokens: Field required"
    if mt < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    temp = body.get("temperature")
    if temp is not None and not (isinstance(temp, (int, float)) and 0 <= temp <= 1):
        return "temperature: Input should be less than or equal to 1"
    for k, tool in enumerate(body.get("tools") or []):
        if not _TOOL_NAME.match(str(tool.get("name", ""))):
            return (f"tools.{k}.custom.name: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,64}$'")
        if (tool.get("input_schema") or {}).get("type") != "object":
            return f"tools.{k}.custom.input_schema.type: Input should be 'object'"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages: at least one message is required"
    for i, m in enumerate(msgs):
        role = m.get("role")
        if role not in ("user", "assistant"):
            return (f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a '
                    'top-level `system` parameter, not "system" as an input message role.')
    if msgs[0]["role"] != "user":
        return 'messages: first message must use the "user" role'
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        content = m.get("content")
        blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
                  else content if isinstance(content, list) else None)
        if blocks is None:
            return f"messages.{i}.content: Input should be a valid list"
        empty = not blocks or (isinstance(content, str) and not content)
        if empty and not (i == last and m["role"] == "assistant"):
            return (f"messages.{i}: all messages must have non-empty content except for the "
                    "optional final assistant message")
        for j, b in enumerate(blocks):
            if b.get("type") == "text":
                if b.get("text") == "" and not isinstance(content, str):
                    return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
                if not str(b.get("text", "")).strip() and b.get("text") != "":
                    return "messages: text content blocks must contain non-whitespace text"
        used = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        if used:
            nxt = msgs[i + 1] if i < last else None
            nblocks = nxt.get("content") if nxt is not None else None
            leading: set[str] = set()
            if nxt is not None and nxt["role"] == "user" and isinstance(nblocks, list):
                for b in nblocks:
                    if b.get("type") != "tool_result":
                        break
                    leading.add(str(b.get("tool_use_id")))
            missing = [u for u in used if u not in leading]
            if missing:
                return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(missing)}. Each `tool_use` block must "
                        "have a corresponding `tool_result` block in the next message.")
        prev_used: set[str] = set()
        if i > 0 and isinstance(msgs[i - 1].get("content"), list):
            prev_used = {str(b.get("id")) for b in msgs[i - 1]["content"]
                         if b.get("type") == "tool_use"}
        for j, b in enumerate(blocks):
            if b.get("type") == "tool_result" and str(b.get("tool_use_id")) not in prev_used:
                return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {b.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message.")
    final = msgs[last]
    if final["role"] == "assistant":
        content = final.get("content")
        text = (content if isinstance(content, str)
                else (content[-1].get("text", "") if content and content[-1].get("type") == "text"
                      else ""))
        if text and text != text.rstrip():
            return "final assistant content cannot end with trailing whitespace"
    return ""
