"""Every model of the offline stack loads from files inside installed packages: in a fresh
process where any non-loopback connection raises and hub downloads are booby-trapped, the whole
stack loads, works, never touched the hub cache, and never imported torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flowagent.providers.local.linesim import word_errors

# Piper samples noise, so each synthesis differs a little: "Hello there." alone came back from
# Whisper as "Below there." in 1 of 25 tries (and once in CI); this phrase gave 0 word errors in
# 25, and the check below allows one word in five.
PHRASE = "Hello, thank you for calling."

SCRIPT = r'''
import json, socket, sys
PHRASE = __PHRASE__
attempts = []
real_connect = socket.socket.connect
def guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    local = ("127.0.0.1", "::1", "localhost")
    if self.family != getattr(socket, "AF_UNIX", -1) and str(host) not in local:
        attempts.append(str(host))
        raise OSError("network disabled in this test: " + str(host))
    return real_connect(self, address)
socket.socket.connect = guarded
socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled"))

import flowagent  # sets ORT_DISABLE_TELEMETRY / HF_HUB_OFFLINE before onnxruntime loads
import faster_whisper.utils, huggingface_hub
downloads = []
def no_download(*a, **k):
    downloads.append(repr(a)[:80])
    raise RuntimeError("download attempted")
faster_whisper.utils.download_model = no_download
huggingface_hub.snapshot_download = no_download
huggingface_hub.hf_hub_download = no_download
import faster_whisper.transcribe
faster_whisper.transcribe.download_model = no_download

from flowagent.providers.local.stack import load_default_stack
stack = load_default_stack()
import asyncio
async def use():
    audio = b"".join([c async for c in stack.tts.synthesize(PHRASE, 8000)])
    t = await stack.asr.transcribe(b"\0" * 4000 + audio + b"\0" * 4000, 8000)
    s = stack.vad.open_stream(8000)
    p = await s.probability(audio[: 8000])
    return len(audio), t.text, p
n, text, p = asyncio.run(use())
print(json.dumps({"attempts": attempts, "downloads": downloads, "audio": n, "text": text,
                  "vad": p, "torch": "torch" in sys.modules, "loads": stack.load_s,
                  "score": stack.scorer.score("talk to a human", ["speak to a person"])}))
'''


def test_stack_loads_from_package_files_with_network_disabled(tmp_path: Path) -> None:
    hub = tmp_path / "hf-home"
    env = dict(os.environ, HF_HOME=str(hub), HF_HUB_OFFLINE="1", ORT_DISABLE_TELEMETRY="1")
    script = SCRIPT.replace("__PHRASE__", repr(PHRASE))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=240, cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["attempts"] == [], "a model load tried to reach the network"
    assert result["downloads"] == [], "a model download was attempted"
    assert not hub.exists() or not any(hub.rglob("*")), "something was written to the hub cache"
    assert result["torch"] is False, "torch was imported"
    assert result["audio"] > 8000  # over half a second of speech at 8 kHz
    errors, _ = word_errors(PHRASE, result["text"])
    assert errors <= 1, result["text"]  # the stack really speaks and hears (5 words)
    assert set(result["loads"]) == {"whisper tiny.en", "piper joe", "silero", "minilm"}
    assert result["score"] > 0.6
