"""An asyncio client for the Asterisk Manager Interface (AMI), enough to transfer and hang up.

AMI is a line protocol on TCP (port 5038): the server greets with one banner line
(`Asterisk Call Manager/x.y.z`), then both sides exchange *messages*: `Key: Value` lines ended by
an empty line. We send `Action:` messages carrying an `ActionID`; the server answers each with a
`Response: Success|Error` message carrying the same `ActionID` — not necessarily in the order
sent — and interleaves unsolicited `Event:` messages.

What this module guarantees the call session:
- `connect()` logs in once and raises `AmiAuthError` at once on a wrong secret (no retry storm);
- every action has a timeout (`AmiTimeout`), and `Response: Error` becomes `AmiActionError`
  with Asterisk's message (e.g. "No such channel");
- a dropped connection fails the actions in flight (`AmiConnectionError`) and reconnects in the
  background with exponential backoff and jitter; actions issued meanwhile wait for the
  reconnection up to their own timeout;
- values containing CR/LF are refused (they would inject extra AMI headers);
- the secret is never logged.

API:
    ami = AmiClient(host, port, username, secret)
    await ami.connect()
    await ami.redirect(channel, context, exten, priority=1)
    await ami.setvar(channel, name, value)
    await ami.hangup(channel, cause=16)
    await ami.originate(channel, context=..., exten=..., priority=1, variables={...})
    await ami.ping()
    await ami.action("CoreStatus", {})            # any action -> AmiMessage
    async for event in ami.events(): ...          # Event: messages (bounded queue per reader)
    await ami.close()
Also usable as `async with AmiClient(...) as ami:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("flowagent.ami")

DEFAULT_PORT = 5038


class AmiError(Exception):
    """Anything that went wrong talking to Asterisk; `str()` is one plain-English sentence."""


class AmiAuthError(AmiError):
    """Asterisk refused the username/secret."""


class AmiConnectionError(AmiError):
    """No connection to Asterisk (refused, dropped, or not logged in yet)."""


class AmiTimeout(AmiError):
    """Asterisk did not answer an action in time."""


class AmiActionError(AmiError):
    """Asterisk answered `Response: Error`."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"Asterisk refused {action}: {message or 'no reason given'}")
        self.action = action
        self.message = message


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI message. Keys keep their first spelling; `get()` is case-insensitive.
    Repeated keys (e.g. several `Variable:` lines) are all kept in `items`."""

    items: tuple[tuple[str, str], ...]
    _index: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> AmiMessage:
        index: dict[str, str] = {}
        for key, value in pairs:
            index.setdefault(key.lower(), value)
        return cls(tuple(pairs), index)

    def get(self, key: str, default: str = "") -> str:
        return self._index.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self._index[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    @property
    def is_event(self) -> bool:
        return "event" in self._index

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.items}


def encode_action(action: str, fields: Mapping[str, object]) -> bytes:
    """`Action: X` + fields as an AMI message. Refuses CR/LF in any key or value."""
    lines = [("Action", action), *((k, "" if v is None else str(v)) for k, v in fields.items())]
    out: list[str] = []
    for key, value in lines:
        if any(c in key for c in "\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"AMI field {key!r} contains a line break or colon; refused.")
        out.append(f"{key}: {value}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8")


class AmiClient:
    """One logged-in AMI connection, kept alive. See the module docstring for the contract."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        username: str = "",
        secret: str = "",
        *,
        action_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        events: bool = True,
        event_queue_size: int = 1000,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.want_events = events
        self.event_queue_size = event_queue_size
        self.banner = ""
        #: how many times the connection was (re-)established; tests and metrics read it
        self.connections = 0
        self._ids = itertools.count(1)
        self._prefix = f"fa-{random.getrandbits(32):08x}-"
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._subscribers: set[asyncio.Queue[AmiMessage | None]] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._closed = False
        self._write_lock = asyncio.Lock()

    def __repr__(self) -> str:  # never shows the secret
        return f"AmiClient({self.host}:{self.port}, user={self.username!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def connect(self) -> None:
        """Connect and log in. Raises AmiAuthError / AmiConnectionError / AmiTimeout."""
        self._closed = False
        await self._open()
        if self.reconnect and self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def close(self) -> None:
        """Log off (best effort, bounded) and stop reconnecting. Idempotent."""
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._ready.is_set():
            with contextlib.suppress(AmiError, OSError, ValueError):
                await self.action("Logoff", {}, timeout_s=1.0)
        await self._drop("client closed")
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, within_s: float) -> bool:
        """True once logged in (e.g. after a reconnection), False after `within_s` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), within_s)
        except TimeoutError:
            return False
        return True

    # -- actions -----------------------------------------------------------------------------

    async def action(
        self, action: str, fields: Mapping[str, object], *, timeout_s: float | None = None
    ) -> AmiMessage:
        """Send one action and return its response. `Response: Error` raises AmiActionError."""
        timeout = self.action_timeout if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._ready.is_set() and (self._closed or not await self.wait_connected(timeout)):
            raise AmiConnectionError(
                f"Not connected to Asterisk at {self.host}:{self.port}; {action} not sent."
            )
        response = await self._send(action, fields, max(0.0, deadline - loop.time()))
        if response.get("Response").lower() == "error":
            raise AmiActionError(action, response.get("Message"))
        return response

    async def redirect(self, channel: str, context: str, exten: str, priority: int = 1) -> None:
        """Blind transfer: send `channel` to `context,exten,priority` of the dialplan."""
        await self.action("Redirect", {"Channel": channel, "Context": context, "Exten": exten,
                                       "Priority": priority})

    async def hangup(self, channel: str, cause: int = 16) -> None:
        """Hang `channel` up (cause 16 = normal clearing)."""
        await self.action("Hangup", {"Channel": channel, "Cause": cause})

    async def setvar(self, channel: str, name: str, value: str) -> None:
        """Set a channel variable (e.g. FLOWAGENT_REASON before a transfer)."""
        await self.action("Setvar", {"Channel": channel, "Variable": name, "Value": value})

    async def originate(
        self,
        channel: str,
        *,
        context: str,
        exten: str,
        priority: int = 1,
        caller_id: str = "",
        variables: Mapping[str, str] | None = None,
        timeout_ms: int = 30000,
    ) -> AmiMessage:
        """Start a call from `channel` into the dialplan (asynchronously on Asterisk's side)."""
        fields: dict[str, object] = {"Channel": channel, "Context": context, "Exten": exten,
                                     "Priority": priority, "Timeout": timeout_ms, "Async": "true"}
        if caller_id:
            fields["CallerID"] = caller_id
        if variables:
            fields["Variable"] = ",".join(f"{k}={v}" for k, v in variables.items())
        return await self.action("Originate", fields)

    async def ping(self) -> None:
        await self.action("Ping", {})

    # -- events ------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[AmiMessage]:
        """Every `Event:` message from now on, until `close()`. A slow reader loses the oldest
        events (logged) rather than growing memory without bound."""
        queue: asyncio.Queue[AmiMessage | None] = asyncio.Queue(self.event_queue_size)
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)

    # -- internals ---------------------------------------------------------------------------

    async def _open(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except TimeoutError:
            raise AmiTimeout(
                f"Asterisk at {self.host}:{self.port} did not accept a connection within "
                f"{self.connect_timeout:g} s."
            ) from None
        except OSError as exc:
            raise AmiConnectionError(
                f"Cannot connect to Asterisk AMI at {self.host}:{self.port}: "
                f"{exc.strerror or exc}."
            ) from None
        try:
            banner = await asyncio.wait_for(reader.readline(), self.connect_timeout)
        except TimeoutError:
            writer.close()
            raise AmiTimeout(f"{self.host}:{self.port} sent no AMI banner.") from None
        text = banner.decode("utf-8", "replace").strip()
        if not text.startswith("Asterisk Call Manager"):
            writer.close()
            raise AmiConnectionError(
                f"{self.host}:{self.port} is not an Asterisk Manager Interface "
                f"(it said {text[:60]!r})."
            )
        self.banner = text
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_loop(reader), name="ami-reader")
        try:
            await self._send("Login", {"Username": self.username, "Secret": self._secret,
                                       "Events": "on" if self.want_events else "off"},
                             self.connect_timeout)
        except AmiError:
            await self._drop("login failed")
            raise
        self.connections += 1
        self._ready.set()
        log.info("AMI logged in", extra={"ami": f"{self.host}:{self.port}",
                                         "banner": self.banner})

    async def _send(self, action: str, fields: Mapping[str, object],
                    budget_s: float) -> AmiMessage:
        timeout = budget_s
        action_id = f"{self._prefix}{next(self._ids)}"
        data = encode_action(action, {**fields, "ActionID": action_id})
        writer = self._writer
        if writer is None:
            raise AmiConnectionError(f"Not connected to Asterisk; {action} not sent.")
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            async with self._write_lock:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), timeout)
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AmiTimeout(
                f"Asterisk did not answer {action} within {timeout:g} s."
            ) from None
        except (ConnectionError, OSError) as exc:
            raise AmiConnectionError(f"Lost the AMI connection sending {action}: {exc}.") from None
        finally:
            self._pending.pop(action_id, None)
        if action == "Login" and response.get("Response").lower() != "success":
            raise AmiAuthError(
                f"Asterisk refused the AMI login for user {self.username!r}: "
                f"{response.get('Message') or 'Authentication failed'}. Check "
                "FLOWAGENT_AMI_USERNAME / FLOWAGENT_AMI_SECRET against manager.conf."
            )
        return response

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        pairs: list[tuple[str, str]] = []
        reason = "Asterisk closed the AMI connection"
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    key, sep, value = line.partition(":")
                    if sep:
                        pairs.append((key.strip(), value.strip()))
                    else:  # e.g. legacy `Command` output: keep it as an unnamed line
                        pairs.append(("", line))
                    if len(pairs) > 10000:
                        reason = "AMI message too large"
                        break
                    continue
                if pairs:
                    self._dispatch(AmiMessage.from_pairs(pairs))
                    pairs = []
        except (ConnectionError, OSError) as exc:
            reason = f"AMI connection error: {exc}"
        except asyncio.CancelledError:
            raise
        await self._drop(reason, from_reader=True)

    def _dispatch(self, message: AmiMessage) -> None:
        if message.is_event:
            for queue in list(self._subscribers):
                if queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    log.warning("AMI event reader too slow: dropped the oldest event")
                queue.put_nowait(message)
            return
        future = self._pending.get(message.action_id)
        if future is not None and not future.done():
            future.set_result(message)
        elif "response" in message._index:
            log.debug("AMI response for an unknown ActionID %r ignored", message.action_id)

    async def _drop(self, reason: str, *, from_reader: bool = False) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if task is not None and not from_reader:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AmiConnectionError(f"{reason}."))
        self._pending.clear()
        if was_ready and not self._closed:
            log.warning("AMI connection lost: %s", reason)
            self._lost.set()

    async def _supervise(self) -> None:
        """Reconnect with exponential backoff + jitter whenever the connection drops."""
        while not self._closed:
            await self._lost.wait()
            self._lost.clear()
            delay = self.backoff_initial
            while not self._closed and not self._ready.is_set():
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                try:
                    await self._open()
                    log.info("AMI reconnected", extra={"ami": f"{self.host}:{self.port}"})
                except AmiAuthError as exc:
                    log.error("%s", exc)
                    delay = self.backoff_max
                except AmiError as exc:
                    log.warning("AMI reconnect failed: %s (next try in ~%.1f s)", exc,
                                min(delay * 2, self.backoff_max))
                    delay = min(delay * 2, self.backoff_max)


def ami_from_env(environ: Mapping[str, str] | None = None) -> AmiClient | None:
    """An `AmiClient` from `FLOWAGENT_AMI_HOST/_PORT/_USERNAME/_SECRET` (and
    `FLOWAGENT_AMI_TIMEOUT_S`), or None when `FLOWAGENT_AMI_HOST` is not set. Not connected yet:
    call `await client.connect()` at server start (an AmiAuthError there should stop start-up)."""
    import os

    env = os.environ if environ is None else environ
    host = env.get("FLOWAGENT_AMI_HOST", "").strip()
    if not host:
        return None
    try:
        port = int(env.get("FLOWAGENT_AMI_PORT", "") or DEFAULT_PORT)
        timeout = float(env.get("FLOWAGENT_AMI_TIMEOUT_S", "") or 5.0)
    except ValueError:
        raise ValueError("FLOWAGENT_AMI_PORT and FLOWAGENT_AMI_TIMEOUT_S must be numbers.")\
            from None
    return AmiClient(host, port, env.get("FLOWAGENT_AMI_USERNAME", ""),
                     env.get("FLOWAGENT_AMI_SECRET", ""), action_timeout=timeout,
                     events=False)

