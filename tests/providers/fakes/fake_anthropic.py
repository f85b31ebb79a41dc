"""Fake Anthropic Messages API (`POST /v1/messages`, `stream: true`), per Anthropic's docs.

Checks `x-api-key` (401 `authentication_error` otherwise) and `anthropic-version`, that `system`
is top level and no message has role "system". Streams the documented event sequence:
`message_start`, then per block `content_block_start` / `content_block_delta` (`text_delta` or
`input_json_delta`) / `content_block_stop`, a `ping`, `message_delta` (stop_reason), `message_stop`.
A scripted reply is a string (one text block) or `{"text": ..., "tool_use": [{"name", "input"}]}`.

Faults: `http_429` (retry-after 0), `http_529` (overloaded), `http_500`, `error_event`
(`event: error` overloaded_error mid-stream), `drop`, `stall`, `malformed`, `truncated` (body ends
without message_stop).
"""

from __future__ import annotations

import asyncio
import json
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
        if any(m.get("role") == "system" for m in body.get("messages", [])):
            return self._error(400, "invalid_request_error", "system role is not allowed in "
                               "messages; use the top-level system parameter")
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
