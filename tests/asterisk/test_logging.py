"""Structured logs: JSON lines, call UUID via contextvars (across tasks), redaction, levels."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from flowagent.logging import call_context, redact_text, setup_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    yield stream
    for handler in list(root.handlers):
        if handler not in before[0]:
            root.removeHandler(handler)
    root.setLevel(before[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_one_json_object_per_line_with_call_uuid(captured: io.StringIO) -> None:
    setup_logging(level="INFO", fmt="json", redact=False, stream=captured)
    log = logging.getLogger("flowagent.test")
    log.info("before any call")
    with call_context("0b9c6f1e-3a57-4b6e-9d0b-2f1c0e4d5a6b"):
        log.info("turn ended", extra={"turn": 3, "latency_ms": 12.5})
    log.info("after the call")
    got = lines(captured)
    assert [g["msg"] for g in got] == ["before any call", "turn ended", "after the call"]
    assert "call" not in got[0] and "call" not in got[2]
    assert got[1]["call"] == "0b9c6f1e-3a57-4b6e-9d0b-2f1c0e4d5a6b"
    assert got[1]["turn"] == 3 and got[1]["latency_ms"] == 12.5
    assert got[1]["level"] == "info" and got[1]["logger"] == "flowagent.test"
    assert str(got[1]["ts"]).endswith("Z")


async def test_each_concurrent_call_keeps_its_own_uuid(captured: io.StringIO) -> None:
    setup_logging(level="INFO", fmt="json", redact=False, stream=captured)
    log = logging.getLogger("flowagent.session")

    async def call(name: str) -> None:
        with call_context(name):
            async def provider() -> None:  # a task started inside the call inherits its UUID
                await asyncio.sleep(0.01)
                log.info("provider says %s", name)
            await asyncio.gather(provider(), asyncio.sleep(0.005))
            log.info("call %s done", name)

    await asyncio.gather(*(call(f"call-{i}") for i in range(20)))
    for entry in lines(captured):
        assert str(entry["msg"]).endswith(str(entry["call"])) or \
            f"call {entry['call']} done" == entry["msg"]


def test_redaction_of_caller_data(captured: io.StringIO) -> None:
    setup_logging(level="INFO", fmt="json", redact=True, stream=captured)
    logging.getLogger("flowagent.engine").info(
        "caller said: my number is 07700 900123, email jo.bloggs@example.co.uk, "
        "postcode SW1A 1AA", extra={"slots": {"phone": "+447700900123", "postcode": "m11ae"}})
    [entry] = lines(captured)
    assert entry["msg"] == ("caller said: my number is [phone], email [email], "
                            "postcode [postcode]")
    assert entry["slots"] == {"phone": "[phone]", "postcode": "[postcode]"}


def test_no_redaction_unless_asked(captured: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWAGENT_REDACT", raising=False)
    setup_logging(level="INFO", fmt="json", stream=captured)
    logging.getLogger("x").info("postcode SW1A 1AA")
    assert lines(captured)[0]["msg"] == "postcode SW1A 1AA"


def test_redaction_spares_uuids_and_addresses() -> None:
    text = "call 550e8400-e29b-41d4-a716-446655440000 from 192.168.100.200:9099"
    assert redact_text(text) == text


def test_secrets_are_masked_even_without_redaction(captured: io.StringIO) -> None:
    setup_logging(level="INFO", fmt="json", redact=False, stream=captured)
    logging.getLogger("x").info("headers Authorization: Bearer abcdef123456 key sk-live12345678")
    msg = str(lines(captured)[0]["msg"])
    assert "abcdef123456" not in msg and "sk-live12345678" not in msg


def test_level_and_format_from_environment(captured: io.StringIO,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWAGENT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("FLOWAGENT_LOG_FORMAT", "text")
    setup_logging(stream=captured)
    log = logging.getLogger("flowagent.x")
    log.info("hidden")
    with call_context("abcdef12-0000-4000-8000-000000000000"):
        log.warning("shown")
    out = captured.getvalue()
    assert "hidden" not in out
    assert "WARNING" in out and "[abcdef12]" in out and "shown" in out


def test_exceptions_are_one_json_line(captured: io.StringIO) -> None:
    setup_logging(level="INFO", fmt="json", redact=False, stream=captured)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("tool failed")
    [entry] = lines(captured)
    assert "RuntimeError: boom" in str(entry["exc"])
