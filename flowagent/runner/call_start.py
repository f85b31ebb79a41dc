"""From a new connection to a running call: read the UUID, find the call's flow and context,
then start the right kind of call — and, whatever happens, end it with its record.

Why a factory: the server accepts a TCP connection before anything is known about the call.
Only the UUID frame (and `POST /call` metadata, the `call_initiated` webhook's answer, the DID
route) says which flow runs, and only the flow says whether the call is a pipeline
(VAD/ASR -> engine -> TTS, `session.PipelineCall`) or speech-to-speech (`sts_call.StsCall`).
So `run_call()` does the common start here and then builds the one that fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp

from flowagent import logging as flog
from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.tools import read_limited, shared_session
from flowagent.phone_numbers import region_of, to_e164
from flowagent.runner import audio_recording
from flowagent.runner.lifecycle import CallLifecycle
from flowagent.runner.line import Line, LineError
from flowagent.runner.served_flow import FlowEntry
from flowagent.runner.services import CallServices
from flowagent.runner.session import PipelineCall
from flowagent.runner.sts_call import StsCall

log = logging.getLogger(__name__)


async def run_call(line: Line, services: CallServices) -> None:
    """Run one connection from its UUID to its record. Never raises (but cancellation)."""
    metrics = services.metrics
    metrics.active_calls += 1
    metrics.calls_total += 1
    life = CallLifecycle(line, services)
    log_ctx: contextlib.AbstractContextManager[None] | None = None
    try:
        uuid = await line.wait_for_uuid(services.config.uuid_timeout_s)
        if not uuid:
            life.end_reason = "connection closed before the UUID frame"
            return
        opened = life.open(uuid)  # the call's record exists (and is written) from here on
        # every log line of this call (and of the tasks it starts) carries the call UUID
        log_ctx = flog.call_context(uuid)
        log_ctx.__enter__()
        if not opened:  # this UUID is in progress here already: refused, with its own record
            log.warning("call %s refused: a call with this UUID is already in progress", uuid)
            life.hang_up()
            return
        if line.closed:  # a malformed frame came in the same read as the UUID
            return
        await _set_up(life)
        if line.closed:
            return
        entry = life.entry
        assert entry is not None
        call: PipelineCall | StsCall = (
            StsCall(life) if entry.providers.sts is not None else PipelineCall(life))
        life.attach(call)
        services.sessions[uuid] = call
        await call.start()
        await line.ended.wait()
    except LineError as exc:
        if not line.failed:
            line.fail(exc.reason)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        life.ended_by("caller", f"connection lost: {exc.__class__.__name__}")
    except asyncio.CancelledError:  # the server stopped (drain timeout, second signal)
        life.ended_by("server", "server shutting down")
        raise
    except Exception as exc:  # a bug must end this call only, with its record written
        life.failed(f"internal error: {exc!r}")
        metrics.error("internal")
        log.exception("call %s failed", life.uuid or "?")
    finally:
        try:
            if line.failed:
                metrics.error("protocol")
            await life.finish()
        finally:
            metrics.active_calls -= 1
            if log_ctx is not None:
                log_ctx.__exit__(None, None, None)


async def _set_up(life: CallLifecycle) -> None:
    """Metadata, `call_initiated`, the flow, the call's rate, recording and context."""
    rt = life.services
    line = life.line
    # the first audio frame comes ~0.5 s after the UUID on real Asterisk: the POST /call
    # metadata (which may wait briefly for a shared store) and the webhook's answer are awaited
    # while it is on its way, so neither costs the caller anything it was not waiting for
    rate = asyncio.ensure_future(line.wait_for_rate(rt.config.first_audio_timeout_s))
    webhook: asyncio.Future[dict[str, Any]] | None = None
    try:
        # what the line carried (chan_websocket's URL values), then POST /call's, which wins
        metadata = {**line.metadata, **(await rt.take_pending(life.uuid) or {})}
        caller = _pick(metadata, "caller", "from", "callerid", "caller_id", "ani")
        did = _pick(metadata, "did", "to", "dnid", "exten", "called", "dialed_number")
        channel = _pick(metadata, "channel")
        webhook = asyncio.ensure_future(_call_initiated(life, caller, did, metadata))
        await rate
        if line.closed:
            return  # the caller was gone before their first audio frame
        try:
            override = await asyncio.wait_for(asyncio.shield(webhook),
                                              rt.config.call_initiated_grace_s)
        except TimeoutError:  # the receiver is slow: the call starts without its answer
            rt.metrics.error("webhook")
            override = {}
    finally:
        rate.cancel()
        if webhook is not None:
            webhook.cancel()
    # flow choice: call_initiated webhook, else the `flow` metadata key (POST /call, the AGI
    # script's FLOWAGENT_FLOW), else the DID route, else the default flow
    wanted = str(override.get("flow", "") or "") or _pick(metadata, "flow", "FLOWAGENT_FLOW")
    entry = rt.flows.pick(did, wanted)
    life.entry = entry
    # one form for every number the call is known by: records, templates, context lookups
    region = region_of(entry.compiled.language)
    caller, did = to_e164(caller, region), to_e164(did, region)
    if override.get("sts_url"):
        metadata = {**metadata, "sts_url": override["sts_url"]}
    context = await _resolve_context(life, entry, caller, did, channel, metadata)
    life.info = CallInfo(uuid=life.uuid, caller=caller, did=did, channel=channel,
                         metadata=metadata, context=context)
    # None = not recorded
    line.open_output(audio_recording.start(rt, entry, life.uuid, line.sample_rate))


async def _call_initiated(life: CallLifecycle, caller: str, did: str,
                          metadata: dict[str, Any]) -> dict[str, Any]:
    rt = life.services
    if not rt.webhooks.enabled:
        return {}
    try:
        return await asyncio.wait_for(
            rt.webhooks.call_initiated(life.uuid, {"caller": caller, "did": did,
                                                   "metadata": metadata}),
            rt.config.call_initiated_timeout_s,
        )
    except TimeoutError:
        rt.metrics.error("webhook")
        return {}


async def _resolve_context(life: CallLifecycle, entry: FlowEntry, caller: str, did: str,
                           channel: str, metadata: dict[str, Any]) -> dict[str, Any]:
    compiled = entry.compiled
    ctx = compiled.context_for(did)
    fetch = compiled.context_fetch
    if fetch is None:
        return ctx
    tctx = {
        "call": {"uuid": life.uuid, "caller": caller, "did": did, "channel": channel,
                 "metadata": metadata},
        "context": ctx,
    }
    try:
        url = fetch.url.render(tctx)
        headers = {k: t.render(tctx) for k, t in fetch.headers}
        limit = compiled.settings.tool_response_limit_kb * 1024
        async with shared_session().get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=fetch.timeout_s)
        ) as resp:
            resp.raise_for_status()
            data = json.loads(await read_limited(resp, limit))
        if isinstance(data, dict):
            ctx.update(data)
    except Exception as exc:  # a context API fault must not stop the call
        life.services.metrics.error("context_fetch")
        log.warning("call %s: context fetch failed (%s); using static context", life.uuid,
                    exc.__class__.__name__)
    return ctx


def _pick(meta: dict[str, Any], *keys: str) -> str:
    for k in keys:
        v = meta.get(k)
        if v:
            return str(v)
    for nested in ("payload", "metadata"):
        sub = meta.get(nested)
        if isinstance(sub, dict):
            v = _pick(sub, *keys)
            if v:
                return v
    return ""
