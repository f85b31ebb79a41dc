"""A loopback stand-in for the removals company's pricing/booking API (what flows/removals.yaml
calls): POST /quote -> {price, quote_id}, POST /bookings -> {reference}. It records every request
so the demo (and the tests) can show what the agent actually sent.

`flowagent demo` starts it by itself; alone: `python -m flowagent.demo.removals_api 8099`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
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

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> int:
        self.runner = web.AppRunner(self.app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        for address in self.runner.addresses:
            self.port = int(address[1])
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class ApiThread:
    """The fake API on an event loop of its own, for a caller that is not async (the demo
    command). `start()` returns the port; `stop()` shuts it down and joins the thread."""

    def __init__(self) -> None:
        self.api = FakeRemovalsApi()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-removals-api",
                                        daemon=True)

    def start(self, port: int = 0) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.api.start(port), self._loop).result(10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.api.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


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
    try:
        asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 8099))
    except KeyboardInterrupt:
        pass
