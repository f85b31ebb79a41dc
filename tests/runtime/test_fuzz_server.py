"""Fuzzing the live server: random bytes on one connection never disturb another call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowagent.asterisk.audiosocket import Kind, encode, encode_uuid
from flowagent.asterisk.caller import AudioSocketCaller
from flowagent.server.audiosocket_server import AudioSocketServer
from flowagent.server.runtime import FlowSet, ProviderPool, Runtime, RuntimeConfig
from flowagent.server.store_sqlite import SqliteStore

pytestmark = pytest.mark.timeout(120)
FLOWS = Path(__file__).parent / "flows"


@pytest.fixture(scope="module")
def server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Runtime]]:
    """One real server in its own thread/loop, shared by every hypothesis example."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    flows = FlowSet(ProviderPool())
    flows.load(FLOWS / "basic.yaml")
    rt = Runtime(flows, SqliteStore(tmp_path_factory.mktemp("fuzz") / "calls.db"),
                 config=RuntimeConfig())
    server = AudioSocketServer(rt, "127.0.0.1", 0, reload_interval_s=0)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server.address[1], rt
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    asyncio.run_coroutine_threadsafe(rt.store.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


async def _scenario(port: int, garbage: bytes, with_uuid: bool) -> None:
    good = AudioSocketCaller("127.0.0.1", port, keep_frames=True)
    await good.connect()
    await good.wait_agent_started(0, timeout_s=5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if with_uuid:
        writer.write(encode_uuid("12345678-1234-5678-1234-567812345678"))
    writer.write(garbage)
    await writer.drain()
    writer.write_eof()
    # the bad connection ends (closed by us or by the server) without hurting anything
    try:
        await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, TimeoutError):
        pass
    writer.close()
    # the good call is still being served, frame after frame
    before = good.agent_speech_frames + len(good.stats.frames)
    await asyncio.sleep(0.1)
    assert len(good.stats.frames) + good.agent_speech_frames > before
    assert not good.closed.is_set()
    assert good.stats.bad_kinds == [] and good.stats.zero_length_audio == 0
    await good.hangup()


garbage = st.one_of(
    st.binary(max_size=3000),
    st.lists(
        st.one_of(
            st.binary(max_size=400).map(lambda b: encode(Kind.SLIN_8K, b)),
            st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
                lambda t: bytes([t[0]]) + len(t[1]).to_bytes(2, "big") + t[1]
            ),
            st.binary(max_size=10),
        ),
        max_size=20,
    ).map(b"".join),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=garbage, with_uuid=st.booleans())
def test_garbage_connection_never_affects_a_concurrent_call(
    server_port: tuple[int, Runtime], data: bytes, with_uuid: bool
) -> None:
    port, _rt = server_port
    asyncio.run(_scenario(port, data, with_uuid))
