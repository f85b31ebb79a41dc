"""End to end against a live server: the same pieces `flowagent serve` runs (AudioSocket server,
control API with the UI mounted at /ui, SQLite records), a call placed over AudioSocket by the
caller `flowagent call` uses, caller turns injected through the control API, and Debian's
chromium (Playwright) watching the page: the call appears, the state on the diagram changes,
the transcript streams in; after hang-up the record is searchable.

Skips with the reason when /usr/bin/chromium or playwright is missing (see test_browser.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import LIVE_TOKEN, Live
from .test_browser import CHROMIUM, LAUNCH_ARGS, playwright_api

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed: apt-get update && apt-get install -y chromium",
)

@pytest.fixture
async def page(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            yield page
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                shots = Path(os.environ.get("FLOWAGENT_ARTIFACTS", tmp_path))
                await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(shots / f"{request.node.name}.png"),
                                          full_page=True)
                    print(f"screenshot of the failure: {shots / (request.node.name + '.png')}")
        finally:
            await browser.close()


async def test_watch_a_real_call_on_a_live_server(live: Live, page: Any) -> None:
    from flowagent.asterisk.caller import AudioSocketCaller

    # the control API's own routes still need the header token; the UI has its own sign-in
    async with aiohttp.ClientSession() as s, s.get(f"{live.base}/calls") as r:
        assert r.status == 401
    await page.goto(f"{live.base}/ui/?token={LIVE_TOKEN}")
    assert page.url == f"{live.base}/ui/"
    await page.get_by_role("link", name="Swift Removals").wait_for()

    uuid = "7f0c6a52-5d43-4c8e-9a3e-0b7f2d1e9a01"
    caller = AudioSocketCaller("127.0.0.1", live.audiosocket_port, call_uuid=uuid)
    await caller.connect()
    try:
        link = page.locator(f'#live-calls li[data-uuid="{uuid}"] a')
        await link.wait_for()
        await link.click()
        await page.wait_for_url(f"{live.base}/ui/calls/{uuid}")
        await page.locator('.flow-graph .node.current[data-state="how_can_we_help"]').wait_for()
        await page.locator("#transcript li.who-agent").filter(has_text="Swift Removals").wait_for()

        await live.inject(uuid, "I'd like a quote please")
        await page.locator("#transcript li.who-caller").filter(has_text="a quote").wait_for()
        await page.locator('.flow-graph .node.current[data-state="details"]').wait_for()
        assert await page.locator("#current-state").text_content() == "details"
        await page.locator("#latency tr").first.wait_for()

        await live.inject(uuid, "L S 11 5 A B")
        await page.locator("#slots dt").filter(has_text="from_postcode").wait_for()
        assert "LS11 5AB" in (await page.locator("#slots").text_content() or "")
    finally:
        await caller.hangup()
        await caller.close()
    await page.locator("#call-status").filter(has_text="ended").wait_for()

    # the finished call is in the records, found by caller search
    for _ in range(50):
        rec = await live.runtime.store.get(uuid)
        if rec and not rec.get("live"):
            break
        await asyncio.sleep(0.1)
    await page.get_by_role("link", name="Call records").click()
    await page.get_by_label("Outcome").fill("")
    await page.get_by_role("button", name="Search").click()
    await page.locator(f'a[href="/ui/records/{uuid}"]').click()
    await page.locator(".transcript li.who-caller").filter(has_text="a quote").wait_for()
    latency_cells = await page.locator("table tbody tr td:nth-child(3)").all_text_contents()
    assert latency_cells and all(c.replace(".", "").isdigit() for c in latency_cells[:2])
