"""The read-only web UI as an aiohttp sub-application (mounted at /ui by the control API).

    ui = create_ui_app(flows=[Path("flows/removals.yaml")], hub=hub, records=records,
                       token=token, prefix="/ui")
    api_app.add_subapp("/ui", ui)

Auth is the control API's token: `?token=...` once (it is moved into an HttpOnly cookie and the
URL is cleaned; a wrong one shows the sign-in page saying so), a login form, an
`Authorization: Bearer` header or the control API's `X-Flowagent-Token` header. Only the login
page and the static files (no data in them) are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import WSMsgType, web

from flowagent.graph.status import FlowStatus, inspect_flow
from flowagent.web import pages
from flowagent.web.convtests import TestRunner, default_test_runner, tests_file_for
from flowagent.web.hub import LiveHub
from flowagent.web.record_pages import MemoryRecords, RecordSource

COOKIE = "flowagent_token"
#: the control API's token header (`server/control_api.py`), accepted by the UI as well
TOKEN_HEADER = "X-Flowagent-Token"
STATIC_DIR = Path(__file__).parent / "static"
WS_HEARTBEAT_S = 20.0
TEST_TIMEOUT_S = 120.0

HUB: web.AppKey[LiveHub] = web.AppKey("hub", LiveHub)


class UiConfig:
    """Everything the handlers need, kept on the app."""

    def __init__(
        self,
        flows: Callable[[], Iterable[Path]],
        records: RecordSource,
        token: str | Callable[[], str] | None,
        prefix: str,
        test_runner: TestRunner | None,
    ) -> None:
        self.flows = flows
        self.records = records
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.test_runner = test_runner
        #: one test run at a time: on a live server the calls come first
        self.test_lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, FlowStatus]] = {}

    def token_value(self) -> str | None:
        """The token now (the runtime may generate its token after the UI is built)."""
        return self.token() if callable(self.token) else self.token

    def flow_statuses(self) -> dict[str, FlowStatus]:
        """Key (file stem) -> status; re-inspected only when the file changes."""
        out: dict[str, FlowStatus] = {}
        for path in self.flows():
            key = _flow_key(path, out)
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                mtime = -1.0
            cached = self._cache.get(str(path))
            if cached is None or cached[0] != mtime:
                cached = (mtime, inspect_flow(path))
                self._cache[str(path)] = cached
            out[key] = cached[1]
        return out

    def status_by_flow_name(self, name: str) -> FlowStatus | None:
        """A live call names its flow by the flow's `name:` (or file stem)."""
        for key, status in self.flow_statuses().items():
            if name in (key, status.name, status.path):
                return status
        return None


CONFIG: web.AppKey[UiConfig] = web.AppKey("ui_config", UiConfig)


def _flow_key(path: Path, taken: dict[str, Any]) -> str:
    key, n = Path(path).stem, 2
    while key in taken:
        key, n = f"{Path(path).stem}-{n}", n + 1
    return key


def create_ui_app(
    *,
    flows: Iterable[str | Path] | Callable[[], Iterable[Path]],
    hub: LiveHub | None = None,
    records: RecordSource | None = None,
    token: str | Callable[[], str] | None = None,
    prefix: str = "/ui",
    test_runner: TestRunner | None = default_test_runner,
) -> web.Application:
    """Build the UI sub-app. `prefix` must be where it is mounted (links are absolute).
    `token=None` switches auth off (only for local development; `serve` always passes one)."""
    if callable(flows):
        flow_source = flows
    else:
        fixed = [Path(p) for p in flows]

        def flow_source() -> Iterable[Path]:
            return fixed

    records = records if records is not None else MemoryRecords()
    hub = hub if hub is not None else LiveHub(records)
    if hub.records is None:
        hub.records = records
    app = web.Application(middlewares=[_auth_middleware])
    app[HUB] = hub
    app[CONFIG] = UiConfig(flow_source, records, token, prefix, test_runner)
    app.router.add_get("/", home)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/flows/{key}", flow_view)
    app.router.add_post("/flows/{key}/tests", run_tests)
    app.router.add_get("/flows/{key}/graph.svg", flow_svg)
    app.router.add_get("/calls/{uuid}", call_view)
    app.router.add_get("/api/calls", calls_json)
    app.router.add_get("/records", records_view)
    app.router.add_get("/records/{uuid}", record_view)
    app.router.add_get("/records/{uuid}/audio", record_audio)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    return app


# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------


def _token_ok(config: UiConfig, given: str | None) -> bool:
    token = config.token_value()
    if token is None:
        return True
    return bool(token) and given is not None and bool(given) and hmac.compare_digest(
        given.encode(), token.encode())


def _cookie_value(token: str) -> str:
    """The cookie holds a value derived from the token, not the API token itself: a leaked
    cookie opens this read-only page but cannot drive the control API."""
    return hmac.new(token.encode(), b"flowagent-web-ui", hashlib.sha256).hexdigest()


def _cookie_ok(config: UiConfig, given: str | None) -> bool:
    token = config.token_value()
    if token is None:
        return True
    return bool(token) and given is not None and bool(given) and hmac.compare_digest(
        given, _cookie_value(token))


@web.middleware
async def _auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    config = request.app[CONFIG]
    tail = request.path[len(config.prefix):] if request.path.startswith(config.prefix) else ""
    if tail.startswith("/static/") or tail == "/login":
        return await handler(request)
    query_token = request.query.get("token")
    if query_token is not None:
        if not _token_ok(config, query_token):
            # the sign-in page, saying what is wrong, instead of a bare "Wrong token."
            query = {k: v for k, v in request.query.items() if k != "token"}
            next_url = _safe_next(config, request.path + (f"?{urlencode(query)}" if query
                                                          else ""))
            return _html(pages.login_page(config.prefix, next_url, failed=True), status=401)
        query = {k: v for k, v in request.query.items() if k != "token"}
        target = request.path + (f"?{urlencode(query)}" if query else "")
        if request.method == "GET" and request.headers.get("Upgrade", "").lower() != "websocket":
            response = web.HTTPSeeOther(target)
            _set_cookie(response, config)
            raise response
        return await handler(request)
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer ") and _token_ok(config, bearer[7:].strip()):
        return await handler(request)
    # the control API's own header works here too (scripts, reverse proxies)
    header = request.headers.get(TOKEN_HEADER)
    if header is not None and _token_ok(config, header.strip()):
        return await handler(request)
    if _cookie_ok(config, request.cookies.get(COOKIE)):
        return await handler(request)
    wants_html = "text/html" in request.headers.get("Accept", "")
    if request.method == "GET" and wants_html:
        raise web.HTTPSeeOther(f"{config.prefix}/login?{urlencode({'next': request.path_qs})}")
    raise web.HTTPUnauthorized(text="Sign in first: pass the API token.")


def _set_cookie(response: web.StreamResponse, config: UiConfig) -> None:
    token = config.token_value()
    if token is not None:
        response.set_cookie(
            COOKIE,
            _cookie_value(token),
            path=config.prefix or "/",
            httponly=True,
            samesite="Strict",
        )


def _safe_next(config: UiConfig, next_url: str) -> str:
    """Only same-site paths under the UI (no open redirect)."""
    home_url = f"{config.prefix}/"
    if not next_url.startswith(config.prefix + "/") or next_url.startswith("//"):
        return home_url
    return next_url


async def login_form(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    next_url = _safe_next(config, request.query.get("next", ""))
    return _html(pages.login_page(config.prefix, next_url, failed=False))


async def login_submit(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    form = await request.post()
    next_url = _safe_next(config, str(form.get("next", "")))
    if not _token_ok(config, str(form.get("token", ""))):
        return _html(pages.login_page(config.prefix, next_url, failed=True), status=401)
    response = web.HTTPSeeOther(next_url)
    _set_cookie(response, config)
    raise response


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; media-src 'self'; connect-src 'self'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def home(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    statuses = await asyncio.to_thread(config.flow_statuses)
    return _html(pages.home_page(config.prefix, statuses, request.app[HUB].live()))


def _status_or_404(config: UiConfig, statuses: dict[str, FlowStatus], key: str) -> FlowStatus:
    status = statuses.get(key)
    if status is None:
        raise web.HTTPNotFound(
            text=pages.not_found(config.prefix, f"No flow called {key}."), content_type="text/html"
        )
    return status


async def flow_view(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    key = request.match_info["key"]
    status = _status_or_404(config, await asyncio.to_thread(config.flow_statuses), key)
    has_tests = config.test_runner is not None and tests_file_for(status.path) is not None
    return _html(pages.flow_page(config.prefix, key, status, has_tests))


async def flow_svg(request: web.Request) -> web.Response:
    from flowagent.graph.render import to_svg

    config = request.app[CONFIG]
    status = _status_or_404(
        config, await asyncio.to_thread(config.flow_statuses), request.match_info["key"]
    )
    if status.graph is None:
        raise web.HTTPUnprocessableEntity(text="\n".join(status.blocking))
    return web.Response(text=to_svg(status.graph), content_type="image/svg+xml")


async def run_tests(request: web.Request) -> web.Response:
    """Run the flow's conversation tests; JSON for the page's script, HTML for a plain form."""
    config = request.app[CONFIG]
    key = request.match_info["key"]
    status = _status_or_404(config, await asyncio.to_thread(config.flow_statuses), key)
    results: list[dict[str, Any]] = []
    error = ""
    tests_path = tests_file_for(status.path)
    if config.test_runner is None or tests_path is None:
        error = "This flow has no conversation tests file next to it."
    else:
        try:
            async with config.test_lock:
                results = await asyncio.wait_for(
                    config.test_runner(Path(status.path), tests_path), TEST_TIMEOUT_S
                )
        except TimeoutError:
            error = f"The tests did not finish within {TEST_TIMEOUT_S:.0f} seconds."
        except Exception as exc:  # the page must say why, not crash
            error = f"The tests could not run: {exc}"
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(
            {"results": results, "error": error, "html": pages.test_results_html(results, error)}
        )
    body = pages.flow_page(config.prefix, key, status, True).replace(
        '<div id="test-results" aria-live="polite"></div>',
        f'<div id="test-results" aria-live="polite">{pages.test_results_html(results, error)}'
        "</div>",
    )
    return _html(body)


async def call_view(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    uuid = request.match_info["uuid"]
    call = request.app[HUB].get(uuid)
    if call is None:
        record = await config.records.get(uuid)
        if record is None:
            raise web.HTTPNotFound(
                text=pages.not_found(config.prefix, f"No call {uuid}."), content_type="text/html"
            )
        raise web.HTTPSeeOther(f"{config.prefix}/records/{uuid}")
    status = await asyncio.to_thread(config.status_by_flow_name, str(call.get("flow", "")))
    return _html(pages.call_page(config.prefix, call, status))


async def calls_json(request: web.Request) -> web.Response:
    return web.json_response({"calls": request.app[HUB].live()})


async def records_view(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    caller = request.query.get("caller", "").strip()
    day = request.query.get("date", "").strip()
    outcome = request.query.get("outcome", "").strip()
    rows = await config.records.search(caller=caller, day=day, outcome=outcome, limit=200)
    return _html(pages.records_page(config.prefix, rows, caller, day, outcome))


async def record_view(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    uuid = request.match_info["uuid"]
    record = await config.records.get(uuid)
    if record is None:
        raise web.HTTPNotFound(
            text=pages.not_found(config.prefix, f"No record {uuid}."), content_type="text/html"
        )
    has_audio = config.records.recording(uuid) is not None
    return _html(pages.record_page(config.prefix, record, has_audio))


async def record_audio(request: web.Request) -> web.StreamResponse:
    path = request.app[CONFIG].records.recording(request.match_info["uuid"])
    if path is None:
        raise web.HTTPNotFound(text="No recording for this call.")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


# ---------------------------------------------------------------------------------------------
# Live feed
# ---------------------------------------------------------------------------------------------


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Events as JSON text frames. `?call=UUID` limits the feed to one call. The first frame is a
    `hello` with the current snapshot(s), so a page that reconnects catches up."""
    hub = request.app[HUB]
    only = request.query.get("call")
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:
        # another site's page must not read the feed with our cookie
        raise web.HTTPForbidden(text="The live feed only serves this site's own pages.")
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S)
    await ws.prepare(request)
    queue = hub.subscribe()
    snapshot = [hub.get(only)] if only else hub.live()
    await ws.send_str(json.dumps({"type": "hello", "calls": [c for c in snapshot if c]}))

    async def drain_client() -> None:
        async for msg in ws:  # read-only feed: just notice close/errors
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break

    reader = asyncio.create_task(drain_client())
    try:
        while not ws.closed:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            event = getter.result()
            if event is None:
                break
            if only and event.get("uuid") != only:
                continue
            await ws.send_str(json.dumps(event, default=str))
    finally:
        hub.unsubscribe(queue)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ws.close()
    return ws
