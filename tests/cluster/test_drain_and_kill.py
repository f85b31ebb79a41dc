"""A node drained by SIGTERM under load (behind the real HAProxy); a single node killed with
SIGKILL and restarted (SQLite); the balancer's configuration as `flowagent deploy haproxy`
prints it, checked by HAProxy itself."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flowagent.commands.deploy import render
from flowagent.server.stores import open_store

from .conftest import node_env, play_call

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def test_sigterm_drains_a_node_behind_the_balancer(pg_cluster: Any, nodes: Any,
                                                         balancer: Any) -> None:
    url = pg_cluster.new_database()
    a, b = await nodes(2, url)
    lb = balancer([a, b])
    await lb.wait_status({a.node_id: "UP", b.node_id: "UP"})
    first = [asyncio.ensure_future(play_call(lb.port, think_s=1.5)) for _ in range(16)]
    await asyncio.sleep(1.0)  # the first calls are in progress on both nodes
    store = await open_store(url)
    try:
        on_b = [r["uuid"] for r in await store.list(100, status="live")
                if r["node"] == b.node_id]
        assert on_b, "no call reached node B"
        assert b.proc is not None
        b.proc.send_signal(15)  # SIGTERM: drain
        await lb.wait_status({b.node_id: "DOWN"}, timeout_s=5)  # /healthz says 503
        later = [asyncio.ensure_future(play_call(lb.port, think_s=0.2)) for _ in range(10)]
        played = await asyncio.gather(*first, *later)
        assert all(p.completed for p in played), [p for p in played if not p.completed]
        assert await asyncio.wait_for(b.proc.wait(), 60) == 0
        assert "Stopped; all call records written." in b.log()
        rows = {r["uuid"]: r for r in await store.list(100)}
        for u in on_b:  # B's calls finished normally during the drain
            assert rows[u]["outcome"] == "completed" and rows[u]["node"] == b.node_id
        for p in played[len(first):]:  # the calls started after SIGTERM all went to A
            assert rows[p.uuid]["node"] == a.node_id, rows[p.uuid]
        status = {n["node_id"]: n["status"] for n in await store.nodes()}
        assert status == {a.node_id: "up", b.node_id: "stopped"}
    finally:
        await store.close()


async def test_a_single_node_killed_mid_call_keeps_its_turns(tmp_path: Path,
                                                               solo: Any) -> None:
    """SIGKILL with calls running, one node, SQLite: the restarted node closes them as
    node_lost, each with the turns it had written."""
    db = tmp_path / "calls.db"
    node = solo("--db", str(db))
    await node.start()
    calls = [asyncio.ensure_future(play_call(node.as_port, hold_s=6)) for _ in range(10)]
    store = await open_store(db)
    try:
        async def all_answered() -> bool:  # every call's first turn is in the store
            rows = await store.list(20, status="live")
            return len(rows) == 10 and all(r["turns"] >= 1 for r in rows)

        deadline = time.monotonic() + 20
        while not await all_answered():
            assert time.monotonic() < deadline, await store.list(20)
            await asyncio.sleep(0.1)
        node.kill()
        played = await asyncio.gather(*calls)
        assert not any(p.completed for p in played)
        await node.start()  # the same node id: it closes its previous run's calls at start-up
        rows = await store.list(20)
        assert len(rows) == 10 and {r["status"] for r in rows} == {"node_lost"}
        for p in played:
            rec = await store.get(p.uuid)
            assert rec is not None and rec["outcome"] == "node_lost"
            assert [e["text"] for e in rec["transcript"] if e["who"] == "caller"] == ["yes"]
        assert await node.stop() == 0
    finally:
        await store.close()


def test_the_printed_haproxy_config_is_valid_and_checks_healthz(tmp_path: Path) -> None:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(exe).exists():
        pytest.skip("HAProxy is not installed: install Debian's haproxy package")
    text = render(["a=10.0.0.11:9099:8080", "10.0.0.12:9099:8080"], listen="0.0.0.0:9099",
                  maxconn=1000)
    assert "server a 10.0.0.11:9099 check port 8080" in text
    assert "server node2 10.0.0.12:9099 check port 8080" in text
    assert "http-check send meth GET uri /healthz" in text and "balance leastconn" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    out = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    for bad, says in ((["10.0.0.11:9099"], "HOST:AUDIOSOCKET_PORT:HTTP_PORT"),
                      (["a=h:9099:8080", "a=i:9099:8080"], "its own name"),
                      (["x=bad host:1:2"], "letters, digits"), ([], "at least one")):
        with pytest.raises(ValueError, match=says):
            render(bad)


async def test_serve_refuses_to_start_when_the_database_is_unreachable(tmp_path: Path) -> None:
    from .conftest import CLI, FLOW, free_port

    port = free_port()  # nothing listens there
    t = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", str(FLOW), "--audiosocket", f"127.0.0.1:{free_port()}", "--http",
        f"127.0.0.1:{free_port()}", "--store",
        f"postgresql://flowagent:s3cret@127.0.0.1:{port}/calls",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=node_env(""),
        cwd=str(tmp_path))
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = " ".join(out.decode().split())
    assert proc.returncode == 1, text
    assert "Cannot serve: The PostgreSQL database postgresql://flowagent:***@127.0.0.1" in text
    assert "cannot be reached" in text and "s3cret" not in text
    assert time.monotonic() - t < 30
