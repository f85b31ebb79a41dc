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

Request rules (each refused with HTTP 400 and OpenAI's error body `{"error": {"message", "type":
"invalid_request_error", "param", "code"}}`), from the chat completions reference
https://platform.openai.com/docs/api-reference/chat/create (`messages`: system/developer, user,
assistant with optional `tool_calls`, tool with `tool_call_id`; `tools[].function.name`
"a-z, A-Z, 0-9, underscores and dashes, max length 64"; `temperature` 0..2) and the error guide
https://platform.openai.com/docs/guides/error-codes; the wording is the service's own:
- `messages` not empty; roles system/developer/user/assistant/tool; content a string (or null
  on an assistant message that has `tool_calls`);
- an assistant message with `tool_calls` followed at once by one tool message per call id;
- a tool message only as a response to the preceding `tool_calls`;
- `tool_calls[].function.arguments` a string; tool names match `^[a-zA-Z0-9_-]{1,64}$`.
`rejected` lists the messages of the requests refused.
"""

from __future__ import annotations

import asyncio
import json
import re
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
        self.rejected: list[str] = []

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
        problem, param = request_problem(body)
        if problem:
            self.rejected.append(problem)
            return web.json_response({"error": {"message": problem, "type":
                                                "invalid_request_error", "param": param,
                                                "code": None}}, status=400)
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


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLES = ("system", "developer", "user", "assistant", "tool")


def request_problem(body: dict[str, Any]) -> tuple[str, str | None]:
    """(the 400 message chat completions would give, its `param`), or ("", None) if valid."""
    temp = body.get("temperature")
    if temp is not None and not (isinstance(temp, (int, float)) and 0 <= temp <= 2):
        return (f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but "
                f"got {temp} instead.", "temperature")
    for k, tool in enumerate(body.get("tools") or []):
        name = str((tool.get("function") or {}).get("name", ""))
        if not _TOOL_NAME.match(name):
            return (f"Invalid 'tools[{k}].function.name': string does not match pattern. "
                    "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    f"tools[{k}].function.name")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "[] is too short - 'messages'", "messages"
    pending: list[str] = []  # call ids still owed a tool message
    answered: set[str] = set()
    for i, m in enumerate(msgs):
        role = m.get("role")
        if role not in _ROLES:
            return (f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    "'user', 'function', 'tool', and 'developer'.", f"messages[{i}].role")
        content = m.get("content")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                return ("Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.", f"messages.[{i}].role")
            pending.remove(m["tool_call_id"])
            answered.add(m["tool_call_id"])
            continue
        if pending:
            return ("An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(pending)}", f"messages.[{i}].role")
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            return ("Invalid value for 'content': expected a string, got null.",
                    f"messages.[{i}].content")
        if content is not None and not isinstance(content, (str, list)):
            return (f"Invalid type for 'messages[{i}].content'.", f"messages[{i}].content")
        calls = m.get("tool_calls") or []
        for j, c in enumerate(calls):
            if not isinstance((c.get("function") or {}).get("arguments"), str):
                return (f"Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments': "
                        "expected a string.", f"messages[{i}].tool_calls[{j}].function.arguments")
        pending = [str(c.get("id")) for c in calls]
    if pending:
        return ("An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}", "messages")
    return "", None
