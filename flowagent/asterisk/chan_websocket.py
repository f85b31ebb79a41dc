"""Asterisk's chan_websocket protocol: control messages, media formats, the upgrade URL.

Pure: text and bytes in, values out, no sockets. The transport that runs a call over it (and
the fake Asterisk in the tests) use these functions so both ends agree on every message.

What Asterisk does (https://docs.asterisk.org/Configuration/Channel-Drivers/WebSocket/ and the
module reference https://docs.asterisk.org/Asterisk_22_Documentation/API_Documentation/Module_Configuration/chan_websocket/,
Asterisk 20.18+ / 22.8+ for the JSON format):

- Media travels in BINARY frames in the channel's own format (`c(ulaw)`, `c(alaw)`, `c(slin16)`
  ...). Asterisk cuts what we send into `optimal_frame_size` frames and plays them on its own
  20 ms clock, so we may send audio ahead; it queues up to 1000 frames, says `MEDIA_XOFF` at
  900 and `MEDIA_XON` once below 800, and drops binary messages while the queue is full.
- Control messages travel in TEXT frames, as single-line plain text (`COMMAND arg`,
  `EVENT key:value key:value`) or JSON (`{"command": ...}` / `{"event": ..., "channel_id": ...}`),
  chosen by `control_message_format` in chan_websocket.conf or `f(json)` in the dial string.
  Asterisk ignores text messages longer than 128 bytes, so our commands stay shorter.
- Events from Asterisk: `MEDIA_START` (connection_id, channel, channel_id, format,
  optimal_frame_size, ptime; JSON adds `channel_variables`), `DTMF_END` (digit), `MEDIA_XOFF`,
  `MEDIA_XON`, `QUEUE_DRAINED`, `MEDIA_MARK_PROCESSED` and `MEDIA_BUFFERING_COMPLETED` (each with
  the correlation id we gave), `STATUS`, `ERROR` (error_text).
- Commands to Asterisk: `ANSWER`, `HANGUP`, `FLUSH_MEDIA` (drop everything queued: barge-in),
  `MARK_MEDIA <id>` (tell us when playout reaches this point), `START_MEDIA_BUFFERING`,
  `STOP_MEDIA_BUFFERING <id>`, `REPORT_QUEUE_DRAINED`, `GET_STATUS`, `PAUSE_MEDIA`,
  `CONTINUE_MEDIA`.
- There is no call-id message. An outgoing connection (`Dial(WebSocket/<client>/v(...))`)
  carries the dial string's `v(name=value,...)` as the upgrade URL's query (Asterisk turns the
  commas into `&`), so the dialplan puts the call's uuid and caller data there.
- Hang-up: Asterisk closes the WebSocket (code 1000 or the hang-up cause); we hang up with
  `HANGUP` or by closing.

Every parse error is a `ControlMessageError` with one plain sentence: a malformed message from
one call's Asterisk never takes down anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from flowagent.audio import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm

ControlFormat = Literal["json", "plain-text"]
CONTROL_FORMATS: tuple[ControlFormat, ...] = ("json", "plain-text")

#: Asterisk ignores longer TEXT messages (MAX_TEXT_MESSAGE_LEN)
MAX_COMMAND_BYTES = 128
#: the longest event we accept (MEDIA_START with many channel variables stays far below)
MAX_EVENT_BYTES = 65536
#: Asterisk's media queue: frames it holds, and where it says XOFF / XON
QUEUE_MAX_FRAMES = 1000
QUEUE_XOFF_FRAMES = 900
QUEUE_XON_FRAMES = 800

#: the path flowagent's WebSocket listener expects (the templates put it in websocket_client.conf)
DEFAULT_PATH = "/chan_websocket"


class ControlMessageError(ValueError):
    """A control message we cannot read (one plain sentence, safe to log)."""


class UnknownEventError(ControlMessageError):
    """A well-formed control message naming an event this version does not know. Asterisk adds
    events over releases, so a call carries on past one (a malformed message ends it)."""


# ---------------------------------------------------------------------------------------------
# Media formats
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """One Asterisk media format chan_websocket can carry without passthrough."""

    name: str  # as Asterisk names it in MEDIA_START and c(...)
    sample_rate: int
    encoding: Literal["ulaw", "alaw", "slin"]

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "slin" else 1

    def frame_bytes(self, ptime_ms: int = 20) -> int:
        """Bytes of one `ptime_ms` frame (what Asterisk reports as optimal_frame_size)."""
        return self.sample_rate * ptime_ms // 1000 * self.bytes_per_sample

    def decode(self, payload: bytes) -> bytes:
        """Media from Asterisk -> s16le PCM at `sample_rate`."""
        if self.encoding == "ulaw":
            return ulaw_to_pcm(payload)
        if self.encoding == "alaw":
            return alaw_to_pcm(payload)
        return payload[: len(payload) // 2 * 2]

    def encode(self, pcm: bytes) -> bytes:
        """s16le PCM at `sample_rate` -> media for Asterisk."""
        if self.encoding == "ulaw":
            return pcm_to_ulaw(pcm)
        if self.encoding == "alaw":
            return pcm_to_alaw(pcm)
        return pcm[: len(pcm) // 2 * 2]


_SLIN_RATES = {"slin": 8000, "slin12": 12000, "slin16": 16000, "slin24": 24000,
               "slin32": 32000, "slin44": 44100, "slin48": 48000, "slin96": 96000,
               "slin192": 192000}
FORMATS: dict[str, MediaFormat] = {
    "ulaw": MediaFormat("ulaw", 8000, "ulaw"),
    "alaw": MediaFormat("alaw", 8000, "alaw"),
    **{name: MediaFormat(name, rate, "slin") for name, rate in _SLIN_RATES.items()},
}


def media_format(name: str) -> MediaFormat:
    """The format Asterisk announced, or a plain error naming the ones we carry."""
    fmt = FORMATS.get(name.strip().lower())
    if fmt is None:
        raise ControlMessageError(
            f"Asterisk offered media in {name!r}, which flowagent cannot carry; dial with "
            f"c(...) set to one of: {', '.join(FORMATS)}.")
    return fmt


# ---------------------------------------------------------------------------------------------
# Events (Asterisk -> us)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaStart:
    connection_id: str
    channel: str
    channel_id: str
    format: str
    optimal_frame_size: int
    ptime: int = 20
    channel_variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def media(self) -> MediaFormat:
        return media_format(self.format)


@dataclass(frozen=True, slots=True)
class DtmfEnd:
    digit: str
    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class MediaXoff:
    """Asterisk's queue is nearly full: stop sending media until MEDIA_XON."""

    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class MediaXon:
    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class QueueDrained:
    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class MediaMarkProcessed:
    correlation_id: str
    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class MediaBufferingCompleted:
    correlation_id: str
    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class Status:
    channel_id: str
    queue_length: int
    xon_level: int
    xoff_level: int
    queue_full: bool
    bulk_media: bool
    media_paused: bool


@dataclass(frozen=True, slots=True)
class AsteriskError:
    """Asterisk's ERROR event (e.g. it could not parse a JSON command we sent)."""

    error_text: str
    channel_id: str = ""


Event = (MediaStart | DtmfEnd | MediaXoff | MediaXon | QueueDrained | MediaMarkProcessed
         | MediaBufferingCompleted | Status | AsteriskError)

_DTMF = re.compile(r"^[0-9A-D*#]$")
#: what an event name looks like (MEDIA_START): an unknown one of this shape is a newer event
_EVENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")


def _int(value: object, key: str, event: str) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise ControlMessageError(f"{event} has {key} {value!r}, which is not a whole number."
                                  ) from None
    if n < 0:
        raise ControlMessageError(f"{event} has a negative {key} ({n}).")
    return n


def _bool(value: object, key: str, event: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ControlMessageError(f"{event} has {key} {value!r}, which is not true or false.")


def _plain_fields(rest: str, event: str, last_free: str = "") -> dict[str, str]:
    """`key:value key:value`; `last_free` names a key whose value runs to the end (spaces
    allowed: ERROR's error_text)."""
    out: dict[str, str] = {}
    while rest:
        key, sep, value = rest.partition(":")
        if not sep or not key or " " in key:
            raise ControlMessageError(f"{event} has {rest.split(' ')[0]!r} where key:value "
                                      "was expected.")
        if key == last_free:
            out[key] = value
            break
        value, _, rest = value.partition(" ")
        out[key] = value
        rest = rest.lstrip(" ")
    return out


def _require(fields: Mapping[str, object], keys: tuple[str, ...], event: str) -> None:
    missing = [k for k in keys if k not in fields]
    if missing:
        raise ControlMessageError(f"{event} is missing {', '.join(missing)}.")


def parse_event(text: str | bytes, fmt: ControlFormat) -> Event:
    """One TEXT message from Asterisk. Unknown events, bad JSON, missing or mistyped fields
    raise `ControlMessageError`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ControlMessageError("A control message from Asterisk is not UTF-8 text."
                                      ) from None
    if len(text) > MAX_EVENT_BYTES:
        raise ControlMessageError(f"A control message from Asterisk is {len(text)} bytes long; "
                                  f"more than {MAX_EVENT_BYTES} is refused.")
    text = text.strip()
    if not text:
        raise ControlMessageError("Asterisk sent an empty control message.")
    fields: dict[str, object]
    if fmt == "json":
        try:
            data = json.loads(text)
        except ValueError:
            raise ControlMessageError("A control message from Asterisk is not valid JSON "
                                      "(is control_message_format plain-text?).") from None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise ControlMessageError('A JSON control message from Asterisk has no "event".')
        name = data["event"]
        fields = dict(data)
    else:
        if text.startswith("{"):
            raise ControlMessageError("Asterisk sent JSON where plain-text control messages "
                                      "were expected (is control_message_format json?).")
        name, _, rest = text.partition(" ")
        if name in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
            fields = {"correlation_id": rest.strip()}  # the id is the bare rest of the line
        else:
            fields = dict(_plain_fields(rest.strip(), name,
                                        last_free="error_text" if name == "ERROR" else ""))
    channel_id = str(fields.get("channel_id", ""))
    if name == "MEDIA_START":
        _require(fields, ("connection_id", "channel", "format", "optimal_frame_size"), name)
        variables = fields.get("channel_variables", {})
        if not isinstance(variables, dict):
            raise ControlMessageError("MEDIA_START has channel_variables that are not an "
                                      "object.")
        size = _int(fields["optimal_frame_size"], "optimal_frame_size", name)
        media_format(str(fields["format"]))  # a format we cannot carry fails here, plainly
        return MediaStart(str(fields["connection_id"]), str(fields["channel"]), channel_id,
                          str(fields["format"]), size,
                          _int(fields.get("ptime", 20), "ptime", name),
                          {str(k): str(v) for k, v in variables.items()})
    if name == "DTMF_END":
        _require(fields, ("digit",), name)
        digit = str(fields["digit"])
        if not _DTMF.match(digit):
            raise ControlMessageError(f"DTMF_END carries {digit!r}, which is not a keypad "
                                      "digit.")
        return DtmfEnd(digit, channel_id)
    if name == "MEDIA_XOFF":
        return MediaXoff(channel_id)
    if name == "MEDIA_XON":
        return MediaXon(channel_id)
    if name == "QUEUE_DRAINED":
        return QueueDrained(channel_id)
    if name == "MEDIA_MARK_PROCESSED":
        return MediaMarkProcessed(str(fields.get("correlation_id", "")), channel_id)
    if name == "MEDIA_BUFFERING_COMPLETED":
        return MediaBufferingCompleted(str(fields.get("correlation_id", "")), channel_id)
    if name == "STATUS":
        keys = ("queue_length", "xon_level", "xoff_level", "queue_full", "bulk_media",
                "media_paused")
        _require(fields, keys, name)
        return Status(channel_id, _int(fields["queue_length"], "queue_length", name),
                      _int(fields["xon_level"], "xon_level", name),
                      _int(fields["xoff_level"], "xoff_level", name),
                      _bool(fields["queue_full"], "queue_full", name),
                      _bool(fields["bulk_media"], "bulk_media", name),
                      _bool(fields["media_paused"], "media_paused", name))
    if name == "ERROR":
        return AsteriskError(str(fields.get("error_text", "")), channel_id)
    if _EVENT_NAME.match(name):
        raise UnknownEventError(f"Asterisk sent an unknown control event {name[:40]!r}.")
    raise ControlMessageError(f"Asterisk sent {name[:40]!r}, which is not a control event.")


def format_event(event: Event, fmt: ControlFormat) -> str:
    """The TEXT message Asterisk sends for `event` (the fake Asterisk in the tests speaks
    through this; its layout follows chan_websocket's)."""
    ch = event.channel_id
    if isinstance(event, MediaStart):
        if fmt == "json":
            return json.dumps({"event": "MEDIA_START", "connection_id": event.connection_id,
                               "channel": event.channel, "channel_id": ch,
                               "format": event.format,
                               "optimal_frame_size": event.optimal_frame_size,
                               "ptime": event.ptime,
                               "channel_variables": dict(event.channel_variables)},
                              separators=(",", ":"))
        return (f"MEDIA_START connection_id:{event.connection_id} channel:{event.channel} "
                f"channel_id:{ch} format:{event.format} "
                f"optimal_frame_size:{event.optimal_frame_size} ptime:{event.ptime}")
    if isinstance(event, DtmfEnd):
        return (_json("DTMF_END", ch, digit=event.digit) if fmt == "json"
                else f"DTMF_END digit:{event.digit} channel_id:{ch}")
    if isinstance(event, (MediaMarkProcessed, MediaBufferingCompleted)):
        name = ("MEDIA_MARK_PROCESSED" if isinstance(event, MediaMarkProcessed)
                else "MEDIA_BUFFERING_COMPLETED")
        if fmt == "json":
            return _json(name, ch, correlation_id=event.correlation_id)
        return f"{name} {event.correlation_id}" if event.correlation_id else name
    if isinstance(event, Status):
        if fmt == "json":
            return _json("STATUS", ch, queue_length=event.queue_length,
                         xon_level=event.xon_level, xoff_level=event.xoff_level,
                         queue_full=event.queue_full, bulk_media=event.bulk_media,
                         media_paused=event.media_paused)
        flag = {True: "true", False: "false"}
        return (f"STATUS channel_id:{ch} queue_length:{event.queue_length} "
                f"xon_level:{event.xon_level} xoff_level:{event.xoff_level} "
                f"queue_full:{flag[event.queue_full]} bulk_media:{flag[event.bulk_media]} "
                f"media_paused:{flag[event.media_paused]}")
    if isinstance(event, AsteriskError):
        return (_json("ERROR", ch, error_text=event.error_text) if fmt == "json"
                else f"ERROR channel_id:{ch} error_text:{event.error_text}")
    name = {MediaXoff: "MEDIA_XOFF", MediaXon: "MEDIA_XON", QueueDrained: "QUEUE_DRAINED"}[
        type(event)]
    return _json(name, ch) if fmt == "json" else name


def _json(name: str, channel_id: str, **extra: object) -> str:
    return json.dumps({"event": name, "channel_id": channel_id, **extra},
                      separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Commands (us -> Asterisk)
# ---------------------------------------------------------------------------------------------

#: commands that take a correlation id (MARK_MEDIA's comes back in MEDIA_MARK_PROCESSED)
COMMANDS_WITH_ID = ("MARK_MEDIA", "STOP_MEDIA_BUFFERING")
COMMANDS = ("ANSWER", "HANGUP", "START_MEDIA_BUFFERING", "STOP_MEDIA_BUFFERING", "MARK_MEDIA",
            "FLUSH_MEDIA", "GET_STATUS", "REPORT_QUEUE_DRAINED", "PAUSE_MEDIA",
            "CONTINUE_MEDIA")
_CORRELATION = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # one of COMMANDS
    correlation_id: str = ""


def format_command(command: Command, fmt: ControlFormat) -> str:
    """The TEXT message for `command`; refuses what Asterisk would drop or misread."""
    if command.name not in COMMANDS:
        raise ValueError(f"{command.name!r} is not a chan_websocket command.")
    cid = command.correlation_id
    if cid and (command.name not in COMMANDS_WITH_ID or not _CORRELATION.match(cid)):
        raise ValueError(f"correlation id {cid!r} must be 1-64 letters, digits or ._:- and "
                         "only go with MARK_MEDIA or STOP_MEDIA_BUFFERING.")
    if fmt == "json":
        body: dict[str, str] = {"command": command.name}
        if cid:
            body["correlation_id"] = cid
        text = json.dumps(body, separators=(",", ":"))
    else:
        text = f"{command.name} {cid}" if cid else command.name
    if len(text.encode()) > MAX_COMMAND_BYTES:  # pragma: no cover - ids are capped above
        raise ValueError(f"{command.name} would be longer than Asterisk reads.")
    return text


def parse_command(text: str | bytes, fmt: ControlFormat) -> Command:
    """A command as Asterisk reads it (the fake Asterisk uses this)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    if fmt == "json":
        try:
            data = json.loads(text)
        except ValueError:
            raise ControlMessageError("Unable to parse JSON command") from None
        if not isinstance(data, dict) or not isinstance(data.get("command"), str):
            raise ControlMessageError("Unable to parse JSON command")
        name, cid = data["command"], data.get("correlation_id") or ""
    else:
        name, _, cid = text.partition(" ")
    if name not in COMMANDS:
        raise ControlMessageError(f"{name[:40]!r} command unknown")
    return Command(name, str(cid).strip())


# ---------------------------------------------------------------------------------------------
# The call, from the upgrade URL and MEDIA_START
# ---------------------------------------------------------------------------------------------

_CALL_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class CallParams:
    """What the dialplan passed in `v(...)`: the call id and any other name=value pairs."""

    call_id: str  # "" when the URL names none (then MEDIA_START's channel_id is used)
    params: Mapping[str, str]
    path: str


def parse_upgrade_url(target: str, *, id_param: str = "uuid") -> CallParams:
    """The request target of the WebSocket upgrade (`/chan_websocket?uuid=...&caller=...`).
    Values are percent-decoded (the dialplan URIENCODEs them); a repeated name or a malformed
    call id is refused."""
    parts = urlsplit(target)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                          max_num_fields=64)
    except ValueError:
        raise ControlMessageError("The WebSocket URL's query is not name=value pairs separated "
                                  "by & (check the dial string's v(...)).") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise ControlMessageError(f"The WebSocket URL names {name!r} twice.")
        params[name] = value
    call_id = params.get(id_param, "")
    if call_id and not _CALL_ID.match(call_id):
        raise ControlMessageError(f"The call id {call_id[:70]!r} in the WebSocket URL must be "
                                  "1-64 letters, digits or ._:- (use ${UUID()}).")
    return CallParams(call_id, params, parts.path or "/")


def call_id(url: CallParams, start: MediaStart) -> str:
    """The call's id: the dialplan's uuid from the URL, else Asterisk's channel id."""
    return url.call_id or start.channel_id or start.connection_id
