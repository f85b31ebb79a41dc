"""The control API (aiohttp), compatible with Agent Voice Response (AVR) Core where they overlap.

Routes:
- `POST /call` `{"uuid": ..., "payload": {...}}` (AVR) or `{"uuid", "metadata": {...}}`: call
  metadata (caller, did, channel, anything else) waits for the AudioSocket connection with that
  UUID and reaches templates as `call.caller`, `call.did`, `call.metadata`.
- `GET /healthz` (no auth): 200 `{"status": "ok"}` while the node takes calls, 503
  `{"status": "draining"}` once SIGTERM stopped it taking new ones (a load balancer's health
  check sends new calls elsewhere). `GET /metrics` (Prometheus text, with a `node` label).
- `GET /calls` (live calls of every node sharing the store + recent records), `GET /calls/{uuid}`
  (a live snapshot — this node's, or another node's last written one — else the latest stored
  record; a finished call never hides a live one with the same UUID; `transfer_target` tells
  the dialplan where to send the caller after AudioSocket()). `GET /nodes`: the nodes sharing
  the store, their status and last heart-beat.
- `GET /calls/{uuid}/recording`: the call's audio as a stereo WAV (caller left, agent right)
  when it was recorded (`serve --record-audio` or the flow's `settings.recording`).
- `POST /calls/{uuid}/inject` `{"text": ..., "dtmf": ...}`: text injection — as if the caller
  said `text` (or keyed `dtmf`); drives a call by text through the real turn path (tests, demos).

Auth: every route but `/healthz` needs the token, as `Authorization: Bearer <token>` or
`X-Flowagent-Token: <token>`. The token comes from `FLOWAGENT_API_TOKEN`; if unset, `serve`
generates one and prints it at start-up. Binds 127.0.0.1 unless configured otherwise.

Extending (the web UI mounts here): `create_app(runtime, extra_routes=..., subapps=...)`.
`extra_routes` is a list of `aiohttp.web.RouteDef` added to the main app (behind the same token
check unless the route's path starts with a prefix in `public_prefixes`); `subapps` maps a prefix
such as `"/ui"` to an `aiohttp.web.Application` mounted with `app.add_subapp`. The runtime is
available to handlers as `request.app[RUNTIME_KEY]` (sub-apps: `request.config_dict[RUNTIME_KEY]`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from flowagent.asterisk.routes import RegistrationRefused
from flowagent.http_body import read_capped
from flowagent.server.runtime import Runtime

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("flowagent_runtime", Runtime)
MAX_BODY = 256 * 1024
#: JSON nested deeper than this is refused before parsing (no caller's metadata needs it)
MAX_DEPTH = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ensure_token(runtime: Runtime) -> tuple[str, bool]:
    """The API token, generating one if none is configured. Returns (token, generated)."""
    if runtime.api_token:
        return runtime.api_token, False
    runtime.api_token = secrets.token_urlsafe(24)
    return runtime.api_token, True


def _token_ok(request: web.Request, token: str) -> bool:
    given = request.headers.get("X-Flowagent-Token", "")
    auth = request.headers.get("Authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(token) and bool(given) and hmac.compare_digest(given, token)


def _auth_middleware(public_prefixes: tuple[str, ...]) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/healthz" or any(path.startswith(p) for p in public_prefixes):
            return await handler(request)
        rt = request.config_dict[RUNTIME_KEY]
        if not _token_ok(request, rt.api_token):
            return web.json_response({"error": "missing or wrong API token"}, status=401)
        return await handler(request)

    return auth


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}),
                              content_type="application/json")


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object. Refused (one sentence, 4xx): another content type, a body
    that is not UTF-8 (UTF-16 and friends), nesting deeper than anyone writes, over MAX_BODY."""
    raw = await read_capped(request, MAX_BODY)
    ctype = request.content_type  # "application/octet-stream" when the header is missing
    if raw and not (ctype == "application/json" or ctype.endswith("+json")):
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"error": f"send JSON with Content-Type: application/json (got "
                                      f"{ctype})"}), content_type="application/json")
    try:
        text = raw.decode("utf-8") if raw else "{}"
    except UnicodeDecodeError:
        raise _bad_request("the body is not UTF-8 text") from None
    if text.startswith("\ufeff") or _too_deep(text):
        raise _bad_request("the body is not plain JSON (a byte-order mark, or nested deeper "
                           f"than {MAX_DEPTH} levels)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise _bad_request("the body is not JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "the body must be a JSON object"}),
            content_type="application/json",
        )
    return data


def _too_deep(text: str) -> bool:
    """Whether brackets nest deeper than MAX_DEPTH (checked before parsing: json.loads would
    recurse once per level)."""
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


async def post_call(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    data = await _json_body(request)
    raw_uuid = str(data.get("uuid") or "").strip()
    if not raw_uuid:
        return web.json_response({"error": "uuid is required"}, status=400)
    try:  # the AudioSocket UUID frame carries 16 bytes: nothing else can ever match
        uuid = str(uuidlib.UUID(raw_uuid[:64]))
    except ValueError:
        return web.json_response({"error": f"uuid {raw_uuid[:40]!r}... is not a UUID"
                                  if len(raw_uuid) > 40 else f"uuid {raw_uuid!r} is not a UUID"},
                                 status=400)
    meta = data.get("payload")
    if meta is None:
        meta = data.get("metadata")
    if meta is None:
        meta = {k: v for k, v in data.items() if k != "uuid"}
    if not isinstance(meta, dict):
        return web.json_response({"error": "payload/metadata must be an object"}, status=400)
    try:
        await rt.register_call(uuid, meta)
    except RegistrationRefused as exc:
        return web.json_response({"error": exc.message}, status=exc.status,
                                 headers={"Retry-After": "5"} if exc.status == 503 else {})
    return web.json_response({"uuid": uuid, "status": "registered"})


async def healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    body = {"status": "ok" if rt.accepting else "draining", "active_calls": len(rt.sessions),
            "node": rt.node_id, "store_queue": rt.records.pending}
    return web.json_response(body, status=200 if rt.accepting else 503)


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    m = rt.metrics
    m.active_calls = len(rt.sessions)
    lat = rt.player.lateness
    while lat:
        m.player_lateness.observe(max(0.0, lat.popleft()))
    return web.Response(text=m.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def list_calls(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "50"))))
    except ValueError:
        limit = 50
    live = [
        {"uuid": s.uuid, "live": True, "state": s.state, "node": rt.node_id,
         "flow": s.entry.name if s.entry else "", "caller": s.info.caller if s.info else "",
         "did": s.info.did if s.info else ""}
        for s in list(rt.sessions.values())
    ]
    try:
        # other nodes' calls in progress, as their last written snapshots
        live += [{**row, "live": True} for row in await rt.store.list(1000, status="live")
                 if row["node"] != rt.node_id]
        finished = [row for row in await rt.store.list(limit + len(live))
                    if row["status"] != "live"][:limit]
    except Exception as exc:
        rt.metrics.error("store")
        return web.json_response({"live": live, "calls": [],
                                  "error": f"the call-record store failed: {exc}"}, status=503)
    return web.json_response({"live": live, "calls": finished})


async def get_call(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    uuid = request.match_info["uuid"].lower()
    record = await rt.find_call(uuid)
    if record is None:
        return web.json_response({"error": f"no call {uuid}"}, status=404)
    return web.json_response(record, dumps=_dumps)


async def list_nodes(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    try:
        nodes = await rt.store.nodes()
    except Exception as exc:
        return web.json_response({"error": f"the call-record store failed: {exc}"}, status=503)
    return web.json_response({"node": rt.node_id, "nodes": nodes})


async def inject(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME_KEY]
    uuid = request.match_info["uuid"].lower()
    data = await _json_body(request)
    session = rt.sessions.get(uuid)
    if session is None:
        return web.json_response({"error": f"no live call {uuid}"}, status=404)
    text = str(data.get("text", "")).strip()
    digits = str(data.get("dtmf", "")).strip()
    if not text and not digits:
        return web.json_response({"error": "give text or dtmf"}, status=400)
    if text:
        session.inject_text(text)
    for d in digits:
        if d not in "0123456789*#ABCDabcd":
            return web.json_response({"error": f"{d!r} is not a keypad digit"}, status=400)
        session.inject_dtmf(d.upper())
    return web.json_response({"uuid": uuid, "injected": text, "dtmf": digits})


async def get_recording(request: web.Request) -> web.StreamResponse:
    """`GET /calls/{uuid}/recording`: the call's stereo WAV (caller left, agent right).
    404 (JSON) when the call was not recorded; 409 while it is still in progress. Only a
    canonical UUID names a file, so no path can leave the recordings directory."""
    from flowagent.runner import audio_recording as recording

    rt = request.app[RUNTIME_KEY]
    uuid = request.match_info["uuid"].lower()
    name = recording.safe_name(uuid)
    if name is not None and name in rt.sessions:
        return web.json_response(
            {"error": f"call {name} is still in progress; its recording is ready when it ends"},
            status=409)
    path = recording.recording_path(recording.recordings_dir(rt), uuid)
    if path is None:
        return web.json_response({"error": f"no recording of call {uuid}"}, status=404)
    await asyncio.to_thread(recording.repair_wav, path)  # a crash may have left stale sizes
    return web.FileResponse(path, headers={
        "Content-Type": "audio/wav", "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{name}.wav"', "Cache-Control": "no-store"})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def create_app(
    runtime: Runtime,
    *,
    extra_routes: Iterable[web.AbstractRouteDef] = (),
    subapps: Mapping[str, web.Application] | None = None,
    public_prefixes: tuple[str, ...] = (),
) -> web.Application:
    """Build the control API. See the module docstring for `extra_routes` and `subapps`."""
    app = web.Application(middlewares=[_auth_middleware(public_prefixes)],
                          client_max_size=MAX_BODY)
    app[RUNTIME_KEY] = runtime
    app.add_routes([
        web.post("/call", post_call),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/calls", list_calls),
        web.get("/nodes", list_nodes),
        web.get("/calls/{uuid}", get_call),
        web.get("/calls/{uuid}/recording", get_recording),
        web.post("/calls/{uuid}/inject", inject),
    ])
    app.add_routes(list(extra_routes))
    for prefix, sub in (subapps or {}).items():
        app.add_subapp(prefix, sub)
    return app


async def start_api(app: web.Application, host: str = "127.0.0.1",
                    port: int = 8080) -> tuple[web.AppRunner, int]:
    """Start serving `app`; returns the runner (call `await runner.cleanup()`) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp keeps the listening sockets here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
