"""Helpers for engine tests: compile a flow from YAML text, a scripted LLM (importable as
`engine_helpers`; the file name is unique so it cannot clash with other test folders)."""

from __future__ import annotations

import datetime as _dt
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from flowagent.flow.compiler import CompiledFlow, compile_flow
from flowagent.flow.loader import load_text
from flowagent.flow.validate import validate_text
from flowagent.providers.base import (
    LlmChunk,
    LlmMessage,
    LlmToolCall,
    LlmToolSpec,
    ProviderError,
)

ROOT = Path(__file__).resolve().parents[2]
TODAY = _dt.date(2026, 3, 2)  # a Monday


def flow_from_yaml(text: str, *, check: bool = True) -> CompiledFlow:
    """Compile a flow written inline in a test. Validates it first so tests only use flows an
    author could really run."""
    text = textwrap.dedent(text)
    if check:
        report = validate_text(text, "<test>", check_env=False)
        assert not report.errors, "\n".join(str(f) for f in report.errors)
    return compile_flow(load_text(text, "<test>").data, path="<test>")




class ScriptedLlm:
    """An LlmProvider that answers from a script: each entry is a reply text, a dict
    {"text": ..., "tool_calls": [(name, args), ...]}, or an Exception to raise.
    Records every request it was given."""

    name = "scripted"

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.requests: list[tuple[tuple[LlmMessage, ...], tuple[LlmToolSpec, ...]]] = []

    async def stream(
        self, messages: tuple[LlmMessage, ...], tools: tuple[LlmToolSpec, ...] = ()
    ) -> AsyncIterator[LlmChunk]:
        self.requests.append((messages, tools))
        step = self.script.pop(0) if self.script else "I'm not sure."
        if isinstance(step, Exception):
            raise step
        if isinstance(step, str):
            step = {"text": step}
        words = str(step.get("text", "")).split(" ")
        for i, w in enumerate(words):
            if w:
                yield LlmChunk(text=w if i == 0 else " " + w)
        calls = tuple(
            LlmToolCall(f"call-{len(self.requests)}-{i}", name, dict(args))
            for i, (name, args) in enumerate(step.get("tool_calls", ()))
        )
        yield LlmChunk(tool_calls=calls, finish_reason="tool_calls" if calls else "stop")


__all__ = ["TODAY", "ProviderError", "ScriptedLlm", "flow_from_yaml"]
