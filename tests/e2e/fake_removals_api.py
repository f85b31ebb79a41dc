"""A loopback stand-in for the removals company's pricing/booking API (what flows/removals.yaml
calls): POST /quote -> {price, quote_id}, POST /bookings -> {reference}. It records every request
so a test can check what the agent actually sent.

Run alone for the demo: `python tests/e2e/fake_removals_api.py 8099`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import web


class FakeRemovalsApi:
    def __init__(self) -> None:
        self.quotes: list[dict[str, Any]] = []
        self.bookings: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/quote", self._quote)
        app.router.add_post("/bookings", self._book)
        return app

    async def _quote(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.quotes.append(body)
        return web.json_response({"price": 450, "quote_id": f"Q{len(self.quotes):04d}"})

    async def _book(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bookings.append(body)
        return web.json_response({"reference": f"SR{1000 + len(self.bookings)}"})

    async def start(self, port: int = 0) -> int:
        self.runner = web.AppRunner(self.app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _main(port: int) -> None:
    api = FakeRemovalsApi()
    bound = await api.start(port)
    print(f"fake removals API on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        print(json.dumps({"quotes": api.quotes, "bookings": api.bookings}), flush=True)
        await api.stop()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 8099))
