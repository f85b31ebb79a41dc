"""The built-in telephony tools as the LLM sees them (function-calling specs), written once.

Why one place: an LLM state (the engine) and a speech-to-speech call (`sts_flow`) offer the
same three built-ins; if their descriptions or argument schemas drifted, the same flow would
behave differently on the two paths.
"""

from __future__ import annotations

from flowagent.providers.base import LlmToolSpec

BUILTIN_TOOL_SPECS: dict[str, LlmToolSpec] = {
    "transfer": LlmToolSpec("transfer", "Transfer the caller to a person.", {
        "type": "object", "properties": {"reason": {"type": "string"}}}),
    "hangup": LlmToolSpec("hangup", "End the call after saying goodbye.",
                          {"type": "object", "properties": {}}),
    "send_dtmf": LlmToolSpec("send_dtmf", "Send keypad tones.", {
        "type": "object", "properties": {"digits": {"type": "string"}},
        "required": ["digits"]}),
}
