"""The web UI for a running server: one call for `flowagent serve`.

    from flowagent.web.mount import ui_for_runtime
    app = create_app(runtime, subapps={"/ui": ui_for_runtime(runtime)}, public_prefixes=("/ui",))

`/ui` must be in `public_prefixes` because the control API's middleware only knows header tokens;
the UI checks the same token itself (header, `?token=` or its login cookie).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from flowagent.web.app import create_ui_app
from flowagent.web.hub import LiveHub
from flowagent.web.record_pages import StoreRecords
from flowagent.web.watch import watching

UI_PREFIX = "/ui"


def ui_for_runtime(
    runtime: Any, *, prefix: str = UI_PREFIX, recordings_dir: str | Path | None = None
) -> web.Application:
    """The UI sub-app over a `flowagent.server.runtime.Runtime`: its flows, its record store,
    its API token (read at request time), live calls watched from `runtime.sessions`.
    Agent audio is offered for calls with `<recordings_dir>/<uuid>.wav` (default: the runtime
    config's `recordings_dir`, else `recordings/` beside its SQLite store)."""
    if recordings_dir is None:
        # the runtime's recordings (runner/recording.py: `recordings/` beside the store)
        from flowagent.runner.audio_recording import recordings_dir as runtime_recordings

        try:
            recordings_dir = runtime_recordings(runtime)
        except AttributeError:  # not a full Runtime (a test double): no recordings
            recordings_dir = getattr(getattr(runtime, "config", None), "recordings_dir", None)
    hub = LiveHub()
    app = create_ui_app(
        flows=lambda: list(getattr(runtime.flows, "by_path", {}) or {}),
        hub=hub,
        records=StoreRecords(runtime.store, recordings_dir),
        token=lambda: runtime.api_token,
        prefix=prefix,
    )

    async def watch(_: web.Application) -> AsyncIterator[None]:
        async with watching(runtime, hub):
            yield

    async def close_feeds(_: web.Application) -> None:
        hub.close()  # WebSocket handlers finish, so shutdown does not wait on browsers

    app.cleanup_ctx.append(watch)
    app.on_shutdown.append(close_feeds)
    return app


def create_app(runtime: Any) -> web.Application:
    """What `flowagent serve` looks for (`flowagent.web.create_app(runtime)`): the UI at /ui."""
    return ui_for_runtime(runtime, prefix=UI_PREFIX)
