"""Reading a request body with a size cap, whole.

Why a helper: aiohttp's `request.content.read(n)` returns what has arrived so far, up to n bytes,
not necessarily the whole body — a large body read that way is cut short and then fails to
parse with a misleading message. This reads to the end, and stops (413) as soon as the cap is
passed, so a huge body is never held in memory.
"""

from __future__ import annotations

from aiohttp import web


async def read_capped(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
