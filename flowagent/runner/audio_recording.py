"""Call audio recording (opt-in): one stereo 16-bit WAV per call, left = caller, right = agent.

Why it looks like this:

- **Off costs nothing.** A session holds `_rec = None`; its only per-frame work when recording
  is off is that `is None` check in `_on_audio`. The agent side needs no hook in the player at
  all: when recording is on, the session gives the player a `write` that sends the frame and
  then hands it to the recorder (`CallRecorder.wrap_write`), so only frames that really went to
  the socket are recorded — audio flushed by a barge-in never reaches `write`, so it is never
  in the file. Over chan_websocket, where Asterisk plays our audio from its own queue, the out
  stream calls `agent(pcm, at)` as each frame starts playing instead.
- **Time-aligned on the 20 ms clock.** Each channel keeps how many samples it has placed. A
  frame is placed where the monotonic clock says it belongs (agent: when it was written to the
  socket; caller: when it arrived, minus its own length); if the channel is behind by more than
  a little jitter, silence is inserted first. So the gaps between our utterances (the player
  sends nothing while idle, only a keep-alive frame every 500 ms) and any pause in the caller's
  stream are in the file where they happened.
- **Written as it goes, never whole in memory.** Both channels buffer at most ~1 s of audio;
  about once a second the part both channels have reached is handed to ONE process-wide writer
  thread (`_Writer`), which interleaves it and appends it to the file, then rewrites the two
  size fields of the header. The event loop never touches the disk, and a 30-minute call uses
  the same memory as a 30-second one.
- **A valid file even after a crash.** The header sizes are updated after every append, so a
  process killed mid-call leaves a file that is at most a second short; `repair_wav()` (run at
  start-up on every recording, and before a recording is served) fixes the sizes from the file
  length when the kill landed between an append and its header update.

Files are `<recordings_dir>/<uuid>.wav`; `recordings_dir` defaults to `recordings/` beside the
SQLite store. `sweep()` deletes recordings older than the retention period (at start-up and
daily, from `flowagent serve`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import struct
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowagent import audio

if TYPE_CHECKING:
    from flowagent.runner.served_flow import FlowEntry
    from flowagent.runner.services import CallServices

log = logging.getLogger(__name__)

FRAME_MS = 20
HEADER_BYTES = 44
#: hand buffered audio to the writer thread about this often (seconds)
FLUSH_S = 1.0
#: caller frames arrive with network/loop jitter: only a gap longer than this is a real pause
CALLER_SLACK_MS = 100
#: agent frames leave on our own clock (catch-up frames go back to back): a tighter slack
AGENT_SLACK_MS = 30
#: longest wait at hang-up for the writer thread to finish the file
CLOSE_TIMEOUT_S = 2.0
#: the writer thread ends after this long with nothing to do (it is started again on demand)
WRITER_IDLE_S = 2.0
#: channel layout, as stored in the call record
LAYOUT = "left=caller,right=agent"


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


def recordings_dir(rt: CallServices) -> Path | None:
    """Where this runtime's recordings go: `config.recordings_dir`, else `recordings/` beside
    the SQLite store; None for an in-memory store with no directory configured."""
    configured = rt.config.recordings_dir
    if configured:
        return Path(configured)
    store_path = str(rt.store.path or "")
    if not store_path or store_path == ":memory:" or store_path.startswith("file:"):
        return None
    return Path(store_path).resolve().parent / "recordings"


def wanted(rt: CallServices, entry: FlowEntry | None) -> bool:
    """Recording is opt-in: `flowagent serve --record-audio` (every call) or the flow's
    `settings.recording: true`."""
    if rt.config.record_audio:
        return True
    return entry is not None and entry.compiled.settings.recording


def start(rt: CallServices, entry: FlowEntry | None, call_uuid: str,
          sample_rate: int) -> CallRecorder | None:
    """The recorder for a call that starts now, or None when recording is off for it (or the
    UUID or directory makes it impossible; that is logged, the call goes on)."""
    if not wanted(rt, entry):
        return None
    folder = recordings_dir(rt)
    name = safe_name(call_uuid)
    if folder is None or name is None:
        log.warning("call %s: recording is on but there is nowhere to put it (set a recordings "
                    "directory, or use a file database)", call_uuid)
        return None
    return CallRecorder(folder / f"{name}.wav", f"{folder.name}/{name}.wav", sample_rate)


def safe_name(call_uuid: str) -> str | None:
    """The file stem for a call UUID: its canonical form, or None if it is not a UUID (so no
    request can name a path outside the recordings directory)."""
    try:
        return str(uuidlib.UUID(str(call_uuid)))
    except (ValueError, TypeError, AttributeError):
        return None


def recording_path(folder: Path | None, call_uuid: str) -> Path | None:
    """The finished recording of `call_uuid` in `folder`, or None. Traversal-safe: only a real
    UUID is accepted, and the resolved file must sit directly in the folder."""
    name = safe_name(call_uuid)
    if folder is None or name is None:
        return None
    base = folder.resolve()
    path = (base / f"{name}.wav").resolve()
    if path.parent != base or not path.is_file():
        return None
    return path


# ---------------------------------------------------------------------------------------------
# the per-call recorder (event-loop side)
# ---------------------------------------------------------------------------------------------


class CallRecorder:
    """Places caller and agent audio on one timeline and hands it to the writer thread.

    `caller(pcm)`: one inbound frame (called by the session per frame while recording).
    `wrap_write(write, rate)`: the player's socket write, recording what it sends.
    `await close()`: at hang-up — pads both channels to the end of the call, finalises the file.
    `info()`: what the call record stores (`recording`: path, duration...).
    """

    __slots__ = (
        "_a",
        "_a_pos",
        "_a_slack",
        "_c",
        "_c_pos",
        "_c_slack",
        "_clock",
        "_closed",
        "_done",
        "_flush_soon",
        "_next_flush",
        "_odd_a",
        "_odd_c",
        "_rs_a",
        "_rs_c",
        "_writer",
        "_zero",
        "duration_s",
        "error",
        "path",
        "rate",
        "relpath",
        "t0",
    )

    def __init__(self, path: Path, relpath: str, sample_rate: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # monotonic seconds (injectable: a test plays a 30-minute call fast)
        self.path = path
        self.relpath = relpath
        self.rate = sample_rate  # the file's rate: the call's rate when it started
        self.t0 = clock()
        self.duration_s = 0.0
        self.error = ""
        self._c = bytearray()  # caller samples placed but not yet handed to the writer
        self._a = bytearray()
        self._c_pos = 0  # samples placed on each channel since t0 (written + buffered)
        self._a_pos = 0
        self._c_slack = sample_rate * CALLER_SLACK_MS // 1000
        self._a_slack = sample_rate * AGENT_SLACK_MS // 1000
        self._odd_c = b""
        self._odd_a = b""
        self._rs_c: audio.StreamResampler | None = None  # set if the call's rate changes
        self._rs_a: audio.StreamResampler | None = None
        self._zero = bytes(audio.frame_bytes(sample_rate, FRAME_MS))  # a silence frame
        self._next_flush = self.t0 + FLUSH_S
        self._flush_soon = False
        self._closed = False
        self._done: concurrent.futures.Future[None] | None = None
        self._writer = _writer()
        self._writer.submit(("open", self, sample_rate))

    # -- hooks (per frame; only called while recording) --------------------------------------

    def caller(self, pcm: bytes) -> None:
        """A caller frame that just arrived: it started one frame length ago."""
        if self._closed:
            return
        if self._odd_c:
            pcm, self._odd_c = self._odd_c + pcm, b""
        if len(pcm) & 1:
            pcm, self._odd_c = pcm[:-1], pcm[-1:]
        if self._rs_c is not None:
            pcm = self._rs_c.process(pcm)
        n = len(pcm) >> 1
        now = self._clock()
        gap = int((now - self.t0) * self.rate) - n - self._c_pos
        if gap > self._c_slack:
            self._c += bytes(gap * 2)
            self._c_pos += gap
        self._c += pcm
        self._c_pos += n
        if now >= self._next_flush:
            self._flush(now)

    def wrap_write(self, write: Callable[[bytes], None],
                   sample_rate: int) -> Callable[[bytes], None]:
        """The socket `write` for the player: sends, then records what was sent. Also tells the
        recorder the rate the call's audio now has (AudioSocket may switch rates mid-call)."""
        self._set_input_rate(sample_rate)
        agent = self._agent

        def write_and_record(data: bytes) -> None:
            write(data)
            agent(data)

        return write_and_record

    def _agent(self, data: bytes) -> None:
        """One outbound frame (3-byte AudioSocket header + PCM) that was just written."""
        if self._closed or len(data) <= 3:
            return
        pcm = data[3:]
        if pcm == self._zero:
            return  # keep-alive silence: the timeline puts silence there anyway
        self.agent(pcm)

    def agent(self, pcm: bytes, at: float | None = None) -> None:
        """Agent audio (PCM at the call's rate) that starts playing at monotonic time `at`
        (default: now). Transports whose far end plays our audio on its own clock
        (chan_websocket) call this as it plays, with the time it started."""
        if self._closed:
            return
        if self._odd_a:
            pcm, self._odd_a = self._odd_a + pcm, b""
        if len(pcm) & 1:
            pcm, self._odd_a = pcm[:-1], pcm[-1:]
        if self._rs_a is not None:
            pcm = self._rs_a.process(pcm)
        now = self._clock()
        gap = int(((now if at is None else at) - self.t0) * self.rate) - self._a_pos
        if gap > self._a_slack:
            self._a += bytes(gap * 2)
            self._a_pos += gap
        self._a += pcm
        self._a_pos += len(pcm) >> 1
        if now >= self._next_flush and not self._flush_soon:
            # never inside the player's tick: the flush runs right after it
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _set_input_rate(self, rate: int) -> None:
        if rate == self.rate:
            self._rs_c = self._rs_a = None
        else:
            self._rs_c = audio.StreamResampler(rate, self.rate)
            self._rs_a = audio.StreamResampler(rate, self.rate)
        self._zero = bytes(audio.frame_bytes(rate, FRAME_MS))

    # -- batching ------------------------------------------------------------------------------

    def _flush_now(self) -> None:
        self._flush_soon = False
        if not self._closed:
            self._flush(self._clock())

    def _flush(self, now: float, end: int | None = None) -> None:
        """Hand the part of the timeline both channels have reached to the writer thread.
        A channel with nothing recent (the agent between utterances, a caller whose phone
        stopped sending) is filled with silence up to `now` less its jitter allowance."""
        self._next_flush = now + FLUSH_S
        target = int((now - self.t0) * self.rate)
        frame = self.rate * FRAME_MS // 1000
        c_to = target - self._c_slack - frame if end is None else end
        a_to = target - self._a_slack - frame if end is None else end
        if self._c_pos < c_to:
            self._c += bytes((c_to - self._c_pos) * 2)
            self._c_pos = c_to
        if self._a_pos < a_to:
            self._a += bytes((a_to - self._a_pos) * 2)
            self._a_pos = a_to
        nbytes = min(len(self._c), len(self._a))
        if nbytes < 2:
            return
        caller = bytes(self._c[:nbytes])
        agent = bytes(self._a[:nbytes])
        del self._c[:nbytes]
        del self._a[:nbytes]
        self._writer.submit(("data", self, caller, agent))

    # -- end -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """The call is over: pad both channels to now (or to the longer channel), queue the
        rest and the header's final sizes. Synchronous; `close()` also waits for the disk."""
        if self._closed:
            return
        now = self._clock()
        end = max(int((now - self.t0) * self.rate), self._c_pos, self._a_pos)
        self._flush(now, end)
        self._closed = True
        self.duration_s = round(end / self.rate, 3)
        self._done = concurrent.futures.Future()
        self._writer.submit(("close", self, self._done))

    async def close(self) -> None:
        """`stop()`, then wait (at most `CLOSE_TIMEOUT_S`) until the file is complete."""
        self.stop()
        done = self._done
        if done is None or done.done():
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(done), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("recording %s: the disk is slow; the file is finished in the background",
                        self.path.name)

    def info(self) -> dict[str, Any] | None:
        """The call record's `recording` field (None if the file could not be written)."""
        if self.error:
            return None
        return {"path": self.relpath, "duration_s": self.duration_s, "sample_rate": self.rate,
                "channels": 2, "layout": LAYOUT}


# ---------------------------------------------------------------------------------------------
# the writer thread (one per process)
# ---------------------------------------------------------------------------------------------


def wav_header(sample_rate: int, data_bytes: int, channels: int = 2) -> bytes:
    """A canonical 44-byte PCM WAV header (16-bit)."""
    block = channels * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels,
        sample_rate, sample_rate * block, block, 16, b"data", data_bytes,
    )


def _interleave(left: bytes, right: bytes) -> bytes:
    import numpy as np

    n = min(len(left), len(right)) // 2
    out = np.empty((n, 2), dtype="<i2")
    out[:, 0] = np.frombuffer(left, dtype="<i2", count=n)
    out[:, 1] = np.frombuffer(right, dtype="<i2", count=n)
    return out.tobytes()


class _Writer:
    """Owns every open recording file. Fed through a queue; ends itself when idle (a new one is
    started by the next `submit`), so nothing is left running when no call records."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._files: dict[int, tuple[int, int]] = {}  # id(recorder) -> (fd, data bytes)

    def submit(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            self._q.put(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flowagent-recorder",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=WRITER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._q.empty() and not self._files:
                        self._thread = None
                        return
                continue
            try:
                self._handle(item)
            except Exception:  # one bad file must not stop every other call's recording
                log.exception("recording writer failed on %s", item[0])

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind, rec = item[0], item[1]
        key = id(rec)
        if kind == "open":
            try:
                rec.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(rec.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
                os.write(fd, wav_header(item[2], 0))
            except OSError as exc:
                rec.error = f"cannot create {rec.path}: {exc.strerror or exc}"
                log.warning("recording disabled for this call: %s", rec.error)
                return
            self._files[key] = (fd, 0)
        elif kind == "data":
            entry = self._files.get(key)
            if entry is None:
                return
            fd, size = entry
            data = _interleave(item[2], item[3])
            try:
                os.write(fd, data)
                size += len(data)
                # the sizes after every append: a killed process leaves a playable file
                os.pwrite(fd, struct.pack("<I", 36 + size), 4)
                os.pwrite(fd, struct.pack("<I", size), 40)
            except OSError as exc:
                rec.error = f"cannot write {rec.path}: {exc.strerror or exc}"
                log.warning("recording stopped: %s", rec.error)
                self._close(key)
                return
            self._files[key] = (fd, size)
        elif kind == "close":
            self._close(key)
            done: concurrent.futures.Future[None] = item[2]
            if not done.done():
                done.set_result(None)

    def _close(self, key: int) -> None:
        entry = self._files.pop(key, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.close(entry[0])


_WRITER: _Writer | None = None
_WRITER_LOCK = threading.Lock()


def _writer() -> _Writer:
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is None:
            _WRITER = _Writer()
        return _WRITER


# ---------------------------------------------------------------------------------------------
# files at rest: repair and retention
# ---------------------------------------------------------------------------------------------


def repair_wav(path: Path) -> bool:
    """Make the header's sizes match the file (a process killed between an append and its
    header update). Only touches canonical 44-byte PCM headers. Returns True if it changed it."""
    try:
        with open(path, "r+b") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt " \
                    or head[36:40] != b"data":
                return False
            block = struct.unpack_from("<H", head, 32)[0] or 1
            total = os.fstat(f.fileno()).st_size
            data = total - HEADER_BYTES
            data -= data % block
            riff, size = struct.unpack_from("<I", head, 4)[0], struct.unpack_from("<I", head, 40)[0]
            if riff == 36 + data and size == data:
                return False
            f.seek(4)
            f.write(struct.pack("<I", 36 + data))
            f.seek(40)
            f.write(struct.pack("<I", data))
            return True
    except OSError:
        return False


def sweep(folder: Path | None, retention_days: float = 0.0, *, repair: bool = False,
          now: float | None = None) -> tuple[int, int]:
    """Delete recordings older than `retention_days` (0 = keep forever) and, with `repair`,
    fix the headers of the rest (start-up: files a killed process left). Blocking: run it in a
    thread. Returns (deleted, repaired)."""
    if folder is None or not folder.is_dir():
        return 0, 0
    now = time.time() if now is None else now
    limit = now - retention_days * 86400 if retention_days > 0 else None
    deleted = repaired = 0
    for path in folder.glob("*.wav"):
        try:
            if limit is not None and path.stat().st_mtime < limit:
                path.unlink()
                deleted += 1
                continue
        except OSError:
            continue
        if repair and repair_wav(path):
            repaired += 1
    return deleted, repaired


async def retention_loop(folder: Path | None, retention_days: float,
                         every_s: float = 86400.0) -> None:
    """Start-up sweep (with header repair), then a retention sweep every `every_s`. The caller
    owns the task and cancels it at shutdown."""
    repair = True
    while True:
        try:
            deleted, repaired = await asyncio.to_thread(sweep, folder, retention_days,
                                                        repair=repair)
            if deleted or repaired:
                log.info("recordings: %d deleted (older than %g days), %d headers repaired",
                         deleted, retention_days, repaired)
        except Exception:
            log.exception("recordings sweep failed")
        repair = False
        if retention_days <= 0:
            return
        await asyncio.sleep(every_s)


# ---------------------------------------------------------------------------------------------
# `flowagent serve` options
# ---------------------------------------------------------------------------------------------


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def serve_options(record_audio: bool | None, retention_days: float | None) -> tuple[bool, float]:
    """`--record-audio` / `--recording-retention-days`, else FLOWAGENT_RECORD_AUDIO /
    FLOWAGENT_RECORDING_RETENTION_DAYS, else off / keep forever. ValueError: one sentence."""
    if record_audio is None:
        raw = os.environ.get("FLOWAGENT_RECORD_AUDIO", "").strip().lower()
        if raw not in _TRUE | _FALSE:
            raise ValueError(f"FLOWAGENT_RECORD_AUDIO must be 1 or 0 (got {raw!r}).")
        record_audio = raw in _TRUE
    if retention_days is None:
        raw = os.environ.get("FLOWAGENT_RECORDING_RETENTION_DAYS", "").strip()
        try:
            retention_days = float(raw) if raw else 0.0
        except ValueError:
            raise ValueError("FLOWAGENT_RECORDING_RETENTION_DAYS must be a number of days "
                             f"(got {raw!r}).") from None
    if retention_days < 0:
        raise ValueError(f"The recording retention must be 0 (keep) or more days "
                         f"(got {retention_days:g}).")
    return bool(record_audio), float(retention_days)
