"""A call's life from the UUID to its record, shared by both kinds of call.

Why one place: the record is the contract — every connection that sent a valid UUID gets exactly
one record, whatever happens next (a caller hang-up, a protocol error, a provider fault, a bug, a
server shutdown). So the ending is not spread over the call kinds: `CallLifecycle` holds who
ended the call and why, ends it from our side when the flow says so (after our last words have
played, by an AMI redirect or the socket path for a transfer), and `finish()` always runs: it
stops every task, lets the call kind settle its engine, and writes the record.

Records are written as the call goes, not only at its end: a row when the UUID arrives
(`open()`), then a snapshot whenever the record changed (checked every `checkpoint_s`, and at
once when a part calls `checkpoint()`), then the final record. They go to the process's record
writer, which never blocks a call; a node killed mid-call leaves its last snapshot, which the
other nodes (or this one, restarted) close as `node_lost`. Each connection's record has its
own `call_id`, so a repeated UUID never overwrites another call's record; a UUID already in
progress on this node is refused (the refusal is recorded too).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any, Protocol

from flowagent.dialogue.call_record import CallRecord, call_ended_key
from flowagent.dialogue.events import CallInfo
from flowagent.runner.call_tasks import CallTasks
from flowagent.runner.line import Line
from flowagent.runner.served_flow import FlowEntry
from flowagent.runner.services import CallServices

log = logging.getLogger(__name__)


class CallKind(Protocol):
    """What the lifecycle needs of a running call (`session.PipelineCall`, `sts_call.StsCall`)."""

    @property
    def record(self) -> CallRecord | None: ...

    @property
    def turns(self) -> list[dict[str, Any]]:
        """Per-turn latency rows (the record's `latency`)."""

    def idle(self) -> bool:
        """Nothing of ours is being said or waited for (a hang-up may follow)."""

    async def close(self) -> None:
        """The call is over: stop providers, settle the engine (its hang-up handler)."""


class CallLifecycle:
    def __init__(self, line: Line, services: CallServices) -> None:
        self.line = line
        self.services = services
        self.t0 = time.monotonic()
        self.started_at = time.time()  # wall clock: the record's start
        self.uuid = ""
        #: this connection's own record id (the UUID comes from outside and may repeat)
        self.call_id = uuidlib.uuid4().hex
        self.refused = False
        self._claimed = False
        self._shape: tuple[Any, ...] = ()
        self.entry: FlowEntry | None = None
        self.info: CallInfo | None = None
        self.call: CallKind | None = None
        self.state = ""
        self.hangup_by = ""  # caller | agent | error | server (it stopped mid-call)
        self.end_reason = ""
        self.transfer_target = ""
        self.transfer_reason = ""
        self.finishing = False  # the flow ended the call: hang up once playback is done
        self._transferring = False
        self._idle: Callable[[], bool] = lambda: True
        self.tasks = CallTasks(lambda: self.uuid or "?", self._task_failed)
        self.on_task_failure: Callable[[str], None] | None = None

    def now(self) -> float:
        """Seconds since the call connected (transcript timestamps)."""
        return time.monotonic() - self.t0

    @property
    def closed(self) -> bool:
        return self.line.closed

    def attach(self, call: CallKind) -> None:
        self.call = call
        self._idle = call.idle

    def _task_failed(self, name: str, exc: BaseException) -> None:
        if self.closed:
            return
        self.services.metrics.error("internal")
        if self.on_task_failure is not None:
            self.on_task_failure(f"internal error: {exc!r}")

    # -- the record as the call goes -----------------------------------------------------------

    def open(self, uuid: str) -> bool:
        """The UUID frame arrived: from now on this connection has a record (its row is
        written at once). False when a call with this UUID is in progress on this node: this
        connection is refused, with its own record saying so."""
        self.uuid = uuid
        if not self.services.claim_uuid(uuid):
            self.refused = True
            self.hangup_by = "agent"
            self.end_reason = "refused: a call with this UUID is already in progress"
            return False
        self._claimed = True
        self.checkpoint()
        self._arm_checkpoint()
        return True

    def _arm_checkpoint(self) -> None:
        def tick() -> None:
            self.checkpoint()
            self._arm_checkpoint()

        self.tasks.timer("record_checkpoint", self.services.config.checkpoint_s, tick)

    def checkpoint(self) -> None:
        """Write the record of the call in progress if it changed since the last write
        (cheap when it did not: a few lengths are compared)."""
        if not self._claimed or self.closed:
            return
        shape = self._record_shape()
        if shape == self._shape:
            return
        self._shape = shape
        try:
            snapshot = self._snapshot()
        except Exception:  # a record that cannot be serialised now is written at the end
            log.exception("call %s: record snapshot failed", self.uuid)
            return
        self.services.records.write(self.call_id, snapshot, live=True)

    def _record_shape(self) -> tuple[Any, ...]:
        call = self.call
        rec = call.record if call is not None else None
        if call is None or rec is None:
            return (self.entry is not None, self.info is not None)
        t = rec.transcript
        return (len(t), t[-1].heard if t else None, len(rec.tool_calls),
                sum(1 for c in rec.tool_calls if c.ok is None), len(rec.states), len(rec.errors),
                len(rec.slots), len(rec.vars), len(call.turns), rec.outcome)

    def _snapshot(self) -> dict[str, Any]:
        """The record so far, without ending anything."""
        call = self.call
        rec = call.record if call is not None else None
        d = (rec or CallRecord(uuid=self.uuid, flow=self.entry.name if self.entry else "")
             ).to_dict()
        d["started_at"] = self.started_at
        if self.info is not None:
            d["caller"] = d.get("caller") or self.info.caller
            d["did"] = d.get("did") or self.info.did
            d["channel"] = d.get("channel") or self.info.channel
        d["latency"] = [dict(row) for row in call.turns] if call is not None else []
        d["call_id"] = self.call_id
        d["node"] = self.services.node_id
        return d

    # -- who ended the call ---------------------------------------------------------------------

    def ended_by(self, by: str, reason: str) -> None:
        """Record why the call ended (the first reason given wins)."""
        self.hangup_by = self.hangup_by or by
        self.end_reason = self.end_reason or reason

    def failed(self, reason: str) -> None:
        """The call ends in error (a bug, a broken engine): recorded as such."""
        self.hangup_by = "error"
        self.end_reason = reason

    # -- ending from our side -------------------------------------------------------------------

    def end_after_playback(self, reason: str, transfer_to: str = "",
                           transfer_reason: str = "") -> None:
        """The flow ended the call: our last words play out, then we hang up (or transfer)."""
        if transfer_to:
            self.transfer_target = transfer_to
            self.transfer_reason = transfer_reason
            self.end_reason = transfer_reason or f"transferred to {transfer_to}"
        else:
            self.end_reason = self.end_reason or reason
        self.finishing = True
        self.tasks.timer("hangup_grace", self.services.config.hangup_grace_s, self.hang_up)
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if not self.finishing or self._transferring or self.closed or not self._idle():
            return
        self.hangup_by = self.hangup_by or "agent"
        transferer = self.services.transferer
        if self.transfer_target and transferer is not None:
            self._transferring = True
            self.tasks.spawn(self._transfer(), "transfer")
            return
        # let the last frame leave before the hang-up frame (next loop iteration)
        asyncio.get_running_loop().call_soon(self.hang_up)

    async def _transfer(self) -> None:
        """Our reason has been spoken: hand the caller over. AMI configured: Asterisk redirects
        the channel (and closes the socket itself); otherwise (or if AMI fails) the socket path:
        0x00 frame, and the dialplan reads `GET /calls/{uuid}/transfer`."""
        transferer = self.services.transferer
        assert transferer is not None
        channel = self.info.channel if self.info is not None else ""
        try:
            result = await asyncio.wait_for(
                transferer.transfer(self.uuid, channel, self.transfer_target,
                                    self.transfer_reason),
                10.0,
            )
            method = result.method
        except ValueError as exc:  # not a dialplan extension: the dialplan falls back
            log.warning("transfer target %r cannot be dialled: %s", self.transfer_target, exc)
            method = "socket"
        except Exception:
            log.exception("transfer to %r failed; ending the socket", self.transfer_target)
            method = "socket"
        log.info("transfer to %s by %s", self.transfer_target, method)
        # "ami": Asterisk moved the channel and closes the socket; closing it too is harmless
        self.hang_up(send_frame=method == "socket")

    def hang_up(self, send_frame: bool = True) -> None:
        """End the call from our side: 0x00 frame, close. The call's wait then ends."""
        self.line.hang_up(send_frame)

    # -- the end --------------------------------------------------------------------------------

    async def finish(self) -> None:
        """Always runs: stop everything, settle the engine, write the record, `call_ended`."""
        rt = self.services
        line = self.line
        ended_at = time.time()
        if line.end_by:
            self.ended_by(line.end_by, line.end_reason)
        self.tasks.stop_timers()
        if not line.closed:
            line.hang_up(send_frame=False)
        out = line.out
        if out is not None:
            rt.metrics.frames_sent += out.frames_sent
            rt.metrics.underruns += out.underruns
        rt.metrics.frames_received += line.frames_in
        if line.recorder is not None:
            await line.recorder.close()  # the audio ends now; the WAV is complete first
        call = self.call
        if call is not None:
            try:
                await call.close()
            except Exception:
                log.exception("call %s: failed while ending", self.uuid)
        await self.tasks.cancel_all()
        line.close()
        record = self._record_dict(ended_at)
        if record is not None:
            # queued, never awaited: a failing store keeps it and retries (record_writer.py)
            rt.records.write(self.call_id, record, live=False)
            rt.remember(record)
            rt.metrics.outcomes[record.get("outcome") or "unknown"] += 1
            rt.webhooks.emit(self.uuid, "call_ended", record, key=call_ended_key(self.call_id))
        if call is not None and rt.sessions.get(self.uuid) is call:
            del rt.sessions[self.uuid]
        if self._claimed:
            rt.release_uuid(self.uuid)
        rt.call_ended()

    def _record_dict(self, ended_at: float) -> dict[str, Any] | None:
        if not self.uuid:
            return None
        call = self.call
        rec = call.record if call is not None else None
        if rec is None:
            rec = CallRecord(uuid=self.uuid, flow=self.entry.name if self.entry else "")
        if self.line.recorder is not None:
            rec.recording = self.line.recorder.info()
        if self.info is not None:
            rec.caller = rec.caller or self.info.caller
            rec.did = rec.did or self.info.did
            rec.channel = rec.channel or self.info.channel
        if self.transfer_target and not rec.transfer_target:
            rec.transfer_target = self.transfer_target
        if self.end_reason and self.hangup_by == "error":
            rec.errors.append(self.end_reason)
        outcome = {"caller": "hangup_by_caller", "error": "error",
                   "server": "server_stopped"}.get(self.hangup_by, "completed")
        rec.finish("refused" if self.refused else outcome, self.end_reason)
        if self.hangup_by == "server" and rec.outcome == "hangup_by_caller":
            # the engine heard only "the line ended" (its Hangup event); it was our stop
            rec.outcome = outcome
        if not rec.end_reason:  # the engine knew the outcome (a hang-up), we know why
            rec.end_reason = self.end_reason
        # the call lasted from the socket's opening to its closing, whatever the flow did
        rec.started_at = self.started_at
        rec.ended_at = ended_at
        d = rec.to_dict()
        d["hangup_by"] = self.hangup_by or "caller"
        d["latency"] = call.turns if call is not None else []
        d["call_id"] = self.call_id
        d["node"] = self.services.node_id
        return d
