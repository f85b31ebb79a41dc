"""Render the Asterisk and systemd snippets shipped in `flowagent/asterisk/templates/`.

The templates are plain Asterisk/systemd files with `{{ name }}` placeholders, filled with Jinja2
(Asterisk's own `${VAR}` syntax never collides with `{{ }}`). Rendering is strict: a placeholder
without a value is an error, so a typo can never ship an empty host into a dialplan.

Values are checked before rendering because they end up inside dialplan lines, where a comma,
a newline or a parenthesis would silently change what Asterisk does.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib import resources

import jinja2

from flowagent.asterisk.chan_websocket import DEFAULT_PATH

#: part name -> (template file, what it is, where it goes)
PARTS: dict[str, tuple[str, str, str]] = {
    "modules": ("modules.conf", "ini", "/etc/asterisk/modules.conf"),
    "extensions": ("extensions.conf", "ini", "/etc/asterisk/extensions.conf"),
    "agi": ("extensions_agi.conf", "ini", "/etc/asterisk/extensions.conf"),
    "agi-script": ("setup.agi", "bash", "/var/lib/asterisk/agi-bin/flowagent-setup.agi"),
    "wideband": ("extensions_wideband.conf", "ini", "/etc/asterisk/extensions.conf"),
    "manager": ("manager.conf", "ini", "/etc/asterisk/manager.conf"),
    "systemd": ("flowagent.service", "ini", "/etc/systemd/system/flowagent.service"),
    # the chan_websocket transport (Asterisk 20.18+ / 22.8+): modules, its two config files and
    # the dialplan context
    "websocket-modules": ("websocket_modules.conf", "ini", "/etc/asterisk/modules.conf"),
    "websocket-channel": ("chan_websocket.conf", "ini", "/etc/asterisk/chan_websocket.conf"),
    "websocket-client": ("websocket_client.conf", "ini", "/etc/asterisk/websocket_client.conf"),
    "websocket-dialplan": ("extensions_websocket.conf", "ini", "/etc/asterisk/extensions.conf"),
    "systemd-nodes": ("flowagent@.service", "ini", "/etc/systemd/system/flowagent@.service"),
}
#: what `--part all` prints, in the order an admin applies them (the AudioSocket set-up)
ALL_PARTS = ("modules", "extensions", "agi", "agi-script", "wideband", "manager", "systemd")
#: names that print several parts: `--part websocket` is everything chan_websocket needs
GROUPS: dict[str, tuple[str, ...]] = {
    "all": ALL_PARTS,
    "websocket": ("websocket-modules", "websocket-channel", "websocket-client",
                  "websocket-dialplan"),
}


def expand(part: str) -> tuple[str, ...]:
    """The parts a `--part` name stands for."""
    if part in GROUPS:
        return GROUPS[part]
    if part in PARTS:
        return (part,)
    raise ValueError(f"Unknown part {part!r}; choose one of: {', '.join(GROUPS)}, "
                     f"{', '.join(PARTS)}.")

_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:]+\]$")
_DID = re.compile(r"^_?[A-Za-z0-9+*#.!\[\]\-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PATH = re.compile(r"^/[A-Za-z0-9_./\-]*$")
_DIAL = re.compile(r"^[A-Za-z0-9_/@${}.\-]+$")
_SIZE = re.compile(r"^[0-9]+[KMGT]?$|^infinity$")


@dataclass(frozen=True, slots=True)
class AsteriskSettings:
    """Everything the snippets need. Defaults suit flowagent and Asterisk on one machine."""

    host: str = "127.0.0.1"  # AudioSocket host as Asterisk reaches it
    port: int = 9099  # AudioSocket port
    ws_port: int = 9098  # chan_websocket listener port (on `host`)
    http_host: str = ""  # control API host as Asterisk reaches it (default: `host`)
    http_port: int = 8080
    #: number or pattern that reaches the agent (trunks often deliver DIDs with a leading +)
    did: str = "_[+0-9]."
    flow: str = "removals"
    token: str = "CHANGE-ME"  # placeholder: the admin pastes FLOWAGENT_API_TOKEN
    fallback: str = "100"  # extension in [flowagent-transfer] used when flowagent is down
    dial: str = "PJSIP/${EXTEN}"  # how [flowagent-transfer] rings a target
    ami_user: str = "flowagent"
    ami_secret: str = "CHANGE-ME"
    ami_port: int = 5038
    ami_bind: str = "127.0.0.1"
    ami_permit: str = "127.0.0.1"
    agi_command: str = "/opt/flowagent/venv/bin/flowagent-agi"
    workdir: str = "/var/lib/flowagent"
    venv: str = "/opt/flowagent/venv"
    env_file: str = "/etc/flowagent/flowagent.env"
    flows: str = "/etc/flowagent/flows/removals.yaml"
    memory_high: str = "1536M"
    memory_max: str = "2G"

    def values(self) -> dict[str, object]:
        """The template values, after checking each is safe to put in a dialplan line."""
        v = asdict(self)
        v["http_host"] = self.http_host or self.host
        checks: list[tuple[str, re.Pattern[str]]] = [
            ("host", _HOST), ("http_host", _HOST), ("ami_bind", _HOST), ("ami_permit", _HOST),
            ("did", _DID), ("flow", _NAME), ("token", _NAME), ("fallback", _NAME),
            ("ami_user", _NAME), ("ami_secret", _NAME), ("dial", _DIAL),
            ("agi_command", _PATH), ("workdir", _PATH), ("venv", _PATH), ("env_file", _PATH),
            ("memory_high", _SIZE), ("memory_max", _SIZE),
        ]
        for key, pattern in checks:
            if not pattern.match(str(v[key])):
                raise ValueError(
                    f"{key} {v[key]!r} cannot go into an Asterisk/systemd file; use letters, "
                    "digits and . - _ only."
                )
        for key in ("port", "ws_port", "http_port", "ami_port"):
            if not 0 < int(v[key]) < 65536:
                raise ValueError(f"{key} must be a TCP port between 1 and 65535, not {v[key]}.")
        if not all(_PATH.match(p) for p in self.flows.split()):
            raise ValueError(f"flows {self.flows!r} must be absolute paths separated by spaces.")
        v["audiosocket_bind"] = f"{_bind_host(self.host)}:{self.port}"
        v["ws_host"] = self.host
        v["ws_bind"] = f"{_bind_host(self.host)}:{self.ws_port}"
        v["ws_path"] = DEFAULT_PATH
        v["http_bind"] = f"{_bind_host(str(v['http_host']))}:{self.http_port}"
        return v


def _bind_host(host: str) -> str:
    """Where `flowagent serve` listens: loopback stays loopback; a LAN name binds all."""
    return host if host in ("127.0.0.1", "localhost", "[::1]") else "0.0.0.0"


def template_text(filename: str) -> str:
    """The raw shipped template (package data)."""
    return resources.files("flowagent.asterisk").joinpath("templates", filename).read_text(
        encoding="utf-8"
    )


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def render(part: str, settings: AsteriskSettings | None = None) -> str:
    """One part (see `PARTS`) with the settings filled in."""
    if part not in PARTS:
        expand(part)  # raises the plain "unknown part" sentence
        raise ValueError(f"{part!r} names several parts; render each of {expand(part)}.")
    filename = PARTS[part][0]
    values = (settings or AsteriskSettings()).values()
    return _ENV.from_string(template_text(filename)).render(**values)

