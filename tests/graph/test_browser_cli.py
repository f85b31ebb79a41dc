"""The issue's end-to-end test, with the real commands: `flowagent serve` in a subprocess,
`flowagent call` placing a call over AudioSocket with caller turns from WAV files, and Debian's
chromium (Playwright) watching /ui: the call appears, the current state changes on the diagram,
the transcript appears. Screenshot on failure ($FLOWAGENT_ARTIFACTS or the test's tmp dir).

The server's flow uses the `fake` speech providers (no models): the fake ASR answers each caller
turn it hears with the next of its `transcripts`, so the whole audio path (VAD, end of turn, ASR
stream, engine, TTS, pacing) runs for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import struct
import sys
import wave
from collections.abc import AsyncIterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import ROOT
from .test_browser import CHROMIUM, LAUNCH_ARGS, playwright_api

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian's chromium is not installed: apt-get update && apt-get install -y chromium",
    ),
    pytest.mark.skipif(
        not (find_spec("flowagent.commands.serve") and find_spec("flowagent.commands.call")),
        reason="`flowagent serve` / `flowagent call` are not in this tree yet",
    ),
]

TOKEN = "cli-ui-token"
PROVIDERS = """
providers:
  asr: {name: fake, options: {latency_ms: 0, transcripts: ["I'd like a quote please", "LS11 5AB"]}}
  tts: {name: fake, options: {ms_per_word: 60}}
  vad: {name: fake, options: {threshold: 0.01}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tone_wav(path: Path, seconds: float = 0.8) -> Path:
    """A caller 'turn': a tone loud enough for the fake VAD, in AudioSocket's 8 kHz s16 mono."""
    frames = b"".join(
        struct.pack("<h", int(9000 * math.sin(2 * math.pi * 300 * i / 8000)))
        for i in range(int(8000 * seconds))
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    return path


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    flow = tmp_path / "removals.yaml"
    text = (ROOT / "flows/removals.yaml").read_text()
    flow.write_text(text.replace("\nstart: greet\n", "\nstart: greet\n" + PROVIDERS, 1))
    audiosocket, http = free_port(), free_port()
    env = {**os.environ, "FLOWAGENT_API_TOKEN": TOKEN}
    log = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowagent.cli", "serve", str(flow),
        "--audiosocket", f"127.0.0.1:{audiosocket}", "--http", f"127.0.0.1:{http}",
        "--db", str(tmp_path / "calls.db"),
        cwd=tmp_path, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{http}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(300):  # model-free start-up: a few seconds at most
                if proc.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"{base}/healthz",
                                     timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
        if proc.returncode is not None:
            log.close()
            pytest.fail("flowagent serve exited:\n" + (tmp_path / "serve.log").read_text())
        yield {"base": base, "audiosocket": audiosocket, "tmp": tmp_path, "env": env}
    finally:
        await _stop(proc)
        log.close()


async def test_flowagent_serve_and_call_seen_live_in_the_browser(
    served: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    base, tmp = served["base"], served["tmp"]
    uuid = "5b1f0d4e-2c3a-4b5c-8d6e-7f8091a2b3c4"
    async with aiohttp.ClientSession() as s, s.get(
        f"{base}/ui/?token={TOKEN}", allow_redirects=False
    ) as r:
        # serve leaves /ui to the UI's own sign-in (public_prefixes): the token in the URL works
        assert r.status != 401, await r.text()
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        call = None
        try:
            await page.goto(f"{base}/ui/?token={TOKEN}")
            assert page.url == f"{base}/ui/", "flowagent serve does not serve the web UI at /ui"
            await page.get_by_role("link", name="Swift Removals").wait_for()
            call = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "flowagent.cli", "call",
                "--to", f"127.0.0.1:{served['audiosocket']}", "--uuid", uuid,
                "--wav", str(tone_wav(tmp / "turn1.wav")),
                "--wav", str(tone_wav(tmp / "turn2.wav")),
                cwd=tmp, env=served["env"],
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            link = page.locator(f'#live-calls li[data-uuid="{uuid}"] a')
            await link.wait_for()
            await link.click()
            await page.wait_for_url(f"{base}/ui/calls/{uuid}")
            agent = page.locator("#transcript li.who-agent")
            await agent.filter(has_text="Swift Removals").wait_for()
            # the current state moves through the flow as the caller's turns are heard
            await page.locator('.flow-graph .node.visited[data-state="how_can_we_help"]').wait_for()
            await page.locator("#transcript li.who-caller").filter(has_text="a quote").wait_for()
            await page.locator('.flow-graph [data-state="details"].current, '
                               '.flow-graph [data-state="details"].visited').first.wait_for()
            await page.locator("#slots dt").filter(has_text="from_postcode").wait_for()
            output, _ = await asyncio.wait_for(call.communicate(), 60)
            assert call.returncode == 0, output.decode(errors="replace")
            await page.locator("#call-status").filter(has_text="ended").wait_for()
        except BaseException:
            shots = Path(os.environ.get("FLOWAGENT_ARTIFACTS", tmp))
            await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                await page.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
                print(f"screenshot of the failure: {shots / (request.node.name + '.png')}")
            raise
        finally:
            if call is not None and call.returncode is None:
                call.kill()
                await call.wait()
            await browser.close()
