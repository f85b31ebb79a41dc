"""End to end in a real headless browser: Debian's chromium driven by Playwright.

The page is served by a real aiohttp server on 127.0.0.1; a call is placed through the real
dialogue engine driven by text (`flowagent.dialogue.text_driver.Conversation`), whose actions are
reported to the web UI's hub exactly as the live call session reports them. The browser must see
the call appear, the current state change on the diagram and the transcript stream in.

Needs `/usr/bin/chromium` (Debian: `apt-get install -y chromium`) and the `playwright` pip
package; never `playwright install` (no browser downloads). Skips with the reason otherwise.
A screenshot is saved on failure (in $FLOWAGENT_ARTIFACTS, else the test's tmp dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from flowagent.web import LiveHub, MemoryRecords, create_ui_app

from .conftest import ROOT
from .engine_call import TextCall

CHROMIUM = os.environ.get("FLOWAGENT_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-token"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian's chromium is not installed: apt-get update && apt-get install -y chromium",
    ),
]
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright pip package is not installed"
)


CONVERSATION_TESTS = """\
tests:
  - name: greets the caller
    turns:
      - expect: {say_contains: Swift Removals, state: how_can_we_help}
      - caller: I'd like a quote
        expect: {state: details}
  - name: wrong on purpose
    turns:
      - expect: {say_contains: Goodbye forever}
"""


@pytest.fixture
async def live_server(tmp_path: Path) -> AsyncIterator[tuple[str, LiveHub]]:
    """The UI mounted at /ui of an app, like `flowagent serve`, on a real port."""
    flow = tmp_path / "removals.yaml"
    flow.write_text((ROOT / "flows/removals.yaml").read_text())
    (tmp_path / "removals.tests.yaml").write_text(CONVERSATION_TESTS)
    hub = LiveHub()
    app = web.Application()
    app.add_subapp(
        "/ui",
        create_ui_app(flows=[flow], hub=hub, records=MemoryRecords(), token=TOKEN, prefix="/ui"),
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", hub
    finally:
        hub.close()
        await runner.cleanup()


@pytest.fixture
async def browser_page(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.set_default_timeout(15_000)
            yield page
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                shots = Path(os.environ.get("FLOWAGENT_ARTIFACTS", tmp_path))
                await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
                shot = shots / f"{request.node.name}.png"
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failure: {shot}")
        finally:
            await browser.close()


async def test_watch_a_call_live_in_the_browser(live_server, browser_page) -> None:
    base, hub = live_server
    page = browser_page
    await page.goto(f"{base}/ui/?token={TOKEN}")
    assert page.url == f"{base}/ui/"  # the token moved into a cookie
    await page.get_by_role("link", name="Swift Removals").wait_for()
    await page.locator("#no-calls").wait_for(state="visible")

    call = TextCall(hub, "e2e-call-1", "+447700900123")
    await call.start()
    # the home page learns about the call over the WebSocket, without a reload
    link = page.locator('#live-calls li[data-uuid="e2e-call-1"] a')
    await link.wait_for()
    await page.locator('#live-calls li[data-uuid="e2e-call-1"] .call-state').filter(
        has_text="how_can_we_help"
    ).wait_for()
    await link.click()
    await page.wait_for_url(f"{base}/ui/calls/e2e-call-1")

    current = page.locator(".flow-graph .node.current")
    await page.locator('.flow-graph .node.current[data-state="how_can_we_help"]').wait_for()
    await page.locator("#transcript li.who-agent").filter(has_text="Swift Removals").wait_for()

    await call.say("I'd like a quote for a move")
    await page.locator("#transcript li.who-caller").filter(has_text="a quote for a move").wait_for()
    await page.locator('.flow-graph .node.current[data-state="details"]').wait_for()
    assert await current.count() == 1
    assert await page.locator("#current-state").text_content() == "details"
    assert await page.locator('.flow-graph .node.visited[data-state="how_can_we_help"]').count()
    await page.locator("#transcript li.who-agent").filter(has_text="postcode").first.wait_for()

    await call.say("LS11 5AB")
    await page.locator("#slots dt").filter(has_text="from_postcode").wait_for()
    assert "LS11 5AB" in (await page.locator("#slots").text_content() or "")
    assert await page.locator("#latency tr").count() == 2  # one row per caller turn

    await call.hangup()
    await page.locator("#call-status").filter(has_text="ended").wait_for()

    # the page fits a phone screen: no sideways scrolling of the page itself
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0


async def test_login_form_and_flow_diagram_in_the_browser(live_server, browser_page) -> None:
    base, _ = live_server
    page = browser_page
    await page.goto(f"{base}/ui/flows/removals")
    assert "/ui/login" in page.url  # not signed in yet
    await page.get_by_label("Access token").fill("wrong")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="not right").wait_for()
    await page.get_by_label("Access token").fill(TOKEN)
    await page.keyboard.press("Enter")  # keyboard only
    await page.wait_for_url(f"{base}/ui/flows/removals")
    states = await page.locator(".flow-graph .node[data-state]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.state)"
    )
    assert {"greet", "how_can_we_help", "get_quote", "goodbye", "to_human"} <= set(states)
    # every state of the diagram is reachable with the keyboard and named for screen readers
    first = page.locator('.flow-graph .node[data-state="greet"]')
    assert await first.get_attribute("tabindex") == "0"
    assert "greet" in (await first.get_attribute("aria-label") or "")

    # run the flow's conversation tests from the page: pass/fail per test, no page reload
    await page.get_by_role("button", name="Run conversation tests").click()
    await page.locator(".test-summary").filter(has_text="1 passed, 1 failed").wait_for()
    assert page.url == f"{base}/ui/flows/removals"
    assert await page.locator("table.tests tr.pass").filter(has_text="greets the caller").count()
    failed = page.locator("table.tests tr.fail").filter(has_text="wrong on purpose")
    assert "Goodbye forever" in (await failed.text_content() or "")



async def test_a_call_page_opens_at_the_top_and_stays_there(live_server, browser_page) -> None:
    """The current state is brought into view inside the diagram's own scroll box; the page
    itself stays at the top (it used to open ~430 px down, its header out of sight)."""
    base, hub = live_server
    page = browser_page
    call = TextCall(hub, "scroll-call", "+447700900123")
    await call.start()
    await call.say("I'd like a quote for a move")
    await call.say("LS11 5AB")
    await page.goto(f"{base}/ui/calls/scroll-call?token={TOKEN}")
    await page.locator(".flow-graph .node.current").wait_for()
    await page.locator("#transcript li.who-caller").first.wait_for()
    await page.wait_for_timeout(300)  # let the live connection's first update land
    assert await page.evaluate("window.scrollY") == 0
    assert await page.locator("header").evaluate("h => h.getBoundingClientRect().top") >= 0
    await call.say("M1 1AE")  # a new state while the page is open
    await page.locator("#transcript li.who-caller").filter(has_text="M1 1AE").wait_for()
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.scrollY") == 0
    # ...and the current state is visible inside the diagram's box
    inside = await page.evaluate("""() => {
        const node = document.querySelector('.flow-graph .node.current');
        const box = node.closest('.graph-scroll').getBoundingClientRect();
        const r = node.getBoundingClientRect();
        return r.bottom > box.top && r.top < box.bottom && r.right > box.left && r.left < box.right;
    }""")
    assert inside


async def test_ended_calls_move_out_of_live_calls(live_server, browser_page) -> None:
    base, hub = live_server
    page = browser_page
    await page.goto(f"{base}/ui/?token={TOKEN}")
    await page.locator("#no-calls").wait_for(state="visible")
    first, second = TextCall(hub, "aaaa1111-call", ""), TextCall(hub, "bbbb2222-call", "")
    await first.start()
    await second.start()
    live = page.locator("#live-calls li")
    await page.locator('#live-calls li[data-uuid="bbbb2222-call"]').wait_for()
    assert await live.count() == 2
    texts = await live.all_text_contents()
    assert texts[0] != texts[1]  # two unknown callers are still two different lines
    await first.hangup()
    ended = page.locator('#recent-calls li[data-uuid="aaaa1111-call"]')
    await ended.wait_for()
    assert "ended" in (await ended.text_content() or "")
    assert await live.count() == 1
    assert await page.locator('#live-calls li[data-uuid="aaaa1111-call"]').count() == 0
    await page.reload()  # the page as served agrees with the live update
    await page.locator('#recent-calls li[data-uuid="aaaa1111-call"]').wait_for()
    assert await page.locator("#live-calls li").count() == 1


async def test_a_wrong_token_link_opens_the_sign_in_page(live_server, browser_page) -> None:
    base, _ = live_server
    page = browser_page
    await page.goto(f"{base}/ui/?token=demo")
    await page.get_by_role("alert").filter(has_text="not right").wait_for()
    await page.get_by_label("Access token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/ui/")
    await page.get_by_role("heading", name="Live calls").wait_for()
