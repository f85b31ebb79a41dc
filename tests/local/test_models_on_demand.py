"""Offline models load only when a served flow needs them (issue 20): a flow that hears with
Deepgram and speaks with Cartesia (pointed at the loopback fakes) imports neither Whisper nor
Piper nor MiniLM; an offline flow loads them, and so does a hot reload that turns a cloud flow
into an offline one.

The runtime runs in a fresh interpreter so `sys.modules` says what *it* imported (this pytest
process may have loaded the models for other tests); `LocalModels.loaded` is the declared
record of what was loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from providers.fakes import FakeCartesia, FakeDeepgram

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from flowagent.providers.local.stack import LocalModels
    from flowagent.server.runtime import FlowSet, ProviderPool

    flows = FlowSet(ProviderPool())
    flows.local_models = LocalModels()
    path = Path(sys.argv[1])
    flows.load(path)
    out = {"start": sorted(flows.local_models.loaded),
           "modules": sorted(m for m in ("faster_whisper", "piper", "tokenizers")
                             if m in sys.modules),
           "scorer": flows.intent_scorer is not None}
    if len(sys.argv) > 2:  # then: the file becomes this flow, and the server reloads it
        Path(sys.argv[1]).write_text(Path(sys.argv[2]).read_text())
        os.utime(path, (time.time() + 5, time.time() + 5))
        out["reload"] = flows.reload_changed()
        out["after"] = sorted(flows.local_models.loaded)
        out["after_scorer"] = flows.intent_scorer is not None
    print(json.dumps(out))
""")


def run_runtime(*files: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, files)], env=env,
                          capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def flow_with(tmp: Path, name: str, providers: dict[str, Any] | None) -> Path:
    data = yaml.safe_load((ROOT / "flows" / "removals.yaml").read_text())
    data.pop("providers", None)
    if providers:
        data["providers"] = providers
    out = tmp / name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    for extra in ROOT.joinpath("flows").glob("removals.*.yaml"):  # tools beside the flow
        (tmp / extra.name.replace("removals", Path(name).stem)).write_text(extra.read_text())
    return out


def cloud_section(dg: FakeDeepgram, ct: FakeCartesia,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("FA_TEST_DG_KEY", dg.api_key)  # the child inherits them
    monkeypatch.setenv("FA_TEST_CT_KEY", ct.api_key)
    return {"asr": {"name": "deepgram", "options": {"api_key": "${FA_TEST_DG_KEY}",
                                                    "url": dg.url}},
            "tts": {"name": "cartesia", "options": {"api_key": "${FA_TEST_CT_KEY}", "url": ct.url,
                                                    "voice_id": "voice-uk-1"}},
            "vad": {"name": "webrtc"}}


async def test_cloud_flow_loads_no_model_and_a_reload_to_offline_loads_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDeepgram(["hello"]) as dg, FakeCartesia() as ct:
        cloud = flow_with(tmp_path, "cloud.yaml", cloud_section(dg, ct, monkeypatch))
        offline = flow_with(tmp_path, "offline.yaml", None)
        out = run_runtime(cloud, offline)
    # the removals flow declares intents: its intent scorer (MiniLM) loads whatever it hears
    # with; no speech model does
    assert out["start"] == ["minilm"] and out["modules"] == ["tokenizers"] and out["scorer"], out
    assert out["reload"] == ["reloaded cloud.yaml (" + out["reload"][0].split("(")[1]], out
    assert out["after"] == ["minilm", "piper", "silero", "whisper"] and out["after_scorer"], out


def test_offline_flow_loads_the_stack(tmp_path: Path) -> None:
    out = run_runtime(flow_with(tmp_path, "offline.yaml", None))
    assert out["start"] == ["minilm", "piper", "silero", "whisper"], out
    assert out["modules"] == ["faster_whisper", "piper", "tokenizers"] and out["scorer"], out
