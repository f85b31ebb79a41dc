"""`POST /call` and `POST /asterisk/call` registrations are capped (issue 16: 500 × 200 KB held
96 MB for five minutes, 20,000 were accepted): one registration's metadata in size (413), the
registrations waiting for their connection in number and in total size (503 with Retry-After,
counted in /metrics). A refused registration never drops one already held; a call that
connects frees its room; expired ones make room too. Real HTTP and AudioSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from typing import Any

from flowagent.runner.services import RuntimeConfig

TOKEN = "test-token"  # tests/runtime/conftest.py
FORM = "application/x-www-form-urlencoded"


def _new() -> str:
    return str(uuidlib.uuid4())


async def test_metadata_larger_than_the_cap_is_refused_in_a_sentence(harness: Any) -> None:
    h = await harness(config=RuntimeConfig(call_metadata_max_bytes=4096))
    big = _new()
    status, body = await h.http("POST", "/call", json={"uuid": big,
                                                       "metadata": {"notes": "x" * 5000}})
    assert status == 413
    assert body["error"] == "The call's metadata is 5 KB; at most 4 KB is kept per call."
    assert big not in h.rt.pending
    small = _new()
    status, _ = await h.http("POST", "/call", json={"uuid": small, "metadata": {"notes": "hi"}})
    assert status == 200 and small in h.rt.pending


async def test_the_waiting_registrations_are_capped_and_a_connected_call_frees_room(
        harness: Any) -> None:
    h = await harness(config=RuntimeConfig(pending_max_calls=5))
    held = [_new() for _ in range(5)]
    for u in held:
        status, _ = await h.http("POST", "/call", json={"uuid": u, "metadata": {"did": "6001"}})
        assert status == 200
    extra = _new()
    status, body = await h.http("POST", "/call", json={"uuid": extra, "metadata": {}})
    assert status == 503 and "5 calls are registered and not connected yet" in body["error"]
    assert extra not in h.rt.pending and len(h.rt.pending) == 5
    # registering a held call again while full replaces it — it is not a sixth
    status, _ = await h.http("POST", "/call", json={"uuid": held[0],
                                                    "metadata": {"did": "6002"}})
    assert status == 200 and h.rt.pending[held[0]].metadata == {"did": "6002"}
    # the dialplan's form registration is refused the same way, never with "registered"
    status, text = await h.http(
        "POST", "/asterisk/call", data=f"uuid={extra}&did=6001&reply=text",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": FORM})
    assert status == 503 and text != "registered" and "not connected yet" in text["error"]
    _, metrics = await h.http("GET", "/metrics")
    assert 'flowagent_errors_total{kind="registration_refused"} 2' in metrics
    # one of the registered calls connects: its metadata is taken, and there is room again
    c = h.caller(call_uuid=held[1])
    await c.connect()
    await c.wait_agent_started(0)
    await c.hangup()
    await h.wait_record(held[1])
    assert held[1] not in h.rt.pending
    status, _ = await h.http("POST", "/call", json={"uuid": extra, "metadata": {}})
    assert status == 200


async def test_the_total_size_is_capped_however_the_registrations_are_sized(
        harness: Any) -> None:
    h = await harness(config=RuntimeConfig(pending_max_bytes=256 * 1024,
                                           call_metadata_max_bytes=32 * 1024))
    answers = []
    for _ in range(40):  # 40 × ~30 KB = 1.2 MB offered
        status, _ = await h.http("POST", "/call", json={
            "uuid": _new(), "metadata": {"notes": "y" * 30_000}})
        answers.append(status)
    assert answers.count(200) == 8 and answers[8:] == [503] * 32
    assert h.rt.pending.bytes <= 256 * 1024


async def test_expired_registrations_make_room(harness: Any) -> None:
    h = await harness(config=RuntimeConfig(pending_max_calls=2, pending_ttl_s=0.3))
    for _ in range(2):
        status, _ = await h.http("POST", "/call", json={"uuid": _new(), "metadata": {}})
        assert status == 200
    status, _ = await h.http("POST", "/call", json={"uuid": _new(), "metadata": {}})
    assert status == 503
    await asyncio.sleep(0.4)
    late = _new()
    status, _ = await h.http("POST", "/call", json={"uuid": late, "metadata": {}})
    assert status == 200 and len(h.rt.pending) == 1 and late in h.rt.pending
    assert h.rt.pending.bytes == 2  # only "{}" is held


async def test_the_shared_store_refuses_past_its_count_across_nodes(harness: Any,
                                                                    pg_cluster: Any) -> None:
    """With several nodes the registrations wait in PostgreSQL: the cap counts all of them."""
    url = pg_cluster.new_database()
    cfg = RuntimeConfig(pending_max_calls=3, call_metadata_max_bytes=1024)
    a = await harness(store=url, node_id="node-a", config=cfg)
    b = await harness(store=url, node_id="node-b", config=cfg)
    for node in (a, b, a):
        status, _ = await node.http("POST", "/call", json={"uuid": _new(), "metadata": {}})
        assert status == 200
    status, body = await b.http("POST", "/call", json={"uuid": _new(), "metadata": {}})
    assert status == 503 and "the most the store holds" in body["error"]
    status, body = await a.http("POST", "/call", json={"uuid": _new(),
                                                      "metadata": {"x": "z" * 2000}})
    assert status == 413
    assert len(a.rt.pending) == 0 and len(b.rt.pending) == 0  # nothing fell back to memory
