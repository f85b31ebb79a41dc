"""Fake OpenAI-compatible `/v1/chat/completions` with `stream: true` (SSE), per OpenAI's docs.

Checks `Authorization: Bearer <key>` (401 with an OpenAI-style error body otherwise) and that the
body asks to stream. Each request takes the next scripted reply: a string (streamed word by word
as `delta.content`) or `{"tool_calls": [{"name", "arguments"}]}` (streamed as fragments keyed by
`index`: id+name first, then the JSON arguments in three pieces). Ends with `finish_reason` and
`data: [DONE]`.

Faults (for `fault_times` requests, default all): `http_429` (with `Retry-After: 0`), `http_500`,
`http_400`, `drop` (TCP reset after the first token), `stall` (headers, then nothing),
`stall_headers` (not even headers), `stall_mid`
(one token, then nothing), `malformed` (a non-JSON data line), `error_event` (an `{"error": ...}`
chunk mid-stream), `bad_args` (tool arguments that are not JSON).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import ClientConnectionError, web

from .base import FakeHttpServer


class FakeOpenAIChat(FakeHttpServer):
    def __init__(self, replies: list[Any] | None = None, *, first_token_s: float = 0.0,
                 token_s: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.replies = list(replies or ["Hello there."])
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.index = 0
        self.cancelled = 0  # streams the client abandoned mid-reply

    @property
    def url(self) -> str:
        return self.base_url + "/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.completions)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        fault = self.take_fault()
        if fault == "http_429":
            return web.json_response({"error": {"message": "Rate limit reached",
                                                "type": "rate_limit_error"}}, status=429,
                                     headers={"Retry-After": "0"})
        if fault == "http_500":
            return web.json_response({"error": {"message": "The server had an error"}},
                                     status=500)
        if fault == "http_400" or body.get("stream") is not True:
            return web.json_response({"error": {"message": "Bad request"}}, status=400)
        if fault == "stall_headers":
            await asyncio.sleep(3600)
        reply = self.replies[self.index % len(self.replies)]
        self.index += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.open_streams += 1
        cid, created = f"chatcmpl-{self.index}", int(time.time())

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": body.get("model"),
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        try:
            if fault == "stall":
                await asyncio.sleep(3600)
            await self.sleep(self.first_token_s)
            await send({"role": "assistant", "content": ""})
            if isinstance(reply, str):
                for n, word in enumerate(reply.split(" ")):
                    if n:
                        await self.sleep(self.token_s)
                    await send({"content": (" " if n else "") + word})
                    if fault == "drop":
                        self.drop(request)
                        return resp
                    if fault == "stall_mid":
                        await asyncio.sleep(3600)
                    if fault == "malformed":
                        await resp.write(b"data: {not json\n\n")
                    if fault == "error_event":
                        await resp.write(b'data: {"error": {"message": "model overloaded"}}\n\n')
                finish = "stop"
            else:
                for i, call in enumerate(reply["tool_calls"]):
                    args = "{not json" if fault == "bad_args" else json.dumps(call["arguments"])
                    await send({"tool_calls": [{"index": i, "id": f"call_{i}abc",
                                                "type": "function",
                                                "function": {"name": call["name"],
                                                             "arguments": ""}}]})
                    third = max(1, len(args) // 3)
                    for piece in (args[:third], args[third:2 * third], args[2 * third:]):
                        await send({"tool_calls": [{"index": i,
                                                    "function": {"arguments": piece}}]})
                finish = "tool_calls"
            await send({}, finish)
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionError, ClientConnectionError, asyncio.CancelledError):
            self.cancelled += 1  # the client went away mid-reply (cancel or hang-up)
            return resp
        finally:
            self.open_streams -= 1
        return resp
