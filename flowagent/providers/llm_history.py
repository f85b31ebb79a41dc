"""The conversation history an LLM service will accept: every tool call answered, in order.

Why this exists: the dialogue engine records what happened on the call — a reply with tool calls,
the tools' answers, the caller's words — and a call can move on before every tool call it asked
for was answered (a barge-in, a transfer chosen among several calls, a tool the state does not
allow). Both chat services refuse such a history with HTTP 400:

- OpenAI chat completions: "An assistant message with 'tool_calls' must be followed by tool
  messages responding to each 'tool_call_id'" and "messages with role 'tool' must be a response
  to a preceding message with 'tool_calls'"
  (https://platform.openai.com/docs/api-reference/chat/create, `messages`).
- Anthropic Messages: "`tool_use` ids were found without `tool_result` blocks immediately after"
  and "unexpected `tool_use_id` found in `tool_result` blocks"
  (https://docs.anthropic.com/en/docs/build-with-claude/tool-use, "handle tool calls": each
  tool_result must follow its tool_use in the very next message).

`paired()` rewrites the history so every assistant tool call is followed at once by one result
per call (in call order; a missing one gets an explicit "no result" answer the model can read),
and results that answer no call are left out. The provider modules then apply their own
service's shape rules on top.
"""

from __future__ import annotations

import json

from flowagent.providers.base import LlmMessage

#: what a tool call that was never answered gets as its result (the model reads it as JSON)
NO_RESULT = json.dumps({"error": "no result: the call moved on before this tool ran"})


def paired(messages: tuple[LlmMessage, ...]) -> tuple[LlmMessage, ...]:
    """The history with each assistant's tool calls answered right after it, once each."""
    out: list[LlmMessage] = []
    i = 0
    n = len(messages)
    while i < n:
        m = messages[i]
        i += 1
        if m.role == "tool":
            continue  # a result with no call right before it (answered ones are taken below)
        out.append(m)
        if m.role != "assistant" or not m.tool_calls:
            continue
        # the results for these calls: any tool message up to the next assistant turn
        wanted = {c.id for c in m.tool_calls}
        results: dict[str, LlmMessage] = {}
        rest: list[LlmMessage] = []
        j = i
        while j < n and messages[j].role != "assistant":
            r = messages[j]
            if r.role == "tool":
                if r.tool_call_id in wanted and r.tool_call_id not in results:
                    results[r.tool_call_id] = r
            else:
                rest.append(r)
            j += 1
        for c in m.tool_calls:
            out.append(results.get(c.id) or LlmMessage("tool", NO_RESULT, tool_call_id=c.id))
        out.extend(rest)
        i = j
    return tuple(out)
