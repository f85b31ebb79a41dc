"""The handle tests get from the `live` fixture (see conftest.py): the real runtime on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.runtime import Runtime

FLOW = Path(__file__).parent / "flows" / "transfer.yaml"
TOKEN = "live-token"


class Live:
    def __init__(self, rt: Runtime, server: AudioSocketServer, http_port: int) -> None:
        self.rt = rt
        self.server = server
        self.base = f"http://127.0.0.1:{http_port}"

    async def http(self, method: str, path: str, **kw: Any) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}
        async with aiohttp.ClientSession() as s, s.request(
            method, self.base + path, headers=headers, timeout=aiohttp.ClientTimeout(total=5),
            **kw,
        ) as r:
            return r.status, await r.text()
