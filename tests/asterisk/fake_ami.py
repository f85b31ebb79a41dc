"""A fake Asterisk Manager Interface speaking the real AMI text protocol on 127.0.0.1.

Banner line, `Key: Value` messages ended by an empty line, `ActionID` echoed on every response,
`Response: Success|Error` with Asterisk's own messages ("Authentication accepted",
"Authentication failed", "No such channel", "Redirect successful", ...), and `Event:` messages
interleaved between responses. Knobs for the failure cases the client must survive: slow actions
(so responses come back out of order), actions never answered (timeouts), dropping every
connection (reconnect), refusing new connections for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

BANNER = "Asterisk Call Manager/9.0.0"


@dataclass
class FakeAmi:
    users: dict[str, str] = field(default_factory=lambda: {"flowagent": "s3cret"})
    channels: set[str] = field(default_factory=lambda: {"PJSIP/trunk-00000001"})
    #: action name -> seconds to wait before answering
    delays: dict[str, float] = field(default_factory=dict)
    #: actions that are read but never answered
    silent: set[str] = field(default_factory=set)
    #: send an unrelated event before every response
    chatty: bool = True
    actions: list[dict[str, str]] = field(default_factory=list)
    variables: dict[tuple[str, str], str] = field(default_factory=dict)
    redirects: list[tuple[str, str, str, str]] = field(default_factory=list)
    hangups: list[str] = field(default_factory=list)
    connections: int = 0
    logins: int = 0
    #: called with (action_fields) after each action is recorded (e.g. to signal a test)
    on_action: object = None

    def __post_init__(self) -> None:
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.action_seen = asyncio.Event()

    async def start(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> FakeAmi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drop_all(self) -> None:
        """Close every client connection, as an Asterisk restart would."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def refuse_for(self, seconds: float) -> None:
        """Stop listening for a while (connection refused), then listen on the same port."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await self.drop_all()
        await asyncio.sleep(seconds)
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def push_event(self, name: str, **fields: str) -> None:
        for writer in list(self._writers):
            self._write(writer, [("Event", name), *fields.items()])
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    # -- protocol --------------------------------------------------------------------------

    @staticmethod
    def _write(writer: asyncio.StreamWriter, pairs: list[tuple[str, str]]) -> None:
        writer.write("".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        writer.write(f"{BANNER}\r\n".encode())
        state = {"user": ""}
        fields: dict[str, str] = {}
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode().rstrip("\r\n")
                if line:
                    key, _, value = line.partition(":")
                    fields[key.strip()] = value.strip()
                    continue
                if fields:
                    message, fields = fields, {}
                    task = asyncio.create_task(self._answer(writer, message, state))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, msg: dict[str, str],
                      state: dict[str, str]) -> None:
        action = msg.get("Action", "")
        self.actions.append(msg)
        self.action_seen.set()
        if callable(self.on_action):
            self.on_action(msg)
        if action in self.silent:
            return
        if action in self.delays:
            await asyncio.sleep(self.delays[action])
        reply = self._handle(action, msg, state)
        pairs = [("Response", reply[0])]
        if "ActionID" in msg:
            pairs.append(("ActionID", msg["ActionID"]))
        pairs.append(("Message", reply[1]))
        if writer.is_closing():
            return
        if self.chatty:
            self._write(writer, [("Event", "Newexten"), ("Privilege", "dialplan,all"),
                                 ("Channel", "PJSIP/other-00000099"), ("Application", "NoOp")])
        self._write(writer, pairs)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        if action == "Logoff":
            writer.close()

    def _handle(self, action: str, msg: dict[str, str], state: dict[str, str]) -> tuple[str, str]:
        if action == "Login":
            if self.users.get(msg.get("Username", "")) == msg.get("Secret") and msg.get("Secret"):
                state["user"] = msg["Username"]
                self.logins += 1
                return "Success", "Authentication accepted"
            return "Error", "Authentication failed"
        if not state["user"]:
            return "Error", "Permission denied"
        if action == "Ping":
            return "Success", "Pong"
        if action == "Logoff":
            return "Goodbye", "Thanks for all the fish."
        channel = msg.get("Channel", "")
        if action in ("Redirect", "Hangup", "Setvar") and channel not in self.channels:
            return "Error", "No such channel"
        if action == "Redirect":
            if not msg.get("Exten") or not msg.get("Context"):
                return "Error", "Exten not specified"
            self.redirects.append((channel, msg["Context"], msg["Exten"], msg.get("Priority", "")))
            return "Success", "Redirect successful"
        if action == "Hangup":
            self.hangups.append(channel)
            self.channels.discard(channel)
            return "Success", "Channel Hungup"
        if action == "Setvar":
            self.variables[(channel, msg.get("Variable", ""))] = msg.get("Value", "")
            return "Success", "Variable Set"
        if action == "Originate":
            return "Success", "Originate successfully queued"
        return "Error", "Invalid/unknown command"
