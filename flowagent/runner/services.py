"""What a call borrows from the server process, as typed interfaces.

Why interfaces and not the server's `Runtime` itself: the call runner sits below the server
(docs/design.md), so it names only what it uses — the settings, counters, webhook sender, record
store, pacing clock, flow choice and transfer path — and `server.runtime.Runtime` satisfies these
Protocols structurally. A test can build a call from plain stand-ins, and a reader sees at one
glance everything a call may touch outside itself.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flowagent.asterisk.transfer import TransferResult
    from flowagent.dialogue.call_record import CallRecord
    from flowagent.dialogue.events import CallInfo
    from flowagent.runner.out_stream import Pacer
    from flowagent.runner.served_flow import FlowEntry


@dataclass
class RuntimeConfig:
    #: a provider that has not answered within this is treated as failed (fallback within 2 s)
    provider_timeout_s: float = 1.5
    #: a full garbage collection after this many ended calls (0: Python's own schedule);
    #: see server/call_garbage.py for why
    gc_every_calls: int = 200
    #: ...and not more often than this
    gc_min_interval_s: float = 10.0
    #: how long the first frame (the UUID) may take after connecting
    uuid_timeout_s: float = 5.0
    #: how long the first audio frame may take after the UUID (it tells the call's sample rate;
    #: real Asterisk sends it ~0.5 s after the UUID). Nothing is spoken before it arrives.
    first_audio_timeout_s: float = 3.0
    #: longest wait for the `call_initiated` answer (a flow or sts_url override)...
    call_initiated_timeout_s: float = 1.0
    #: ...but no longer than this after the call's first audio frame (~0.5 s after the UUID on
    #: real Asterisk): the answer is awaited while that frame is on its way, so a slow or dead
    #: receiver costs a call at most this much
    call_initiated_grace_s: float = 0.1
    #: longest wait for our last words to play out before a hang-up is forced
    hangup_grace_s: float = 60.0
    #: when idle, send one silence frame this often (AudioSocket gives up after 2 s of nothing)
    keepalive_ms: int = 500
    #: how long `POST /call` metadata waits for its AudioSocket connection
    pending_ttl_s: float = 300.0
    #: registrations held at once waiting for their connection (more are refused, 503)...
    pending_max_calls: int = 10_000
    #: ...and their metadata's total JSON size; one registration's metadata at most this (413)
    pending_max_bytes: int = 32 * 1024 * 1024
    call_metadata_max_bytes: int = 32 * 1024
    #: with a shared store: how long a new connection waits for its `POST /call` metadata
    #: when the POST (on another node) is still in flight
    pending_wait_s: float = 0.3
    #: the longest a call-path store round trip (POST /call metadata) may take
    store_timeout_s: float = 2.0
    #: a call in progress has its record written when it changed, at most this often (a
    #: node killed mid-call loses at most this much beyond the turn in progress)
    checkpoint_s: float = 0.5
    #: node heart-beat period, and the silence after which a node's calls are `node_lost`
    heartbeat_s: float = 2.0
    node_lost_after_s: float = 10.0
    #: finished records kept in memory for `GET /calls/{uuid}` (older ones come from the store)
    recent_records: int = 1000
    #: override every flow's providers (e.g. {"asr": {"name": "fake"}}), used by tests/benches
    provider_overrides: dict[str, Any] = field(default_factory=dict)
    #: record every call's audio (else only flows with `settings.recording: true`); see
    #: runner/audio_recording.py. Files: `recordings_dir` (default `recordings/` beside the store)
    record_audio: bool = False
    recordings_dir: str = ""


class LatencyHistogram(Protocol):
    def observe(self, value: float) -> None: ...


class CallMetrics(Protocol):
    """The process's counters a call updates (`server.metrics.Metrics`)."""

    active_calls: int
    calls_total: int
    turns_total: int
    barge_ins_total: int
    frames_sent: int
    frames_received: int
    underruns: int
    @property
    def outcomes(self) -> MutableMapping[str, int]: ...

    @property
    def latency(self) -> MutableMapping[str, Any]:
        """stage -> LatencyHistogram (a defaultdict: any stage name may be used)."""

    def error(self, kind: str) -> None: ...


class WebhookSender(Protocol):
    @property
    def enabled(self) -> bool: ...

    def emit(self, uuid: str, type_: str, payload: dict[str, Any] | None = None,
             key: str = "") -> None:
        """Queue an event; `key` is its idempotency key (made up when empty)."""

    async def call_initiated(self, uuid: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class RecordStore(Protocol):
    @property
    def path(self) -> str | None:
        """The SQLite file (recordings go beside it), else None."""


class RecordSink(Protocol):
    """Where a call hands its record (`server.record_writer.RecordWriter`): never blocks, never
    raises; a failing store keeps it queued and retries."""

    def write(self, call_id: str, record: dict[str, Any], *, live: bool) -> None: ...


class FlowSource(Protocol):
    """The flows being served and how a call picks one."""

    @property
    def intent_scorer(self) -> Any:
        """The offline stack's embedding scorer (embeds a caller's words off the event loop),
        or None."""

    def pick(self, did: str, override: str = "") -> FlowEntry: ...


class TransferPath(Protocol):
    async def transfer(self, call_uuid: str, channel: str, target: str,
                       reason: str = "") -> TransferResult: ...


class LiveCall(Protocol):
    """What the control API, the live web view and the transfer routes read of a call in
    progress (both call kinds implement it)."""

    uuid: str
    state: str
    transfer_target: str
    record: CallRecord | None
    turns: list[dict[str, Any]]

    @property
    def entry(self) -> FlowEntry | None: ...

    @property
    def info(self) -> CallInfo | None: ...

    def live_dict(self) -> dict[str, Any]: ...

    def inject_text(self, text: str) -> None: ...

    def inject_dtmf(self, digit: str) -> None: ...


class CallServices(Protocol):
    """Everything a call uses from the process (`server.runtime.Runtime`)."""

    @property
    def config(self) -> RuntimeConfig: ...

    @property
    def metrics(self) -> CallMetrics: ...

    @property
    def webhooks(self) -> WebhookSender: ...

    @property
    def store(self) -> RecordStore: ...

    @property
    def records(self) -> RecordSink: ...

    @property
    def node_id(self) -> str: ...

    @property
    def flows(self) -> FlowSource: ...

    @property
    def player(self) -> Pacer: ...

    @property
    def transferer(self) -> TransferPath | None: ...

    @property
    def sessions(self) -> MutableMapping[str, Any]:
        """uuid -> `LiveCall` of every call in progress."""

    async def take_pending(self, uuid: str) -> dict[str, Any] | None:
        """`POST /call` metadata for this UUID (waited for briefly with a shared store)."""

    def claim_uuid(self, uuid: str) -> bool:
        """False when a call with this UUID is already in progress here."""

    def release_uuid(self, uuid: str) -> None: ...

    def remember(self, record: dict[str, Any]) -> None: ...

    def call_ended(self) -> None:
        """A connection is over and its objects let go (the process frees them on its own
        schedule: `server/call_garbage.py`)."""
