"""HTTP routes the Asterisk dialplan talks to, added to the runtime's aiohttp app.

`GET /calls/{uuid}/transfer` -> `text/plain` body `context,exten,priority` when the agent asked
for a transfer, or an empty body (200) when it did not (the dialplan then hangs up). Unknown
UUIDs also answer empty: the dialplan must never `Goto` an error page.

`POST /asterisk/call` -> the registration the CURL() dialplan sends: form-encoded fields `uuid`,
`caller`, `caller_name`, `did`, `channel`, `uniqueid`, `flow` (JSON accepted too), handed to
`state.register_call(uuid, metadata)` like the AVR-compatible `POST /call`; answers
`{"uuid", "status": "registered", "flow": <flow chosen for the DID>}`. Only added when `state`
has `register_call` (the runtime does).

The runtime owns `api.py`; it calls `add_routes(app, runtime)` once (or passes
`route_defs(runtime)` as `create_app(..., extra_routes=...)`). `state` may be a `TransferStore`,
an object with `.transfers` (a TransferStore), or the runtime itself: the target is then read
from the live session's `transfer_target`, the recent records, or the record store.

`parse_call_registration(content_type, body)` (usable by the runtime's `POST /call` too) accepts
both the AVR JSON body (`{"uuid": ..., "payload": {...}}`, also `"metadata"`) and the
form-encoded body the CURL() dialplan sends (Asterisk strips double quotes from function
arguments, so the dialplan cannot send JSON).
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from flowagent.asterisk.transfer import (
    DEFAULT_CONTEXT,
    QUEUE_CONTEXT,
    TransferStore,
    parse_target,
)
from flowagent.http_body import read_capped

log = logging.getLogger("flowagent.asterisk.routes")


async def lookup_destination(
    state: Any, call_uuid: str, *, default_context: str = DEFAULT_CONTEXT,
    queue_context: str = QUEUE_CONTEXT,
) -> str:
    """`context,exten,priority` for a call's transfer, or '' (none, or refused as unsafe)."""
    key = call_uuid.lower()
    store = state if isinstance(state, TransferStore) else getattr(state, "transfers", None)
    if isinstance(store, TransferStore):
        pending = store.get(call_uuid) or store.get(key)
        if pending is not None:
            return pending.destination.goto()
    raw = await lookup_target(state, call_uuid)
    if not raw:
        return ""
    try:
        return parse_target(raw, default_context=default_context,
                            queue_context=queue_context).goto()
    except ValueError as exc:
        log.warning("transfer target for %s refused: %s", key, exc)
        return ""


async def lookup_target(state: Any, call_uuid: str) -> str:
    """The raw transfer target the engine chose for a call, from wherever the runtime keeps it:
    the live session (`state.sessions[uuid].transfer_target`), the recent records
    (`state.recent[uuid]`), then the record store (`await state.store.get(uuid)`). Empty when
    there is none."""
    key = call_uuid.lower()
    sessions = getattr(state, "sessions", None)
    if isinstance(sessions, dict) and key in sessions:
        target = getattr(sessions[key], "transfer_target", "")
        if target:
            return str(target)
    recent = getattr(state, "recent", None)
    if isinstance(recent, dict) and isinstance(recent.get(key), dict):
        target = recent[key].get("transfer_target") or ""
        if target:
            return str(target)
    records = getattr(state, "store", None)
    getter = getattr(records, "get", None)
    if getter is not None and inspect.iscoroutinefunction(getter):
        try:
            record = await getter(key)
        except Exception:  # a store failure must not turn into a dialplan error page
            log.exception("transfer lookup: call store failed for %s", key)
            record = None
        if isinstance(record, dict):
            return str(record.get("transfer_target") or "")
    return ""


def add_routes(
    app: web.Application,
    state: Any,
    *,
    token: str | None = None,
    default_context: str = DEFAULT_CONTEXT,
    queue_context: str = QUEUE_CONTEXT,
) -> None:
    """Register `GET /calls/{uuid}/transfer` on `app` (see module docstring for `state`).

    If `token` is given, requests must carry `Authorization: Bearer <token>` (or
    `X-Flowagent-Token`); leave it None when the app's auth middleware already checks every
    non-health route (flowagent's `create_app` does)."""
    for method, path, handler in _routes(state, token, default_context, queue_context):
        app.router.add_route(method, path, handler)


def route_defs(state: Any, *, token: str | None = None, default_context: str = DEFAULT_CONTEXT,
               queue_context: str = QUEUE_CONTEXT) -> list[web.RouteDef]:
    """The same routes as `RouteDef`s, for `create_app(runtime, extra_routes=...)`."""
    return [web.route(method, path, handler)
            for method, path, handler in _routes(state, token, default_context, queue_context)]


def _authorised(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    given = request.headers.get("X-Flowagent-Token", "")
    auth = request.headers.get("Authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _routes(state: Any, token: str | None, default_context: str,
            queue_context: str) -> list[tuple[str, str, Any]]:
    routes = [_route(state, token, default_context, queue_context),
              _reason_route(state, token)]
    if callable(getattr(state, "register_call", None)):
        routes.append(_register_route(state, token))
    return routes


def _retry_later(status: int) -> dict[str, str]:
    return {"Retry-After": "5"} if status == 503 else {}


def _register_route(state: Any, token: str | None) -> tuple[str, str, Any]:
    """`POST /asterisk/call`: the dialplan's CURL() registration (form-encoded or JSON), handed
    to `state.register_call(uuid, metadata)` exactly like `POST /call` does."""

    async def register(request: web.Request) -> web.Response:
        if not _authorised(request, token):
            return web.json_response({"error": "missing or wrong API token"}, status=401)
        try:
            body = await read_capped(request, MAX_BODY)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "The call registration is larger than 64 KiB."},
                                     status=413)
        try:
            reg = parse_call_registration(request.headers.get("Content-Type", ""), body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        metadata = dict(reg.metadata)
        as_text = metadata.pop("reply", "") == "text"
        try:
            await state.register_call(reg.uuid, metadata)
        except RegistrationRefused as exc:
            return web.json_response({"error": exc.message}, status=exc.status,
                                     headers=_retry_later(exc.status))
        if as_text:
            # the CURL() dialplan sees only the body: one word it cannot mistake for an error
            # (a 401's JSON body is not empty, so "any answer" would pass a wrong token)
            return web.Response(text="registered", content_type="text/plain")
        reply: dict[str, Any] = {"uuid": reg.uuid, "status": "registered"}
        flows = getattr(state, "flows", None)
        if flows is not None and callable(getattr(flows, "pick", None)):
            try:
                reply["flow"] = flows.pick(reg.did, "").name
            except Exception:  # no flow loaded: the registration itself still stands
                log.exception("asterisk registration: no flow for %r", reg.did)
        return web.json_response(reply)

    return "POST", "/asterisk/call", register


def _route(state: Any, token: str | None, default_context: str, queue_context: str) -> tuple[
        str, str, Any]:
    async def transfer_target(request: web.Request) -> web.Response:
        if not _authorised(request, token):
            return web.Response(status=401, text="")
        text = await lookup_destination(state, request.match_info["uuid"],
                                        default_context=default_context,
                                        queue_context=queue_context)
        return web.Response(text=text, content_type="text/plain")

    return "GET", "/calls/{uuid}/transfer", transfer_target


def _reason_route(state: Any, token: str | None) -> tuple[str, str, Any]:
    """`GET /calls/{uuid}/transfer/reason`: why the agent transferred the call (plain text,
    one line), for FLOWAGENT_REASON on the socket path (the AMI path sets it itself)."""

    async def transfer_reason(request: web.Request) -> web.Response:
        if not _authorised(request, token):
            return web.Response(status=401, text="")
        reason = await lookup_reason(state, request.match_info["uuid"])
        return web.Response(text=reason, content_type="text/plain")

    return "GET", "/calls/{uuid}/transfer/reason", transfer_reason


async def lookup_reason(state: Any, call_uuid: str) -> str:
    """The transfer's reason from the call's record (empty without a transfer). Made safe to
    land in a dialplan variable: one line, no commas (they would split Set()'s arguments),
    at most 120 characters."""
    if not await lookup_target(state, call_uuid):
        return ""
    key = call_uuid.lower()
    record: Any = None
    recent = getattr(state, "recent", None)
    if isinstance(recent, dict):
        record = recent.get(key)
    if record is None:
        getter = getattr(getattr(state, "store", None), "get", None)
        if getter is not None and inspect.iscoroutinefunction(getter):
            try:
                record = await getter(key)
            except Exception:
                log.exception("transfer reason: call store failed for %s", key)
    reason = str(record.get("end_reason") or "") if isinstance(record, dict) else ""
    reason = " ".join("".join(ch if ch.isprintable() and ch not in ",;|" else " "
                              for ch in reason).split())
    return reason[:120]


class RegistrationRefused(Exception):
    """`register_call` would not hold this registration: `status` is the HTTP answer (413: too
    large, 503: full) and `message` one plain sentence for whoever sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class CallRegistration:
    """A `POST /call` body, whichever encoding it came in."""

    uuid: str
    caller: str = ""
    did: str = ""
    channel: str = ""
    flow: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


#: the most a registration body may be (the dialplan sends a few hundred bytes)
MAX_BODY = 65536


def parse_call_registration(content_type: str, body: bytes) -> CallRegistration:
    """Decode a call registration; raises ValueError with a plain-English reason."""
    if len(body) > MAX_BODY:
        raise ValueError("The call registration is larger than 64 KiB.")
    ctype = (content_type or "").split(";")[0].strip().lower()
    data: dict[str, Any]
    if ctype == "application/x-www-form-urlencoded":
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        data = dict(pairs)
        meta = {k: v for k, v in data.items() if k != "uuid"}
    else:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise ValueError("The call registration is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ValueError("The call registration must be a JSON object.")
        meta = data.get("payload") or data.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ValueError("`payload` in the call registration must be an object.")
        meta = {**{k: v for k, v in data.items() if k not in ("uuid", "payload", "metadata")},
                **meta}
    raw_uuid = str(data.get("uuid", "")).strip()
    try:
        call_uuid = str(uuidlib.UUID(raw_uuid))
    except ValueError:
        raise ValueError(f"The call registration has no valid `uuid` (got {raw_uuid[:40]!r}).")\
            from None
    return CallRegistration(
        uuid=call_uuid,
        caller=str(meta.get("caller", meta.get("callerid", "")) or ""),
        did=str(meta.get("did", meta.get("dnid", "")) or ""),
        channel=str(meta.get("channel", "") or ""),
        flow=str(meta.get("flow", "") or ""),
        metadata=meta,
    )
