"""The read-only web view of flows and calls (an aiohttp sub-app mounted at /ui by `serve`).

`create_ui_app(...)` builds it; the call session reports to a `LiveHub`; finished calls come from
a `RecordSource` (`StoreRecords` over the SQLite `CallStore`, or `MemoryRecords`).
Names are imported lazily so `flowagent graph` (which only needs `web.svg`) never loads aiohttp.

For `flowagent serve` (one line; `/ui` is public to the API middleware because the UI checks the
same token itself, from the header, `?token=` or its sign-in cookie)::

    from flowagent.web.mount import ui_for_runtime
    app = create_app(runtime, subapps={"/ui": ui_for_runtime(runtime)}, public_prefixes=("/ui",))
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_app": "flowagent.web.mount",
    "create_ui_app": "flowagent.web.app",
    "LiveHub": "flowagent.web.hub",
    "MemoryRecords": "flowagent.web.record_pages",
    "RecordSource": "flowagent.web.record_pages",
    "StoreRecords": "flowagent.web.record_pages",
}

__all__ = [
    "LiveHub",
    "MemoryRecords",
    "RecordSource",
    "StoreRecords",
    "create_app",
    "create_ui_app",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flowagent.web' has no attribute {name!r}")
