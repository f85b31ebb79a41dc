"""`flowagent serve` loads only the offline models its flows use: a flow on other recognition
and voice providers with the Silero VAD loads Silero, not Whisper and Piper (~390 MB, seconds of
start-up); the MiniLM intent scorer comes when a flow declares intents; a flow that uses none
loads none."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_proc import ROOT, start_serve, subprocess_env

pytest.importorskip("faster_whisper")

BASIC = (ROOT / "tests" / "runtime" / "flows" / "basic.yaml").read_text()


def _flow(tmp: Path, vad: str) -> Path:
    text = BASIC.replace("  vad: {name: fake, options: {threshold: 0.01}}", f"  vad: {vad}", 1)
    assert f"vad: {vad}" in text
    path = tmp / "flow.yaml"
    path.write_text(text)
    return path


async def _startup_log(tmp: Path, vad: str) -> str:
    served = await start_serve(_flow(tmp, vad), tmp, env=subprocess_env(),
                               args=("--prompt-cache", "off"))
    try:
        return served.log()
    finally:
        await served.stop()


async def test_only_the_silero_vad_is_loaded_for_a_flow_that_uses_only_it(tmp_path: Path) -> None:
    log = await _startup_log(tmp_path, "{name: silero}")
    line = next(x for x in log.splitlines() if "offline speech stack loaded" in x)
    assert "silero" in line
    assert "whisper" not in line and "piper" not in line and "minilm" not in line, line


async def test_a_flow_with_intents_gets_the_intent_scorer_whatever_it_hears_with(
        tmp_path: Path) -> None:
    global BASIC
    plain = BASIC
    BASIC = plain.replace("\nslots:", "\nintents:\n  quote:\n    examples: [a quote please,"
                          " how much is it]\n\nslots:", 1)
    try:
        assert "intents:" in BASIC
        log = await _startup_log(tmp_path, "{name: silero}")
    finally:
        BASIC = plain
    line = next(x for x in log.splitlines() if "offline speech stack loaded" in x)
    assert "silero" in line and "minilm" in line and "whisper" not in line, line


async def test_no_offline_model_is_loaded_for_a_flow_that_uses_none(tmp_path: Path) -> None:
    log = await _startup_log(tmp_path, "{name: fake}")
    assert "offline speech stack loaded" not in log
